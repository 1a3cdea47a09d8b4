"""ResNetLSTM, the DeepfakeDetector module, its metrics, and the weight sources."""

from __future__ import annotations

import pickle

import hydra
import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from src.models.metrics import detection_metrics
from src.models.nets.resnet_lstm import ResNetLSTM
from src.models.weights import IncompatibleWeights, WeightsNotFound, load_checkpoint, torchvision_state_dict
from tests.conftest import compose_config


def test_resnet_lstm_parameters_and_clip_output():
    net = ResNetLSTM()
    assert sum(p.numel() for p in net.parameters()) == 25_118_145
    net.eval()
    with torch.no_grad():
        assert net(torch.rand(2, 3, 3, 64, 64)).shape == (2,)


def test_frozen_backbone_trains_only_the_head_and_keeps_its_statistics():
    net = ResNetLSTM(freeze_backbone=True).train()
    trainable = {n.split(".")[0] for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"reduce", "lstm", "head"}
    before = net.backbone[1].running_mean.clone()
    net(torch.rand(1, 2, 3, 64, 64))
    assert torch.equal(before, net.backbone[1].running_mean)
    assert not net.backbone.training


@pytest.mark.parametrize("model", ["mesonet", "meso4", "resnet_lstm"])
def test_composed_model_config_gives_the_module_and_the_bare_net(model):
    cfg = compose_config("train", [f"model={model}"])
    module = hydra.utils.instantiate(cfg.model)
    net = hydra.utils.instantiate(cfg.model.net)
    assert type(module.net) is type(net)
    assert module.input_kind == cfg.model.input.kind
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["lr"] == pytest.approx(1e-4)


def test_the_module_keeps_every_argument_it_takes():
    """The weights block next to the input contract (weights=pretrained reads it from the module), and the
    batch size under Lightning's name; freezing is the backbone nets' own argument."""
    cfg = compose_config(
        "train", ["model=resnet_lstm", "model.batch_size=3", "model.net.freeze_backbone=true"]
    )
    module = hydra.utils.instantiate(cfg.model)
    assert (
        module.pretrained_cfg["torchvision_weights"] == "IMAGENET1K_V1"
        and module.input_contract["size"] == 224
    )
    assert module.batch_size == 3 and module.net.freeze_backbone
    assert "freeze_backbone" not in cfg.model


def test_frame_model_scores_a_video_by_its_mean_frame_probability():
    module = hydra.utils.instantiate(compose_config("train", ["model=meso4"]).model).eval()
    videos = torch.rand(2, 5, 3, 256, 256)
    with torch.no_grad():
        video_probs, frame_probs = module.video_scores(videos)
        single = torch.sigmoid(module(videos[1]))
    assert frame_probs.shape == (2, 5) and video_probs.shape == (2,)
    torch.testing.assert_close(frame_probs[1], single)
    torch.testing.assert_close(video_probs, frame_probs.mean(1))


def test_metrics_match_an_independent_computation():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    probs = np.clip(labels * 0.3 + rng.random(200) * 0.7, 1e-4, 1 - 1e-4)
    values = detection_metrics("test/video_")(torch.tensor(probs, dtype=torch.float32), torch.tensor(labels))
    assert float(values["test/video_auc"]) == pytest.approx(roc_auc_score(labels, probs), abs=1e-5)
    assert float(values["test/video_ap"]) == pytest.approx(average_precision_score(labels, probs), abs=1e-5)
    assert float(values["test/video_acc"]) == pytest.approx(((probs > 0.5) == labels).mean(), abs=1e-6)
    loss = -np.mean(labels * np.log(probs) + (1 - labels) * np.log(1 - probs))
    assert float(values["test/video_loss"]) == pytest.approx(loss, rel=1e-4)
    assert float(values["test/video_eer"]) == pytest.approx(eer_by_root_finding(labels, probs), abs=1e-6)


def test_auc_then_loss_orders_by_auc_then_by_the_lower_loss_on_a_large_grid():
    """1000 x 1000 videos: AUC steps of 5e-7, near float32's resolution. A float32 round-off in the AUC is no
    gain (the lower loss still wins), and one AUC step beats the largest difference in loss."""
    from src.models.metrics import auc_then_loss

    pairs = 1000 * 1000
    auc = torch.tensor(0.9, dtype=torch.float32)
    rounded_up = torch.nextafter(auc, torch.tensor(1.0))
    low, high = torch.tensor(0.1), torch.tensor(0.2)
    assert auc_then_loss(auc, low, 1000, 1000) > auc_then_loss(rounded_up, high, 1000, 1000)
    step_up = torch.tensor(0.9 + 1 / (2 * pairs), dtype=torch.float32)
    assert auc_then_loss(step_up, torch.tensor(50.0), 1000, 1000) > auc_then_loss(
        auc, torch.tensor(0.0), 1000, 1000
    )
    assert auc_then_loss(auc, low, 0, 5) > auc_then_loss(auc, high, 0, 5)  # one class: the loss decides


