"""Celeb-DF (v1/v2, and the synthetic set in the same layout) video index and identity-grouped folds.

The index only looks at file names and the test list; it never decodes a video. Labels follow the
project convention (1 = fake, 0 = real); Celeb-DF's test list (1 = real) is converted here.
Everything that is not indexed is recorded in ``CelebDFIndex.skipped`` with a reason.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path, PurePosixPath, PureWindowsPath

log = logging.getLogger(__name__)

REAL, FAKE = 0, 1
TEST_LIST = "List_of_testing_videos.txt"
REQUIRED_FOLDERS = ("Celeb-real", "Celeb-synthesis")
OPTIONAL_FOLDERS = ("YouTube-real",)
SOURCES = REQUIRED_FOLDERS + OPTIONAL_FOLDERS

# folder -> (file-name pattern, human-readable form, label)
_PATTERNS: dict[str, tuple[re.Pattern[str], str, int]] = {
    "Celeb-real": (re.compile(r"(id\d+)_\d+\.mp4"), "id<N>_<NNNN>.mp4", REAL),
    "Celeb-synthesis": (re.compile(r"(id\d+)_id\d+_\d+\.mp4"), "id<N>_id<M>_<NNNN>.mp4", FAKE),
    "YouTube-real": (re.compile(r"(\d+)\.mp4"), "<NNNNN>.mp4", REAL),
}
# Celeb-DF's own label convention in the test list: 1 = real, 0 = fake.
_LIST_LABELS = {"1": REAL, "0": FAKE}
_LABEL_NAMES = {REAL: "real", FAKE: "fake"}
_MAX_LOGGED_SKIPS = 20

_EXPECTED_LAYOUT = (
    "a Celeb-DF v1/v2 folder containing Celeb-real/ (id<N>_<NNNN>.mp4), "
    "Celeb-synthesis/ (id<N>_id<M>_<NNNN>.mp4), optionally YouTube-real/ (<NNNNN>.mp4), "
    f"and {TEST_LIST}"
)


@dataclass(frozen=True)
class VideoRecord:
    path: str  # POSIX path relative to the dataset root
    label: int  # 1 = fake, 0 = real
    identity: str  # fold group key: "id0" (real and fakes made from id0's videos), "yt:00003"
    source: str  # "Celeb-real" | "Celeb-synthesis" | "YouTube-real"
    is_test: bool


@dataclass
class CelebDFIndex:
    root: Path
    records: list[VideoRecord]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path or list line, reason)

    def train_val(self) -> list[VideoRecord]:
        return [r for r in self.records if not r.is_test]

    def test(self) -> list[VideoRecord]:
        return [r for r in self.records if r.is_test]

    def class_counts(self, records: Iterable[VideoRecord] | None = None) -> dict[str, int]:
        """Counts as ``{"real": n, "fake": n}``; all records when none are given."""
        counts = Counter(r.label for r in (self.records if records is None else records))
        return {"real": counts[REAL], "fake": counts[FAKE]}


def _class_counts(records: Iterable[VideoRecord]) -> dict[str, int]:
    counts = Counter(r.label for r in records)
    return {"real": counts[REAL], "fake": counts[FAKE]}


def _describe(counts: dict[str, int]) -> str:
    return f"{counts['real'] + counts['fake']} (real {counts['real']}, fake {counts['fake']})"


def _inside(path: Path, *parents: Path) -> bool:
    return any(path.is_relative_to(p) for p in parents)


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
        if not _inside(entry.resolve(), *allowed):
            skipped.append((rel, f"symlink resolves outside the dataset root: {entry.resolve()}"))
            continue
        group = match.group(1)
        identity = f"yt:{group}" if folder == "YouTube-real" else group
        found[rel] = VideoRecord(path=rel, label=label, identity=identity, source=folder, is_test=False)
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
    if not _inside(target.resolve(), root.resolve(), (root / posix.parts[0]).resolve()):
        return None, f"{raw!r} resolves outside the dataset root: {target.resolve()}"
    if rel not in scanned:
        form = _PATTERNS[posix.parts[0]][1]
        return None, f"{raw!r} was not indexed (its name must match {form}; see its own skip entry)"
    return rel, ""


def _parse_test_list(
    root: Path, scanned: dict[str, VideoRecord], skipped: list[tuple[str, str]]
) -> tuple[set[str], set[str]]:
    """Returns (test paths, paths named by skipped lines); the latter must not become train data."""
    list_path = root / TEST_LIST
    if not list_path.is_file():
        raise ValueError(f"test list not found: {list_path} (expected in {_EXPECTED_LAYOUT})")
    try:
        lines = list_path.read_text(encoding="utf-8-sig").splitlines()  # -sig: tolerate a BOM
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read test list {list_path}: {err}") from err

    test: dict[str, int] = {}  # path -> first line number
    tainted: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{TEST_LIST}:{number}: {line.strip()!r}"
        tokens = line.split()
        if len(tokens) != 2 or tokens[0] not in _LIST_LABELS:
            skipped.append((where, "malformed line; expected '<1 real|0 fake> <folder>/<file>.mp4'"))
            continue
        rel, reason = _check_list_path(root, tokens[1], scanned)
        if rel is None:
            skipped.append((where, reason))
            continue
        listed, actual = _LIST_LABELS[tokens[0]], scanned[rel].label
        if listed != actual:
            reason = (
                f"label mismatch: the list says {_LABEL_NAMES[listed]} ({tokens[0]}) "
                f"but {scanned[rel].source} holds {_LABEL_NAMES[actual]} videos"
            )
            skipped.append((where, reason))
            tainted.add(rel)
            continue
        if rel in test:
            skipped.append((where, f"duplicate of line {test[rel]}"))
            continue
        test[rel] = number
    return set(test), tainted - set(test)


def index_celebdf(root: str | Path) -> CelebDFIndex:
    """Index a Celeb-DF v1/v2 tree: listed videos are test, every other video is train/val."""
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
            skipped.append(
                (rel, "named only by skipped test-list lines; kept out of train/val to avoid leakage")
            )
            continue
        records.append(
            VideoRecord(record.path, record.label, record.identity, record.source, rel in test_paths)
        )

    index = CelebDFIndex(root=root, records=records, skipped=skipped)
    for split, part in (("train/val", index.train_val()), ("test", index.test())):
        counts = _class_counts(part)
        for name, n in counts.items():
            if n == 0:
                raise ValueError(
                    f"no {name} videos in the {split} split of {root} (counts {counts}, "
                    f"{len(skipped)} entries skipped: {skipped[:5]})"
                )
    _log_summary(index)
    return index


def _log_summary(index: CelebDFIndex) -> None:
    tv, te = index.class_counts(index.train_val()), index.class_counts(index.test())
    log.info(
        "Celeb-DF index of %s: train/val %s, test %s, skipped %d",
        index.root,
        _describe(tv),
        _describe(te),
        len(index.skipped),
    )
    for what, reason in index.skipped[:_MAX_LOGGED_SKIPS]:
        log.warning("skipped %s: %s", what, reason)
    if len(index.skipped) > _MAX_LOGGED_SKIPS:
        log.warning(
            "... and %d more skipped entries (see CelebDFIndex.skipped)",
            len(index.skipped) - _MAX_LOGGED_SKIPS,
        )


def split_folds(
    records: Sequence[VideoRecord], folds: int, fold: int, seed: int = 0
) -> tuple[list[VideoRecord], list[VideoRecord]]:
    """(train, val) for one of ``folds`` identity-disjoint folds, deterministic for ``seed``.

    Groups are shuffled with the seed, sorted by size (largest first) and each is given to the fold
    whose real and fake shares are smallest after adding it, so folds are balanced in size and class.
    """
    if isinstance(folds, bool) or not isinstance(folds, Integral) or folds < 2:
        raise ValueError(f"folds must be an integer >= 2, got folds={folds!r}")
    if isinstance(fold, bool) or not isinstance(fold, Integral) or not 0 <= fold < folds:
        raise ValueError(f"fold must be an integer with 0 <= fold < folds={folds}, got fold={fold!r}")
    test = [r.path for r in records if r.is_test]
    if test:
        raise ValueError(
            f"split_folds takes train/val records only; got {len(test)} test videos, e.g. {test[0]}"
        )

    groups: dict[str, list[VideoRecord]] = defaultdict(list)
    for record in records:
        groups[record.identity].append(record)
    if len(groups) < folds:
        raise ValueError(f"need at least folds={folds} identity groups to split, got {len(groups)}")

    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    keys.sort(key=lambda k: len(groups[k]), reverse=True)  # stable: ties keep the seeded order
    total = _class_counts(records)
    n_real, n_fake = max(total["real"], 1), max(total["fake"], 1)
    loads = [(0, 0)] * folds  # per fold: (real, fake)
    assignment: dict[str, int] = {}
    for key in keys:
        g = _class_counts(groups[key])
        # Smallest combined class share after adding the group; ties go to the smaller, then lower fold.
        scores = [((r + g["real"]) / n_real + (f + g["fake"]) / n_fake, r + f) for r, f in loads]
        best = scores.index(min(scores))
        loads[best] = (loads[best][0] + g["real"], loads[best][1] + g["fake"])
        assignment[key] = best

    train = [r for r in records if assignment[r.identity] != fold]
    val = [r for r in records if assignment[r.identity] == fold]
    vc = _class_counts(val)
    log.info(
        "fold %d/%d (seed %d): train %s, val %s",
        fold,
        folds,
        seed,
        _describe(_class_counts(train)),
        _describe(vc),
    )
    if 0 in vc.values():
        log.warning("fold %d/%d val part lacks a class %s: val AUC/AP are undefined", fold, folds, vc)
    return train, val
