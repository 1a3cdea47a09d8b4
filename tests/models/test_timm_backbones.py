"""The timm detectors (model=xception, model=efficientnet_lstm): shapes, configs, input contract,
pretrained weights through timm (local file, cache, offline failure) and a short train.py run each."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import hydra
import mlflow
import pytest
import timm
import torch
from safetensors.torch import save_file

from src.models.module import DeepfakeDetector
from src.models.nets.timm_backbones import EfficientNetLSTM, TimmFrameDetector
from src.models.weights import IncompatibleWeights, WeightsNotFound
from tests.conftest import SMALL_SYNTHETIC, compose_config

NETS = {"xception": TimmFrameDetector, "efficientnet_lstm": EfficientNetLSTM}
TIMM_NAMES = {
    "xception": "legacy_xception.tf_in1k",
    "efficientnet_lstm": "efficientnet_b1.ra4_e3600_r240_in1k",
}


def _seeded_timm_state(model_name: str, seed: int = 7) -> dict[str, torch.Tensor]:
    """A full timm state dict (with its ImageNet head) whose every float tensor is random, buffers included,
    so that any tensor the loader skipped or took from elsewhere shows."""
    generator = torch.Generator().manual_seed(seed)
    state = timm.create_model(model_name, pretrained=False).state_dict()
    return {
        k: torch.randn(v.shape, generator=generator).abs() if v.is_floating_point() else v.clone()
        for k, v in state.items()
    }


def _assert_backbone_is(net, saved: dict[str, torch.Tensor]) -> None:
    backbone = net.backbone.state_dict()
    classifier = timm.get_pretrained_cfg(net.model_name).classifier
    assert set(saved) - set(backbone) == {f"{classifier}.weight", f"{classifier}.bias"}  # only the head
    for key, value in backbone.items():
        assert torch.equal(value, saved[key]), key


@pytest.fixture
def no_network(monkeypatch):
    """Every connection attempt fails at once, as on a machine without DNS or route to the hubs."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """timm's two caches (torch hub: TORCH_HOME, Hugging Face hub: HF_HOME) moved to empty folders."""
    import huggingface_hub.constants

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return {"torch": tmp_path / "torch" / "hub" / "checkpoints", "hf": tmp_path / "hf" / "hub"}


# -- architecture -------------------------------------------------------------------------------------
def test_xception_gives_one_logit_per_frame_at_299():
    net = TimmFrameDetector().eval()
    assert net.input_kind == "frame" and TimmFrameDetector.input_contract()["size"] == 299
    with torch.no_grad():
        out = net(torch.rand(2, 3, 299, 299))
    assert out.shape == (2,) and torch.isfinite(out).all()


def test_efficientnet_lstm_gives_one_logit_per_clip():
    net = EfficientNetLSTM().eval()
    assert net.input_kind == "clip" and net.lstm.hidden_size == 512 and net.lstm.input_size == 1280
    with torch.no_grad():
        out = net(torch.rand(2, 3, 3, 64, 64))
    assert out.shape == (2,) and torch.isfinite(out).all()


def test_frozen_backbone_keeps_its_batchnorm_statistics_and_gets_no_gradient():
    net = EfficientNetLSTM(freeze_backbone=True).train()
    assert not net.backbone.training and net.lstm.training
    before = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    net(torch.rand(2, 2, 3, 64, 64)).sum().backward()
    assert all(p.grad is None for p in net.backbone.parameters())
    assert net.head[0].weight.grad is not None
    assert all(torch.equal(v, before[k]) for k, v in net.backbone.state_dict().items())


# -- configs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NETS)
def test_real_config_instantiates_the_detector(name):
    cfg = compose_config("train", [f"model={name}"])
    module = hydra.utils.instantiate(cfg.model)
    assert isinstance(module, DeepfakeDetector) and isinstance(module.net, NETS[name])
    assert module.name == name and module.input_kind == cfg.model.input.kind == NETS[name].input_kind
    assert isinstance(hydra.utils.instantiate(cfg.model.net), NETS[name])


