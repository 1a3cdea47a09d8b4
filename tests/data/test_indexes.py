"""DFDC, DFDC-preview, DeepFakeDetection and UADFV: their indexers on tiny trees of empty files in the real
layouts, their `data=<name>` configs, the synthetic set arranged in each layout, and one evaluation end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import hydra
import pytest

from src.data.datamodule import DeepfakeDataModule
from src.data.indexes.catalog import DATASET_TITLES
from src.data.indexes.celebdf import VideoIndex, fold_groups, split_folds
from src.data.indexes.dfd import index_dfd
from src.data.indexes.dfdc import index_dfdc
from src.data.indexes.dfdcp import index_dfdcp
from src.data.indexes.uadfv import index_uadfv
from src.experiments.config import CONFIG_DIR
from tests.conftest import compose_config

NEW = ("dfdc", "dfdcp", "dfd", "uadfv")


def touch(root: Path, *paths: str) -> None:
    for rel in paths:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).touch()


def reasons(index: VideoIndex) -> dict[str, str]:
    return dict(index.skipped)


def folds_keep_groups_whole(index: VideoIndex, folds: int = 2) -> None:
    for fold in range(folds):
        train, val = split_folds(index.train_val(), folds, fold)
        assert train and val and not {r.identity for r in train} & {r.identity for r in val}


# --- DFDC -------------------------------------------------------------------------------------------------
def make_dfdc(root: Path, parts: int = 2) -> None:
    """Per part: two originals and a fake of each; the test set: two real and two fake videos."""
    for p in range(parts):
        part = f"dfdc_train_part_{p}"
        metadata = {}
        for k in range(2):
            real, fake = f"real{p}{k}.mp4", f"fake{p}{k}.mp4"
            metadata[real] = {"label": "REAL", "split": "train", "original": None}
            metadata[fake] = {"label": "FAKE", "split": "train", "original": real}
            touch(root / part, real, fake)
        (root / part / "metadata.json").write_text(json.dumps(metadata))
    touch(root / "test", "t0.mp4", "t1.mp4", "t2.mp4", "t3.mp4")
    (root / "test" / "labels.csv").write_text("filename,label\nt0.mp4,0\nt1.mp4,1\nt2.mp4,0\nt3.mp4,1\n")


def test_dfdc_labels_groups_and_official_test_set(tmp_path):
    make_dfdc(tmp_path)
    index = index_dfdc(tmp_path)
    records = {r.path: r for r in index.records}
    assert index.dataset == "dfdc" and not index.test_only and index.skipped == []
    fake = records["dfdc_train_part_1/fake10.mp4"]
    assert (fake.label, fake.identity, fake.source, fake.is_test) == (1, "real10", "dfdc_train_part_1", False)
    assert records["dfdc_train_part_1/real10.mp4"].identity == "real10"  # a fake is grouped with its original
    assert {r.path: r.label for r in index.test()} == {f"test/t{k}.mp4": k % 2 for k in range(4)}
    assert index.class_counts(index.train_val()) == {"real": 4, "fake": 4}
    folds_keep_groups_whole(index)


def test_dfdc_skips_what_it_cannot_label_and_says_why(tmp_path):
    make_dfdc(tmp_path)
    part = tmp_path / "dfdc_train_part_0"
    metadata = json.loads((part / "metadata.json").read_text())
    metadata["gone.mp4"] = {"label": "REAL", "split": "train", "original": None}
    metadata["odd.mp4"] = {"label": "MAYBE", "split": "train", "original": None}
    metadata["orphan.mp4"] = {"label": "FAKE", "split": "train", "original": None}
    metadata["../escape.mp4"] = {"label": "REAL", "split": "train", "original": None}
    metadata["listed.mp4"] = {"label": ["FAKE"], "split": "train", "original": "real00.mp4"}
    (part / "metadata.json").write_text(json.dumps(metadata))
    touch(part, "odd.mp4", "orphan.mp4", "listed.mp4", "stray.mp4")
    touch(tmp_path / "test", "unlisted.mp4", "t9.mp4")
    with (tmp_path / "test" / "labels.csv").open("a") as labels:
        labels.write("t0.mp4,1\nt9.mp4,2\nmissing.mp4,1\n\n")
    touch(tmp_path / "dfdc_train_part_7", "lost.mp4")  # a part without its metadata
    index = index_dfdc(tmp_path)
    why = reasons(index)
    meta = "dfdc_train_part_0/metadata.json: "
    assert "listed but not found" in why[f"{meta}'gone.mp4'"]
    assert "label 'MAYBE' is not REAL or FAKE" in why[f"{meta}'odd.mp4'"]
    assert "a FAKE needs its original" in why[f"{meta}'orphan.mp4'"]
    assert "not a plain <file>.mp4 name" in why[f"{meta}'../escape.mp4'"]
    assert "label ['FAKE'] is not REAL or FAKE" in why[f"{meta}'listed.mp4'"]
    assert why["dfdc_train_part_0/stray.mp4"] == "not listed in dfdc_train_part_0/metadata.json"
    assert why["test/labels.csv:6: 't0.mp4,1'"] == "duplicate of line 2"
    assert "malformed line" in why["test/labels.csv:7: 't9.mp4,2'"]
    assert "listed but not found" in why["test/labels.csv:8: 'missing.mp4,1'"]
    assert why["test/unlisted.mp4"] == "not listed in test/labels.csv"
    assert "no metadata.json" in why["dfdc_train_part_7"]
    assert len(index.skipped) == 11  # t9.mp4 is reported by its line only
    assert index.class_counts() == {"real": 6, "fake": 6}  # nothing else changed


def test_dfdc_without_training_parts_is_test_only(tmp_path):
    make_dfdc(tmp_path, parts=0)
    index = index_dfdc(tmp_path)
    assert index.test_only and not index.train_val() and len(index.test()) == 4


def test_dfdc_fingerprint_follows_the_metadata_and_labels(tmp_path):
    make_dfdc(tmp_path)
    before = index_dfdc(tmp_path).fingerprint()
    (tmp_path / "test" / "labels.csv").write_text("filename,label\nt0.mp4,0\nt1.mp4,1\n")
    after_labels = index_dfdc(tmp_path).fingerprint()
    metadata = tmp_path / "dfdc_train_part_0" / "metadata.json"
    metadata.write_text(metadata.read_text().replace('"train"', '"train" ', 1))
    assert len({before, after_labels, index_dfdc(tmp_path).fingerprint()}) == 3


@pytest.mark.parametrize(
    ("damage", "error", "message"),
    [
        (
            lambda r: shutil.rmtree(r / "test"),
            FileNotFoundError,
            r"DFDC test labels not found: .*labels\.csv",
        ),
        (
            lambda r: (r / "test" / "labels.csv").write_text("name,fake\nt0.mp4,0\n"),
            ValueError,
            r"labels\.csv: header is name,fake; expected filename,label \(1 = fake\)",
        ),
        (
            lambda r: (r / "dfdc_train_part_1" / "metadata.json").write_text('{"a.mp4": '),
            ValueError,
            r"cannot read .*dfdc_train_part_1.metadata\.json: .*expected \{",
        ),
        (
            lambda r: (r / "dfdc_train_part_1" / "metadata.json").write_text("[]"),
            ValueError,
            r"metadata\.json holds a JSON list, not an object",
        ),
    ],
    ids=["no-test-set", "bad-header", "broken-json", "json-list"],
)
def test_dfdc_errors_name_the_file(tmp_path, damage, error, message):
    make_dfdc(tmp_path)
    damage(tmp_path)
    with pytest.raises(error, match=message):
        index_dfdc(tmp_path)


# --- DFDC-preview -----------------------------------------------------------------------------------------
def make_dfdcp(root: Path) -> dict:
    """Four people (1 and 2 in test), each with a real video and one fake per method."""
    listing = {}
    for person in ("100", "101", "102", "103"):
        split = "test" if person in ("101", "102") else "train"
        listing[f"original_videos/{person}/{person}_0.mp4"] = {"label": "real", "set": split}
        for method in "AB":
            rel = f"method_{method}/{person}/{person}_{method}/9_{person}_{method}_0.mp4"
            listing[rel] = {"label": "fake", "set": split, "augmentations": {}}
    touch(root, *listing)
    (root / "dataset.json").write_text(json.dumps(listing))
    return listing


def test_dfdcp_labels_methods_people_and_official_split(tmp_path):
    make_dfdcp(tmp_path)
    index = index_dfdcp(tmp_path)
    assert index.dataset == "dfdcp" and index.skipped == []
    by_path = {r.path: r for r in index.records}
    fake = by_path["method_B/103/103_B/9_103_B_0.mp4"]
    assert (fake.label, fake.identity, fake.source, fake.is_test) == (1, "103", "method_B", False)
    assert by_path["original_videos/101/101_0.mp4"].source == "original_videos"
    assert {r.identity for r in index.test()} == {"101", "102"}
    assert {r.identity for r in index.train_val()} == {"100", "103"}
    assert index.class_counts(index.test()) == {"real": 2, "fake": 4}
    folds_keep_groups_whole(index)


def test_dfdcp_skips_contradictions_missing_and_unlisted_videos(tmp_path):
    listing = make_dfdcp(tmp_path)
    listing["original_videos/100/100_1.mp4"] = {"label": "fake", "set": "train"}  # real folder, fake label
    listing["original_videos/100/100_2.mp4"] = {"label": "real", "set": "val"}
    listing["original_videos/100/gone.mp4"] = {"label": "real", "set": "train"}
    listing["elsewhere/100/x.mp4"] = {"label": "real", "set": "train"}
    listing["/abs/100/x.mp4"] = {"label": "real", "set": "train"}
    listing["original_videos/100/100_3.mp4"] = "real"
    listing["original_videos/100/100_4.mp4"] = {"label": ["real"], "set": "train"}
    touch(tmp_path, "original_videos/100/100_1.mp4", "original_videos/100/100_2.mp4", "method_A/x/y/new.mp4")
    (tmp_path / "dataset.json").write_text(json.dumps(listing))
    why = reasons(index_dfdcp(tmp_path))
    at = "dataset.json: "
    assert (
        why[f"{at}'original_videos/100/100_1.mp4'"] == "label 'fake' contradicts its folder original_videos"
    )
    assert why[f"{at}'original_videos/100/100_2.mp4'"] == "set 'val' is not train or test"
    assert "listed but not found" in why[f"{at}'original_videos/100/gone.mp4'"]
    assert "not under original_videos/<id>/ or method_<X>/<id>/" in why[f"{at}'elsewhere/100/x.mp4'"]
    assert "not a relative" in why[f"{at}'/abs/100/x.mp4'"]
    assert "label None is not real or fake" in why[f"{at}'original_videos/100/100_3.mp4'"]
    assert "label ['real'] is not real or fake" in why[f"{at}'original_videos/100/100_4.mp4'"]
    assert why["method_A/x/y/new.mp4"] == "not listed in dataset.json"
    assert len(why) == 8


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        (None, FileNotFoundError, r"DFDC-preview dataset\.json not found: .*dataset\.json; expected"),
        ("{", ValueError, r"cannot read .*dataset\.json: .*expected \{"),
        ('["a.mp4"]', ValueError, r"dataset\.json holds a JSON list, not an object"),
    ],
)
def test_dfdcp_errors_name_the_file(tmp_path, content, error, message):
    make_dfdcp(tmp_path)
    if content is None:
        (tmp_path / "dataset.json").unlink()
    else:
        (tmp_path / "dataset.json").write_text(content)
    with pytest.raises(error, match=message):
        index_dfdcp(tmp_path)


# --- DeepFakeDetection ------------------------------------------------------------------------------------
ACTORS_C23 = "original_sequences/actors/c23/videos"
DFD_C23 = "manipulated_sequences/DeepFakeDetection/c23/videos"


def make_dfd(root: Path) -> None:
    """Five actors, two scenes each, and one fake per scene with the next actor's face."""
    for a in range(1, 6):
        for scene in ("walking", "kitchen_pan"):
            touch(root / ACTORS_C23, f"{a:02d}__{scene}.mp4")
            touch(root / DFD_C23, f"{a:02d}_{a % 5 + 1:02d}__{scene}__X{a}Y{len(scene)}Z.mp4")


