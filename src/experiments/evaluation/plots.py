"""The pictures each evaluate run logs: ROC, precision-recall, confusion matrix, reliability diagram,
worst-scored videos.

Every figure names what it shows (dataset, perturbation, model and weights, real/fake counts) and that
the positive class is "fake". matplotlib's object API with the Agg canvas: no GUI, no global state.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def _counts(labels: np.ndarray) -> str:
    return f"{int((labels == 0).sum())} real, {int((labels == 1).sum())} fake videos"


def plot_roc(
    p_fake: np.ndarray,
    labels: np.ndarray,
    path: Path,
    title: str,
    auc: float | None = None,
    interval: tuple[float, float] | None = None,
) -> Path:
    import torch
    from torchmetrics.functional.classification import binary_roc

    fpr, tpr, _ = binary_roc(torch.as_tensor(p_fake), torch.as_tensor(labels).long())
    figure = _figure(5, 5)
    axes = figure.subplots()
    label = "video ROC" if auc is None else f"video AUC {auc:.3f}"
    if interval is not None:
        label += f" [{interval[0]:.2f}, {interval[1]:.2f}]"
    axes.plot(fpr.numpy(), tpr.numpy(), label=label)
    axes.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8, label="chance")
    axes.set(
        xlabel="false positive rate (reals called fake)",
        ylabel="true positive rate (fakes caught)",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    axes.set_title(f"{title}\n{_counts(labels)}; positive class: fake", fontsize=9)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def plot_precision_recall(
    p_fake: np.ndarray, labels: np.ndarray, path: Path, title: str, ap: float | None = None
) -> Path:
    import torch
    from torchmetrics.functional.classification import binary_precision_recall_curve

    precision, recall, _ = binary_precision_recall_curve(
        torch.as_tensor(p_fake), torch.as_tensor(labels).long()
    )
    figure = _figure(5, 5)
    axes = figure.subplots()
    # as scikit-learn draws it: points from recall 1 down to 0, steps-post (AP is the area under these steps)
    axes.plot(
        recall.numpy(),
        precision.numpy(),
        drawstyle="steps-post",
        label="video" if ap is None else f"video AP {ap:.3f}",
    )
    prevalence = float(labels.mean())
    axes.axhline(prevalence, linestyle="--", color="grey", linewidth=0.8, label=f"chance ({prevalence:.2f})")
    axes.set(
        xlabel="recall (fakes caught)",
        ylabel="precision (called fake that are fake)",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    axes.set_title(f"{title}\n{_counts(labels)}; positive class: fake", fontsize=9)
    axes.legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def plot_confusion(
    p_fake: np.ndarray, labels: np.ndarray, path: Path, title: str, threshold: float = 0.5
) -> Path:
    predicted = (p_fake >= threshold).astype(int)
    matrix = np.array([[int(((labels == t) & (predicted == p)).sum()) for p in (0, 1)] for t in (0, 1)])
    figure = _figure(4.5, 4.2)
    axes = figure.subplots()
    axes.imshow(matrix, cmap="Blues")
    for t in (0, 1):
        for p in (0, 1):
            share = matrix[t, p] / max(matrix[t].sum(), 1)
            axes.text(
                p,
                t,
                f"{matrix[t, p]}\n({share:.0%})",
                ha="center",
                va="center",
                color="white" if matrix[t, p] > matrix.max() / 2 else "black",
            )
    axes.set_xticks([0, 1], ["real", "fake"])
    axes.set_yticks([0, 1], ["real", "fake"])
    axes.set(xlabel=f"predicted (P(fake) >= {threshold:g})", ylabel="true")
    axes.set_title(f"{title}\nconfusion at threshold {threshold:g}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def plot_reliability(
    p_fake: np.ndarray, labels: np.ndarray, path: Path, title: str, ece: float, n_bins: int = 15
) -> Path:
    """Reliability diagram: per equal-width P(fake) bin the share of fakes against the mean P(fake) (on the
    diagonal = calibrated), the gap to the diagonal shaded, and below it how many videos each bin holds."""
    from src.utils.stats import reliability_bins

    bins = reliability_bins(p_fake, labels, n_bins)
    edges, count = bins["edges"], bins["count"]
    centres, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
    used = count > 0
    figure = _figure(5, 6)
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(centres[used], bins["fake_share"][used], width=width * 0.9, label="share of fakes")
    gap_low = np.minimum(bins["fake_share"], bins["mean_p"])[used]
    gap = np.abs(bins["fake_share"] - bins["mean_p"])[used]
    top.bar(centres[used], gap, bottom=gap_low, width=width * 0.9, color="tab:red", alpha=0.35, label="gap")
    top.plot(
        bins["mean_p"][used], bins["fake_share"][used], "o", color="black", markersize=3, label="bin mean"
    )
    top.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8, label="calibrated")
    top.set(ylabel="share of fakes in the bin", xlim=(0, 1), ylim=(0, 1.01))
    top.set_title(f"{title}\n{_counts(labels)}; ECE {ece:.3f} ({n_bins} equal-width bins)", fontsize=9)
    top.legend(loc="upper left", fontsize="small")
    bottom.bar(centres, count, width=width * 0.9, color="grey")
    bottom.set(xlabel="P(fake)", ylabel="videos")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def worst_videos(p_fake: np.ndarray, labels: np.ndarray, count: int) -> list[tuple[int, str]]:
    """(index, kind) of the most confident mistakes: false positives (reals with the highest P(fake)),
    then false negatives (fakes with the lowest), at most `count` of each; only actual mistakes at 0.5."""
    reals = [i for i in np.argsort(-p_fake) if labels[i] == 0 and p_fake[i] >= 0.5][:count]
    fakes = [i for i in np.argsort(p_fake) if labels[i] == 1 and p_fake[i] < 0.5][:count]
    return [(int(i), "false positive") for i in reals] + [(int(i), "false negative") for i in fakes]


def plot_gallery(strips: Sequence[tuple[np.ndarray, str]], path: Path, title: str) -> Path:
    """One row per video: a strip of its face crops (uint8 (T, S, S, 3)) with its caption above.

    Each strip is one image (crops side by side, a white gap between): one axes per video rather than
    one per crop, which draws several times faster."""
    rows = max(len(strips), 1)
    columns = max((len(frames) for frames, _ in strips), default=1)
    height = 1.55 * rows + 0.5
    figure = _figure(1.4 * columns, height)
    axes = figure.subplots(rows, 1, squeeze=False)[:, 0]
    for ax in axes:
        ax.axis("off")
    for ax, (frames, caption) in zip(axes, strips, strict=False):
        ax.imshow(side_by_side(frames, columns), aspect="equal")
        # the caption spans the row: fixed margins, not tight_layout (which would shrink the crops to fit it)
        ax.set_title(caption, fontsize=8, loc="left", x=0.0)
    if not strips:
        axes[0].text(0.5, 0.5, "no mistakes at threshold 0.5", ha="center", va="center")
    figure.suptitle(title, fontsize=10)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.65 / height, hspace=0.3)
    figure.savefig(path, dpi=80)
    return path


def side_by_side(frames: np.ndarray, columns: int, gap: int = 4) -> np.ndarray:
    """(T, S, S, 3) crops as one (S, columns * (S + gap), 3) image, left-aligned, white between and after."""
    size = frames.shape[1]
    strip = np.full((size, columns * (size + gap), 3), 255, np.uint8)
    for i, frame in enumerate(frames[:columns]):
        strip[:, i * (size + gap) : i * (size + gap) + size] = frame
    return strip


GALLERY_VIDEOS = 4  # worst false positives and false negatives each
GALLERY_FRAMES = 6


def draw_evaluation_pictures(
    cfg, folder: Path, metrics: dict, p_fake, labels, records, videos, dataset
) -> None:
    """The pictures of an evaluate run: ROC, precision-recall, confusion matrix, reliability diagram and the
    worst-scored videos (crops as the model saw them).

    Args:
        cfg: the evaluate config (titles: model, weights, data, perturbation).
        folder: where the PNG files go.
        metrics: the run's test metrics (AUC with its interval, AP, ECE).
        p_fake, labels: each test video's P(fake) and label (1 = fake).
        records, videos: the test videos' index records and their positions in `dataset`.
        dataset: the test dataset (crops as the model saw them).
    """
    from src.models.metrics import ECE_BINS  # the bins the logged ECE used

    title = (
        f"{cfg.model.get('title') or cfg.model.name} ({cfg.weights.source} weights)\n"
        f"{cfg.data.name} test, perturbation: {cfg.augment.get('title') or cfg.augment.level}"
    )
    interval = (metrics["test/video_auc_ci_low"], metrics["test/video_auc_ci_high"])
    plot_roc(p_fake, labels, folder / "roc_curve.png", title, metrics["test/video_auc"], interval)
    plot_precision_recall(p_fake, labels, folder / "precision_recall.png", title, metrics["test/video_ap"])
    plot_confusion(p_fake, labels, folder / "confusion_matrix.png", title)
    plot_reliability(p_fake, labels, folder / "reliability.png", title, metrics["test/video_ece"], ECE_BINS)
    strips = []
    for i, kind in worst_videos(p_fake, labels, GALLERY_VIDEOS):
        pixels = np.asarray(dataset[videos[i]][0])
        picks = np.linspace(0, len(pixels) - 1, min(GALLERY_FRAMES, len(pixels))).round().astype(int)
        strips.append((pixels[picks], f"{kind}: P(fake) = {p_fake[i]:.3f}  {records[i].path}"))
    plot_gallery(
        strips, folder / "worst_videos.png", f"Most confident mistakes of {title}".replace("\n", ", ")
    )
