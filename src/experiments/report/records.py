"""The report's records: what it reads from the store (scored runs grouped into cells), what it derives from
them (metric values, lineage flags, paired comparisons) and the tables it prints. Plain dataclasses, so each
module of the report says in its signatures what it takes and returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ScoredRun:
    """One finished evaluate run as the report reads it.

    Attributes:
        run_id: the MLflow run id.
        tags: the run's tags (model, weights, augment, data, titles, lineage, ...).
        metrics: the run's metrics, by their MLflow names (`test/video_auc`, `test/video_auc_ci_low`, ...).
        start_time: when it started (ms since the epoch; 0 when unknown).
        replicate: its `seed`, `train_seed` and `fold` tags ("" where absent): what may differ between
            the replicates of one cell.
    """

    run_id: str
    tags: dict[str, str]
    metrics: dict[str, float]
    start_time: int = 0
    replicate: tuple[str, ...] = ("", "", "")


@dataclass
class Cell:
    """One (model, weights, augment, data) combination of a sweep and the runs that scored it.

    Attributes:
        model, weights, augment, data: the run tags that define the cell (data "unknown" where untagged).
        sweep_id: the sweep its runs belong to (None outside a sweep).
        runs: one run per replicate, sorted by replicate.
        replaced: older runs with the same replicate tags as one in `runs` (re-runs; the newest is used).
    """

    model: str
    weights: str
    augment: str
    data: str
    sweep_id: str | None = None
    runs: list[ScoredRun] = field(default_factory=list)
    replaced: list[ScoredRun] = field(default_factory=list)

    @property
    def column(self) -> tuple[str, str]:
        """(model, weights): the table column the cell belongs to."""
        return (self.model, self.weights)


@dataclass(frozen=True)
class MetricValue:
    """One metric of a cell: a single run's value and 95 % bootstrap interval, or the mean and standard
    deviation over replicates.

    Attributes:
        value: the run's value, or the mean over replicates.
        low, high: the interval of a single run (None where it logged none, and for replicates).
        sd, n: standard deviation and number of replicates (None for a single run).
    """

    value: float
    low: float | None = None
    high: float | None = None
    sd: float | None = None
    n: int | None = None

    @property
    def replicated(self) -> bool:
        return self.n is not None


@dataclass(frozen=True)
class LineageFlag:
    """A column (per data value and replicate) whose levels scored different checkpoints.

    Attributes:
        data, model, weights: the column and the data value.
        replicate: the replicate's tags (see `ScoredRun.replicate`).
        levels: (augment, run id, checkpoint) per level, in axis order; the checkpoint is the train run
            (finetuned) or the weights file and hash (pretrained), None where not recorded.
    """

    data: str
    model: str
    weights: str
    replicate: tuple[str, ...]
    levels: tuple[tuple[str, str, str | None], ...]


@dataclass(frozen=True)
class PairedDifference:
    """AUC(a) − AUC(b) on the videos both runs scored, with a paired-bootstrap 95 % interval.

    Attributes:
        diff: the difference on those videos.
        low, high: its interval.
        excludes_zero: whether the interval excludes 0 (a difference beyond noise, marked `*`).
        videos: how many videos both runs scored.
    """

    diff: float
    low: float
    high: float
    excludes_zero: bool
    videos: int


@dataclass(frozen=True)
class Comparison:
    """One row of the paired comparisons.

    Attributes:
        data: the data value both runs scored.
        column: the column's display name.
        label: what is compared, e.g. "heavy − none" or "finetuned − pretrained, heavy".
        difference: the paired difference, or None where it could not be computed.
        reason: why not (None where `difference` is set), e.g. a run without video_scores.csv.
    """

    data: str
    column: str
    label: str
    difference: PairedDifference | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Table:
    """A table of text cells, printed as a Markdown pipe table that is aligned in plain text too.

    Attributes:
        header: the column headers.
        rows: the rows, each as long as the header.
        text_columns: how many leading columns hold text (left-aligned); the others hold numbers (right).
    """

    header: Sequence[str]
    rows: Sequence[Sequence[str]]
    text_columns: int = 1

    def to_markdown(self) -> list[str]:
        """The table's lines: header, alignment rule, rows."""
        widths = [max(5, len(h), *(len(row[i]) for row in self.rows)) for i, h in enumerate(self.header)]

        def line(cells: Sequence[str]) -> str:
            aligned = (
                c.ljust(w) if i < self.text_columns else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            return "| " + " | ".join(aligned) + " |"

        rule = ["-" * w if i < self.text_columns else "-" * (w - 1) + ":" for i, w in enumerate(widths)]
        rule[0] = ":" + rule[0][1:]
        return [line(self.header), "| " + " | ".join(rule) + " |"] + [line(row) for row in self.rows]
