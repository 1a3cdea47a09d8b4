"""Video decoding with decord: N evenly spaced frames, read with one batched call."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class VideoDecodeError(RuntimeError):
    """A video file that cannot be decoded; the message names the file and the reason."""


def evenly_spaced_indices(num_total: int, num_wanted: int) -> np.ndarray:
    """Indices of `num_wanted` frames spread evenly over `num_total` (all of them if fewer)."""
    if num_total <= 0:
        return np.zeros(0, dtype=np.int64)
    if num_wanted >= num_total:
        return np.arange(num_total, dtype=np.int64)
    # centre of each of num_wanted equal segments, so first and last frames are not over-weighted
    return np.floor((np.arange(num_wanted) + 0.5) * num_total / num_wanted).astype(np.int64)


def read_frames(path: str | Path, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode `num_frames` evenly spaced RGB frames: (frames (N, H, W, 3) uint8, frame indices).

    A video shorter than `num_frames` yields all its frames; the caller decides whether that is enough.
    """
    import decord  # imported here: worker processes pay for it only when they decode

    path = Path(path)
    if not path.is_file():
        raise VideoDecodeError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise VideoDecodeError(f"{path}: empty file (0 bytes)")
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        total = len(reader)
        indices = evenly_spaced_indices(total, num_frames)
        if len(indices) == 0:
            raise VideoDecodeError(f"{path}: no decodable frames")
        frames = reader.get_batch(indices.tolist()).asnumpy()
    except VideoDecodeError:
        raise
    except Exception as error:  # decord raises its own DECORDError and RuntimeErrors for bad streams
        raise VideoDecodeError(f"{path}: cannot decode ({type(error).__name__}: {error})") from error
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise VideoDecodeError(f"{path}: unexpected frame array shape {frames.shape}")
    return np.ascontiguousarray(frames), indices
