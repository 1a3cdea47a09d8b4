"""Procedural identities painted into textures: the faces of both synthetic Celeb-DF generators.

* Every identity is a procedural face (skin tone, face width and jaw, eye size, spacing and iris,
  brows, nose, mouth, hair colour and style, clothes), painted once into textures for three eye
  states x three mouth states. The faces are shaded the way OpenCV's Haar cascade expects (dark eye
  sockets and brows, a bright nose bridge and cheek band, darker face sides, hair darker than skin),
  so the framework's default detector finds them.
* Everything here is in the canonical texture's pixels; the renderers (``render_v1``, ``render_v2``)
  place the textures in the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# The canonical texture every identity is painted in: face centre and half height, in texture pixels.
TEX_W, TEX_H = 200, 300
FACE_CX, FACE_CY, FACE_HALF_HEIGHT = 100.0, 112.0, 60.0
_EYE_LEVELS = (1.0, 0.45, 0.0)  # eye openness of the texture variants
MOUTH_LEVELS = (0.0, 0.45, 0.9)  # mouth openness of the texture variants
_SPLIT_Y = round(FACE_CY + 0.1 * FACE_HALF_HEIGHT)  # texture row below the eyes and above the mouth
_SHIFT = 4  # sub-pixel bits for cv2 drawing

LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_SKIN = np.array(
    [(236, 200, 176), (224, 178, 146), (206, 160, 124), (184, 134, 100), (156, 108, 78), (128, 88, 64)],
    np.float32,
)
_HAIR = np.array(
    [
        (28, 22, 20),
        (62, 42, 30),
        (104, 70, 44),
        (170, 130, 80),
        (206, 176, 120),
        (124, 50, 30),
        (150, 146, 140),
    ],
    np.float32,
)
_IRIS = np.array([(60, 40, 25), (90, 60, 35), (60, 90, 120), (70, 100, 70), (40, 30, 25)], np.float32)


@dataclass(frozen=True)
class Identity:
    """A person's face parameters in the canonical texture (``draw_identity``)."""

    skin: np.ndarray
    face_w: float  # half width of the face oval in texture pixels (its half height is FACE_HALF_HEIGHT)
    jaw: float  # how much the oval narrows towards the chin
    eye_y: float
    eye_dx: float  # half the distance between the eye centres
    eye_w: float
    eye_h: float
    iris: np.ndarray
    brow_gap: float  # brow height above the eye centre
    brow_thick: float
    brow_arch: float
    nose_y: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    lips: np.ndarray
    hair: np.ndarray
    hair_style: int  # 0 short, 1 long, 2 fringe, 3 buzz cut, 4 voluminous
    hairline: float  # height of the hairline above the face centre, in units of FACE_HALF_HEIGHT
    shirt: np.ndarray
    grain_seed: int


def draw_identity(rng: np.random.Generator) -> Identity:
    """A random person.

    Args:
        rng: the identity's random stream.
    """
    u = rng.uniform
    skin = np.clip(_SKIN[rng.integers(len(_SKIN))] * u(0.96, 1.04, 3), 0, 255)
    # hair clearly darker than the skin: a face framed by hair as bright as itself defeats Haar cascades
    hair_choices = _HAIR[_HAIR @ LUMA <= 0.7 * skin @ LUMA]
    hair = np.clip(hair_choices[rng.integers(len(hair_choices))] * u(0.9, 1.1), 0, 255)
    style = int(rng.integers(5))
    if style == 3:  # a buzz cut: the scalp shows through
        hair = 0.6 * hair + 0.28 * skin
    eye_w = FACE_HALF_HEIGHT * u(0.14, 0.17)
    return Identity(
        skin=skin,
        face_w=FACE_HALF_HEIGHT * u(0.70, 0.84),
        jaw=u(0.15, 0.4),
        eye_y=FACE_CY - FACE_HALF_HEIGHT * u(0.14, 0.2),
        eye_dx=FACE_HALF_HEIGHT * u(0.34, 0.42),
        eye_w=eye_w,
        eye_h=eye_w * u(0.42, 0.55),
        iris=_IRIS[rng.integers(len(_IRIS))],
        brow_gap=FACE_HALF_HEIGHT * u(0.17, 0.22),
        brow_thick=u(2.5, 5.0),
        brow_arch=FACE_HALF_HEIGHT * u(0.02, 0.06),
        nose_y=FACE_CY + FACE_HALF_HEIGHT * u(0.18, 0.28),
        nose_w=FACE_HALF_HEIGHT * u(0.11, 0.16),
        mouth_y=FACE_CY + FACE_HALF_HEIGHT * u(0.50, 0.58),
        mouth_w=FACE_HALF_HEIGHT * u(0.20, 0.30),
        lips=np.clip(skin * np.array([0.82, 0.56, 0.56]) + np.array([22, 0, 4]), 0, 255),
        hair=hair,
        hair_style=style,
        hairline=u(0.62, 0.68) if style == 2 else u(0.7, 0.8),
        shirt=u(20, 220, 3),
        grain_seed=int(rng.integers(2**31)),
    )


