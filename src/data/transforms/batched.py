"""Training batches read in one go: a batch's crops copied from the memory-mapped cache straight into one
array, flipped on the way, without albumentations' per-sample call.

Albumentations costs ~0.2 ms per call before it does any work (parameter set-up, a fresh generator per
clip), ten times a crop's read from the cache; for a pipeline made only of flips and the resize (`weak`,
`none`) that overhead is all there is. Such a pipeline declares its `FlipResize` (`batch_form`, see
`src.data.transforms.pipelines`), which draws each item's flips with the pipeline's probabilities and applies
them with albumentations' own resize, so an item comes out exactly as `augment_clip` would make it for the
same flips (`tests/data/test_batched.py` compares them). A transform that declares none keeps the per-sample
path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from albumentations.augmentations.geometric import functional as geometric
from torch.utils.data import default_collate, get_worker_info


class Collated(tuple):
    """A batch a dataset's `__getitems__` already assembled: `collate` passes it through."""


def collate(data):
    """The DataLoader's collate_fn: an assembled batch as it is, a list of samples stacked as usual."""
    return tuple(data) if isinstance(data, Collated) else default_collate(data)


@dataclass(frozen=True)
class FlipResize:
    """Horizontal and vertical flips with probabilities `horizontal_p`, `vertical_p`, then (when set) the resize
    to `size` x `size` as albumentations' `Resize(size, size, area_for_downscale="image")` makes it."""

    horizontal_p: float = 0.0
    vertical_p: float = 0.0
    size: int | None = None

    @property
    def deterministic(self) -> bool:
        return self.horizontal_p in (0.0, 1.0) and self.vertical_p in (0.0, 1.0)

    def draw(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """(count, 2) bool: each item's horizontal and vertical flip."""
        return rng.random((count, 2)) < np.array([self.horizontal_p, self.vertical_p])

    def output_side(self, side: int) -> int:
        return side if self.size is None else self.size

    def apply(self, frames: np.ndarray, flips: Sequence[bool], out: np.ndarray) -> None:
        """Write `frames` ((..., H, W, 3) uint8, e.g. a memory-mapped view) flipped by `flips` (horizontal,
        vertical) and resized into `out` (one copy when no resize is needed)."""
        # OpenCV's flip codes: 1 around the vertical axis (horizontal flip), 0 vertical, -1 both. A numpy view
        # with a negative stride copies 3-byte pixels one by one, ~60x slower than cv2.flip.
        code = {(True, False): 1, (False, True): 0, (True, True): -1}.get((bool(flips[0]), bool(flips[1])))
        stack = frames.reshape(-1, *frames.shape[-3:])
        target = out.reshape(-1, *out.shape[-3:])
        resize = self.size is not None and stack.shape[1:3] != (self.size, self.size)
        # area for shrinking, linear for enlarging: what `src.data.transforms.pipelines.resize_to` asks albumentations for
        mode = cv2.INTER_AREA if resize and self.size < max(stack.shape[1:3]) else cv2.INTER_LINEAR
        for i, frame in enumerate(stack):
            if resize:
                flipped = frame if code is None else cv2.flip(np.ascontiguousarray(frame), code)
                target[i] = geometric.resize(flipped, (self.size, self.size), mode)
            elif code is None:
                target[i] = frame
            else:
                cv2.flip(np.ascontiguousarray(frame), code, dst=target[i])


def empty_batch(shape: tuple[int, ...]) -> torch.Tensor:
    """A uint8 batch tensor; in a DataLoader worker, in shared memory, so the queue passes it without a copy."""
    batch = torch.empty(shape, dtype=torch.uint8)
    return batch.share_memory_() if get_worker_info() is not None else batch
