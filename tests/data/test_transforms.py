"""Augmentation pipelines: shapes, one parameter draw per clip, seeding, strength of each level."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import cv2
import hydra
import numpy as np
import pytest

from src.data.transforms.perturbations import heavy, jpeg
from src.data.transforms.pipelines import augment_clip, stable_seed
from src.experiments.config import CONFIG_DIR
from tests.conftest import compose_config

TRAIN_LEVELS = sorted(path.stem for path in (CONFIG_DIR / "train_augment").glob("*.yaml"))
TEST_LEVELS = sorted(path.stem for path in (CONFIG_DIR / "augment").glob("*.yaml"))
ALL_LEVELS = [("train", level) for level in TRAIN_LEVELS] + [("test", level) for level in TEST_LEVELS]
RANDOM_LEVELS = [("train", "strong"), ("test", "flip"), ("test", "heavy"), ("test", "jpeg")]
AUGMENT_YAMLS = sorted(path.stem for path in (CONFIG_DIR / "augment").glob("*.yaml"))
MODEL_SIZES = (224, 256, 299)  # ResNet, MesoNet, Xception


@functools.cache
def _partial(kind: str, level: str):
    """What conf/train_augment/<level>.yaml or conf/augment/<level>.yaml builds: a function of the input size."""
    if kind == "train":
        return hydra.utils.instantiate(
            compose_config("train", [f"train_augment={level}"]).train_augment.transform
        )
    return hydra.utils.instantiate(compose_config("evaluate", [f"augment={level}"]).augment.transform)


def build(kind: str, level: str, size: int):
    """The transform of that YAML for a model input size (a fresh pipeline each call)."""
    return _partial(kind, level)(size=size)


def build_test_transform(level: str, size: int):
    return build("test", level, size)


def smooth_frames(t: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """Face-crop-like frames: smooth colour gradients plus mild texture, different per frame."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    frames = []
    for _ in range(t):
        a, b, c = rng.uniform(0.2, 0.8, 3)
        rgb = np.stack([a * x + (1 - a) * y, b * y + (1 - b) * (1 - x), c * (x * y) + 0.2], axis=-1)
        frames.append(rgb * 200 + rng.normal(0, 5, rgb.shape) + 20)
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def marked_frames(t: int, size: int = 64) -> np.ndarray:
    """Different dark frames that all carry a bright block in the top-left quadrant."""
    frames = np.stack([np.full((size, size, 3), 10 + 15 * i, np.uint8) for i in range(t)])
    frames[:, 4 : size // 2 - 4, 4 : size // 2 - 4] = 255
    return frames


def bright_quadrant(frame: np.ndarray) -> tuple[int, int]:
    """(row, col) of the brightest quadrant: where the marker block ended up."""
    h, w = frame.shape[0] // 2, frame.shape[1] // 2
    means = [[frame[r * h : (r + 1) * h, c * w : (c + 1) * w].mean() for c in (0, 1)] for r in (0, 1)]
    r, c = np.unravel_index(np.argmax(means), (2, 2))
    return int(r), int(c)


@pytest.mark.parametrize(("kind", "level"), ALL_LEVELS)
@pytest.mark.parametrize(("in_size", "size"), [(256, 224), (64, 64), (64, 96)])
def test_shapes_and_dtypes(kind, level, in_size, size):
    transform = build(kind, level, size)
    clip = augment_clip(transform, smooth_frames(3, in_size), seed=0)
    assert clip.shape == (3, size, size, 3) and clip.dtype == np.uint8
    single = augment_clip(transform, smooth_frames(1, in_size), seed=0)
    assert single.shape == (1, size, size, 3)
    frame = augment_clip(transform, smooth_frames(1, in_size)[0], seed=0)
    assert frame.shape == (size, size, 3) and frame.dtype == np.uint8


@pytest.mark.parametrize(("kind", "level"), ALL_LEVELS)
def test_no_warnings(kind, level):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        augment_clip(build(kind, level, 48), smooth_frames(2), seed=1)
        augment_clip(build(kind, level, 48), smooth_frames(2), seed=None)


@pytest.mark.parametrize(("kind", "level"), RANDOM_LEVELS)
def test_identical_frames_stay_identical(kind, level):
    transform = build(kind, level, 48)
    clip = np.repeat(smooth_frames(1), 5, axis=0)
    for seed in range(5):
        out = augment_clip(transform, clip, seed)
        assert all(np.array_equal(out[0], frame) for frame in out[1:])


@pytest.mark.parametrize(("kind", "level"), ALL_LEVELS)
def test_each_frame_gets_the_clip_draw(kind, level):
    """Frame i of a clip equals frame i augmented alone with the same seed: one draw for the whole clip."""
    transform = build(kind, level, 48)
    clip = smooth_frames(3, seed=4)
    for seed in range(3):
        out = augment_clip(transform, clip, seed)
        for i in range(len(clip)):
            assert np.array_equal(out[i], augment_clip(transform, clip[i : i + 1], seed)[0])


@pytest.mark.parametrize(
    ("level", "flips"), [("flip", {(0, 0), (0, 1), (1, 0), (1, 1)}), ("heavy", {(0, 0), (1, 0)})]
)
def test_flip_decision_shared_by_all_frames(level, flips):
    transform = build_test_transform(level, 64)
    seen = set()
    for seed in range(40):
        quadrants = {bright_quadrant(frame) for frame in augment_clip(transform, marked_frames(4), seed)}
        assert len(quadrants) == 1
        seen |= quadrants
    # every flip combination occurs: the horizontal and vertical decisions are independent draws
    assert seen == flips


@pytest.mark.parametrize(("kind", "level"), ALL_LEVELS)
def test_reproducible_for_a_seed(kind, level):
    clip = smooth_frames(2)
    first = augment_clip(build(kind, level, 48), clip, seed=123)
    assert np.array_equal(first, augment_clip(build(kind, level, 48), clip, seed=123))


@pytest.mark.parametrize(("kind", "level"), [("train", "weak"), *RANDOM_LEVELS])
def test_varies_across_seeds_and_without_seed(kind, level):
    transform, clip = build(kind, level, 48), smooth_frames(2)
    by_seed = {augment_clip(transform, clip, seed).tobytes() for seed in range(8)}
    assert len(by_seed) > 1
    unseeded = {augment_clip(transform, clip, None).tobytes() for _ in range(8)}
    assert len(unseeded) > 1


def test_heavy_changes_pixels_and_none_does_not():
    clip = smooth_frames(4)
    assert np.array_equal(augment_clip(build_test_transform("none", 64), clip, seed=0), clip)
    heavy = build_test_transform("heavy", 64)
    diffs = [np.abs(augment_clip(heavy, clip, s).astype(float) - clip).mean() for s in range(10)]
    assert np.mean(diffs) > 20 and min(diffs) > 5


def test_none_only_resizes():
    clip = smooth_frames(2, 64)
    out = augment_clip(build_test_transform("none", 32), clip, seed=0)
    naive = clip.reshape(2, 32, 2, 32, 2, 3).mean(axis=(2, 4))  # 2x2 area average
    assert np.abs(out.astype(float) - naive).max() <= 1


def test_an_unknown_level_names_the_options():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as error:
        compose_config("train", ["train_augment=none"])
    assert set(error.value.options) == set(TRAIN_LEVELS)
    with pytest.raises(MissingConfigException) as error:
        compose_config("evaluate", ["augment=medium"])
    assert set(error.value.options) == set(TEST_LEVELS)


@pytest.mark.parametrize(
    "frames",
    [np.zeros((2, 8, 8), np.uint8), np.zeros((0, 8, 8, 3), np.uint8), np.zeros((2, 8, 8, 3), np.float32)],
)
def test_bad_frames(frames):
    with pytest.raises(ValueError, match="frames must be uint8"):
        augment_clip(build_test_transform("none", 8), frames, seed=0)


def test_bad_size():
    with pytest.raises(ValueError, match="size must be a positive integer"):
        build_test_transform("none", 0)


def test_stable_seed():
    assert stable_seed(0, "Celeb-real/id0_0000.mp4") == stable_seed(0, "Celeb-real/id0_0000.mp4")
    assert stable_seed(0, "Celeb-real/id0_0000.mp4") != stable_seed(1, "Celeb-real/id0_0000.mp4")


# --- strength at the model input ----------------------------------------------------------------------------

NEUTRAL_HEAVY = {  # every heavy step off, so one step can be measured alone
    "brightness_range": (1.0, 1.0),
    "blur_sigma_range": (0.0, 0.0),
    "dropout_range": (0.0, 0.0),
    "noise_std_range": (0.0, 0.0),
    "contrast_range": (1.0, 1.0),
    "grayscale_range": (0.0, 0.0),
    "vertical_flip_p": 0.0,
    "max_rotation": 0.0,
}


def grey_clip(size: int = 256) -> np.ndarray:
    return np.full((2, size, size, 3), 128, np.uint8)


@pytest.mark.parametrize("size", MODEL_SIZES)
def test_heavy_noise_std_is_defined_at_the_model_input(size):
    """Noise added after the resize: its std in the output is 0.1 * 255 whatever the model's input size."""
    transform = heavy(size, **{**NEUTRAL_HEAVY, "noise_std_range": (0.1, 0.1)})
    out = augment_clip(transform, grey_clip(), seed=0)
    assert abs(out[0].astype(float).std() - 25.5) < 1.0


@pytest.mark.parametrize("size", MODEL_SIZES)
def test_heavy_dropout_rate_is_defined_at_the_model_input(size):
    transform = heavy(size, **{**NEUTRAL_HEAVY, "dropout_range": (0.1, 0.1)})
    out = augment_clip(transform, grey_clip(), seed=0)
    dropped = (out[0] == 0).all(axis=-1).mean()
    assert abs(dropped - 0.1) < 0.01


def test_heavy_level_is_equally_strong_for_every_model_input_size():
    """The default heavy level from a 256-pixel crop: the pixel-to-pixel noise the model sees is the same
    at 224, 256 and 299 (perturbing before the resize gave 13, 21 and 12 here)."""

    def noise_level(size: int) -> float:
        values = []
        for seed in range(20):
            out = augment_clip(build_test_transform("heavy", size), grey_clip(), seed)[0].astype(float)
            centre = out[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4, 0]  # inside rotation corners
            values.append(np.diff(centre, axis=1).std() / np.sqrt(2))
        return float(np.median(values))

    levels = [noise_level(size) for size in MODEL_SIZES]
    assert max(levels) / min(levels) < 1.1, dict(zip(MODEL_SIZES, levels, strict=True))


def test_jpeg_quality_is_drawn_from_the_range_once_per_clip():
    """Each output equals OpenCV's JPEG at exactly one quality in [30, 70], the same for every frame."""
    clip = smooth_frames(3, 64, seed=2)
    transform = jpeg(64, quality_range=(30, 70))

    def encoded(frame: np.ndarray, quality: int) -> np.ndarray:
        bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])[1]
        return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    qualities = set()
    for seed in range(6):
        out = augment_clip(transform, clip, seed)
        matches = [
            q for q in range(1, 101) if all(np.array_equal(out[i], encoded(clip[i], q)) for i in range(3))
        ]
        assert len(matches) >= 1 and all(30 <= q <= 70 for q in matches), (seed, matches)
        qualities.add(matches[0])
    assert len(qualities) > 1  # the quality is drawn, not fixed


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: jpeg(64, quality_range=(0, 50)), "quality_range must lie within"),
        (lambda: jpeg(64, quality_range=(70, 30)), "quality_range must be a .low, high. pair"),
        (lambda: heavy(64, noise_std_range=(0.1,)), "noise_std_range must be a .low, high. pair"),
        (lambda: jpeg(0), "size must be a positive integer"),
    ],
)
def test_bad_level_parameters(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- conf/augment: one YAML per level -----------------------------------------------------------------------


@pytest.mark.parametrize("level", AUGMENT_YAMLS)
def test_every_augment_yaml_builds_a_working_transform(level):
    cfg = compose_config("evaluate", [f"augment={level}"])
    assert cfg.augment.level == level == Path(f"{level}.yaml").stem
    assert isinstance(cfg.augment.title, str) and cfg.augment.title
    make = hydra.utils.instantiate(cfg.augment.transform)
    clip = smooth_frames(2, 64)
    for size in MODEL_SIZES:
        out = augment_clip(make(size=size), clip, seed=3)
        assert out.shape == (2, size, size, 3) and out.dtype == np.uint8


def test_a_level_of_albumentations_steps_needs_no_function():
    from omegaconf import OmegaConf

    spec = OmegaConf.create(
        {
            "_target_": "src.data.transforms.perturbations.at_model_input",
            "_partial_": True,
            "steps": [{"_target_": "albumentations.Posterize", "num_bits": 2, "p": 1.0}],
        }
    )
    make = hydra.utils.instantiate(spec)
    out = augment_clip(make(size=40), smooth_frames(2, 64), seed=0)
    assert out.shape == (2, 40, 40, 3)
    assert set(np.unique(out)) <= {0, 64, 128, 192}  # 2 bits per channel, applied after the resize


def test_augment_titles_and_axis_positions_are_unique():
    levels = [compose_config("evaluate", [f"augment={level}"]).augment for level in AUGMENT_YAMLS]
    assert {"none", "flip", "heavy", "jpeg"} <= {a.level for a in levels}
    assert len({a.title for a in levels}) == len(levels)
    assert len({a.axis for a in levels}) == len(levels) and all(isinstance(a.axis, int) for a in levels)
    assert min(a.axis for a in levels if a.level == "none") == min(a.axis for a in levels)
