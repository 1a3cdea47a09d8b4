"""UADFV index: 49 real YouTube videos and one fake of each (Li et al., "In Ictu Oculi", 2018).

Layout::

    <root>/real/<n>.mp4          real video n
    <root>/fake/<n>_fake.mp4     the fake made from real video n

UADFV has no official split and is used for testing only: every video is in the test list and the index
is test-only (``evaluate.py data=uadfv`` works, training on it is refused with one line). A fake is
grouped with the real video it was made from (identity ``<n>``), so per-identity statistics keep a
pair together.
"""

from __future__ import annotations

import re
from pathlib import Path

from src.data.indexes.base import FAKE, REAL, VideoIndex, VideoRecord, register_dataset, scan_videos

FOLDERS = {REAL: "real", FAKE: "fake"}  # also each record's VideoRecord.source
_NAMES = {
    REAL: (re.compile(r"([A-Za-z0-9-]+)\.mp4"), "<n>.mp4"),
    FAKE: (re.compile(r"([A-Za-z0-9-]+)_fake\.mp4"), "<n>_fake.mp4"),
}
_EXPECTED_LAYOUT = "a UADFV folder with real/<n>.mp4 and fake/<n>_fake.mp4"


@register_dataset("uadfv", "UADFV")
def index_uadfv(root: str | Path) -> VideoIndex:
    """Index a UADFV folder: every video is a test video."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"UADFV root not found: {root}; expected {_EXPECTED_LAYOUT}")
    skipped: list[tuple[str, str]] = []
    records: list[VideoRecord] = []
    for label, folder in FOLDERS.items():
        if not (root / folder).is_dir():
            raise FileNotFoundError(f"UADFV folder missing: {root / folder}; expected {_EXPECTED_LAYOUT}")
        pattern, form = _NAMES[label]
        for rel, match in scan_videos(root, root / folder, pattern, form, skipped):
            records.append(VideoRecord(rel, label, match.group(1), folder, True))
    index = VideoIndex(root=root, records=records, skipped=skipped, dataset="uadfv", test_only=True)
    index.check_classes()
    index.log_summary()
    return index
