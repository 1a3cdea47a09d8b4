"""MesoNet (Afchar et al., 2018) in PyTorch, layer for layer as the authors' Keras code.

Reference: DariusAf/MesoNet ``classifiers.py``. Both nets take ``(B, 3, 256, 256)`` RGB in [0, 1] and
return ``(B,)`` logits of "fake" (label 1 = fake). The original Keras models output P(real), so
:func:`load_keras_weights` negates the last dense layer when converting the authors' weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

from src.models.contract import contract

__all__ = ["Meso4", "MesoInception4", "WeightsError", "load_keras_weights"]

# Keras BatchNormalization defaults: epsilon=1e-3, momentum=0.99 (torch counts momentum the other way).
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01
_INPUT_SIZE = 256
_FEATURE_SHAPE = (16, 8, 8)  # (C, H, W) after the last pooling: 256 / (2 * 2 * 2 * 4) = 8


# SHA-256 of the original files in DariusAf/MesoNet (weights/): a download must match them
ORIGINAL_SHA256 = {
    "Meso4_DF.h5": "036ed30d04ffd9c7506f825b97c86aa64915f5818931da96817b169aad790af5",
    "Meso4_F2F.h5": "bcfda015d217b9f8d6557693edbdf9f4e79cfd22672541968dd0e2954462b5d7",
    "MesoInception_DF.h5": "234586d40058e76ef8b6f27ca4b63c06e31c2a5a69c0d8ba6f30b1468ab7bafa",
    "MesoInception_F2F.h5": "d4533ac8a3197dc35c47405d23d99e888c1d0135e267e03540c7451feaccff3f",
}


class WeightsError(ValueError):
    """A Keras weights file that does not fit the net (not HDF5, missing/extra layers, bad shapes)."""


def _conv(c_in: int, c_out: int, k: int, dilation: int = 1) -> nn.Conv2d:
    """Conv with Keras ``padding='same'`` (stride 1, odd kernel: symmetric padding)."""
    return nn.Conv2d(c_in, c_out, k, padding=dilation * (k // 2), dilation=dilation)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class _InceptionLayer(nn.Module):
    """MesoInception block: 1x1 | 1x1-3x3 | 1x1-3x3 dil 2 | 1x1-3x3 dil 3, each conv + ReLU, concat."""

    def __init__(self, c_in: int, a: int, b: int, c: int, d: int) -> None:
        super().__init__()
        self.a = _conv(c_in, a, 1)
        self.b1, self.b3 = _conv(c_in, b, 1), _conv(b, b, 3)
        self.c1, self.c3 = _conv(c_in, c, 1), _conv(c, c, 3, dilation=2)
        self.d1, self.d3 = _conv(c_in, d, 1), _conv(d, d, 3, dilation=3)
        self.out_channels = a + b + c + d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        relu = torch.relu
        return torch.cat(
            [
                relu(self.a(x)),
                relu(self.b3(relu(self.b1(x)))),
                relu(self.c3(relu(self.c1(x)))),
                relu(self.d3(relu(self.d1(x)))),
            ],
            dim=1,
        )

    def keras_order(self) -> list[nn.Module]:
        """Order of this block's convs in a Keras weights file.

        Keras saves a functional model's layers by graph depth, then traversal order: the three 1x1
        convs feeding a 3x3 come first, then the four convs that feed the concatenation.
        """
        return [self.b1, self.c1, self.d1, self.a, self.b3, self.c3, self.d3]


class _MesoNet(nn.Module):
    """Shared head and Keras-like init; subclasses define ``features`` and ``keras_layers``."""

    input_kind = "frame"

    @classmethod
    def input_contract(cls, **net_kwargs) -> dict:
        """RGB in [0, 1] (the Keras models' own scaling), 256x256 only: the dense layer is sized for it."""
        return contract(
            cls.input_kind, _INPUT_SIZE, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), fixed_size=_INPUT_SIZE
        )

    def __init__(self) -> None:
        super().__init__()
        self.dropout = nn.Dropout(0.5)
        self.dense1 = nn.Linear(int(np.prod(_FEATURE_SHAPE)), 16)
        self.leaky_relu = nn.LeakyReLU(0.1)
        self.dense2 = nn.Linear(16, 1)

    def _init_keras_like(self) -> None:
        """Glorot-uniform kernels and zero biases, as Keras, so training from scratch matches the paper."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def cam_target_layer(self) -> nn.Module:
        """Class-activation maps' layer (src/experiments/evaluation/explain.py): the last conv block's output before
        its pooling, bn4 (32x32 for a 256 input)."""
        return self.bn4

    def keras_layers(self) -> list[nn.Module]:
        """Weighted modules in the order their Keras counterparts appear in a weights file."""
        raise NotImplementedError

    def load_pretrained(self, spec, weights_dir: str) -> str:
        """The original Keras weights named by `spec` (model.pretrained: file, url, optional sha256) from
        `weights_dir` (paths.weights_dir), downloaded and checked against the original's SHA-256 when missing."""
        from src.models.weights import describe_file, fetch_keras_weights

        sha256 = spec.get("sha256") or ORIGINAL_SHA256.get(spec["file"])
        path = fetch_keras_weights(spec["file"], spec["url"], weights_dir, sha256)
        load_keras_weights(self, path)
        return describe_file(path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.features(x).flatten(1))
        x = self.dropout(self.leaky_relu(self.dense1(x)))
        return self.dense2(x).squeeze(-1)


