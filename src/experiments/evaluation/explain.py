"""Class-activation maps of the fake logit: `explanations.png` of an evaluate run and `predict.py explain=true`.

Grad-CAM (Selvaraju et al. 2017) through the grad-cam package: a target layer's feature maps weighted by the
spatial mean of the fake logit's gradient with respect to them, summed over channels, ReLU, resized to the
input. Each network names its layer next to its input contract (`cam_target_layer()`: the last conv block
before pooling). A frame network's map of a crop comes from that crop's own logit. A clip network (per-frame
CNN, LSTM over the frames) has one logit per clip: each frame's map weights that frame's feature maps by the
gradient of the clip's logit, so it shows where in that frame the clip's score draws from. Every map is
scaled to [0, 1] on its own (grad-cam's scaling): a map shows where, not how much; a map that is all zero
means no positive evidence for "fake" at that layer.

Maps need gradients, which Lightning's test and predict loops switch off: they are computed after scoring,
outside the Trainer, in fp32 with gradients enabled and the module in eval mode, a few crops at a time.
grad-cam is imported only here, when maps are asked for (its import takes seconds).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from src.experiments.evaluation import plots

CAM_FRAMES = 4  # crops shown (and mapped) per video
CAM_BATCH = 16  # crops per backward pass
VIDEO_CAM_FRAMES = 8  # crops shown per video in predict.py's <video stem>_cam.png
CAM_VIDEOS = 4  # worst false positives, worst false negatives and correct videos, each
IMAGE_WEIGHT = 0.5  # the crop's share of an overlay, the map's colour the rest
COLOURMAP = "jet"  # grad-cam's default (OpenCV's COLORMAP_JET); the colour bar uses matplotlib's, the same


def target_layer(net: nn.Module) -> nn.Module:
    """The layer a network names for its maps, checked to be one of its own modules."""
    if not hasattr(net, "cam_target_layer"):
        raise TypeError(
            f"{type(net).__module__}.{type(net).__name__} names no class-activation layer: give the class a "
            "method cam_target_layer(self) -> nn.Module returning its last conv block (see src/models/nets/mesonet.py)"
        )
    layer = net.cam_target_layer()
    if not any(layer is module for module in net.modules()):
        raise ValueError(
            f"{type(net).__name__}.cam_target_layer() returned a module that is not part of the net"
        )
    return layer


class _ClipLogitPerFrame(nn.Module):
    """A clip network seen by grad-cam as a frame model: frames (N * T, 3, S, S) in clip order, one output per
    frame, the clip's logit / T, so that the outputs' sum (what grad-cam differentiates) is the clips' logits."""

    def __init__(self, module: nn.Module, steps: int):
        super().__init__()
        self.module, self.steps = module, steps

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        clips = frames.view(-1, self.steps, *frames.shape[1:])
        return (self.module(clips) / self.steps).repeat_interleave(self.steps)


def _fake_logit(output: torch.Tensor) -> torch.Tensor:
    return output  # the model outputs the logit of "fake": its gradient is the map's