def test_freeze_backbone_reaches_the_lstm_net():
    cfg = compose_config("train", ["model=efficientnet_lstm", "model.net.freeze_backbone=true"])
    assert hydra.utils.instantiate(cfg.model.net).freeze_backbone
    assert cfg.model.input.frames_per_clip == 20 and cfg.model.input.kind == "clip"


@pytest.mark.parametrize("name", NETS)
def test_input_contract_is_timms_pretrained_cfg(name):
    """The size and normalization are those the pinned timm weights were trained with: read from timm's
    pretrained cfg, not written in the yaml."""
    cfg = compose_config("train", [f"model={name}"])
    assert cfg.model.net.model_name == TIMM_NAMES[name]
    pretrained = timm.get_pretrained_cfg(cfg.model.net.model_name)
    assert cfg.model.input.size == pretrained.input_size[-1]
    assert tuple(cfg.model.input.mean) == pytest.approx(pretrained.mean)
    assert tuple(cfg.model.input.std) == pytest.approx(pretrained.std)
    resolved = timm.data.resolve_data_config({}, model=hydra.utils.instantiate(cfg.model.net).backbone)
    assert resolved["input_size"][-1] == cfg.model.input.size and resolved["mean"] == pretrained.mean


def test_another_weights_tag_brings_its_own_input_contract():
    """model.net.model_name picks timm weights; the input contract follows them without a yaml edit."""
    cfg = compose_config("train", ["model=efficientnet_lstm", "model.net.model_name=efficientnet_b1.ft_in1k"])
    assert cfg.model.input.size == 224 and tuple(cfg.model.input.mean) == pytest.approx((0.485, 0.456, 0.406))
    module = hydra.utils.instantiate(cfg.model)  # the data module reads the contract from the module
    assert module.input_contract["size"] == 224 and module.input_contract["kind"] == "clip"


# -- pretrained weights -------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "suffix"), [("xception", ".safetensors"), ("efficientnet_lstm", ".pth")])
def test_pretrained_backbone_loads_strictly_from_a_local_file(name, suffix, tmp_path, no_network):
    saved = _seeded_timm_state(TIMM_NAMES[name])
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(saved, path)
    else:
        torch.save(saved, path)
    cfg = compose_config("train", [f"model={name}", "weights=pretrained", f"model.pretrained.file={path}"])
    module = hydra.utils.instantiate(cfg.model)
    head = {k: v.clone() for k, v in module.net.head.state_dict().items()}
    origin = hydra.utils.instantiate(cfg.weights)(
        module
    ).initial_weights  # as train.py and evaluate.py call it
    assert str(path) in origin and TIMM_NAMES[name] in origin
    _assert_backbone_is(module.net, saved)
    assert all(torch.equal(v, head[k]) for k, v in module.net.head.state_dict().items())


@pytest.mark.parametrize("name", NETS)
def test_pretrained_backbone_loads_from_timms_cache_without_network(name, empty_caches, no_network):
    model_name = TIMM_NAMES[name]
    saved = _seeded_timm_state(model_name, seed=3)
    pretrained = timm.get_pretrained_cfg(model_name)
    if pretrained.hf_hub_id:  # the Hugging Face cache layout: refs/main -> snapshots/<commit>/
        repo = empty_caches["hf"] / f"models--{pretrained.hf_hub_id.replace('/', '--')}"
        commit = "0" * 40
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
        save_file(saved, repo / "snapshots" / commit / "model.safetensors")
    else:  # the torch hub cache: checkpoints/<file name of the URL>
        empty_caches["torch"].mkdir(parents=True)
        torch.save(saved, empty_caches["torch"] / Path(pretrained.url).name)
    net = NETS[name]()
    origin = net.load_pretrained(compose_config("train", [f"model={name}"]).model.pretrained)
    assert "cached at" in origin
    _assert_backbone_is(net, saved)


