"""Celeb-DF index and fold splits on tiny v1/v2-style trees of empty .mp4 files."""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path

import numpy as np
import pytest

from src.data.indexes.base import VideoIndex, VideoRecord, fold_groups, identity_overlap, split_folds
from src.data.indexes.celebdf import TEST_LIST, index_celebdf

N_IDS = 8
N_YOUTUBE = 6


def default_test_lines(youtube: bool = True) -> list[str]:
    lines = [
        "1 Celeb-real/id0_0000.mp4",
        "1 Celeb-real/id1_0000.mp4",
        "0 Celeb-synthesis/id0_id1_0000.mp4",
        "0 Celeb-synthesis/id2_id3_0000.mp4",
    ]
    return lines + (["1 YouTube-real/00000.mp4"] if youtube else [])


def make_tree(
    root: Path, youtube: bool = True, test_lines: list[str] | None = None, fakes: bool = True
) -> dict[str, list[str]]:
    """Celeb-DF layout: 3 real and 2 fake videos per identity, optional YouTube-real; returns the files."""
    files: dict[str, list[str]] = {"Celeb-real": [], "Celeb-synthesis": [], "YouTube-real": []}
    for i in range(N_IDS):
        files["Celeb-real"] += [f"id{i}_{k:04d}.mp4" for k in range(3)]
        if fakes:
            files["Celeb-synthesis"] += [f"id{i}_id{(i + 1) % N_IDS}_{k:04d}.mp4" for k in range(2)]
    if youtube:
        files["YouTube-real"] = [f"{k:05d}.mp4" for k in range(N_YOUTUBE)]
    for folder, names in files.items():
        if folder == "YouTube-real" and not youtube:
            continue
        (root / folder).mkdir(parents=True)
        for name in names:
            (root / folder / name).touch()
    lines = default_test_lines(youtube) if test_lines is None else test_lines
    (root / TEST_LIST).write_text("\n".join(lines) + "\n")
    return files


def by_path(index: VideoIndex) -> dict[str, VideoRecord]:
    return {r.path: r for r in index.records}


def skip_reason(index: VideoIndex, needle: str) -> str:
    """The reason of the single skip entry whose subject contains ``needle``."""
    hits = [reason for what, reason in index.skipped if needle in what]
    assert len(hits) == 1, (needle, index.skipped)
    return hits[0]


# --- indexing -------------------------------------------------------------------------------------


def test_v2_tree_labels_identities_and_test_split(tmp_path):
    make_tree(tmp_path)
    index = index_celebdf(tmp_path)
    records = by_path(index)

    assert index.skipped == []
    assert len(index.records) == N_IDS * 5 + N_YOUTUBE
    fake = records["Celeb-synthesis/id2_id3_0001.mp4"]
    assert (fake.label, fake.identity, fake.source, fake.is_test) == (1, "id2", "Celeb-synthesis", False)
    real = records["Celeb-real/id2_0001.mp4"]
    assert (real.label, real.identity, real.source) == (0, "id2", "Celeb-real")
    youtube = records["YouTube-real/00003.mp4"]
    assert (youtube.label, youtube.identity, youtube.source) == (0, "yt:00003", "YouTube-real")

    # Celeb-DF's "1" means real: converted to our 0; "0" (fake) to our 1.
    assert records["Celeb-real/id0_0000.mp4"].is_test and records["Celeb-real/id0_0000.mp4"].label == 0
    assert records["Celeb-synthesis/id0_id1_0000.mp4"].is_test
    assert records["Celeb-synthesis/id0_id1_0000.mp4"].label == 1
    test_paths = {r.path for r in index.test()}
    assert test_paths == {line.split()[1] for line in default_test_lines()}
    assert not test_paths & {r.path for r in index.train_val()}
    assert index.class_counts(index.test()) == {"real": 3, "fake": 2}
    assert index.class_counts(index.train_val()) == {"real": N_IDS * 3 + N_YOUTUBE - 3, "fake": N_IDS * 2 - 2}
    assert index.class_counts() == {"real": N_IDS * 3 + N_YOUTUBE, "fake": N_IDS * 2}


