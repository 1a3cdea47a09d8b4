"""Google's DeepFakeDetection (DFD) index: the actors' videos and their fakes inside a FaceForensics++ tree.

Layout (as the FaceForensics++ download script writes it)::

    <root>/original_sequences/actors/<raw|c23|c40>/videos/01__walking.mp4                      real: actor 01
    <root>/manipulated_sequences/DeepFakeDetection/<raw|c23|c40>/videos/01_02__walking__ABC123.mp4
                                                          fake: actor 01's video with actor 02's face

DFD has no official split. By default the whole set is the test list (``test_fraction=1.0``: the usual
protocol, e.g. DeepfakeBench's, evaluates on DFD only) and the index is test-only. With
``test_fraction`` below 1 that fraction of the actors (at least one, never all; chosen by a hash of the
actor id, so the same on every machine) is held out as the test list, and the other actors' videos are
train/val, split into identity-disjoint folds as for Celeb-DF: a fake is grouped with its target actor,
its swapped-in actor is its ``source_identity`` (``data.identity_split=strict`` keeps those apart too).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from src.data.indexes.base import FAKE, REAL, VideoIndex, VideoRecord, register_dataset, scan_videos
from src.data.indexes.ffpp import COMPRESSIONS, MANIPULATED

ACTORS = "original_sequences/actors"
METHOD = "DeepFakeDetection"  # the fakes' folder under manipulated_sequences, and their VideoRecord.source
REAL_SOURCE = "actors"  # VideoRecord.source of the real videos

_REAL_NAME = re.compile(r"(\d+)__(\w+)\.mp4")
_FAKE_NAME = re.compile(r"(\d+)_(\d+)__(\w+)__([A-Za-z0-9]+)\.mp4")
_EXPECTED_LAYOUT = (
    "a FaceForensics++ folder with original_sequences/actors/<comp>/videos/<AA>__<scene>.mp4 and "
    "manipulated_sequences/DeepFakeDetection/<comp>/videos/<AA>_<BB>__<scene>__<code>.mp4"
)


@register_dataset("dfd", "DeepFakeDetection")
def index_dfd(root: str | Path, compression: str = "c23", test_fraction: float = 1.0) -> VideoIndex:
    """Index the DeepFakeDetection videos of a FaceForensics++ tree for one compression."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"DeepFakeDetection root not found: {root}; expected {_EXPECTED_LAYOUT}")
    if compression not in COMPRESSIONS:
        raise ValueError(f"unknown data.compression={compression!r}; valid values: {', '.join(COMPRESSIONS)}")
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, int | float)
        or not 0 < test_fraction <= 1
    ):
        raise ValueError(
            f"data.test_fraction={test_fraction!r} must be in (0, 1]: 1.0 makes the whole set the test list "
            "(the usual protocol), less holds out that fraction of the actors"
        )
    folders = {
        REAL: root / ACTORS / compression / "videos",
        FAKE: root / MANIPULATED / METHOD / compression / "videos",
    }
    for folder in folders.values():
        if not folder.is_dir():
            raise FileNotFoundError(
                f"DeepFakeDetection folder missing: {folder}; expected {_EXPECTED_LAYOUT}"
            )

    skipped: list[tuple[str, str]] = []
    found: list[tuple[str, int, str, str | None]] = []  # (path, label, target actor, source actor)
    for rel, match in scan_videos(root, folders[REAL], _REAL_NAME, "<AA>__<scene>.mp4", skipped):
        found.append((rel, REAL, match.group(1), None))
    for rel, match in scan_videos(root, folders[FAKE], _FAKE_NAME, "<AA>_<BB>__<scene>__<code>.mp4", skipped):
        found.append((rel, FAKE, match.group(1), match.group(2)))

    test_actors = held_out_actors({target for _, _, target, _ in found}, test_fraction)
    records = [
        VideoRecord(
            rel,
            label,
            target,
            REAL_SOURCE if label == REAL else METHOD,
            target in test_actors,
            target,
            source,
        )
        for rel, label, target, source in found
    ]
    index = VideoIndex(
        root=root,
        records=records,
        skipped=skipped,
        dataset="dfd",
        protocol={"compression": compression, "test_fraction": repr(float(test_fraction))},
        test_only=test_fraction == 1,
    )
    index.check_classes()
    index.log_summary()
    return index


def held_out_actors(actors: set[str], fraction: float) -> set[str]:
    """``fraction`` of ``actors`` (all of them at 1.0; otherwise at least one and never all), picked by a
    hash of each id: the same actors on every machine, whatever order the files are listed in."""
    if fraction >= 1:
        return set(actors)
    count = min(len(actors) - 1, max(1, round(fraction * len(actors))))
    return set(sorted(actors, key=lambda a: hashlib.sha256(a.encode()).hexdigest())[:count])
