"""The default synthetic Celeb-DF generator (preset ``v2``): cameras, head turns, occluders and two
manipulation methods, built to pass the shortcut audit (``src.data.audit``) while the manipulation
traces stay local.

* People: the procedural faces of ``painting``, plus fine skin texture, hair, head turns up to about
  30 degrees (a cylinder warp of the head), face heights of 36-56 % of the frame, speakers who move
  more or less, and a hand or microphone in front of the lower face in about 30 % of the videos.
* Every real video has its own camera: defocus blur, sensor noise, exposure and H.264 CRF, drawn
  per video. A fake goes through the same camera as its target real video (blur and noise are
  applied after the paste), then is encoded with its own CRF, so no global statistic tells the
  classes apart.
* Two manipulation methods, each with a per-video random strength: a face swap (another identity's
  face inside a mask from the brows to the chin) and a mouth reenactment (the target's own mouth,
  driven by another speaker, inside a mask from below the nose to the chin). Their traces, all
  confined to the pasted region: a blending boundary with a thin darker seam line along the mask
  edge; a colour mismatch of the paste (5-22 % per channel); a paste rendered at 0.25-0.29x
  resolution in the face's own coordinates (a generator's aligned face warped back: the soft texture
  moves with the head instead of shimmering across the pixel grid) and sharpened back until the
  blended region has a random 0.52-1.0x of the real face's Laplacian variance there (so the
  face-region sharpness goes either way across fakes and only the soft, haloed texture remains),
  with the camera's noise over it like everywhere else; and a small per-frame brightness and
  position flicker of the pasted region, kept small so that it does not raise the whole frame's
  change or bitrate.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from src.data.synthetic.painting import (
    FACE_CX,
    FACE_CY,
    FACE_HALF_HEIGHT,
    LUMA,
    TEX_H,
    TEX_W,
    Textures,
    ellipse_mask,
    grain_field,
)
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

_SWAP, _REENACT = "swap", "reenact"
METHODS = (_SWAP, _REENACT)


@dataclass(frozen=True)
class Camera:
    """A real video's own camera (v2): a fake goes through its target's."""

    blur: float  # defocus, Gaussian sigma in pixels
    noise: float  # sensor noise deviation, grey levels
    crf: int  # compression


def draw_camera(rng: np.random.Generator) -> Camera:
    """A random ``Camera``.

    Args:
        rng: the video's random stream.
    """
    return Camera(blur=rng.uniform(0.0, 0.6), noise=rng.uniform(1.0, 4.0), crf=int(rng.integers(17, 26)))


@dataclass(frozen=True)
class ClipV2:
    """A rendered real video before and after its camera, kept for the fakes made from it."""

    clean: np.ndarray  # (T, H, W, 3) float32: the lit scene, occluder included
    shot: np.ndarray  # (T, H, W, 3) float32: clean through the camera's blur, plus its noise
    noise: np.ndarray  # (T, H, W, 3) float32
    light: np.ndarray  # (T, H, W) float32 multiplicative lighting
    occluder: np.ndarray  # (T, H, W) float32 coverage of whatever is in front of the face
    affines: np.ndarray  # (T, 2, 3) texture -> frame
    yaw: np.ndarray  # (T,) head turn, radians
    variants: np.ndarray  # (T, 2) eye and mouth texture levels
    faces: np.ndarray  # (T, 3) face centre x, y and face height, frame pixels
    camera: Camera


def _yaw_map(u: np.ndarray, v: np.ndarray, yaw: float, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Texture coordinates seen on a head turned by ``yaw``: the head is a vertical cylinder of
    ``radius`` around the face centre; the neck and shoulders turn less, the body not at all."""
    d = np.clip((u - FACE_CX) / radius, -1, 1)
    phi = np.clip(np.arcsin(d) - yaw, -np.pi / 2, np.pi / 2)
    inside = FACE_CX + radius * np.sin(phi)
    outside = u - np.sign(u - FACE_CX) * radius * (1 - np.cos(yaw))  # continuous at the cylinder's edge
    turned = np.where(np.abs(u - FACE_CX) < radius, inside, outside)
    weight = np.clip((FACE_CY + 1.6 * FACE_HALF_HEIGHT - v) / (0.8 * FACE_HALF_HEIGHT), 0, 1)
    return (u + weight * (turned - u)).astype(np.float32), v.astype(np.float32)


