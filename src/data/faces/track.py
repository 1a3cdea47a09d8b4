"""From a video's frames to square face crops: which frames the detector (`src.data.faces.detectors`) runs on
(`data.detect_every`), the boxes of the other frames filled from the neighbouring detections (a video
without any face falls back to centre crops), each box squared by `data.face_margin` and cropped at
`data.crop_size`. `src.data.faces.align` makes the crops (boxed, or aligned by the faces' landmarks) and the
face-crop cache (`src.data.cache`) puts them together per video.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from src.data.faces.detectors import Box, Face, FaceDetector


@dataclass
class FaceTrack:
    """Square crop boxes for a video's frames, and how each was obtained."""

    boxes: np.ndarray  # (N, 4) int x0, y0, x1, y1
    detected: np.ndarray  # (N,) bool: the detector ran on this frame and found a face in it
    centre_fallback: bool  # no face in any frame: every box is a centre crop
    searched: np.ndarray = field(default=None)  # (N,) bool: the detector ran on this frame (default: all)

    def __post_init__(self):
        if self.searched is None:
            self.searched = np.ones(len(self.detected), dtype=bool)

    @property
    def num_filled(self) -> int:
        """Frames whose box comes from neighbouring detections (not searched, or searched without a face)."""
        return 0 if self.centre_fallback else int((~self.detected).sum())

    @property
    def num_searched(self) -> int:
        return int(self.searched.sum())

    @property
    def num_missed(self) -> int:
        """Frames the detector ran on without finding a face."""
        return int((self.searched & ~self.detected).sum())


def track_faces(
    raw_boxes: list[Box | None],
    frame_shape: tuple[int, int],
    margin: float,
    searched: np.ndarray | None = None,
) -> FaceTrack:
    """Square boxes (scaled by `margin`, clamped to the frame) for every frame.

    A frame without a detection (not searched, or no face found) gets a box interpolated linearly
    between the nearest detections before and after it; before the first or after the last detection
    it takes the nearest one. A video without any detection falls back to a centre crop.
    `searched` marks the frames the detector ran on (default: every frame).
    """
    height, width = frame_shape
    detected = np.array([box is not None for box in raw_boxes], dtype=bool)
    searched = np.ones(len(raw_boxes), dtype=bool) if searched is None else np.asarray(searched, dtype=bool)
    if (detected & ~searched).any():
        raise ValueError("track_faces: a frame has a box but is not marked as searched")
    if not detected.any():
        side = min(height, width)
        box = (
            (width - side) // 2,
            (height - side) // 2,
            (width - side) // 2 + side,
            (height - side) // 2 + side,
        )
        return FaceTrack(np.tile(np.array(box), (len(raw_boxes), 1)), detected, True, searched)
    known = np.array([(np.nan,) * 4 if box is None else box for box in raw_boxes], dtype=np.float64)
    boxes = [square_box(tuple(b), margin, height, width) for b in fill_gaps(known)]
    return FaceTrack(np.array(boxes, dtype=np.int64), detected, False, searched)


def fill_gaps(values: np.ndarray) -> np.ndarray:
    """(N, D) rows with a NaN filled linearly between the nearest complete rows before and after; before the
    first or after the last complete row, the nearest one. At least one row must be complete."""
    values = np.asarray(values, dtype=np.float64)
    found = np.flatnonzero(~np.isnan(values).any(axis=1))
    positions = np.arange(len(values))
    # np.interp holds the end values outside [first, last] complete row: the nearest one at the ends
    return np.stack([np.interp(positions, found, values[found, c]) for c in range(values.shape[1])], axis=1)


def search_positions(num_frames: int, every: int) -> np.ndarray:
    """Which of `num_frames` sampled frames the detector runs on: the first, the last, and at most `every`
    apart in between (evenly spread), so every other frame lies between two searched ones."""
    if num_frames <= 0:
        return np.zeros(0, dtype=np.int64)
    every = max(1, int(every))
    count = math.ceil((num_frames - 1) / every) + 1
    return np.unique(np.round(np.linspace(0, num_frames - 1, count)).astype(np.int64))


def detect_faces(
    frames: np.ndarray, detector: FaceDetector, every: int = 1
) -> tuple[list[Face | None], np.ndarray]:
    """Raw faces (box, landmarks where the detector gives them) of `frames`, the detector run on every
    `every`-th (see `search_positions`).

    If those frames hold no face, the detector also runs on the others before the caller gives up on the video.
    Returns (one face or None per frame, which frames were searched).
    """
    searched = np.zeros(len(frames), dtype=bool)
    searched[search_positions(len(frames), every)] = True
    faces: list[Face | None] = [None] * len(frames)
    for round_mask in (searched.copy(), ~searched):
        positions = np.flatnonzero(round_mask)
        if len(positions) == 0:
            continue
        for i, face in zip(positions, detector.find_faces(frames[positions]), strict=True):
            faces[i] = face
        searched |= round_mask
        if any(face is not None for face in faces):
            break
    return faces, searched


def square_box(box: Box, margin: float, height: int, width: int) -> Box:
    """A square around `box`, its side the longer edge times `margin`, shifted (then clipped) into the frame."""
    x0, y0, x1, y1 = box
    side = min(int(round(max(x1 - x0, y1 - y0) * margin)), height, width)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    top = int(round(min(max(cy - side / 2, 0), height - side)))
    return left, top, left + side, top + side


def crop_faces(frames: np.ndarray, boxes: np.ndarray, crop_size: int) -> np.ndarray:
    """(N, crop_size, crop_size, 3) uint8 crops of `frames` at `boxes`."""
    crops = np.empty((len(frames), crop_size, crop_size, 3), dtype=np.uint8)
    for i, (frame, (x0, y0, x1, y1)) in enumerate(zip(frames, boxes, strict=True)):
        patch = frame[y0:y1, x0:x1]
        interpolation = cv2.INTER_AREA if patch.shape[0] > crop_size else cv2.INTER_LINEAR
        crops[i] = cv2.resize(patch, (crop_size, crop_size), interpolation=interpolation)
    return crops
