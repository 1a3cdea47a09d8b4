"""Per-subset test metrics: the scored test videos grouped by what the index and the face-crop cache know
about them, each subset scored on its own (`stats.subset_metrics`) and logged as
`test/subset/<grouping>/<value>/<metric>`.

Groupings:
- `source`: `VideoRecord.source`: Celeb-DF's folder (Celeb-real, YouTube-real, Celeb-synthesis); in
  FaceForensics++ the manipulation method of a fake (Deepfakes, Face2Face, ...) and `youtube` for the reals.
- `compression`: a record's own `compression`, else the index's (FF++: `data.compression`).
- `face_size`: the side of the face crop box (the detector's box times `data.face_margin`) in the video's own
  pixels, median over the cached frames, bucketed at FACE_SIZE_EDGES; `no-face` where no face was detected
  in any frame (centre crops).
A grouping with a single value is left out: its one subset is the whole test set.

Metric names only use characters MLflow accepts in every store and on every OS (letters, digits, `_`, `-`,
`.`, `/`; no `=`, `:` or spaces); a value is made safe by replacing any other character with `_`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import numpy as np

from src.utils.stats import subset_metrics

log = logging.getLogger(__name__)
PREFIX = "test/subset/"
GROUPINGS = ("source", "compression", "face_size")
FACE_SIZE_EDGES = (64, 128, 256)  # pixels: below the smallest model input, around it, well above it
NO_FACE = "no-face"


def face_size_bucket(side: float) -> str:
    """`under-64px`, `64-128px`, `128-256px` or `256px-and-over` for a crop side in pixels."""
    low = [edge for edge in FACE_SIZE_EDGES if edge <= side]
    if not low:
        return f"under-{FACE_SIZE_EDGES[0]}px"
    if len(low) == len(FACE_SIZE_EDGES):
        return f"{FACE_SIZE_EDGES[-1]}px-and-over"
    return f"{low[-1]}-{FACE_SIZE_EDGES[len(low)]}px"


def face_size_buckets() -> tuple[str, ...]:
    """Every face_size value, smallest first."""
    return (*(face_size_bucket(side) for side in (0, *FACE_SIZE_EDGES)), NO_FACE)


def subset_of(key: str) -> tuple[str, str, str] | None:
    """(grouping, value, metric) of a `test/subset/<grouping>/<value>/<metric>` name; None for other names."""
    parts = key.removeprefix(PREFIX).split("/")
    return (parts[0], parts[1], parts[2]) if key.startswith(PREFIX) and len(parts) == 3 else None


def face_sizes(records: Sequence, datamodule) -> list[str | None]:
    """Each record's face-size bucket from its cache entry's boxes; None where the entry cannot be read
    (counted in one warning)."""
    buckets: list[str | None] = []
    unreadable = 0
    for record in records:
        try:
            _, meta = datamodule.entries[record.path].load()
            if meta["report"]["centre_fallback"]:
                buckets.append(NO_FACE)
                continue
            boxes = np.asarray(meta["boxes"], dtype=np.float64)
            buckets.append(face_size_bucket(float(np.median(boxes[:, 2] - boxes[:, 0]))))
        except (KeyError, IndexError, ValueError, OSError) as error:
            unreadable += 1
            log.debug("no face size for %s: %s", record.path, error)
            buckets.append(None)
    if unreadable:
        log.warning(
            "face_size subsets: %d of %d test videos have no readable face boxes in the cache and are in "
            "no face_size subset",
            unreadable,
            len(records),
        )
    return buckets


def groupings(records: Sequence, datamodule) -> dict[str, list[str | None]]:
    """{grouping: one value per record (None: in no subset of it)}, groupings with a single value left out."""
    index = getattr(datamodule, "index", None)
    protocol = getattr(index, "protocol", None) or {}
    values = {  # GROUPINGS' columns
        "source": lambda: [record.source or None for record in records],
        "compression": lambda: [
            getattr(r, "compression", None) or protocol.get("compression") for r in records
        ],
        "face_size": lambda: face_sizes(records, datamodule),
    }
    kept = {}
    for name in GROUPINGS:
        column = values[name]()
        distinct = {value for value in column if value is not None}
        if len(distinct) > 1:
            kept[name] = column
        else:
            log.info(
                "no %s subsets: the test videos have %s",
                name,
                f"one {name}, {distinct.pop()}" if distinct else f"no {name}",
            )
    return kept


def safe_name(value: str) -> str:
    """`value` as one MLflow metric-name segment: characters other than letters, digits, `_`, `-`, `.` become
    `_`, and a segment that is empty or only dots gets a leading `_` (it would read as a path)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", str(value))
    return f"_{name}" if set(name) <= {"."} else name


def subset_scores(
    p_fake: np.ndarray,
    labels: np.ndarray,
    columns: dict[str, list[str | None]],
    identities: Sequence[str] | None = None,
    threshold: float | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """`test/subset/<grouping>/<value>/<metric>` for every value of every grouping in `columns` (from
    `groupings`), with `stats.subset_metrics`' metrics and intervals (identity groups resampled whole)."""
    metrics: dict[str, float] = {}
    for grouping, column in columns.items():
        names: dict[str, str] = {}
        for value in sorted({v for v in column if v is not None}):
            name = safe_name(value)
            while name in names.values():  # two values that read the same once made safe stay apart
                name += "_"
            names[value] = name
            members = np.array([v == value for v in column])
            values = subset_metrics(p_fake, labels, members, identities, threshold=threshold, seed=seed)
            metrics.update({f"{PREFIX}{safe_name(grouping)}/{name}/{key}": v for key, v in values.items()})
    return metrics
