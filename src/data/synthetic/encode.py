"""Writing the synthetic videos: MPEG-4 Part 2 through OpenCV (preset v1, and v2 without PyAV's libx264)
or H.264 through PyAV at a chosen CRF, so that each file depends only on its frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    """MPEG-4 Part 2 through OpenCV: the fallback when PyAV has no libx264.

    Args:
        path: the .mp4 to write.
        frames: (T, H, W, 3) uint8 RGB.
        fps: frames per second.
    """
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write MPEG-4 video to {path}")
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def video_codec() -> str:
    """The codec v2 videos are written with: H.264 (libx264 through PyAV) when available, else MPEG-4 Part 2."""
    try:
        import av

        av.codec.Codec("libx264", "w")
        return "h264"
    except Exception:  # PyAV missing, or built without libx264
        return "mpeg4"


def encode_video(path: Path, frames: np.ndarray, fps: int, crf: int, codec: str) -> None:
    """Write RGB frames; ``crf`` (x264's constant rate factor) sets the compression of H.264 videos."""
    if codec == "mpeg4":
        write_mp4(path, frames, fps)
        return
    import av

    height, width = frames.shape[1:3]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # one thread: generation runs one video per core; the options make the file depend only on the frames
        stream.options = {"crf": str(crf), "preset": "veryfast", "threads": "1"}
        # Every frame object stays referenced, with explicit timestamps, until the encoder is flushed: x264
        # holds frames for its lookahead, and frames freed meanwhile made the output differ from run to run.
        planes = [
            av.VideoFrame.from_ndarray(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
            for frame in frames
        ]
        for index, plane in enumerate(planes):
            plane.pts = index
            for packet in stream.encode(plane):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
