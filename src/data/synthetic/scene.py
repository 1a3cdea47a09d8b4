"""What the videos of both synthetic Celeb-DF generators are made of: a static background, smooth random
head motion, blinks, talking, lighting, camera noise, and the face-swap blending mask."""

from __future__ import annotations

from statistics import NormalDist

import cv2
import numpy as np

from src.data.synthetic.painting import (
    FACE_CX,
    FACE_CY,
    FACE_HALF_HEIGHT,
    MOUTH_LEVELS,
    Textures,
    polygon_mask,
)

# Standard normal quantiles of 256 equiprobable bins: camera noise drawn from bytes, 4x faster than normals.
NORMAL_LUT = np.array([NormalDist().inv_cdf((k + 0.5) / 256) for k in range(256)], np.float32)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Rounded and clipped to 0..255 uint8.

    Args:
        x: float pixels.
    """
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def smooth_wave(rng: np.random.Generator, t: np.ndarray, amp: float, fmax: float) -> np.ndarray:
    """A smooth random signal within [-amp, amp]: two sinusoids of random frequency up to fmax."""
    f = rng.uniform(0.2, 1.0, 2) * fmax
    phase = rng.uniform(0, 2 * np.pi, 2)
    return amp * 0.5 * (np.sin(2 * np.pi * f[0] * t + phase[0]) + np.sin(2 * np.pi * f[1] * t + phase[1]))


def _muted(rng: np.random.Generator, luma: float) -> np.ndarray:
    return luma * rng.uniform(0.7, 1.3) * (1 + rng.uniform(-0.3, 0.3, 3))


def draw_background(rng: np.random.Generator, h: int, w: int, luma: float) -> np.ndarray:
    """A static, slightly defocused room-like background of about the given luma."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * (xs / w - 0.5) + np.sin(angle) * (ys / h - 0.5) + 0.5)[..., None]
    bg = _muted(rng, luma) * (1 - ramp) + _muted(rng, luma) * ramp
    blobs = 0.4 * rng.standard_normal((4, 5, 3)) + rng.standard_normal((4, 5, 1))
    bg += 14 * cv2.resize(blobs.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(rng.integers(2, 5)):  # wall panels, doors, windows, furniture
        x0, y0 = rng.uniform(-0.1, 0.9) * w, rng.uniform(-0.1, 0.9) * h
        x1, y1 = x0 + rng.uniform(0.1, 0.5) * w, y0 + rng.uniform(0.15, 0.8) * h
        panel = np.zeros((h, w, 1), np.float32)
        cv2.rectangle(panel, (int(x0), int(y0)), (int(x1), int(y1)), 0.7, -1)
        bg = bg * (1 - panel) + _muted(rng, luma) * panel
    return cv2.GaussianBlur(bg.astype(np.float32), (0, 0), 1.5)


def swap_mask(target: Textures, source: Textures, rng: np.random.Generator, strength: float) -> np.ndarray:
    """The blending mask in texture coordinates, within the source face oval: a rounded shape from above
    the brows to below the mouth, whose edge gets sharper and wobblier with strength."""
    theta = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    cos, sin = np.cos(theta), np.sin(theta)
    up = sin < 0  # image y grows downwards
    power = np.where(up, 4.0, 2.5)  # squarer over the brows, rounder at the chin
    harmonics = np.arange(2, 6)[:, None] * theta + rng.uniform(0, 2 * np.pi, (4, 1))
    wobble = 1 + 0.03 * strength * (rng.uniform(-1, 1, (4, 1)) * np.sin(harmonics)).sum(0)
    x = 0.92 * min(target.face_w, source.face_w) * np.sign(cos) * np.abs(cos) ** (2 / power)
    y = FACE_HALF_HEIGHT * np.where(up, 0.62, 0.88) * np.sign(sin) * np.abs(sin) ** (2 / power)
    shape = polygon_mask(
        list(zip(FACE_CX + x * wobble, FACE_CY + y * wobble, strict=True)), blur=5 / (1 + 2 * strength)
    )
    return shape * source.face[0, 0, ..., 3].astype(np.float32) / 255


def talk_curve(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Mouth texture levels of a talking speaker with pauses."""
    talk = 0.45 + 0.55 * np.sin(2 * np.pi * rng.uniform(2, 4) * t + rng.uniform(0, 2 * np.pi))
    talk *= smooth_wave(rng, t, 1.0, 0.3) > -0.4
    return np.abs(talk[:, None] - np.array(MOUTH_LEVELS)).argmin(1)


def head_affines(scale: np.ndarray, roll: np.ndarray, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    """(T, 2, 3) texture -> frame affines that put the face centre at cx, cy, scaled and rolled."""
    cos, sin = scale * np.cos(roll), scale * np.sin(roll)
    return np.stack(
        [
            np.stack([cos, -sin, cx - cos * FACE_CX + sin * FACE_CY], 1),
            np.stack([sin, cos, cy - sin * FACE_CX - cos * FACE_CY], 1),
        ],
        1,
    )


def blink_curve(rng: np.random.Generator, n: int, fps: int) -> np.ndarray:
    """Eye texture levels (index into _EYE_LEVELS, 0 = open) of n frames with a blink every few seconds."""
    eyes = np.zeros(n, np.int64)
    blink = rng.uniform(0, 1.6)
    while blink * fps < n:  # a blink: half closed, closed, closed, half closed
        start = int(blink * fps)
        eyes[start : start + 4] = (1, 2, 2, 1)[: n - start]
        blink += rng.uniform(1.6, 3.6)
    return eyes


def lighting_field(gain: np.ndarray, gx: np.ndarray, gy: np.ndarray, h: int, w: int) -> np.ndarray:
    """(T, H, W) multiplicative lighting: a gain and a linear gradient of slopes gx, gy across the frame."""
    ys, xs = np.linspace(-1, 1, h)[None, :, None], np.linspace(-1, 1, w)[None, None, :]
    return (gain[:, None, None] * (1 + gx[:, None, None] * xs + gy[:, None, None] * ys)).astype(np.float32)
