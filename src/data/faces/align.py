"""Face crops from detected faces, boxed or aligned (`data.align`), with their landmarks in crop pixels.

Aligned crops map the five landmarks a detector gives (`src.data.faces.detectors.Face.landmarks`: the two eyes,
the nose tip, the two mouth corners) onto a fixed template by the least-squares similarity transform
(rotation, uniform scale, shift; Umeyama 1991), so the eye line is level whatever the head's roll. The
template is the 112x112 five-point reference face of ArcFace (Deng et al., CVPR 2019; the points insightface
publishes in its face_align utilities), normalised to [0, 1] and shrunk about the crop's centre by
`data.face_margin`, so the face takes 1/margin of the crop as a box crop's does. Frames whose landmarks the
detector did not find take them from the neighbouring detections, as boxes do (`src.data.faces.track`), and a
video without any face falls back to centre crops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from src.data.faces.detectors import Face
from src.data.faces.track import FaceTrack, crop_faces, fill_gaps, track_faces

# ArcFace's 112x112 reference points (x, y), left to right as seen in the image: the eyes, the nose tip, the
# mouth corners (the five-point template published with ArcFace / insightface)
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)


@dataclass
class FaceCrops:
    """One video's crops, how their boxes were found, and the detected landmarks in crop pixels."""

    crops: np.ndarray  # (N, S, S, 3) uint8
    track: FaceTrack
    landmarks: np.ndarray  # (N, 5, 2) float x, y in crop pixels; NaN where the detector found none


def face_template(margin: float) -> np.ndarray:
    """The five reference points in [0, 1] crop units, shrunk about the centre so the face is 1/margin of the
    crop."""
    return 0.5 + (ARCFACE_TEMPLATE_112 / 112.0 - 0.5) / margin


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The (2, 3) rotation + uniform scale + shift that maps the (K, 2) `source` points closest to `target` in
    least squares, without reflection (Umeyama 1991)."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    centred_source, centred_target = source - source_mean, target - target_mean
    covariance = centred_target.T @ centred_source / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])  # no mirror image
    rotation = u @ sign @ vt
    variance = (centred_source**2).sum(axis=1).mean()
    scale = float(np.trace(np.diag(singular) @ sign) / variance) if variance > 0 else 1.0
    shift = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, shift[:, None]])


def transform_points(points: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """(N, K, 2) points mapped by (N, 2, 3) affine matrices, one per frame (NaN stays NaN)."""
    return np.einsum("nij,nkj->nki", matrices[:, :, :2], points) + matrices[:, None, :, 2]


def box_matrices(boxes: np.ndarray, crop_size: int) -> np.ndarray:
    """(N, 2, 3) maps from frame to crop pixels of square `boxes` resized to `crop_size` (as cv2.resize
    places pixel centres)."""
    boxes = np.asarray(boxes, np.float64)
    zoom = crop_size / (boxes[:, 2] - boxes[:, 0])
    matrices = np.zeros((len(boxes), 2, 3))
    matrices[:, 0, 0] = matrices[:, 1, 1] = zoom
    matrices[:, 0, 2] = (0.5 - boxes[:, 0]) * zoom - 0.5
    matrices[:, 1, 2] = (0.5 - boxes[:, 1]) * zoom - 0.5
    return matrices


def aligned_matrices(landmarks: np.ndarray, crop_size: int, margin: float) -> np.ndarray:
    """(N, 2, 3) maps from frame to crop pixels taking each frame's (5, 2) landmarks onto the template."""
    target = face_template(margin) * crop_size
    return np.stack([similarity_transform(points, target) for points in landmarks])


def warp_faces(frames: np.ndarray, matrices: np.ndarray, crop_size: int) -> np.ndarray:
    """(N, S, S, 3) uint8 crops of `frames` through the (N, 2, 3) frame-to-crop `matrices`; outside the
    frame: black."""
    crops = np.empty((len(frames), crop_size, crop_size, 3), dtype=np.uint8)
    for i, (frame, matrix) in enumerate(zip(frames, matrices, strict=True)):
        scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
        if scale < 1:  # shrink by area averaging first, as crop_faces does: bilinear sampling alone aliases
            height, width = frame.shape[:2]
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            zoom_x, zoom_y = size[0] / width, size[1] / height
            # small-frame pixel -> full-frame pixel (pixel centres as cv2.resize places them), then -> crop
            unshrink = np.array(
                [[1 / zoom_x, 0, 0.5 / zoom_x - 0.5], [0, 1 / zoom_y, 0.5 / zoom_y - 0.5], [0, 0, 1]]
            )
            matrix = matrix @ unshrink
        crops[i] = cv2.warpAffine(
            frame,
            matrix,
            (crop_size, crop_size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
    return crops


def detected_landmarks(faces: list[Face | None]) -> np.ndarray:
    """(N, 5, 2) landmarks of the faces found, in frame pixels; NaN where no face or no landmarks."""
    found = np.full((len(faces), 5, 2), np.nan)
    for i, face in enumerate(faces):
        if face is not None and face.landmarks is not None:
            found[i] = face.landmarks
    return found


def make_crops(
    frames: np.ndarray,
    faces: list[Face | None],
    searched: np.ndarray,
    crop_size: int,
    margin: float,
    align: bool = False,
) -> FaceCrops:
    """The crops of one video's frames from its raw faces (`src.data.faces.track.detect_faces`): square boxes
    scaled by `margin`, or with `align` the landmarks taken onto the template. Frames without a face take boxes and landmarks from their neighbours; no face at all: centre
    crops."""
    if align:  # a face without landmarks cannot be aligned: it counts as none
        faces = [None if face is None or face.landmarks is None else face for face in faces]
    track = track_faces(
        [None if face is None else face.box for face in faces], frames.shape[1:3], margin, searched
    )
    found = detected_landmarks(faces)
    if align and not track.centre_fallback:
        filled = fill_gaps(found.reshape(len(found), -1)).reshape(found.shape)
        matrices = aligned_matrices(filled, crop_size, margin)
        crops = warp_faces(frames, matrices, crop_size)
    else:
        matrices = box_matrices(track.boxes, crop_size)
        crops = crop_faces(frames, track.boxes, crop_size)
    return FaceCrops(crops, track, transform_points(found, matrices))


def landmarks_to_json(landmarks: np.ndarray) -> list:
    """(N, 5, 2) landmarks as a cache entry stores them: per frame null (none found) or 5 [x, y], 0.01 px."""
    return [None if np.isnan(points).any() else np.round(points, 2).tolist() for points in landmarks]


def landmarks_from_json(stored: list | None, frames: int) -> np.ndarray:
    """A cache entry's stored landmarks as (N, 5, 2), NaN where none; entries built before landmarks were
    stored (`stored` None) have none. ValueError for a list that is not one null or 5 [x, y] per frame."""
    if stored is None:
        return np.full((frames, 5, 2), np.nan)
    array = np.array([[[np.nan] * 2] * 5 if points is None else points for points in stored], np.float64)
    if array.shape != (frames, 5, 2):
        raise ValueError(f"landmarks of shape {array.shape} for {frames} frames")
    return array