def test_dfd_is_test_only_by_default_with_actors_as_identities(tmp_path):
    make_dfd(tmp_path)
    index = index_dfd(tmp_path)
    assert index.dataset == "dfd" and index.test_only and not index.train_val() and index.skipped == []
    assert index.class_counts(index.test()) == {"real": 10, "fake": 10}
    fake = next(r for r in index.records if r.path == f"{DFD_C23}/02_03__walking__X2Y7Z.mp4")
    assert (fake.label, fake.identity, fake.identities, fake.source) == (
        1,
        "02",
        ("02", "03"),
        "DeepFakeDetection",
    )
    real = next(r for r in index.records if r.path == f"{ACTORS_C23}/02__kitchen_pan.mp4")
    assert (real.label, real.identity, real.source) == (0, "02", "actors")


def test_dfd_test_fraction_holds_out_actors_and_folds_the_rest(tmp_path):
    make_dfd(tmp_path)
    index = index_dfd(tmp_path, test_fraction=0.4)
    test_actors = {r.identity for r in index.test()}
    assert len(test_actors) == 2 and not index.test_only
    assert not test_actors & {r.identity for r in index.train_val()}
    assert index_dfd(tmp_path, test_fraction=0.4).fingerprint() == index.fingerprint()
    assert index_dfd(tmp_path).fingerprint() != index.fingerprint()
    folds_keep_groups_whole(index)
    # strict joins the actors a fake links (two of the three train/val actors are neighbours in the chain)
    strict, official = (set(fold_groups(index.train_val(), how).values()) for how in ("strict", "official"))
    assert len(strict) < len(official) == 3


