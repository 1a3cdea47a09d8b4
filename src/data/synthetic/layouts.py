"""The embedded synthetic set (or any Celeb-DF-layout folder) arranged in the other datasets' layouts, so each
indexer and `data=<name>` is tested end to end without the real data.

``LAYOUTS[name](celebdf_root, out_root)`` writes the tree ``data=<name>`` reads, by hard links (copies
across file systems, as ``write_ffpp_layout``), and returns ``out_root``; calling it again adds nothing.
Labels, test membership and identities come from the Celeb-DF index of the source folder: a video keeps
its label, a test video stays a test video (where the layout has a test list), and the Celeb-DF identity
becomes the layout's person (DFDC-preview ``<id>``, DFD actor). Fakes keep the real video they were made
on as their original (DFDC ``original``, UADFV pairing). The trees test the layouts and split protocols,
not what the real datasets look like.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import defaultdict
from pathlib import Path

from src.data.indexes import dfd, dfdc, dfdcp, uadfv
from src.data.indexes.base import FAKE, REAL, VideoRecord
from src.data.indexes.celebdf import index_celebdf
from src.data.indexes.ffpp import COMPRESSIONS, MANIPULATED, hard_link, write_ffpp_layout

_CELEB_FAKE = re.compile(r"Celeb-synthesis/(id\d+)_id\d+_(\d+)\.mp4")


def _records(celebdf_root: Path) -> list[VideoRecord]:
    return index_celebdf(Path(celebdf_root).expanduser()).records


def _made_on(record: VideoRecord) -> str:
    """The Celeb-real video a Celeb-synthesis fake was made on (its path)."""
    target, take = _CELEB_FAKE.fullmatch(record.path).groups()
    return f"Celeb-real/{target}_{take}.mp4"


def _code(text: str, length: int, alphabet: str) -> str:
    """A short name derived from ``text``: the same on every machine."""
    digest = hashlib.sha256(text.encode()).digest()
    return "".join(alphabet[b % len(alphabet)] for b in digest[:length])


def _dfdc_name(rel: str) -> str:
    return _code(rel, 10, "abcdefghijklmnopqrstuvwxyz") + ".mp4"  # DFDC names: ten random letters


def write_dfdc_layout(celebdf_root: str | Path, out_root: str | Path, parts: int = 2) -> Path:
    """The DFDC layout: train/val videos spread over ``parts`` training parts (a fake in its original's
    part), each with its metadata.json; the test videos in test/ with labels.csv."""
    celebdf_root, out = Path(celebdf_root).expanduser(), Path(out_root).expanduser()
    records = _records(celebdf_root)
    part_of_group = {g: k % parts for k, g in enumerate(sorted({r.identity for r in records}))}
    metadata: dict[Path, dict] = defaultdict(dict)
    labels = [("filename", "label")]
    for record in records:
        name = _dfdc_name(record.path)
        if record.is_test:
            folder = out / dfdc.TEST_FOLDER
            labels.append((name, str(record.label)))
        else:
            folder = out / f"dfdc_train_part_{part_of_group[record.identity]}"
            original = _dfdc_name(_made_on(record)) if record.label == FAKE else None
            label = "FAKE" if record.label == FAKE else "REAL"
            metadata[folder][name] = {"label": label, "split": "train", "original": original}
        folder.mkdir(parents=True, exist_ok=True)
        hard_link(celebdf_root / record.path, folder / name)
    for folder, entries in metadata.items():
        (folder / dfdc.METADATA).write_text(json.dumps(entries, indent=1, sort_keys=True))
    with (out / dfdc.TEST_FOLDER / dfdc.LABELS).open("w", newline="") as file:
        csv.writer(file).writerows(labels)
    return out


def write_dfdcp_layout(celebdf_root: str | Path, out_root: str | Path) -> Path:
    """The DFDC-preview layout: each identity a numbered person, fakes alternating between method_A and
    method_B, dataset.json with each video's label and set (test = the Celeb-DF test list)."""
    celebdf_root, out = Path(celebdf_root).expanduser(), Path(out_root).expanduser()
    records = _records(celebdf_root)
    person = {i: f"{1000000 + k}" for k, i in enumerate(sorted({r.identity for r in records}))}
    fakes_so_far: dict[str, int] = defaultdict(int)  # per real video: fakes placed, for the alternation
    listing = {}
    for record in sorted(records, key=lambda r: r.path):
        pid, take = person[record.identity], Path(record.path).stem.rsplit("_", 1)[-1]
        if record.label == REAL:
            rel = f"{dfdcp.ORIGINALS}/{pid}/{pid}_{take}.mp4"
        else:
            made_on = _made_on(record)
            method = "AB"[fakes_so_far[made_on] % 2]
            fakes_so_far[made_on] += 1
            rel = f"{dfdcp.METHOD_PREFIX}{method}/{pid}/{pid}_{method}/{_code(record.path, 7, '0123456789')}_{pid}_{method}_{take}.mp4"
        listing[rel] = {
            "label": "fake" if record.label else "real",
            "set": "test" if record.is_test else "train",
        }
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        hard_link(celebdf_root / record.path, out / rel)
    (out / dfdcp.DATASET_JSON).write_text(json.dumps(listing, indent=1, sort_keys=True))
    return out


