"""FaceForensics++ index (the same ``VideoIndex`` and ``VideoRecord`` as Celeb-DF) and a writer of a tiny
FF++-layout tree made from a Celeb-DF-layout one, so FF++ is tested without the real data.

Layout (FaceForensics++ as downloaded by its script)::

    <root>/original_sequences/youtube/<raw|c23|c40>/videos/000.mp4              real, identity 000
    <root>/manipulated_sequences/<method>/<raw|c23|c40>/videos/000_003.mp4      fake: target 000, face of 003
    <splits_dir>/train.json, val.json, test.json    official splits: id pairs, e.g. [["953", "974"], ...]

Test videos are those of the test.json pairs: both ids' originals and the fakes in both directions.
Train/val is the train.json + val.json pairs (k folds apply as for Celeb-DF; ``official_train_val()``
gives the official val split). A pair's two ids form one identity group, so a fake's target and source
stay on one side of every split.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from src.data.indexes.base import (
    FAKE,
    REAL,
    VideoIndex,
    VideoRecord,
    file_sha256,
    register_dataset,
    scan_videos,
)
from src.data.logs import ONCE_PER_SWEEP

log = logging.getLogger(__name__)
log.addFilter(ONCE_PER_SWEEP)

FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")
COMPRESSIONS = ("raw", "c23", "c40")
SPLITS = ("train", "val", "test")
ORIGINALS = "original_sequences/youtube"
MANIPULATED = "manipulated_sequences"
REAL_SOURCE = "youtube"  # VideoRecord.source of the originals; fakes carry their method's name

_REAL_NAME = re.compile(r"(\d+)\.mp4")
_FAKE_NAME = re.compile(r"(\d+)_(\d+)\.mp4")
_EXPECTED_LAYOUT = (
    "a FaceForensics++ folder with original_sequences/youtube/<comp>/videos/<NNN>.mp4 and "
    "manipulated_sequences/<method>/<comp>/videos/<NNN>_<MMM>.mp4"
)
_EXPECTED_SPLITS = (
    "train.json, val.json and test.json in data.splits_dir (default <root>/splits), each a JSON list of "
    'id pairs such as [["953", "974"], ...]'
)


@register_dataset("ffpp", "FaceForensics++")
def index_ffpp(
    root: str | Path,
    compression: str = "c23",
    methods: Sequence[str] = FFPP_METHODS,
    splits_dir: str | Path | None = None,
) -> VideoIndex:
    """Index a FaceForensics++ tree for one compression and the given manipulation methods."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"FaceForensics++ root not found: {root}; expected {_EXPECTED_LAYOUT}")
    if compression not in COMPRESSIONS:
        raise ValueError(f"unknown data.compression={compression!r}; valid values: {', '.join(COMPRESSIONS)}")
    methods = tuple(methods)
    unknown = [m for m in methods if m not in FFPP_METHODS]
    if unknown or not methods:
        raise ValueError(f"data.methods={list(methods)} must be a non-empty subset of {list(FFPP_METHODS)}")
    originals = root / ORIGINALS / compression / "videos"
    if not originals.is_dir():
        raise FileNotFoundError(
            f"FaceForensics++ originals folder missing: {originals}; expected {_EXPECTED_LAYOUT}"
        )
    splits_dir = root / "splits" if splits_dir is None else Path(splits_dir).expanduser()
    pairs = {split: _read_pairs(splits_dir / f"{split}.json") for split in SPLITS}
    split_of = _split_of_ids(pairs, splits_dir)
    group_of = _pair_groups(p for split in SPLITS for p in pairs[split])

    skipped: list[tuple[str, str]] = []
    records: list[VideoRecord] = []
    for rel, match in scan_videos(root, originals, _REAL_NAME, "<NNN>.mp4", skipped):
        vid = match.group(1)
        if vid not in split_of:
            skipped.append((rel, f"id {vid} is in none of the split files in {splits_dir}"))
            continue
        records.append(VideoRecord(rel, REAL, group_of[vid], REAL_SOURCE, split_of[vid] == "test", vid))
    for method in methods:
        folder = root / MANIPULATED / method / compression / "videos"
        if not folder.is_dir():
            skipped.append((folder.relative_to(root).as_posix(), f"method folder absent; {method} skipped"))
            continue
        for rel, match in scan_videos(root, folder, _FAKE_NAME, "<NNN>_<MMM>.mp4", skipped):
            target, source = match.groups()
            where = {vid: split_of.get(vid) for vid in (target, source)}
            missing = [vid for vid, split in where.items() if split is None]
            if missing:
                skipped.append(
                    (rel, f"id {', '.join(missing)} is in none of the split files in {splits_dir}")
                )
                continue
            if where[target] != where[source]:
                reason = f"target {target} is in {where[target]}, source {source} in {where[source]}: would cross splits"
                skipped.append((rel, reason))
                continue
            records.append(
                VideoRecord(rel, FAKE, group_of[target], method, where[target] == "test", target, source)
            )

    protocol = {
        "compression": compression,
        # the methods actually indexed: asking for an absent one does not change the data
        "methods": ",".join(sorted({r.source for r in records if r.label == FAKE})),
        **{f"{split}.json": file_sha256(splits_dir / f"{split}.json") for split in SPLITS},
    }
    official_val = frozenset(r.path for r in records if split_of[r.identities[0]] == "val")
    index = VideoIndex(
        root=root,
        records=records,
        skipped=skipped,
        dataset="ffpp",
        protocol=protocol,
        official_val_paths=official_val,
    )
    index.check_classes()
    index.log_summary()
    return index


