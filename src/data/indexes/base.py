"""What every dataset indexer returns and how its videos are split: ``VideoRecord``, ``VideoIndex``,
identity-grouped folds, and the scanning and hashing helpers the indexers share.

An index only looks at file names and split files; it never decodes a video. Labels follow the project
convention (1 = fake, 0 = real). Everything that is not indexed is recorded in ``VideoIndex.skipped`` with
a reason.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path

from src.data.logs import ONCE_PER_SWEEP
from src.data.settings import IDENTITY_SPLITS

log = logging.getLogger(__name__)
log.addFilter(ONCE_PER_SWEEP)

REAL, FAKE = 0, 1
_MAX_LOGGED_SKIPS = 20


@dataclass(frozen=True)
class Dataset:
    """A registered dataset: its `data=<name>`, the title messages and reports print, its indexer (whose
    parameters besides `root` are the dataset's own `data.<key>`s), and whether it has real videos."""

    name: str
    title: str
    indexer: Callable[..., VideoIndex]
    real: bool = True


DATASETS: dict[str, Dataset] = {}  # filled by @register_dataset as src.data.indexes imports each indexer


def register_dataset(name: str, title: str, real: bool = True):
    """Register an indexer function as dataset `name` (timm's @register_model, for datasets): the one list of
    datasets is what the indexers declare, read through `src.data.indexes`.

    Args:
        name: the `data=<name>` option, its YAML's `name`, and the index's `dataset`.
        title: what messages and reports print.
        real: False for a set generated here (the embedded synthetic set), which has no real videos.
    """

    def register(indexer: Callable[..., VideoIndex]) -> Callable[..., VideoIndex]:
        if name in DATASETS and DATASETS[name].indexer is not indexer:
            raise ValueError(f"dataset {name!r} is registered twice ({DATASETS[name].indexer.__module__})")
        DATASETS[name] = Dataset(name, title, indexer, real)
        return indexer

    return register


def dataset_title(name: str) -> str:
    """The title of dataset `name` (its name when it is not registered)."""
    return DATASETS[name].title if name in DATASETS else name


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
            counts = class_counts(part)
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
            dataset_title(self.dataset),
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


def class_counts(records: Iterable[VideoRecord]) -> dict[str, int]:
    """``{"real": n, "fake": n}`` of some records.

    Args:
        records: any records.
    """
    counts = Counter(r.label for r in records)
    return {"real": counts[REAL], "fake": counts[FAKE]}


def _describe(counts: dict[str, int]) -> str:
    return f"{counts['real'] + counts['fake']} (real {counts['real']}, fake {counts['fake']})"


def is_inside(path: Path, *parents: Path) -> bool:
    """Whether ``path`` lies under one of ``parents`` (resolve both first to follow symlinks).

    Args:
        path: the path to check.
        parents: the allowed folders.
    """
    return any(path.is_relative_to(p) for p in parents)


def file_sha256(path: Path) -> str:
    """The SHA-256 hex digest of a (split or listing) file: what an index's ``protocol`` records.

    Args:
        path: the file to hash.
    """
    return hashlib.sha256(path.read_bytes()).hexdigest()


def scan_videos(
    root: Path, folder: Path, pattern: re.Pattern[str], form: str, skipped: list[tuple[str, str]]
) -> list[tuple[str, re.Match[str]]]:
    """(relative path, name match) of the videos in one folder; anything else goes to ``skipped``.

    Args:
        root: the dataset root (paths are relative to it; a file symlink may not leave it or ``folder``).
        folder: the folder to list (not recursively).
        pattern: what a video's file name must match in full.
        form: the pattern as a human reads it, for the skip reason.
        skipped: (path, reason) pairs, appended to.
    """
    allowed = (root.resolve(), folder.resolve())  # a symlinked folder is the user's choice
    found = []
    for entry in sorted(folder.iterdir()):
        rel = entry.relative_to(root).as_posix()
        match = pattern.fullmatch(entry.name)
        if not entry.is_file():
            skipped.append((rel, "not a regular file"))
        elif match is None:
            skipped.append((rel, f"file name does not match {form}"))
        elif not any(entry.resolve().is_relative_to(p) for p in allowed):
            skipped.append((rel, f"symlink resolves outside the dataset root: {entry.resolve()}"))
        else:
            found.append((rel, match))
    return found


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
    total = class_counts(records)
    n_real, n_fake = max(total["real"], 1), max(total["fake"], 1)
    loads = [(0, 0)] * folds  # per fold: (real, fake)
    assignment: dict[str, int] = {}
    for key in keys:
        g = class_counts(groups[key])
        # Smallest combined class share after adding the group; ties go to the smaller, then lower fold.
        scores = [((r + g["real"]) / n_real + (f + g["fake"]) / n_fake, r + f) for r, f in loads]
        best = scores.index(min(scores))
        loads[best] = (loads[best][0] + g["real"], loads[best][1] + g["fake"])
        assignment[key] = best

    train = [r for r in records if assignment[group_of[r.path]] != fold]
    val = [r for r in records if assignment[group_of[r.path]] == fold]
    vc = class_counts(val)
    log.info(
        "fold %d/%d (seed %d, %s identity split, %d groups): train %s, val %s",
        fold,
        folds,
        seed,
        identity_split,
        len(groups),
        _describe(class_counts(train)),
        _describe(vc),
    )
    if 0 in vc.values():
        log.warning("fold %d/%d val part lacks a class %s: val AUC/AP are undefined", fold, folds, vc)
    return train, val
