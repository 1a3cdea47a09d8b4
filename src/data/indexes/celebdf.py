"""Video index (Celeb-DF v1/v2 and the synthetic set in its layout; FaceForensics++ in ``ffpp.py``) and
identity-grouped folds.

The index only looks at file names and the split files; it never decodes a video. Labels follow the
project convention (1 = fake, 0 = real); Celeb-DF's test list (1 = real) is converted here.
Everything that is not indexed is recorded in ``VideoIndex.skipped`` with a reason.

Identities: every record knows its fold group (``identity``), the person whose video it is
(``target_identity``) and, for a fake, the swapped-in face (``source_identity``). ``split_folds`` keeps
groups on one side (``identity_split="official"``) or every face (``"strict"``); ``identity_overlap``
says how many fakes show a face that also appears in another split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from numbers import Integral
from pathlib import Path, PurePosixPath, PureWindowsPath

from src.data.indexes.catalog import DATASET_TITLES
from src.data.logs import ONCE_PER_SWEEP
from src.data.settings import IDENTITY_SPLITS

log = logging.getLogger(__name__)
log.addFilter(ONCE_PER_SWEEP)

REAL, FAKE = 0, 1
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
_MAX_LOGGED_SKIPS = 20

# Any "<folder>/<file>" inside a test-list line, however malformed the line: the video it names stays
# out of train/val unless another line lists it properly.
_NAMED_VIDEO = re.compile(r"(Celeb-real|Celeb-synthesis|YouTube-real)[/\\]+([^/\\\s'\"]+)", re.IGNORECASE)

_EXPECTED_LAYOUT = (
    "a Celeb-DF v1/v2 folder containing Celeb-real/ (id<N>_<NNNN>.mp4), "
    "Celeb-synthesis/ (id<N>_id<M>_<NNNN>.mp4), optionally YouTube-real/ (<NNNNN>.mp4), "
    f"and {TEST_LIST}"
)


@dataclass(frozen=True)
class VideoRecord:
    path: str  # POSIX path relative to the dataset root
    label: int  # 1 = fake, 0 = real
    identity: str  # fold group key: "id0" (real and fakes made from id0's videos), "yt:00003", "953+974"
    source: str  # "Celeb-real" | "Celeb-synthesis" | "YouTube-real" | "youtube" | an FF++ method
    is_test: bool
    target_identity: str | None = None  # whose video it is (a fake's target); None: same as ``identity``
    source_identity: str | None = None  # a fake's swapped-in face ("id1" of id0_id1_0003); None for reals

    @property
    def identities(self) -> tuple[str, ...]:
        """Every person whose face the video shows: (target,) or (target, swapped-in source)."""
        target = self.target_identity or self.identity
        return (target,) if self.source_identity is None else (target, self.source_identity)


@dataclass
class VideoIndex:
    """A dataset's videos with their official test split.

    ``protocol`` holds what defines the split besides the root (file digests, compression, methods):
    ``fingerprint()`` hashes it with the dataset name and the resolved root, for lineage.
    ``official_val_paths`` is the dataset's own validation split where it has one (FF++).
    """

    root: Path
    records: list[VideoRecord]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path or list line, reason)
    dataset: str = "celebdf"
    protocol: dict[str, str] = field(default_factory=dict)
    official_val_paths: frozenset[str] | None = None
    test_only: bool = False  # no train/val videos by the dataset's protocol (DFD, UADFV): evaluation only

    def train_val(self) -> list[VideoRecord]:
        return [r for r in self.records if not r.is_test]

    def test(self) -> list[VideoRecord]:
        return [r for r in self.records if r.is_test]

    def class_counts(self, records: Iterable[VideoRecord] | None = None) -> dict[str, int]:
        """Counts as ``{"real": n, "fake": n}``; all records when none are given."""
        counts = Counter(r.label for r in (self.records if records is None else records))
        return {"real": counts[REAL], "fake": counts[FAKE]}

    def fingerprint(self) -> str:
        """16 hex digits identifying the dataset and its split protocol: stable across runs and machines
        that see the same resolved root and the same split files."""
        identity = {"dataset": self.dataset, "root": str(Path(self.root).resolve()), **self.protocol}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()[:16]

    def official_train_val(self) -> tuple[list[VideoRecord], list[VideoRecord]]:
        """(train, val) of the dataset's own validation split, instead of k folds."""
        if self.official_val_paths is None:
            raise ValueError(f"{self.dataset} has no official validation split; use data.folds and data.fold")
        pool = self.train_val()
        return (
            [r for r in pool if r.path not in self.official_val_paths],
            [r for r in pool if r.path in self.official_val_paths],
        )

    def check_classes(self) -> None:
        """Both classes in train/val and in test (a test-only index: in test), or a one-line error."""
        parts = (("train/val", self.train_val()), ("test", self.test()))
        for split, part in parts[1:] if self.test_only else parts:
            counts = _class_counts(part)
            for name, n in counts.items():
                if n == 0:
                    raise ValueError(
                        f"no {name} videos in the {split} split of {self.root} (counts {counts}, "
                        f"{len(self.skipped)} entries skipped: {self.skipped[:5]})"
                    )

    def log_summary(self) -> None:
        tv, te = self.class_counts(self.train_val()), self.class_counts(self.test())
        log.info(
            "%s index of %s: train/val %s, test %s, skipped %d",
            DATASET_TITLES.get(self.dataset, self.dataset),
            self.root,
            _describe(tv),
            _describe(te),
            len(self.skipped),
        )
        for what, reason in self.skipped[:_MAX_LOGGED_SKIPS]:
            log.warning("skipped %s: %s", what, reason)
        if len(self.skipped) > _MAX_LOGGED_SKIPS:
            log.warning(
                "... and %d more skipped entries (see the index's skipped list)",
                len(self.skipped) - _MAX_LOGGED_SKIPS,
            )


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
    if not _inside(target.resolve(), root.resolve(), (root / posix.parts[0]).resolve()):
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


