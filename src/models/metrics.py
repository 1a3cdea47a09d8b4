"""Detection metrics with torchmetrics: loss, accuracy, AUC, AP and EER of "fake" scores, the expected
calibration error of the fake probability, and the one value model selection monitors (`auc_then_loss`)."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryAveragePrecision,
    BinaryCalibrationError,
    BinaryROC,
)

ECE_BINS = 15  # equal-width bins over [0, 1]: the usual choice (Guo et al. 2017), and torchmetrics' default


class InterpolatedEER(BinaryROC):
    """Equal error rate: where the false-negative and false-positive rates of the ROC curve meet.

    The ROC is a polyline through its (FPR, TPR) points; the EER is read where it crosses FNR = FPR, by linear
    interpolation between the two points around the crossing. The nearest ROC point alone can be far off on
    small test lists, where the curve moves in steps of 1/10 and more (0.13 on 19 videos in the tests).
    """

    def compute(self) -> torch.Tensor:
        fpr, tpr, _ = super().compute()
        return interpolated_eer(fpr.double(), 1 - tpr.double()).float()


def interpolated_eer(fpr: torch.Tensor, fnr: torch.Tensor) -> torch.Tensor:
    """FNR = FPR on the polyline through ROC points ordered by increasing FPR (decreasing FNR)."""
    gap = fnr - fpr  # non-increasing along the curve: positive before the crossing, <= 0 from it on
    if gap.numel() == 0 or torch.isnan(gap).any():
        return torch.tensor(float("nan"), dtype=fpr.dtype)
    after = int(torch.argmax((gap <= 0).to(torch.int8)))
    if after == 0:  # the curve starts on or past the diagonal (cannot happen for a full ROC from (0, 0))
        return (fpr[0] + fnr[0]) / 2
    before = after - 1
    t = gap[before] / (gap[before] - gap[after])
    return fpr[before] + t * (fpr[after] - fpr[before])


class MeanBCE(Metric):
    """Mean binary cross-entropy of probabilities, accumulated over batches."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        # outside autocast: CUDA autocast refuses binary_cross_entropy (trainer=gpu validation failed on it)
        with torch.autocast(device_type=probs.device.type, enabled=False):
            loss = nn.functional.binary_cross_entropy(
                probs.double().clamp(1e-7, 1 - 1e-7), target.double(), reduction="sum"
            )
        self.total = self.total + loss  # not in place: see ClassCounts.update
        self.count = self.count + target.numel()

    def compute(self) -> torch.Tensor:
        return (self.total / self.count).float()


def detection_metrics(prefix: str) -> MetricCollection:
    """`{prefix}{auc,ap,acc,loss,eer}` over fake probabilities and 0/1 labels."""
    return MetricCollection(
        {
            "auc": BinaryAUROC(),
            "ap": BinaryAveragePrecision(),
            "acc": BinaryAccuracy(),
            "loss": MeanBCE(),
            "eer": InterpolatedEER(),
        },
        prefix=prefix,
        compute_groups=False,
    )


def expected_calibration_error(p_fake, labels, n_bins: int = ECE_BINS) -> float:
    """How far P(fake) is from the share of fakes among the videos given that score: the bin-size weighted
    mean |share of fakes - mean P(fake)| over `n_bins` equal-width bins (torchmetrics' BinaryCalibrationError,
    L1 norm, computed in float64). 0 is perfectly calibrated; the picture is `plots.plot_reliability`."""
    metric = BinaryCalibrationError(n_bins=n_bins, norm="l1").double()
    metric.update(torch.as_tensor(p_fake, dtype=torch.float64), torch.as_tensor(labels).long())
    return float(metric.compute())


class ClassCounts(Metric):
    """How many positive (fake) and negative (real) labels were seen: `tensor([positives, negatives])`,
    summed over processes under DDP (where the sampler's padding repeats videos, as the AUC sees them)."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("positives", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("negatives", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, target: torch.Tensor) -> None:
        # not in place: under strategy=ddp_spawn on CPU the processes share the initial state tensors' memory
        self.positives = self.positives + (target == 1).sum()
        self.negatives = self.negatives + (target == 0).sum()

    def compute(self) -> torch.Tensor:
        return torch.stack([self.positives, self.negatives])


def auc_then_loss(auc: torch.Tensor, loss: torch.Tensor, positives: int, negatives: int) -> torch.Tensor:
    """One number (float64) that orders epochs by AUC first, then by lower loss: `auc - tanh(loss) / (4 P N)`.

    The AUC of P positives and N negatives counts ordered pairs, ties as halves: it lives on a grid of step
    1 / (2 P N). The loss term lies in [0, 1 / (4 P N)), under half a step, so a strict AUC gain beats any loss
    and equal AUCs are ordered by loss. The AUC is snapped to its grid first: float32 round-off in computing
    it must not pass for a difference. With one class only (no pairs) the AUC is constant and loss decides.
    """
    pairs = max(int(positives) * int(negatives), 1)
    on_grid = torch.round(auc.double() * 2 * pairs) / (2 * pairs)
    return on_grid - torch.tanh(loss.double()) / (4 * pairs)
