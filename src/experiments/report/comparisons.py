"""Paired comparisons of video AUC on the same videos (the runs' `video_scores.csv`, joined on `path`): per
column and replicate every level against `none`, and finetuned against pretrained of the same model at each
level, each with a paired-bootstrap interval (`*` where it excludes 0)."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

from src.experiments import tracking
from src.experiments.report.collect import (
    augment_levels,
    augment_title,
    data_values,
    flagged_columns,
    replicate_label,
)
from src.experiments.report.records import Cell, Comparison, PairedDifference, ScoredRun, Table
from src.experiments.report.tables import FLAG, MISSING, column_name, columns
from src.utils.stats import paired_difference

SIGNIFICANT = "*"
BASELINE_AUGMENT = "none"
N_BOOT, BOOT_SEED = 1000, 0


class ScoreFiles:
    """The runs' video_scores.csv, downloaded once each into a folder: {path: (label, p_fake, group)}.

    Args:
        tracking_uri: the MLflow store the runs are in.
        folder: where the files are downloaded to.
    """

    COLUMNS = ("path", "label", "p_fake")

    def __init__(self, tracking_uri: str, folder: Path):
        self.tracking_uri, self.folder, self.cache = tracking_uri, folder, {}

    def get(self, run_id: str) -> dict[str, tuple[int, float, str]] | str:
        """The scores, or a one-line reason why they cannot be used.

        Args:
            run_id: the evaluate run.
        """
        if run_id not in self.cache:
            self.cache[run_id] = self._load(run_id)
        return self.cache[run_id]

    def _load(self, run_id: str):
        folder = self.folder / run_id
        folder.mkdir(parents=True, exist_ok=True)
        try:
            with _quiet_downloads():
                path = tracking.client(self.tracking_uri).download_artifacts(
                    run_id, "video_scores.csv", str(folder)
                )
        except Exception:  # noqa: BLE001 - any failure means the same thing here: no scores to compare
            return f"run `{run_id}` has no video_scores.csv artifact"
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in self.COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                return f"run `{run_id}`'s video_scores.csv lacks column(s) {', '.join(missing)}"
            return {
                row["path"]: (int(row["label"]), float(row["p_fake"]), row.get("group") or "")
                for row in reader
            }


@contextmanager
def _quiet_downloads():
    """No download progress bar (one per run is noise here); the variable is restored afterwards."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    saved = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


def paired_auc_difference(a: dict | str, b: dict | str) -> PairedDifference | str:
    """AUC(a) - AUC(b) on the videos both scored (joined on path), with a paired-bootstrap interval.

    Args:
        a, b: two runs' scores as `ScoreFiles.get` returns them (or the reason there are none).

    Returns:
        The difference, or a one-line reason why it cannot be computed.
    """
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
    result = paired_difference(
        [a[p][1] for p in shared],
        [b[p][1] for p in shared],
        labels,
        groups=[a[p][2] for p in shared],
        metric="auc",
        n_boot=N_BOOT,
        seed=BOOT_SEED,
    )
    return PairedDifference(**result, videos=len(shared))


def _comparison(data: str, column: str, label: str, result: PairedDifference | str) -> Comparison:
    if isinstance(result, str):
        return Comparison(data, column, label, reason=result)
    return Comparison(data, column, label, difference=result)


def _run_of(cell: Cell | None, replicate: tuple) -> ScoredRun | None:
    if cell is None:
        return None
    return next((run for run in cell.runs if run.replicate == replicate), None)


def _matching_run(cell: Cell, replicate: tuple) -> ScoredRun | None:
    """The pretrained run to pair with a finetuned replicate: the only one, else the same replicate tags."""
    if len(cell.runs) == 1:
        return cell.runs[0]
    return _run_of(cell, replicate)


def paired_comparisons(cells: Sequence[Cell], scores: ScoreFiles) -> list[Comparison]:
    """Per column and replicate every level against none, then finetuned against pretrained of the same
    model at each level.

    Args:
        cells: the cells of the report.
        scores: where the runs' video scores are read from.
    """
    rows = []
    flagged = flagged_columns(cells)
    for data in data_values(cells):
        subset = [c for c in cells if c.data == data]
        by_key = {(c.model, c.weights, c.augment): c for c in subset}
        levels = augment_levels(subset)
        for col in columns(subset):
            title = column_name(*col, subset)
            replicates = sorted({run.replicate for c in subset if c.column == col for run in c.runs})
            several = len(replicates) > 1
            base = by_key.get((*col, BASELINE_AUGMENT))
            for replicate in replicates:
                suffix = f" ({replicate_label(replicate)})" if several else ""
                base_run = _run_of(base, replicate)
                for augment in levels:
                    run = _run_of(by_key.get((*col, augment)), replicate)
                    if augment == BASELINE_AUGMENT or run is None or base_run is None:
                        continue
                    label = f"{augment_title(augment, subset)} − {augment_title(BASELINE_AUGMENT, subset)}"
                    if (data, *col) in flagged:
                        result = f"not compared: mixed checkpoints {FLAG}"
                    else:
                        result = paired_auc_difference(scores.get(run.run_id), scores.get(base_run.run_id))
                    rows.append(_comparison(data, title, label + suffix, result))
            if col[1] != "finetuned":
                continue
            for augment in levels:
                tuned, reference = by_key.get((*col, augment)), by_key.get((col[0], "pretrained", augment))
                if tuned is None or reference is None:
                    continue
                for run in tuned.runs:
                    other = _matching_run(reference, run.replicate)
                    if other is None:
                        continue
                    label = f"finetuned − pretrained, {augment_title(augment, subset)}"
                    label += f" ({replicate_label(run.replicate)})" if len(tuned.runs) > 1 else ""
                    result = paired_auc_difference(scores.get(run.run_id), scores.get(other.run_id))
                    rows.append(_comparison(data, title, label, result))
    return rows


def _format_difference(difference: PairedDifference) -> str:
    text = f"{difference.diff:+.3f} [{difference.low:+.2f}, {difference.high:+.2f}]"
    return text + (f" {SIGNIFICANT}" if difference.excludes_zero else "")


def render_comparisons(rows: Sequence[Comparison]) -> str:
    """The rows as a `## Paired comparisons` section, one table per data value ("" without rows).

    Args:
        rows: the comparisons, as `paired_comparisons` returns them.
    """
    if not rows:
        return ""
    out = [
        "## Paired comparisons",
        "",
        f"Video AUC differences on the same videos (joined on `path`), with {N_BOOT}-resample paired-bootstrap "
        f"95 % intervals (stratified by class, identity groups resampled whole). {SIGNIFICANT}: the interval "
        "excludes 0.",
        "",
    ]
    for data in sorted({row.data for row in rows}):
        table_rows = []
        for row in (r for r in rows if r.data == data):
            if row.difference is None:
                table_rows.append([row.column, row.label, f"{MISSING} ({row.reason})", MISSING])
            else:
                difference = row.difference
                table_rows.append(
                    [row.column, row.label, _format_difference(difference), str(difference.videos)]
                )
        out += [f"### Data: {data}", ""]
        header = ["Column", "Comparison", "Δ AUC [95 % CI]", "Videos"]
        out += Table(header, table_rows, text_columns=2).to_markdown()
        out += [""]
    return "\n".join(out).rstrip() + "\n"