def index_celebdf(root: str | Path) -> VideoIndex:
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


# --- identities across splits -------------------------------------------------------------------------


def fold_groups(records: Iterable[VideoRecord], identity_split: str = "official") -> dict[str, str]:
    """Each record's fold group, by path. ``official``: its ``identity``. ``strict``: the connected
    component of its group under "shares a face" (a fake links its group, target and source), named by
    the component's smallest group key, so no face is on both sides of a split."""
    if identity_split not in IDENTITY_SPLITS:
        raise ValueError(
            f"unknown data.identity_split={identity_split!r}; valid values: {', '.join(IDENTITY_SPLITS)}"
        )
    records = list(records)
    if identity_split == "official":
        return {r.path: r.identity for r in records}
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]  # path halving
            node = parent[node]
        return node

    for record in records:
        for face in record.identities:
            a, b = find(record.identity), find(face)
            if a != b:
                parent[max(a, b)] = min(a, b)
    # Name a component by its smallest *group key*, so names do not depend on union order.
    names: dict[str, str] = {}
    for key in sorted({r.identity for r in records}):
        names.setdefault(find(key), key)
    return {r.path: names[find(r.identity)] for r in records}


def identity_overlap(splits: Mapping[str, Sequence[VideoRecord]]) -> dict[str, dict]:
    """Per split: how many of its videos show a face that also appears (as any identity) in another split.

    Keys per split: ``fakes``, ``fakes_source_elsewhere`` (the swapped-in face appears elsewhere),
    ``fakes_source_elsewhere_by_split`` ({other split: count}), ``fakes_target_elsewhere``, ``reals``,
    ``reals_identity_elsewhere``. Celeb-DF's and FF++'s official protocols group by target, so sources
    cross splits by design; ``identity_split=strict`` removes it between train and val.
    """
    faces = {name: {face for r in part for face in r.identities} for name, part in splits.items()}
    report: dict[str, dict] = {}
    for name, part in splits.items():
        others = {other: faces[other] for other in splits if other != name}
        elsewhere = set().union(*others.values()) if others else set()
        fakes = [r for r in part if r.label == FAKE]
        reals = [r for r in part if r.label == REAL]
        sourced = [r for r in fakes if r.source_identity is not None]
        report[name] = {
            "fakes": len(fakes),
            "fakes_source_elsewhere": sum(r.source_identity in elsewhere for r in sourced),
            "fakes_source_elsewhere_by_split": {
                other: sum(r.source_identity in seen for r in sourced) for other, seen in others.items()
            },
            "fakes_target_elsewhere": sum(r.identities[0] in elsewhere for r in fakes),
            "reals": len(reals),
            "reals_identity_elsewhere": sum(r.identities[0] in elsewhere for r in reals),
        }
    return report


def split_folds(
    records: Sequence[VideoRecord], folds: int, fold: int, seed: int = 0, identity_split: str = "official"
) -> tuple[list[VideoRecord], list[VideoRecord]]:
    """(train, val) for one of ``folds`` identity-disjoint folds, deterministic for ``seed``.

    Groups (see ``fold_groups``: ``official`` = the records' ``identity``, ``strict`` = every face
    connected through a fake) are shuffled with the seed, sorted by size (largest first) and each is
    given to the fold whose real and fake shares are smallest after adding it, so folds are balanced in
    size and class.
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

    group_of = fold_groups(records, identity_split)
    groups: dict[str, list[VideoRecord]] = defaultdict(list)
    for record in records:
        groups[group_of[record.path]].append(record)
    if identity_split == "strict" and groups:
        largest = max(groups.values(), key=len)
        log.info(
            "strict identity split: %d videos form %d groups; the largest holds %d videos (%.0f%%)",
            len(records),
            len(groups),
            len(largest),
            100 * len(largest) / max(len(records), 1),
        )
    if len(groups) < folds:
        how = (
            ""
            if identity_split == "official"
            else f" (data.identity_split={identity_split} joins every face linked by a fake)"
        )
        raise ValueError(f"need at least folds={folds} identity groups to split, got {len(groups)}{how}")

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

    train = [r for r in records if assignment[group_of[r.path]] != fold]
    val = [r for r in records if assignment[group_of[r.path]] == fold]
    vc = _class_counts(val)
    log.info(
        "fold %d/%d (seed %d, %s identity split, %d groups): train %s, val %s",
        fold,
        folds,
        seed,
        identity_split,
        len(groups),
        _describe(_class_counts(train)),
        _describe(vc),
    )
    if 0 in vc.values():
        log.warning("fold %d/%d val part lacks a class %s: val AUC/AP are undefined", fold, folds, vc)
    return train, val