class MesoInception4(_MesoNet):
    """MesoInception-4: two inception blocks, two 5x5 convs, dense head; 28,615 trainable params."""

    def __init__(self) -> None:
        super().__init__()
        self.inc1 = _InceptionLayer(3, 1, 4, 4, 2)
        self.bn1 = _bn(self.inc1.out_channels)
        self.inc2 = _InceptionLayer(self.inc1.out_channels, 2, 4, 4, 2)
        self.bn2 = _bn(self.inc2.out_channels)
        self.conv3, self.bn3 = _conv(self.inc2.out_channels, 16, 5), _bn(16)
        self.conv4, self.bn4 = _conv(16, 16, 5), _bn(16)
        self.pool2, self.pool4 = nn.MaxPool2d(2), nn.MaxPool2d(4)
        self._init_keras_like()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool2(self.bn1(self.inc1(x)))
        x = self.pool2(self.bn2(self.inc2(x)))
        x = self.pool2(self.bn3(torch.relu(self.conv3(x))))
        return self.pool4(self.bn4(torch.relu(self.conv4(x))))

    def keras_layers(self) -> list[nn.Module]:
        return [
            *self.inc1.keras_order(), self.bn1,
            *self.inc2.keras_order(), self.bn2,
            self.conv3, self.bn3, self.conv4, self.bn4, self.dense1, self.dense2,
        ]  # fmt: skip


class Meso4(_MesoNet):
    """Meso-4: four conv/BN/pool stages (3x3 8, 5x5 8, 5x5 16, 5x5 16), dense head; 27,977 params."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv(3, 8, 3), _bn(8)
        self.conv2, self.bn2 = _conv(8, 8, 5), _bn(8)
        self.conv3, self.bn3 = _conv(8, 16, 5), _bn(16)
        self.conv4, self.bn4 = _conv(16, 16, 5), _bn(16)
        self.pool2, self.pool4 = nn.MaxPool2d(2), nn.MaxPool2d(4)
        self._init_keras_like()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool2(self.bn1(torch.relu(self.conv1(x))))
        x = self.pool2(self.bn2(torch.relu(self.conv2(x))))
        x = self.pool2(self.bn3(torch.relu(self.conv3(x))))
        return self.pool4(self.bn4(torch.relu(self.conv4(x))))

    def keras_layers(self) -> list[nn.Module]:
        return [
            self.conv1, self.bn1, self.conv2, self.bn2, self.conv3, self.bn3, self.conv4, self.bn4,
            self.dense1, self.dense2,
        ]  # fmt: skip


# ----------------------------------------------------------------------------------------------------
# Keras weights conversion
# ----------------------------------------------------------------------------------------------------

_BN_WEIGHTS = ("gamma", "beta", "moving_mean", "moving_variance")


def _keras_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """The Keras weight shapes a torch module expects, keyed by Keras weight name."""
    if isinstance(module, nn.Conv2d):
        o, i, kh, kw = module.weight.shape
        return {"kernel": (kh, kw, i, o), "bias": (o,)}
    if isinstance(module, nn.Linear):
        o, i = module.weight.shape
        return {"kernel": (i, o), "bias": (o,)}
    if isinstance(module, nn.BatchNorm2d):
        return dict.fromkeys(_BN_WEIGHTS, (module.num_features,))
    raise TypeError(f"no Keras counterpart for {type(module).__name__}")


def _read_layers(f: h5py.File, where: str) -> list[tuple[str, dict[str, np.ndarray]]]:
    """(layer name, {weight name: array}) for each layer with weights, in the file's layer order."""
    root = f["model_weights"] if "model_weights" in f else f  # a full model.save() file nests them
    if "layer_names" not in root.attrs:
        raise WeightsError(f"{where}: not a Keras weights file (no 'layer_names' attribute)")
    layers = []
    for raw in root.attrs["layer_names"]:
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        if name not in root:
            raise WeightsError(f"{where}: layer '{name}' is listed in layer_names but has no group")
        group = root[name]
        weights = {}
        for raw_w in group.attrs.get("weight_names", []):
            w_name = raw_w.decode() if isinstance(raw_w, bytes) else str(raw_w)
            if w_name not in group:
                raise WeightsError(f"{where}: layer '{name}' lacks its weight '{w_name}'")
            weights[w_name.split("/")[-1].split(":")[0]] = np.asarray(group[w_name], dtype=np.float32)
        if weights:
            layers.append((name, weights))
    return layers


