"""The Celeb-DF v1/v2 indexer (also the synthetic set's, which has its layout).

Listed videos are test, every other video is train/val. Celeb-DF's test list (1 = real) is converted to the
project's labels (1 = fake) here. A fake ``id<N>_id<M>_<NNNN>.mp4`` is grouped with its target ``id<N>``; its
source face is ``id<M>``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import defaultdict
from dataclasses import replace
from pathlib import Path, PurePosixPath, PureWindowsPath

from src.data.indexes.base import FAKE, REAL, VideoIndex, VideoRecord, is_inside, register_dataset
from src.data.logs import ONCE_PER_SWEEP

log = logging.getLogger(__name__)
log.addFilter(ONCE_PER_SWEEP)

TEST_LIST = "List_of_testing_videos.txt"
REQUIRED_FOLDERS = ("Celeb-real", "Celeb-synthesis")
OPTIONAL_FOLDERS = ("YouTube-real",)
SOURCES = REQUIRED_FOLDERS + OPTIONAL_FOLDERS

# folder -> (file-name pattern, human-readable form, label)
_PATTERNS: dict[str, tuple[re.Pattern[str], str, int]] = {
    "Celeb-real": (re.compile(r"(id\d+)_\d+\.mp4"), "id<N>_<NNNN>.mp4", REAL),
    "Celeb-synthesis": (re.compile(r"(id\d+)_(id\d+)_\d+\.mp4"), "id<N>_id<M>_<NNNN>.mp4", FAKE),
    "YouTube-real": (re.compile(r"(\d+)\.mp4"), "<NNNNN>.mp4", REAL),
}
# Celeb-DF's own label convention in the test list: 1 = real, 0 = fake.
_LIST_LABELS = {"1": REAL, "0": FAKE}
_LABEL_NAMES = {REAL: "real", FAKE: "fake"}
# Any "<folder>/<file>" inside a test-list line, however malformed the line: the video it names stays
# out of train/val unless another line lists it properly.
_NAMED_VIDEO = re.compile(r"(Celeb-real|Celeb-synthesis|YouTube-real)[/\\]+([^/\\\s'\"]+)", re.IGNORECASE)

_EXPECTED_LAYOUT = (
    "a Celeb-DF v1/v2 folder containing Celeb-real/ (id<N>_<NNNN>.mp4), "
    "Celeb-synthesis/ (id<N>_id<M>_<NNNN>.mp4), optionally YouTube-real/ (<NNNNN>.mp4), "
    f"and {TEST_LIST}"
)


def _scan_folder(root: Path, folder: str, skipped: list[tuple[str, str]]) -> dict[str, VideoRecord]:
    """Index one source folder by file name; anything unrecognised goes to ``skipped``."""
    pattern, form, label = _PATTERNS[folder]
    folder_dir = root / folder
    # A symlinked source folder is the user's choice; a file symlink leaving root and folder is not.
    allowed = (root.resolve(), folder_dir.resolve())
    found: dict[str, VideoRecord] = {}
    for entry in sorted(folder_dir.iterdir()):
        rel = f"{folder}/{entry.name}"
        if not entry.is_file():
            skipped.append((rel, "not a regular file"))
            continue
        match = pattern.fullmatch(entry.name)
        if match is None:
            skipped.append((rel, f"file name does not match the {folder} pattern {form}"))
            continue
        if not is_inside(entry.resolve(), *allowed):
            skipped.append((rel, f"symlink resolves outside the dataset root: {entry.resolve()}"))
            continue
        group = match.group(1)
        identity = f"yt:{group}" if folder == "YouTube-real" else group
        source_identity = match.group(2) if folder == "Celeb-synthesis" else None
        found[rel] = VideoRecord(rel, label, identity, folder, False, identity, source_identity)
    return found


def _check_list_path(root: Path, raw: str, scanned: dict[str, VideoRecord]) -> tuple[str | None, str]:
    """Validate a test-list path without opening it: returns (relative path, "") or (None, reason)."""
    posix = PurePosixPath(raw)
    if posix.is_absolute() or PureWindowsPath(raw).is_absolute() or PureWindowsPath(raw).drive:
        return None, f"absolute path {raw!r} not allowed; paths must be relative to the dataset root"
    if ".." in posix.parts or "\\" in raw:
        return None, f"path {raw!r} escapes the dataset root or is not a plain <folder>/<file>.mp4"
    if len(posix.parts) != 2 or posix.parts[0] not in SOURCES:
        return None, f"path {raw!r} is not <folder>/<file>.mp4 with folder one of {', '.join(SOURCES)}"
    rel = posix.as_posix()
    target = root / rel
    if not target.is_file():
        return None, f"file not found: {target}"
    if not is_inside(target.resolve(), root.resolve(), (root / posix.parts[0]).resolve()):
        return None, f"{raw!r} resolves outside the dataset root: {target.resolve()}"
    if rel not in scanned:
        form = _PATTERNS[posix.parts[0]][1]
        return None, f"{raw!r} was not indexed (its name must match {form}; see its own skip entry)"
    return rel, ""


def _named_videos(line: str, by_lower: dict[str, str]) -> set[str]:
    """Indexed videos that a (possibly malformed) test-list line names anywhere, case-insensitively."""
    named = set()
    for folder, name in _NAMED_VIDEO.findall(line):
        rel = by_lower.get(f"{folder}/{name}".lower())
        if rel is not None:
            named.add(rel)
    return named


def _parse_test_list(
    root: Path, scanned: dict[str, VideoRecord], skipped: list[tuple[str, str]]
) -> tuple[set[str], dict[str, list[int]]]:
    """Returns (test paths, {path: numbers of rejected lines naming it}); the latter must not become
    train data: whatever made a line unusable, the video it meant is a test video."""
    list_path = root / TEST_LIST
    if not list_path.is_file():
        raise ValueError(f"test list not found: {list_path} (expected in {_EXPECTED_LAYOUT})")
    try:
        lines = list_path.read_text(encoding="utf-8-sig").splitlines()  # -sig: tolerate a BOM
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read test list {list_path}: {err}") from err

    by_lower = {rel.lower(): rel for rel in scanned}
    test: dict[str, int] = {}  # path -> first line number
    tainted: dict[str, list[int]] = defaultdict(list)

    def reject(number: int, where: str, reason: str) -> None:
        skipped.append((where, reason))
        for rel in _named_videos(lines[number - 1], by_lower):
            tainted[rel].append(number)

    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{TEST_LIST}:{number}: {line.strip()!r}"
        tokens = line.split()
        if len(tokens) != 2 or tokens[0] not in _LIST_LABELS:
            reject(number, where, "malformed line; expected '<1 real|0 fake> <folder>/<file>.mp4'")
            continue
        rel, reason = _check_list_path(root, tokens[1], scanned)
        if rel is None:
            reject(number, where, reason)
            continue
        listed, actual = _LIST_LABELS[tokens[0]], scanned[rel].label
        if listed != actual:
            reason = (
                f"label mismatch: the list says {_LABEL_NAMES[listed]} ({tokens[0]}) "
                f"but {scanned[rel].source} holds {_LABEL_NAMES[actual]} videos"
            )
            reject(number, where, reason)
            continue
        if rel in test:
            reject(number, where, f"duplicate of line {test[rel]}")
            continue
        test[rel] = number
    return set(test), {rel: numbers for rel, numbers in tainted.items() if rel not in test}


@register_dataset("celebdf", "Celeb-DF")
def index_celebdf(root: str | Path) -> VideoIndex:
    """Index a Celeb-DF v1/v2 tree: listed videos are test, every other video is train/val.

    Args:
        root: the folder holding Celeb-real/, Celeb-synthesis/, optionally YouTube-real/, and the test list.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Celeb-DF root not found: {root}; expected {_EXPECTED_LAYOUT}")
    for folder in REQUIRED_FOLDERS:
        if not (root / folder).is_dir():
            raise FileNotFoundError(f"required folder missing: {root / folder}; expected {_EXPECTED_LAYOUT}")

    skipped: list[tuple[str, str]] = []
    scanned: dict[str, VideoRecord] = {}
    for folder in SOURCES:
        if (root / folder).is_dir():
            scanned.update(_scan_folder(root, folder, skipped))
        else:
            log.info("optional folder %s not present (some Celeb-DF v1 copies lack it)", root / folder)

    test_paths, tainted = _parse_test_list(root, scanned, skipped)
    records: list[VideoRecord] = []
    for rel, record in scanned.items():
        if rel in tainted:
            lines = ", ".join(map(str, tainted[rel]))
            skipped.append(
                (
                    rel,
                    f"named only by rejected {TEST_LIST} lines ({lines}); kept out of train/val to avoid leakage",
                )
            )
            continue
        records.append(replace(record, is_test=rel in test_paths))

    list_digest = hashlib.sha256((root / TEST_LIST).read_bytes()).hexdigest()
    index = VideoIndex(root=root, records=records, skipped=skipped, protocol={TEST_LIST: list_digest})
    index.check_classes()
    index.log_summary()
    return index
