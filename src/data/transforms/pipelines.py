"""What every transform is and declares: an albumentations pipeline applied with one parameter draw per clip
(``augment_clip``), the resize to the model input, and the two things a transform tells the datasets.

A transform (training augmentation, conf/train_augment; test-time perturbation, conf/augment) is built by a
YAML as a partial called with the model input ``size``. The datasets (``src.data.datasets``) ask it two
questions through ``yields_of`` and ``batch_form_of``, instead of testing its type:

- ``yields``: ``FRAMES`` (default) maps a frame or clip to one sample; ``PAIRS`` turns a real training item
  into real/fake samples made from it (``samples(crops, landmarks, label, item, seed, pairs)``, e.g.
  ``src.data.transforms.sbi``), so it gets each item's landmarks, and ``data.train_classes=real`` accepts it.
- ``batch_form``: a ``FlipResize`` that makes exactly what the pipeline makes, a whole batch at a time
  (``src.data.transforms.batched``); None (default): the per-sample path through albumentations.

``Pipeline`` carries both beside an ``A.Compose``; a bare ``A.Compose`` (e.g. from a user's own function) is
a frames transform without a batched path.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from typing import ClassVar

import albumentations as A
import numpy as np

from src.data.transforms.batched import FlipResize

FRAMES, PAIRS = "frames", "pairs"


@dataclass(frozen=True)
class Pipeline:
    """An albumentations pipeline with what it declares to the datasets (see the module docstring).

    Args:
        compose: the steps, applied to ``images=`` stacks with one parameter draw.
        batch_form: the same pipeline as a ``FlipResize`` when it is only flips and the resize, else None.
    """

    compose: A.Compose
    batch_form: FlipResize | None = None
    yields: ClassVar[str] = FRAMES

    def set_random_state(self, *args, **kwargs) -> None:
        """Albumentations' seeding hook (``augment_clip`` calls it), passed to the steps."""
        self.compose.set_random_state(*args, **kwargs)

    def __call__(self, **data):
        return self.compose(**data)


def yields_of(transform) -> str:
    """``FRAMES`` or ``PAIRS``: what a transform makes of a training item (undeclared: ``FRAMES``).

    Args:
        transform: a built training or test-time transform.
    """
    return getattr(transform, "yields", FRAMES)


def batch_form_of(transform) -> FlipResize | None:
    """The batched equivalent a transform declares, or None (undeclared, or no transform).

    Args:
        transform: a built transform, or None.
    """
    return getattr(transform, "batch_form", None)


def resize_to(size: int) -> A.Resize:
    """The resize to the model input every pipeline has: INTER_AREA when shrinking (no aliasing), linear
    when enlarging (what ``FlipResize`` reproduces).

    Args:
        size: the model input side, pixels.
    """
    return A.Resize(size, size, area_for_downscale="image")


def check_size(size: int) -> None:
    """A one-line error unless ``size`` is a positive integer.

    Args:
        size: the model input side the data module passes.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")


def augment_clip(transform: A.Compose | Pipeline, frames: np.ndarray, seed: int | None) -> np.ndarray:
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
