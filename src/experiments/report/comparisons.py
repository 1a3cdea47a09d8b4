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
from src.experiments.report.tables import FLAG, MISSING, column_name, columns, markdown_table
from src.utils.stats import paired_difference

SIGNIFICANT = "*"
BASELINE_AUGMENT = "none"
N_BOOT, BOOT_SEED = 1000, 0


class ScoreFiles:
    """The runs' video_scores.csv, downloaded once each into a folder: {path: (label, p_fake, group)}."""

    COLUMNS = ("path", "label", "p_fake")

    def __init__(self, tracking_uri: str, folder: Path):
        self.tracking_uri, self.folder, self.cache = tracking_uri, folder, {}

    def get(self, run_id: str) -> dict[str, tuple[int, float, str]] | str:
        """The scores, or a one-line reason why they cannot be used."""
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


def _paired(a: dict | str, b: dict | str) -> dict | str:
    """AUC(a) - AUC(b) on the videos both scored (joined on path), with a paired-bootstrap interval."""
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
    return {**result, "videos": len(shared)}


def _run_of(result: dict | None, replicate: tuple) -> dict | None:
    if result is None:
        return None
    return next((run for run in result["runs"] if run["replicate"] == replicate), None)


def _matching_run(result: dict, replicate: tuple) -> dict | None:
    """The pretrained run to pair with a finetuned replicate: the only one, else the same replicate tags."""
    if len(result["runs"]) == 1:
        return result["runs"][0]
    return _run_of(result, replicate)


def paired_comparisons(results: Sequence[dict], scores: ScoreFiles) -> list[dict]:
    """Rows {data, column, comparison, result (dict or reason str)}: per column and replicate every level
    against none, then finetuned against pretrained of the same model at each level."""
    rows = []
    flagged = flagged_columns(results)
    for data in data_values(results):
        subset = [r for r in results if r["data"] == data]
        by_cell = {(r["model"], r["weights"], r["augment"]): r for r in subset}
        levels = augment_levels(subset)
        for col in columns(subset):
            title = column_name(*col, subset)
            replicates = sorted(
                {run["replicate"] for r in subset if (r["model"], r["weights"]) == col for run in r["runs"]}
            )
            several = len(replicates) > 1
            base = by_cell.get((*col, BASELINE_AUGMENT))
            for replicate in replicates:
                suffix = f" ({replicate_label(replicate)})" if several else ""
                base_run = _run_of(base, replicate)
                for augment in levels:
                    run = _run_of(by_cell.get((*col, augment)), replicate)
                    if augment == BASELINE_AUGMENT or run is None or base_run is None:
                        continue
                    comparison = (
                        f"{augment_title(augment, subset)} − {augment_title(BASELINE_AUGMENT, subset)}"
                    )
                    if (data, *col) in flagged:
                        result = f"not compared: mixed checkpoints {FLAG}"
                    else:
                        result = _paired(scores.get(run["run_id"]), scores.get(base_run["run_id"]))
                    rows.append(
                        {"data": data, "column": title, "comparison": comparison + suffix, "result": result}
                    )
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
                    label = f"finetuned − pretrained, {augment_title(augment, subset)}"
                    label += f" ({replicate_label(run['replicate'])})" if len(tuned["runs"]) > 1 else ""
                    rows.append(
                        {
                            "data": data,
                            "column": title,
                            "comparison": label,
                            "result": _paired(scores.get(run["run_id"]), scores.get(other["run_id"])),
                        }
                    )
    return rows


def _format_difference(result: dict) -> str:
    text = f"{result['diff']:+.3f} [{result['low']:+.2f}, {result['high']:+.2f}]"
    return text + (f" {SIGNIFICANT}" if result["excludes_zero"] else "")


def render_comparisons(rows: Sequence[dict]) -> str:
    """The rows as a `## Paired comparisons` section, one table per data value ("" without rows)."""
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
    for data in sorted({row["data"] for row in rows}):
        table_rows = []
        for row in (r for r in rows if r["data"] == data):
            result = row["result"]
            if isinstance(result, str):
                table_rows.append([row["column"], row["comparison"], f"{MISSING} ({result})", MISSING])
            else:
                table_rows.append(
                    [row["column"], row["comparison"], _format_difference(result), str(result["videos"])]
                )
        out += [f"### Data: {data}", ""]
        out += markdown_table(
            ["Column", "Comparison", "Δ AUC [95 % CI]", "Videos"], table_rows, text_columns=2
        )
        out += [""]
    return "\n".join(out).rstrip() + "\n"