def test_v1_tree_without_youtube_folder(tmp_path):
    make_tree(tmp_path, youtube=False)
    index = index_celebdf(str(tmp_path))
    assert {r.source for r in index.records} == {"Celeb-real", "Celeb-synthesis"}
    assert len(index.test()) == 4 and index.skipped == []


def test_paths_are_relative_posix(tmp_path):
    make_tree(tmp_path)
    for record in index_celebdf(tmp_path).records:
        assert not Path(record.path).is_absolute() and "\\" not in record.path
        assert (tmp_path / record.path).is_file()


def test_unrecognised_files_are_skipped_with_reason(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "Celeb-real" / "notes.txt").touch()
    (tmp_path / "Celeb-real" / "id0_id1_0000.mp4").touch()  # a fake's name in the real folder
    (tmp_path / "YouTube-real" / "clip.mp4").touch()
    (tmp_path / "Celeb-synthesis" / "nested").mkdir()
    index = index_celebdf(tmp_path)
    assert "id<N>_<NNNN>.mp4" in skip_reason(index, "Celeb-real/notes.txt")
    assert "Celeb-real pattern" in skip_reason(index, "Celeb-real/id0_id1_0000.mp4")
    assert "<NNNNN>.mp4" in skip_reason(index, "YouTube-real/clip.mp4")
    assert "not a regular file" in skip_reason(index, "Celeb-synthesis/nested")


def test_nothing_is_dropped_silently(tmp_path):
    lines = [*default_test_lines(), "x", "1 Celeb-real/id9_0000.mp4", "0 Celeb-real/id3_0000.mp4"]
    make_tree(tmp_path, test_lines=lines)
    (tmp_path / "Celeb-real" / "odd.mp4").touch()
    index = index_celebdf(tmp_path)
    on_disk = {p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("*/*")}
    accounted = {r.path for r in index.records} | {what for what, _ in index.skipped}
    assert on_disk <= accounted
    assert sum(TEST_LIST in what for what, _ in index.skipped) == 3


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("x Celeb-real/id3_0000.mp4", "malformed line"),
        ("1", "malformed line"),
        ("1 Celeb-real/id3_0000.mp4 extra", "malformed line"),
        ("1 Celeb-real/id9_0000.mp4", "file not found"),
        ("1 ../outside.mp4", "escapes the dataset root"),
        ("1 Celeb-real/../../outside.mp4", "escapes the dataset root"),
        ("1 /tmp/outside.mp4", "absolute path"),
        ("1 C:/data/outside.mp4", "absolute path"),
        ("1 Other/id3_0000.mp4", "with folder one of"),
        ("1 id3_0000.mp4", "with folder one of"),
        ("0 Celeb-real/id3_0000.mp4", "label mismatch: the list says fake (0) but Celeb-real holds real"),
        ("1 Celeb-synthesis/id3_id4_0000.mp4", "label mismatch: the list says real (1) but Celeb-synthesis"),
        ("1 Celeb-real/id0_0000.mp4", "duplicate of line 1"),
    ],
)
def test_bad_test_list_lines_are_skipped(tmp_path, line, reason):
    (tmp_path.parent / "outside.mp4").touch()
    make_tree(tmp_path, test_lines=[*default_test_lines(), line])
    index = index_celebdf(tmp_path)
    number = len(default_test_lines()) + 1
    assert reason in skip_reason(index, f"{TEST_LIST}:{number}:")
    assert len(index.test()) == len(default_test_lines())


