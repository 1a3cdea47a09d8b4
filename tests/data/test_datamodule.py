"""The data module composed from the real configs: generation, cache, splits, batches."""

from __future__ import annotations

import re

import pytest
import torch

from src.experiments.wiring import build_datamodule
from tests.conftest import SMALL_SYNTHETIC, compose_config, data_overrides


def _datamodule(tmp_path, model: str, extra: list[str] | None = None):
    overrides = [
        f"model={model}",
        f"data.root={tmp_path / 'root'}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.folds=2",
        *(f"+data.synthetic.{k}={v}" for k, v in SMALL_SYNTHETIC.items()),
        *(extra or []),
    ]
    return build_datamodule(compose_config("train", overrides))


@pytest.mark.slow  # generates its own set (~13 s); the session's set covers each step in the fast tier
def test_empty_folders_become_batches_for_frame_and_clip_models(tmp_path):
    """Done-when of the data issue: generate, cache, and batch for both kinds of model."""
    datamodule = _datamodule(tmp_path, "mesonet")
    datamodule.prepare_data()
    assert datamodule.build_report.summary()["built"] > 0
    assert (tmp_path / "root" / "List_of_testing_videos.txt").is_file()
    assert any((tmp_path / "cache").rglob("*.npy"))
    datamodule.setup("fit")
    x, labels, videos = datamodule.on_after_batch_transfer(next(iter(datamodule.train_dataloader())), 0)
    assert x.shape[1:] == (3, 256, 256) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0  # MesoNet takes [0, 1]
    assert set(labels.tolist()) <= {0.0, 1.0}
    train_labels = {r.label for r in datamodule.splits["train"]}
    assert train_labels == {0, 1}, "both classes must be present in training"

    # a second prepare on the same folders reuses everything
    again = _datamodule(tmp_path, "resnet_lstm", ["model.input.frames_per_clip=6"])
    again.prepare_data()
    summary = again.build_report.summary()
    assert summary["built"] == 0 and summary["reused"] == summary["videos"] > 0
    again.setup("fit")
    clips, labels, _ = again.on_after_batch_transfer(next(iter(again.train_dataloader())), 0)
    assert clips.shape[1:] == (6, 3, 224, 224)
    assert abs(float(clips.mean())) < 1.5  # ImageNet-normalized, not raw pixels
    assert set(labels.tolist()) <= {0.0, 1.0}


def test_eval_batches_are_whole_videos_and_splits_are_disjoint(small_dataset, small_cache):
    datamodule = build_datamodule(
        compose_config(
            "train",
            [
                f"data.root={small_dataset}",
                f"data.cache_dir={small_cache}",
                "data.folds=2",
                *(f"+data.synthetic.{k}={v}" for k, v in SMALL_SYNTHETIC.items()),
            ],
        )
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    splits = {name: {r.path for r in records} for name, records in datamodule.splits.items()}
    assert not splits["train"] & splits["val"] and not (splits["train"] | splits["val"]) & splits["test"]
    identities = [{r.identity for r in datamodule.splits[s]} for s in ("train", "val")]
    assert not identities[0] & identities[1]
    x, labels, videos = datamodule.on_after_batch_transfer(next(iter(datamodule.val_dataloader())), 0)
    assert x.shape[1:] == (datamodule.crops.frames_per_video, 3, 256, 256)
    assert len(videos) == len(labels) == x.shape[0]
    counts = datamodule.class_counts()
    assert counts["train_real"] > 0 and counts["train_fake"] > 0 and counts["test_fake"] > 0


def test_balanced_sampling_draws_both_classes_evenly(small_dataset, small_cache):
    datamodule = build_datamodule(
        compose_config(
            "train",
            [
                f"data.root={small_dataset}",
                f"data.cache_dir={small_cache}",
                "data.folds=2",
                "data.balanced_sampling=true",
                *(f"+data.synthetic.{k}={v}" for k, v in SMALL_SYNTHETIC.items()),
            ],
        )
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    torch.manual_seed(0)
    sampler = datamodule.train_dataloader().sampler
    labels = datamodule.train_dataset().item_labels()
    drawn = labels[[i for _ in range(20) for i in sampler]]
    assert abs(labels.mean() - 0.5) > 0.05, "the split is balanced already: the test proves nothing"
    assert 0.45 < drawn.mean() < 0.55


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.folds=1"], "data.folds=1"),
        (["data.fold=5"], "data.fold=5"),
        (["model=resnet_lstm", "model.input.frames_per_clip=30"], "frames_per_clip=30"),
        (["model.input.size=128"], "model.input.size=128"),
    ],
)
def test_clashing_values_fail_early_naming_them(overrides, message):
    from src.experiments.config import check_config

    with pytest.raises(ValueError, match=message):
        check_config(compose_config("train", overrides))


