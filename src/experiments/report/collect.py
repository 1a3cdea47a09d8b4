"""The finished evaluate runs of one sweep, read from the MLflow store and grouped into cells (`Cell`), and what
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
from src.experiments.report.records import Cell, LineageFlag, ScoredRun
from src.utils.errors import check

LEVELS = ("video", "frame")
REPLICATE_TAGS = ("seed", "train_seed", "fold")


def check_level(level: str) -> None:
    """Refuse a level other than video or frame, naming the choices.

    Args:
        level: "video" or "frame".
    """
    check(level in LEVELS, "level", level, f"expected one of {', '.join(LEVELS)}")


# -- reading the store ----------------------------------------------------------------------------
def _quote(value: str) -> str:
    """A filter-string literal; MLflow's filter grammar has no escapes, so pick a quote the value lacks."""
    for quote in ("'", '"'):
        if quote not in value:
            return f"{quote}{value}{quote}"
    raise ValueError(f"cannot filter on {value!r}: it contains both quote characters")


def store_missing(tracking_uri: str) -> bool:
    """True for a sqlite store whose file does not exist: reading it must not create an empty database.

    Args:
        tracking_uri: the MLflow store.
    """
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
    """Sweep ids of the finished evaluate runs, newest sweep (by its newest run's start time) first.

    Args:
        tracking_uri: the MLflow store.
        experiment: the experiment holding the evaluate runs.
        data: only runs with this `data` tag (default: all).
        limit: at most this many (None: all).
    """
    newest: dict[str, int] = {}
    for run in _finished_runs(tracking_uri, experiment, data=data):
        sweep = run.data.tags.get("sweep_id")
        if sweep:
            newest[sweep] = max(newest.get(sweep, 0), run.info.start_time or 0)
    return sorted(newest, key=newest.get, reverse=True)[:limit]


def latest_sweep(
    tracking_uri: str, experiment: str = tracking.EVALUATE_EXPERIMENT, data: str | None = None
) -> str | None:
    """The sweep id of the newest finished run that belongs to a sweep (None when no run does).

    Args:
        tracking_uri: the MLflow store.
        experiment: the experiment holding the evaluate runs.
        data: only runs with this `data` tag (default: all).
    """
    sweeps = known_sweeps(tracking_uri, experiment, data=data, limit=1)
    return sweeps[0] if sweeps else None


def replicate_key(tags: dict) -> tuple[str, ...]:
    """What may differ between replicates of one cell: the `seed`, `train_seed` and `fold` tags.

    Args:
        tags: a run's tags.
    """
    return tuple(tags.get(name) or "" for name in REPLICATE_TAGS)


def replicate_label(key: Sequence[str]) -> str:
    """The replicate's tags as text, e.g. "seed=1, fold=0" (empty tags left out).

    Args:
        key: a `replicate_key`.
    """
    return ", ".join(f"{name}={value}" for name, value in zip(REPLICATE_TAGS, key, strict=True) if value)


def collect_cells(
    tracking_uri: str,
    sweep_id: str | None = None,
    data: str | None = None,
    experiment: str = tracking.EVALUATE_EXPERIMENT,
) -> list[Cell]:
    """The cells of one sweep, sorted by data, column order and axis position.

    Runs without model/weights/augment tags (not written by evaluate.py) and debugging runs (tag `debug`)
    are skipped; of two runs with the same replicate tags the newer is used and the older kept as replaced.

    Args:
        tracking_uri: the MLflow store.
        sweep_id: the sweep (default: the latest; when no run belongs to a sweep, all finished runs).
        data: only runs with this `data` tag (default: all).
        experiment: the experiment holding the evaluate runs.

    Returns:
        One `Cell` per (model, weights, augment, data); [] for an absent store or experiment.
    """
    if sweep_id is None:
        sweep_id = latest_sweep(tracking_uri, experiment, data=data)
    by_key: dict[tuple[str, str, str, str], Cell] = {}
    for found in _finished_runs(tracking_uri, experiment, sweep_id=sweep_id, data=data):  # newest first
        tags = dict(found.data.tags)
        if not all(tags.get(key) for key in ("model", "weights", "augment")) or tags.get("debug"):
            continue  # not written by evaluate.py, or a debugging run (debug=<preset>)
        key = (tags["model"], tags["weights"], tags["augment"], tags.get("data") or "unknown")
        run = ScoredRun(
            run_id=found.info.run_id,
            tags=tags,
            metrics=dict(found.data.metrics),
            start_time=found.info.start_time or 0,
            replicate=replicate_key(tags),
        )
        cell = by_key.setdefault(key, Cell(*key, sweep_id=tags.get("sweep_id")))
        if any(kept.replicate == run.replicate for kept in cell.runs):
            cell.replaced.append(run)  # an older run with the same replicate tags (a re-run)
        else:
            cell.runs.append(run)
    for cell in by_key.values():
        cell.runs.sort(key=lambda run: run.replicate)
    cells = list(by_key.values())
    column_rank = {column: rank for rank, column in enumerate(present_columns(cells))}
    positions = {augment: _axis_position(augment, cells) for augment in {c.augment for c in cells}}
    return sorted(cells, key=lambda c: (c.data, column_rank[c.column], positions[c.augment]))