def test_dfd_skips_stray_files_and_refuses_bad_settings(tmp_path):
    make_dfd(tmp_path)
    touch(tmp_path / DFD_C23, "01_02__walking.mp4", "notes.txt")
    why = reasons(index_dfd(tmp_path))
    assert "does not match <AA>_<BB>__<scene>__<code>.mp4" in why[f"{DFD_C23}/01_02__walking.mp4"]
    assert len(why) == 2
    with pytest.raises(ValueError, match=r"unknown data.compression='c30'; valid values: raw, c23, c40"):
        index_dfd(tmp_path, compression="c30")
    for bad in (0, 1.5, "half"):
        with pytest.raises(ValueError, match=r"data.test_fraction=.* must be in \(0, 1\]"):
            index_dfd(tmp_path, test_fraction=bad)
    with pytest.raises(FileNotFoundError, match=r"DeepFakeDetection folder missing: .*actors.c40.videos"):
        index_dfd(tmp_path, compression="c40")
    with pytest.raises(FileNotFoundError, match=r"DeepFakeDetection root not found: .*nowhere; expected"):
        index_dfd(tmp_path / "nowhere")


# --- UADFV ------------------------------------------------------------------------------------------------
def test_uadfv_pairs_every_fake_with_its_real_video_all_in_test(tmp_path):
    touch(tmp_path, *(f"real/{n:04d}.mp4" for n in range(3)), *(f"fake/{n:04d}_fake.mp4" for n in range(3)))
    touch(tmp_path, "real/0000_fake.mp4", "fake/0001.mp4", "fake/Thumbs.db")
    index = index_uadfv(tmp_path)
    assert index.dataset == "uadfv" and index.test_only and not index.train_val()
    assert {(r.path, r.label, r.identity, r.source) for r in index.test()} == {
        *((f"real/{n:04d}.mp4", 0, f"{n:04d}", "real") for n in range(3)),
        *((f"fake/{n:04d}_fake.mp4", 1, f"{n:04d}", "fake") for n in range(3)),
    }
    why = reasons(index)
    assert "does not match <n>.mp4" in why["real/0000_fake.mp4"]
    assert "does not match <n>_fake.mp4" in why["fake/0001.mp4"] and len(why) == 3