@pytest.mark.parametrize("name", NETS)
def test_offline_without_cache_fails_fast_saying_what_to_provide(name, empty_caches, no_network):
    cfg = compose_config("train", [f"model={name}", "weights=pretrained"])
    module = hydra.utils.instantiate(cfg.model)
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match=TIMM_NAMES[name].replace(".", r"\.")) as error:
        hydra.utils.instantiate(cfg.weights)(module)
    assert time.perf_counter() - start < 5
    message = str(error.value)
    pretrained = timm.get_pretrained_cfg(TIMM_NAMES[name])
    assert (pretrained.hf_hub_id or pretrained.url) in message
    cache = empty_caches["hf"] if pretrained.hf_hub_id else empty_caches["torch"]
    assert str(cache) in message and ("HF_HOME" in message or "TORCH_HOME" in message)
    assert "model.pretrained.file=" in message


def test_hf_hub_offline_fails_without_trying_the_network(empty_caches, monkeypatch):
    import huggingface_hub.constants

    def no_connection_expected(*args, **kwargs):
        raise AssertionError("a connection was attempted although HF_HUB_OFFLINE is set")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(socket, "create_connection", no_connection_expected)
    with pytest.raises(FileNotFoundError, match="efficientnet_b1"):
        EfficientNetLSTM().load_pretrained(
            compose_config("train", ["model=efficientnet_lstm"]).model.pretrained
        )


def test_a_local_file_of_another_model_or_none_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file(timm.create_model("efficientnet_b1", pretrained=False).state_dict(), path)
    cfg = compose_config("train", ["model=xception", f"model.pretrained.file={path}"])
    with pytest.raises(IncompatibleWeights, match="other.safetensors"):
        TimmFrameDetector().load_pretrained(cfg.model.pretrained)
    cfg = compose_config("train", ["model=xception", f"model.pretrained.file={tmp_path / 'missing.pth'}"])
    with pytest.raises(WeightsNotFound, match="missing.pth"):
        TimmFrameDetector().load_pretrained(cfg.model.pretrained)


# -- train.py -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared_run_dirs(tmp_path_factory) -> dict[str, Path]:
    """One face-crop cache and one MLflow store for both training runs (a fresh store costs seconds)."""
    root = tmp_path_factory.mktemp("timm-train")
    return {"cache": root / "face-cache", "store": root / "mlflow.db", "checkpoints": root / "checkpoints"}


@pytest.mark.slow  # a full training run per timm model: make test-all
@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("xception", ["model.batch_size=4"]),
        ("efficientnet_lstm", ["model.input.frames_per_clip=4", "model.input.size=96"]),
    ],
)
def test_training_run_is_tracked_in_mlflow(name, overrides, small_dataset, shared_run_dirs, monkeypatch):
    """What `python train.py model=<name> weights=scratch` runs, in-process on the small dataset."""
    from src.experiments.train import train

    uri = f"sqlite:///{shared_run_dirs['store']}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = compose_config("train", [
        f"model={name}", "weights=scratch", *overrides,
        "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2", "data.frames_per_video=8",
        f"data.root={small_dataset}", f"data.cache_dir={shared_run_dirs['cache']}", "data.folds=2",
        *(f"+data.synthetic.{key}={value}" for key, value in SMALL_SYNTHETIC.items()),
        f"paths.checkpoint_dir={shared_run_dirs['checkpoints']}",
        "callbacks.model_checkpoint.save_last=false", "+callbacks.model_checkpoint.save_weights_only=true",
    ])  # fmt: skip
    metrics = train(cfg)
    assert "val/video_auc" in metrics
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("train")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.model = '{name}'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["weights"] == "scratch"
    assert "val/video_auc" in runs[0].data.metrics and "test/video_auc" in runs[0].data.metrics
