"""The report's cross-dataset table (experiment=cross_dataset): one row per (model, weights), one column per
test set (the runs' `data` tags, in the preset's order), each cell the video-level AUC and the frame-level
AUC (frame models) with their 95 % bootstrap intervals, from the unperturbed runs (augment `none`). Where the
preset quotes published numbers (DeepfakeBench), a second table puts them beside ours, with their source.
Rendered when the reported runs span at least two test sets."""

from __future__ import annotations

from collections.abc import Sequence

from src.experiments.report.collect import data_values
from src.experiments.report.records import Cell, Table
from src.experiments.report.tables import (
    MISSING,
    Preset,
    column_name,
    columns,
    format_metric,
    metric_value,
)

NOT_QUOTED = "not quoted"
UNPERTURBED = "none"


def _order(cells: Sequence[Cell], preset: Preset | None) -> list[str]:
    """The test sets (data tags) with runs: the preset's first, in its order, then the others by name."""
    present = data_values(cells)
    listed = [d for d in (preset.test_sets if preset else ()) if d in present]
    return listed + [d for d in present if d not in listed]


def render_cross_dataset(cells: Sequence[Cell], preset: Preset | None = None) -> str:
    """The section as Markdown, or "" when the runs cover fewer than two test sets.

    Args:
        cells: the cells of the report (only the unperturbed ones are used).
        preset: a table shape: its columns, its test-set order and published numbers.
    """
    clean = [c for c in cells if c.augment == UNPERTURBED]
    test_sets = _order(clean, preset)
    if len(test_sets) < 2:
        return ""
    by_key = {(c.model, c.weights, c.data): c for c in clean}
    rows = [col for col in columns(clean, preset) if any((*col, d) in by_key for d in test_sets)]

    def auc(model: str, weights: str, level: str) -> list[str]:
        """The column's AUC at `level` on each test set, printed."""
        return [
            format_metric(metric_value(by_key.get((model, weights, d)), f"test/{level}_auc"))
            for d in test_sets
        ]

    out = [
        "## Cross-dataset: AUC per test set",
        "",
        "Each model's checkpoint (selected on its training set's validation split) scored on every test set "
        "without perturbation. Cells: video-level AUC [95 % bootstrap interval]; below it, for frame models, "
        "the frame-level AUC [interval resampling whole videos]. Train and test sets named by the runs' "
        "`data` tags; the training set is each run's `weights.train_data`.",
        "",
    ]
    table = []
    for model, weights in rows:
        name = column_name(model, weights, clean, preset)
        frame = auc(model, weights, "frame")
        table.append([name, "video", *auc(model, weights, "video")])
        if any(value != MISSING for value in frame):
            table.append(["", "frame", *frame])
    out += Table(["model", "level", *test_sets], table, text_columns=2).to_markdown() + [""]
    references = (preset.references if preset else {}) or {}
    quoted = references.get("frame_auc") or {}
    if quoted:
        lines = []
        for model, weights in rows:
            theirs = [
                f"{quoted[model][d]:.4f}" if d in quoted.get(model, {}) else NOT_QUOTED for d in test_sets
            ]
            name = column_name(model, weights, clean, preset)
            lines += [[name, "this run", *auc(model, weights, "frame")], ["", "published", *theirs]]
        out += [
            "### Beside published numbers",
            "",
            f"Published: {references['source']}. Theirs select the best epoch on each test set; ours select on "
            "the training set's validation split only, so theirs are an upper bound of what the same protocol "
            "gives (see the selection-inflation command in the docs).",
            "",
        ]
        out += Table(["model", "frame AUC", *test_sets], lines, text_columns=2).to_markdown() + [""]
    return "\n".join(out)
