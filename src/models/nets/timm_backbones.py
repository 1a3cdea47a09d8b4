"""Detectors on timm backbones: any timm model per frame (Xception by default), EfficientNet-B1 + LSTM per clip.

The input contract (size, normalization) of each comes from timm's pretrained config of the model's
weights tag (`input_contract`, read by conf/includes/model.yaml), without building the model. Pretrained weights
load through timm's own loader and caches (Hugging Face hub cache under HF_HOME, torch hub cache
under TORCH_HOME) or from a local file (`model.pretrained.file`); offline without them the load fails
within seconds with a message saying what to provide, never with random weights.
"""

from __future__ import annotations

import logging
import socket
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
from torch import nn

from src.models.contract import contract, default_kwarg
from src.models.nets.clips import FrameBackbone, fp32_lstm
from src.models.weights import IncompatibleWeights, WeightsNotFound, describe_file
from src.utils.errors import ConfigError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0  # one TCP connect decides "offline": huggingface_hub itself retries for ~45 s
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm asks the hub for, in order
TIMM_HEAD_CHILDREN = ("global_pool", "head", "fc", "classifier")  # where a timm model's features end


class TimmBackbone(nn.Module):
    """Base of the timm detectors: `self.backbone` is `model_name` without classifier (pooled features)."""

    input_kind = "frame"
    frames_per_clip = 1

    @classmethod
    def input_contract(cls, model_name: str | None = None, **net_kwargs) -> dict:
        """Size and normalization from timm's pretrained cfg of `model_name` (name.tag); kind and clip
        length from the class."""
        model_name = model_name or default_kwarg(cls, "model_name")
        pretrained = timm.get_pretrained_cfg(model_name)
        if pretrained is None:
            raise ConfigError(
                f"model.net.model_name={model_name}: timm has no pretrained config of that name.tag"
            )
        return contract(
            cls.input_kind,
            pretrained.input_size[-1],
            pretrained.mean,
            pretrained.std,
            frames_per_clip=cls.frames_per_clip,
        )

    def __init__(self, model_name: str):
        super().__init__()
        self.model_name = model_name
        self.backbone = timm.create_model(model_name, pretrained=False, num_classes=0)

    def cam_target_layer(self) -> nn.Module:
        """Class-activation maps' layer (src/experiments/evaluation/explain.py): the backbone's last child before its
        pooling and classifier, whose output is timm's forward_features() (the final feature map); per frame
        for the clip model, from the gradient of the clip's logit."""
        children = list(self.backbone.named_children())
        head = next((i for i, (name, _) in enumerate(children) if name in TIMM_HEAD_CHILDREN), len(children))
        return children[head - 1][1]

    def load_pretrained(self, spec: Mapping, weights_dir: str | None = None) -> str:
        """timm's pretrained weights of `model_name` (or the file `spec["file"]`, i.e. model.pretrained.file)
        into the backbone, strictly; the classifier head stays as initialised. Returns where they came from."""
        state, origin = timm_backbone_state(self.model_name, (spec or {}).get("file"))
        self.backbone.load_state_dict(state, strict=True)
        return origin


class TimmFrameDetector(TimmBackbone):
    """Any timm backbone per frame with a linear head: input (B, 3, S, S) sized and normalized as timm's
    pretrained cfg of `model_name` says; output (B,) logit of fake.

    The default, `legacy_xception`, is the classic Xception (Chollet 2017) of the FaceForensics++ baselines
    (model=xception); timm's `xception41/65/71` are the aligned DeepLab variants.

    Args:
        model_name: timm's name.tag of the backbone (its weights and its input contract).
        drop_rate: dropout before the head.
    """

    input_kind = "frame"

    def __init__(self, model_name: str = "legacy_xception.tf_in1k", drop_rate: float = 0.0):
        super().__init__(model_name)
        self.dropout = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.backbone.num_features, 1)  # what timm's num_classes=1 would build

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.backbone(frames))).squeeze(-1)


class EfficientNetLSTM(FrameBackbone, TimmBackbone):
    """Input (B, T, 3, 240, 240); output (B,) logit of fake.

    EfficientNet-B1 pooled features (1280) per frame, an LSTM with 512 hidden units over the clip,
    and a 512->64->1 head on its last step, as ResNetLSTM does with ResNet50.
    """

    input_kind = "clip"
    frames_per_clip = 20

    def __init__(
        self,
        model_name: str = "efficientnet_b1.ra4_e3600_r240_in1k",
        hidden_size: int = 512,
        freeze_backbone: bool = False,
    ):
        super().__init__(model_name)
        self.lstm = nn.LSTM(self.backbone.num_features, hidden_size, batch_first=True)
        self.head = nn.Sequential(nn.Linear(hidden_size, 64), nn.ReLU(inplace=True), nn.Linear(64, 1))
        self.freeze(freeze_backbone)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        batch, steps = clips.shape[:2]
        features = self.frame_features(clips)
        outputs, _ = fp32_lstm(self.lstm, features.view(batch, steps, -1))
        return self.head(outputs[:, -1]).squeeze(-1)


