"""Albumentations 2.0.8 pipelines: training augmentation and the seed study's test-time perturbations.

Inputs are uint8 RGB face crops; outputs are uint8 ``size x size`` (normalisation is the model's job).
``augment_clip`` applies one parameter draw to every frame of a clip, so a clip stays temporally
consistent, and is reproducible for a seed. With one draw per clip, random *fields* (the noise map, the
dropout mask) are drawn once too: every frame of a video carries the same noise pattern.

Every pipeline is a plain function ``name(size, **params)`` that a YAML builds as a partial (the data module
passes the model's input ``size``): training augmentation from conf/train_augment/<name>.yaml (``weak``,
``strong``), test-time perturbation from conf/augment/<level>.yaml (``none``, ``flip``, ``heavy``, ``jpeg``;
each resizes to the model input first and perturbs after). A new one is a function here, or any
albumentations steps through ``at_model_input``, plus one YAML.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence

import albumentations as A
import cv2
import numpy as np

MAX_ROTATION = 15.0  # degrees: the "small rotations" of the seed study's flip and heavy levels


class RandomDropout(A.ImageOnlyTransform):
    """imgaug ``Dropout(p=(lo, hi))``: the drop rate is drawn per call, then whole pixels are set to 0.

    ``A.PixelDropout`` only takes a fixed rate, hence this transform. The mask is drawn once per call,
    so every frame of an ``images=`` stack loses the same pixels.
    """

    def __init__(self, rate_range: tuple[float, float] = (0.0, 0.2), p: float = 1.0):
        super().__init__(p=p)
        self.rate_range = tuple(rate_range)

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        rate = self.py_random.uniform(*self.rate_range)
        return {"drop_mask": self.random_generator.random(params["shape"][:2]) < rate}

    def apply(self, img: np.ndarray, drop_mask: np.ndarray, **params) -> np.ndarray:
        out = img.copy()
        out[drop_mask] = 0
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("rate_range",)


class LinearContrast(A.ImageOnlyTransform):
    """imgaug ``ContrastNormalization(alpha)``: ``(x - 128) * alpha + 128`` on uint8.

    Albumentations' contrast transforms pivot on the image mean, not on mid-grey, hence this one.
    """

    def __init__(self, alpha_range: tuple[float, float] = (0.5, 2.0), p: float = 1.0):
        super().__init__(p=p)
        self.alpha_range = tuple(alpha_range)

    def get_params(self) -> dict:
        return {"alpha": self.py_random.uniform(*self.alpha_range)}

    def apply(self, img: np.ndarray, alpha: float, **params) -> np.ndarray:
        lut = np.clip((np.arange(256, dtype=np.float32) - 128.0) * alpha + 128.0, 0, 255)
        return np.rint(lut).astype(np.uint8)[img]

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("alpha_range",)


class GrayscaleBlend(A.ImageOnlyTransform):
    """imgaug ``Grayscale(alpha)``: blend with the grayscale image, alpha drawn per call.

    ``A.ToGray`` is all-or-nothing, hence this transform.
    """

    def __init__(self, alpha_range: tuple[float, float] = (0.0, 1.0), p: float = 1.0):
        super().__init__(p=p)
        self.alpha_range = tuple(alpha_range)

    def get_params(self) -> dict:
        return {"alpha": self.py_random.uniform(*self.alpha_range)}

    def apply(self, img: np.ndarray, alpha: float, **params) -> np.ndarray:
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None].astype(np.float32)
        blended = img.astype(np.float32) * (1.0 - alpha) + gray * alpha
        return np.clip(np.rint(blended), 0, 255).astype(np.uint8)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("alpha_range",)


class JpegRecompression(A.ImageOnlyTransform):
    """JPEG encode + decode at a quality drawn per call (integers, both ends included).

    ``A.ImageCompression`` (2.0.8) hands RGB arrays to OpenCV, which encodes them as BGR, so its luma and
    chroma mix up red and blue; this one converts to BGR first, as a real RGB image would be encoded.
    """

    def __init__(self, quality_range: tuple[int, int] = (30, 70), p: float = 1.0):
        super().__init__(p=p)
        self.quality_range = tuple(quality_range)

    def get_params(self) -> dict:
        return {"quality": self.py_random.randint(*self.quality_range)}

    def apply(self, img: np.ndarray, quality: int, **params) -> np.ndarray:
        ok, data = cv2.imencode(
            ".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
        )
        if not ok:
            raise RuntimeError(f"OpenCV could not JPEG-encode a {img.shape} {img.dtype} image")
        return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("quality_range",)


def _resize(size: int) -> A.Resize:
    # INTER_AREA when shrinking avoids aliasing; linear when enlarging.
    return A.Resize(size, size, area_for_downscale="image")


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")


# --- training augmentation -----------------------------------------------------------------------
# conf/train_augment/<name>.yaml builds one of these (``_target_`` + ``_partial_: true``; the data module
# passes ``size``). The crop is perturbed first and resized last, at the cached resolution.


def weak(size: int, horizontal_flip_p: float = 0.5) -> A.Compose:
    """A horizontal flip, then the resize to the model input."""
    _check_size(size)
    return A.Compose([A.HorizontalFlip(p=horizontal_flip_p), _resize(size)])


def strong(size: int, horizontal_flip_p: float = 0.5) -> A.Compose:
    """The flip, then compression, noise, blur, colour and geometry jitter, then the resize."""
    _check_size(size)
    steps = [
        A.HorizontalFlip(p=horizontal_flip_p),
        A.ImageCompression(compression_type="jpeg", quality_range=(60, 100), p=0.5),
        A.GaussNoise(std_range=(0.01, 0.05), per_channel=False, p=0.2),
        A.GaussianBlur(sigma_limit=(0.2, 1.2), blur_limit=0, p=0.1),
        A.ColorJitter(
            brightness=(0.8, 1.2), contrast=(0.8, 1.2), saturation=(0.8, 1.2), hue=(-0.03, 0.03), p=0.5
        ),
        A.ToGray(p=0.1),
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.06, 0.06), rotate=(-10, 10), p=0.5),
    ]
    return A.Compose([*steps, _resize(size)])


# --- test-time perturbation levels ------------------------------------------------------------------
# One function per level, each returning the pipeline for a model input ``size``. conf/augment/<level>.yaml
# builds it (``_target_`` + ``_partial_: true``; the data module passes ``size``) and carries its display
# title and axis position. Every level resizes to ``size`` FIRST and perturbs afterwards, so a level's
# strength (noise std, blur sigma, dropout rate, JPEG block grid, rotation) is defined in pixels of the
# model's input and is the same for MesoNet (256), ResNet (224) and Xception (299).


def _pair(value: Sequence[float], name: str) -> tuple[float, float]:
    # YAML lists arrive as ListConfig; albumentations wants plain tuples.
    pair = tuple(float(v) for v in value)
    if len(pair) != 2 or pair[0] > pair[1]:
        raise ValueError(f"{name} must be a [low, high] pair with low <= high, got {list(value)!r}")
    return pair  # type: ignore[return-value]


def _rotation(max_rotation: float) -> A.Affine:
    # Uniform angle in [-max, max], bilinear, constant black border (imgaug Affine's defaults).
    return A.Affine(rotate=(-float(max_rotation), float(max_rotation)), p=1.0)


def none(size: int) -> A.Compose:
    """No perturbation: only the resize to the model input."""
    _check_size(size)
    return A.Compose([_resize(size)])


def flip(
    size: int,
    horizontal_flip_p: float = 0.5,
    vertical_flip_p: float = 0.5,
    max_rotation: float = MAX_ROTATION,
) -> A.Compose:
    """The seed study's "slightly rotated and/or flipped": independent horizontal and vertical flips and a
    uniform rotation in [-max_rotation, max_rotation] degrees, one draw per clip."""
    _check_size(size)
    return A.Compose(
        [
            _resize(size),
            A.HorizontalFlip(p=horizontal_flip_p),
            A.VerticalFlip(p=vertical_flip_p),
            _rotation(max_rotation),
        ]
    )


def heavy(
    size: int,
    brightness_range: Sequence[float] = (0.5, 1.5),
    blur_sigma_range: Sequence[float] = (0.0, 3.0),
    dropout_range: Sequence[float] = (0.0, 0.2),
    noise_std_range: Sequence[float] = (0.0, 0.1),
    contrast_range: Sequence[float] = (0.5, 2.0),
    grayscale_range: Sequence[float] = (0.0, 1.0),
    vertical_flip_p: float = 0.5,
    max_rotation: float = MAX_ROTATION,
) -> A.Compose:
    """The seed study's imgaug sequence, in its order, every step always applied, at the model input:
    Multiply(brightness), GaussianBlur(sigma, pixels), Dropout(rate), AdditiveGaussianNoise(std as a
    fraction of 255), ContrastNormalization(alpha), Grayscale(alpha), Flipud(p), Affine(rotate)."""
    _check_size(size)
    low_sigma, high_sigma = _pair(blur_sigma_range, "blur_sigma_range")
    # sigma exactly 0 divides by zero in albumentations 2.0.8's kernel; 1e-3 is already a no-op blur
    sigma = (max(low_sigma, 1e-3), max(high_sigma, 1e-3))
    return A.Compose(
        [
            _resize(size),
            A.MultiplicativeNoise(
                multiplier=_pair(brightness_range, "brightness_range"),
                per_channel=False,
                elementwise=False,
                p=1.0,
            ),
            A.GaussianBlur(sigma_limit=sigma, blur_limit=0, p=1.0),
            RandomDropout(rate_range=_pair(dropout_range, "dropout_range"), p=1.0),
            A.GaussNoise(
                std_range=_pair(noise_std_range, "noise_std_range"),
                mean_range=(0.0, 0.0),
                per_channel=False,
                p=1.0,
            ),
            LinearContrast(alpha_range=_pair(contrast_range, "contrast_range"), p=1.0),
            GrayscaleBlend(alpha_range=_pair(grayscale_range, "grayscale_range"), p=1.0),
            A.VerticalFlip(p=vertical_flip_p),
            _rotation(max_rotation),
        ]
    )


def jpeg(size: int, quality_range: Sequence[int] = (30, 70)) -> A.Compose:
    """JPEG re-compression of the face crop at a quality drawn uniformly (integers, both ends included)
    from ``quality_range``, once per clip; the 8x8 block grid lies on the model input."""
    _check_size(size)
    low, high = (int(q) for q in _pair(quality_range, "quality_range"))
    if not 1 <= low <= high <= 100:
        raise ValueError(f"quality_range must lie within [1, 100], got {list(quality_range)!r}")
    return A.Compose([_resize(size), JpegRecompression(quality_range=(low, high), p=1.0)])


def at_model_input(size: int, steps: Sequence[A.BasicTransform] = ()) -> A.Compose:
    """Any albumentations steps after the resize to the model input: a level written in YAML alone, e.g.
    ``transform: {_target_: src.data.transforms.augment.at_model_input, _partial_: true, steps: [{_target_:
    albumentations.Posterize, num_bits: 4, p: 1.0}]}``."""
    _check_size(size)
    return A.Compose([_resize(size), *steps])


def augment_clip(transform: A.Compose, frames: np.ndarray, seed: int | None) -> np.ndarray:
    """Apply ``transform`` with ONE parameter draw to all frames of a clip; reproducible for ``seed``.

    ``frames`` is uint8 (T, H, W, 3) (or a single (H, W, 3) frame, returned as such). ``seed=None``
    draws fresh entropy on every call, so forked DataLoader workers do not repeat each other.
    The transform's random state is replaced, so do not share one transform between threads.
    """
    frames = np.asarray(frames)
    single = frames.ndim == 3
    stack = frames[None] if single else frames
    if stack.ndim != 4 or stack.shape[-1] != 3 or stack.shape[0] == 0 or stack.dtype != np.uint8:
        raise ValueError(
            f"frames must be uint8 (T, H, W, 3) with T >= 1 or (H, W, 3), got {frames.dtype} {frames.shape}"
        )
    # One generator pair shared by every step. Compose.set_random_seed would give each step its own
    # generator with the *same* seed, so all p=0.5 decisions of a pipeline would coincide.
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
    out = transform(images=np.ascontiguousarray(stack))["images"]
    out = np.ascontiguousarray(out)
    return out[0] if single else out


def stable_seed(*parts: object) -> int:
    """A seed that is the same in every process and run (unlike ``hash``), e.g. ``stable_seed(seed, path)``
    so every model sees the same perturbation of a test video."""
    return zlib.crc32("\x1f".join(map(str, parts)).encode("utf-8"))