def _backward_stops_here(layer: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
    """Forward hook on the target layer: its output goes on as a fresh leaf that requires grad, so the
    backward pass runs from the logit down to this layer only (what a map needs), not through the layers
    below it, and reaches it though no weight requires grad."""
    return output.detach().requires_grad_(True)


@contextmanager
def _weights_frozen(module: nn.Module) -> Iterator[None]:
    """No weight needs a gradient for a map: with none recording, the layers below the target keep no
    activations for a backward pass (a 20-frame ResNet50 clip would keep gigabytes)."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    for parameter in trainable:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)


@contextmanager
def _gradients_through(net: nn.Module) -> Iterator[None]:
    """A frozen backbone runs under no_grad in forward (to save training memory), where the layers after the
    target layer would not be tracked; for the maps' forward passes it runs with autograd (weights still frozen)."""
    frozen = getattr(net, "freeze_backbone", False)
    if frozen:
        net.freeze_backbone = False
    try:
        yield
    finally:
        if frozen:
            net.freeze_backbone = frozen


def class_activation_maps(module: nn.Module, images: torch.Tensor, batch_size: int = CAM_BATCH) -> np.ndarray:
    """Maps of the fake logit, float32 in [0, 1] at the input's size, one per crop, on the module's device.

    `module` is a DeepfakeDetector (`net`, `input_kind`); `images` the model's input, normalized as for
    scoring: crops (N, 3, S, S) -> (N, S, S); videos (N, T, 3, S, S) -> (N, T, S, S), each crop by its own
    logit for a frame network, each frame by the clip's logit for a clip network (one clip's frames per
    backward pass at least).
    """
    from pytorch_grad_cam import GradCAM

    layer = target_layer(module.net)
    x = torch.as_tensor(images, dtype=torch.float32)
    clip = module.input_kind == "clip"
    if x.dim() not in ((5,) if clip else (4, 5)):
        raise ValueError(
            f"class_activation_maps: {module.input_kind} network, input of shape {tuple(x.shape)}: expected "
            + ("clips (N, T, 3, S, S)" if clip else "crops (N, 3, S, S) or videos (N, T, 3, S, S)")
        )
    steps = x.shape[1] if clip else 1
    frames = x.flatten(0, -4)
    model = _ClipLogitPerFrame(module, steps) if clip else module
    per_pass = max(1, batch_size // steps) * steps
    device = next(module.parameters()).device
    was_training = module.training
    stop = layer.register_forward_hook(_backward_stops_here)  # before grad-cam's hooks: they see the leaf
    cam = GradCAM(model=model, target_layers=[layer])  # puts the model in eval mode
    maps = []
    try:
        # cuDNN's LSTM cannot backpropagate in eval mode: the clip networks' maps run without cuDNN
        with (
            torch.enable_grad(),
            torch.autocast(device_type=device.type, enabled=False),
            torch.backends.cudnn.flags(enabled=not clip),
            _gradients_through(module.net),
            _weights_frozen(module),
        ):
            for chunk in frames.split(per_pass):
                try:
                    maps.append(cam(input_tensor=chunk.to(device), targets=[_fake_logit] * len(chunk)))
                except AttributeError as error:  # grad-cam, on a layer that got no activation or gradient
                    if cam.activations_and_grads.gradients:
                        raise
                    raise RuntimeError(
                        f"no gradient of the fake logit reached {type(module.net).__name__}.cam_target_layer() "
                        f"({type(layer).__name__}): it must be on the path from the input to the logit, "
                        "outside torch.no_grad"
                    ) from error
    finally:
        cam.activations_and_grads.release()
        stop.remove()
        module.train(was_training)
    return np.clip(np.concatenate(maps), 0.0, 1.0).reshape(*x.shape[:-3], *x.shape[-2:])


@contextmanager
def on_device(module: nn.Module, device: torch.device | str | None) -> Iterator[None]:
    """The module on `device` (None: where it is) for the block, back where it was afterwards."""
    home = next(module.parameters()).device
    module.to(device or home)
    try:
        yield
    finally:
        module.to(home)


def explained_crops(
    module: nn.Module, datamodule, pixels: np.ndarray, frames: int = CAM_FRAMES
) -> tuple[np.ndarray, np.ndarray]:
    """(crops uint8 (F, S, S, 3), maps (F, S, S)) of `frames` evenly spaced crops of one video's `pixels`
    (uint8 (T, S, S, 3), a dataset item as scored), normalized by the data module's own batch transfer. A
    clip network maps its whole clip (its logit needs every frame); a frame network only the crops shown."""
    pixels = np.asarray(pixels)
    picks = np.linspace(0, len(pixels) - 1, min(frames, len(pixels))).round().astype(int)
    clip = module.input_kind == "clip"
    scored = torch.from_numpy(pixels if clip else pixels[picks])
    x, _, _ = datamodule.on_after_batch_transfer((scored[None], torch.zeros(1), None), 0)
    maps = class_activation_maps(module, x)[0]
    return pixels[picks], maps[picks] if clip else maps


def explanations_figure(
    crops: Sequence[np.ndarray], maps: Sequence[np.ndarray], titles: Sequence[str], title: str = ""
):
    """One row per video: its crops (uint8 (F, S, S, 3)) with their maps ((F, S, S) in [0, 1]) over them,
    side by side, the row's title above; a colour bar for the maps. Returns the matplotlib Figure."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from pytorch_grad_cam.utils.image import show_cam_on_image

    if not len(crops) == len(maps) == len(titles):
        raise ValueError(
            f"{len(crops)} crop rows, {len(maps)} map rows, {len(titles)} titles: one each per row"
        )
    rows = []
    for row_crops, row_maps in zip(crops, maps, strict=True):
        row_crops = np.asarray(row_crops).reshape(-1, *np.shape(row_crops)[-3:])
        row_maps = np.asarray(row_maps).reshape(-1, *np.shape(row_maps)[-2:])
        if row_maps.shape != row_crops.shape[:3]:
            raise ValueError(f"maps of shape {row_maps.shape} do not fit crops of shape {row_crops.shape}")
        rows.append(
            np.stack(
                [
                    show_cam_on_image(c / 255.0, m, use_rgb=True, image_weight=IMAGE_WEIGHT)
                    for c, m in zip(row_crops, row_maps, strict=True)
                ]
            )
        )
    columns = max((len(r) for r in rows), default=1)
    top = 0.95 if title else 0.45  # inches above the first row: the title's two lines, the first caption
    height = 1.6 * max(len(rows), 1) + 0.65 + top
    figure = Figure(figsize=(max(1.5 * columns, 7.0), height))
    axes = figure.subplots(max(len(rows), 1), 1, squeeze=False)[:, 0]
    for ax in axes:
        ax.axis("off")
    for ax, overlays, caption in zip(axes, rows, titles, strict=False):
        ax.imshow(plots.side_by_side(overlays, columns), aspect="equal")  # as worst_videos.png
        ax.set_title(caption, fontsize=8, loc="left", x=0.0)
    if not rows:
        axes[0].text(0.5, 0.5, "no videos to explain", ha="center", va="center")
    figure.suptitle(title, fontsize=10)
    bar = figure.add_axes((0.2, 0.22 / height, 0.6, 0.12 / height))
    figure.colorbar(ScalarMappable(Normalize(0, 1), COLOURMAP), cax=bar, orientation="horizontal")
    bar.set_title("Grad-CAM of the fake logit, each map scaled to [0, 1]", fontsize=8)
    bar.tick_params(labelsize=7)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.8 / height, top=1 - top / height, hspace=0.35)
    return figure


def pick_videos(p_fake: np.ndarray, labels: np.ndarray, count: int = CAM_VIDEOS) -> list[tuple[int, str]]:
    """(index, kind): the worst false positives and false negatives (`plots.worst_videos`, at most `count`
    each), then at most `count` correct videos, the most confident ones, fakes and reals alternating."""
    p_fake, labels = np.asarray(p_fake), np.asarray(labels)
    fakes = [(int(i), "correct fake") for i in np.argsort(-p_fake) if labels[i] == 1 and p_fake[i] >= 0.5]
    reals = [(int(i), "correct real") for i in np.argsort(p_fake) if labels[i] == 0 and p_fake[i] < 0.5]
    correct = [pick for pair in itertools.zip_longest(fakes, reals) for pick in pair if pick is not None]
    return plots.worst_videos(p_fake, labels, count) + correct[:count]


def write_explanations(
    module: nn.Module,
    datamodule,
    p_fake: np.ndarray,
    labels: np.ndarray,
    paths: Sequence[str],
    crops_of: Callable[[int], np.ndarray],
    path: Path,
    title: str,
    device: torch.device | str | None = None,
    count: int = CAM_VIDEOS,
) -> Path:
    """`explanations.png`: the maps of the videos `pick_videos` chooses from an evaluate run's scores
    (`p_fake`, `labels`, `paths`: per video, in the same order), their crops from `crops_of(i)` (uint8
    (T, S, S, 3) as scored), computed on `device` (None: where the module is)."""
    crops, maps, titles = [], [], []
    with on_device(module, device):
        for i, kind in pick_videos(p_fake, labels, count):
            shown, video_maps = explained_crops(module, datamodule, crops_of(i))
            crops.append(shown)
            maps.append(video_maps)
            titles.append(f"{kind}: P(fake) = {p_fake[i]:.3f}  {paths[i]}")
    figure = explanations_figure(crops, maps, titles, f"Class-activation maps of {title}")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    return path


def write_video_map(
    module: nn.Module, datamodule, pixels: np.ndarray, title: str, path: Path, frames: int = VIDEO_CAM_FRAMES
) -> Path:
    """One video's maps (`predict.py explain=true`): `frames` of its crops (`pixels`, uint8 (T, S, S, 3) as
    scored) with their maps, in one row titled `title`, saved as `path`."""
    crops, maps = explained_crops(module, datamodule, pixels, frames)
    figure = explanations_figure([crops], [maps], [title])
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    return path
