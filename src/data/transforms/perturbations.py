"""Test-time perturbation levels (the seed study's none, flip, heavy, and jpeg), each a function of the model
input ``size`` that conf/augment/<level>.yaml builds (``_target_`` + ``_partial_: true``; the YAML also
carries the level's display title and axis position). Every level resizes to ``size`` FIRST and perturbs
afterwards, so a level's strength (noise std, blur sigma, dropout rate, JPEG block grid, rotation) is defined
in pixels of the model's input and is the same for MesoNet (256), ResNet (224) and Xception (299). A new level
is a function here, or any albumentations steps through ``at_model_input``, plus one YAML.

The imgaug steps albumentations lacks are transforms here (``RandomDropout``, ``LinearContrast``,
``GrayscaleBlend``, ``JpegRecompression``). With one draw per clip, random fields (the noise map, the dropout
mask) are drawn once too: every frame of a video carries the same noise pattern.
"""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import cv2
import numpy as np

from src.data.transforms.batched import FlipResize
from src.data.transforms.pipelines import Pipeline, check_size, resize_to

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


def _pair(value: Sequence[float], name: str) -> tuple[float, float]:
    # YAML lists arrive as ListConfig; albumentations wants plain tuples.
    pair = tuple(float(v) for v in value)
    if len(pair) != 2 or pair[0] > pair[1]:
        raise ValueError(f"{name} must be a [low, high] pair with low <= high, got {list(value)!r}")
    return pair  # type: ignore[return-value]


def _rotation(max_rotation: float) -> A.Affine:
    # Uniform angle in [-max, max], bilinear, constant black border (imgaug Affine's defaults).
    return A.Affine(rotate=(-float(max_rotation), float(max_rotation)), p=1.0)


def none(size: int) -> Pipeline:
    """No perturbation: only the resize to the model input (read a batch at a time).

    Args:
        size: the model input side.
    """
    check_size(size)
    return Pipeline(A.Compose([resize_to(size)]), FlipResize(0.0, 0.0, size))


def flip(
    size: int,
    horizontal_flip_p: float = 0.5,
    vertical_flip_p: float = 0.5,
    max_rotation: float = MAX_ROTATION,
) -> A.Compose:
    """The seed study's "slightly rotated and/or flipped": independent horizontal and vertical flips and a
    uniform rotation in [-max_rotation, max_rotation] degrees, one draw per clip.

    Args:
        size: the model input side.
        horizontal_flip_p: the horizontal flip's probability.
        vertical_flip_p: the vertical flip's probability.
        max_rotation: the largest rotation, degrees.
    """
    check_size(size)
    return A.Compose(
        [
            resize_to(size),
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
    fraction of 255), ContrastNormalization(alpha), Grayscale(alpha), Flipud(p), Affine(rotate).

    Args:
        size: the model input side.
        brightness_range: the multiplier's [low, high].
        blur_sigma_range: the Gaussian blur's sigma, pixels at the model input.
        dropout_range: the share of pixels set to 0.
        noise_std_range: the noise std, a fraction of 255.
        contrast_range: the contrast factor about mid-grey.
        grayscale_range: the blend towards grayscale.
        vertical_flip_p: the vertical flip's probability.
        max_rotation: the largest rotation, degrees.
    """
    check_size(size)
    low_sigma, high_sigma = _pair(blur_sigma_range, "blur_sigma_range")
    # sigma exactly 0 divides by zero in albumentations 2.0.8's kernel; 1e-3 is already a no-op blur
    sigma = (max(low_sigma, 1e-3), max(high_sigma, 1e-3))
    return A.Compose(
        [
            resize_to(size),
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
    from ``quality_range``, once per clip; the 8x8 block grid lies on the model input.

    Args:
        size: the model input side.
        quality_range: [low, high] JPEG quality, within [1, 100].
    """
    check_size(size)
    low, high = (int(q) for q in _pair(quality_range, "quality_range"))
    if not 1 <= low <= high <= 100:
        raise ValueError(f"quality_range must lie within [1, 100], got {list(quality_range)!r}")
    return A.Compose([resize_to(size), JpegRecompression(quality_range=(low, high), p=1.0)])


def at_model_input(size: int, steps: Sequence[A.BasicTransform] = ()) -> A.Compose:
    """Any albumentations steps after the resize to the model input: a level written in YAML alone, e.g.
    ``transform: {_target_: src.data.transforms.perturbations.at_model_input, _partial_: true, steps: [{_target_:
    albumentations.Posterize, num_bits: 4, p: 1.0}]}``.

    Args:
        size: the model input side.
        steps: albumentations transforms applied after the resize.
    """
    check_size(size)
    return A.Compose([resize_to(size), *steps])
