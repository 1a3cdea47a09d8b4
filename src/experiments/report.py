"""The seed study's tables, paired comparisons and a robustness chart of ONE evaluate sweep.

    python -m src.experiments.report                      # the latest evaluate sweep
    python -m src.experiments.report --sweep-id <id>      # another sweep (make report SWEEP=<id>)
    python -m src.experiments.report --level frame --data celebdf --out somewhere/ --no-log

A cell is one (model, weights, augment, data) combination of the sweep; a column is one (model, weights).
- Cells print `0.893 [0.71, 1.00]`: the logged value and its 95 % bootstrap interval
  (`test/<level>_<m>_ci_low/_ci_high`, the bare value where the run has none).
- Runs of one cell that differ only in their `seed`, `train_seed` or `fold` tags are replicates: the cell
  prints `mean ± sd (n=3)`. Two runs with the same replicate tags: the latest is used, and a note says so.
- Lineage: within one replicate, every level of a column must have scored the same checkpoint (tag
  `source_run_id` for finetuned weights, `initial_weights` for pretrained ones). A column that did not is
  flagged (⚠ and a note naming the runs) and gets no level comparisons.
- Paired comparisons (video AUC, from the runs' `video_scores.csv`, joined on `path`): every level against
  `none` and finetuned against pretrained, with a paired-bootstrap interval, `*` where it excludes 0.
- Titles come from the runs' tags where present (`model_title`, `augment_title`, `augment_axis`,
  `source_weights`), else from the built-in tables below.

Files (report.md, report.html with the chart embedded, robustness.png) go to `reports/<sweep id>/` under the
project root (or --out) and are logged as a run of the MLflow experiment `report`. When no run of the
experiment belongs to a sweep at all, the latest finished run of each cell (and replicate) is reported.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path

from src.experiments.config import PROJECT_ROOT, model_registry
from src.experiments.tracking import (
    EVALUATE_EXPERIMENT,
    default_tracking_uri,
    experiment_id,
    run_link,
    sqlite_file,
    unique_name,
)

REPORT_EXPERIMENT = "report"
LEVELS = ("video", "frame")
MISSING = "–"  # en dash: a cell without a run, never a zero
FLAG = "⚠"
SIGNIFICANT = "*"
PRODUCE_RUNS = "python evaluate.py -m model=mesonet,resnet_lstm weights=pretrained,finetuned augment=none,flip,heavy"
NO_SWEEP_FOLDER = "all-runs"
REPLICATE_TAGS = ("seed", "train_seed", "fold")
BASELINE_AUGMENT = "none"
N_BOOT, BOOT_SEED = 1000, 0

AUGMENT_ORDER = ("none", "flip", "heavy")
AUGMENT_TITLES = {
    "none": "Test metrics, no augmentation",
    "flip": "Test metrics, rotation/flip",
    "heavy": "Test metrics, heavy augmentation",
}
AUGMENT_AXIS = {"none": "none", "flip": "rotation/flip", "heavy": "heavy"}
# (table row label, metric suffix after test/<level>_)
ROWS = (("Loss", "loss"), ("AUC", "auc"), ("AP", "ap"), ("Accuracy", "acc"), ("EER", "eer"))

MODEL_NAMES = model_registry()  # name -> display title, from conf/model/<name>.yaml
SEED_MODELS = ("mesonet", "resnet_lstm")
# the seed's four columns, always shown, in the seed's order
SEED_COLUMNS = (("mesonet", "pretrained"), ("mesonet", "finetuned"), ("resnet_lstm", "pretrained"),
                ("resnet_lstm", "finetuned"))
MODEL_ORDER = (*SEED_MODELS, *(name for name in MODEL_NAMES if name not in SEED_MODELS))
WEIGHTS_ORDER = ("pretrained", "finetuned", "scratch")


# -- collecting -----------------------------------------------------------------------------------
def _quote(value: str) -> str:
    """A filter-string literal; MLflow's filter grammar has no escapes, so pick a quote the value lacks."""
    for quote in ("'", '"'):
        if quote not in value:
            return f"{quote}{value}{quote}"
    raise ValueError(f"cannot filter on {value!r}: it contains both quote characters")


def _store_missing(tracking_uri: str) -> bool:
    """True for a sqlite store whose file does not exist: reading it must not create an empty database."""
    path = sqlite_file(tracking_uri)
    return path is not None and not path.exists()