@dataclass(frozen=True)
class Textures:
    """Premultiplied RGBA uint8 textures of one identity, indexed [eye level, mouth level, y, x, channel]."""

    full: np.ndarray  # the whole person: hair, face, ears, neck, shoulders
    face: np.ndarray  # only the face oval: what a face swap transfers
    face_w: float
    skin_luma: float


def _pt(x: float, y: float) -> tuple[int, int]:
    return round(x * (1 << _SHIFT)), round(y * (1 << _SHIFT))


def _soft(mask: np.ndarray, blur: float) -> np.ndarray:
    m = mask.astype(np.float32) / 255
    return cv2.GaussianBlur(m, (0, 0), blur) if blur > 0 else m


def ellipse_mask(cx, cy, ax, ay, blur=0.0, arc=(0, 360), thickness=-1) -> np.ndarray:
    """An anti-aliased filled (or outlined) ellipse on the texture, optionally blurred: 0..255 uint8.

    Args:
        cx: centre x, texture pixels; cy likewise.
        ax: half axis along x; ay along y.
        blur: Gaussian sigma of the edge.
        arc: start and end angle, degrees.
        thickness: -1 filled, else the outline's width.
    """
    m = np.zeros((TEX_H, TEX_W), np.uint8)
    axes = (max(1, round(ax * (1 << _SHIFT))), max(1, round(ay * (1 << _SHIFT))))
    cv2.ellipse(m, _pt(cx, cy), axes, 0, arc[0], arc[1], 255, thickness, cv2.LINE_AA, _SHIFT)
    return _soft(m, blur)


def polygon_mask(points, blur=0.0) -> np.ndarray:
    """An anti-aliased filled polygon on the texture, optionally blurred: 0..255 uint8.

    Args:
        points: (x, y) vertices, texture pixels.
        blur: Gaussian sigma of the edge.
    """
    m = np.zeros((TEX_H, TEX_W), np.uint8)
    cv2.fillPoly(m, [np.array([_pt(x, y) for x, y in points], np.int32)], 255, cv2.LINE_AA, _SHIFT)
    return _soft(m, blur)


def _polyline(points, thickness: float, blur=0.0) -> np.ndarray:
    m = np.zeros((TEX_H, TEX_W), np.uint8)
    pts = np.array([_pt(x, y) for x, y in points], np.int32)
    cv2.polylines(m, [pts], False, 255, max(1, round(thickness)), cv2.LINE_AA, _SHIFT)
    return _soft(m, blur)


def _over(rgb: np.ndarray, alpha: np.ndarray | None, mask: np.ndarray, colour) -> None:
    """Paint ``colour`` (a colour or an image) over ``rgb`` with coverage ``mask``, in place."""
    m = mask[..., None]
    rgb *= 1 - m
    rgb += m * np.asarray(colour, np.float32)
    if alpha is not None:
        alpha += mask * (1 - alpha)


def _shade(rgb: np.ndarray, mask: np.ndarray, factor: float) -> None:
    rgb *= (1 + (factor - 1) * mask)[..., None]


def grain_field(rng: np.random.Generator, sigma_x: float, sigma_y: float) -> np.ndarray:
    """Zero-mean, unit-deviation noise texture blurred anisotropically (skin pores, hair strands)."""
    g = cv2.GaussianBlur(rng.standard_normal((TEX_H, TEX_W), np.float32), (0, 0), sigma_x, sigmaY=sigma_y)
    return g / g.std()


