"""MesoNet: architecture, and conversion of the authors' Keras weights checked against a numpy reference.

The reference re-implements the Keras forward pass in NHWC straight from the h5 arrays, assigning
layers by their creation order (the numbers in their names) rather than the file order the loader
uses, so that a wrong mapping, transpose or sign in the loader cannot hide in both.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from src.models.nets.mesonet import Meso4, MesoInception4, WeightsError, load_keras_weights

MESONET_DIR = Path(__file__).resolve().parents[3] / "shared" / "mesonet"
WEIGHTS = MESONET_DIR / "weights"
IMAGES = MESONET_DIR / "test_images"
NETS = {"MesoInception": MesoInception4, "Meso4": Meso4}


@pytest.fixture(scope="module")
def mesonet_dir() -> Path:
    if not (WEIGHTS / "MesoInception_DF.h5").is_file() or not (WEIGHTS / "Meso4_DF.h5").is_file():
        pytest.skip(f"the original MesoNet weights are not in {WEIGHTS}")
    if not list(IMAGES.glob("*/*.jpg")):
        pytest.skip(f"the MesoNet test crops are not in {IMAGES}")
    return MESONET_DIR


# ---------------------------------------------------------------------------------------------------
# architecture
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "n_params"), [(MesoInception4, 28_615), (Meso4, 27_977)])
def test_trainable_parameter_count(cls, n_params):
    net = cls()
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == n_params


@pytest.mark.parametrize("cls", [MesoInception4, Meso4])
@pytest.mark.parametrize("batch", [1, 3])
def test_output_is_one_logit_per_frame(cls, batch):
    net = cls().eval()
    assert (
        cls.input_kind == "frame"
        and cls.input_contract()["size"] == cls.input_contract()["fixed_size"] == 256
    )
    with torch.no_grad():
        out = net(torch.rand(batch, 3, 256, 256))
    assert out.shape == (batch,)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("cls", [MesoInception4, Meso4])
def test_batchnorm_uses_keras_hyperparameters(cls):
    bns = [m for m in cls().modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 4
    assert all(bn.eps == 1e-3 and bn.momentum == 0.01 for bn in bns)


# ---------------------------------------------------------------------------------------------------
# numpy reference of the Keras models (NHWC, Keras semantics)
# ---------------------------------------------------------------------------------------------------


def _conv_same(x, kernel, bias, dilation=1):
    """Keras Conv2D(padding='same', strides=1) + ReLU; x (H, W, Cin), kernel (kh, kw, Cin, Cout)."""
    kh, kw = kernel.shape[:2]
    h, w = x.shape[:2]
    ph, pw = dilation * (kh - 1), dilation * (kw - 1)
    xp = np.pad(x, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    out = np.zeros((h, w, kernel.shape[3]))
    for i in range(kh):
        for j in range(kw):
            out += xp[i * dilation : i * dilation + h, j * dilation : j * dilation + w] @ kernel[i, j]
    return np.maximum(out + bias, 0.0)


def _bn(x, p):
    return (x - p["moving_mean"]) / np.sqrt(p["moving_variance"] + 1e-3) * p["gamma"] + p["beta"]


def _maxpool_same(x, k):
    """Keras MaxPooling2D(pool_size=k, padding='same'): stride k, -inf padding split as TF does."""
    h, w, c = x.shape
    oh, ow = -(-h // k), -(-w // k)
    ph, pw = oh * k - h, ow * k - w
    xp = np.pad(x, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), constant_values=-np.inf)
    return xp.reshape(oh, k, ow, k, c).max(axis=(1, 3))


def _read_by_creation_order(h5_path):
    """{'conv2d': [...], 'batch_normalization': [...], 'dense': [...]} sorted by the number in the name."""
    layers: dict[str, list] = {}
    with h5py.File(h5_path, "r") as f:
        for name, group in f.items():
            kind, number = re.fullmatch(r"(\w+?)_(\d+)", name).groups()
            if name in group:  # layers without weights (input, pooling, ...) have an empty group
                weights = {k.split(":")[0]: np.asarray(v, np.float64) for k, v in group[name].items()}
                layers.setdefault(kind, []).append((int(number), weights))
    return {kind: [w for _, w in sorted(ls, key=lambda t: t[0])] for kind, ls in layers.items()}


def keras_reference_logit_real(h5_path, image_hwc):
    """Forward pass of classifiers.py's MesoInception4 / Meso4 on one (256, 256, 3) image.

    Returns the pre-sigmoid output, i.e. the logit of P(real), the Keras model's prediction.
    """
    L = _read_by_creation_order(h5_path)
    convs, bns, (dense1, dense2) = iter(L["conv2d"]), iter(L["batch_normalization"]), L["dense"]

    def conv(x, dilation=1):
        p = next(convs)
        return _conv_same(x, p["kernel"], p["bias"], dilation)

    def inception(x):  # creation order in classifiers.py: a, b 1x1, b 3x3, c 1x1, c 3x3, d 1x1, d 3x3
        x1 = conv(x)
        x2 = conv(conv(x))
        x3 = conv(conv(x), dilation=2)
        x4 = conv(conv(x), dilation=3)
        return np.concatenate([x1, x2, x3, x4], axis=-1)

    x = image_hwc.astype(np.float64)
    if len(L["conv2d"]) == 16:  # MesoInception4
        x = _maxpool_same(_bn(inception(x), next(bns)), 2)
        x = _maxpool_same(_bn(inception(x), next(bns)), 2)
    else:  # Meso4
        x = _maxpool_same(_bn(conv(x), next(bns)), 2)
        x = _maxpool_same(_bn(conv(x), next(bns)), 2)
    x = _maxpool_same(_bn(conv(x), next(bns)), 2)
    x = _maxpool_same(_bn(conv(x), next(bns)), 4)
    y = x.reshape(-1) @ dense1["kernel"] + dense1["bias"]  # Keras Flatten: NHWC order
    y = np.where(y > 0, y, 0.1 * y)
    return (y @ dense2["kernel"] + dense2["bias"]).item()


def load_crop(path):
    """As Keras ImageDataGenerator(rescale=1/255).flow_from_directory(target_size=(256, 256)) loads it."""
    img = Image.open(path)
    if img.mode != "RGB":
        img = img.convert("RGB")
    if img.size != (256, 256):
        img = img.resize((256, 256), Image.Resampling.NEAREST)
    return np.asarray(img, dtype=np.float32) * np.float32(1.0 / 255)


def test_crops_need_resizing_as_keras_would(mesonet_dir):
    """The crops are not all 256x256, so the nearest-neighbour resize of Keras' loader matters."""
    sizes = {p.name: Image.open(p).size for p in sorted(IMAGES.glob("*/*.jpg"))}
    print("\ncrop sizes:", sizes)
    assert all(load_crop(p).shape == (256, 256, 3) for p in IMAGES.glob("*/*.jpg"))