def test_label_mismatch_keeps_the_video_out_of_train(tmp_path):
    make_tree(tmp_path, test_lines=[*default_test_lines(), "1 Celeb-synthesis/id3_id4_0000.mp4"])
    index = index_celebdf(tmp_path)
    assert "Celeb-synthesis/id3_id4_0000.mp4" not in by_path(index)
    own = [reason for what, reason in index.skipped if what == "Celeb-synthesis/id3_id4_0000.mp4"]
    assert len(own) == 1 and "leakage" in own[0]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlink_escaping_the_root_is_skipped(tmp_path):
    root = tmp_path / "celebdf"
    outside = tmp_path / "elsewhere.mp4"
    outside.touch()
    make_tree(root, test_lines=[*default_test_lines(), "1 Celeb-real/id5_0009.mp4"])
    (root / "Celeb-real" / "id5_0009.mp4").symlink_to(outside)
    index = index_celebdf(root)
    assert "resolves outside the dataset root" in skip_reason(index, f"{TEST_LIST}:6:")
    assert [r for what, r in index.skipped if what == "Celeb-real/id5_0009.mp4"] == [
        f"symlink resolves outside the dataset root: {outside}"
    ]
    assert "Celeb-real/id5_0009.mp4" not in by_path(index)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlinked_source_folder_is_allowed(tmp_path):
    storage, root = tmp_path / "storage", tmp_path / "celebdf"
    make_tree(storage)
    root.mkdir()
    for entry in storage.iterdir():
        (root / entry.name).symlink_to(entry)
    index = index_celebdf(root)
    assert index.skipped == [] and len(index.test()) == len(default_test_lines())


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="Celeb-DF root not found: .*nowhere.*Celeb-synthesis"):
        index_celebdf(tmp_path / "nowhere")


@pytest.mark.parametrize("folder", ["Celeb-real", "Celeb-synthesis"])
def test_missing_required_folder(tmp_path, folder):
    make_tree(tmp_path)
    for file in (tmp_path / folder).iterdir():
        file.unlink()
    (tmp_path / folder).rmdir()
    with pytest.raises(FileNotFoundError, match=f"required folder missing: .*{folder}"):
        index_celebdf(tmp_path)


def test_missing_test_list(tmp_path):
    make_tree(tmp_path)
    (tmp_path / TEST_LIST).unlink()
    with pytest.raises(ValueError, match=f"test list not found: .*{TEST_LIST}"):
        index_celebdf(tmp_path)


def test_no_fake_videos(tmp_path):
    make_tree(tmp_path, fakes=False, test_lines=["1 Celeb-real/id0_0000.mp4"])
    with pytest.raises(ValueError, match="no fake videos in the train/val split"):
        index_celebdf(tmp_path)


def test_no_real_test_videos(tmp_path):
    make_tree(tmp_path, test_lines=["0 Celeb-synthesis/id0_id1_0000.mp4", "1 Celeb-real/missing_name.mp4"])
    with pytest.raises(ValueError, match="no real videos in the test split"):
        index_celebdf(tmp_path)


def test_summary_is_logged(tmp_path, caplog):
    make_tree(tmp_path, test_lines=[*default_test_lines(), "garbage"])
    with caplog.at_level(logging.INFO, logger="src.data.indexes"):
        index_celebdf(tmp_path)
    text = caplog.text
    assert "train/val 41 (real 27, fake 14)" in text and "test 5 (real 3, fake 2)" in text
    assert "skipped 1" in text and "malformed line" in text


# --- folds ----------------------------------------------------------------------------------------


@pytest.fixture
def train_val(tmp_path) -> list[VideoRecord]:
    make_tree(tmp_path)
    return index_celebdf(tmp_path).train_val()


