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
    """A table shape: columns (model, weights) always shown, in this order; `titles` head those without runs."""

    name: str
    columns: tuple[tuple[str, str], ...]
    titles: dict[tuple[str, str], str] = field(default_factory=dict)
    datasets: tuple[str, ...] = ()  # a cross-dataset table's columns, in this order (data tags)
    references: dict = field(default_factory=dict)  # published numbers beside ours: {source, frame_auc}


def preset_names() -> list[str]:
    return sorted(path.stem for path in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> Preset:
    """conf/report/<name>.yaml: `columns`, a list of {model, weights, title (optional)}."""
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


def column_name(model: str, weights: str, results: Sequence[dict], preset: Preset | None = None) -> str:
    """From what was scored: pretrained is the plain model title (collect.model_title); finetuned from
    pretrained weights "(finetuned)", from random ones "(trained from scratch)" (runs' `source_weights` tag);
    random weights "(untrained)". A preset column without runs: the preset's title."""
    runs = [run for r in results if (r["model"], r["weights"]) == (model, weights) for run in r["runs"]]
    if not runs and preset is not None and (model, weights) in preset.titles:
        return preset.titles[model, weights]
    sources = {run["tags"]["source_weights"] for run in runs if run["tags"].get("source_weights")}
    name, suffix = model_title(model, results), _weights_suffix(weights, sources)
    return name if suffix is None else f"{name} ({suffix})"


def columns(results: Sequence[dict], preset: Preset | None = None) -> list[tuple[str, str]]:
    """The preset's columns (always), then the other columns that have runs."""
    shown = list(preset.columns) if preset is not None else []
    return shown + [column for column in present_columns(results) if column not in shown]


# -- cells ----------------------------------------------------------------------------------------
def cell_value(result: dict | None, level: str, suffix: str) -> dict | None:
    """{value, low, high} of a single run (low/high None without intervals) or {value (mean), sd, n} of
    replicates; None when the cell has no run or no such metric."""
    return metric_cell(result, f"test/{level}_{suffix}")


def metric_cell(result: dict | None, key: str) -> dict | None:
    """`cell_value` of any metric name: its `key_ci_low`/`key_ci_high` are the interval."""
    if result is None:
        return None
    values = [run["metrics"][key] for run in result["runs"] if key in run["metrics"]]
    if not values:
        return None
    if len(result["runs"]) > 1:
        mean, sd = mean_sd(values)
        return {"value": mean, "sd": sd, "n": len(values)}
    metrics = result["runs"][0]["metrics"]
    return {
        "value": float(values[0]),
        "low": metrics.get(f"{key}_ci_low"),
        "high": metrics.get(f"{key}_ci_high"),
    }


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


# -- tables ---------------------------------------------------------------------------------------
def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 1) -> list[str]:
    """A pipe table, aligned in plain text too: the first `text_columns` left, the others (numbers) right."""
    widths = [max(5, len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i < text_columns else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    rule = ["-" * w if i < text_columns else "-" * (w - 1) + ":" for i, w in enumerate(widths)]
    rule[0] = ":" + rule[0][1:]
    return [line(header), "| " + " | ".join(rule) + " |"] + [line(row) for row in rows]


def _table(
    cells: dict[tuple[str, str], dict],
    cols: Sequence[tuple[str, str]],
    level: str,
    results: Sequence[dict],
    flagged: set[tuple[str, str]],
    preset: Preset | None,
) -> list[str]:
    header = [""] + [column_name(*c, results, preset) + (f" {FLAG}" if c in flagged else "") for c in cols]
    rows = [
        [label] + [format_cell(cell_value(cells.get(c), level, suffix)) for c in cols]
        for label, suffix in ROWS
    ]
    return markdown_table(header, rows)


def table_title(augment: str, results: Sequence[dict]) -> str:
    return f"Test metrics, {augment_title(augment, results)}"


def render_tables(results: Sequence[dict], level: str = "video", preset: Preset | None = None) -> str:
    """Per data value a `## Data:` section with one `### Test metrics, <augment title>` table per level that
    has runs (in axis order), rows Loss/AUC/AP/Accuracy/EER, columns per `columns`."""
    check_level(level)
    flagged = flagged_columns(results)
    out: list[str] = []
    for data in data_values(results) or ["(no runs)"]:
        subset = [r for r in results if r["data"] == data]
        out += [f"## Data: {data}", ""]
        cols = columns(subset, preset)
        flagged_here = {(m, w) for d, m, w in flagged if d == data}
        for augment in augment_levels(subset):
            cells = {(r["model"], r["weights"]): r for r in subset if r["augment"] == augment}
            out += [f"### {table_title(augment, subset)}", ""]
            out += _table(cells, cols, level, subset, flagged_here, preset) + [""]
    return "\n".join(out).rstrip() + "\n"
