"""Augmentation pipelines: shapes, one parameter draw per clip, seeding, strength of each level."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from src.data.augment import (
    TEST_LEVELS,
    TRAIN_LEVELS,
    augment_clip,
    build_test_transform,
    build_train_transform,
    stable_seed,
)

ALL_LEVELS = [("train", level) for level in TRAIN_LEVELS] + [("test", level) for level in TEST_LEVELS]
RANDOM_LEVELS = [("train", "strong"), ("test", "flip"), ("test", "heavy")]


def build(kind: str, level: str, size: int):
    return (build_train_transform if kind == "train" else build_test_transform)(level, size)


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


def test_unknown_level():
    with pytest.raises(
        ValueError, match="unknown train augmentation level 'none'; valid levels: weak, strong"
    ):
        build_train_transform("none", 224)
    with pytest.raises(ValueError, match="valid levels: none, flip, heavy"):
        build_test_transform("medium", 224)


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