def test_a_data_root_holding_something_else_is_refused_and_generation_announces_itself(tmp_path, caplog):
    """A mistyped data.root is noticed: generation says where, how many videos and about how big before it
    starts, and a folder holding a Celeb-DF layout (or anything else) is never written into."""
    import logging

    from src.data.synthetic import announce_synthetic

    celebdf = tmp_path / "Celeb-DF-v2"
    (celebdf / "Celeb-real").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"holds a Celeb-DF dataset.*use data=celebdf"):
        announce_synthetic(celebdf, {"preset": "v2"})
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="neither the embedded synthetic set nor a Celeb-DF layout"):
        announce_synthetic(other, {"preset": "v2"})
    with caplog.at_level(logging.WARNING):
        announce_synthetic(tmp_path / "new", {"preset": "v2", "num_identities": 2})
    assert (
        "generating the embedded synthetic Celeb-DF" in caplog.text and str(tmp_path / "new") in caplog.text
    )
    assert " MB" in caplog.text and not (tmp_path / "new").exists()


# -- the settings objects the data module is composed from ---------------------------------------------------
BAD_SETTINGS = [  # (settings class name, field, bad value, the key users type)
    ("SplitSettings", "folds", 1, "data.folds"),
    ("SplitSettings", "fold", 7, "data.fold"),
    ("SplitSettings", "split_seed", "x", "data.split_seed"),
    ("SplitSettings", "identity_split", "loose", "data.identity_split"),
    ("CropSettings", "frames_per_video", 0, "data.frames_per_video"),
    ("CropSettings", "face_margin", 0, "data.face_margin"),
    ("CropSettings", "crop_size", 8, "data.crop_size"),
    ("CropSettings", "face_detector", "retina", "data.face_detector"),
    ("CropSettings", "detect_max_side", 0, "data.detect_max_side"),
    ("CropSettings", "detect_every", 0, "data.detect_every"),
    ("LoaderSettings", "batch_size", 0, "data.batch_size"),
    ("LoaderSettings", "num_workers", -1, "data.num_workers"),
    ("LoaderSettings", "build_workers", 0, "data.build_workers"),
    ("LoaderSettings", "balanced_sampling", "yes", "data.balanced_sampling"),
    ("LoaderSettings", "train_frames_per_video", 0, "data.train_frames_per_video"),
    ("LoaderSettings", "max_bad_fraction", 1.5, "data.max_bad_fraction"),
    ("InputContract", "kind", "audio", "model.input.kind"),
    ("InputContract", "size", 1.5, "model.input.size"),
    ("InputContract", "mean", [0.5, 0.5], "model.input.mean"),
    ("InputContract", "std", [0.5, 0.0, 0.5], "model.input.std"),
    ("InputContract", "frames_per_clip", 0, "model.input.frames_per_clip"),
]


def _settings_class(name: str):
    import src.data.settings as settings

    return getattr(settings, name)


