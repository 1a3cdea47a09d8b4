"""ResNet50 + LSTM: per-frame ResNet50 features, an LSTM over the clip, one logit per video."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet50

from src.models.contract import IMAGENET_MEAN, IMAGENET_STD, contract
from src.models.nets.clips import FrameBackbone, fp32_lstm


class ResNetLSTM(FrameBackbone):
    """Input (B, T, 3, 224, 224) ImageNet-normalized; output (B,) logit of fake.

    ResNet50 up to layer4 (every pretrained layer kept), a 1x1 conv 2048->128 without bias, batch norm,
    ReLU, global average pooling, an LSTM with 512 hidden units, and a 512->64->1 head on its last step.
    """

    input_kind = "clip"

    @classmethod
    def input_contract(cls, **net_kwargs) -> dict:
        """ImageNet-normalized 224x224 crops (torchvision's ResNet50 weights), 20 per clip."""
        return contract(cls.input_kind, 224, IMAGENET_MEAN, IMAGENET_STD, frames_per_clip=20)

    def __init__(self, hidden_size: int = 512, reduced_channels: int = 128, freeze_backbone: bool = False):
        super().__init__()
        trunk = resnet50(weights=None)
        self.backbone = nn.Sequential(*list(trunk.children())[:-2])  # conv1 .. layer4
        self.reduce = nn.Sequential(
            nn.Conv2d(2048, reduced_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(reduced_channels),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.lstm = nn.LSTM(reduced_channels, hidden_size, batch_first=True)
        self.head = nn.Sequential(nn.Linear(hidden_size, 64), nn.ReLU(inplace=True), nn.Linear(64, 1))
        self.freeze(freeze_backbone)

    def cam_target_layer(self) -> nn.Module:
        """Class-activation maps' layer (src/experiments/evaluation/explain.py): the per-frame ResNet50's last block,
        layer4 (7x7 at 224); a clip's map is computed per frame, from the gradient of the clip's logit."""
        return self.backbone[-1]

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        batch, steps = clips.shape[:2]
        features = self.reduce(self.frame_features(clips)).view(batch, steps, -1)
        outputs, _ = fp32_lstm(self.lstm, features)
        return self.head(outputs[:, -1]).squeeze(-1)

    def load_pretrained(self, spec, weights_dir: str | None = None) -> str:
        """torchvision's ImageNet ResNet50 (`spec` = model.pretrained: the torchvision_weights member from
        TORCH_HOME, hash-checked, else downloaded; or a local `file`) into the backbone."""
        from src.models.weights import torchvision_state_dict

        state, origin = torchvision_state_dict(spec["torchvision_weights"], spec.get("file"))
        self.load_imagenet_backbone(state)
        return origin

    def load_imagenet_backbone(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load a torchvision ResNet50 state dict (fc.* ignored) into the backbone, strictly."""
        trunk = resnet50(weights=None)
        trunk.load_state_dict(state_dict, strict=True)
        self.backbone.load_state_dict(nn.Sequential(*list(trunk.children())[:-2]).state_dict(), strict=True)