def _search_all(client, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=filter_string, order_by=["attributes.start_time DESC"],
            max_results=1000, page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _finished_runs(tracking_uri: str, experiment: str, sweep_id: str | None = None,
                   data: str | None = None) -> list:
    """The experiment's finished runs (newest first), optionally of one sweep and one data tag."""
    if _store_missing(tracking_uri):
        return []
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    clauses = ["attributes.status = 'FINISHED'"]
    if sweep_id is not None:
        clauses.append(f"tags.sweep_id = {_quote(sweep_id)}")
    if data is not None:
        clauses.append(f"tags.data = {_quote(data)}")
    return _search_all(client, found.experiment_id, " and ".join(clauses))


def known_sweeps(tracking_uri: str, experiment: str = EVALUATE_EXPERIMENT, data: str | None = None,
                 limit: int | None = 10) -> list[str]:
    """Sweep ids of the finished evaluate runs, newest sweep (by its newest run's start time) first."""
    newest: dict[str, int] = {}
    for run in _finished_runs(tracking_uri, experiment, data=data):
        sweep = run.data.tags.get("sweep_id")
        if sweep:
            newest[sweep] = max(newest.get(sweep, 0), run.info.start_time or 0)
    return sorted(newest, key=newest.get, reverse=True)[:limit]


def latest_sweep(tracking_uri: str, experiment: str = EVALUATE_EXPERIMENT, data: str | None = None) -> str | None:
    """The sweep id of the newest finished run that belongs to a sweep (None when no run does)."""
    sweeps = known_sweeps(tracking_uri, experiment, data=data, limit=1)
    return sweeps[0] if sweeps else None


def replicate_key(tags: dict) -> tuple[str, ...]:
    """What may differ between replicates of one cell: the `seed`, `train_seed` and `fold` tags."""
    return tuple(tags.get(name) or "" for name in REPLICATE_TAGS)


def replicate_label(key: Sequence[str]) -> str:
    return ", ".join(f"{name}={value}" for name, value in zip(REPLICATE_TAGS, key, strict=True) if value)


def collect_results(tracking_uri: str, sweep_id: str | None = None, data: str | None = None,
                    experiment: str = EVALUATE_EXPERIMENT) -> list[dict]:
    """One dict per (model, weights, augment, data) cell of one sweep (default: the latest sweep; when no
    run belongs to a sweep, all finished runs). Keys: model, weights, augment, data, sweep_id, start_time,
    runs (one per replicate: run_id, tags, metrics, start_time, replicate), replaced (older runs with the
    same replicate tags), and run_id, metrics, tags of the newest replicate. Runs without
    model/weights/augment tags (not written by evaluate.py) are skipped. [] for an absent store/experiment.
    """
    if sweep_id is None:
        sweep_id = latest_sweep(tracking_uri, experiment, data=data)
    cells: dict[tuple[str, str, str, str], dict] = {}
    for run in _finished_runs(tracking_uri, experiment, sweep_id=sweep_id, data=data):  # newest first
        tags = dict(run.data.tags)
        if not all(tags.get(key) for key in ("model", "weights", "augment")):
            continue
        key = (tags["model"], tags["weights"], tags["augment"], tags.get("data") or "unknown")
        entry = {"run_id": run.info.run_id, "tags": tags, "metrics": dict(run.data.metrics),
                 "start_time": run.info.start_time or 0, "replicate": replicate_key(tags)}
        cell = cells.setdefault(key, {
            "model": key[0], "weights": key[1], "augment": key[2], "data": key[3], "sweep_id": tags.get("sweep_id"),
            "runs": [], "replaced": [],
        })
        if any(r["replicate"] == entry["replicate"] for r in cell["runs"]):
            cell["replaced"].append(entry)  # an older run with the same replicate tags (a re-run)
        else:
            cell["runs"].append(entry)
    for cell in cells.values():
        cell["runs"].sort(key=lambda r: r["replicate"])
        newest = max(cell["runs"], key=lambda r: r["start_time"])
        cell.update(run_id=newest["run_id"], metrics=newest["metrics"], tags=newest["tags"],
                    start_time=newest["start_time"])
    return sorted(cells.values(), key=lambda r: (r["data"], _column_sort_key(r["model"], r["weights"]),
                                                 _augment_sort_key(r["augment"], [r])))


# -- naming and ordering --------------------------------------------------------------------------
def _weights_suffix(weights: str, sources: set[str]) -> str | None:
    if weights == "pretrained":
        return None
    if weights == "scratch":
        return "untrained"
    if weights == "finetuned":
        if sources == {"scratch"}:
            return "trained from scratch"
        if len(sources) > 1:
            return "finetuned, " + " and ".join(f"from {s}" for s in sorted(sources))
        return "finetuned"
    return weights


def column_name(model: str, weights: str, results: Iterable[dict] = ()) -> str:
    """The seed's column names, from what was scored: pretrained is the plain model name (a run's
    `model_title` tag, else MODEL_NAMES); finetuned from pretrained weights "(finetuned)", from random ones
    "(trained from scratch)" (runs' `source_weights` tag); random weights "(untrained)"."""
    runs = [run for r in results if (r["model"], r["weights"]) == (model, weights) for run in r["runs"]]
    titles = [run["tags"]["model_title"] for run in runs if run["tags"].get("model_title")]
    name = titles[0] if titles else MODEL_NAMES.get(model, model)
    sources = {run["tags"]["source_weights"] for run in runs if run["tags"].get("source_weights")}
    suffix = _weights_suffix(weights, sources)
    return name if suffix is None else f"{name} ({suffix})"


def _column_sort_key(model: str, weights: str) -> tuple:
    if (model, weights) in SEED_COLUMNS:
        return (0, SEED_COLUMNS.index((model, weights)), "", "")
    model_rank = MODEL_ORDER.index(model) if model in MODEL_ORDER else len(MODEL_ORDER)
    weights_rank = WEIGHTS_ORDER.index(weights) if weights in WEIGHTS_ORDER else len(WEIGHTS_ORDER)
    # the seed models' other weights (scratch) right after the seed columns, then the other models
    group = 1 if model in SEED_MODELS else 2
    return (group, model_rank, model if model_rank == len(MODEL_ORDER) else "", f"{weights_rank:02d}{weights}")


def _augment_tag(augment: str, results: Iterable[dict], tag: str) -> str | None:
    for result in results:
        if result["augment"] == augment:
            for run in result["runs"]:
                if run["tags"].get(tag):
                    return run["tags"][tag]
    return None


def _augment_sort_key(augment: str, results: Iterable[dict] = ()) -> tuple:
    """Position on the robustness axis: the runs' `augment_axis` tag, else the built-in order."""
    axis = _augment_tag(augment, results, "augment_axis")
    try:
        position = float(axis) if axis is not None else None
    except ValueError:
        position = None
    if position is None:
        position = float(AUGMENT_ORDER.index(augment)) if augment in AUGMENT_ORDER else math.inf
    return (position, augment)


def augment_axis_title(augment: str, results: Iterable[dict] = ()) -> str:
    """A level's short name on the chart axis: the runs' `augment_title` tag, else AUGMENT_AXIS."""
    return _augment_tag(augment, results, "augment_title") or AUGMENT_AXIS.get(augment, augment)


def augment_table_title(augment: str, results: Iterable[dict] = ()) -> str:
    title = _augment_tag(augment, results, "augment_title")
    if title is None:
        return AUGMENT_TITLES.get(augment, f"Test metrics, augment={augment}")
    return "Test metrics, no augmentation" if title in ("none", "no augmentation") else f"Test metrics, {title}"


def columns(results: Iterable[dict]) -> list[tuple[str, str]]:
    """(model, weights) columns: the seed's four always, then any others that have runs."""
    present = {(r["model"], r["weights"]) for r in results}
    return sorted(present | set(SEED_COLUMNS), key=lambda c: _column_sort_key(*c))


def augment_levels(results: Sequence[dict]) -> list[str]:
    """none, flip, heavy always (the seed's three tables), then any other levels that have runs."""
    return sorted({r["augment"] for r in results} | set(AUGMENT_ORDER), key=lambda a: _augment_sort_key(a, results))


def _data_values(results: Sequence[dict]) -> list[str]:
    return sorted({r["data"] for r in results})


def _check_level(level: str) -> None:
    if level not in LEVELS:
        raise ValueError(f"level={level!r}: expected one of {', '.join(LEVELS)}")


# -- cell values ----------------------------------------------------------------------------------
def cell_value(result: dict | None, level: str, suffix: str) -> dict | None:
    """{value, low, high} of a single run (low/high None without intervals) or {value (mean), sd, n} of
    replicates; None when the cell has no run or no such metric."""
    from src.experiments.stats import mean_sd

    if result is None:
        return None
    key = f"test/{level}_{suffix}"
    values = [run["metrics"][key] for run in result["runs"] if key in run["metrics"]]
    if not values:
        return None
    if len(result["runs"]) > 1:
        mean, sd = mean_sd(values)
        return {"value": mean, "sd": sd, "n": len(values)}
    metrics = result["runs"][0]["metrics"]
    return {"value": float(values[0]), "low": metrics.get(f"{key}_ci_low"), "high": metrics.get(f"{key}_ci_high")}


def _number(value: float, digits: int) -> str:
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


def format_cell(cell: dict | None) -> str:
    """`0.893 [0.71, 1.00]`, `0.893` without an interval, `0.893 ± 0.012 (n=3)` for replicates, – for none."""
    if cell is None:
        return MISSING
    text = _number(cell["value"], 3)
    if "n" in cell:
        return f"{text} ± {_number(cell['sd'], 3)} (n={cell['n']})"
    if cell.get("low") is not None and cell.get("high") is not None:
        text += f" [{_number(cell['low'], 2)}, {_number(cell['high'], 2)}]"
    return text


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
            levels.sort(key=lambda level: _augment_sort_key(level[0], results))
            flags.append({"data": data, "model": model, "weights": weights, "replicate": replicate,
                          "levels": levels})
    return flags


def _flagged_columns(flags: Sequence[dict]) -> set[tuple[str, str, str]]:
    return {(f["data"], f["model"], f["weights"]) for f in flags}


def _notes(results: Sequence[dict], flags: Sequence[dict]) -> list[str]:
    notes = []
    for flag in flags:
        title = column_name(flag["model"], flag["weights"], results)
        what = "source_run_id" if flag["weights"] == "finetuned" else "initial_weights"
        where = f"data `{flag['data']}`" + (f", {replicate_label(flag['replicate'])}" if any(flag["replicate"]) else "")
        levels = "; ".join(f"{augment}: run `{run_id}` ({what} `{checkpoint or 'not recorded'}`)"
                           for augment, run_id, checkpoint in flag["levels"])
        notes.append(f"{FLAG} {title} ({where}): its levels were scored with different checkpoints, so they are "
                     f"not comparable and get no level comparisons. {levels}")
    for result in results:
        if result["sweep_id"] is None:  # outside a sweep, re-runs replacing older runs is the intended use
            continue
        for old in result["replaced"]:
            kept = next(r for r in result["runs"] if r["replicate"] == old["replicate"])
            notes.append(f"{result['model']}/{result['weights']}/{result['augment']} ({result['data']}): run "
                         f"`{old['run_id']}` has the same replicate tags as the newer run `{kept['run_id']}`; "
                         "the newer one is used.")
    return notes


# -- tables ---------------------------------------------------------------------------------------
def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 1) -> list[str]:
    """A pipe table, aligned in plain text too: the first `text_columns` left, the others (numbers) right."""
    widths = [max(5, len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if i < text_columns else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))) + " |"

    rule = ["-" * w if i < text_columns else "-" * (w - 1) + ":" for i, w in enumerate(widths)]
    rule[0] = ":" + rule[0][1:]
    return [line(header), "| " + " | ".join(rule) + " |"] + [line(row) for row in rows]