# -- pretrained weights through timm ----------------------------------------------------------------
def timm_backbone_state(model_name: str, file: str | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """State dict of timm's pretrained `model_name` without its classifier, and where it came from.

    timm builds the model with the checkpoint's own head so that its load is strict; the head is then
    dropped. With `file`, timm reads that file (.pth/.bin/.safetensors) instead of its hub source.
    """
    hub = None
    if file:
        path = Path(file).expanduser()
        if not path.is_file():
            raise WeightsNotFound(f"model.pretrained.file={path}: no such file (timm model {model_name})")
        overlay, origin = {"file": str(path)}, describe_file(path)
    else:
        hub = timm_weights_origin(model_name)
        if hub.cached:  # straight from the cache: no network, no hub retries
            overlay, origin = (
                {"file": hub.cached},
                f"{hub.description}, cached at {describe_file(hub.cached)}",
            )
        elif hub.offline or not reachable(hub.url):
            raise WeightsNotFound(hub.missing_message(model_name, "the network is unreachable"))
        else:
            overlay, origin = None, hub.description
    try:
        reference = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay)
    except RuntimeError as error:  # load_state_dict: missing/unexpected keys or shapes
        raise IncompatibleWeights(
            f"{origin} does not fit timm model {model_name} ({error}); a full timm checkpoint of "
            f"{model_name} is expected (as saved from timm.create_model({model_name!r}).state_dict())"
        ) from error
    except Exception as error:  # OSError, huggingface_hub and httpx errors; unreadable files
        if hub is None:
            raise IncompatibleWeights(f"timm could not read {origin} for {model_name}: {error}") from error
        reason = f"{type(error).__name__}: {error}"
        raise WeightsNotFound(hub.missing_message(model_name, reason)) from error
    reference.reset_classifier(0)
    log.info("pretrained %s: %s", model_name, origin)
    return reference.state_dict(), f"timm {model_name} from {origin}"


@dataclass(frozen=True)
class TimmWeightsOrigin:
    """Where timm fetches a model's default weights, the cache it keeps them in, and the cached file."""

    description: str
    url: str
    cache_dir: str
    cache_env: str
    cached: str | None
    offline: bool = False

    def missing_message(self, model_name: str, reason: str) -> str:
        return (
            f"pretrained weights of timm model {model_name} are not in the cache {self.cache_dir} "
            f"(set by {self.cache_env}) and could not be fetched from {self.description}: {reason}. "
            "Provide a local file: model.pretrained.file=/path/to/weights.safetensors (or .pth/.bin; a timm "
            f"state dict of {model_name}), or fill the cache where there is internet "
            f"(python -c \"import timm; timm.create_model('{model_name}', pretrained=True)\") and copy "
            "it over, or use weights=scratch."
        )


def timm_weights_origin(model_name: str) -> TimmWeightsOrigin:
    """As timm resolves it: the Hugging Face hub when the cfg names a hub id, else its URL (torch hub)."""
    cfg = timm.get_pretrained_cfg(model_name)
    if cfg is not None and cfg.hf_hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        repo, _, revision = cfg.hf_hub_id.partition("@")
        found = (try_to_load_from_cache(repo, name, revision=revision or None) for name in HF_WEIGHT_FILES)
        url = f"{constants.ENDPOINT}/{repo}"
        return TimmWeightsOrigin(
            description=f"the Hugging Face hub {repo} ({url})",
            url=url,
            cache_dir=constants.HF_HUB_CACHE,
            cache_env="HF_HOME",
            cached=next((f for f in found if isinstance(f, str)), None),
            offline=bool(constants.HF_HUB_OFFLINE),
        )
    if cfg is not None and cfg.url:
        cache_dir = Path(torch.hub.get_dir()) / "checkpoints"  # timm's get_cache_dir(), without creating it
        cached = cache_dir / Path(urlparse(cfg.url).path).name
        return TimmWeightsOrigin(
            description=cfg.url,
            url=cfg.url,
            cache_dir=str(cache_dir),
            cache_env="TORCH_HOME",
            cached=str(cached) if cached.is_file() else None,
        )
    raise WeightsNotFound(f"timm has no pretrained weights for {model_name}; use weights=scratch")


def reachable(url: str, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether one TCP connection to the URL's host (or to its HTTP(S) proxy) opens within `timeout`."""
    target = urlparse(url)
    proxy = urllib.request.getproxies().get(target.scheme)
    if proxy and not urllib.request.proxy_bypass(target.hostname or ""):
        target = urlparse(proxy if "://" in proxy else f"http://{proxy}")
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        with socket.create_connection((target.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False