def test_uadfv_wrong_root(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"UADFV root not found: .*nowhere; expected a UADFV folder"):
        index_uadfv(tmp_path / "nowhere")
    touch(tmp_path, "real/0000.mp4")
    with pytest.raises(FileNotFoundError, match=r"UADFV folder missing: .*fake; expected"):
        index_uadfv(tmp_path)


# --- the configs ------------------------------------------------------------------------------------------
def make_uadfv(root: Path) -> None:
    touch(root, "real/0000.mp4", "real/0001.mp4", "fake/0000_fake.mp4", "fake/0001_fake.mp4")


MAKERS = {"dfdc": make_dfdc, "dfdcp": make_dfdcp, "dfd": make_dfd, "uadfv": make_uadfv}


@pytest.mark.parametrize("name", NEW)
def test_each_yaml_composes_builds_its_datamodule_and_its_indexer(name, tmp_path):
    MAKERS[name](tmp_path)
    cfg = compose_config(
        "evaluate", [f"data={name}", f"data.root={tmp_path}", f"paths.data_dir={tmp_path}/d"]
    )
    datamodule = hydra.utils.instantiate(cfg.data)
    assert isinstance(datamodule, DeepfakeDataModule) and datamodule.hparams.name == name
    index = hydra.utils.instantiate(cfg.data.index)  # what the datamodule indexes with
    assert index.dataset == name and index.test() and index.root == tmp_path
    assert name in DATASET_TITLES
    text = (CONFIG_DIR / "data" / f"{name}.yaml").read_text().lower()
    assert "test-only" in text or "official split" in text  # each YAML states its protocol