def eer_by_root_finding(labels: np.ndarray, probs: np.ndarray) -> float:
    """Independent EER: sklearn's ROC as a polyline parametrised by point index, FNR = FPR found by brentq."""
    from scipy.optimize import brentq

    fpr, tpr, _ = roc_curve(labels, probs, drop_intermediate=False)
    along = np.arange(len(fpr))
    root = brentq(
        lambda s: (1 - np.interp(s, along, tpr)) - np.interp(s, along, fpr), 0, len(fpr) - 1, xtol=1e-12
    )
    return float(np.interp(root, along, fpr))


@pytest.mark.parametrize("seed", [9, 11, 16, 17, 28])
def test_eer_interpolates_where_the_roc_crosses_fnr_equals_fpr(seed):
    """On 19 videos (9 real, 10 fake) the ROC moves in big steps: the EER is read on the curve between its
    points, not at the nearest point (which is 0.08 to 0.13 off for these seeds)."""
    rng = np.random.default_rng(seed)
    labels = np.array([0] * 9 + [1] * 10)
    rng.shuffle(labels)
    probs = np.clip(0.25 * labels + rng.random(19) * 0.75, 0, 1).astype(np.float32)
    eer = float(detection_metrics("")(torch.tensor(probs), torch.tensor(labels))["eer"])
    expected = eer_by_root_finding(labels, probs)
    assert eer == pytest.approx(expected, abs=1e-6)
    fpr, tpr, _ = roc_curve(labels, probs)
    nearest = np.argmin(np.abs((1 - tpr) - fpr))
    assert abs((fpr[nearest] + 1 - tpr[nearest]) / 2 - expected) > 0.05  # the case the old formula got wrong


def test_imagenet_weights_load_through_torchvision_cache_only_with_the_published_hash(tmp_path, monkeypatch):
    """A file put where torchvision looks (TORCH_HOME) is used only if its SHA-256 has the prefix in its name;
    the same state dict given as model.pretrained.file is what the backbone gets."""
    from torchvision.models import ResNet50_Weights, resnet50

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = resnet50(weights=None)
    torch.nn.init.normal_(reference.conv1.weight)
    target = tmp_path / "hub" / "checkpoints" / ResNet50_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[1]
    target.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), target)

    cfg = compose_config("train", ["model=resnet_lstm", "weights=pretrained"])
    with pytest.raises(IncompatibleWeights, match="does not match the published 0676ba61"):
        hydra.utils.instantiate(cfg.weights)(hydra.utils.instantiate(cfg.model))

    cfg = compose_config(
        "train", ["model=resnet_lstm", "weights=pretrained", f"model.pretrained.file={target}"]
    )
    module = hydra.utils.instantiate(cfg.model)
    origin = hydra.utils.instantiate(cfg.weights)(module).initial_weights
    assert origin.startswith(f"{target} sha256=")
    torch.testing.assert_close(module.net.backbone[0].weight, reference.conv1.weight)
    torch.testing.assert_close(module.net.backbone[7][2].conv3.weight, reference.layer4[2].conv3.weight)


def test_missing_imagenet_weights_offline_name_the_expected_file(tmp_path, monkeypatch):
    import urllib.request

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(WeightsNotFound, match="resnet50-0676ba61.pth"):
        torchvision_state_dict("IMAGENET1K_V1")


def test_missing_mesonet_weights_say_where_they_were_looked_for(tmp_path, monkeypatch):
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlretrieve", offline)
    cfg = compose_config("train", ["weights=pretrained", f"paths.weights_dir={tmp_path}"])
    with pytest.raises(WeightsNotFound) as error:
        hydra.utils.instantiate(cfg.weights)(hydra.utils.instantiate(cfg.model))
    assert "MesoInception_DF.h5" in str(error.value) and str(tmp_path) in str(error.value)
    assert not list(tmp_path.iterdir()), "no partial download is left behind"


class _RunsCode:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['PWNED_FILE'], 'w').write('pwned')",))


def test_bad_checkpoints_are_refused_with_the_file_and_the_mismatch(tmp_path, monkeypatch):
    module = hydra.utils.instantiate(compose_config("train", ["model=meso4"]).model)
    not_a_checkpoint = tmp_path / "notes.ckpt"
    not_a_checkpoint.write_text("hello")
    other_model = tmp_path / "mesoinception.ckpt"
    torch.save(
        {"state_dict": hydra.utils.instantiate(compose_config("train").model).state_dict()}, other_model
    )
    wrong_shape = tmp_path / "wrong_shape.ckpt"
    state = {k: (torch.zeros(7) if i == 0 else v) for i, (k, v) in enumerate(module.state_dict().items())}
    torch.save({"state_dict": state}, wrong_shape)
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"state_dict": _RunsCode()}))
    marker = tmp_path / "pwned"
    monkeypatch.setenv("PWNED_FILE", str(marker))

    for path, message in [
        (not_a_checkpoint, "not a loadable checkpoint"),
        (other_model, "does not fit Meso4"),
        (wrong_shape, "shape mismatch"),
        (evil, "not a loadable checkpoint"),
    ]:
        with pytest.raises(IncompatibleWeights, match=message) as error:
            load_checkpoint(module, path)
        assert path.name in str(error.value)
    assert not marker.exists(), "unpickling must not run code from the file"