def _table(cells: dict[tuple[str, str], dict], cols: list[tuple[str, str]], level: str, results: Sequence[dict],
           flagged: set[tuple[str, str]] = frozenset()) -> list[str]:
    header = [""] + [column_name(*c, results) + (f" {FLAG}" if c in flagged else "") for c in cols]
    rows = [[label] + [format_cell(cell_value(cells.get(c), level, suffix)) for c in cols] for label, suffix in ROWS]
    return _markdown_table(header, rows)


def render_tables(results: Sequence[dict], level: str = "video") -> str:
    """The seed's tables as Markdown: per data value a `## Data:` section with one table per augmentation
    level (none, flip, heavy always; others after), rows Loss/AUC/AP/Accuracy/EER, columns per column_name."""
    _check_level(level)
    data_values = _data_values(results) or ["(no runs)"]
    flagged = _flagged_columns(lineage_flags(results))
    out: list[str] = []
    for data in data_values:
        subset = [r for r in results if r["data"] == data]
        out += [f"## Data: {data}", ""]
        cols = columns(subset)
        flagged_here = {(m, w) for d, m, w in flagged if d == data}
        for augment in augment_levels(subset):
            cells = {(r["model"], r["weights"]): r for r in subset if r["augment"] == augment}
            out += [f"### {augment_table_title(augment, subset)}", ""]
            out += _table(cells, cols, level, subset, flagged_here) + [""]
    return "\n".join(out).rstrip() + "\n"