def _describe(shapes: dict[str, tuple[int, ...]]) -> str:
    return ", ".join(f"{k} {tuple(v)}" for k, v in shapes.items())


def _to_torch(module: nn.Module, w: dict[str, np.ndarray], flatten_from_nhwc: bool) -> dict[str, np.ndarray]:
    """Keras arrays -> the module's torch parameter/buffer arrays."""
    if isinstance(module, nn.Conv2d):
        return {"weight": w["kernel"].transpose(3, 2, 0, 1), "bias": w["bias"]}  # HWIO -> OIHW
    if isinstance(module, nn.Linear):
        kernel = w["kernel"]  # (in, out)
        if flatten_from_nhwc:  # Keras flattened (H, W, C), torch flattens (C, H, W): reorder the rows
            c, h, wd = _FEATURE_SHAPE
            kernel = kernel.reshape(h, wd, c, -1).transpose(2, 0, 1, 3).reshape(c * h * wd, -1)
        return {"weight": kernel.T, "bias": w["bias"]}
    return {
        "weight": w["gamma"],
        "bias": w["beta"],
        "running_mean": w["moving_mean"],
        "running_var": w["moving_variance"],
    }


def load_keras_weights(net: MesoInception4 | Meso4, h5_path: str | os.PathLike) -> MesoInception4 | Meso4:
    """Copy the authors' Keras ``save_weights`` file (e.g. ``MesoInception_DF.h5``) into ``net``.

    Layers are matched in the file's ``layer_names`` order, as Keras' own ``load_weights`` does, so
    the numbers in the layer names do not matter; kinds and shapes are checked for every layer and
    any mismatch raises :class:`WeightsError` before ``net`` is touched. The last dense layer is
    negated: Keras predicts P(real), ``net`` returns the logit of fake.
    """
    path = Path(h5_path)
    where = f"Keras weights file '{path}'"
    if not path.is_file():
        raise FileNotFoundError(f"{where} does not exist")
    if not h5py.is_hdf5(path):
        raise WeightsError(f"{where} is not an HDF5 file")
    try:
        with h5py.File(path, "r") as f:
            found = _read_layers(f, where)
    except (OSError, KeyError) as e:  # truncated or otherwise unreadable HDF5
        raise WeightsError(f"{where} could not be read: {e}") from e

    modules = net.keras_layers()
    module_names = {m: n for n, m in net.named_modules()}
    expected = [_keras_shapes(m) for m in modules]
    got = [{k: v.shape for k, v in w.items()} for _, w in found]
    for i, (exp, have) in enumerate(zip(expected, got, strict=False)):
        if exp != have:
            raise WeightsError(
                f"{where}: layer #{i} '{found[i][0]}' does not fit {type(net).__name__}.{module_names[modules[i]]}"
                f" ({len(found)} weighted layers in the file, {len(modules)} expected): "
                f"expected {_describe(exp)}; found {_describe(have)}"
            )
    if len(found) < len(modules):
        i = len(found)
        raise WeightsError(
            f"{where}: missing layer #{i} for {type(net).__name__}.{module_names[modules[i]]} "
            f"(expected {_describe(expected[i])}); the file has only {len(found)} weighted layers"
        )
    if len(found) > len(modules):
        name, _ = found[len(modules)]
        raise WeightsError(
            f"{where}: extra layer #{len(modules)} '{name}' ({_describe(got[len(modules)])}); "
            f"{type(net).__name__} has only {len(modules)} weighted layers"
        )

    state = {}
    for module, (_, w) in zip(modules, found, strict=True):
        arrays = _to_torch(module, w, flatten_from_nhwc=module is net.dense1)
        if module is net.dense2:  # P(real) -> logit of fake: sigmoid(-z) = 1 - sigmoid(z)
            arrays = {k: -v for k, v in arrays.items()}
        prefix = module_names[module]
        state.update({f"{prefix}.{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()})
    with torch.no_grad():
        params = dict(net.named_parameters()) | dict(net.named_buffers())
        for key, value in state.items():
            params[key].copy_(value)
    return net
