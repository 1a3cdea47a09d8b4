"""Detection metrics with torchmetrics: loss, accuracy, AUC, AP and EER of "fake" scores."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC, BinaryAveragePrecision, BinaryROC


class BinaryEER(BinaryROC):
    """Equal error rate: the point of the ROC curve where false-positive and false-negative rates meet."""

    def compute(self) -> torch.Tensor:
        fpr, tpr, _ = super().compute()
        fnr = 1 - tpr
        i = torch.argmin(torch.abs(fnr - fpr))
        return (fpr[i] + fnr[i]) / 2


class MeanBCE(Metric):
    """Mean binary cross-entropy of probabilities, accumulated over batches."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        loss = nn.functional.binary_cross_entropy(probs.double().clamp(1e-7, 1 - 1e-7), target.double(), reduction="sum")
        self.total += loss
        self.count += target.numel()

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
            "eer": BinaryEER(),
        },
        prefix=prefix,
        compute_groups=False,
    )
