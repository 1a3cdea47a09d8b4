"""Video decoding with decord: N evenly spaced frames (`data.frame_sampling`), read with one batched call."""

from __future__ import annotations

import os
import re
import stat
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

# "[02:40:10] /github/workspace/src/video/video_reader.cc:486: " in front of decord's messages
_DECORD_LOCATION = re.compile(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ")
_FFMPEG_PREFIX = re.compile(r"\[[\w,]+ @ 0x[0-9a-f]+\] ")  # "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x5597...] "


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


def linspace_indices(num_total: int, num_wanted: int) -> np.ndarray:
    """`round(numpy.linspace(0, num_total - 1, num_wanted))`: first and last frame included. A video of fewer
    frames than wanted yields each of its frames once (the distinct values of that linspace), as with
    `evenly_spaced_indices`."""
    if num_total <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.round(np.linspace(0, num_total - 1, num_wanted)).astype(np.int64))


# data.frame_sampling: which frames of a video are cached
FRAME_SAMPLINGS = {"centres": evenly_spaced_indices, "linspace": linspace_indices}


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


def read_frames(
    path: str | Path, num_frames: int, sampling: str = "centres"
) -> tuple[np.ndarray, np.ndarray]:
    """Decode `num_frames` RGB frames spread by `sampling` (FRAME_SAMPLINGS): (frames (N, H, W, 3) uint8,
    frame indices).

    A video shorter than `num_frames` yields all its frames; the caller decides whether that is enough.
    """
    import decord  # imported here: worker processes pay for it only when they decode

    path = Path(path)
    problem = not_a_video_file(path)
    if problem:
        raise VideoDecodeError(f"{path}: {problem}")
    if path.stat().st_size == 0:
        raise VideoDecodeError(f"{path}: empty file (0 bytes)")
    native: list[str] = []
    try:
        with _native_stderr_captured(native):
            reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except Exception as error:  # RuntimeError "Error reading <path>...": no container/stream ffmpeg can open
        raise VideoDecodeError(
            f"{path}: cannot open as a video (truncated, damaged or not a video file; {_reason(error, native)})"
        ) from error
    try:
        total = len(reader)
        indices = FRAME_SAMPLINGS[sampling](total, num_frames)
        if len(indices) == 0:
            raise VideoDecodeError(f"{path}: no decodable frames")
        with _native_stderr_captured(native):
            frames = reader.get_batch(indices.tolist()).asnumpy()
    except VideoDecodeError:
        raise
    except Exception as error:  # decord raises its own DECORDError and RuntimeErrors for bad streams
        reason = f"cannot decode its frames (damaged stream; {_reason(error, native)})"
        raise VideoDecodeError(f"{path}: {reason}") from error
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise VideoDecodeError(f"{path}: unexpected frame array shape {frames.shape}")
    return np.ascontiguousarray(frames), indices


@contextmanager
def _native_stderr_captured(into: list[str]):
    """decord (C++) and FFmpeg write "ERROR opening: ... Invalid data", "moov atom not found" or "Failed to
    seek" straight to file descriptor 2, past Python's logging and without saying which video of a batch
    they mean; their text is appended to `into`, for the one-line reason that names the video."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no file descriptor 2 (an embedding host): leave it alone
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            into.append(sink.read().decode("utf-8", "replace"))


def _reason(error: Exception, native: list[str] = ()) -> str:
    """decord's message and what it printed, without timestamps, C++ source locations and FFmpeg prefixes."""
    printed = _FFMPEG_PREFIX.sub("", " ".join(native))
    text = " ".join(_DECORD_LOCATION.sub("", f"{error} {printed}").split())
    return f"{type(error).__name__}: {text[:300]}"
