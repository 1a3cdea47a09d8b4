"""Weights are data, never code: published hashes checked, code-running pickles refused, origin recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.experiments.config import PROJECT_ROOT
from tests.conftest import RunsCode


def _resnet_cfg(*extra: str):
    from tests.conftest import compose_config

    return compose_config("evaluate", ["model=resnet_lstm", "weights=pretrained", *extra])


def compose_config_evaluate(model: str, *extra: str):
    from tests.conftest import compose_config

    return compose_config("evaluate", [f"model={model}", "weights=pretrained", *extra])


def test_a_code_running_pickle_in_torchvisions_cache_never_runs(tmp_path, monkeypatch):
    """The file torchvision's loader would have unpickled with weights_only=False: refused by its
    published hash (resnet50-0676ba61.pth) before anything reads it."""
    import hydra
    import torch
    from torchvision.models import ResNet50_Weights

    from src.models.weights import IncompatibleWeights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    marker = tmp_path / "pwned"
    cached = tmp_path / "torch" / "hub" / "checkpoints" / Path(ResNet50_Weights.IMAGENET1K_V1.url).name
    cached.parent.mkdir(parents=True)
    torch.save({"state_dict": RunsCode(marker)}, cached)
    cfg = _resnet_cfg()
    with pytest.raises(
        IncompatibleWeights, match=r"resnet50-0676ba61\.pth: SHA-256 .* does not match the published 0676ba61"
    ):
        hydra.utils.instantiate(cfg.weights)(hydra.utils.instantiate(cfg.model))
    assert not marker.exists(), "the cached torchvision file ran its code"


@pytest.mark.parametrize("model", ["resnet_lstm", "xception"])
def test_a_code_running_pickle_given_as_a_weights_file_is_refused_as_data(model, tmp_path):
    import hydra
    import torch

    from src.models.weights import IncompatibleWeights

    marker, evil = tmp_path / "pwned", tmp_path / "evil.pth"
    torch.save({"conv1.weight": RunsCode(marker)}, evil)
    cfg = compose_config_evaluate(model, f"model.pretrained.file={evil}")
    with pytest.raises(IncompatibleWeights):
        hydra.utils.instantiate(cfg.weights)(hydra.utils.instantiate(cfg.model))
    assert not marker.exists(), f"{model}: the weights file ran its code"


def test_a_mesonet_download_that_does_not_match_the_original_is_never_used(tmp_path, monkeypatch):
    """A download (here a local file:// URL standing in for GitHub) lands only when its SHA-256 is the
    original's; a stalled or substituted transfer leaves nothing behind in the weights folder."""
    from src.models.nets.mesonet import ORIGINAL_SHA256
    from src.models.weights import IncompatibleWeights, fetch_keras_weights

    fake = tmp_path / "MesoInception_DF.h5"
    fake.write_bytes(b"not the original")
    weights_dir = tmp_path / "weights"
    with pytest.raises(IncompatibleWeights, match="does not match the published"):
        fetch_keras_weights(
            "MesoInception_DF.h5", fake.as_uri(), weights_dir, ORIGINAL_SHA256["MesoInception_DF.h5"]
        )
    assert not weights_dir.exists() or not any(weights_dir.iterdir()), list(weights_dir.iterdir())
    shared = PROJECT_ROOT.parent / "shared" / "mesonet" / "weights" / "MesoInception_DF.h5"
    if shared.is_file():
        path = fetch_keras_weights(
            "MesoInception_DF.h5", shared.as_uri(), weights_dir, ORIGINAL_SHA256["MesoInception_DF.h5"]
        )
        assert path.read_bytes() == shared.read_bytes()


def test_initial_weights_record_the_file_and_its_sha256(tmp_path, monkeypatch):
    import hashlib

    import hydra
    import torch
    from torchvision.models import resnet50

    own = tmp_path / "my-resnet50.pth"
    torch.save(resnet50(weights=None).state_dict(), own)
    cfg = _resnet_cfg(f"model.pretrained.file={own}")
    origin = hydra.utils.instantiate(cfg.weights)(hydra.utils.instantiate(cfg.model)).initial_weights
    assert origin == f"{own} sha256={hashlib.sha256(own.read_bytes()).hexdigest()}"
