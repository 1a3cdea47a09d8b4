"""The first synthetic Celeb-DF generator (preset ``v1``), kept for comparison: real videos and face swaps.

Its fakes paste a face rendered at 0.4x resolution without camera noise: a blur detector separates
them (the shortcut audit flags sharpness).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from src.data.synthetic.painting import FACE_HALF_HEIGHT, Textures
from src.data.synthetic.scene import (
    NORMAL_LUT,
    blink_curve,
    draw_background,
    head_affines,
    lighting_field,
    smooth_wave,
    swap_mask,
    talk_curve,
    to_uint8,
)


@dataclass(frozen=True)
class Clip:
    """A rendered real video, kept in parts so that its fakes are made from exactly the same stream."""

    clean: np.ndarray  # (T, H, W, 3) float32 RGB: background and person, lit
    noise: np.ndarray  # (T, H, W, 3) float32 camera noise, added last
    light: np.ndarray  # (T, H, W) float32 multiplicative lighting
    affines: np.ndarray  # (T, 2, 3) texture -> frame
    variants: np.ndarray  # (T, 2) eye and mouth texture levels
    faces: np.ndarray  # (T, 3) face centre x, y and face height, frame pixels

    def frames(self) -> np.ndarray:
        return to_uint8(self.clean + self.noise)


def render_real(tex: Textures, rng: np.random.Generator, n: int, size: tuple[int, int], fps: int) -> Clip:
    """A real v1 video of the identity painted in ``tex``.

    Args:
        tex: the identity's textures.
        rng: the video's random stream (a fake of it replays the same stream).
        n: frames.
        size: (height, width).
        fps: frames per second.
    """
    h, w = size
    t = np.arange(n) / fps  # seconds
    # A background darker than the skin, and an exposure that lifts dark faces part of the way, as a
    # camera would: a dark face in front of a bright wall defeats Haar cascades.
    bg = draw_background(rng, h, w, tex.skin_luma * rng.uniform(0.35, 0.8))
    exposure = np.sqrt(rng.uniform(130, 170) / tex.skin_luma)

    scale = rng.uniform(0.9, 1.1) * h / 240 * (1 + smooth_wave(rng, t, 0.05, 0.4))
    cx = w * (0.5 + rng.uniform(-0.08, 0.08)) + smooth_wave(rng, t, rng.uniform(0.03, 0.08) * w, 0.6)
    cy = h * (0.47 + rng.uniform(-0.03, 0.03)) + smooth_wave(rng, t, 0.025 * h, 0.6)
    roll = np.deg2rad(smooth_wave(rng, t, rng.uniform(2, 5), 0.5))
    affines = head_affines(scale, roll, cx, cy)

    eyes = blink_curve(rng, n, fps)
    mouth = talk_curve(rng, t)

    gain = exposure * (1 + smooth_wave(rng, t, 0.08, 0.3))
    gx = rng.uniform(-0.15, 0.15) + smooth_wave(rng, t, 0.06, 0.3)
    gy = rng.uniform(-0.1, 0.1) + smooth_wave(rng, t, 0.04, 0.3)
    light = lighting_field(gain, gx, gy, h, w)

    clean = np.empty((n, h, w, 3), np.float32)
    for i in range(n):
        layer = cv2.warpAffine(tex.full[eyes[i], mouth[i]], affines[i], (w, h), flags=cv2.INTER_LINEAR)
        alpha = layer[..., 3:].astype(np.float32) / 255
        clean[i] = (bg * (1 - alpha) + layer[..., :3]) * light[i, ..., None]
    noise = NORMAL_LUT[rng.integers(0, 256, (n, h, w, 3), np.uint8)] * np.float32(rng.uniform(2.0, 4.0))
    faces = np.stack([cx, cy, 2 * FACE_HALF_HEIGHT * scale], 1)
    return Clip(clean, noise, light, affines, np.stack([eyes, mouth], 1), faces)


def swap_face(
    clip: Clip, target: Textures, source: Textures, rng: np.random.Generator, strength: float
) -> np.ndarray:
    """The frames of ``clip`` with ``source``'s face pasted over the target's, traces scaled by strength."""
    n, h, w = clip.clean.shape[:3]
    mask_tex = swap_mask(target, source, rng, strength)
    ys, xs = np.nonzero(mask_tex)
    mask_corners = np.array(
        [
            [xs.min(), xs.max() + 1, xs.min(), xs.max() + 1],
            [ys.min(), ys.min(), ys.max() + 1, ys.max() + 1],
            [1, 1, 1, 1],
        ],
        np.float64,
    )
    low = 1 / (1 + 1.5 * strength)  # the swapped face is rendered at this resolution, then upscaled
    upscale = np.array([[1 / low, 0, 0], [0, 1 / low, 0]])
    tone = 1 + strength * rng.uniform(0.02, 0.05, 3) * rng.choice([-1, 1], 3)
    flicker = 1 + strength * 0.03 * rng.standard_normal(n)
    jitter = strength * 0.8 * rng.standard_normal((n, 2))
    drop_noise = min(strength, 1.0)  # the generated face lacks the camera noise

    out = clip.frames()
    for i in range(n):
        affine = clip.affines[i].copy()
        affine[:, 2] += jitter[i]
        corners = affine @ mask_corners
        x0, y0 = np.maximum(np.floor(corners.min(1)).astype(int) - 1, 0)
        x1, y1 = np.minimum(np.ceil(corners.max(1)).astype(int) + 1, (w, h))
        if x1 <= x0 or y1 <= y0:
            continue
        affine[:, 2] -= (x0, y0)  # work inside the box around the mask only
        size = (x1 - x0, y1 - y0)
        small = cv2.warpAffine(
            source.face[tuple(clip.variants[i])],
            affine * low,
            (int(size[0] * low) + 2, int(size[1] * low) + 2),
            flags=cv2.INTER_LINEAR,
        )
        layer = cv2.warpAffine(small, upscale, size, flags=cv2.INTER_LINEAR).astype(np.float32)
        face = layer[..., :3] * (255 / np.maximum(layer[..., 3:], 1)) * clip.light[i, y0:y1, x0:x1, None]
        m = cv2.warpAffine(mask_tex, affine, size, flags=cv2.INTER_LINEAR)
        clean, noise = clip.clean[i, y0:y1, x0:x1], clip.noise[i, y0:y1, x0:x1]
        # colour transfer to the target skin, then the imperfections: tone shift and flicker
        weight = m.sum() + 1e-6
        target_mean = np.einsum("hw,hwc->c", m, clean) / weight
        source_mean = np.einsum("hw,hwc->c", m, face) / weight
        face *= (target_mean / np.maximum(source_mean, 1e-3) * tone * flicker[i]).astype(np.float32)
        m = m[..., None]
        out[i, y0:y1, x0:x1] = to_uint8(clean + noise + m * (face - clean - drop_noise * noise))
    return out