def test_every_data_config_has_a_title():
    assert {p.stem for p in (CONFIG_DIR / "data").glob("*.yaml")} <= set(DATASET_TITLES)


def test_dfd_keys_reach_the_indexer_and_are_typed(tmp_path):
    make_dfd(tmp_path)
    base = ["data=dfd", f"data.root={tmp_path}"]
    index = hydra.utils.instantiate(compose_config("train", [*base, "data.test_fraction=0.4"]).data.index)
    assert index.train_val() and not index.test_only
    (tmp_path / "original_sequences/actors/c40/videos").mkdir(parents=True)
    with pytest.raises(Exception, match="DeepFakeDetection folder missing: .*c40"):
        hydra.utils.instantiate(compose_config("train", [*base, "data.compression=c40"]).data.index)
    with pytest.raises(Exception, match="test_fraction"):  # the schema refuses it while composing
        compose_config("train", [*base, "data.test_fraction=half"])


@pytest.mark.parametrize("name", ["uadfv", "dfd"])
def test_a_test_only_dataset_sets_up_for_testing_and_refuses_training(name, tmp_path, monkeypatch):
    """The data module folds nothing for a test-only index: the test stage works, fit fails in one line.
    (The cache is stubbed: these files are empty; the slow test below does it with real videos.)"""
    from src.data.cache import BuildReport, VideoReport
    from src.experiments.wiring import build_datamodule

    MAKERS[name](tmp_path)
    datamodule = build_datamodule(compose_config("train", [f"data={name}", f"data.root={tmp_path}"]))
    built = lambda paths, workers, **_: BuildReport([VideoReport(str(p), True, num_frames=8) for p in paths])  # noqa: E731
    monkeypatch.setattr(datamodule.cache, "build", built)
    monkeypatch.setattr(datamodule.cache, "entry", lambda path, key=None: None)
    datamodule.prepare_data()
    datamodule.setup("test")
    assert datamodule.splits["train"] == datamodule.splits["val"] == [] and datamodule.splits["test"]
    title = DATASET_TITLES[name]
    with pytest.raises(
        ValueError, match=rf"^{title} \(.*\) is test-only: it has no train videos; evaluate on it"
    ):
        datamodule.setup("fit")


