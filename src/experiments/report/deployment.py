"""The report's deployment section (video level): per run its calibration and operating points, and per data
value and augment level the per-subset metrics (`test/subset/<grouping>/<value>/<metric>`, see
src.experiments.evaluation.subsets), one row group per subset, one column per (model, weights) as in the metric tables.
Runs logged before these metrics existed show –; without any such metric the section is left out."""

from __future__ import annotations

from collections.abc import Sequence

from src.experiments.evaluation.subsets import GROUPINGS, face_size_buckets, subset_of
from src.experiments.report.collect import augment_levels, augment_title, data_values
from src.experiments.report.records import Cell, Table
from src.experiments.report.tables import (
    MISSING,
    Preset,
    column_name,
    columns,
    format_metric,
    metric_value,
)

# (column header, metric name) of the operating-point table
OPERATING_POINTS = (
    ("ECE", "test/video_ece"),
    ("TPR at 1 % FPR", "test/video_tpr_fpr01"),
    ("TPR at 5 % FPR", "test/video_tpr_fpr05"),
    ("Val threshold", "val/video_threshold"),
    ("Accuracy at val threshold", "test/video_acc_val_threshold"),
)
# (row label, metric suffix) of each subset; the AUC's label says what a one-class subset is ranked against
SUBSET_ROWS = (
    ("AUC", "video_auc"),
    ("Accuracy at 0.5", "video_acc"),
    ("Accuracy at val threshold", "video_acc_val_threshold"),
)
INTRO = (
    "ECE: expected calibration error of the video P(fake) (15 equal-width bins). TPR at x % FPR: the highest "
    "true-positive rate among the ROC points whose false-positive rate is at most x %. Val threshold: the "
    "equal-error point of the validation videos (for finetuned weights the one their training recorded in the "
    "checkpoint, otherwise the fold's unperturbed validation videos; – where there are none), applied as "
    "P(fake) >= threshold. Subsets: a subset of one class is ranked against every test video of the other "
    "class (the usual per-method AUC); its accuracy is its recall (fakes) or specificity (reals)."
)


def _subsets(cells: Sequence[Cell]) -> list[tuple[str, str]]:
    """(grouping, value) of every subset any run logged: groupings in GROUPINGS order, face sizes by size."""
    found = {subset[:2] for c in cells for run in c.runs for key in run.metrics if (subset := subset_of(key))}
    sizes = face_size_buckets()

    def order(item: tuple[str, str]):
        grouping, value = item
        rank = GROUPINGS.index(grouping) if grouping in GROUPINGS else len(GROUPINGS)
        position = sizes.index(value) if grouping == "face_size" and value in sizes else len(sizes)
        return (rank, grouping, position, value)

    return sorted(found, key=order)


def _counts(cells: Sequence[Cell], grouping: str, value: str) -> tuple[str, str]:
    """("videos (fakes)" as logged, what a one-class subset's AUC ranks it against)."""
    prefix = f"test/subset/{grouping}/{value}/"
    seen = sorted(
        {
            (int(run.metrics[prefix + "videos"]), int(run.metrics.get(prefix + "fake_videos", -1)))
            for c in cells
            for run in c.runs
            if prefix + "videos" in run.metrics
        }
    )
    text = " / ".join(f"{n} ({fakes} fake)" if fakes >= 0 else str(n) for n, fakes in seen) or MISSING
    if seen and all(fakes == n for n, fakes in seen):
        return text, "AUC vs all test reals"
    if seen and all(fakes == 0 for _, fakes in seen):
        return text, "AUC vs all test fakes"
    return text, "AUC"


def render_deployment(cells: Sequence[Cell], preset: Preset | None = None) -> str:
    """`## Deployment` with, per data value, the operating points of every run and a subset table per
    augment level; "" when no run logged any of these metrics.

    Args:
        cells: the cells of the report.
        preset: a table shape (None: only the columns with runs).
    """
    names = {key for _, key in OPERATING_POINTS}
    logged = any(key in names or subset_of(key) for c in cells for run in c.runs for key in run.metrics)
    if not logged:
        return ""
    out = ["## Deployment: calibration, operating points, subsets", "", INTRO, ""]
    for data in data_values(cells):
        subset = [c for c in cells if c.data == data]
        cols = columns(subset, preset)
        out += [f"### Operating points, data {data}", ""]
        rows = [
            [column_name(*col, subset, preset), augment_title(c.augment, subset)]
            + [format_metric(metric_value(c, key)) for _, key in OPERATING_POINTS]
            for col in cols
            for c in subset
            if c.column == col
        ]
        header = ["Column", "Augment", *(h for h, _ in OPERATING_POINTS)]
        out += Table(header, rows, text_columns=2).to_markdown()
        out.append("")
        for augment in augment_levels(subset):
            by_column = {c.column: c for c in subset if c.augment == augment}
            found = _subsets(list(by_column.values()))
            if not found:
                continue
            out += [f"### Subsets, data {data}, {augment_title(augment, subset)}", ""]
            rows = []
            for grouping, value in found:
                videos, auc_label = _counts(list(by_column.values()), grouping, value)
                for index, (label, suffix) in enumerate(SUBSET_ROWS):
                    key = f"test/subset/{grouping}/{value}/{suffix}"
                    head = [f"{grouping}: {value}", videos] if index == 0 else ["", ""]
                    shown = auc_label if suffix == "video_auc" else label
                    rows.append(
                        head + [shown] + [format_metric(metric_value(by_column.get(c), key)) for c in cols]
                    )
            header = ["Subset", "Videos", "Metric", *(column_name(*c, subset, preset) for c in cols)]
            out += Table(header, rows, text_columns=3).to_markdown() + [""]
    return "\n".join(out).rstrip() + "\n"
