"""The finished evaluate runs of one sweep, read from the MLflow store and grouped into cells, and what
their tags say about order: the levels of the robustness axis and the columns.

A cell is one (model, weights, augment, data) combination; runs of a cell that differ only in their `seed`,
`train_seed` or `fold` tags are its replicates. Order comes from the runs' tags only: levels by their
`augment_axis` tag (levels without one last, by name), columns by the start of their first run (the order
of the sweep's command line), then by model and weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from src.experiments import tracking
from src.utils.errors import check

LEVELS = ("video", "frame")
REPLICATE_TAGS = ("seed", "train_seed", "fold")


def check_level(level: str) -> None:
    check(level in LEVELS, "level", level, f"expected one of {', '.join(LEVELS)}")


# -- reading the store ----------------------------------------------------------------------------
def _quote(value: str) -> str:
    """A filter-string literal; MLflow's filter grammar has no escapes, so pick a quote the value lacks."""
    for quote in ("'", '"'):
        if quote not in value:
            return f"{quote}{value}{quote}"
    raise ValueError(f"cannot filter on {value!r}: it contains both quote characters")


def store_missing(tracking_uri: str) -> bool:
    """True for a sqlite store whose file does not exist: reading it must not create an empty database."""
    path = tracking.sqlite_file(tracking_uri)
    return path is not None and not path.exists()


