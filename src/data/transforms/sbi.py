"""Self-Blended Images (SBI): training fakes made from real frames alone, reimplemented from the paper's
description (Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images", CVPR 2022).

From one real face crop I: a source Is, I with a colour jitter (RGB shift, hue/saturation/value,
brightness/contrast) and a frequency jitter (downscale-upscale or sharpen), then a small geometric mismatch
(a translation of a few percent and a resize about the face centre); a mask M, the face region, deformed
(elastic deformation), blurred by two Gaussian kernels of random sizes and scaled by a blending ratio r
drawn from `blend_ratios`; the blend I_SB = Is * M + It * (1 - M), label 1, the real frame label 0.

Choices of this implementation:
- The target is the frame itself (It = I) and only the source is augmented; the paper augments one of the
  two, picked at random. So a blend differs from the real frame it is paired with only where M > 0: the
  detector's only evidence is the blended region and its boundary.
- The mask comes from the five landmarks the face-crop cache stores (eyes, nose tip, mouth corners: see
  `src.data.faces.align`), not from a 68-point hull: a mean face outline (`FACE_OUTLINE`, brows to chin and
  temple to temple) is placed in the frame the landmarks define (x along the eye line in inter-ocular
  distances, y towards the mouth in eye-to-mouth distances) and its convex hull, with the five points,
  filled. Limits: no jaw line or brows of the face's own, so long, round or bearded faces, an open mouth,
  strong yaw (the hull narrows with the eye distance but does not follow the turned cheek) or pitch (the
  eye-to-mouth distance is floored at `MIN_MOUTH_DEPTH` inter-ocular distances) get a hull that is too
  short, too wide or partly over the background. A 68-point or face-mesh model would follow the face; none
  that works offline is a dependency (face-alignment downloads weights at run time; mediapipe's face mesh
  ships in 0.10.x wheels that need protobuf<5, which MLflow's protobuf excludes).
- A frame without landmarks (NaN: no face found, or a detector without landmarks such as haar, the
  synthetic set's) gets an ellipse about the crop's centre (`fallback_axes`, fractions of the crop side:
  the crop is the face box with a margin, so the face is about there); `SelfBlendAugment.fallbacks` counts
  them, and the first one in a process is logged.
- Mask values below 1/255 are set to 0: they change no pixel by more than one level, and the blend's
  support stays where the mask says.

Training (conf/train_augment/sbi.yaml builds `sbi(size, ...)`): the datasets (`src.data.datasets`) hand a
`SelfBlendAugment` each training item with its landmarks. A real item gives the real crop (label 0) and its
blend (label 1), both in the same batch (`pairs: true`, the paper's setting: a batch of B items then holds
up to 2B crops) or one of them at random (`pairs: false`, blend with probability `blend_p`); a fake item
passes as it is (label 1). All frames of a clip share one draw of the blend parameters, each frame masked by
its own landmarks. Then the flip and the resize of `weak`, one draw for the real crop and its blend.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields

import albumentations as A
import cv2
import numpy as np
import torch

from src.data.transforms.pipelines import PAIRS, augment_clip
from src.data.transforms.train import weak
from src.utils.errors import ConfigError, check

log = logging.getLogger(__name__)
KEY = "train_augment.transform"  # where the knobs are set
REAL, FAKE = 0, 1
# A mean face outline (x, y) in the landmarks' face frame: x from the eye midpoint along the eye line in
# inter-ocular distances, y towards the mouth in eye-to-mouth distances; brows (y -0.45) to chin (y 1.6),
# jaw half-width 1.1 at the eye line (human proportions; the ArcFace template's eyes and mouth set the scale).
FACE_OUTLINE = np.array(
    [
        *[(x, -0.45) for x in (-0.9, -0.45, 0.0, 0.45, 0.9)],
        *[(sign * x, y) for sign in (-1, 1) for x, y in ((1.1, 0.0), (1.05, 0.6), (0.85, 1.15), (0.45, 1.5))],
        (0.0, 1.6),
    ]
)
MIN_MOUTH_DEPTH = 0.6  # eye-to-mouth distance floor, in inter-ocular distances (faces seen from above)
MIN_EYE_DISTANCE = 2.0  # pixels: closer eyes are a failed detection, masked as if missing
ELASTIC_COARSENING = 8  # the elastic displacement field's resolution, 1/8 of the crop's
FALLBACK_CENTRE_Y = 0.55  # the fallback ellipse's centre, fraction of the crop height (below the eyes)


def _pair(value, name: str, low: float = 0.0, high: float = float("inf")) -> tuple[float, float]:
    ok = isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int | float) for v in value)
    check(
        ok and low <= value[0] <= value[1] <= high,
        f"{KEY}.{name}",
        value,
        f"must be [lo, hi] in [{low}, {high}]",
    )
    return float(value[0]), float(value[1])


@dataclass(frozen=True)
class BlendSettings:
    """The knobs of one self-blend; sizes are fractions of the crop side, so they hold at any crop size."""

    colour_p: float = (
        0.3  # the probability of each colour step: RGB shift, hue/sat/value, brightness/contrast
    )
    rgb_shift: float = 20.0  # uint8 levels, each channel shifted in [-rgb_shift, rgb_shift]
    hue_shift: float = 10.0  # OpenCV hue units (0..180)
    saturation_shift: float = 20.0
    value_shift: float = 20.0
    brightness_contrast: float = 0.1  # brightness and contrast each changed in [-x, x]
    frequency_p: float = 0.5  # the probability of the frequency step: downscale-upscale or sharpen
    downscale_range: tuple[float, float] = (0.25, 0.5)
    max_shift: float = 0.03  # the source's translation, each axis in [-max_shift, max_shift]
    scale_range: tuple[float, float] = (0.95, 1.05)  # the source's resize about the face centre, each axis
    elastic_alpha: float = 0.03  # the mask's largest elastic displacement
    elastic_sigma: float = 0.05  # the smoothness (Gaussian sigma) of the displacement field
    blur_kernel_range: tuple[float, float] = (0.02, 0.12)  # the two Gaussian kernels' sizes
    blend_ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)  # r, drawn uniformly from these
    fallback_axes: tuple[float, float] = (0.27, 0.34)  # the no-landmark ellipse's semi-axes (x, y)

    def __post_init__(self):
        for name in ("colour_p", "frequency_p", "max_shift", "elastic_alpha", "elastic_sigma"):
            value = getattr(self, name)
            check(
                isinstance(value, int | float) and 0 <= value <= 1,
                f"{KEY}.{name}",
                value,
                "must be in [0, 1]",
            )
        for name in ("rgb_shift", "hue_shift", "saturation_shift", "value_shift", "brightness_contrast"):
            value = getattr(self, name)
            check(isinstance(value, int | float) and value >= 0, f"{KEY}.{name}", value, "must be >= 0")
        setattr_ = functools.partial(object.__setattr__, self)  # frozen: normalise YAML lists once
        setattr_("downscale_range", _pair(self.downscale_range, "downscale_range", 0.01, 1.0))
        setattr_("scale_range", _pair(self.scale_range, "scale_range", 0.5, 2.0))
        setattr_("blur_kernel_range", _pair(self.blur_kernel_range, "blur_kernel_range", 0.0, 1.0))
        setattr_("fallback_axes", _pair(self.fallback_axes, "fallback_axes", 0.05, 0.5))
        ratios = self.blend_ratios
        ok = isinstance(ratios, Sequence) and len(ratios) > 0
        check(
            ok and all(isinstance(r, int | float) and 0 < r <= 1 for r in ratios),
            f"{KEY}.blend_ratios",
            ratios,
            "must be a non-empty list of ratios in (0, 1]",
        )
        setattr_("blend_ratios", tuple(float(r) for r in ratios))


@dataclass(frozen=True)
class BlendParams:
    """One draw of a self-blend's randomness; a clip's frames share it."""

    source_seed: int  # the source's colour and frequency jitter (one albumentations draw)
    shift: tuple[float, float]  # fractions of the crop side
    scale: tuple[float, float]
    elastic_seed: int  # the displacement field (the same for every frame of a size)
    blur_kernels: tuple[float, float]  # fractions of the crop side
    ratio: float


def draw_params(rng: np.random.Generator, settings: BlendSettings) -> BlendParams:
    """The same number of draws whatever the frame, so a seed gives the same blend to every frame."""
    return BlendParams(
        source_seed=int(rng.integers(2**31 - 1)),
        shift=tuple(rng.uniform(-settings.max_shift, settings.max_shift, 2)),
        scale=tuple(rng.uniform(*settings.scale_range, 2)),
        elastic_seed=int(rng.integers(2**31 - 1)),
        blur_kernels=tuple(rng.uniform(*settings.blur_kernel_range, 2)),
        ratio=float(rng.choice(settings.blend_ratios)),
    )


# -- the mask ----------------------------------------------------------------------------------------------
def face_polygon(landmarks: np.ndarray) -> np.ndarray | None:
    """The face outline and the five points in pixels (K, 2), or None where the landmarks are missing (NaN)
    or degenerate."""
    points = np.asarray(landmarks, np.float64)
    if points.shape != (5, 2):
        raise ValueError(f"landmarks must be (5, 2) (eyes, nose, mouth corners), got {points.shape}")
    if not np.isfinite(points).all():
        return None
    left_eye, right_eye, _, mouth_left, mouth_right = points
    eye_centre, across = (left_eye + right_eye) / 2, right_eye - left_eye
    eye_distance = float(np.hypot(*across))
    if eye_distance < MIN_EYE_DISTANCE:
        return None
    across /= eye_distance
    down = np.array([-across[1], across[0]])  # image y grows downwards: the mouth's side of the eye line
    mouth_depth = float(((mouth_left + mouth_right) / 2 - eye_centre) @ down)
    if mouth_depth < 0:  # eyes listed right to left
        down, mouth_depth = -down, -mouth_depth
    mouth_depth = max(mouth_depth, MIN_MOUTH_DEPTH * eye_distance)
    outline = eye_centre + np.outer(FACE_OUTLINE[:, 0] * eye_distance, across)
    outline += np.outer(FACE_OUTLINE[:, 1] * mouth_depth, down)
    return np.vstack([outline, points])


def face_mask(
    landmarks: np.ndarray,
    shape: tuple[int, ...],
    fallback_axes: tuple[float, float] = BlendSettings.fallback_axes,
) -> tuple[np.ndarray, bool]:
    """(binary float32 (H, W) mask of the face, whether it is the centre-ellipse fallback): the convex hull
    of `face_polygon`, or the ellipse where the landmarks are missing or their hull misses the image."""
    height, width = shape[:2]
    mask = np.zeros((height, width), np.uint8)
    polygon = face_polygon(landmarks)
    if polygon is not None:
        cv2.fillConvexPoly(mask, cv2.convexHull(np.round(polygon).astype(np.int32)), 1)
    fell_back = not mask.any()
    if fell_back:
        centre = (round(width / 2), round(height * FALLBACK_CENTRE_Y))
        axes = (max(1, round(fallback_axes[0] * width)), max(1, round(fallback_axes[1] * height)))
        cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, thickness=-1)
    return mask.astype(np.float32), fell_back


def _odd(pixels: float) -> int:
    return max(3, int(round(pixels)) // 2 * 2 + 1)


def _deform(mask: np.ndarray, params: BlendParams, settings: BlendSettings) -> np.ndarray:
    """The elastic deformation, then the two Gaussian blurs and the ratio; values below 1/255 set to 0."""
    height, width = mask.shape
    side = max(height, width)
    if settings.elastic_alpha > 0 and settings.elastic_sigma > 0:
        # the smooth field is drawn at 1/ELASTIC_COARSENING of the size and upsampled: the same wobble, 1/64 the work
        small = (max(2, round(width / ELASTIC_COARSENING)), max(2, round(height / ELASTIC_COARSENING)))
        noise = np.random.default_rng(params.elastic_seed).uniform(-1, 1, (2, small[1], small[0]))
        sigma = settings.elastic_sigma * side / ELASTIC_COARSENING
        field = [
            cv2.resize(cv2.GaussianBlur(f.astype(np.float32), (0, 0), sigma), (width, height)) for f in noise
        ]
        field = [f * (settings.elastic_alpha * side / max(float(np.abs(f).max()), 1e-12)) for f in field]
        grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
        mask = cv2.remap(mask, grid_x + field[0], grid_y + field[1], cv2.INTER_LINEAR, borderValue=0.0)
    for kernel in params.blur_kernels:
        size = _odd(kernel * side)
        mask = cv2.GaussianBlur(mask, (size, size), 0)
    mask = np.clip(mask * params.ratio, 0.0, 1.0).astype(np.float32)
    mask[mask < 1.0 / 255.0] = 0.0
    return mask


# -- the source and the blend ------------------------------------------------------------------------------
@functools.cache
def source_pipeline(settings: BlendSettings) -> A.Compose:
    """The source's colour and frequency jitter (one pipeline per settings; not for concurrent threads)."""
    s = settings
    colour = [
        A.RGBShift(
            r_shift_limit=s.rgb_shift, g_shift_limit=s.rgb_shift, b_shift_limit=s.rgb_shift, p=s.colour_p
        ),
        A.HueSaturationValue(
            hue_shift_limit=s.hue_shift,
            sat_shift_limit=s.saturation_shift,
            val_shift_limit=s.value_shift,
            p=s.colour_p,
        ),
        A.RandomBrightnessContrast(
            brightness_limit=s.brightness_contrast, contrast_limit=s.brightness_contrast, p=s.colour_p
        ),
    ]
    frequency = A.OneOf(
        [A.Downscale(scale_range=s.downscale_range, p=1.0), A.Sharpen(p=1.0)], p=s.frequency_p
    )
    return A.Compose([*colour, frequency])


