"""Video decoding with decord: N evenly spaced frames, read with one batched call."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import numpy as np

# "[02:40:10] /github/workspace/src/video/video_reader.cc:486: " in front of decord's messages
_DECORD_LOCATION = re.compile(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ")


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


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def not_a_video_file(path: str | Path) -> str:
    """Why `path` cannot be a video file ("" if it is a regular file), found without opening it: opening a
    FIFO blocks until a writer comes, and a device such as /dev/zero never ends."""
    try:
        mode = Path(path).stat().st_mode
    except FileNotFoundError:
        return "no such file"
    except OSError as error:
        return f"cannot stat: {error.strerror or error}"
    if stat.S_ISREG(mode):
        return ""
    kind = next((name for test, name in _KINDS if test(mode)), "not a file")
    return f"not a regular file ({kind})"


def read_frames(path: str | Path, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode `num_frames` evenly spaced RGB frames: (frames (N, H, W, 3) uint8, frame indices).

    A video shorter than `num_frames` yields all its frames; the caller decides whether that is enough.
    """
    import decord  # imported here: worker processes pay for it only when they decode

    path = Path(path)
    problem = not_a_video_file(path)
    if problem:
        raise VideoDecodeError(f"{path}: {problem}")
    if path.stat().st_size == 0:
        raise VideoDecodeError(f"{path}: empty file (0 bytes)")
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except Exception as error:  # RuntimeError "Error reading <path>...": no container/stream ffmpeg can open
        raise VideoDecodeError(
            f"{path}: cannot open as a video (truncated, damaged or not a video file; {_reason(error)})"
        ) from error
    try:
        total = len(reader)
        indices = evenly_spaced_indices(total, num_frames)
        if len(indices) == 0:
            raise VideoDecodeError(f"{path}: no decodable frames")
        frames = reader.get_batch(indices.tolist()).asnumpy()
    except VideoDecodeError:
        raise
    except Exception as error:  # decord raises its own DECORDError and RuntimeErrors for bad streams
        reason = f"cannot decode its frames (damaged stream; {_reason(error)})"
        raise VideoDecodeError(f"{path}: {reason}") from error
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise VideoDecodeError(f"{path}: unexpected frame array shape {frames.shape}")
    return np.ascontiguousarray(frames), indices


def _reason(error: Exception) -> str:
    """decord's message without its timestamps and C++ source locations."""
    text = " ".join(_DECORD_LOCATION.sub("", str(error)).split())
    return f"{type(error).__name__}: {text[:300]}"