# -- paired comparisons ---------------------------------------------------------------------------
class ScoreFiles:
    """The runs' video_scores.csv, downloaded once each into a temporary folder: {path: (label, p_fake, group)}."""

    COLUMNS = ("path", "label", "p_fake")

    def __init__(self, tracking_uri: str, folder: Path):
        self.tracking_uri, self.folder, self.cache = tracking_uri, folder, {}

    def get(self, run_id: str) -> dict[str, tuple[int, float, str]] | str:
        """The scores, or a one-line reason why they cannot be used."""
        if run_id not in self.cache:
            self.cache[run_id] = self._load(run_id)
        return self.cache[run_id]

    def _load(self, run_id: str):
        import mlflow
        from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR

        quiet = {MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name: "false"}  # one progress bar per run is noise here
        try:
            with _environment(quiet):
                    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="video_scores.csv",
                                                           dst_path=str(self.folder / run_id),
                                                           tracking_uri=self.tracking_uri)
        except Exception:  # noqa: BLE001 - any failure means the same thing here: no scores to compare
            return f"run `{run_id}` has no video_scores.csv artifact"
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in self.COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                return f"run `{run_id}`'s video_scores.csv lacks column(s) {', '.join(missing)}"
            return {row["path"]: (int(row["label"]), float(row["p_fake"]), row.get("group") or "") for row in reader}


