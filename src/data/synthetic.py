"""An embedded synthetic Celeb-DF: procedural talking heads and face-swap fakes in the exact Celeb-DF layout.

``generate_synthetic_celebdf(root)`` writes::

    root/Celeb-real/id<N>_<NNNN>.mp4             real video NNNN of identity N
    root/Celeb-synthesis/id<N>_id<M>_<NNNN>.mp4  real video id<N>_<NNNN> with identity M's face swapped in
    root/YouTube-real/<NNNNN>.mp4                real videos of further identities, never swapped
    root/List_of_testing_videos.txt              "<1 real|0 fake> <folder>/<file>.mp4" (Celeb-DF: 1 = real)
    root/.synthetic.json                         written last: the parameters and, per video and frame,
                                                 the rendered face centre x, y and face height (pixels)

Two presets (``preset=``, config ``data.synthetic.preset``); the marker records the generator version,
so a folder made by one is never reused for the other.

``v2`` (default): 512x272 H.264 at 30 fps (MPEG-4 Part 2 when PyAV with libx264 is missing), built
to pass the shortcut audit (``src.data.audit``) while its manipulation traces stay local:

* People: the procedural faces below, plus fine skin texture, hair, head turns up to about 30 degrees
  (a cylinder warp of the head), face heights of 36-56 % of the frame, speakers who move more or
  less, and a hand or microphone in front of the lower face in about 30 % of the videos.
* Every real video has its own camera: defocus blur, sensor noise, exposure and H.264 CRF, drawn
  per video. A fake goes through the same camera as its target real video (blur and noise are
  applied after the paste), then is encoded with its own CRF, so no global statistic tells the
  classes apart.
* Two manipulation methods, each with a per-video random strength: a face swap (another identity's
  face inside a mask from the brows to the chin) and a mouth reenactment (the target's own mouth,
  driven by another speaker, inside a mask from below the nose to the chin). The fakes of a real
  video take turns between them (with two fakes per real video: one of each), so even a small
  validation split holds both about equally. Their traces, all confined to the pasted region:
  a blending boundary with a thin darker seam line along the mask edge; a colour mismatch of the
  paste (5-22 % per channel); a paste rendered at 0.25-0.29x resolution in the face's own
  coordinates (a generator's aligned face warped back: the soft texture moves with the head
  instead of shimmering across the pixel grid) and sharpened back until the blended region has a
  random 0.52-1.0x of the real face's Laplacian variance there (so the face-region sharpness goes
  either way across fakes and only the soft, haloed texture remains), with the camera's noise over
  it like everywhere else; and a small per-frame brightness and position flicker of the pasted
  region, kept small so that it does not raise the whole frame's change or bitrate. The marker lists
  each fake's method and strength.

``v1``: the first generator, 320x240 MPEG-4 at 25 fps, kept for comparison. Its fakes paste a face
rendered at 0.4x resolution without camera noise: a blur detector separates them (the audit flags
sharpness).

How the faces are made (both presets):

* Every identity is a procedural face (skin tone, face width and jaw, eye size, spacing and iris,
  brows, nose, mouth, hair colour and style, clothes), painted once into textures for three eye
  states x three mouth states. The faces are shaded the way OpenCV's Haar cascade expects (dark eye
  sockets and brows, a bright nose bridge and cheek band, darker face sides, hair darker than skin),
  so the framework's default detector finds them.
* A real video moves the head smoothly in front of a static background, blinks, talks, is lit by a
  slowly changing gain and gradient, and has camera noise.
* A fake's target real video is rendered from exactly the same random stream (same background,
  motion, lighting and noise), and the source identity's face (or mouth) is pasted onto it,
  colour-transferred to the target skin.

Knobs: ``num_identities`` x ``real_per_identity`` real videos; ``fakes_per_real`` fakes of each,
with different source identities (Celeb-DF v1 has about two fakes per real video); ``youtube_real``
extra real videos; ``num_frames``, ``width``, ``height`` and ``fps`` of every video;
``artifact_strength`` (scales every trace; 0: nothing but the identity swap); and ``test_fraction``:
the test list holds all the videos of about that fraction of the identities (their real videos and
the fakes made from them, so no test target identity is in train/val; a test fake's source face may
belong to a train/val identity, as in Celeb-DF) and about that fraction of YouTube-real. A video
depends only on the seed, its name and the video parameters, so the same seed gives the same
decoded frames.

Generation is atomic (a hidden sibling folder renamed into place) and idempotent: a complete
dataset with the same parameters is reused, one with other parameters raises ``ValueError``.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import cv2
import numpy as np
from tqdm.auto import tqdm

GENERATOR_VERSION = 3  # of the default preset; written into every marker, so an older folder is not reused
_VERSIONS = {"v1": 1, "v2": GENERATOR_VERSION}
DEFAULT_PRESET = "v2"
PRESETS: dict[str, dict[str, int | float]] = {
    "v1": dict(
        num_identities=10, real_per_identity=3, fakes_per_real=2, youtube_real=6, num_frames=48,
        width=320, height=240, fps=25, artifact_strength=1.0, test_fraction=0.2,
    ),
    "v2": dict(
        num_identities=22, real_per_identity=2, fakes_per_real=2, youtube_real=8, num_frames=32,
        width=512, height=272, fps=30, artifact_strength=1.0, test_fraction=0.2,
    ),
}
MARKER = ".synthetic.json"
TEST_LIST = "List_of_testing_videos.txt"

# The canonical texture every identity is painted in: face centre and half height, in texture pixels.
_TEX_W, _TEX_H = 200, 300
_FCX, _FCY, _B = 100.0, 112.0, 60.0
_EYE_LEVELS = (1.0, 0.45, 0.0)  # eye openness of the texture variants
_MOUTH_LEVELS = (0.0, 0.45, 0.9)  # mouth openness of the texture variants
_SPLIT_Y = round(_FCY + 0.1 * _B)  # texture row below the eyes and above the mouth
_SHIFT = 4  # sub-pixel bits for cv2 drawing

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
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

# Standard normal quantiles of 256 equiprobable bins: camera noise drawn from bytes, 4x faster than normals.
_NORMAL_LUT = np.array([NormalDist().inv_cdf((k + 0.5) / 256) for k in range(256)], np.float32)

# SeedSequence tags: every random stream depends only on the seed and on what it draws for. Keys of one
# tag must not differ by trailing zeros only: SeedSequence pads its entropy with zeros.
_TAG_IDENTITY, _TAG_REAL, _TAG_FAKE, _TAG_SPLIT, _TAG_SOURCES, _TAG_YT_IDENTITY, _TAG_YT_VIDEO = range(7)


def generate_synthetic_celebdf(root, *, preset: str = DEFAULT_PRESET, seed: int = 0, **knobs) -> Path:
    """Generate the synthetic Celeb-DF set into ``root`` (or reuse the one there) and return ``root``.

    ``preset`` picks the generator (``v2``, the default, or ``v1``, the first one) and its default
    knobs (``PRESETS``); ``knobs`` override them.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown synthetic preset {preset!r} (data.synthetic.preset); choose one of {sorted(PRESETS)}")
    unknown = sorted(set(knobs) - set(PRESETS[preset]))
    if unknown:
        raise ValueError(
            f"unknown synthetic dataset parameters {unknown} for preset {preset}; known: {sorted(PRESETS[preset])}"
        )
    params = {"generator_version": _VERSIONS[preset], "seed": int(seed)}
    if preset != "v1":  # v1 markers have no preset key: v1 folders made before presets existed are reused
        params["preset"] = preset
    for key, default in PRESETS[preset].items():
        params[key] = type(default)(knobs.get(key, default))
    root = Path(root).expanduser()
    _validate(params)
    if _existing_params(root, params):
        return root
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(
            f"{root} exists and is not a complete synthetic dataset (it has no {MARKER}); "
            "remove it or choose another data.root"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.parent / f".{root.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        (_write_dataset if preset == "v1" else _write_dataset_v2)(staging, params)
        try:
            if root.is_dir() and not any(root.iterdir()):
                root.rmdir()  # POSIX renames onto an empty folder, Windows does not
            os.rename(staging, root)
        except OSError:
            if not _existing_params(root, params):  # fine if a concurrent call published the same set
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _validate(p: dict) -> None:
    problems = []
    for key in ("num_identities", "num_frames", "fps"):
        if p[key] < 1:
            problems.append(f"{key} must be >= 1")
    for key in ("real_per_identity", "fakes_per_real", "youtube_real"):
        if p[key] < 0:
            problems.append(f"{key} must be >= 0")
    if p["fakes_per_real"] > p["num_identities"] - 1:
        problems.append("fakes_per_real must be <= num_identities - 1 (each fake swaps in another identity)")
    if p["width"] < 160 or p["height"] < 120:
        problems.append("width x height must be at least 160 x 120 to hold a detectable face")
    if p["generator_version"] >= 2 and (p["width"] % 128 or p["height"] % 2):
        # even: H.264 stores colour at half resolution; x 128: x264 through PyAV encodes other widths
        # (chroma rows not 64-byte aligned) differently from run to run
        problems.append("width must be a multiple of 128 and height even")
    if p["artifact_strength"] < 0:
        problems.append("artifact_strength must be >= 0")
    if not 0 <= p["test_fraction"] < 1:
        problems.append("test_fraction must be in [0, 1)")
    if problems:
        raise ValueError("invalid synthetic dataset parameters: " + "; ".join(problems))


def _existing_params(root: Path, params: dict) -> bool:
    """True when root holds a complete dataset made with these parameters; raise if made with others."""
    marker = root / MARKER
    if not marker.is_file():
        return False
    existing = json.loads(marker.read_text())["params"]
    if existing != params:
        diff = {
            k: (existing.get(k), params.get(k))
            for k in sorted(params.keys() | existing.keys())
            if existing.get(k) != params.get(k)
        }
        raise ValueError(
            f"{root} holds a synthetic dataset generated with other parameters (existing, requested): "
            f"{diff}; delete it or choose another data.root"
        )
    return True


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


# ---------------------------------------------------------------------------------------------------------
# Dataset layout


def _write_dataset(out: Path, p: dict) -> None:
    seed, n_ids = p["seed"], p["num_identities"]
    for folder in ("Celeb-real", "Celeb-synthesis", "YouTube-real"):
        (out / folder).mkdir(parents=True)
    split = _rng(seed, _TAG_SPLIT)
    test_ids = _test_subset(split, n_ids, p["test_fraction"])
    test_youtube = _test_subset(split, p["youtube_real"], p["test_fraction"])
    textures = [_textures(_identity(_rng(seed, _TAG_IDENTITY, i))) for i in range(n_ids)]
    test_lines, faces = [], {}

    def write(rel: str, frames: np.ndarray, clip: _Clip, is_test: bool, real: bool) -> None:
        _write_mp4(out / rel, frames, p["fps"])
        faces[rel] = np.round(clip.faces, 1).tolist()
        if is_test:
            test_lines.append(f"{int(real)} {rel}")

    def render(tex: _Textures, rng: np.random.Generator) -> _Clip:
        return _render_real(tex, rng, p["num_frames"], (p["height"], p["width"]), p["fps"])

    for n in range(n_ids):
        for v in range(p["real_per_identity"]):
            clip = render(textures[n], _rng(seed, _TAG_REAL, n, v))
            write(f"Celeb-real/id{n}_{v:04d}.mp4", clip.frames(), clip, n in test_ids, real=True)
            others = [m for m in range(n_ids) if m != n]
            sources = _rng(seed, _TAG_SOURCES, n, v).choice(others, p["fakes_per_real"], replace=False)
            for m in sorted(sources.tolist()):
                rng = _rng(seed, _TAG_FAKE, n, v, m)
                fake = _swap_face(clip, textures[n], textures[m], rng, p["artifact_strength"])
                write(f"Celeb-synthesis/id{n}_id{m}_{v:04d}.mp4", fake, clip, n in test_ids, real=False)
    for k in range(p["youtube_real"]):  # one further identity per YouTube video
        clip = render(_textures(_identity(_rng(seed, _TAG_YT_IDENTITY, k))), _rng(seed, _TAG_YT_VIDEO, k))
        write(f"YouTube-real/{k:05d}.mp4", clip.frames(), clip, k in test_youtube, real=True)

    (out / TEST_LIST).write_text("".join(line + "\n" for line in sorted(test_lines)))
    (out / MARKER).write_text(json.dumps({"params": p, "faces": faces}, separators=(",", ":")))


def _test_subset(rng: np.random.Generator, n: int, fraction: float) -> set[int]:
    """About ``fraction`` of ``range(n)``: at least one when fraction > 0, never all of them."""
    count = min(n - 1, max(1, round(fraction * n))) if fraction > 0 and n > 1 else 0
    return set(rng.permutation(n)[:count].tolist())


def _write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write MPEG-4 video to {path}")
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


# ---------------------------------------------------------------------------------------------------------
# Identities and their textures


@dataclass(frozen=True)
class _Identity:
    skin: np.ndarray
    face_w: float  # half width of the face oval in texture pixels (its half height is _B)
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
    hairline: float  # height of the hairline above the face centre, in units of _B
    shirt: np.ndarray
    grain_seed: int


def _identity(rng: np.random.Generator) -> _Identity:
    u = rng.uniform
    skin = np.clip(_SKIN[rng.integers(len(_SKIN))] * u(0.96, 1.04, 3), 0, 255)
    # hair clearly darker than the skin: a face framed by hair as bright as itself defeats Haar cascades
    hair_choices = _HAIR[_HAIR @ _LUMA <= 0.7 * skin @ _LUMA]
    hair = np.clip(hair_choices[rng.integers(len(hair_choices))] * u(0.9, 1.1), 0, 255)
    style = int(rng.integers(5))
    if style == 3:  # a buzz cut: the scalp shows through
        hair = 0.6 * hair + 0.28 * skin
    eye_w = _B * u(0.14, 0.17)
    return _Identity(
        skin=skin,
        face_w=_B * u(0.70, 0.84),
        jaw=u(0.15, 0.4),
        eye_y=_FCY - _B * u(0.14, 0.2),
        eye_dx=_B * u(0.34, 0.42),
        eye_w=eye_w,
        eye_h=eye_w * u(0.42, 0.55),
        iris=_IRIS[rng.integers(len(_IRIS))],
        brow_gap=_B * u(0.17, 0.22),
        brow_thick=u(2.5, 5.0),
        brow_arch=_B * u(0.02, 0.06),
        nose_y=_FCY + _B * u(0.18, 0.28),
        nose_w=_B * u(0.11, 0.16),
        mouth_y=_FCY + _B * u(0.50, 0.58),
        mouth_w=_B * u(0.20, 0.30),
        lips=np.clip(skin * np.array([0.82, 0.56, 0.56]) + np.array([22, 0, 4]), 0, 255),
        hair=hair,
        hair_style=style,
        hairline=u(0.62, 0.68) if style == 2 else u(0.7, 0.8),
        shirt=u(20, 220, 3),
        grain_seed=int(rng.integers(2**31)),
    )


@dataclass(frozen=True)
class _Textures:
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


def _ellipse(cx, cy, ax, ay, blur=0.0, arc=(0, 360), thickness=-1) -> np.ndarray:
    m = np.zeros((_TEX_H, _TEX_W), np.uint8)
    axes = (max(1, round(ax * (1 << _SHIFT))), max(1, round(ay * (1 << _SHIFT))))
    cv2.ellipse(m, _pt(cx, cy), axes, 0, arc[0], arc[1], 255, thickness, cv2.LINE_AA, _SHIFT)
    return _soft(m, blur)


def _polygon(points, blur=0.0) -> np.ndarray:
    m = np.zeros((_TEX_H, _TEX_W), np.uint8)
    cv2.fillPoly(m, [np.array([_pt(x, y) for x, y in points], np.int32)], 255, cv2.LINE_AA, _SHIFT)
    return _soft(m, blur)


def _polyline(points, thickness: float, blur=0.0) -> np.ndarray:
    m = np.zeros((_TEX_H, _TEX_W), np.uint8)
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


def _grain(rng: np.random.Generator, sigma_x: float, sigma_y: float) -> np.ndarray:
    """Zero-mean, unit-deviation noise texture blurred anisotropically (skin pores, hair strands)."""
    g = cv2.GaussianBlur(rng.standard_normal((_TEX_H, _TEX_W), np.float32), (0, 0), sigma_x, sigmaY=sigma_y)
    return g / g.std()


def _face_oval(ident: _Identity) -> list[tuple[float, float]]:
    theta = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    down = np.clip(np.sin(theta), 0, None)  # 1 at the chin
    x = ident.face_w * np.cos(theta) * (1 - ident.jaw * down**2)
    y = _B * np.sin(theta) * (1 + 0.04 * down)
    return list(zip(_FCX + x, _FCY + y, strict=True))


def _paint_face_base(ident: _Identity, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The face oval with its shading, nose and brows, without eyes and mouth: straight RGB and alpha."""
    alpha = _polygon(_face_oval(ident), blur=0.8)
    ys, xs = np.mgrid[0:_TEX_H, 0:_TEX_W].astype(np.float32)
    nx, ny = (xs - _FCX) / ident.face_w, (ys - _FCY) / _B
    shading = 1.04 - 0.35 * np.clip(np.abs(nx), 0, 1) ** 2.5 - 0.10 * np.clip(ny, 0, 1) ** 2
    rgb = ident.skin.astype(np.float32) * (shading * (1 + 0.015 * _grain(rng, 0.7, 0.7)))[..., None]
    for side in (-1, 1):
        ex = _FCX + side * ident.eye_dx
        _shade(rgb, _ellipse(ex, ident.eye_y - 0.04 * _B, 1.7 * ident.eye_w, 2.6 * ident.eye_h, blur=5), 0.6)
        _shade(rgb, _ellipse(ex, ident.eye_y + 0.36 * _B, 0.27 * _B, 0.13 * _B, blur=6), 1.12)  # cheek
        nose_side = [
            (_FCX + side * 0.07 * _B, ident.eye_y + 0.08 * _B),
            (_FCX + side * 0.9 * ident.nose_w, ident.nose_y),
        ]
        _shade(rgb, _polyline(nose_side, 2.0, blur=2.5), 0.82)
        nostril = _ellipse(
            _FCX + side * 0.45 * ident.nose_w, ident.nose_y + 0.03 * _B, 0.05 * _B, 0.025 * _B, blur=0.8
        )
        _shade(rgb, nostril, 0.45)
    bridge = [(_FCX, ident.eye_y - 0.05 * _B), (_FCX, ident.nose_y - 0.06 * _B)]
    _shade(rgb, _polyline(bridge, 0.12 * _B, blur=3), 1.18)
    _shade(rgb, _ellipse(_FCX, ident.nose_y + 0.05 * _B, ident.nose_w, 0.05 * _B, blur=2), 0.8)
    _shade(rgb, _ellipse(_FCX, ident.mouth_y + 0.17 * _B, 0.8 * ident.mouth_w, 0.06 * _B, blur=3), 0.9)
    brow_colour = np.minimum(ident.hair * 0.8, ident.skin * 0.45)
    for side in (-1, 1):
        ex = _FCX + side * ident.eye_dx
        brow = [
            (
                ex + side * k * 1.15 * ident.eye_w,  # k < 0: the inner end, which droops a little
                ident.eye_y - ident.brow_gap - ident.brow_arch * (1 - k * k) + 0.03 * _B * max(-k, 0),
            )
            for k in np.linspace(-1, 1, 9)
        ]
        _over(rgb, None, _polyline(brow, ident.brow_thick, blur=0.8), brow_colour)
    return rgb, alpha


def _paint_eyes(rgb: np.ndarray, ident: _Identity, openness: float) -> None:
    for side in (-1, 1):
        ex, ey = _FCX + side * ident.eye_dx, ident.eye_y
        if openness > 0:
            white = _ellipse(ex, ey, ident.eye_w, ident.eye_h * openness, blur=0.5)
            _over(rgb, None, white, (226, 220, 214))
            _over(rgb, None, _ellipse(ex, ey, 0.55 * ident.eye_w, 0.55 * ident.eye_w) * white, ident.iris)
            _over(rgb, None, _ellipse(ex, ey, 0.22 * ident.eye_w, 0.22 * ident.eye_w) * white, (12, 10, 10))
            lid = _ellipse(ex, ey, ident.eye_w, ident.eye_h * openness, arc=(180, 360), thickness=2, blur=0.5)
        else:
            lid = _ellipse(
                ex,
                ey - 0.2 * ident.eye_h,
                ident.eye_w,
                0.3 * ident.eye_h,
                arc=(0, 180),
                thickness=2,
                blur=0.5,
            )
        _over(rgb, None, lid, (30, 24, 24))


def _paint_mouth(rgb: np.ndarray, ident: _Identity, openness: float) -> None:
    mx, my, mw = _FCX, ident.mouth_y, ident.mouth_w
    _over(rgb, None, _ellipse(mx, my, mw, (0.07 + 0.1 * openness) * _B, blur=1.0), ident.lips)
    if openness > 0:
        cavity = _ellipse(mx, my, 0.8 * mw, 0.1 * openness * _B, blur=0.6)
        _over(rgb, None, cavity, (60, 22, 26))
        teeth = cavity * _ellipse(mx, my - 0.07 * openness * _B, 0.6 * mw, 0.05 * openness * _B, blur=0.5)
        _over(rgb, None, teeth, (215, 210, 200))
    else:
        line = [(mx - mw, my), (mx, my + 0.01 * _B), (mx + mw, my)]
        _over(rgb, None, _polyline(line, 1.5, blur=0.5), ident.lips * 0.45)


def _paint_hair(ident: _Identity, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Coverage of the hair behind the head and of the hair in front of it."""
    ys, xs = np.mgrid[0:_TEX_H, 0:_TEX_W].astype(np.float32)
    volume = {3: 1.03, 4: 1.25}.get(ident.hair_style, 1.1)
    cap = _ellipse(_FCX, _FCY - 0.3 * _B, ident.face_w * volume, _B * 0.85 * volume)
    hairline = _FCY - ident.hairline * _B + 0.3 * _B * np.clip(np.abs(xs - _FCX) / ident.face_w, 0, 1.2) ** 2
    if ident.hair_style == 2:  # a fringe with a ragged lower edge
        hairline += 0.04 * _B * np.sin(xs * 0.9 + rng.uniform(0, 6))
    front = cv2.GaussianBlur(cap * np.clip(hairline - ys + 0.5, 0, 1), (0, 0), 1.0)
    back = np.zeros_like(front)
    if ident.hair_style == 1:
        w0, w1 = ident.face_w * 1.3, ident.face_w * 1.45
        back = _polygon(
            [
                (_FCX - w0, _FCY - 0.5 * _B),
                (_FCX + w0, _FCY - 0.5 * _B),
                (_FCX + w1, _FCY + 1.5 * _B),
                (_FCX - w1, _FCY + 1.5 * _B),
            ],
            blur=2.0,
        )
        back = np.maximum(back, cap)
    return back, front


def _textures(ident: _Identity) -> _Textures:
    rng = np.random.default_rng(ident.grain_seed)
    base_rgb, face_alpha = _paint_face_base(ident, rng)
    back, front = _paint_hair(ident, rng)
    hair_rgb = ident.hair.astype(np.float32) * (1 + 0.1 * _grain(rng, 0.6, 5.0))[..., None]

    body = np.zeros((_TEX_H, _TEX_W, 3), np.float32)
    body_alpha = np.zeros((_TEX_H, _TEX_W), np.float32)
    # the hair behind the head is in the head's shadow near the face
    _over(body, body_alpha, back, hair_rgb * (1 - 0.5 * cv2.GaussianBlur(face_alpha, (0, 0), 8))[..., None])
    neck = _polygon(
        [
            (_FCX - 0.32 * _B, _FCY + 0.5 * _B),
            (_FCX + 0.32 * _B, _FCY + 0.5 * _B),
            (_FCX + 0.36 * _B, _FCY + 1.6 * _B),
            (_FCX - 0.36 * _B, _FCY + 1.6 * _B),
        ],
        blur=0.8,
    )
    _over(body, body_alpha, neck, ident.skin * 0.78)
    shoulders = _polygon(
        [
            (_FCX - 0.55 * _B, _FCY + 1.45 * _B),
            (_FCX + 0.55 * _B, _FCY + 1.45 * _B),
            (_FCX + 1.6 * _B, _FCY + 1.9 * _B),
            (_FCX + 1.7 * _B, _TEX_H),
            (_FCX - 1.7 * _B, _TEX_H),
            (_FCX - 1.6 * _B, _FCY + 1.9 * _B),
        ],
        blur=1.0,
    )
    _over(body, body_alpha, shoulders, ident.shirt)
    for side in (-1, 1):
        ear = _ellipse(_FCX + side * ident.face_w * 0.97, _FCY - 0.02 * _B, 0.13 * _B, 0.22 * _B, blur=0.8)
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
    eyes = [render(e, _MOUTH_LEVELS[0]) for e in _EYE_LEVELS]
    mouths = [render(_EYE_LEVELS[0], m) for m in _MOUTH_LEVELS]

    def grid(k: int) -> np.ndarray:
        return np.stack(
            [np.stack([np.concatenate([e[k][:_SPLIT_Y], m[k][_SPLIT_Y:]]) for m in mouths]) for e in eyes]
        )

    return _Textures(full=grid(0), face=grid(1), face_w=ident.face_w, skin_luma=float(ident.skin @ _LUMA))


def _premultiply(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    rgba = np.concatenate([np.clip(rgb, 0, 255) * alpha[..., None], alpha[..., None] * 255], axis=-1)
    return np.round(rgba).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------
# Videos


@dataclass(frozen=True)
class _Clip:
    """A rendered real video, kept in parts so that its fakes are made from exactly the same stream."""

    clean: np.ndarray  # (T, H, W, 3) float32 RGB: background and person, lit
    noise: np.ndarray  # (T, H, W, 3) float32 camera noise, added last
    light: np.ndarray  # (T, H, W) float32 multiplicative lighting
    affines: np.ndarray  # (T, 2, 3) texture -> frame
    variants: np.ndarray  # (T, 2) eye and mouth texture levels
    faces: np.ndarray  # (T, 3) face centre x, y and face height, frame pixels

    def frames(self) -> np.ndarray:
        return _to_uint8(self.clean + self.noise)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def _wave(rng: np.random.Generator, t: np.ndarray, amp: float, fmax: float) -> np.ndarray:
    """A smooth random signal within [-amp, amp]: two sinusoids of random frequency up to fmax."""
    f = rng.uniform(0.2, 1.0, 2) * fmax
    phase = rng.uniform(0, 2 * np.pi, 2)
    return amp * 0.5 * (np.sin(2 * np.pi * f[0] * t + phase[0]) + np.sin(2 * np.pi * f[1] * t + phase[1]))


def _muted(rng: np.random.Generator, luma: float) -> np.ndarray:
    return luma * rng.uniform(0.7, 1.3) * (1 + rng.uniform(-0.3, 0.3, 3))


def _background(rng: np.random.Generator, h: int, w: int, luma: float) -> np.ndarray:
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


def _render_real(tex: _Textures, rng: np.random.Generator, n: int, size: tuple[int, int], fps: int) -> _Clip:
    h, w = size
    t = np.arange(n) / fps  # seconds
    # A background darker than the skin, and an exposure that lifts dark faces part of the way, as a
    # camera would: a dark face in front of a bright wall defeats Haar cascades.
    bg = _background(rng, h, w, tex.skin_luma * rng.uniform(0.35, 0.8))
    exposure = np.sqrt(rng.uniform(130, 170) / tex.skin_luma)

    scale = rng.uniform(0.9, 1.1) * h / 240 * (1 + _wave(rng, t, 0.05, 0.4))
    cx = w * (0.5 + rng.uniform(-0.08, 0.08)) + _wave(rng, t, rng.uniform(0.03, 0.08) * w, 0.6)
    cy = h * (0.47 + rng.uniform(-0.03, 0.03)) + _wave(rng, t, 0.025 * h, 0.6)
    roll = np.deg2rad(_wave(rng, t, rng.uniform(2, 5), 0.5))
    cos, sin = scale * np.cos(roll), scale * np.sin(roll)
    affines = np.stack(
        [
            np.stack([cos, -sin, cx - cos * _FCX + sin * _FCY], 1),
            np.stack([sin, cos, cy - sin * _FCX - cos * _FCY], 1),
        ],
        1,
    )

    eyes = np.zeros(n, np.int64)  # index into _EYE_LEVELS, 0 = open
    blink = rng.uniform(0, 1.6)
    while blink * fps < n:  # a blink: half closed, closed, closed, half closed
        start = int(blink * fps)
        eyes[start : start + 4] = (1, 2, 2, 1)[: n - start]
        blink += rng.uniform(1.6, 3.6)
    talk = 0.45 + 0.55 * np.sin(2 * np.pi * rng.uniform(2, 4) * t + rng.uniform(0, 2 * np.pi))
    talk *= _wave(rng, t, 1.0, 0.3) > -0.4  # pauses
    mouth = np.abs(talk[:, None] - np.array(_MOUTH_LEVELS)).argmin(1)

    gain = exposure * (1 + _wave(rng, t, 0.08, 0.3))
    gx = rng.uniform(-0.15, 0.15) + _wave(rng, t, 0.06, 0.3)
    gy = rng.uniform(-0.1, 0.1) + _wave(rng, t, 0.04, 0.3)
    ys, xs = np.linspace(-1, 1, h)[None, :, None], np.linspace(-1, 1, w)[None, None, :]
    light = (gain[:, None, None] * (1 + gx[:, None, None] * xs + gy[:, None, None] * ys)).astype(np.float32)

    clean = np.empty((n, h, w, 3), np.float32)
    for i in range(n):
        layer = cv2.warpAffine(tex.full[eyes[i], mouth[i]], affines[i], (w, h), flags=cv2.INTER_LINEAR)
        alpha = layer[..., 3:].astype(np.float32) / 255
        clean[i] = (bg * (1 - alpha) + layer[..., :3]) * light[i, ..., None]
    noise = _NORMAL_LUT[rng.integers(0, 256, (n, h, w, 3), np.uint8)] * np.float32(rng.uniform(2.0, 4.0))
    faces = np.stack([cx, cy, 2 * _B * scale], 1)
    return _Clip(clean, noise, light, affines, np.stack([eyes, mouth], 1), faces)


def _swap_mask(target: _Textures, source: _Textures, rng: np.random.Generator, strength: float) -> np.ndarray:
    """The blending mask in texture coordinates, within the source face oval: a rounded shape from above
    the brows to below the mouth, whose edge gets sharper and wobblier with strength."""
    theta = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    cos, sin = np.cos(theta), np.sin(theta)
    up = sin < 0  # image y grows downwards
    power = np.where(up, 4.0, 2.5)  # squarer over the brows, rounder at the chin
    harmonics = np.arange(2, 6)[:, None] * theta + rng.uniform(0, 2 * np.pi, (4, 1))
    wobble = 1 + 0.03 * strength * (rng.uniform(-1, 1, (4, 1)) * np.sin(harmonics)).sum(0)
    x = 0.92 * min(target.face_w, source.face_w) * np.sign(cos) * np.abs(cos) ** (2 / power)
    y = _B * np.where(up, 0.62, 0.88) * np.sign(sin) * np.abs(sin) ** (2 / power)
    shape = _polygon(
        list(zip(_FCX + x * wobble, _FCY + y * wobble, strict=True)), blur=5 / (1 + 2 * strength)
    )
    return shape * source.face[0, 0, ..., 3].astype(np.float32) / 255


def _swap_face(
    clip: _Clip, target: _Textures, source: _Textures, rng: np.random.Generator, strength: float
) -> np.ndarray:
    """The frames of ``clip`` with ``source``'s face pasted over the target's, traces scaled by strength."""
    n, h, w = clip.clean.shape[:3]
    mask_tex = _swap_mask(target, source, rng, strength)
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
        out[i, y0:y1, x0:x1] = _to_uint8(clean + noise + m * (face - clean - drop_noise * noise))
    return out


# ---------------------------------------------------------------------------------------------------------
# Preset v2: camera variation on every video, head turns, occlusion, two manipulation methods whose traces
# are local (blend boundary, colour seam, resolution mismatch, flicker), H.264 when PyAV can encode it.

_SWAP, _REENACT = "swap", "reenact"
_METHODS = (_SWAP, _REENACT)


def video_codec() -> str:
    """The codec v2 videos are written with: H.264 (libx264 through PyAV) when available, else MPEG-4 Part 2."""
    try:
        import av

        av.codec.Codec("libx264", "w")
        return "h264"
    except Exception:  # PyAV missing, or built without libx264
        return "mpeg4"


def _encode(path: Path, frames: np.ndarray, fps: int, crf: int, codec: str) -> None:
    """Write RGB frames; ``crf`` (x264's constant rate factor) sets the compression of H.264 videos."""
    if codec == "mpeg4":
        _write_mp4(path, frames, fps)
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


@dataclass(frozen=True)
class _Camera:
    blur: float  # defocus, Gaussian sigma in pixels
    noise: float  # sensor noise deviation, grey levels
    crf: int  # compression


def _camera(rng: np.random.Generator) -> _Camera:
    return _Camera(blur=rng.uniform(0.0, 0.6), noise=rng.uniform(1.0, 4.0), crf=int(rng.integers(17, 26)))


@dataclass(frozen=True)
class _ClipV2:
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
    camera: _Camera


def _yaw_map(
    u: np.ndarray, v: np.ndarray, yaw: float, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Texture coordinates seen on a head turned by ``yaw``: the head is a vertical cylinder of
    ``radius`` around the face centre; the neck and shoulders turn less, the body not at all."""
    d = np.clip((u - _FCX) / radius, -1, 1)
    phi = np.clip(np.arcsin(d) - yaw, -np.pi / 2, np.pi / 2)
    inside = _FCX + radius * np.sin(phi)
    outside = u - np.sign(u - _FCX) * radius * (1 - np.cos(yaw))  # continuous at the cylinder's edge
    turned = np.where(np.abs(u - _FCX) < radius, inside, outside)
    weight = np.clip((_FCY + 1.6 * _B - v) / (0.8 * _B), 0, 1)
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
    """Frame box around the texture region rows top..bottom, columns _FCX +- half_w (clipped)."""
    h, w = size
    corners = np.array([[_FCX - half_w, _FCX + half_w, _FCX - half_w, _FCX + half_w], [top, top, bottom, bottom]])
    frame = affine[:, :2] @ corners + affine[:, 2:]
    x0, y0 = np.maximum(np.floor(frame.min(1)).astype(int) - 2, 0)
    x1, y1 = np.minimum(np.ceil(frame.max(1)).astype(int) + 2, (w, h))
    return int(x0), int(y0), int(x1), int(y1)


def _pores(tex: _Textures, rng: np.random.Generator) -> _Textures:
    """Adds fine skin texture inside the face: detail that a low-resolution paste loses."""
    grain = 1 + rng.uniform(0.03, 0.06) * _grain(rng, 0.5, 0.5)

    def apply(rgba: np.ndarray) -> np.ndarray:
        out = rgba.astype(np.float32)
        out[..., :3] *= grain[..., None]
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)

    return _Textures(apply(tex.full), apply(tex.face), tex.face_w, tex.skin_luma)


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
            cv2.ellipse(layer, centre, (int(0.2 * fh), int(0.26 * fh)), side * 20, 0, 360, 255, -1, cv2.LINE_AA)
        else:  # a microphone: a dark head on a stick, below the mouth
            head = (int(cx + side * 0.15 * fh), int(cy + fh * (0.95 - 0.25 * ramp)))
            cv2.circle(layer, head, int(0.1 * fh), 255, -1, cv2.LINE_AA)
            cv2.line(layer, head, (head[0] + side * int(0.2 * fh), h), 255, max(2, int(0.05 * fh)), cv2.LINE_AA)
        coverage[i] = cv2.GaussianBlur(layer.astype(np.float32) / 255, (0, 0), 0.8)
    return coverage, colour.astype(np.float32)


def _render_real_v2(
    tex: _Textures, rng: np.random.Generator, n: int, size: tuple[int, int], fps: int, camera: _Camera
) -> _ClipV2:
    h, w = size
    t = np.arange(n) / fps
    bg = _background(rng, h, w, tex.skin_luma * rng.uniform(0.35, 0.8))
    exposure = np.sqrt(rng.uniform(110, 185) / tex.skin_luma)

    face_height = rng.uniform(0.36, 0.56) * h  # 2 * _B * scale
    scale = face_height / (2 * _B) * (1 + _wave(rng, t, 0.05, 0.4))
    motion = rng.uniform(0.2, 1.0)  # how much this speaker moves
    cx = w * (0.5 + rng.uniform(-0.15, 0.15)) + _wave(rng, t, motion * 0.06 * w, 0.6)
    cy = h * (0.46 + rng.uniform(-0.03, 0.03)) + _wave(rng, t, motion * 0.025 * h, 0.6)
    roll = np.deg2rad(_wave(rng, t, rng.uniform(1, 5) * motion, 0.5))
    max_yaw = np.deg2rad(rng.uniform(3, 30))
    yaw = np.clip(max_yaw * (rng.uniform(-0.6, 0.6) + _wave(rng, t, 1.0, 0.35)), -max_yaw, max_yaw)
    cos, sin = scale * np.cos(roll), scale * np.sin(roll)
    affines = np.stack(
        [
            np.stack([cos, -sin, cx - cos * _FCX + sin * _FCY], 1),
            np.stack([sin, cos, cy - sin * _FCX - cos * _FCY], 1),
        ],
        1,
    )
    eyes = np.zeros(n, np.int64)
    blink = rng.uniform(0, 1.6)
    while blink * fps < n:
        start = int(blink * fps)
        eyes[start : start + 4] = (1, 2, 2, 1)[: n - start]
        blink += rng.uniform(1.6, 3.6)
    mouth = _talk(rng, t)

    gain = exposure * (1 + _wave(rng, t, 0.06, 0.3))
    gx = rng.uniform(-0.2, 0.2) + _wave(rng, t, 0.05, 0.3)
    gy = rng.uniform(-0.1, 0.1) + _wave(rng, t, 0.04, 0.3)
    ys, xs = np.linspace(-1, 1, h)[None, :, None], np.linspace(-1, 1, w)[None, None, :]
    light = (gain[:, None, None] * (1 + gx[:, None, None] * xs + gy[:, None, None] * ys)).astype(np.float32)
    faces = np.stack([cx, cy, 2 * _B * scale], 1)
    occluder = _occluder(rng, n, size, faces, tex.full[0, 0, round(_FCY), round(_FCX), :3].astype(np.float32))

    clean = np.empty((n, h, w, 3), np.float32)
    radius = 1.05 * tex.face_w
    for i in range(n):
        frame = bg.copy()
        box = _texture_box(affines[i], 0, _TEX_H, _TEX_W / 2, size)
        layer = _warp(tex.full[eyes[i], mouth[i]], affines[i], yaw[i], radius, box).astype(np.float32)
        x0, y0, x1, y1 = box
        frame[y0:y1, x0:x1] = frame[y0:y1, x0:x1] * (1 - layer[..., 3:] / 255) + layer[..., :3]
        if occluder is not None:
            a = occluder[0][i][..., None]
            frame = frame * (1 - a) + a * occluder[1]
        clean[i] = frame * light[i, ..., None]
    noise = _NORMAL_LUT[rng.integers(0, 256, (n, h, w, 3), np.uint8)] * np.float32(camera.noise)
    shot = np.empty_like(clean)
    for i in range(n):
        shot[i] = _defocus(clean[i], camera.blur) + noise[i]
    coverage = occluder[0] if occluder is not None else np.zeros((n, h, w), np.float32)
    return _ClipV2(clean, shot, noise, light, coverage, affines, yaw, np.stack([eyes, mouth], 1), faces, camera)


def _defocus(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigma) if sigma > 0.05 else image


def _talk(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Mouth texture levels of a talking speaker with pauses."""
    talk = 0.45 + 0.55 * np.sin(2 * np.pi * rng.uniform(2, 4) * t + rng.uniform(0, 2 * np.pi))
    talk *= _wave(rng, t, 1.0, 0.3) > -0.4
    return np.abs(talk[:, None] - np.array(_MOUTH_LEVELS)).argmin(1)


def _mouth_mask(target: _Textures, rng: np.random.Generator, strength: float, mouth_y: float) -> np.ndarray:
    """Blending mask of a mouth reenactment, in texture coordinates: from below the nose to the chin."""
    half_w = target.face_w * rng.uniform(0.62, 0.78)
    shape = _ellipse(_FCX, mouth_y + 0.04 * _B, half_w, 0.44 * _B, blur=2 / (1 + 2 * strength))
    return shape * target.face[0, 0, ..., 3].astype(np.float32) / 255


@dataclass(frozen=True)
class _Manipulation:
    method: str
    strength: float
    low: float  # resolution of the pasted face (1 = full)
    sharpness_ratio: float  # Laplacian variance of the paste / of the real face there (by sharpening it)
    tone: np.ndarray  # per-channel colour mismatch
    seam: float  # how much darker the blend is along the mask edge (0: not at all)
    flicker: np.ndarray  # (T,) per-frame brightness of the paste
    jitter: np.ndarray  # (T, 2) per-frame position of the paste, pixels


def _manipulation(rng: np.random.Generator, n: int, artifact_strength: float, method: str) -> _Manipulation:
    """A fake's method and traces. The paste is rendered at 0.25-0.29x resolution, then sharpened until
    the Laplacian variance of the blended region is a random 0.52-1.0x of the real face's there
    (``_matching_sharpen``), so the face-region sharpness goes either way across fakes: the soft, haloed
    texture is the trace, not its level. The blend darkens along the mask edge (a thin seam line, as a
    blend of two images that do not quite agree leaves), the paste's colour is off by 5-22 % per channel,
    and it flickers a little from frame to frame. The camera's noise is added over the paste like
    everywhere else."""
    s = artifact_strength * rng.uniform(0.8, 1.0)
    tone_size = rng.uniform(0.12, 0.22)
    return _Manipulation(
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


def _fake_v2(
    clip: _ClipV2, target: _Textures, source: _Textures, source_mouth: np.ndarray, manip: _Manipulation,
    rng: np.random.Generator, mouth_y: float,
) -> np.ndarray:
    """``clip`` with a pasted face (swap) or mouth (reenactment), through the same camera."""
    n, h, w = clip.clean.shape[:3]
    if manip.method == _SWAP:
        mask_tex = _swap_mask(target, source, rng, manip.strength)
        paste_tex, rows = source.face, (_FCY - 0.75 * _B, _FCY + 1.0 * _B)
    else:
        mask_tex = _mouth_mask(target, rng, manip.strength, mouth_y)
        paste_tex, rows = target.face, (mouth_y - 0.5 * _B, _FCY + 1.1 * _B)
    radius = 1.05 * target.face_w
    pad = int(np.ceil(3 * clip.camera.blur)) + 2
    # frame pixels per texture pixel: the paste has manip.low samples per frame pixel
    low_tex = _low_resolution(paste_tex, manip.low * float(np.mean(clip.faces[:, 2])) / (2 * _B))
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
        face *= (target_mean / np.maximum(source_mean, 1e-3) * manip.tone * manip.flicker[i]).astype(np.float32)
        shade = 1 - manip.seam * 4 * m * (1 - m)  # darkest where the mask is half on: the seam line
        pastes.append((i, (x0, y0, x1, y1), m, face, face - cv2.GaussianBlur(face, (0, 0), 1.0), shade))
    sharpen = _matching_sharpen(clip, pastes, manip.sharpness_ratio)
    out = clip.shot.copy()
    for i, (x0, y0, x1, y1), m, face, detail, shade in pastes:
        m3 = m[..., None]
        clean = clip.clean[i, y0:y1, x0:x1]
        blended = (clean + m3 * (face + sharpen * detail - clean)) * shade[..., None]
        out[i, y0:y1, x0:x1] += _defocus(blended - clean, clip.camera.blur)
    return _to_uint8(out)


def _low_resolution(textures: np.ndarray, factor: float) -> np.ndarray:
    """Premultiplied RGBA textures (..., H, W, 4) resampled to ``factor`` of their resolution and back, as
    float32: a generator's face at a lower resolution than the video, fixed to the face as it moves."""
    h, w = textures.shape[-3:-1]
    small = (max(2, round(w * min(factor, 1.0))), max(2, round(h * min(factor, 1.0))))
    flat = textures.reshape(-1, h, w, 4)
    out = np.stack(
        [
            cv2.resize(cv2.resize(t, small, interpolation=cv2.INTER_AREA), (w, h), interpolation=cv2.INTER_LINEAR)
            for t in flat.astype(np.float32)
        ]
    )
    return out.reshape(textures.shape).astype(np.float32)


def _matching_sharpen(clip: _ClipV2, pastes: list, ratio: float) -> float:
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
        real = cv2.Laplacian(clean @ _LUMA, cv2.CV_32F)[inside]
        fake = cv2.Laplacian(((clean + m3 * (face - clean)) * shade3) @ _LUMA, cv2.CV_32F)[inside]
        high = cv2.Laplacian((m3 * detail * shade3) @ _LUMA, cv2.CV_32F)[inside]
        stats.append((real.var(), fake.var(), np.mean((fake - fake.mean()) * (high - high.mean())), high.var()))
    if not stats:
        return 0.0
    v_real, v_a, c, v_b = np.mean(stats, axis=0)
    discriminant = c * c - v_b * (v_a - ratio * v_real)
    if v_b <= 1e-9 or discriminant < 0:
        return 0.0
    return float(np.clip((-c + np.sqrt(discriminant)) / v_b, 0.0, 8.0))


def _write_dataset_v2(out: Path, p: dict) -> None:
    seed, n_ids = p["seed"], p["num_identities"]
    size, n, fps = (p["height"], p["width"]), p["num_frames"], p["fps"]
    codec = video_codec()
    for folder in ("Celeb-real", "Celeb-synthesis", "YouTube-real"):
        (out / folder).mkdir(parents=True)
    split = _rng(seed, _TAG_SPLIT)
    test_ids = _test_subset(split, n_ids, p["test_fraction"])
    test_youtube = _test_subset(split, p["youtube_real"], p["test_fraction"])
    identities = [_identity(_rng(seed, _TAG_IDENTITY, i)) for i in range(n_ids)]
    textures = [_pores(_textures(ident), _rng(seed, _TAG_IDENTITY, i, 1)) for i, ident in enumerate(identities)]
    test_lines, faces, methods = [], {}, {}
    total = n_ids * p["real_per_identity"] * (1 + p["fakes_per_real"]) + p["youtube_real"]
    bar = tqdm(total=total, desc="synthetic videos", unit="video")

    def write(rel: str, frames: np.ndarray, clip: _ClipV2, crf: int, is_test: bool, real: bool) -> None:
        _encode(out / rel, frames, fps, crf, codec)
        bar.update()
        faces[rel] = np.round(clip.faces, 1).tolist()
        if is_test:
            test_lines.append(f"{int(real)} {rel}")

    for i in range(n_ids):
        for v in range(p["real_per_identity"]):
            rng = _rng(seed, _TAG_REAL, i, v)
            camera = _camera(rng)
            clip = _render_real_v2(textures[i], rng, n, size, fps, camera)
            write(f"Celeb-real/id{i}_{v:04d}.mp4", _to_uint8(clip.shot), clip, camera.crf, i in test_ids, True)
            others = [m for m in range(n_ids) if m != i]
            pick = _rng(seed, _TAG_SOURCES, i, v)
            sources = pick.choice(others, p["fakes_per_real"], replace=False)
            first = int(pick.integers(2))  # the fakes of a real video take turns: swap, reenactment, swap...
            for k, m in enumerate(sorted(sources.tolist())):
                rng = _rng(seed, _TAG_FAKE, i, v, m)
                manip = _manipulation(rng, n, p["artifact_strength"], _METHODS[(first + k) % 2])
                driver = _talk(rng, np.arange(n) / fps)  # the reenactment's mouth follows another speaker
                fake = _fake_v2(clip, textures[i], textures[m], driver, manip, rng, identities[i].mouth_y)
                rel = f"Celeb-synthesis/id{i}_id{m}_{v:04d}.mp4"
                write(rel, fake, clip, _camera(rng).crf, i in test_ids, False)  # encoded anew, like a real fake
                methods[rel] = {"method": manip.method, "strength": round(manip.strength, 3)}
    for k in range(p["youtube_real"]):
        rng = _rng(seed, _TAG_YT_VIDEO, k)
        camera = _camera(rng)
        tex = _pores(_textures(_identity(_rng(seed, _TAG_YT_IDENTITY, k))), _rng(seed, _TAG_YT_IDENTITY, k, 1))
        clip = _render_real_v2(tex, rng, n, size, fps, camera)
        write(f"YouTube-real/{k:05d}.mp4", _to_uint8(clip.shot), clip, camera.crf, k in test_youtube, True)

    bar.close()
    (out / TEST_LIST).write_text("".join(line + "\n" for line in sorted(test_lines)))
    marker = {"params": p, "codec": codec, "fakes": methods, "faces": faces}
    (out / MARKER).write_text(json.dumps(marker, separators=(",", ":")))
