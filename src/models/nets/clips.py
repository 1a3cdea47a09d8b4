"""What the clip models share: a per-frame backbone, optionally frozen, and an LSTM over the clip in fp32."""

from __future__ import annotations

import torch
from torch import nn


def fp32_lstm(lstm: nn.LSTM, features: torch.Tensor):
    """Run an LSTM in fp32 even under a reduced-precision autocast: its recurrence accumulates rounding
    over the clip, and autocast would otherwise run it in bf16.

    Args:
        lstm: the recurrence (batch_first).
        features: (B, T, F) per-frame features.
    """
    with torch.autocast(device_type=features.device.type, enabled=False):
        return lstm(features.float())


class FrameBackbone(nn.Module):
    """A clip model's per-frame backbone (`self.backbone`), frozen with `freeze(True)`: then it computes no
    gradients and keeps its pretrained batch-norm statistics in training mode too."""

    freeze_backbone = False

    def freeze(self, frozen: bool) -> None:
        """Freeze (or not) the backbone's parameters.

        Args:
            frozen: True to train only what follows the backbone.
        """
        self.freeze_backbone = frozen
        if frozen:
            self.backbone.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()  # frozen batch-norm statistics stay the pretrained ones
        return self

    def frame_features(self, clips: torch.Tensor) -> torch.Tensor:
        """The backbone's output for each frame of (B, T, 3, H, W) clips, as (B * T, ...).

        Args:
            clips: a batch of clips.
        """
        frames = clips.flatten(0, 1)
        if not self.freeze_backbone:
            return self.backbone(frames)
        with torch.no_grad():
            return self.backbone(frames)