@pytest.mark.parametrize("arch", ["MesoInception", "Meso4"])
def test_converted_weights_match_keras_reference(mesonet_dir, arch):
    h5 = WEIGHTS / f"{arch}_DF.h5"
    crops = sorted(IMAGES.glob("*/*.jpg"))
    images = np.stack([load_crop(p) for p in crops])
    net = load_keras_weights(NETS[arch](), h5).eval()
    with torch.no_grad():
        logit_fake = net(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy().astype(np.float64)
    p_fake = 1.0 / (1.0 + np.exp(-logit_fake))
    logit_real_ref = np.array([keras_reference_logit_real(h5, img) for img in images])
    p_real_ref = 1.0 / (1.0 + np.exp(-logit_real_ref))  # what Keras' sigmoid output would be

    print(f"\n{arch}_DF.h5  P(fake): torch vs 1 - P(real) of the numpy Keras reference")
    for path, p, r, z in zip(crops, p_fake, 1.0 - p_real_ref, logit_fake, strict=True):
        print(f"  {path.parent.name}/{path.name}: torch {p:.6g}  reference {r:.6g}  (torch logit {z:+.4f})")
    print(
        f"  max |diff| P: {np.abs(p_fake - (1.0 - p_real_ref)).max():.2e}"
        f"  logit: {np.abs(logit_fake + logit_real_ref).max():.2e}"
    )

    np.testing.assert_allclose(p_fake, 1.0 - p_real_ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(logit_fake, -logit_real_ref, atol=1e-4, rtol=1e-4)  # also where P saturates
    is_fake = np.array([path.parent.name == "df" for path in crops])
    assert is_fake.any() and (~is_fake).any()
    np.testing.assert_array_equal(p_fake > 0.5, is_fake)


@pytest.mark.parametrize("arch", ["MesoInception", "Meso4"])
def test_f2f_weights_load(mesonet_dir, arch):
    h5 = WEIGHTS / f"{arch}_F2F.h5"
    if not h5.is_file():
        pytest.skip(f"{h5} is absent")
    net = load_keras_weights(NETS[arch](), h5).eval()
    with torch.no_grad():
        assert torch.isfinite(net(torch.rand(2, 3, 256, 256))).all()


# ---------------------------------------------------------------------------------------------------
# invalid files
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def inception_copy(mesonet_dir, tmp_path) -> Path:
    dst = tmp_path / "MesoInception_DF_modified.h5"
    shutil.copyfile(WEIGHTS / "MesoInception_DF.h5", dst)
    return dst


def _assert_untouched_on_error(h5_path, *needles, cls=MesoInception4):
    net = cls()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(WeightsError) as info:
        load_keras_weights(net, h5_path)
    message = str(info.value)
    print("\n", message)
    assert isinstance(info.value, ValueError)
    for needle in (str(h5_path), *needles):
        assert needle in message
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_not_hdf5_raises(tmp_path):
    bad = tmp_path / "corrupt.h5"
    bad.write_bytes(b"this is not an HDF5 file\n" * 10)
    _assert_untouched_on_error(bad, "not an HDF5 file")


def test_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.h5"):
        load_keras_weights(Meso4(), tmp_path / "nowhere.h5")


def test_removed_layer_raises(inception_copy):
    with h5py.File(inception_copy, "r+") as f:
        del f["conv2d_15"]
        f.attrs["layer_names"] = [n for n in f.attrs["layer_names"] if n != b"conv2d_15"]
    # batch_normalization_3 now sits where conv2d_15 (5x5, 12 -> 16 channels) belongs
    _assert_untouched_on_error(
        inception_copy, "batch_normalization_3", "conv3", "(5, 5, 12, 16)", "gamma (16,)"
    )


def test_removed_last_layer_raises(inception_copy):
    with h5py.File(inception_copy, "r+") as f:
        del f["dense_2"]
        f.attrs["layer_names"] = [n for n in f.attrs["layer_names"] if n != b"dense_2"]
    _assert_untouched_on_error(inception_copy, "missing layer", "dense2", "(16, 1)")


def test_group_listed_but_absent_raises(inception_copy):
    with h5py.File(inception_copy, "r+") as f:
        del f["batch_normalization_2"]
    _assert_untouched_on_error(inception_copy, "batch_normalization_2")


def test_extra_layer_raises(inception_copy):
    with h5py.File(inception_copy, "r+") as f:
        f.copy(f["dense_2"], "dense_3")
        f["dense_3"].move("dense_2", "dense_3")
        f["dense_3"].attrs["weight_names"] = [b"dense_3/kernel:0", b"dense_3/bias:0"]
        f.attrs["layer_names"] = [*f.attrs["layer_names"], b"dense_3"]
    _assert_untouched_on_error(inception_copy, "extra layer", "dense_3", "(16, 1)")


def test_misshaped_kernel_raises(inception_copy):
    with h5py.File(inception_copy, "r+") as f:
        del f["conv2d_3/conv2d_3/kernel:0"]
        f["conv2d_3/conv2d_3/kernel:0"] = np.zeros((5, 5, 4, 4), np.float32)
    _assert_untouched_on_error(inception_copy, "conv2d_3", "inc1.b3", "(3, 3, 4, 4)", "(5, 5, 4, 4)")


def test_meso4_weights_into_mesoinception_raises(mesonet_dir):
    h5 = WEIGHTS / "Meso4_DF.h5"
    _assert_untouched_on_error(h5, "MesoInception4", "conv2d_5", "(3, 3, 3, 8)")


def test_mesoinception_weights_into_meso4_raises(mesonet_dir):
    _assert_untouched_on_error(WEIGHTS / "MesoInception_DF.h5", "Meso4", cls=Meso4)