@pytest.mark.parametrize(("group", "name", "value", "key"), BAD_SETTINGS, ids=[k for *_, k in BAD_SETTINGS])
def test_each_settings_object_refuses_a_bad_value_in_one_line_naming_the_users_key(group, name, value, key):
    settings_class = _settings_class(group)
    assert key.rpartition(".")[2] == name  # a field is named as the key users type
    settings_class()  # the defaults are valid
    with pytest.raises(ValueError, match=rf"{re.escape(key)}=") as error:
        settings_class(**{name: value})
    assert len(str(error.value).splitlines()) == 1


def test_every_settings_field_is_a_data_key_of_the_schema_and_every_schema_key_is_read():
    """The flat keys users type, the schema's fields and the settings objects' fields are one list."""
    from dataclasses import fields

    from src.data.settings import SETTINGS, DataConfig

    read = {f.name for group in SETTINGS.values() for f in fields(group)}
    dataset = {"_target_", "_recursive_", "name", "root", "index", "cache_dir"}  # data=synthetic adds its own
    assert read | dataset == {f.name for f in fields(DataConfig)} and not read & dataset


def test_a_bad_value_from_the_command_line_fails_when_the_module_is_built(tmp_path):
    from hydra.errors import InstantiationException

    with pytest.raises(InstantiationException) as error:
        build_datamodule(compose_config("train", [f"data.root={tmp_path}", "data.face_margin=-1"]))
    assert str(error.value.__cause__).startswith("data.face_margin=-1.0: must be a number > 0")


def test_build_datamodule_reads_each_setting_from_its_key(tmp_path):
    overrides = [
        "data=celebdf",
        f"data.root={tmp_path}",
        "data.folds=3",
        "data.fold=2",
        "data.split_seed=7",
        "data.identity_split=strict",
        "data.frames_per_video=12",
        "data.face_detector=haar",
        "data.face_margin=1.5",
        "data.crop_size=128",
        "data.detect_max_side=400",
        "data.detect_every=3",
        "data.batch_size=5",
        "data.num_workers=0",
        "data.build_workers=3",
        "data.balanced_sampling=true",
        "data.train_frames_per_video=null",
        "data.max_bad_fraction=0.5",
        "train_augment=strong",
        "seed=11",
        "model=xception",  # a net without a fixed input size
        "model.input.size=112",
    ]
    datamodule = build_datamodule(compose_config("train", overrides))
    assert (
        datamodule.split.folds,
        datamodule.split.fold,
        datamodule.split.split_seed,
        datamodule.split.identity_split,
    ) == (3, 2, 7, "strict")
    crops = datamodule.crops
    assert (
        crops.frames_per_video,
        crops.face_detector,
        crops.face_margin,
        crops.crop_size,
        crops.detect_max_side,
        crops.detect_every,
    ) == (12, "haar", 1.5, 128, 400, 3)
    assert datamodule.cache.settings is crops
    assert datamodule.loaders == _settings_class("LoaderSettings")(5, 0, 3, True, None, 0.5)
    assert datamodule.input.size == 112 and datamodule.input.kind == "frame"
    assert datamodule.train_augment["_target_"].endswith("strong") and datamodule.augment_seed == 11
    assert datamodule.test_augment is None  # training has no test-time perturbation
    evaluation = build_datamodule(compose_config("evaluate", [f"data.root={tmp_path}", "augment=flip"]))
    assert evaluation.test_augment["_target_"].endswith("flip") and evaluation.train_augment is None
    # the batch size is the model's unless data.batch_size says otherwise
    assert build_datamodule(compose_config("train", [f"data.root={tmp_path}"])).batch_size == 32
    assert (
        build_datamodule(compose_config("train", ["model=resnet_lstm", f"data.root={tmp_path}"])).batch_size
        == 4
    )


def test_the_module_uses_its_settings(small_dataset, small_cache):
    """What the loaders and datasets do comes from the settings the module was given."""
    cfg = compose_config("train", data_overrides(small_dataset, small_cache))
    datamodule = build_datamodule(cfg)
    arguments = {
        **datamodule.hparams,
        "batch_size": 3,
        "num_workers": 0,
        "train_frames_per_video": 2,
        "augment_seed": 5,
    }
    datamodule = type(datamodule)(**arguments)
    datamodule.prepare_data()
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    assert loader.batch_size == 3 and loader.num_workers == 0
    assert len(loader.dataset) == 2 * len(datamodule.splits["train"])
    val = datamodule.eval_dataset("val")
    assert val.seed == 5 and val.num_frames == datamodule.crops.frames_per_video


