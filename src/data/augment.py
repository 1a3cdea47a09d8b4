"""Albumentations 2.0.8 pipelines: training augmentation and the seed study's test-time perturbations.

Inputs are uint8 RGB face crops; outputs are uint8 ``size x size`` (normalisation is the model's job).
``augment_clip`` applies one parameter draw to every frame of a clip, so a clip stays temporally
consistent, and is reproducible for a seed.
"""

from __future__ import annotations

import random
import zlib

import albumentations as A
import cv2
import numpy as np

TRAIN_LEVELS = ("weak", "strong")
TEST_LEVELS = ("none", "flip", "heavy")
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


def _resize(size: int) -> A.Resize:
    # INTER_AREA when shrinking avoids aliasing; linear when enlarging.
    return A.Resize(size, size, area_for_downscale="image")


def _check(level: str, valid: tuple[str, ...], kind: str) -> None:
    if level not in valid:
        raise ValueError(f"unknown {kind} augmentation level {level!r}; valid levels: {', '.join(valid)}")


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")


def build_train_transform(level: str, size: int) -> A.Compose:
    """Training augmentation: ``weak`` = flip; ``strong`` = compression, noise, blur, colour, geometry."""
    _check(level, TRAIN_LEVELS, "train")
    _check_size(size)
    steps: list[A.BasicTransform] = [A.HorizontalFlip(p=0.5)]
    if level == "strong":
        steps += [
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


def build_test_transform(level: str, size: int) -> A.Compose:
    """Test-time perturbation levels of the seed study: ``none``, ``flip`` (flips, small rotation) and
    ``heavy`` (its imgaug sequence, every step always applied, flip with p=0.5)."""
    _check(level, TEST_LEVELS, "test")
    _check_size(size)
    if level == "none":
        steps: list[A.BasicTransform] = []
    elif level == "flip":
        steps = [
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.Affine(rotate=(-MAX_ROTATION, MAX_ROTATION), p=1.0),
        ]
    else:  # heavy: iaa.Multiply, GaussianBlur, Dropout, AdditiveGaussianNoise, ContrastNormalization,
        # Grayscale, Flipud, Affine(rotate) in that order
        steps = [
            A.MultiplicativeNoise(multiplier=(0.5, 1.5), per_channel=False, elementwise=False, p=1.0),
            # sigma 0-3; exactly 0 would divide by zero in 2.0.8's kernel, 1e-3 is already a no-op blur
            A.GaussianBlur(sigma_limit=(1e-3, 3.0), blur_limit=0, p=1.0),
            RandomDropout(rate_range=(0.0, 0.2), p=1.0),
            A.GaussNoise(std_range=(0.0, 0.1), mean_range=(0.0, 0.0), per_channel=False, p=1.0),
            LinearContrast(alpha_range=(0.5, 2.0), p=1.0),
            GrayscaleBlend(alpha_range=(0.0, 1.0), p=1.0),
            A.VerticalFlip(p=0.5),
            A.Affine(rotate=(-MAX_ROTATION, MAX_ROTATION), p=1.0),
        ]
    return A.Compose([*steps, _resize(size)])


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