def _read_pairs(path: Path) -> list[tuple[str, str]]:
    """One official split file: a JSON list of [id, id] pairs; ids are digit strings (or integers)."""
    if not path.is_file():
        raise FileNotFoundError(f"FaceForensics++ split file not found: {path}; expected {_EXPECTED_SPLITS}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read FaceForensics++ split file {path}: {err}") from err

    def as_id(value: object) -> str | None:
        if isinstance(value, bool):
            return None
        if isinstance(value, int) and value >= 0:
            return f"{value:03d}"
        return value if isinstance(value, str) and value.isdigit() else None

    pairs = []
    for position, item in enumerate(data if isinstance(data, list) else [data]):
        ids = [as_id(v) for v in item] if isinstance(item, list) and len(item) == 2 else [None]
        if None in ids:
            raise ValueError(
                f"{path}: entry {position} is {item!r}, not a pair of ids; expected {_EXPECTED_SPLITS}"
            )
        pairs.append((ids[0], ids[1]))
    return pairs


def _split_of_ids(pairs: dict[str, list[tuple[str, str]]], splits_dir: Path) -> dict[str, str]:
    split_of: dict[str, str] = {}
    for split in SPLITS:
        for pair in pairs[split]:
            for vid in pair:
                if split_of.setdefault(vid, split) != split:
                    raise ValueError(
                        f"id {vid} is in both {split_of[vid]}.json and {split}.json in {splits_dir}; "
                        "each id must belong to one split"
                    )
    return split_of


def _pair_groups(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """id -> group key "a+b": the ids joined by pairs (transitively; in FF++ every id is in one pair)."""
    members: dict[str, set[str]] = {}
    for a, b in pairs:
        joined = members.get(a, {a}) | members.get(b, {b})
        for vid in joined:
            members[vid] = joined
    return {vid: "+".join(sorted(group)) for vid, group in members.items()}


# --- a tiny FF++ tree for tests and demos ---------------------------------------------------------------


def write_ffpp_layout(
    celebdf_root: str | Path,
    out_root: str | Path,
    compression: str = "c23",
    methods: Sequence[str] = FFPP_METHODS,
    split_counts: tuple[int, int, int] | None = None,
) -> Path:
    """Build an FF++-layout tree from a Celeb-DF-layout one (e.g. the synthetic set) by hard links
    (copies across file systems); returns ``out_root``. Calling it again with another compression or
    other methods adds to the same tree.

    Every Celeb-real video that has fakes becomes an original with id 000, 001, ... in sorted order;
    consecutive ids form the pairs (with the synthetic set's even ``real_per_identity``, the two videos of
    a pair show one Celeb-DF identity). The fake ``a_b`` of a method is a Celeb-DF fake made on a's video
    (cycling through them by method), so its target is right but its swapped-in face is not b's: the tree
    tests the layout and the split protocol, not face-swap semantics. ``split_counts`` = pairs in
    (train, val, test); default about 60/20/20 with at least one pair in each.
    """
    celebdf_root, out_root = Path(celebdf_root).expanduser(), Path(out_root).expanduser()
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    fakes_of: dict[str, list[Path]] = {}  # Celeb-real file name -> fakes made on that video
    for fake in sorted((celebdf_root / "Celeb-synthesis").glob("*.mp4")):
        match = re.fullmatch(r"(id\d+)_id\d+_(\d+)\.mp4", fake.name)
        if match:
            fakes_of.setdefault(f"{match.group(1)}_{match.group(2)}.mp4", []).append(fake)
    reals = [p for p in sorted((celebdf_root / "Celeb-real").glob("*.mp4")) if p.name in fakes_of]
    n_pairs = len(reals) // 2
    if split_counts is None:
        held_out = max(1, round(0.2 * n_pairs))
        split_counts = (n_pairs - 2 * held_out, held_out, held_out)
    if min(split_counts) < 1 or sum(split_counts) > n_pairs:
        raise ValueError(
            f"{celebdf_root} yields {n_pairs} pairs (Celeb-real videos with fakes, two per pair); "
            f"cannot give (train, val, test) = {tuple(split_counts)} pairs with at least one each"
        )

    ids = [f"{i:03d}" for i in range(2 * n_pairs)]
    pairs = [(ids[2 * k], ids[2 * k + 1]) for k in range(n_pairs)]
    originals = out_root / ORIGINALS / compression / "videos"
    originals.mkdir(parents=True, exist_ok=True)
    for vid, real in zip(ids, reals, strict=False):
        hard_link(real, originals / f"{vid}.mp4")
    for m, method in enumerate(methods):
        folder = out_root / MANIPULATED / method / compression / "videos"
        folder.mkdir(parents=True, exist_ok=True)
        for a, b in pairs:
            for target, source in ((a, b), (b, a)):
                made_on = fakes_of[reals[int(target)].name]
                hard_link(made_on[m % len(made_on)], folder / f"{target}_{source}.mp4")

    splits_dir = out_root / "splits"
    splits_dir.mkdir(parents=True, exist_ok=True)
    start = 0
    for split, count in zip(SPLITS, split_counts, strict=True):
        (splits_dir / f"{split}.json").write_text(json.dumps([list(p) for p in pairs[start : start + count]]))
        start += count
    return out_root


def hard_link(source: Path, destination: Path) -> None:
    """`destination` as a hard link to `source` (a copy where links are impossible); kept if it exists.

    Args:
        source: an existing file.
        destination: the path to create.
    """
    if destination.exists():
        return
    try:
        os.link(source, destination)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, destination)
