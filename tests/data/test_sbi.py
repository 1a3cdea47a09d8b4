"""Self-Blended Images (src/data/transforms/sbi.py): the mask, the blend, its determinism and the training batches."""

from __future__ import annotations

import hydra
import numpy as np
import pytest
import torch

from src.data.settings import SplitSettings
from src.data.transforms.augment import augment_clip, weak
from src.data.transforms.sbi import (
    FAKE,
    REAL,
    BlendSettings,
    SelfBlendAugment,
    face_mask,
    face_polygon,
    sbi,
    self_blend,
)
from src.experiments.wiring import build_datamodule
from src.utils.errors import ConfigError
from tests.conftest import compose_config, data_overrides, prepared_datamodule

SIZE = 128
# eyes, nose tip, mouth corners of a frontal face in a 128 px crop with a margin (x, y)
LANDMARKS = np.array([[46.0, 54.0], [82.0, 54.0], [64.0, 74.0], [50.0, 92.0], [78.0, 92.0]])


def face_image(seed: int = 0, size: int = SIZE) -> np.ndarray:
    """A textured crop: smooth colour gradients plus noise, so every jitter and shift changes pixels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([0.3 + 0.5 * x, 0.2 + 0.6 * y, 0.5 + 0.3 * x * y], axis=-1) * 255
    return np.clip(rgb + rng.normal(0, 12, rgb.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("seed", range(8))
def test_pixels_outside_the_mask_are_unchanged_and_inside_they_change(seed):
    image = face_image(seed)
    blended, mask = self_blend(image, LANDMARKS, np.random.default_rng(seed))
    assert blended.shape == image.shape and blended.dtype == np.uint8
    assert mask.shape == image.shape[:2] and mask.dtype == np.float32
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    outside = mask == 0
    assert outside.any() and np.array_equal(blended[outside], image[outside])
    inside = mask > 0
    assert (blended != image)[inside].any(), "the blend must change the face region"


def test_the_mask_is_inside_the_image_non_empty_and_covers_the_landmarks():
    binary, fell_back = face_mask(LANDMARKS, (SIZE, SIZE, 3))
    assert not fell_back and set(np.unique(binary)) == {0.0, 1.0}
    for x, y in LANDMARKS.round().astype(int):
        assert binary[y, x] == 1.0
    # brows to chin: the hull reaches above the eyes and below the mouth, and stays inside the crop
    rows = np.flatnonzero(binary.any(axis=1))
    assert rows[0] < LANDMARKS[:2, 1].min() - 5 and rows[-1] > LANDMARKS[3:, 1].max() + 10
    assert 0.1 < binary.mean() < 0.6
    for seed in range(5):
        _, mask = self_blend(face_image(), LANDMARKS, np.random.default_rng(seed))
        assert all(mask[y, x] > 0 for x, y in LANDMARKS.round().astype(int))


def test_the_mask_follows_the_landmarks():
    moved = LANDMARKS + [20.0, 10.0]
    base, _ = face_mask(LANDMARKS, (SIZE, SIZE))
    shifted, _ = face_mask(moved, (SIZE, SIZE))
    assert np.array_equal(np.roll(base, (10, 20), axis=(0, 1))[20:, 30:], shifted[20:, 30:])
    swapped = LANDMARKS[[1, 0, 2, 4, 3]]  # eyes and mouth corners listed right to left
    assert np.array_equal(face_mask(swapped, (SIZE, SIZE))[0], base)


@pytest.mark.parametrize(
    "landmarks",
    [
        np.full((5, 2), np.nan),
        np.where(np.arange(10).reshape(5, 2) == 3, np.nan, LANDMARKS),
        np.zeros((5, 2)),
    ],
    ids=["missing", "one-missing", "degenerate"],
)
def test_missing_landmarks_fall_back_to_a_centre_ellipse(landmarks):
    assert face_polygon(landmarks) is None
    binary, fell_back = face_mask(landmarks, (SIZE, SIZE))
    assert fell_back and binary[SIZE // 2, SIZE // 2] == 1.0
    assert binary[:5].sum() == binary[-5:].sum() == binary[:, :5].sum() == 0  # inside the crop's centre
    augment = sbi(SIZE)
    augment.blend_clip(face_image(), landmarks, np.random.default_rng(0))
    assert (augment.blends, augment.fallbacks) == (1, 1)


def test_bad_landmarks_and_images_are_refused():
    with pytest.raises(ValueError, match=r"\(5, 2\)"):
        face_mask(np.zeros((68, 2)), (SIZE, SIZE))
    with pytest.raises(ValueError, match="uint8"):
        self_blend(face_image().astype(np.float32), LANDMARKS, np.random.default_rng(0))


def test_a_seeded_rng_gives_the_same_blend():
    image = face_image()
    first = self_blend(image, LANDMARKS, np.random.default_rng(3))
    again = self_blend(image, LANDMARKS, np.random.default_rng(3))
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    others = [self_blend(image, LANDMARKS, np.random.default_rng(s))[0] for s in range(4, 8)]
    assert all(not np.array_equal(first[0], other) for other in others)


def test_a_clip_shares_one_draw_and_each_frame_its_own_mask():
    augment = sbi(SIZE)
    clip = np.stack([face_image()] * 3)
    landmarks = np.stack([LANDMARKS, LANDMARKS, LANDMARKS + [12.0, 0.0]])
    blended = augment.blend_clip(clip, landmarks, np.random.default_rng(5))
    assert blended.shape == clip.shape
    assert np.array_equal(blended[0], blended[1])  # same frame, same landmarks: the same blend
    changed = [np.flatnonzero((frame != clip[0]).any(axis=(0, 2))) for frame in blended]
    assert changed[2].min() > changed[0].min()  # the third frame's face moved right, and its mask with it


def test_samples_of_real_and_fake_items():
    augment = sbi(64)
    crop = face_image(size=SIZE)
    pair = augment.samples(crop, LANDMARKS, REAL, 7, seed=1)
    assert [(label, item) for _, label, item in pair] == [(REAL, 7), (FAKE, 7)]
    assert all(pixels.shape == (64, 64, 3) and pixels.dtype == torch.uint8 for pixels, _, _ in pair)
    assert not torch.equal(pair[0][0], pair[1][0])
    assert torch.equal(pair[0][0], augment.samples(crop, LANDMARKS, REAL, 7, seed=1)[0][0])  # reproducible
    (fake,) = augment.samples(crop, LANDMARKS, FAKE, 3, seed=1)
    assert fake[1:] == (FAKE, 3) and torch.equal(fake[0], pair[0][0])  # as it is, with the pair's flip
    singles = [augment.samples(crop, LANDMARKS, REAL, 0, seed, pairs=False) for seed in range(20)]
    assert all(len(s) == 1 for s in singles) and {s[0][1] for s in singles} == {REAL, FAKE}
    real = [s[0][0] for s in singles if s[0][1] == REAL]
    plain = [torch.from_numpy(augment_clip(weak(64, flip_p), crop, 0)) for flip_p in (0.0, 1.0)]
    assert all(
        any(torch.equal(r, p) for p in plain) for r in real
    )  # a real sample is only flipped and resized


def test_knobs_are_checked_with_their_key():
    with pytest.raises(ConfigError, match=r"train_augment\.transform\.blend_ratio\b"):
        sbi(64, blend_ratio=[0.5])
    with pytest.raises(ConfigError, match=r"train_augment\.transform\.blend_ratios"):
        BlendSettings(blend_ratios=[0.0, 2.0])
    with pytest.raises(ConfigError, match=r"train_augment\.transform\.scale_range"):
        BlendSettings(scale_range=[1.1, 0.9])
    with pytest.raises(ConfigError, match=r"train_augment\.transform\.blend_p"):
        SelfBlendAugment(weak(64), BlendSettings(), blend_p=2)


def test_the_yaml_builds_the_transform():
    cfg = compose_config("train", ["train_augment=sbi"])
    assert cfg.train_augment.level == "sbi"
    augment = hydra.utils.instantiate(cfg.train_augment.transform)(size=96)
    assert isinstance(augment, SelfBlendAugment) and augment.pairs
    assert augment.settings.blend_ratios == (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)


def test_training_batches_pair_every_real_crop_with_its_blend(small_dataset, small_cache):
    datamodule = prepared_datamodule(small_dataset, small_cache, ["train_augment=sbi"])
    loader = datamodule.train_dataloader()
    real_videos = {i for i, record in enumerate(loader.dataset.records) if record.label == REAL}
    pixels, labels, videos = next(iter(loader))
    assert pixels.shape[1:] == (256, 256, 3) and pixels.dtype == torch.uint8
    assert set(labels.tolist()) == {REAL, FAKE}
    items = [(int(v), int(label)) for v, label in zip(videos, labels, strict=True)]
    reals = [i for i, (video, label) in enumerate(items) if label == REAL]
    assert reals and all(items[i][0] in real_videos for i in reals)
    for i in reals:  # each real crop is followed by its blend, from the same video
        assert items[i + 1] == (items[i][0], FAKE) and not torch.equal(pixels[i], pixels[i + 1])
    blends = sum(video in real_videos and label == FAKE for video, label in items)
    assert blends == len(reals) and len(items) == min(datamodule.batch_size, len(loader.dataset)) + len(reals)
    augment = loader.dataset.transform  # counts in this process: the tests load without workers
    assert augment.blends == len(reals)
    # haar has no landmarks: every mask is then the centre ellipse, counted
    if datamodule.cache.settings.face_detector == "haar":
        assert augment.fallbacks == augment.blends


def test_training_clips_pair_too(small_dataset, small_cache):
    overrides = ["model=resnet_lstm", "model.input.frames_per_clip=3", "train_augment=sbi"]
    datamodule = prepared_datamodule(small_dataset, small_cache, overrides)
    dataset = datamodule.train_dataset()
    real = next(i for i, record in enumerate(dataset.records) if record.label == REAL)
    fake = next(i for i, record in enumerate(dataset.records) if record.label == FAKE)
    samples = dataset.__getitems__([real, fake])
    assert [(label, item) for _, label, item in samples] == [(REAL, real), (FAKE, real), (FAKE, fake)]
    assert all(pixels.shape == (3, 224, 224, 3) for pixels, _, _ in samples)
    assert not torch.equal(samples[0][0], samples[1][0])
    assert dataset[real][1] in (REAL, FAKE)  # one sample at a time: the real clip or its blend


def test_real_only_training_keeps_real_source_videos_and_both_labels(small_dataset, small_cache):
    overrides = ["train_augment=sbi", "data.train_classes=real"]
    datamodule = prepared_datamodule(small_dataset, small_cache, overrides)
    assert datamodule.splits["train"] and {r.label for r in datamodule.splits["train"]} == {REAL}
    assert {r.label for r in datamodule.splits["val"]} == {REAL, FAKE}  # validation and test stay whole
    assert {r.label for r in datamodule.splits["test"]} == {REAL, FAKE}
    loader = datamodule.train_dataloader()
    for _, labels, videos in [next(iter(loader))]:
        assert {loader.dataset.records[int(v)].label for v in videos} == {REAL}
        assert labels.tolist().count(REAL) == labels.tolist().count(FAKE) > 0


def test_real_only_training_needs_a_training_augmentation_that_makes_fakes(small_dataset, small_cache):
    cfg = compose_config("train", [*data_overrides(small_dataset, small_cache), "data.train_classes=real"])
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    with pytest.raises(ConfigError, match=r"data\.train_classes=real .*train_augment=sbi"):
        datamodule.setup("fit")
    datamodule.setup("test")  # evaluation has no training split to fill
    with pytest.raises(ConfigError, match=r"data\.train_classes='fakes'.*all or real"):
        SplitSettings(train_classes="fakes")
