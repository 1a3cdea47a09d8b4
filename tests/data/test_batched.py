"""Training batches read in one go (`src.data.transforms.batched`): the same pixels and the same distribution of flips
as the albumentations pipeline they stand for, through the real configs' data module."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from src.data.transforms import augment
from src.data.transforms.batched import Collated, FlipResize, batched_form, collate
from tests.conftest import prepared_datamodule


def _crops(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _forced(size: int, horizontal: bool, vertical: bool) -> A.Compose:
    """The albumentations pipeline with the flips decided: what `augment_clip` makes for that draw."""
    return A.Compose(
        [A.HorizontalFlip(p=float(horizontal)), A.VerticalFlip(p=float(vertical)), augment._resize(size)]
    )


@pytest.mark.parametrize(
    ("pipeline", "expected"),
    [
        (augment.weak(256), FlipResize(0.5, 0.0, 256)),
        (augment.weak(224, horizontal_flip_p=0.3), FlipResize(0.3, 0.0, 224)),
        (augment.none(299), FlipResize(0.0, 0.0, 299)),
        (A.Compose([A.VerticalFlip(p=0.2), A.HorizontalFlip(p=1.0)]), FlipResize(1.0, 0.2, None)),
    ],
)
def test_pipelines_of_flips_and_the_resize_have_a_batched_form(pipeline, expected):
    assert batched_form(pipeline) == expected


@pytest.mark.parametrize(
    "pipeline",
    [
        augment.strong(256),
        augment.flip(256),  # a rotation
        augment.heavy(256),
        augment.jpeg(256),
        A.Compose([A.HorizontalFlip(p=0.5), A.HorizontalFlip(p=0.5)]),
        A.Compose([A.Resize(256, 128)]),
        A.Compose([A.Resize(256, 256, interpolation=0)]),  # nearest: not what the resize step asks for
        A.Compose([A.HorizontalFlip(p=0.5)], p=0.5),
        None,
    ],
)
def test_anything_else_keeps_the_per_sample_path(pipeline):
    assert batched_form(pipeline) is None


@pytest.mark.parametrize("size", [256, 224, 299])
@pytest.mark.parametrize("flips", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("frames", [(256, 256, 3), (3, 256, 256, 3)])
def test_an_item_is_exactly_what_albumentations_makes_for_the_same_flips(size, flips, frames):
    crops = _crops(frames)
    out = np.zeros((*frames[:-3], size, size, 3), np.uint8)
    FlipResize(0.5, 0.5, size).apply(crops, flips, out)
    expected = augment.augment_clip(_forced(size, *flips), crops, seed=0)
    np.testing.assert_array_equal(out, expected)


def test_a_read_only_memory_mapped_crop_is_read_as_it_is(tmp_path):
    np.save(tmp_path / "crops.npy", _crops((2, 64, 64, 3)))
    mapped = np.load(tmp_path / "crops.npy", mmap_mode="r")
    out = np.zeros((64, 64, 3), np.uint8)
    FlipResize(1.0, 0.0, None).apply(mapped[1], (True, False), out)
    np.testing.assert_array_equal(out, mapped[1][:, ::-1])


@pytest.mark.parametrize("p", [0.5, 0.2])
def test_flips_are_drawn_per_item_with_the_pipelines_probability(p):
    flips = FlipResize(p, 1 - p, 64).draw(4000, np.random.default_rng(1))
    for column, q in ((0, p), (1, 1 - p)):
        assert binomtest(int(flips[:, column].sum()), len(flips), q).pvalue > 0.001
    # independent per item and per axis: not one decision for the whole batch
    assert 0 < flips[:, 0].mean() < 1 and not np.array_equal(flips[:, 0], flips[:, 1])


def test_collate_passes_an_assembled_batch_through_and_stacks_samples():
    batch = Collated((torch.zeros(2, 4, 4, 3, dtype=torch.uint8), torch.tensor([0, 1]), torch.tensor([3, 4])))
    assert all(a is b for a, b in zip(collate(batch), batch, strict=True))
    samples = [(torch.zeros(4, 4, 3), 0, 3), (torch.ones(4, 4, 3), 1, 4)]
    pixels, labels, videos = collate(samples)
    assert pixels.shape == (2, 4, 4, 3) and labels.tolist() == [0, 1] and videos.tolist() == [3, 4]


def test_training_batches_hold_each_drawn_frame_as_it_is_or_mirrored(small_dataset, small_cache):
    datamodule = prepared_datamodule(small_dataset, small_cache, ["model=mesonet"])
    loader = datamodule.train_dataloader()
    dataset = loader.dataset
    assert dataset.batched == FlipResize(0.5, 0.0, 256)
    torch.manual_seed(0)
    pixels, labels, videos = next(iter(loader))
    assert pixels.dtype == torch.uint8 and pixels.shape == (len(labels), 256, 256, 3)
    assert labels.tolist() == [dataset.records[v].label for v in videos.tolist()]
    mirrored = 0
    for item, video in zip(pixels.numpy(), videos.tolist(), strict=True):
        crops = np.asarray(dataset.crops(video))
        as_is = (crops == item).all(axis=(1, 2, 3))
        flipped = (crops[:, :, ::-1] == item).all(axis=(1, 2, 3))
        assert as_is.any() or flipped.any()  # a cached frame of its own video
        mirrored += bool(flipped.any() and not as_is.any())
    assert 0 < mirrored < len(labels)
    # the same seed gives the same batch: runs stay reproducible
    torch.manual_seed(0)
    assert torch.equal(next(iter(loader))[0], pixels)


def test_evaluation_clips_are_unchanged_by_the_batched_read(small_dataset, small_cache):
    datamodule = prepared_datamodule(small_dataset, small_cache, ["model=xception"], "evaluate", "test")
    dataset = datamodule.eval_dataset("test")  # augment=none: the resize to Xception's 299, deterministic
    assert dataset.batched == FlipResize(0.0, 0.0, 299) and dataset.batchable()
    pixels, labels, ids = collate(dataset.__getitems__([0, 1]))
    for k in (0, 1):
        one, label, item = dataset[k]  # the per-sample path through albumentations
        assert torch.equal(pixels[k], one) and labels[k] == label and ids[k] == item


def test_a_seeded_perturbation_with_random_flips_keeps_one_draw_per_video(small_dataset, small_cache):
    overrides = ["model=mesonet", "augment=flip"]
    datamodule = prepared_datamodule(small_dataset, small_cache, overrides, "evaluate", "test")
    assert batched_form(augment.weak(256)) is not None
    dataset = datamodule.eval_dataset("test", datamodule.test_augment)
    assert dataset.batched is None  # rotation: albumentations, seeded per video as before
    seeded = datamodule.eval_dataset(
        "test", {"_target_": "src.data.transforms.augment.weak", "_partial_": True}
    )
    assert seeded.batched is not None and not seeded.batchable()  # random flips under a per-video seed
    first = seeded.__getitems__([0])
    assert not isinstance(first, Collated) and torch.equal(first[0][0], seeded[0][0])