@pytest.mark.parametrize("folds", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_folds_are_identity_disjoint_and_complete(train_val, folds, seed):
    seen: list[str] = []
    for fold in range(folds):
        train, val = split_folds(train_val, folds, fold, seed)
        assert not {r.identity for r in train} & {r.identity for r in val}
        assert sorted(r.path for r in train + val) == sorted(r.path for r in train_val)
        assert val
        seen += [r.path for r in val]
    assert sorted(seen) == sorted(r.path for r in train_val)  # every video in exactly one val part


def test_folds_are_balanced(train_val):
    largest_group = max(sum(r.identity == g for r in train_val) for g in {r.identity for r in train_val})
    sizes = [len(split_folds(train_val, 4, fold)[1]) for fold in range(4)]
    assert max(sizes) - min(sizes) <= largest_group


def test_folds_are_deterministic_and_order_independent(train_val):
    shuffled = list(train_val)
    random.Random(3).shuffle(shuffled)
    for fold in range(3):
        val_a = {r.path for r in split_folds(train_val, 3, fold, seed=5)[1]}
        val_b = {r.path for r in split_folds(shuffled, 3, fold, seed=5)[1]}
        assert val_a == val_b
    assignments = {
        seed: frozenset(frozenset(r.path for r in split_folds(train_val, 3, f, seed)[1]) for f in range(3))
        for seed in range(6)
    }
    assert len(set(assignments.values())) > 1  # the seed matters


@pytest.mark.parametrize(
    ("folds", "fold", "message"),
    [
        (1, 0, "folds must be an integer >= 2, got folds=1"),
        (3, 3, "0 <= fold < folds=3, got fold=3"),
        (3, -1, "0 <= fold < folds=3, got fold=-1"),
        (100, 0, "need at least folds=100 identity groups to split, got 13"),
    ],
)
def test_bad_fold_arguments(train_val, folds, fold, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        split_folds(train_val, folds, fold)


def test_split_refuses_test_records(tmp_path):
    make_tree(tmp_path)
    with pytest.raises(ValueError, match="train/val records only"):
        split_folds(index_celebdf(tmp_path).records, 2, 0)


def test_test_list_with_bom_and_crlf(tmp_path):
    make_tree(tmp_path)
    (tmp_path / TEST_LIST).write_bytes(("\ufeff" + "\r\n".join(default_test_lines()) + "\r\n").encode())
    index = index_celebdf(tmp_path)
    assert index.skipped == [] and len(index.test()) == len(default_test_lines())


def test_folds_balance_classes_at_celebdf_scale():
    """v2-like proportions: 59 identities with ~10 real and ~95 fake videos each, 300 YouTube videos."""
    rng = random.Random(0)

    def video(folder: str, name: str, identity: str) -> VideoRecord:
        return VideoRecord(f"{folder}/{name}", int(folder == "Celeb-synthesis"), identity, folder, False)

    records = [video("YouTube-real", f"{k:05d}.mp4", f"yt:{k:05d}") for k in range(300)]
    for i in range(59):
        reals, fakes = rng.randint(5, 15), rng.randint(60, 130)
        records += [video("Celeb-real", f"id{i}_{k:04d}.mp4", f"id{i}") for k in range(reals)]
        records += [video("Celeb-synthesis", f"id{i}_id0_{k:04d}.mp4", f"id{i}") for k in range(fakes)]
    total = {"real": sum(r.label == 0 for r in records), "fake": sum(r.label == 1 for r in records)}
    for fold in range(5):
        val = split_folds(records, np.int64(5), fold)[1]
        for name, label in (("real", 0), ("fake", 1)):
            share = sum(r.label == label for r in val) / total[name]
            assert abs(share - 0.2) < 0.02, (fold, name, share)


# --- quarantined test-list lines ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "x Celeb-real/id3_0000.mp4",  # bad label token
        "1 Celeb-real/id3_0000.mp4 extra",  # three tokens
        "1,Celeb-real/id3_0000.mp4",  # one token
        "1 Celeb-real\\id3_0000.mp4",  # not a plain POSIX path
        "1 Celeb-real/../Celeb-real/id3_0000.mp4",  # escapes (syntactically)
        "1 /data/celebdf/Celeb-real/id3_0000.mp4",  # absolute
        "1 celeb-real/id3_0000.mp4",  # wrong case: not found on a case-sensitive file system
        "0 Celeb-real/id3_0000.mp4",  # label mismatch
    ],
)
def test_a_rejected_line_keeps_its_video_out_of_train(tmp_path, line):
    """Whatever made a test-list line unusable, the video it names is a test video: never train/val."""
    make_tree(tmp_path, test_lines=[*default_test_lines(), line])
    index = index_celebdf(tmp_path)
    number = len(default_test_lines()) + 1
    assert skip_reason(index, f"{TEST_LIST}:{number}:")  # the line is reported with its reason
    assert "Celeb-real/id3_0000.mp4" not in {r.path for r in index.train_val()}
    own = [reason for what, reason in index.skipped if what == "Celeb-real/id3_0000.mp4"]
    assert len(own) == 1 and f"lines ({number})" in own[0] and "leakage" in own[0]


