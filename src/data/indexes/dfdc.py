"""DFDC (the Deepfake Detection Challenge's full set) index.

Layout (the Kaggle training parts and the public test set)::

    <root>/dfdc_train_part_<N>/metadata.json   {"<file>.mp4": {"label": "REAL"|"FAKE", "split": "train",
                                                "original": "<real file>.mp4" | null}, ...}
    <root>/dfdc_train_part_<N>/<file>.mp4      the part's videos, beside their metadata
    <root>/test/labels.csv                     header "filename,label"; label 1 = fake, 0 = real
    <root>/test/<file>.mp4

The public test set is the test list; the training parts are train/val, split into identity-disjoint
folds (``data.folds``). DFDC names no people, so a fake is grouped with its original (identity = the
original's file name): a fake and the video it was made from stay on one side of every split. Without
any training part the index is test-only (the usual cross-dataset protocol needs only the test set).
A listed video that is missing, a video no metadata lists, and a malformed entry or line are skipped
and reported; an unreadable metadata.json or labels.csv is a one-line error naming it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from pathlib import Path

from src.data.indexes.base import FAKE, REAL, VideoIndex, VideoRecord, file_sha256, register_dataset
from src.data.logs import ONCE_PER_SWEEP

log = logging.getLogger(__name__)
log.addFilter(ONCE_PER_SWEEP)

METADATA = "metadata.json"
TEST_FOLDER = "test"  # also the test records' VideoRecord.source; a training video's is its part folder
LABELS = "labels.csv"
_PART = re.compile(r"dfdc_train_part_(\d+)")
_METADATA_LABELS = {"REAL": REAL, "FAKE": FAKE}
_CSV_LABELS = {"0": REAL, "1": FAKE}
_EXPECTED_LAYOUT = (
    "a DFDC folder with test/labels.csv (header filename,label; 1 = fake) beside the test videos, and "
    "optionally training parts dfdc_train_part_<N>/ each holding metadata.json beside its videos"
)


@register_dataset("dfdc", "DFDC")
def index_dfdc(root: str | Path) -> VideoIndex:
    """Index a DFDC folder: the public test set is test, the training parts are train/val."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"DFDC root not found: {root}; expected {_EXPECTED_LAYOUT}")
    labels_csv = root / TEST_FOLDER / LABELS
    if not labels_csv.is_file():
        raise FileNotFoundError(f"DFDC test labels not found: {labels_csv}; expected {_EXPECTED_LAYOUT}")
    skipped: list[tuple[str, str]] = []
    records = _test_records(root, labels_csv, skipped)
    parts = sorted(
        (d for d in root.iterdir() if d.is_dir() and _PART.fullmatch(d.name)),
        key=lambda d: int(_PART.fullmatch(d.name).group(1)),
    )
    digests = hashlib.sha256()
    for part in parts:
        if not (part / METADATA).is_file():
            skipped.append((part.name, f"no {METADATA} in this training part; its videos are skipped"))
            continue
        digests.update(f"{part.name}:{file_sha256(part / METADATA)}\n".encode())
        records += _part_records(root, part, skipped)
    if not parts:
        log.info("no dfdc_train_part_<N> folders in %s: DFDC is indexed test-only", root)
    index = VideoIndex(
        root=root,
        records=records,
        skipped=skipped,
        dataset="dfdc",
        protocol={LABELS: file_sha256(labels_csv), METADATA: digests.hexdigest()},
        test_only=not parts,
    )
    index.check_classes()
    index.log_summary()
    return index


def listed_video(root: Path, folder: Path, name: object) -> tuple[Path | None, str]:
    """(the file, "") for a metadata entry naming a video in ``folder``, or (None, why not)."""
    if (
        not isinstance(name, str)
        or not name.endswith(".mp4")
        or "/" in name
        or "\\" in name
        or name in (".", "..")
    ):
        return None, f"{name!r} is not a plain <file>.mp4 name"
    path = folder / name
    if not path.is_file():
        return None, f"listed but not found: {path}"
    if not any(path.resolve().is_relative_to(p) for p in (root.resolve(), folder.resolve())):
        return None, f"symlink resolves outside the dataset root: {path.resolve()}"
    return path, ""


def _unlisted(root: Path, folder: Path, listed: set[str], skipped: list, why: str) -> None:
    for entry in sorted(folder.iterdir()):
        if entry.name not in listed and entry.suffix.lower() == ".mp4":
            skipped.append((entry.relative_to(root).as_posix(), why))


def read_json_object(path: Path, expected: str) -> dict:
    """A JSON file holding an object, or a one-line error naming the file and what it should hold."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err}; expected {expected}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}, not an object; expected {expected}")
    return data


def _part_records(root: Path, part: Path, skipped: list[tuple[str, str]]) -> list[VideoRecord]:
    metadata = read_json_object(
        part / METADATA, '{"<file>.mp4": {"label": "REAL"|"FAKE", "split": "train", "original": ...}}'
    )
    records = []
    for name, entry in metadata.items():
        where = f"{part.name}/{METADATA}: {name!r}"
        path, reason = listed_video(root, part, name)
        entry = entry if isinstance(entry, dict) else {}
        label, original = _METADATA_LABELS.get(str(entry.get("label"))), entry.get("original")
        if path is None:
            skipped.append((where, reason))
        elif label is None:
            skipped.append((where, f"label {entry.get('label')!r} is not REAL or FAKE"))
        elif entry.get("split", "train") != "train":
            skipped.append((where, f"split {entry.get('split')!r} is not train"))
        elif label == FAKE and not (isinstance(original, str) and original.endswith(".mp4")):
            skipped.append((where, f"a FAKE needs its original <file>.mp4, got original={original!r}"))
        else:
            group = Path(original if label == FAKE else name).stem
            records.append(VideoRecord(f"{part.name}/{name}", label, group, part.name, False))
    _unlisted(root, part, set(metadata), skipped, f"not listed in {part.name}/{METADATA}")
    return records


def _test_records(root: Path, labels_csv: Path, skipped: list[tuple[str, str]]) -> list[VideoRecord]:
    try:
        rows = list(csv.reader(labels_csv.read_text(encoding="utf-8-sig").splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"cannot read {labels_csv}: {err}; expected a header filename,label") from err
    header = [cell.strip() for cell in rows[0]] if rows else []
    if header != ["filename", "label"]:
        raise ValueError(
            f"{labels_csv}: header is {','.join(header) or 'missing'}; expected filename,label (1 = fake)"
        )
    folder, records, seen, named = root / TEST_FOLDER, [], {}, set()
    for number, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        where = f"{TEST_FOLDER}/{LABELS}:{number}: {','.join(row)!r}"
        cells = [cell.strip() for cell in row]
        named.add(cells[0])  # a rejected line's video is reported by that line, not again as unlisted
        label = _CSV_LABELS.get(cells[1]) if len(cells) == 2 else None
        path, reason = listed_video(root, folder, cells[0]) if label is not None else (None, "")
        if label is None:
            skipped.append((where, "malformed line; expected <file>.mp4,<0 real|1 fake>"))
        elif path is None:
            skipped.append((where, reason))
        elif cells[0] in seen:
            skipped.append((where, f"duplicate of line {seen[cells[0]]}"))
        else:
            seen[cells[0]] = number
            records.append(VideoRecord(f"{TEST_FOLDER}/{cells[0]}", label, path.stem, TEST_FOLDER, True))
    _unlisted(root, folder, named, skipped, f"not listed in {TEST_FOLDER}/{LABELS}")
    return records