def _warp(
    texture: np.ndarray, affine: np.ndarray, yaw: float, radius: float, box: tuple[int, int, int, int]
) -> np.ndarray:
    """``texture`` (texture pixels) drawn into the frame box x0, y0, x1, y1 through the affine and the turn."""
    x0, y0, x1, y1 = box
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    inverse = cv2.invertAffineTransform(affine)
    u = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    v = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    map_x, map_y = _yaw_map(u, v, yaw, radius)
    return cv2.remap(texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _texture_box(affine: np.ndarray, top: float, bottom: float, half_w: float, size: tuple[int, int]):
    """Frame box around the texture region rows top..bottom, columns FACE_CX +- half_w (clipped)."""
    h, w = size
    corners = np.array(
        [[FACE_CX - half_w, FACE_CX + half_w, FACE_CX - half_w, FACE_CX + half_w], [top, top, bottom, bottom]]
    )
    frame = affine[:, :2] @ corners + affine[:, 2:]
    x0, y0 = np.maximum(np.floor(frame.min(1)).astype(int) - 2, 0)
    x1, y1 = np.minimum(np.ceil(frame.max(1)).astype(int) + 2, (w, h))
    return int(x0), int(y0), int(x1), int(y1)


def add_pores(tex: Textures, rng: np.random.Generator) -> Textures:
    """Adds fine skin texture inside the face: detail that a low-resolution paste loses."""
    grain = 1 + rng.uniform(0.03, 0.06) * grain_field(rng, 0.5, 0.5)

    def apply(rgba: np.ndarray) -> np.ndarray:
        out = rgba.astype(np.float32)
        out[..., :3] *= grain[..., None]
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)

    return Textures(apply(tex.full), apply(tex.face), tex.face_w, tex.skin_luma)