@contextmanager
def _environment(values: dict[str, str]):
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _paired(a: dict | str, b: dict | str) -> dict | str:
    """AUC(a) - AUC(b) on the videos both scored (joined on path), with a paired-bootstrap interval."""
    from src.experiments.stats import paired_difference

    for scores in (a, b):
        if isinstance(scores, str):
            return scores
    shared = sorted(set(a) & set(b))
    if not shared:
        return "no video in common"
    conflicts = [p for p in shared if a[p][0] != b[p][0]]
    if conflicts:
        return f"labels differ for {len(conflicts)} video(s), e.g. {conflicts[0]}"
    labels = [a[p][0] for p in shared]
    if len(set(labels)) < 2:
        return "the videos in common are all of one class"
    result = paired_difference([a[p][1] for p in shared], [b[p][1] for p in shared], labels,
                               groups=[a[p][2] for p in shared], metric="auc", n_boot=N_BOOT, seed=BOOT_SEED)
    return {**result, "videos": len(shared)}


def _format_difference(result: dict) -> str:
    text = f"{result['diff']:+.3f} [{result['low']:+.2f}, {result['high']:+.2f}]"
    return text + (f" {SIGNIFICANT}" if result["excludes_zero"] else "")


def paired_comparisons(results: Sequence[dict], scores: ScoreFiles) -> list[dict]:
    """Rows {data, column, comparison, result (dict or reason str)}: per column and replicate every level
    against none, then finetuned against pretrained of the same model at each level."""
    rows = []
    flagged = _flagged_columns(lineage_flags(results))
    for data in _data_values(results):
        subset = [r for r in results if r["data"] == data]
        by_cell = {(r["model"], r["weights"], r["augment"]): r for r in subset}
        levels = augment_levels(subset)
        for col in columns(subset):
            title = column_name(*col, subset)
            replicates = sorted({run["replicate"] for r in subset if (r["model"], r["weights"]) == col
                                 for run in r["runs"]})
            several = len(replicates) > 1
            base = by_cell.get((*col, BASELINE_AUGMENT))
            for replicate in replicates:
                suffix = f" ({replicate_label(replicate)})" if several else ""
                base_run = _run_of(base, replicate)
                for augment in levels:
                    run = _run_of(by_cell.get((*col, augment)), replicate)
                    if augment == BASELINE_AUGMENT or run is None or base_run is None:
                        continue
                    comparison = f"{augment_axis_title(augment, subset)} − {augment_axis_title(BASELINE_AUGMENT, subset)}"
                    if (data, *col) in flagged:
                        result = f"not compared: mixed checkpoints {FLAG}"
                    else:
                        result = _paired(scores.get(run["run_id"]), scores.get(base_run["run_id"]))
                    rows.append({"data": data, "column": title, "comparison": comparison + suffix, "result": result})
            if col[1] != "finetuned":
                continue
            for augment in levels:
                tuned, reference = by_cell.get((*col, augment)), by_cell.get((col[0], "pretrained", augment))
                if tuned is None or reference is None:
                    continue
                for run in tuned["runs"]:
                    other = _matching_run(reference, run["replicate"])
                    if other is None:
                        continue
                    label = f"finetuned − pretrained, {augment_axis_title(augment, subset)}"
                    label += f" ({replicate_label(run['replicate'])})" if len(tuned["runs"]) > 1 else ""
                    rows.append({"data": data, "column": title, "comparison": label,
                                 "result": _paired(scores.get(run["run_id"]), scores.get(other["run_id"]))})
    return rows