def test_checkpoint_hyperparameters_are_plain_data_that_rebuild_the_module(tmp_path):
    """Lightning stores `dict(datamodule.hparams)` in every checkpoint (checkpoint_connector.dump_checkpoint):
    plain data, loadable with weights_only=True, and enough to rebuild the module."""
    from src.data.datamodule import DeepfakeDataModule

    datamodule = build_datamodule(
        compose_config("evaluate", ["data=ffpp", f"data.root={tmp_path}", "augment=jpeg"])
    )
    torch.save({"datamodule_hyper_parameters": dict(datamodule.hparams)}, tmp_path / "x.ckpt")
    stored = torch.load(tmp_path / "x.ckpt", weights_only=True)["datamodule_hyper_parameters"]

    def plain(value):
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list | tuple):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, str | int | float | bool)

    assert plain(stored)
    assert set(stored) >= {"fold", "face_detector", "batch_size", "input_contract", "test_augment", "index"}
    assert stored["index"]["methods"] and stored["test_augment"]["_target_"].endswith("jpeg")
    rebuilt = DeepfakeDataModule(**stored)
    for group in ("split", "crops", "loaders", "input", "train_augment", "test_augment", "augment_seed"):
        assert getattr(rebuilt, group) == getattr(datamodule, group), group


def test_a_missing_root_and_a_subclass_target(tmp_path):
    from omegaconf.errors import MissingMandatoryValue

    with pytest.raises(MissingMandatoryValue, match=r"data\.root"):  # check_config says it in one line first
        build_datamodule(compose_config("train", ["data=celebdf"]))
    # benchmarks time the module through a subclass named by data._target_
    cfg = compose_config(
        "train",
        [
            "data=celebdf",
            f"data.root={tmp_path}",
            "data._target_=tests.data.test_datamodule.CountingDataModule",
        ],
    )
    assert type(build_datamodule(cfg)).__name__ == "CountingDataModule"


def _counting_module():
    from src.data.datamodule import DeepfakeDataModule

    class CountingDataModule(DeepfakeDataModule):
        pass

    return CountingDataModule


CountingDataModule = _counting_module()


@pytest.mark.parametrize(
    "overrides",
    [
        ["data.fold=two"],
        ["data.flod=1"],
        ["data.num_workers=[2]"],
        ["data=celebdf", "data.compression=c23"],
        ["data=ffpp", "data.methods=Deepfakes"],
    ],
    ids=["wrong type", "misspelt key", "list for an int", "another dataset's key", "a method, not a list"],
)
def test_the_data_schema_refuses_wrong_types_and_unknown_keys_at_composition(overrides):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match=re.escape(overrides[-1].split("=")[0])):
        compose_config("train", overrides)


def test_ffpp_composes_with_its_own_schema_and_keys():
    from omegaconf import OmegaConf

    from src.data.settings import DataConfig

    assert OmegaConf.get_type(compose_config("train", ["data=celebdf"]).data) is DataConfig
    assert OmegaConf.get_type(compose_config("train").data).__name__ == "SyntheticDataConfig"
    ffpp = compose_config("train", ["data=ffpp", "data.compression=c40", "data.methods=[FaceSwap]"]).data
    # FF++'s own keys are its indexer's parameters: generated, typed and defaulted from its signature
    assert (
        issubclass(OmegaConf.get_type(ffpp), DataConfig)
        and OmegaConf.get_type(ffpp).__name__ == "FfppDataConfig"
    )
    assert (ffpp.compression, list(ffpp.methods), ffpp.face_detector) == ("c40", ["FaceSwap"], "mtcnn")