# --- the synthetic set in each layout, and one evaluation end to end ---------------------------------------
@pytest.fixture(scope="module")
def layouts(small_dataset, tmp_path_factory) -> dict[str, Path]:
    from src.data.synthetic.layouts import LAYOUTS

    base = tmp_path_factory.mktemp("layouts")
    return {name: LAYOUTS[name](small_dataset, base / name) for name in NEW}


def test_the_synthetic_set_in_each_layout_keeps_labels_and_test_videos(layouts, small_dataset):
    from src.data.indexes.celebdf import index_celebdf

    celebdf = index_celebdf(small_dataset)
    indexers = {"dfdc": index_dfdc, "dfdcp": index_dfdcp, "dfd": index_dfd, "uadfv": index_uadfv}
    indexes = {name: indexers[name](root) for name, root in layouts.items()}
    assert all(index.skipped == [] for index in indexes.values())
    for name in ("dfdc", "dfdcp"):  # official splits: the Celeb-DF test list, the same videos
        index = indexes[name]
        assert index.class_counts(index.test()) == celebdf.class_counts(celebdf.test())
        assert index.class_counts(index.train_val()) == celebdf.class_counts(celebdf.train_val())
        folds_keep_groups_whole(index)
    assert indexes["dfd"].class_counts() == celebdf.class_counts() and indexes["dfd"].test_only
    pairs = indexes["uadfv"].class_counts()
    assert pairs["real"] == pairs["fake"] == celebdf.class_counts()["fake"] // 2  # two fakes per real video
    # a DFDC fake's original is the real video it was made on: same inode, same group
    dfdc = indexes["dfdc"]
    fake = next(r for r in dfdc.train_val() if r.label == 1)
    assert (layouts["dfdc"] / fake.path.rsplit("/", 1)[0] / f"{fake.identity}.mp4").is_file()


@pytest.mark.slow  # 34-60 s on 2 shared cores: 16 videos' face crops built (about 25 s), then scored
def test_evaluate_on_a_test_only_layout_and_training_refused(layouts, small_cache, tmp_path):
    """`evaluate.py data=uadfv` scores the whole set; asking the same data module to train fails in one line."""
    import csv

    from src.experiments.evaluate import evaluate
    from src.experiments.wiring import build_datamodule

    overrides = [
        "data=uadfv",
        f"data.root={layouts['uadfv']}",
        f"data.cache_dir={small_cache}",
        "data.face_detector=haar",  # the synthetic faces are drawn for it (conf/data/synthetic.yaml)
        "weights=scratch",
        "logger=csv",
        f"logger.save_dir={tmp_path}/logs",
    ]
    metrics = evaluate(compose_config("evaluate", overrides))
    assert metrics["data/scored_videos"] == 16 and 0 <= metrics["test/video_auc"] <= 1
    (folder,) = (tmp_path / "logs" / "evaluate").iterdir()
    rows = list(csv.DictReader((folder / "video_scores.csv").open()))
    assert {row["path"].split("/")[0] for row in rows} == {"real", "fake"}
    datamodule = build_datamodule(compose_config("train", overrides[:4]))
    datamodule.prepare_data()  # the crops are cached already
    with pytest.raises(
        ValueError, match=r"^UADFV \(.*\) is test-only: it has no train videos; evaluate on it"
    ):
        datamodule.setup("fit")
