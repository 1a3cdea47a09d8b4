"""Training augmentation: conf/train_augment/<name>.yaml builds one of these (``_target_`` + ``_partial_: true``;
the data module passes the model input ``size``). The crop is perturbed first and resized last, at the cached
resolution. ``train_augment=sbi`` is in ``src.data.transforms.sbi``.
"""

from __future__ import annotations

import albumentations as A

from src.data.transforms.batched import FlipResize
from src.data.transforms.pipelines import Pipeline, check_size, resize_to


def weak(size: int, horizontal_flip_p: float = 0.5) -> Pipeline:
    """A horizontal flip, then the resize to the model input; read a batch at a time (``FlipResize``).

    Args:
        size: the model input side.
        horizontal_flip_p: the flip's probability.
    """
    check_size(size)
    steps = A.Compose([A.HorizontalFlip(p=horizontal_flip_p), resize_to(size)])
    return Pipeline(steps, FlipResize(float(horizontal_flip_p), 0.0, size))


def strong(size: int, horizontal_flip_p: float = 0.5) -> A.Compose:
    """The flip, then compression, noise, blur, colour and geometry jitter, then the resize.

    Args:
        size: the model input side.
        horizontal_flip_p: the flip's probability.
    """
    check_size(size)
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
    return A.Compose([*steps, resize_to(size)])  # no batched form: per-sample albumentations
