"""Class-activation maps (src/experiments/evaluation/explain.py): every model names a layer and yields maps, the maps find
a planted cause, explanations.png and predict.py explain=true write their pictures."""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from matplotlib.image import imread
from torch import nn

from src.experiments.config import CONFIG_DIR
from src.experiments.evaluation import explain
from src.models.module import DeepfakeDetector
from tests.conftest import compose_config, data_overrides, predict_config, videos_folder

MODEL_OPTIONS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))
SMALL_SIDE = 64  # input side for the nets that take any size: seconds on a CPU


def _module(net: nn.Module) -> DeepfakeDetector:
    return DeepfakeDetector(net, optimizer=functools.partial(torch.optim.Adam))


def _quadrant_mass(maps: np.ndarray) -> dict[str, float]:
    """Share of the maps' total mass in each quadrant of the image."""
    half = maps.shape[-1] // 2
    total = maps.sum()
    return {
        "top_left": maps[..., :half, :half].sum() / total,
        "top_right": maps[..., :half, half:].sum() / total,
        "bottom_left": maps[..., half:, :half].sum() / total,
        "bottom_right": maps[..., half:, half:].sum() / total,
    }


# -- every model option ------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODEL_OPTIONS)
def test_every_model_names_its_layer_and_gets_maps_of_the_input_size(model):
    torch.manual_seed(0)
    cfg = compose_config("train", [f"model={model}"])
    module = hydra.utils.instantiate(cfg.model)
    layer = module.net.cam_target_layer()
    assert any(layer is m for m in module.net.modules()), f"{model}: the layer is not one of the net's"
    side = cfg.model.input.fixed_size or SMALL_SIDE
    shape = (1, 2, 3, side, side) if cfg.model.input.kind == "clip" else (2, 3, side, side)
    images = torch.rand(shape)
    maps = explain.class_activation_maps(module, images)
    assert maps.shape == (*shape[:-3], side, side) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert maps.max() > 0.5, f"{model}: every map is empty"
    # computed in eval mode (no dropout, batch-norm statistics fixed), the module's own mode kept
    np.testing.assert_array_equal(explain.class_activation_maps(module, images), maps)
    assert module.training and all(p.requires_grad for p in module.parameters())


@pytest.mark.parametrize("model", ["xception", "efficientnet_lstm"])
def test_a_timm_nets_layer_gives_its_final_feature_map(model):
    """The layer's output is what timm's forward_features returns: the last map before pooling."""
    module = hydra.utils.instantiate(compose_config("train", [f"model={model}"]).model).eval()
    seen = []
    handle = module.net.cam_target_layer().register_forward_hook(lambda m, i, o: seen.append(o.clone()))
    with torch.no_grad():
        features = module.net.backbone.forward_features(torch.rand(1, 3, SMALL_SIDE, SMALL_SIDE))
    handle.remove()
    torch.testing.assert_close(seen[-1], features)


def test_a_frozen_backbone_gives_the_same_maps():
    """freeze_backbone runs the backbone under no_grad for training; the maps still get their gradient."""
    torch.manual_seed(0)
    module = hydra.utils.instantiate(compose_config("train", ["model=efficientnet_lstm"]).model)
    clips = torch.rand(1, 2, 3, SMALL_SIDE, SMALL_SIDE)
    trainable = explain.class_activation_maps(module, clips)
    module.net.freeze_backbone = True
    module.net.backbone.requires_grad_(False)
    frozen = explain.class_activation_maps(module, clips)
    np.testing.assert_allclose(frozen, trainable, atol=1e-5)
    assert module.net.freeze_backbone and trainable.max() > 0
    assert not any(p.requires_grad for p in module.net.backbone.parameters())
    assert all(p.requires_grad for p in module.net.lstm.parameters())