def _source(
    image: np.ndarray, landmarks: np.ndarray, params: BlendParams, settings: BlendSettings
) -> np.ndarray:
    """The jittered frame, resized about the face centre and shifted (reflected borders)."""
    jittered = augment_clip(source_pipeline(settings), image, params.source_seed)
    height, width = image.shape[:2]
    points = np.asarray(landmarks, np.float64)
    finite = points[np.isfinite(points).all(axis=1)]
    cx, cy = finite.mean(axis=0) if len(finite) else (width / 2, height / 2)
    (sx, sy), (dx, dy) = params.scale, params.shift
    side = max(height, width)
    matrix = np.array([[sx, 0, (1 - sx) * cx + dx * side], [0, sy, (1 - sy) * cy + dy * side]], np.float64)
    return cv2.warpAffine(
        jittered, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    )


def blend_images(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """source * mask + target * (1 - mask), rounded; exactly `target` where the mask is 0."""
    weight = mask[..., None]
    mixed = source.astype(np.float32) * weight + target.astype(np.float32) * (1.0 - weight)
    mixed = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return np.where(weight > 0, mixed, target)


def apply_blend(
    image: np.ndarray, landmarks: np.ndarray, params: BlendParams, settings: BlendSettings
) -> tuple[np.ndarray, np.ndarray, bool]:
    """(the self-blend of one frame, its mask, whether the mask is the no-landmark fallback)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    mask, fell_back = face_mask(landmarks, image.shape, settings.fallback_axes)
    mask = _deform(mask, params, settings)
    return blend_images(_source(image, landmarks, params, settings), image, mask), mask, fell_back


def self_blend(
    image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator, settings: BlendSettings | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(blended uint8 (H, W, 3), mask float32 (H, W) in [0, 1]) of one real face crop and its (5, 2) landmarks
    in crop pixels (NaN: missing); the same for the same `rng` state; pixels where the mask is 0 unchanged."""
    settings = settings or BlendSettings()
    blended, mask, _ = apply_blend(image, landmarks, draw_params(rng, settings), settings)
    return blended, mask


# -- training items ----------------------------------------------------------------------------------------
class SelfBlendAugment:
    """The `train_augment=sbi` transform: `samples` turns a training item into its real and blended samples.

    Used as a plain albumentations pipeline (`augment_clip`) it is its `base`, the flip and the resize.
    `blends` and `fallbacks` count, in this process, the frames blended and those masked by the ellipse.
    It declares `yields = PAIRS` (`src.data.transforms.pipelines`): the datasets give it each item's landmarks
    and take its samples; no batched form (each blend is drawn per item).

    Args:
        base: the flip and resize applied after the blend (`weak`).
        settings: the blend's knobs.
        pairs: a real item gives its crop and its blend (True) or one of them.
        blend_p: with pairs=False, the probability of the blend.
    """

    yields = PAIRS
    batch_form = None

    def __init__(self, base, settings: BlendSettings, pairs: bool = True, blend_p: float = 0.5):
        check(isinstance(pairs, bool), f"{KEY}.pairs", pairs, "must be true or false")
        check(
            isinstance(blend_p, int | float) and 0 <= blend_p <= 1,
            f"{KEY}.blend_p",
            blend_p,
            "must be in [0, 1]",
        )
        self.base, self.settings, self.pairs, self.blend_p = base, settings, pairs, float(blend_p)
        self.blends = self.fallbacks = 0

    def set_random_state(self, *args, **kwargs) -> None:
        self.base.set_random_state(*args, **kwargs)

    def __call__(self, **data):
        return self.base(**data)

    def blend_clip(self, crops: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The self-blend of a frame (H, W, 3) with its (5, 2) landmarks, or of every frame of a clip
        (T, H, W, 3) with (T, 5, 2): one parameter draw for all frames, each masked by its own landmarks."""
        params = draw_params(rng, self.settings)
        frames, points = np.asarray(crops), np.asarray(landmarks, np.float64)
        single = frames.ndim == 3
        frames, points = (frames[None], points[None]) if single else (frames, points)
        if points.shape != (len(frames), 5, 2):
            raise ValueError(
                f"{points.shape} landmarks for {frames.shape} crops: need (T, 5, 2) for (T, H, W, 3)"
            )
        blended = []
        for frame, frame_points in zip(frames, points, strict=True):
            out, _, fell_back = apply_blend(frame, frame_points, params, self.settings)
            blended.append(out)
            self.blends += 1
            self.fallbacks += fell_back
            if fell_back and self.fallbacks == 1:
                log.warning(
                    "self-blended images: a frame without face landmarks (no face found, or a detector without "
                    "landmarks, e.g. haar) is masked by an ellipse about the crop centre; "
                    "data.face_detector=mtcnn stores landmarks"
                )
        return blended[0] if single else np.stack(blended)

    def samples(
        self,
        crops: np.ndarray,
        landmarks: np.ndarray,
        label: int,
        item: int,
        seed: int,
        pairs: bool | None = None,
    ) -> list[tuple[torch.Tensor, int, int]]:
        """The (pixels, label, item) samples of one training item, a frame (H, W, 3) or a clip (T, H, W, 3),
        and its landmarks (5, 2) or (T, 5, 2): a fake item as it is; a real one as its real crop and its blend
        (`pairs`, default the `pairs` knob) or one of them, the blend with probability `blend_p`. The same
        for the same `seed`; the real crop and its blend get the same flip."""
        rng = np.random.default_rng(seed)
        base_seed = int(rng.integers(2**31 - 1))

        def finish(pixels: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(augment_clip(self.base, pixels, base_seed))

        if label != REAL:
            return [(finish(crops), label, item)]
        pairs = self.pairs if pairs is None else pairs
        blend = pairs or bool(rng.random() < self.blend_p)
        out = [(finish(crops), REAL, item)] if pairs or not blend else []
        if blend:
            out.append((finish(self.blend_clip(crops, landmarks, rng)), FAKE, item))
        return out


def sbi(
    size: int, horizontal_flip_p: float = 0.5, pairs: bool = True, blend_p: float = 0.5, **knobs
) -> SelfBlendAugment:
    """The `train_augment=sbi` transform for a model input `size`: `weak`'s flip and resize after the blend;
    `knobs` are `BlendSettings` fields."""
    unknown = sorted(set(knobs) - {f.name for f in fields(BlendSettings)})
    if unknown:
        names = ", ".join(f.name for f in fields(BlendSettings))
        raise ConfigError(
            f"{KEY}.{unknown[0]}: no such knob of train_augment=sbi (knobs: pairs, blend_p, horizontal_flip_p, {names})"
        )
    return SelfBlendAugment(weak(size, horizontal_flip_p), BlendSettings(**knobs), pairs, blend_p)