def test_a_rejected_line_does_not_remove_a_properly_listed_video(tmp_path):
    make_tree(tmp_path, test_lines=[*default_test_lines(), "1 Celeb-real/id0_0000.mp4 again"])
    index = index_celebdf(tmp_path)
    assert by_path(index)["Celeb-real/id0_0000.mp4"].is_test
    assert [what for what, _ in index.skipped] == [f"{TEST_LIST}:6: '1 Celeb-real/id0_0000.mp4 again'"]


# --- identities shown by a record ----------------------------------------------------------------------


def test_records_know_target_and_swapped_in_identities(tmp_path):
    make_tree(tmp_path)
    records = by_path(index_celebdf(tmp_path))
    fake = records["Celeb-synthesis/id2_id3_0001.mp4"]
    assert (fake.identity, fake.target_identity, fake.source_identity) == ("id2", "id2", "id3")
    assert fake.identities == ("id2", "id3")
    assert records["Celeb-real/id2_0001.mp4"].identities == ("id2",)
    assert records["YouTube-real/00003.mp4"].identities == ("yt:00003",)
    # the five original positional fields still construct a record
    old_style = VideoRecord("Celeb-real/id9_0000.mp4", 0, "id9", "Celeb-real", False)
    assert old_style.identities == ("id9",) and old_style.source_identity is None


# --- strict identity split -----------------------------------------------------------------------------


def paired_records(n_pairs: int = 6, per_id: int = 2) -> list[VideoRecord]:
    """Identities 2k and 2k+1 swap faces (fakes in both directions); nothing links two pairs."""
    records = []
    for i in range(2 * n_pairs):
        partner = i + 1 if i % 2 == 0 else i - 1
        for k in range(per_id):
            records.append(
                VideoRecord(f"Celeb-real/id{i}_{k:04d}.mp4", 0, f"id{i}", "Celeb-real", False, f"id{i}")
            )
            records.append(
                VideoRecord(
                    f"Celeb-synthesis/id{i}_id{partner}_{k:04d}.mp4",
                    1,
                    f"id{i}",
                    "Celeb-synthesis",
                    False,
                    f"id{i}",
                    f"id{partner}",
                )
            )
    return records


def faces(records: list[VideoRecord]) -> set[str]:
    return {face for r in records for face in r.identities}


def test_official_split_lets_swapped_in_faces_cross_and_strict_does_not():
    records = paired_records()
    crossings = {"official": 0, "strict": 0}
    for identity_split in crossings:
        for seed in range(4):
            for fold in range(3):
                train, val = split_folds(records, 3, fold, seed, identity_split=identity_split)
                assert sorted(r.path for r in train + val) == sorted(r.path for r in records)
                assert not {r.identity for r in train} & {r.identity for r in val}
                crossings[identity_split] += len(faces(train) & faces(val))
    assert crossings["official"] > 0  # the official protocol groups by target only
    assert crossings["strict"] == 0


def test_strict_groups_are_the_components_linked_by_fakes():
    groups = fold_groups(paired_records(3), "strict")
    assert len(set(groups.values())) == 3
    assert groups["Celeb-real/id1_0000.mp4"] == groups["Celeb-synthesis/id0_id1_0001.mp4"] == "id0"
    # a chain a->b, b->c joins all three, whatever the order of the records
    chain = [
        VideoRecord("Celeb-synthesis/id5_id7_0000.mp4", 1, "id5", "Celeb-synthesis", False, "id5", "id7"),
        VideoRecord("Celeb-synthesis/id7_id6_0000.mp4", 1, "id7", "Celeb-synthesis", False, "id7", "id6"),
        VideoRecord("Celeb-real/id6_0000.mp4", 0, "id6", "Celeb-real", False, "id6"),
        VideoRecord("Celeb-real/id8_0000.mp4", 0, "id8", "Celeb-real", False, "id8"),
    ]
    for order in (chain, chain[::-1]):
        assert fold_groups(order, "strict") == {
            "Celeb-synthesis/id5_id7_0000.mp4": "id5",
            "Celeb-synthesis/id7_id6_0000.mp4": "id5",
            "Celeb-real/id6_0000.mp4": "id5",
            "Celeb-real/id8_0000.mp4": "id8",
        }
    assert fold_groups(chain) == {r.path: r.identity for r in chain}  # official: unchanged


