"""Every option of every config group composes in-process with the real configs, and what it builds builds:
a plug-in that breaks fails here in seconds, not in a subprocess minutes later."""

from __future__ import annotations

import hydra
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from src.data.datamodule import build_datamodule
from src.experiments.config import CONFIG_DIR, check_config
from tests.conftest import compose_config

GROUPS = ("data", "model", "weights", "augment", "train_augment", "trainer", "logger", "callbacks", "experiment")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


CASES = [(group, option) for group in GROUPS for option in _options(group)]


@pytest.mark.parametrize("group, option", CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_every_group_option_composes_and_passes_the_config_checks(group, option, tmp_path):
    overrides = [f"{group}={option}", f"paths.data_dir={tmp_path}"]
    if option in ("celebdf", "ffpp"):
        overrides.append(f"data.root={tmp_path}/dataset")
    for name in ("train", "evaluate"):
        if group == "callbacks" and name == "evaluate":
            continue
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(name, overrides=overrides, return_hydra_config=True)
        assert cfg.hydra.callbacks.prepare_sweep._target_.endswith("PrepareSweep")
        if group != "experiment":
            check_config(cfg)


@pytest.mark.parametrize("option", _options("augment"))
def test_every_perturbation_builds_its_transform_with_title_and_axis(option):
    cfg = compose_config("evaluate", [f"augment={option}"])
    transform = hydra.utils.instantiate(cfg.augment.transform)(size=64)
    out = transform(images=np.zeros((2, 80, 80, 3), np.uint8))["images"]
    assert np.asarray(out).shape == (2, 64, 64, 3)
    assert cfg.augment.title and isinstance(cfg.augment.axis, int)


@pytest.mark.parametrize("option", _options("weights"))
def test_every_weight_source_is_an_object_hydra_builds(option):
    cfg = compose_config("evaluate", [f"weights={option}"])
    source = hydra.utils.instantiate(cfg.weights)
    assert callable(source) and source.name == option


@pytest.mark.parametrize("option", _options("data"))
def test_every_dataset_builds_its_datamodule_without_touching_data(option, tmp_path):
    overrides = [f"data={option}", f"paths.data_dir={tmp_path}/data"]
    if option in ("celebdf", "ffpp"):
        with pytest.raises(Exception, match="root not found"):  # a missing root fails before any run starts
            build_datamodule(compose_config("train", [*overrides, f"data.root={tmp_path}/missing"]).data)
        (tmp_path / "dataset").mkdir()
        overrides.append(f"data.root={tmp_path}/dataset")
    datamodule = build_datamodule(compose_config("train", overrides).data)
    assert datamodule.hparams.name == option
    assert not (tmp_path / "data").exists(), "building the datamodule generated or cached something"
    assert not (tmp_path / "dataset").exists() or not any((tmp_path / "dataset").iterdir())


def test_a_misspelt_data_key_is_refused_naming_it():
    cfg = compose_config("train", ["+data.fols=3"])
    with pytest.raises(Exception, match=r"unknown key data\.fols"):
        build_datamodule(cfg.data)


def test_the_tracking_uri_is_defined_once():
    from src.experiments.config import PROJECT_ROOT
    from src.experiments.tracking import default_tracking_uri

    text = "".join(p.read_text() for p in CONFIG_DIR.rglob("*.yaml"))
    assert text.count("oc.env:MLFLOW_TRACKING_URI") == 1
    assert "sqlite:///" not in (PROJECT_ROOT / "Makefile").read_text()
    assert default_tracking_uri() == compose_config("train").paths.tracking_uri
