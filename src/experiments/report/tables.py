"""The metric tables: per data value one table per augment level, rows Loss/AUC/AP/Accuracy/EER, one column
per (model, weights), cells `0.893 [0.71, 1.00]` (a run's value and 95 % bootstrap interval) or
`0.893 ± 0.012 (n=3)` (replicates).

Columns are those with runs (collect.present_columns order), titled from the runs' tags. A preset
(conf/report/<name>.yaml, `--preset <name>`) fixes a table shape: its columns come first, in its order, and
are shown even where no run scored them (cells –, header the preset's title); other columns with runs follow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from src.experiments.report.collect import (
    augment_levels,
    augment_title,
    check_level,
    data_values,
    flagged_columns,
    model_title,
    present_columns,
)
from src.experiments.report.records import Cell, MetricValue, Table
from src.experiments.tracking.store import CONFIG_DIR
from src.utils.errors import check
from src.utils.stats import mean_sd

MISSING = "–"  # en dash: a cell without a run, never a zero
FLAG = "⚠"
# (table row label, metric suffix after test/<level>_)
ROWS = (("Loss", "loss"), ("AUC", "auc"), ("AP", "ap"), ("Accuracy", "acc"), ("EER", "eer"))
PRESET_DIR = CONFIG_DIR / "report"


# -- presets --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preset:
    """A table shape (conf/report/<name>.yaml).

    Attributes:
        name: the preset's name.
        columns: (model, weights) columns always shown, in this order.
        titles: the headers of those columns where they have no runs.
        test_sets: a cross-dataset table's columns, in this order (data tags; the YAML's `datasets`).
        references: published numbers beside ours: {source, frame_auc: {model: {data: auc}}}.
    """

    name: str
    columns: tuple[tuple[str, str], ...]
    titles: dict[tuple[str, str], str] = field(default_factory=dict)
    test_sets: tuple[str, ...] = ()
    references: dict = field(default_factory=dict)


def preset_names() -> list[str]:
    """The presets there are: conf/report/<name>.yaml."""
    return sorted(path.stem for path in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> Preset:
    """conf/report/<name>.yaml: `columns`, a list of {model, weights, title (optional)}; `datasets`, the
    order of a cross-dataset table's test sets; `references`, published numbers to print beside ours.

    Args:
        name: the preset's name.
    """
    from omegaconf import OmegaConf

    path = PRESET_DIR / f"{name}.yaml"
    check(path.is_file(), "--preset", name, f"no {path} (presets: {', '.join(preset_names()) or 'none'})")
    content = OmegaConf.to_container(OmegaConf.load(path))
    entries = content.get("columns") if isinstance(content, dict) else None
    extra = set(content) - {"columns", "datasets", "references"} if isinstance(content, dict) else set()
    check(not extra, f"{path}", sorted(extra), "unknown keys: a preset has columns, datasets, references")
    check(
        isinstance(entries, list) and entries,
        f"{path}: columns",
        entries,
        "must be a non-empty list of {model, weights, title}",
    )
    columns, titles = [], {}
    for index, entry in enumerate(entries):
        valid = (
            isinstance(entry, dict)
            and all(isinstance(entry.get(key), str) for key in ("model", "weights"))
            and isinstance(entry.get("title", ""), str)
            and set(entry) <= {"model", "weights", "title"}
        )
        check(
            valid,
            f"{path}: columns[{index}]",
            entry,
            "must be {model: <name>, weights: <name>, title: <text>}",
        )
        column = (entry["model"], entry["weights"])
        check(column not in columns, f"{path}: columns[{index}]", entry, "repeats an earlier column")
        columns.append(column)
        if entry.get("title"):
            titles[column] = entry["title"]
    datasets = content.get("datasets") or []
    check(
        isinstance(datasets, list) and all(isinstance(d, str) for d in datasets),
        f"{path}: datasets",
        datasets,
        "must be a list of data option names",
    )
    references = content.get("references") or {}
    check(
        isinstance(references, dict) and (not references or isinstance(references.get("source"), str)),
        f"{path}: references",
        references,
        "must be {source: <where the numbers are published>, frame_auc: {<model>: {<data>: <auc>}}}",
    )
    return Preset(name, tuple(columns), titles, tuple(datasets), references)


# -- columns and their names ----------------------------------------------------------------------
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


def column_name(model: str, weights: str, cells: Sequence[Cell], preset: Preset | None = None) -> str:
    """A column's header, from what was scored: pretrained is the plain model title (collect.model_title);
    finetuned from pretrained weights "(finetuned)", from random ones "(trained from scratch)" (the runs'
    `source_weights` tag); random weights "(untrained)".

    Args:
        model, weights: the column.
        cells: the cells whose runs' tags name it.
        preset: a table shape; its title heads a column of its own that has no runs.
    """
    runs = [run for c in cells if c.column == (model, weights) for run in c.runs]
    if not runs and preset is not None and (model, weights) in preset.titles:
        return preset.titles[model, weights]
    sources = {run.tags["source_weights"] for run in runs if run.tags.get("source_weights")}
    name, suffix = model_title(model, cells), _weights_suffix(weights, sources)
    return name if suffix is None else f"{name} ({suffix})"


def columns(cells: Sequence[Cell], preset: Preset | None = None) -> list[tuple[str, str]]:
    """The preset's columns (always), then the other columns that have runs.

    Args:
        cells: the cells of the report.
        preset: a table shape (None: only the columns with runs).
    """
    shown = list(preset.columns) if preset is not None else []
    return shown + [column for column in present_columns(cells) if column not in shown]


# -- metric values ----------------------------------------------------------------------------------
def level_metric(cell: Cell | None, level: str, suffix: str) -> MetricValue | None:
    """`metric_value` of `test/<level>_<suffix>`.

    Args:
        cell: the cell (None: no run).
        level: "video" or "frame".
        suffix: the metric, e.g. "auc".
    """
    return metric_value(cell, f"test/{level}_{suffix}")


def metric_value(cell: Cell | None, key: str) -> MetricValue | None:
    """A single run's value and interval (`<key>_ci_low`/`<key>_ci_high`), or the mean and sd of replicates.

    Args:
        cell: the cell (None: no run).
        key: the metric's MLflow name.

    Returns:
        None when the cell has no run or no run logged `key`.
    """
    if cell is None:
        return None
    values = [run.metrics[key] for run in cell.runs if key in run.metrics]
    if not values:
        return None
    if len(cell.runs) > 1:
        mean, sd = mean_sd(values)
        return MetricValue(mean, sd=sd, n=len(values))
    metrics = cell.runs[0].metrics
    return MetricValue(float(values[0]), metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high"))


def _number(value: float, digits: int) -> str:
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


def format_metric(metric: MetricValue | None) -> str:
    """`0.893 [0.71, 1.00]`, `0.893` without an interval, `0.893 ± 0.012 (n=3)` for replicates, – for none.

    Args:
        metric: the value to print (None: no run).
    """
    if metric is None:
        return MISSING
    text = _number(metric.value, 3)
    if metric.replicated:
        return f"{text} ± {_number(metric.sd, 3)} (n={metric.n})"
    if metric.low is not None and metric.high is not None:
        text += f" [{_number(metric.low, 2)}, {_number(metric.high, 2)}]"
    return text


# -- tables ---------------------------------------------------------------------------------------
def _table(
    by_column: dict[tuple[str, str], Cell],
    cols: Sequence[tuple[str, str]],
    level: str,
    cells: Sequence[Cell],
    flagged: set[tuple[str, str]],
    preset: Preset | None,
) -> Table:
    header = [""] + [column_name(*c, cells, preset) + (f" {FLAG}" if c in flagged else "") for c in cols]
    rows = [
        [label] + [format_metric(level_metric(by_column.get(c), level, suffix)) for c in cols]
        for label, suffix in ROWS
    ]
    return Table(header, rows)


def table_title(augment: str, cells: Sequence[Cell]) -> str:
    """`Test metrics, <augment title>`.

    Args:
        augment: the augment level.
        cells: the cells whose runs' tags title it.
    """
    return f"Test metrics, {augment_title(augment, cells)}"


def render_tables(cells: Sequence[Cell], level: str = "video", preset: Preset | None = None) -> str:
    """Per data value a `## Data:` section with one `### Test metrics, <augment title>` table per level that
    has runs (in axis order), rows Loss/AUC/AP/Accuracy/EER, columns per `columns`.

    Args:
        cells: the cells of the report.
        level: "video" or "frame" metrics.
        preset: a table shape (None: only the columns with runs).
    """
    check_level(level)
    flagged = flagged_columns(cells)
    out: list[str] = []
    for data in data_values(cells) or ["(no runs)"]:
        subset = [c for c in cells if c.data == data]
        out += [f"## Data: {data}", ""]
        cols = columns(subset, preset)
        flagged_here = {(m, w) for d, m, w in flagged if d == data}
        for augment in augment_levels(subset):
            by_column = {c.column: c for c in subset if c.augment == augment}
            out += [f"### {table_title(augment, subset)}", ""]
            out += _table(by_column, cols, level, subset, flagged_here, preset).to_markdown() + [""]
    return "\n".join(out).rstrip() + "\n"
