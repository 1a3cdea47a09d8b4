"""DFDC-preview (DFDCP, the Deepfake Detection Challenge's preview release) index.

Layout::

    <root>/dataset.json    {"<path relative to root>": {"label": "real"|"fake", "set": "train"|"test", ...}}
    <root>/original_videos/<id>/<file>.mp4             real videos of person <id>
    <root>/method_A/<id>/<id>_A/<file>.mp4             fakes made on <id>'s videos (method_B likewise)

The official split is the ``set`` of each entry: "test" entries are the test list, "train" entries are
train/val, split into identity-disjoint folds by ``<id>`` (the person whose video it is). Each record's
``source`` is its top folder (``original_videos``, ``method_A``, ``method_B``): the method, for per-method
results. Entries that are malformed, name a missing file, or whose label contradicts their folder (a
"real" under method_*), and videos dataset.json does not list, are skipped and reported; an unreadable
dataset.json is a one-line error naming it.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from src.data.indexes.base import FAKE, REAL, VideoIndex, VideoRecord, file_sha256, register_dataset
from src.data.indexes.dfdc import read_json_object

DATASET_JSON = "dataset.json"
ORIGINALS = "original_videos"
METHOD_PREFIX = "method_"
SETS = ("train", "test")
_LABELS = {"real": REAL, "fake": FAKE}
_EXPECTED = '{"<folder>/<id>/.../<file>.mp4": {"label": "real"|"fake", "set": "train"|"test"}, ...}'
_EXPECTED_LAYOUT = (
    f"a DFDC-preview folder with {DATASET_JSON} ({_EXPECTED}), original_videos/<id>/ and method_<X>/<id>/"
)


@register_dataset("dfdcp", "DFDC-preview")
def index_dfdcp(root: str | Path) -> VideoIndex:
    """Index a DFDC-preview folder from its dataset.json."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"DFDC-preview root not found: {root}; expected {_EXPECTED_LAYOUT}")
    listing = root / DATASET_JSON
    if not listing.is_file():
        raise FileNotFoundError(
            f"DFDC-preview {DATASET_JSON} not found: {listing}; expected {_EXPECTED_LAYOUT}"
        )
    entries = read_json_object(listing, _EXPECTED)
    skipped: list[tuple[str, str]] = []
    records: list[VideoRecord] = []
    for rel, entry in entries.items():
        record, reason = _record(root, rel, entry)
        if record is None:
            skipped.append((f"{DATASET_JSON}: {rel!r}", reason))
        else:
            records.append(record)
    listed = {r.path for r in records} | {k for k in entries if isinstance(k, str)}
    for video in sorted(root.rglob("*.mp4")):
        rel = video.relative_to(root).as_posix()
        if rel not in listed:
            skipped.append((rel, f"not listed in {DATASET_JSON}"))
    index = VideoIndex(
        root=root,
        records=records,
        skipped=skipped,
        dataset="dfdcp",
        protocol={DATASET_JSON: file_sha256(listing)},
    )
    index.check_classes()
    index.log_summary()
    return index


def _record(root: Path, rel: object, entry: object) -> tuple[VideoRecord | None, str]:
    """The record of one dataset.json entry, or (None, why it is skipped)."""
    posix = PurePosixPath(rel) if isinstance(rel, str) else None
    if posix is None or posix.is_absolute() or ".." in posix.parts or "\\" in rel or posix.suffix != ".mp4":
        return None, "not a relative <folder>/<id>/.../<file>.mp4 path inside the root"
    folder = posix.parts[0]
    if len(posix.parts) < 3 or not (folder == ORIGINALS or folder.startswith(METHOD_PREFIX)):
        return None, f"not under {ORIGINALS}/<id>/ or {METHOD_PREFIX}<X>/<id>/"
    entry = entry if isinstance(entry, dict) else {}
    label, split = _LABELS.get(str(entry.get("label"))), entry.get("set")
    if label is None:
        return None, f"label {entry.get('label')!r} is not real or fake"
    if split not in SETS:
        return None, f"set {split!r} is not train or test"
    if label != (REAL if folder == ORIGINALS else FAKE):
        return None, f"label {entry['label']!r} contradicts its folder {folder}"
    path = root / posix
    if not path.is_file():
        return None, f"listed but not found: {path}"
    if not any(path.resolve().is_relative_to(p) for p in (root.resolve(), (root / folder).resolve())):
        return None, f"symlink resolves outside the dataset root: {path.resolve()}"
    person = posix.parts[1]
    return VideoRecord(posix.as_posix(), label, person, folder, split == "test"), ""