# -- a planted cause -----------------------------------------------------------------------------------------
class _TopRightFeatures(nn.Module):
    """Per-frame features that see only the image's top-right quadrant (the input is zeroed elsewhere):
    conv, ReLU, 4x max pooling (the maps' layer: 1/4 of the input side, so the maps are upsampled), all
    weights positive. Top-right rather than top-left: a transposed or flipped map would move out of it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        nn.init.uniform_(self.conv.weight, 0.1, 1.0)
        self.pool = nn.Sequential(nn.ReLU(), nn.MaxPool2d(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(x)
        mask[..., : x.shape[-2] // 2, x.shape[-1] // 2 :] = 1
        return self.pool(self.conv(x * mask))


class _TopRightFrameNet(nn.Module):
    input_kind = "frame"

    def __init__(self):
        super().__init__()
        self.features = _TopRightFeatures()
        self.head = nn.Linear(4, 1)
        nn.init.uniform_(self.head.weight, 0.1, 1.0)

    def cam_target_layer(self) -> nn.Module:
        return self.features.pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3))).squeeze(-1)


class _TopRightClipNet(_TopRightFrameNet):
    """The same features per frame, averaged over the clip: one logit per clip."""

    input_kind = "clip"

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        features = self.features(clips.flatten(0, 1)).mean((2, 3)).view(*clips.shape[:2], -1)
        return self.head(features.mean(1)).squeeze(-1)


def test_a_frame_nets_map_is_where_its_logit_looks():
    torch.manual_seed(0)
    maps = explain.class_activation_maps(_module(_TopRightFrameNet()), torch.rand(3, 3, 64, 64))
    assert maps.shape == (3, 64, 64)
    mass = _quadrant_mass(maps)
    assert mass["top_right"] > 0.9, mass
    assert mass["bottom_left"] < 0.01, mass


def test_a_clip_nets_maps_are_per_frame_in_clip_order():
    """Each frame's map from the clip's logit: a blank frame has nothing to show, the others the quadrant;
    two clips in one backward pass stay apart."""
    torch.manual_seed(0)
    clips = torch.rand(2, 3, 3, 64, 64)
    clips[0, 1] = 0
    clips[1, 2] = 0
    maps = explain.class_activation_maps(_module(_TopRightClipNet()), clips, batch_size=6)
    assert maps.shape == (2, 3, 64, 64)
    assert maps[0, 1].max() == 0 and maps[1, 2].max() == 0
    for clip, frame in [(0, 0), (0, 2), (1, 0), (1, 1)]:
        assert maps[clip, frame].max() > 0.5
        assert _quadrant_mass(maps[clip, frame])["top_right"] > 0.9
    one_by_one = explain.class_activation_maps(_module(_TopRightClipNet()), clips[1:], batch_size=1)
    assert one_by_one.shape == (1, 3, 64, 64)


def test_a_net_without_a_layer_is_told_what_to_add():
    class Bare(nn.Module):
        input_kind = "frame"

        def forward(self, x):
            return x.mean((1, 2, 3))

    with pytest.raises(TypeError, match="cam_target_layer"):
        explain.class_activation_maps(_module(Bare()), torch.rand(1, 3, 8, 8))


# -- choosing videos; the pictures ---------------------------------------------------------------------------
def test_the_worst_mistakes_come_first_then_correct_videos_of_both_classes():
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    p_fake = np.array([0.9, 0.6, 0.1, 0.2, 0.95, 0.7, 0.4, 0.3])
    picks = explain.pick_videos(p_fake, labels, count=2)
    assert picks == [
        (0, "false positive"),
        (1, "false positive"),
        (3, "false negative"),
        (6, "false negative"),
        (4, "correct fake"),
        (2, "correct real"),
    ]
    assert explain.pick_videos(np.array([0.9, 0.8]), np.array([1, 1]), count=4) == [
        (0, "correct fake"),
        (1, "correct fake"),
    ]


def test_the_figure_draws_a_row_per_video_and_refuses_maps_that_do_not_fit(tmp_path):
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8) for _ in range(2)]
    maps = [rng.random((3, 32, 32)).astype(np.float32) for _ in range(2)]
    figure = explain.explanations_figure(crops, maps, ["false positive: a.mp4", "correct fake: b.mp4"], "t")
    assert [ax.get_title(loc="left") for ax in figure.axes[:2]] == [
        "false positive: a.mp4",
        "correct fake: b.mp4",
    ]
    figure.savefig(tmp_path / "x.png")
    assert imread(tmp_path / "x.png").shape[0] > 100
    with pytest.raises(ValueError, match="do not fit"):
        explain.explanations_figure([crops[0]], [maps[0][:, :16]], ["x"])


@pytest.fixture(scope="module")
def scored_test_split(small_dataset, small_cache):
    """The small dataset's test split as evaluate scores it (data module, dataset, records), MesoInception4
    from scratch."""
    cfg = compose_config("evaluate", ["weights=scratch", *data_overrides(small_dataset, small_cache)])
    from src.experiments.wiring import build_datamodule, build_model

    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("test")
    return datamodule, datamodule.predict_dataloader().dataset, datamodule.splits["test"], build_model(cfg)


def test_explanations_png_from_an_evaluate_runs_scores(scored_test_split, tmp_path):
    """What evaluate does after scoring: the mistakes and a few correct videos, crops as scored, one row each."""
    datamodule, dataset, records, module = scored_test_split
    labels = np.array([r.label for r in records])
    p_fake = np.where(labels == 1, 0.8, 0.2)
    p_fake[np.flatnonzero(labels == 0)[0]] = 0.9  # one false positive
    p_fake[np.flatnonzero(labels == 1)[0]] = 0.1  # one false negative
    picks = explain.pick_videos(p_fake, labels)
    path = explain.write_explanations(
        module,
        datamodule,
        p_fake,
        labels,
        [r.path for r in records],
        lambda i: np.asarray(dataset[i][0]),
        tmp_path / "explanations.png",
        "MesoNet (scratch weights)\nsynthetic test",
    )
    assert path.is_file() and len(picks) >= 3
    rows_drawn = imread(path).shape[0] / 80  # inches at dpi 80
    assert rows_drawn == pytest.approx(1.6 * len(picks) + 1.6, abs=0.1)
    assert next(module.parameters()).device.type == "cpu"


def test_predict_explain_writes_a_map_per_scored_video(small_dataset, small_cache, tmp_path):
    from src.experiments.predict import predict

    folder = videos_folder(small_dataset, tmp_path / "videos", 2)
    output = tmp_path / "out" / "scores.csv"
    rows = predict(predict_config(folder, output, small_cache, "explain=true"))
    scored = [Path(r["path"]).stem for r in csv.DictReader(output.open()) if r["p_fake"]]
    assert sorted(p.name for p in output.parent.glob("*_cam.png")) == sorted(f"{s}_cam.png" for s in scored)
    assert len(scored) == 2 and not any(r.get("cam") for r in rows if r["error"])
    assert imread(output.parent / f"{scored[0]}_cam.png").shape[1] > 8 * 64