def _search_all(client, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=filter_string,
            order_by=["attributes.start_time DESC"],
            max_results=1000,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _finished_runs(
    tracking_uri: str, experiment: str, sweep_id: str | None = None, data: str | None = None
) -> list:
    """The experiment's finished runs (newest first), optionally of one sweep and one data tag."""
    if store_missing(tracking_uri):
        return []
    client = tracking.client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    clauses = ["attributes.status = 'FINISHED'"]
    if sweep_id is not None:
        clauses.append(f"tags.sweep_id = {_quote(sweep_id)}")
    if data is not None:
        clauses.append(f"tags.data = {_quote(data)}")
    return _search_all(client, found.experiment_id, " and ".join(clauses))


def known_sweeps(
    tracking_uri: str,
    experiment: str = tracking.EVALUATE_EXPERIMENT,
    data: str | None = None,
    limit: int | None = 10,
) -> list[str]:
    """Sweep ids of the finished evaluate runs, newest sweep (by its newest run's start time) first."""
    newest: dict[str, int] = {}
    for run in _finished_runs(tracking_uri, experiment, data=data):
        sweep = run.data.tags.get("sweep_id")
        if sweep:
            newest[sweep] = max(newest.get(sweep, 0), run.info.start_time or 0)
    return sorted(newest, key=newest.get, reverse=True)[:limit]


def latest_sweep(
    tracking_uri: str, experiment: str = tracking.EVALUATE_EXPERIMENT, data: str | None = None
) -> str | None:
    """The sweep id of the newest finished run that belongs to a sweep (None when no run does)."""
    sweeps = known_sweeps(tracking_uri, experiment, data=data, limit=1)
    return sweeps[0] if sweeps else None


def replicate_key(tags: dict) -> tuple[str, ...]:
    """What may differ between replicates of one cell: the `seed`, `train_seed` and `fold` tags."""
    return tuple(tags.get(name) or "" for name in REPLICATE_TAGS)


def replicate_label(key: Sequence[str]) -> str:
    return ", ".join(f"{name}={value}" for name, value in zip(REPLICATE_TAGS, key, strict=True) if value)


def collect_results(
    tracking_uri: str,
    sweep_id: str | None = None,
    data: str | None = None,
    experiment: str = tracking.EVALUATE_EXPERIMENT,
) -> list[dict]:
    """One dict per (model, weights, augment, data) cell of one sweep (default: the latest sweep; when no
    run belongs to a sweep, all finished runs). Keys: model, weights, augment, data, sweep_id, start_time,
    runs (one per replicate: run_id, tags, metrics, start_time, replicate), replaced (older runs with the
    same replicate tags), and run_id, metrics, tags of the newest replicate. Runs without
    model/weights/augment tags (not written by evaluate.py) and debugging runs (tag `debug`) are skipped. [] for an absent store/experiment.
    Sorted by data, column order and axis position.
    """
    if sweep_id is None:
        sweep_id = latest_sweep(tracking_uri, experiment, data=data)
    cells: dict[tuple[str, str, str, str], dict] = {}
    for run in _finished_runs(tracking_uri, experiment, sweep_id=sweep_id, data=data):  # newest first
        tags = dict(run.data.tags)
        if not all(tags.get(key) for key in ("model", "weights", "augment")) or tags.get("debug"):
            continue  # not written by evaluate.py, or a debugging run (debug=<preset>)
        key = (tags["model"], tags["weights"], tags["augment"], tags.get("data") or "unknown")
        entry = {
            "run_id": run.info.run_id,
            "tags": tags,
            "metrics": dict(run.data.metrics),
            "start_time": run.info.start_time or 0,
            "replicate": replicate_key(tags),
        }
        cell = cells.setdefault(
            key,
            {
                "model": key[0],
                "weights": key[1],
                "augment": key[2],
                "data": key[3],
                "sweep_id": tags.get("sweep_id"),
                "runs": [],
                "replaced": [],
            },
        )
        if any(r["replicate"] == entry["replicate"] for r in cell["runs"]):
            cell["replaced"].append(entry)  # an older run with the same replicate tags (a re-run)
        else:
            cell["runs"].append(entry)
    for cell in cells.values():
        cell["runs"].sort(key=lambda r: r["replicate"])
        newest = max(cell["runs"], key=lambda r: r["start_time"])
        cell.update(
            run_id=newest["run_id"],
            metrics=newest["metrics"],
            tags=newest["tags"],
            start_time=newest["start_time"],
        )
    results = list(cells.values())
    column_rank = {column: rank for rank, column in enumerate(present_columns(results))}
    positions = {augment: _axis_position(augment, results) for augment in {r["augment"] for r in results}}
    return sorted(
        results, key=lambda r: (r["data"], column_rank[r["model"], r["weights"]], positions[r["augment"]])
    )


# -- order and titles from the tags ---------------------------------------------------------------
def data_values(results: Sequence[dict]) -> list[str]:
    return sorted({r["data"] for r in results})


def _first_tag(results: Sequence[dict], tag: str, **where: str) -> str | None:
    """The first value of `tag` among the runs of the cells matching `where` (e.g. augment="flip")."""
    for result in results:
        if all(result[key] == value for key, value in where.items()):
            for run in result["runs"]:
                if run["tags"].get(tag):
                    return run["tags"][tag]
    return None


def _axis_position(augment: str, results: Sequence[dict]) -> tuple[float, str]:
    axis = _first_tag(results, "augment_axis", augment=augment)
    try:
        position = float(axis) if axis is not None else math.inf
    except ValueError:
        position = math.inf  # not a number: placed with the untagged levels
    return (position, augment)


def augment_levels(results: Sequence[dict]) -> list[str]:
    """The augment levels that have runs, in the order of their `augment_axis` tags."""
    return sorted({r["augment"] for r in results}, key=lambda a: _axis_position(a, results))


def augment_title(augment: str, results: Sequence[dict]) -> str:
    """A level's display title: its runs' `augment_title` tag, else the augment tag itself."""
    return _first_tag(results, "augment_title", augment=augment) or augment


def model_title(model: str, results: Sequence[dict]) -> str:
    """A model's display title: its runs' `model_title` tag, else the model tag itself."""
    return _first_tag(results, "model_title", model=model) or model


def present_columns(results: Sequence[dict]) -> list[tuple[str, str]]:
    """The (model, weights) columns with runs, by their first run's start time, then model and weights."""
    first: dict[tuple[str, str], int] = {}
    for result in results:
        column = (result["model"], result["weights"])
        started = min((run["start_time"] for run in result["runs"]), default=0)
        first[column] = min(first.get(column, started), started)
    return sorted(first, key=lambda column: (first[column], column))


# -- lineage --------------------------------------------------------------------------------------
def _checkpoint(run: dict) -> str | None:
    """What a run scored: the train run (finetuned) or the weights file and hash (pretrained)."""
    tags = run["tags"]
    if tags.get("weights") == "finetuned":
        return tags.get("source_run_id")
    if tags.get("weights") == "pretrained":
        return tags.get("initial_weights")
    return None


def lineage_flags(results: Sequence[dict]) -> list[dict]:
    """Columns (per data value and replicate) whose levels scored different checkpoints: dicts with data,
    model, weights, replicate and levels [(augment, run_id, checkpoint)]."""
    flags = []
    groups: dict[tuple, list] = {}
    for result in results:
        if result["weights"] not in ("finetuned", "pretrained"):
            continue
        for run in result["runs"]:
            key = (result["data"], result["model"], result["weights"], run["replicate"])
            groups.setdefault(key, []).append((result["augment"], run["run_id"], _checkpoint(run)))
    for (data, model, weights, replicate), levels in groups.items():
        if len({checkpoint for _, _, checkpoint in levels}) > 1:
            levels.sort(key=lambda level: _axis_position(level[0], results))
            flags.append(
                {"data": data, "model": model, "weights": weights, "replicate": replicate, "levels": levels}
            )
    return flags


def flagged_columns(results: Sequence[dict]) -> set[tuple[str, str, str]]:
    """(data, model, weights) of the columns lineage_flags flags."""
    return {(f["data"], f["model"], f["weights"]) for f in lineage_flags(results)}