def write_dfd_layout(celebdf_root: str | Path, out_root: str | Path, compression: str = "c23") -> Path:
    """The DeepFakeDetection part of a FaceForensics++ tree: each identity an actor (01, 02, ... in sorted
    order), each real video a scene of its actor, each fake ``<target>_<source>__<scene>__<code>.mp4``.
    Another compression adds to the same tree (as ``write_ffpp_layout``, which can write the rest of it)."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    celebdf_root, out = Path(celebdf_root).expanduser(), Path(out_root).expanduser()
    records = _records(celebdf_root)
    actor = {i: f"{k + 1:02d}" for k, i in enumerate(sorted({f for r in records for f in r.identities}))}
    reals = out / dfd.ACTORS / compression / "videos"
    fakes = out / MANIPULATED / dfd.METHOD / compression / "videos"
    for folder in (reals, fakes):
        folder.mkdir(parents=True, exist_ok=True)
    for record in records:
        scene = (
            "scene_" + Path(record.path if record.label == REAL else _made_on(record)).stem.rsplit("_", 1)[-1]
        )
        if record.label == REAL:
            destination = reals / f"{actor[record.identity]}__{scene}.mp4"
        else:
            target, source = (actor[face] for face in record.identities)
            code = _code(record.path, 8, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
            destination = fakes / f"{target}_{source}__{scene}__{code}.mp4"
        hard_link(celebdf_root / record.path, destination)
    return out


def write_uadfv_layout(celebdf_root: str | Path, out_root: str | Path) -> Path:
    """The UADFV layout: every real video that has fakes becomes real/<n>.mp4 (n = 0000, 0001, ... in
    sorted order) and the first fake made on it fake/<n>_fake.mp4; the others are left out."""
    celebdf_root, out = Path(celebdf_root).expanduser(), Path(out_root).expanduser()
    first_fake: dict[str, str] = {}
    for record in sorted(_records(celebdf_root), key=lambda r: r.path):
        if record.label == FAKE:
            first_fake.setdefault(_made_on(record), record.path)
    for folder in uadfv.FOLDERS.values():
        (out / folder).mkdir(parents=True, exist_ok=True)
    for n, real in enumerate(sorted(first_fake)):
        hard_link(celebdf_root / real, out / "real" / f"{n:04d}.mp4")
        hard_link(celebdf_root / first_fake[real], out / "fake" / f"{n:04d}_fake.mp4")
    return out


# data=<name> -> the function that writes its layout from a Celeb-DF-layout folder (Celeb-DF's layout is the
# source's own): the datasets the embedded set can stand in for, e.g. in `make cross-dataset`. A dataset
# without one simply has no stand-in (tests/data/test_registry.py: each name here is a registered dataset)
LAYOUTS = {
    "ffpp": write_ffpp_layout,
    "dfdc": write_dfdc_layout,
    "dfdcp": write_dfdcp_layout,
    "dfd": write_dfd_layout,
    "uadfv": write_uadfv_layout,
}