def _face_oval(ident: Identity) -> list[tuple[float, float]]:
    theta = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    down = np.clip(np.sin(theta), 0, None)  # 1 at the chin
    x = ident.face_w * np.cos(theta) * (1 - ident.jaw * down**2)
    y = FACE_HALF_HEIGHT * np.sin(theta) * (1 + 0.04 * down)
    return list(zip(FACE_CX + x, FACE_CY + y, strict=True))


def _paint_face_base(ident: Identity, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The face oval with its shading, nose and brows, without eyes and mouth: straight RGB and alpha."""
    alpha = polygon_mask(_face_oval(ident), blur=0.8)
    ys, xs = np.mgrid[0:TEX_H, 0:TEX_W].astype(np.float32)
    nx, ny = (xs - FACE_CX) / ident.face_w, (ys - FACE_CY) / FACE_HALF_HEIGHT
    shading = 1.04 - 0.35 * np.clip(np.abs(nx), 0, 1) ** 2.5 - 0.10 * np.clip(ny, 0, 1) ** 2
    rgb = ident.skin.astype(np.float32) * (shading * (1 + 0.015 * grain_field(rng, 0.7, 0.7)))[..., None]
    for side in (-1, 1):
        ex = FACE_CX + side * ident.eye_dx
        _shade(
            rgb,
            ellipse_mask(
                ex, ident.eye_y - 0.04 * FACE_HALF_HEIGHT, 1.7 * ident.eye_w, 2.6 * ident.eye_h, blur=5
            ),
            0.6,
        )
        _shade(
            rgb,
            ellipse_mask(
                ex,
                ident.eye_y + 0.36 * FACE_HALF_HEIGHT,
                0.27 * FACE_HALF_HEIGHT,
                0.13 * FACE_HALF_HEIGHT,
                blur=6,
            ),
            1.12,
        )  # cheek
        nose_side = [
            (FACE_CX + side * 0.07 * FACE_HALF_HEIGHT, ident.eye_y + 0.08 * FACE_HALF_HEIGHT),
            (FACE_CX + side * 0.9 * ident.nose_w, ident.nose_y),
        ]
        _shade(rgb, _polyline(nose_side, 2.0, blur=2.5), 0.82)
        nostril = ellipse_mask(
            FACE_CX + side * 0.45 * ident.nose_w,
            ident.nose_y + 0.03 * FACE_HALF_HEIGHT,
            0.05 * FACE_HALF_HEIGHT,
            0.025 * FACE_HALF_HEIGHT,
            blur=0.8,
        )
        _shade(rgb, nostril, 0.45)
    bridge = [
        (FACE_CX, ident.eye_y - 0.05 * FACE_HALF_HEIGHT),
        (FACE_CX, ident.nose_y - 0.06 * FACE_HALF_HEIGHT),
    ]
    _shade(rgb, _polyline(bridge, 0.12 * FACE_HALF_HEIGHT, blur=3), 1.18)
    _shade(
        rgb,
        ellipse_mask(
            FACE_CX, ident.nose_y + 0.05 * FACE_HALF_HEIGHT, ident.nose_w, 0.05 * FACE_HALF_HEIGHT, blur=2
        ),
        0.8,
    )
    _shade(
        rgb,
        ellipse_mask(
            FACE_CX,
            ident.mouth_y + 0.17 * FACE_HALF_HEIGHT,
            0.8 * ident.mouth_w,
            0.06 * FACE_HALF_HEIGHT,
            blur=3,
        ),
        0.9,
    )
    brow_colour = np.minimum(ident.hair * 0.8, ident.skin * 0.45)
    for side in (-1, 1):
        ex = FACE_CX + side * ident.eye_dx
        brow = [
            (
                ex + side * k * 1.15 * ident.eye_w,  # k < 0: the inner end, which droops a little
                ident.eye_y
                - ident.brow_gap
                - ident.brow_arch * (1 - k * k)
                + 0.03 * FACE_HALF_HEIGHT * max(-k, 0),
            )
            for k in np.linspace(-1, 1, 9)
        ]
        _over(rgb, None, _polyline(brow, ident.brow_thick, blur=0.8), brow_colour)
    return rgb, alpha


def _paint_eyes(rgb: np.ndarray, ident: Identity, openness: float) -> None:
    for side in (-1, 1):
        ex, ey = FACE_CX + side * ident.eye_dx, ident.eye_y
        if openness > 0:
            white = ellipse_mask(ex, ey, ident.eye_w, ident.eye_h * openness, blur=0.5)
            _over(rgb, None, white, (226, 220, 214))
            _over(rgb, None, ellipse_mask(ex, ey, 0.55 * ident.eye_w, 0.55 * ident.eye_w) * white, ident.iris)
            _over(
                rgb, None, ellipse_mask(ex, ey, 0.22 * ident.eye_w, 0.22 * ident.eye_w) * white, (12, 10, 10)
            )
            lid = ellipse_mask(
                ex, ey, ident.eye_w, ident.eye_h * openness, arc=(180, 360), thickness=2, blur=0.5
            )
        else:
            lid = ellipse_mask(
                ex,
                ey - 0.2 * ident.eye_h,
                ident.eye_w,
                0.3 * ident.eye_h,
                arc=(0, 180),
                thickness=2,
                blur=0.5,
            )
        _over(rgb, None, lid, (30, 24, 24))


def _paint_mouth(rgb: np.ndarray, ident: Identity, openness: float) -> None:
    mx, my, mw = FACE_CX, ident.mouth_y, ident.mouth_w
    _over(
        rgb, None, ellipse_mask(mx, my, mw, (0.07 + 0.1 * openness) * FACE_HALF_HEIGHT, blur=1.0), ident.lips
    )
    if openness > 0:
        cavity = ellipse_mask(mx, my, 0.8 * mw, 0.1 * openness * FACE_HALF_HEIGHT, blur=0.6)
        _over(rgb, None, cavity, (60, 22, 26))
        teeth = cavity * ellipse_mask(
            mx,
            my - 0.07 * openness * FACE_HALF_HEIGHT,
            0.6 * mw,
            0.05 * openness * FACE_HALF_HEIGHT,
            blur=0.5,
        )
        _over(rgb, None, teeth, (215, 210, 200))
    else:
        line = [(mx - mw, my), (mx, my + 0.01 * FACE_HALF_HEIGHT), (mx + mw, my)]
        _over(rgb, None, _polyline(line, 1.5, blur=0.5), ident.lips * 0.45)


def _paint_hair(ident: Identity, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Coverage of the hair behind the head and of the hair in front of it."""
    ys, xs = np.mgrid[0:TEX_H, 0:TEX_W].astype(np.float32)
    volume = {3: 1.03, 4: 1.25}.get(ident.hair_style, 1.1)
    cap = ellipse_mask(
        FACE_CX, FACE_CY - 0.3 * FACE_HALF_HEIGHT, ident.face_w * volume, FACE_HALF_HEIGHT * 0.85 * volume
    )
    hairline = (
        FACE_CY
        - ident.hairline * FACE_HALF_HEIGHT
        + 0.3 * FACE_HALF_HEIGHT * np.clip(np.abs(xs - FACE_CX) / ident.face_w, 0, 1.2) ** 2
    )
    if ident.hair_style == 2:  # a fringe with a ragged lower edge
        hairline += 0.04 * FACE_HALF_HEIGHT * np.sin(xs * 0.9 + rng.uniform(0, 6))
    front = cv2.GaussianBlur(cap * np.clip(hairline - ys + 0.5, 0, 1), (0, 0), 1.0)
    back = np.zeros_like(front)
    if ident.hair_style == 1:
        w0, w1 = ident.face_w * 1.3, ident.face_w * 1.45
        back = polygon_mask(
            [
                (FACE_CX - w0, FACE_CY - 0.5 * FACE_HALF_HEIGHT),
                (FACE_CX + w0, FACE_CY - 0.5 * FACE_HALF_HEIGHT),
                (FACE_CX + w1, FACE_CY + 1.5 * FACE_HALF_HEIGHT),
                (FACE_CX - w1, FACE_CY + 1.5 * FACE_HALF_HEIGHT),
            ],
            blur=2.0,
        )
        back = np.maximum(back, cap)
    return back, front


def paint_textures(ident: Identity) -> Textures:
    """The identity painted once in the canonical texture, in each eye and mouth variant.

    Args:
        ident: the person.
    """
    rng = np.random.default_rng(ident.grain_seed)
    base_rgb, face_alpha = _paint_face_base(ident, rng)
    back, front = _paint_hair(ident, rng)
    hair_rgb = ident.hair.astype(np.float32) * (1 + 0.1 * grain_field(rng, 0.6, 5.0))[..., None]

    body = np.zeros((TEX_H, TEX_W, 3), np.float32)
    body_alpha = np.zeros((TEX_H, TEX_W), np.float32)
    # the hair behind the head is in the head's shadow near the face
    _over(body, body_alpha, back, hair_rgb * (1 - 0.5 * cv2.GaussianBlur(face_alpha, (0, 0), 8))[..., None])
    neck = polygon_mask(
        [
            (FACE_CX - 0.32 * FACE_HALF_HEIGHT, FACE_CY + 0.5 * FACE_HALF_HEIGHT),
            (FACE_CX + 0.32 * FACE_HALF_HEIGHT, FACE_CY + 0.5 * FACE_HALF_HEIGHT),
            (FACE_CX + 0.36 * FACE_HALF_HEIGHT, FACE_CY + 1.6 * FACE_HALF_HEIGHT),
            (FACE_CX - 0.36 * FACE_HALF_HEIGHT, FACE_CY + 1.6 * FACE_HALF_HEIGHT),
        ],
        blur=0.8,
    )
    _over(body, body_alpha, neck, ident.skin * 0.78)
    shoulders = polygon_mask(
        [
            (FACE_CX - 0.55 * FACE_HALF_HEIGHT, FACE_CY + 1.45 * FACE_HALF_HEIGHT),
            (FACE_CX + 0.55 * FACE_HALF_HEIGHT, FACE_CY + 1.45 * FACE_HALF_HEIGHT),
            (FACE_CX + 1.6 * FACE_HALF_HEIGHT, FACE_CY + 1.9 * FACE_HALF_HEIGHT),
            (FACE_CX + 1.7 * FACE_HALF_HEIGHT, TEX_H),
            (FACE_CX - 1.7 * FACE_HALF_HEIGHT, TEX_H),
            (FACE_CX - 1.6 * FACE_HALF_HEIGHT, FACE_CY + 1.9 * FACE_HALF_HEIGHT),
        ],
        blur=1.0,
    )
    _over(body, body_alpha, shoulders, ident.shirt)
    for side in (-1, 1):
        ear = ellipse_mask(
            FACE_CX + side * ident.face_w * 0.97,
            FACE_CY - 0.02 * FACE_HALF_HEIGHT,
            0.13 * FACE_HALF_HEIGHT,
            0.22 * FACE_HALF_HEIGHT,
            blur=0.8,
        )
        _over(body, body_alpha, ear, ident.skin * 0.85)
    hair_shadow = np.roll(cv2.GaussianBlur(front, (0, 0), 3), 3, axis=0)  # cast on the forehead

    def render(eye: float, mouth: float) -> tuple[np.ndarray, np.ndarray]:
        rgb = base_rgb.copy()
        _paint_eyes(rgb, ident, eye)
        _paint_mouth(rgb, ident, mouth)
        person, person_alpha = body.copy(), body_alpha.copy()
        _over(person, person_alpha, face_alpha, rgb)
        _shade(person, hair_shadow, 0.7)
        _over(person, person_alpha, front, hair_rgb)
        return _premultiply(person, person_alpha), _premultiply(rgb, face_alpha)

    # The eyes lie above _SPLIT_Y and the mouth below it, so the eye x mouth grid of textures is
    # assembled from one row of eye variants and one column of mouth variants.
    eyes = [render(e, MOUTH_LEVELS[0]) for e in _EYE_LEVELS]
    mouths = [render(_EYE_LEVELS[0], m) for m in MOUTH_LEVELS]

    def grid(k: int) -> np.ndarray:
        return np.stack(
            [np.stack([np.concatenate([e[k][:_SPLIT_Y], m[k][_SPLIT_Y:]]) for m in mouths]) for e in eyes]
        )

    return Textures(full=grid(0), face=grid(1), face_w=ident.face_w, skin_luma=float(ident.skin @ LUMA))


def _premultiply(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    rgba = np.concatenate([np.clip(rgb, 0, 255) * alpha[..., None], alpha[..., None] * 255], axis=-1)
    return np.round(rgba).astype(np.uint8)