def _occluder(rng: np.random.Generator, n: int, size: tuple[int, int], faces: np.ndarray, skin: np.ndarray):
    """(coverage (T, H, W), colour) of a hand or a microphone in front of the lower face for a while, or None."""
    if rng.uniform() > 0.3:
        return None
    h, w = size
    coverage = np.zeros((n, h, w), np.float32)
    start = int(rng.integers(0, max(1, n // 2)))
    stop = int(min(n, start + rng.integers(n // 3, n + 1)))
    hand = rng.uniform() < 0.5
    colour = skin * rng.uniform(0.8, 1.0) if hand else np.full(3, rng.uniform(15, 50), np.float32)
    side = rng.choice([-1, 1])
    for i in range(start, stop):
        cx, cy, fh = faces[i]
        ramp = min(1.0, (i - start + 1) / 4, (stop - i) / 4)  # moves in and out over a few frames
        layer = np.zeros((h, w), np.uint8)
        if hand:  # a hand raised to the chin from below
            centre = (int(cx + side * 0.3 * fh), int(cy + fh * (1.05 - 0.3 * ramp)))
            cv2.ellipse(
                layer, centre, (int(0.2 * fh), int(0.26 * fh)), side * 20, 0, 360, 255, -1, cv2.LINE_AA
            )
        else:  # a microphone: a dark head on a stick, below the mouth
            head = (int(cx + side * 0.15 * fh), int(cy + fh * (0.95 - 0.25 * ramp)))
            cv2.circle(layer, head, int(0.1 * fh), 255, -1, cv2.LINE_AA)
            cv2.line(
                layer, head, (head[0] + side * int(0.2 * fh), h), 255, max(2, int(0.05 * fh)), cv2.LINE_AA
            )
        coverage[i] = cv2.GaussianBlur(layer.astype(np.float32) / 255, (0, 0), 0.8)
    return coverage, colour.astype(np.float32)


def render_real_v2(
    tex: Textures, rng: np.random.Generator, n: int, size: tuple[int, int], fps: int, camera: Camera
) -> ClipV2:
    """A real v2 video of the identity painted in ``tex``: head motion, blinks, talking, light and camera.

    Args:
        tex: the identity's textures.
        rng: the video's random stream (a fake of it replays the same stream).
        n: frames.
        size: (height, width).
        fps: frames per second.
        camera: the video's camera.
    """
    h, w = size
    t = np.arange(n) / fps
    bg = draw_background(rng, h, w, tex.skin_luma * rng.uniform(0.35, 0.8))
    exposure = np.sqrt(rng.uniform(110, 185) / tex.skin_luma)

    face_height = rng.uniform(0.36, 0.56) * h  # 2 * FACE_HALF_HEIGHT * scale
    scale = face_height / (2 * FACE_HALF_HEIGHT) * (1 + smooth_wave(rng, t, 0.05, 0.4))
    motion = rng.uniform(0.2, 1.0)  # how much this speaker moves
    cx = w * (0.5 + rng.uniform(-0.15, 0.15)) + smooth_wave(rng, t, motion * 0.06 * w, 0.6)
    cy = h * (0.46 + rng.uniform(-0.03, 0.03)) + smooth_wave(rng, t, motion * 0.025 * h, 0.6)
    roll = np.deg2rad(smooth_wave(rng, t, rng.uniform(1, 5) * motion, 0.5))
    max_yaw = np.deg2rad(rng.uniform(3, 30))
    yaw = np.clip(max_yaw * (rng.uniform(-0.6, 0.6) + smooth_wave(rng, t, 1.0, 0.35)), -max_yaw, max_yaw)
    affines = head_affines(scale, roll, cx, cy)
    eyes = blink_curve(rng, n, fps)
    mouth = talk_curve(rng, t)

    gain = exposure * (1 + smooth_wave(rng, t, 0.06, 0.3))
    gx = rng.uniform(-0.2, 0.2) + smooth_wave(rng, t, 0.05, 0.3)
    gy = rng.uniform(-0.1, 0.1) + smooth_wave(rng, t, 0.04, 0.3)
    light = lighting_field(gain, gx, gy, h, w)
    faces = np.stack([cx, cy, 2 * FACE_HALF_HEIGHT * scale], 1)
    occluder = _occluder(
        rng, n, size, faces, tex.full[0, 0, round(FACE_CY), round(FACE_CX), :3].astype(np.float32)
    )

    clean = np.empty((n, h, w, 3), np.float32)
    radius = 1.05 * tex.face_w
    for i in range(n):
        frame = bg.copy()
        box = _texture_box(affines[i], 0, TEX_H, TEX_W / 2, size)
        layer = _warp(tex.full[eyes[i], mouth[i]], affines[i], yaw[i], radius, box).astype(np.float32)
        x0, y0, x1, y1 = box
        frame[y0:y1, x0:x1] = frame[y0:y1, x0:x1] * (1 - layer[..., 3:] / 255) + layer[..., :3]
        if occluder is not None:
            a = occluder[0][i][..., None]
            frame = frame * (1 - a) + a * occluder[1]
        clean[i] = frame * light[i, ..., None]
    noise = NORMAL_LUT[rng.integers(0, 256, (n, h, w, 3), np.uint8)] * np.float32(camera.noise)
    shot = np.empty_like(clean)
    for i in range(n):
        shot[i] = _defocus(clean[i], camera.blur) + noise[i]
    coverage = occluder[0] if occluder is not None else np.zeros((n, h, w), np.float32)
    return ClipV2(
        clean, shot, noise, light, coverage, affines, yaw, np.stack([eyes, mouth], 1), faces, camera
    )


def _defocus(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigma) if sigma > 0.05 else image


def _mouth_mask(target: Textures, rng: np.random.Generator, strength: float, mouth_y: float) -> np.ndarray:
    """Blending mask of a mouth reenactment, in texture coordinates: from below the nose to the chin."""
    half_w = target.face_w * rng.uniform(0.62, 0.78)
    shape = ellipse_mask(
        FACE_CX,
        mouth_y + 0.04 * FACE_HALF_HEIGHT,
        half_w,
        0.44 * FACE_HALF_HEIGHT,
        blur=2 / (1 + 2 * strength),
    )
    return shape * target.face[0, 0, ..., 3].astype(np.float32) / 255


@dataclass(frozen=True)
class Manipulation:
    """The traces one v2 fake leaves (``draw_manipulation``), each scaled by ``strength``."""

    method: str
    strength: float
    low: float  # resolution of the pasted face (1 = full)
    sharpness_ratio: float  # Laplacian variance of the paste / of the real face there (by sharpening it)
    tone: np.ndarray  # per-channel colour mismatch
    seam: float  # how much darker the blend is along the mask edge (0: not at all)
    flicker: np.ndarray  # (T,) per-frame brightness of the paste
    jitter: np.ndarray  # (T, 2) per-frame position of the paste, pixels


def draw_manipulation(
    rng: np.random.Generator, n: int, artifact_strength: float, method: str
) -> Manipulation:
    """A fake's method and traces. The paste is rendered at 0.25-0.29x resolution, then sharpened until
    the Laplacian variance of the blended region is a random 0.52-1.0x of the real face's there
    (``_matching_sharpen``), so the face-region sharpness goes either way across fakes: the soft, haloed
    texture is the trace, not its level. The blend darkens along the mask edge (a thin seam line, as a
    blend of two images that do not quite agree leaves), the paste's colour is off by 5-22 % per channel,
    and it flickers a little from frame to frame. The camera's noise is added over the paste like
    everywhere else."""
    s = artifact_strength * rng.uniform(0.8, 1.0)
    tone_size = rng.uniform(0.12, 0.22)
    return Manipulation(
        method=method,
        strength=s,
        low=1 / (1 + 3.0 * s),
        sharpness_ratio=float(np.exp(rng.uniform(-0.65, 0.0))),
        tone=1 + s * tone_size * rng.choice([-1, 1], 3) * rng.uniform(0.5, 1, 3),
        seam=s * rng.uniform(0.15, 0.25),
        # small: the flicker is a trace of the swapped region, not a rise of the whole frame's change
        flicker=1 + s * 0.012 * rng.standard_normal(n),
        jitter=s * 0.25 * rng.standard_normal((n, 2)),
    )


def render_fake_v2(
    clip: ClipV2,
    target: Textures,
    source: Textures,
    source_mouth: np.ndarray,
    manip: Manipulation,
    rng: np.random.Generator,
    mouth_y: float,
) -> np.ndarray:
    """``clip`` with a pasted face (swap) or mouth (reenactment), through the same camera."""
    n, h, w = clip.clean.shape[:3]
    if manip.method == _SWAP:
        mask_tex = swap_mask(target, source, rng, manip.strength)
        paste_tex, rows = source.face, (FACE_CY - 0.75 * FACE_HALF_HEIGHT, FACE_CY + 1.0 * FACE_HALF_HEIGHT)
    else:
        mask_tex = _mouth_mask(target, rng, manip.strength, mouth_y)
        paste_tex, rows = target.face, (mouth_y - 0.5 * FACE_HALF_HEIGHT, FACE_CY + 1.1 * FACE_HALF_HEIGHT)
    radius = 1.05 * target.face_w
    pad = int(np.ceil(3 * clip.camera.blur)) + 2
    # frame pixels per texture pixel: the paste has manip.low samples per frame pixel
    low_tex = _low_resolution(
        paste_tex, manip.low * float(np.mean(clip.faces[:, 2])) / (2 * FACE_HALF_HEIGHT)
    )
    pastes = []  # (frame, box, mask, face, its high frequencies)
    for i in range(n):
        affine = clip.affines[i].copy()
        affine[:, 2] += manip.jitter[i]
        x0, y0, x1, y1 = _texture_box(affine, rows[0], rows[1], target.face_w * 1.1, (h, w))
        x0, y0, x1, y1 = max(x0 - pad, 0), max(y0 - pad, 0), min(x1 + pad, w), min(y1 + pad, h)
        if x1 - x0 < 4 or y1 - y0 < 4:
            continue
        eye, mouth = clip.variants[i]
        if manip.method == _REENACT:
            mouth = source_mouth[i]
        layer = _warp(low_tex[eye, mouth], affine, clip.yaw[i], radius, (x0, y0, x1, y1))
        m = _warp(mask_tex, affine, clip.yaw[i], radius, (x0, y0, x1, y1))
        face = layer[..., :3] * (255 / np.maximum(layer[..., 3:], 1))
        clean = clip.clean[i, y0:y1, x0:x1]
        face = face * clip.light[i, y0:y1, x0:x1, None]
        m = m * (1 - clip.occluder[i, y0:y1, x0:x1])  # the hand or microphone stays in front
        weight = m.sum() + 1e-6
        target_mean = np.einsum("hw,hwc->c", m, clean) / weight
        source_mean = np.einsum("hw,hwc->c", m, face) / weight
        face *= (target_mean / np.maximum(source_mean, 1e-3) * manip.tone * manip.flicker[i]).astype(
            np.float32
        )
        shade = 1 - manip.seam * 4 * m * (1 - m)  # darkest where the mask is half on: the seam line
        pastes.append((i, (x0, y0, x1, y1), m, face, face - cv2.GaussianBlur(face, (0, 0), 1.0), shade))
    sharpen = _matching_sharpen(clip, pastes, manip.sharpness_ratio)
    out = clip.shot.copy()
    for i, (x0, y0, x1, y1), m, face, detail, shade in pastes:
        m3 = m[..., None]
        clean = clip.clean[i, y0:y1, x0:x1]
        blended = (clean + m3 * (face + sharpen * detail - clean)) * shade[..., None]
        out[i, y0:y1, x0:x1] += _defocus(blended - clean, clip.camera.blur)
    return to_uint8(out)


def _low_resolution(textures: np.ndarray, factor: float) -> np.ndarray:
    """Premultiplied RGBA textures (..., H, W, 4) resampled to ``factor`` of their resolution and back, as
    float32: a generator's face at a lower resolution than the video, fixed to the face as it moves."""
    h, w = textures.shape[-3:-1]
    small = (max(2, round(w * min(factor, 1.0))), max(2, round(h * min(factor, 1.0))))
    flat = textures.reshape(-1, h, w, 4)
    out = np.stack(
        [
            cv2.resize(
                cv2.resize(t, small, interpolation=cv2.INTER_AREA), (w, h), interpolation=cv2.INTER_LINEAR
            )
            for t in flat.astype(np.float32)
        ]
    )
    return out.reshape(textures.shape).astype(np.float32)


def _matching_sharpen(clip: ClipV2, pastes: list, ratio: float) -> float:
    """The unsharp-mask amount that gives the pasted region ``ratio`` times the Laplacian variance (of the
    luma, before the camera, on a sample of frames) that the real face has there: the low-resolution
    paste is sharpened back to about the real face's sharpness, so its level is no tell; the halos and
    missing fine texture of a sharpened upscale are. var(L(a)) = vA + 2 a c + a^2 vB, solved for a >= 0."""
    stats = []
    for i, (x0, y0, x1, y1), m, face, detail, shade in pastes[:: max(1, len(pastes) // 6)]:
        inside = m > 0.05  # the seam line included: the audit's face-region sharpness sees it too
        if inside.sum() < 50:
            continue
        clean = clip.clean[i, y0:y1, x0:x1]
        m3, shade3 = m[..., None], shade[..., None]
        real = cv2.Laplacian(clean @ LUMA, cv2.CV_32F)[inside]
        fake = cv2.Laplacian(((clean + m3 * (face - clean)) * shade3) @ LUMA, cv2.CV_32F)[inside]
        high = cv2.Laplacian((m3 * detail * shade3) @ LUMA, cv2.CV_32F)[inside]
        stats.append(
            (real.var(), fake.var(), np.mean((fake - fake.mean()) * (high - high.mean())), high.var())
        )
    if not stats:
        return 0.0
    v_real, v_a, c, v_b = np.mean(stats, axis=0)
    discriminant = c * c - v_b * (v_a - ratio * v_real)
    if v_b <= 1e-9 or discriminant < 0:
        return 0.0
    return float(np.clip((-c + np.sqrt(discriminant)) / v_b, 0.0, 8.0))
