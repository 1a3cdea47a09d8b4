"""Checkpoint writing for train.py: atomic checkpoint files.

Model selection needs no class of its own: Lightning's ModelCheckpoint and EarlyStopping monitor the one
value DeepfakeDetector logs for it (`val/video_auc_then_loss`, conf/callbacks/default.yaml)."""

from __future__ import annotations

import os

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from src.utils.files import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file in their own folder, flushed to disk, then renamed into
    place: a kill at any moment leaves the previous file or the new one, never a truncated one.
    (Lightning's own transaction writes the temporary file to $TMPDIR, and a move across filesystems
    degrades to a copy onto the target.)"""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
        with atomic_write(path) as handle:
            torch.save(checkpoint, handle)
