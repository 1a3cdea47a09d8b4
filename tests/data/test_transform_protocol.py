"""The datasets ask a transform what it yields and whether it has a batched form (`src.data.transforms.pipelines`),
never its type: any transform that declares pairs gets each item's landmarks and puts its samples in the batch."""

from __future__ import annotations

import numpy as np
import torch

from src.data.datasets import FrameDataset, VideoDataset
from src.data.indexes.base import FAKE, REAL, VideoRecord
from src.data.transforms.batched import collate
from src.data.transforms.perturbations import none
from src.data.transforms.pipelines import PAIRS


class _Entry:
    """A cache entry stand-in: 4 crops of 8x8 and their landmarks."""

    def __init__(self, value: int):
        self.crops = np.full((4, 8, 8, 3), value, np.uint8)

    def load(self):
        return self.crops, {"landmarks": np.zeros((4, 5, 2)).tolist()}


class _Pairs:
    """A minimal pairs transform: a real item becomes itself (label 0) and its inverse (label 1)."""

    yields = PAIRS
    batch_form = None

    def __init__(self):
        self.landmarks_seen = []

    def samples(self, crops, landmarks, label, item, seed, pairs):
        self.landmarks_seen.append(np.shape(landmarks))
        pixels = torch.from_numpy(np.ascontiguousarray(crops))
        if label != REAL:
            return [(pixels, label, item)]
        return [(pixels, REAL, item), (255 - pixels, FAKE, item)]


def _records():
    return [VideoRecord("a.mp4", REAL, "id0", "x", False), VideoRecord("b.mp4", FAKE, "id1", "x", False)]


def test_a_transform_declaring_pairs_gets_paired_batches_of_frames():
    transform = _Pairs()
    dataset = FrameDataset([_Entry(10), _Entry(20)], _records(), [4, 4], transform, frames_per_epoch=1)
    assert dataset.batched is None and dataset.pairs
    pixels, labels, ids = collate(dataset.__getitems__([0, 1]))
    assert labels.tolist() == [REAL, FAKE, FAKE] and ids.tolist() == [0, 0, 1]
    assert torch.equal(pixels[1], 255 - pixels[0]) and pixels.shape == (3, 8, 8, 3)
    assert transform.landmarks_seen == [(5, 2), (5, 2)]  # one frame's landmarks per item
    assert len(dataset[0]) == 3  # dataset[i]: one sample


def test_a_transform_declaring_pairs_gets_clips_with_their_landmarks():
    transform = _Pairs()
    dataset = VideoDataset([_Entry(10), _Entry(20)], _records(), 3, transform, seed=None)
    pixels, labels, _ = collate(dataset.__getitems__([0, 1]))
    assert labels.tolist() == [REAL, FAKE, FAKE] and pixels.shape == (3, 3, 8, 8, 3)
    assert transform.landmarks_seen == [(3, 5, 2), (3, 5, 2)]


def test_a_declared_batched_form_reads_the_batch_in_one_go():
    dataset = FrameDataset([_Entry(10), _Entry(20)], _records(), [4, 4], none(6), frames_per_epoch=1)
    assert dataset.batched is not None and not dataset.pairs
    pixels, labels, ids = dataset.__getitems__([0, 1])  # assembled, not a list of samples
    assert pixels.shape == (2, 6, 6, 3) and labels.tolist() == [REAL, FAKE] and ids.tolist() == [0, 1]