def _run_of(result: dict | None, replicate: tuple) -> dict | None:
    if result is None:
        return None
    return next((run for run in result["runs"] if run["replicate"] == replicate), None)


def _matching_run(result: dict, replicate: tuple) -> dict | None:
    """The pretrained run to pair with a finetuned replicate: the only one, else the same replicate tags."""
    if len(result["runs"]) == 1:
        return result["runs"][0]
    return _run_of(result, replicate)


def render_comparisons(rows: Sequence[dict]) -> str:
    if not rows:
        return ""
    out = ["## Paired comparisons", "",
           f"Video AUC differences on the same videos (joined on `path`), with {N_BOOT}-resample paired-bootstrap "
           f"95 % intervals (stratified by class, identity groups resampled whole). {SIGNIFICANT}: the interval "
           "excludes 0.", ""]
    for data in sorted({row["data"] for row in rows}):
        table_rows = []
        for row in (r for r in rows if r["data"] == data):
            result = row["result"]
            if isinstance(result, str):
                table_rows.append([row["column"], row["comparison"], f"{MISSING} ({result})", MISSING])
            else:
                table_rows.append([row["column"], row["comparison"], _format_difference(result), str(result["videos"])])
        out += [f"### Data: {data}", ""]
        out += _markdown_table(["Column", "Comparison", "Δ AUC [95 % CI]", "Videos"], table_rows, text_columns=2)
        out += [""]
    return "\n".join(out).rstrip() + "\n"


# -- chart ----------------------------------------------------------------------------------------
def plot_robustness(results: Sequence[dict], path: str | Path, level: str = "video", sweep_id: str | None = None) -> Path:
    """AUC against augmentation level, one line per (model, weights) with data, one panel per data value;
    error bars are the 95 % bootstrap interval of a single run, or ± sd over replicates.

    Uses matplotlib's Figure directly (Agg canvas), so no GUI backend or global pyplot state is touched.
    """
    _check_level(level)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data_values = _data_values(results) or ["(no runs)"]
    most_levels = max(len(augment_levels([r for r in results if r["data"] == d])) for d in data_values)
    figure = Figure(figsize=((max(4.5, 1.4 * most_levels) + 3.5) * len(data_values), 4.8))
    FigureCanvasAgg(figure)
    axes_list = figure.subplots(1, len(data_values), squeeze=False)[0]
    all_columns = columns(results)
    colors = {col: f"C{i % 10}" for i, col in enumerate(all_columns)}  # a column keeps its colour in every panel
    flagged = _flagged_columns(lineage_flags(results))
    for axes, data in zip(axes_list, data_values, strict=True):
        subset = [r for r in results if r["data"] == data]
        levels = augment_levels(subset)
        cells = {(r["model"], r["weights"], r["augment"]): r for r in subset}
        plotted = [col for col in columns(subset)
                   if any(cell_value(cells.get((*col, a)), level, "auc") for a in levels)]
        for index, col in enumerate(plotted):
            offset = (index - (len(plotted) - 1) / 2) * 0.06  # dodge, so error bars do not hide each other
            xs, ys, below, above = [], [], [], []
            for position, augment in enumerate(levels):
                cell = cell_value(cells.get((*col, augment)), level, "auc")
                if cell is None or math.isnan(cell["value"]):
                    continue
                low, high = _error_range(cell)
                xs.append(position + offset)
                ys.append(cell["value"])
                below.append(max(cell["value"] - low, 0.0))
                above.append(max(high - cell["value"], 0.0))
            label = column_name(*col, subset) + (f" {FLAG} mixed checkpoints" if (data, *col) in flagged else "")
            axes.errorbar(xs, ys, yerr=[below, above], marker="o", capsize=3, label=label, color=colors[col])
        axes.axhline(0.5, linestyle="--", color="grey", linewidth=1, label="chance")
        axes.set_xticks(range(len(levels)), [augment_axis_title(a, subset) for a in levels])
        title = chart_title(level, data, sweep_id)
        axes.set(ylim=(0, 1.02), xlim=(-0.4, len(levels) - 0.6), xlabel="test-time augmentation",
                 ylabel=f"{level} AUC", title=title)
        axes.grid(alpha=0.3)
        if not plotted:
            axes.text(0.5, 0.75, "no runs", ha="center", transform=axes.transAxes, color="grey")
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False,
                    title="error bars: 95 % bootstrap CI,\nor ± sd over replicates", title_fontsize="small", alignment="left")
    figure.tight_layout()
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path