# -- order and titles from the tags ---------------------------------------------------------------
def data_values(cells: Sequence[Cell]) -> list[str]:
    """The data tags of the cells, sorted."""
    return sorted({c.data for c in cells})


def _first_tag(cells: Sequence[Cell], tag: str, **where: str) -> str | None:
    """The first value of `tag` among the runs of the cells matching `where` (e.g. augment="flip")."""
    for cell in cells:
        if all(getattr(cell, key) == value for key, value in where.items()):
            for run in cell.runs:
                if run.tags.get(tag):
                    return run.tags[tag]
    return None


def _axis_position(augment: str, cells: Sequence[Cell]) -> tuple[float, str]:
    axis = _first_tag(cells, "augment_axis", augment=augment)
    try:
        position = float(axis) if axis is not None else math.inf
    except ValueError:
        position = math.inf  # not a number: placed with the untagged levels
    return (position, augment)


def augment_levels(cells: Sequence[Cell]) -> list[str]:
    """The augment levels that have runs, in the order of their `augment_axis` tags.

    Args:
        cells: the cells to look at.
    """
    return sorted({c.augment for c in cells}, key=lambda a: _axis_position(a, cells))


def augment_title(augment: str, cells: Sequence[Cell]) -> str:
    """A level's display title: its runs' `augment_title` tag, else the augment tag itself.

    Args:
        augment: the augment tag.
        cells: the cells whose runs' tags are looked at.
    """
    return _first_tag(cells, "augment_title", augment=augment) or augment


def model_title(model: str, cells: Sequence[Cell]) -> str:
    """A model's display title: its runs' `model_title` tag, else the model tag itself.

    Args:
        model: the model tag.
        cells: the cells whose runs' tags are looked at.
    """
    return _first_tag(cells, "model_title", model=model) or model


def present_columns(cells: Sequence[Cell]) -> list[tuple[str, str]]:
    """The (model, weights) columns with runs, by their first run's start time, then model and weights.

    Args:
        cells: the cells to look at.
    """
    first: dict[tuple[str, str], int] = {}
    for cell in cells:
        started = min((run.start_time for run in cell.runs), default=0)
        first[cell.column] = min(first.get(cell.column, started), started)
    return sorted(first, key=lambda column: (first[column], column))


# -- lineage --------------------------------------------------------------------------------------
def _checkpoint(run: ScoredRun) -> str | None:
    """What a run scored: the train run (finetuned) or the weights file and hash (pretrained)."""
    if run.tags.get("weights") == "finetuned":
        return run.tags.get("source_run_id")
    if run.tags.get("weights") == "pretrained":
        return run.tags.get("initial_weights")
    return None


def lineage_flags(cells: Sequence[Cell]) -> list[LineageFlag]:
    """Columns (per data value and replicate) whose levels scored different checkpoints.

    Args:
        cells: the cells of the report.
    """
    flags = []
    groups: dict[tuple, list] = {}
    for cell in cells:
        if cell.weights not in ("finetuned", "pretrained"):
            continue
        for run in cell.runs:
            key = (cell.data, cell.model, cell.weights, run.replicate)
            groups.setdefault(key, []).append((cell.augment, run.run_id, _checkpoint(run)))
    for (data, model, weights, replicate), levels in groups.items():
        if len({checkpoint for _, _, checkpoint in levels}) > 1:
            levels.sort(key=lambda level: _axis_position(level[0], cells))
            flags.append(LineageFlag(data, model, weights, replicate, tuple(levels)))
    return flags


def flagged_columns(cells: Sequence[Cell]) -> set[tuple[str, str, str]]:
    """(data, model, weights) of the columns `lineage_flags` flags.

    Args:
        cells: the cells of the report.
    """
    return {(f.data, f.model, f.weights) for f in lineage_flags(cells)}
