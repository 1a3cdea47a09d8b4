"""FaceForensics++ index on a tiny FF++-layout tree built from the small synthetic Celeb-DF."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from src.data.indexes.celebdf import VideoIndex, fold_groups, identity_overlap, split_folds
from src.data.indexes.ffpp import FFPP_METHODS, index_ffpp, write_ffpp_layout
from src.experiments.wiring import build_datamodule

PRESENT = FFPP_METHODS[:4]  # FaceShifter's folder is left out: an absent method


@pytest.fixture(scope="module")
def ffpp_root(small_dataset, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ffpp") / "FaceForensics++"
    write_ffpp_layout(small_dataset, root, compression="c23", methods=PRESENT)
    write_ffpp_layout(small_dataset, root, compression="c40", methods=FFPP_METHODS)
    return root


@pytest.fixture
def own_copy(ffpp_root, tmp_path) -> Path:
    """A private copy of the tree that a test may damage."""
    return Path(shutil.copytree(ffpp_root, tmp_path / "ffpp", copy_function=shutil.copy))


def split_pairs(root: Path, split: str) -> list[tuple[str, str]]:
    return [tuple(pair) for pair in json.loads((root / "splits" / f"{split}.json").read_text())]


def test_labels_identities_and_groups(ffpp_root):
    index = index_ffpp(ffpp_root)
    assert isinstance(index, VideoIndex) and index.dataset == "ffpp"
    records = {r.path: r for r in index.records}
    real = records["original_sequences/youtube/c23/videos/000.mp4"]
    assert (real.label, real.source, real.identities, real.identity) == (0, "youtube", ("000",), "000+001")
    fake = records["manipulated_sequences/Face2Face/c23/videos/001_000.mp4"]
    assert (fake.label, fake.source, fake.identities, fake.identity) == (
        1,
        "Face2Face",
        ("001", "000"),
        "000+001",
    )
    # one group per pair: target and source of every fake are in the group its pair names
    for record in index.records:
        assert set(record.identities) <= set(record.identity.split("+"))
    assert {r.source for r in index.records if r.label == 1} == set(PRESENT)
    assert all("/c23/" in r.path for r in index.records)
    assert index.class_counts() == {"real": 8, "fake": 8 * len(PRESENT)}  # 4 pairs, both directions


def test_test_split_is_the_test_pairs_in_both_directions(ffpp_root):
    index = index_ffpp(ffpp_root)
    ((a, b),) = split_pairs(ffpp_root, "test")
    expected = {f"original_sequences/youtube/c23/videos/{v}.mp4" for v in (a, b)} | {
        f"manipulated_sequences/{m}/c23/videos/{t}_{s}.mp4" for m in PRESENT for t, s in ((a, b), (b, a))
    }
    assert {r.path for r in index.test()} == expected
    pool_ids = {v for split in ("train", "val") for pair in split_pairs(ffpp_root, split) for v in pair}
    assert {face for r in index.train_val() for face in r.identities} == pool_ids
    # no face of the test pairs anywhere in train/val
    overlap = identity_overlap({"train/val": index.train_val(), "test": index.test()})
    assert overlap["test"]["fakes_source_elsewhere"] == 0 and overlap["test"]["fakes_target_elsewhere"] == 0


def test_official_val_split_and_folds(ffpp_root):
    index = index_ffpp(ffpp_root)
    train, val = index.official_train_val()
    val_ids = {v for pair in split_pairs(ffpp_root, "val") for v in pair}
    assert val and {face for r in val for face in r.identities} == val_ids
    assert not {face for r in train for face in r.identities} & val_ids
    for fold in range(2):  # k folds over the train+val pool, pairs kept whole
        train, val = split_folds(index.train_val(), 2, fold)
        assert not {f for r in train for f in r.identities} & {f for r in val for f in r.identities}
    # pairs are already closed under "shares a face": strict changes nothing
    assert fold_groups(index.train_val(), "strict") == fold_groups(index.train_val())


def test_absent_method_is_reported_and_skipped(ffpp_root):
    index = index_ffpp(ffpp_root)
    assert index.skipped == [
        ("manipulated_sequences/FaceShifter/c23/videos", "method folder absent; FaceShifter skipped")
    ]
    only = index_ffpp(ffpp_root, methods=["Deepfakes"])
    assert only.skipped == [] and {r.source for r in only.records if r.label == 1} == {"Deepfakes"}


def test_compression_selects_the_tree_and_the_fingerprint(ffpp_root):
    c23, c40 = index_ffpp(ffpp_root, compression="c23"), index_ffpp(ffpp_root, compression="c40")
    assert all("/c40/" in r.path for r in c40.records) and c40.skipped == []
    assert re.fullmatch(r"[0-9a-f]{16}", c23.fingerprint())
    assert c23.fingerprint() == index_ffpp(ffpp_root, compression="c23").fingerprint()
    assert c23.fingerprint() != c40.fingerprint()
    assert c23.fingerprint() != index_ffpp(ffpp_root, methods=["Deepfakes"]).fingerprint()
    # the order methods are given in does not change the data, nor the fingerprint
    assert index_ffpp(ffpp_root, methods=PRESENT[::-1]).fingerprint() == c23.fingerprint()


def test_fingerprint_follows_the_split_files(own_copy):
    before = index_ffpp(own_copy).fingerprint()
    train, val = split_pairs(own_copy, "train"), split_pairs(own_copy, "val")
    (own_copy / "splits" / "train.json").write_text(json.dumps(train[:1]))
    (own_copy / "splits" / "val.json").write_text(json.dumps(val + train[1:]))
    assert index_ffpp(own_copy).fingerprint() != before


def test_splits_dir_elsewhere(own_copy, tmp_path):
    moved = Path(shutil.move(own_copy / "splits", tmp_path / "my-splits"))
    with pytest.raises(
        FileNotFoundError, match=r"split file not found: .*splits.train\.json.*data\.splits_dir"
    ):
        index_ffpp(own_copy)
    assert len(index_ffpp(own_copy, splits_dir=str(moved)).test()) == 2 + 2 * len(PRESENT)


def test_stray_files_and_cross_split_fakes_are_skipped(own_copy):
    folder = own_copy / "manipulated_sequences" / "Deepfakes" / "c23" / "videos"
    ((a, _),) = split_pairs(own_copy, "test")
    train_id = split_pairs(own_copy, "train")[0][0]
    shutil.copy(folder / "000_001.mp4", folder / f"{train_id}_{a}.mp4")  # target in train, source in test
    (folder / "notes.txt").touch()
    (own_copy / "original_sequences" / "youtube" / "c23" / "videos" / "999.mp4").touch()  # in no split
    index = index_ffpp(own_copy)
    reasons = dict(index.skipped)
    assert "would cross splits" in reasons[f"manipulated_sequences/Deepfakes/c23/videos/{train_id}_{a}.mp4"]
    assert "does not match <NNN>_<MMM>.mp4" in reasons["manipulated_sequences/Deepfakes/c23/videos/notes.txt"]
    assert "id 999 is in none of the split files" in reasons["original_sequences/youtube/c23/videos/999.mp4"]


def test_missing_root(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"FaceForensics\+\+ root not found: .*nowhere.*original_sequences"
    ):
        index_ffpp(tmp_path / "nowhere")


def test_missing_originals_folder(ffpp_root):
    with pytest.raises(FileNotFoundError, match=r"originals folder missing: .*youtube.raw.videos; expected"):
        index_ffpp(ffpp_root, compression="raw")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"compression": "c30"}, r"unknown data.compression='c30'; valid values: raw, c23, c40"),
        ({"methods": ["DeepFakes"]}, r"data.methods=\['DeepFakes'\] must be a non-empty subset of"),
        ({"methods": []}, r"data.methods=\[\] must be a non-empty subset"),
    ],
)
def test_bad_settings(ffpp_root, kwargs, message):
    with pytest.raises(ValueError, match=message):
        index_ffpp(ffpp_root, **kwargs)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[["000", "001"]', r"cannot read FaceForensics\+\+ split file .*train\.json"),
        ('[["000"]]', r"train\.json: entry 0 is \['000'\], not a pair of ids"),
        ('[["000", "abc"]]', r"entry 0 is \['000', 'abc'\], not a pair of ids"),
        ('[["000", "001"], ["006", "007"]]', r"id 006 is in both train\.json and test\.json"),
    ],
)
def test_bad_split_files(own_copy, content, message):
    (own_copy / "splits" / "train.json").write_text(content)
    with pytest.raises(ValueError, match=message):
        index_ffpp(own_copy)


def test_layout_writer_needs_enough_pairs(small_dataset, tmp_path):
    with pytest.raises(ValueError, match=r"yields 4 pairs .* cannot give \(train, val, test\) = \(3, 1, 1\)"):
        write_ffpp_layout(small_dataset, tmp_path / "ff", split_counts=(3, 1, 1))


def test_data_ffpp_is_one_yaml_away_from_training_and_evaluation(ffpp_root, small_cache):
    """`data=ffpp` composes, builds its index through the datamodule (the plug-in), and yields a test split
    with both classes; `data.methods` and `data.compression` reach the indexer."""
    import hydra

    from tests.conftest import compose_config

    overrides = [
        "data=ffpp",
        f"data.root={ffpp_root}",
        f"data.cache_dir={small_cache}",
        "data.folds=2",
        "data.methods=[Deepfakes,FaceSwap]",
        "augment=jpeg",
    ]
    cfg = compose_config("evaluate", overrides)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("test")
    test = datamodule.splits["test"]
    methods = {r.path.split("/")[1] for r in test if r.label == 1}
    assert methods == {"Deepfakes", "FaceSwap"} and any(r.label == 0 for r in test)
    assert all("/c23/" in r.path for r in test)
    assert datamodule.index.dataset == "ffpp"
    pixels, _, _ = datamodule.predict_dataloader().dataset[0]
    assert tuple(pixels.shape[1:]) == (cfg.model.input.size, cfg.model.input.size, 3)
    other = compose_config("evaluate", [*overrides[:-2], "data.compression=c40"])
    c40 = hydra.utils.instantiate(other.data.index)  # the indexer the datamodule would build, no decoding
    assert c40.fingerprint() != datamodule.index.fingerprint()