def chart_title(level: str, data: str, sweep_id: str | None) -> str:
    return f"{level.capitalize()} AUC under test-time perturbation\ndata {data}, sweep {sweep_id or '(none)'}"


def _error_range(cell: dict) -> tuple[float, float]:
    if "n" in cell:
        sd = 0.0 if math.isnan(cell["sd"]) else cell["sd"]
        return cell["value"] - sd, cell["value"] + sd
    if cell.get("low") is None or cell.get("high") is None:
        return cell["value"], cell["value"]
    return cell["low"], cell["high"]


# -- HTML -----------------------------------------------------------------------------------------
def markdown_to_html(markdown: str, folder: Path, title: str) -> str:
    """The report's own Markdown (headings, pipe tables, paragraphs, list items, images) as one HTML page
    with the images embedded as base64, so MLflow's artifact viewer shows it whole."""

    def inline(text: str) -> str:
        return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text, quote=False))

    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
           "body{font-family:sans-serif;margin:1.5em;max-width:80em}table{border-collapse:collapse;margin:0.5em 0}"
           "td,th{border:1px solid #ccc;padding:0.25em 0.6em;text-align:right}td:first-child,th:first-child"
           "{text-align:left}th{background:#f3f3f3}code{background:#f3f3f3}</style></head><body>"]
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            header, body = block[0], [row for row in block[1:] if not set("".join(row)) <= set(":- ")]
            out.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in header) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in body]
            out.append("</table>")
            continue
        heading = re.match(r"(#{1,6}) (.*)", line)
        image = re.fullmatch(r"!\[([^]]*)\]\(([^)]+)\)", line.strip())
        if heading:
            depth = len(heading.group(1))
            out.append(f"<h{depth}>{inline(heading.group(2))}</h{depth}>")
        elif image:
            source = folder / image.group(2)
            data = base64.b64encode(source.read_bytes()).decode("ascii")
            out.append(f"<p><img alt='{html.escape(image.group(1))}' src='data:image/png;base64,{data}'"
                       " style='max-width:100%'></p>")
        elif line.startswith("- "):
            out.append(f"<ul><li>{inline(line[2:])}</li></ul>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
        i += 1
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# -- logging --------------------------------------------------------------------------------------
def log_report(tracking_uri: str, files: Sequence[Path], *, sweep_id: str | None, level: str,
               data: str | None, results: Sequence[dict], experiment: str = REPORT_EXPERIMENT) -> str:
    """A new run in the report experiment with the files as artifacts; returns its run id."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    tags = {"kind": "report", "level": level}
    if sweep_id is not None:
        tags["sweep_id"] = sweep_id
    if data is not None:
        tags["data"] = data
    run_name = unique_name(f"report-{sweep_id or NO_SWEEP_FOLDER}-{level}")
    run = client.create_run(experiment_id(client, tracking_uri, experiment), tags=tags, run_name=run_name)
    run_id = run.info.run_id
    try:
        run_ids = sorted(run["run_id"] for r in results for run in r["runs"])
        client.log_param(run_id, "source_runs", len(run_ids))
        client.log_text(run_id, "\n".join(run_ids) + "\n", "source_runs.txt")
        for file in files:
            client.log_artifact(run_id, str(file))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


# -- command line ---------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m src.experiments.report",
        description="The seed study's tables (Markdown and HTML), paired comparisons and a robustness chart of "
                    "one evaluate sweep in the MLflow store.",
    )
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db)")
    parser.add_argument("--sweep-id", default=None, help="the sweep to report (default: the latest evaluate sweep)")
    parser.add_argument("--data", default=None,
                        help="only runs with this data tag (default: all, one set of tables per data value)")
    parser.add_argument("--level", choices=LEVELS, default="video", help="video- or frame-level metrics")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for report.md, report.html and robustness.png (default: reports/<sweep id>/ "
                             "in the project)")
    parser.add_argument("--experiment", default=EVALUATE_EXPERIMENT,
                        help=f"experiment holding the evaluate runs (default: {EVALUATE_EXPERIMENT})")
    parser.add_argument("--no-log", action="store_true",
                        help=f"do not log the report as a run of the MLflow experiment '{REPORT_EXPERIMENT}'")
    return parser


def _nothing_found(tracking_uri: str, args: argparse.Namespace) -> str:
    filters = [f"{name}={value}" for name, value in (("sweep_id", args.sweep_id), ("data", args.data)) if value]
    where = f"experiment '{args.experiment}' of the MLflow store {tracking_uri}"
    if _store_missing(tracking_uri):
        where += f" (the database file {sqlite_file(tracking_uri)} does not exist)"
    lines = [f"No finished evaluate runs found in {where}" + (f" matching {', '.join(filters)}." if filters else ".")]
    if args.sweep_id is not None or args.data is not None:
        sweeps = known_sweeps(tracking_uri, args.experiment)
        if sweeps:
            lines.append(f"Sweep ids present (newest first): {', '.join(sweeps)}")
    lines.append(f"Runs are produced by: {PRODUCE_RUNS}")
    lines.append("(set MLFLOW_TRACKING_URI or --tracking-uri if they were logged to another store)")
    return "\n".join(lines)


def _folder_name(sweep_id: str | None) -> str:
    return re.sub(r"[^\w.-]", "_", sweep_id) if sweep_id else NO_SWEEP_FOLDER


def build_document(results: Sequence[dict], tracking_uri: str, args: argparse.Namespace, sweep_id: str | None,
                   comparisons: Sequence[dict]) -> str:
    runs = sum(len(r["runs"]) for r in results)
    scope = f"sweep `{sweep_id}`" if sweep_id else "the latest finished run of each cell (no run belongs to a sweep)"
    lines = [
        f"# Deepfake detection: {args.level}-level test metrics, sweep {sweep_id or '(none)'}",
        "",
        f"From {runs} evaluate runs of {scope} in experiment `{args.experiment}` of `{tracking_uri}`"
        + (f", data `{args.data}`" if args.data else "") + ".",
        f"Cells: value [95 % bootstrap interval]; replicated runs (differing only in {', '.join(REPLICATE_TAGS)}): "
        f"mean ± sd (n). Missing cells: {MISSING}.",
        "",
    ]
    notes = _notes(results, lineage_flags(results))
    if notes:
        lines += ["## Checks", ""] + [f"- {note}" for note in notes] + [""]
    lines.append(render_tables(results, args.level))
    comparison_text = render_comparisons(comparisons)
    if comparison_text:
        lines.append(comparison_text)
    lines.append("![robustness](robustness.png)")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Build report.md, report.html and robustness.png of one sweep, print the tables, log them; 1 when there
    are no runs."""
    args = _parser().parse_args(argv)
    tracking_uri = args.tracking_uri or default_tracking_uri()
    sweep_id = args.sweep_id or latest_sweep(tracking_uri, args.experiment, data=args.data)
    results = collect_results(tracking_uri, sweep_id=sweep_id, data=args.data, experiment=args.experiment)
    if not results:
        print(_nothing_found(tracking_uri, args), file=sys.stderr)
        return 1
    out = args.out if args.out is not None else PROJECT_ROOT / "reports" / _folder_name(sweep_id)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="report-scores-") as tmp:
        comparisons = paired_comparisons(results, ScoreFiles(tracking_uri, Path(tmp)))
    chart = plot_robustness(results, out / "robustness.png", level=args.level, sweep_id=sweep_id)
    document = build_document(results, tracking_uri, args, sweep_id, comparisons)
    report = out / "report.md"
    report.write_text(document, encoding="utf-8")
    page = out / "report.html"
    page.write_text(markdown_to_html(document, out, f"Deepfake detection report, sweep {sweep_id}"), encoding="utf-8")
    print(document)
    print(f"Wrote {report}, {page} and {chart}")
    if not args.no_log:
        run_id = log_report(tracking_uri, [report, page, chart], sweep_id=sweep_id, level=args.level,
                            data=args.data, results=results)
        print(f"Logged MLflow run {run_id} in experiment '{REPORT_EXPERIMENT}' of {tracking_uri} "
              "(open report.html among its artifacts)")
        print(f"MLflow: {run_link(tracking_uri, run_id)}  (make ui)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
