"""The report's cross-dataset table (experiment=cross_dataset): one row per (model, weights), one column per
test set (the runs' `data` tags, in the preset's order), each cell the video-level AUC and the frame-level
AUC (frame models) with their 95 % bootstrap intervals, from the unperturbed runs (augment `none`). Where the
preset quotes published numbers (DeepfakeBench), a second table puts them beside ours, with their source.
Rendered when the reported runs span at least two test sets."""

from __future__ import annotations

from collections.abc import Sequence

from src.experiments.report.collect import data_values
from src.experiments.report.tables import (
    MISSING,
    Preset,
    column_name,
    columns,
    format_cell,
    markdown_table,
    metric_cell,
)

NOT_QUOTED = "not quoted"
UNPERTURBED = "none"


def _order(results: Sequence[dict], preset: Preset | None) -> list[str]:
    present = data_values(results)
    listed = [d for d in (preset.datasets if preset else ()) if d in present]
    return listed + [d for d in present if d not in listed]


def render_cross_dataset(results: Sequence[dict], preset: Preset | None = None) -> str:
    """The section as Markdown, or "" when the runs cover fewer than two test sets."""
    clean = [r for r in results if r["augment"] == UNPERTURBED]
    datasets = _order(clean, preset)
    if len(datasets) < 2:
        return ""
    cells = {(r["model"], r["weights"], r["data"]): r for r in clean}
    rows = [c for c in columns(clean, preset) if any((*c, d) in cells for d in datasets)]
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
        video = [format_cell(metric_cell(cells.get((model, weights, d)), "test/video_auc")) for d in datasets]
        frame = [format_cell(metric_cell(cells.get((model, weights, d)), "test/frame_auc")) for d in datasets]
        table.append([name, "video"] + video)
        if any(value != MISSING for value in frame):
            table.append(["", "frame"] + frame)
    out += markdown_table(["model", "level"] + datasets, table, text_columns=2) + [""]
    references = (preset.references if preset else {}) or {}
    quoted = references.get("frame_auc") or {}
    if quoted:
        header = ["model", "frame AUC"] + datasets
        lines = []
        for model, weights in rows:
            ours = [
                format_cell(metric_cell(cells.get((model, weights, d)), "test/frame_auc")) for d in datasets
            ]
            theirs = [
                f"{quoted[model][d]:.4f}" if d in quoted.get(model, {}) else NOT_QUOTED for d in datasets
            ]
            name = column_name(model, weights, clean, preset)
            lines += [[name, "this run"] + ours, ["", "published"] + theirs]
        out += [
            "### Beside published numbers",
            "",
            f"Published: {references['source']}. Theirs select the best epoch on each test set; ours select on "
            "the training set's validation split only, so theirs are an upper bound of what the same protocol "
            "gives (see the selection-inflation command in the docs).",
            "",
        ]
        out += markdown_table(header, lines, text_columns=2) + [""]
    return "\n".join(out)