def test_unknown_identity_split(train_val):
    with pytest.raises(
        ValueError, match=r"unknown data.identity_split='loose'; valid values: official, strict"
    ):
        split_folds(train_val, 2, 0, identity_split="loose")


def test_strict_split_that_collapses_says_why(train_val):
    # make_tree's fakes form a ring id0->id1->...->id7->id0: one strict group plus the YouTube videos
    with pytest.raises(ValueError, match=r"need at least folds=10 identity groups.*identity_split=strict"):
        split_folds(train_val, 10, 0, identity_split="strict")


# --- identity overlap ----------------------------------------------------------------------------------


def test_identity_overlap_counts_fakes_whose_face_appears_elsewhere():
    train = [
        VideoRecord("Celeb-real/id0_0000.mp4", 0, "id0", "Celeb-real", False, "id0"),
        VideoRecord("Celeb-synthesis/id0_id2_0000.mp4", 1, "id0", "Celeb-synthesis", False, "id0", "id2"),
        VideoRecord("Celeb-synthesis/id0_id9_0000.mp4", 1, "id0", "Celeb-synthesis", False, "id0", "id9"),
    ]
    test = [
        VideoRecord("Celeb-real/id2_0000.mp4", 0, "id2", "Celeb-real", True, "id2"),
        VideoRecord("Celeb-synthesis/id2_id0_0000.mp4", 1, "id2", "Celeb-synthesis", True, "id2", "id0"),
        VideoRecord("Celeb-synthesis/id2_id5_0000.mp4", 1, "id2", "Celeb-synthesis", True, "id2", "id5"),
    ]
    overlap = identity_overlap({"train": train, "test": test})
    assert overlap["test"] == {
        "fakes": 2,
        "fakes_source_elsewhere": 1,
        "fakes_source_elsewhere_by_split": {"train": 1},
        "fakes_target_elsewhere": 2,
        "reals": 1,
        "reals_identity_elsewhere": 1,
    }
    assert overlap["train"]["fakes_source_elsewhere"] == 1  # id2 is shown by the test videos
    assert overlap["train"]["reals_identity_elsewhere"] == 1  # id0's face is swapped into a test fake


def test_identity_overlap_on_the_synthetic_set(small_dataset):
    """As in Celeb-DF v2 (234 of 340 test fakes), test fakes carry faces of train/val identities."""
    index = index_celebdf(small_dataset)
    train, val = split_folds(index.train_val(), 2, 0)
    splits = {"train": train, "val": val, "test": index.test()}
    overlap = identity_overlap(splits)
    for name, part in splits.items():
        others = faces([r for other, p in splits.items() if other != name for r in p])
        fakes = [r for r in part if r.label == 1]
        assert overlap[name]["fakes"] == len(fakes)
        assert overlap[name]["fakes_source_elsewhere"] == sum(r.source_identity in others for r in fakes)
    assert overlap["test"]["fakes"] > 0 and overlap["test"]["fakes_source_elsewhere"] > 0


# --- fingerprint ---------------------------------------------------------------------------------------


def test_fingerprint_is_stable_and_follows_root_and_test_list(tmp_path):
    make_tree(tmp_path / "a")
    first = index_celebdf(tmp_path / "a").fingerprint()
    assert re.fullmatch(r"[0-9a-f]{16}", first)
    assert index_celebdf(tmp_path / "a").fingerprint() == first
    os.utime(tmp_path / "a" / TEST_LIST, (0, 0))  # only the content counts, not the file's times
    assert index_celebdf(tmp_path / "a" / ".." / "a").fingerprint() == first  # the resolved root
    make_tree(tmp_path / "b")
    assert index_celebdf(tmp_path / "b").fingerprint() != first  # same content, other root
    (tmp_path / "a" / TEST_LIST).write_text("\n".join([*default_test_lines(), "1 Celeb-real/id5_0000.mp4"]))
    assert index_celebdf(tmp_path / "a").fingerprint() != first
