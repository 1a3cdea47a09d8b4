"""Model selection and checkpoint writing for train.py: tie-breaking checkpoint and early stopping,
atomic checkpoint files."""

from __future__ import annotations

import os
import uuid

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint


def _value(metric) -> float | None:
    return None if metric is None else float(metric)


class TieBreakingModelCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose ties in `monitor` go to the lower `tie_breaker` (e.g. val/video_loss).

    A model that already separates the validation set (AUC 1.0 from the first epoch, as the original
    MesoNet weights do on an easy set) would otherwise stay the epoch-0 model: only strict improvements
    count. With the tie broken by loss, finetuning still selects on something.
    """

    def __init__(self, *args, tie_breaker: str = "val/video_loss", **kwargs):
        super().__init__(*args, **kwargs)
        self.tie_breaker = tie_breaker
        self.tie_values: dict[str, float] = {}

    def check_monitor_top_k(self, trainer, current=None) -> bool:
        if super().check_monitor_top_k(trainer, current):
            return True
        if current is None or not self.best_k_models:
            return False
        kth_score = self.best_k_models[self.kth_best_model_path]
        tie, previous = _value(trainer.callback_metrics.get(self.tie_breaker)), self.tie_values.get(self.kth_best_model_path)
        better = float(current) == float(kth_score) and tie is not None and (previous is None or tie < previous)
        return trainer.strategy.reduce_boolean_decision(bool(better))

    def _update_best_and_save(self, current, trainer, monitor_candidates) -> None:
        super()._update_best_and_save(current, trainer, monitor_candidates)
        tie = _value(monitor_candidates.get(self.tie_breaker))
        self.tie_values = {path: self.tie_values.get(path, tie) for path in self.best_k_models}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "tie_values": dict(self.tie_values)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.tie_values = dict(state_dict.get("tie_values", {}))
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "tie_values"})


class TieBreakingEarlyStopping(EarlyStopping):
    """EarlyStopping that counts a tie in `monitor` with a lower `tie_breaker` as an improvement."""

    def __init__(self, *args, tie_breaker: str = "val/video_loss", **kwargs):
        super().__init__(*args, **kwargs)
        self.tie_breaker = tie_breaker
        self.best_tie: float | None = None
        self._tie_now: float | None = None

    def _run_early_stopping_check(self, trainer) -> None:
        self._tie_now = _value(trainer.callback_metrics.get(self.tie_breaker))
        super()._run_early_stopping_check(trainer)

    def _evaluate_stopping_criteria(self, current):
        tie = self._tie_now
        if (float(current) == float(self.best_score) and tie is not None
                and (self.best_tie is None or tie < self.best_tie)):
            self.best_tie, self.wait_count = tie, 0
            return False, f"{self.monitor} tied at {float(current):.4f}; {self.tie_breaker} improved to {tie:.4f}"
        should_stop, reason = super()._evaluate_stopping_criteria(current)
        if self.wait_count == 0 and not should_stop:  # a strict improvement: its tie-breaker is the new bar
            self.best_tie = tie
        return should_stop, reason

    def state_dict(self) -> dict:
        return {**super().state_dict(), "best_tie": self.best_tie}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best_tie = state_dict.get("best_tie")
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "best_tie"})


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file in their own folder, flushed to disk, then renamed into
    place: a kill at any moment leaves the previous file or the new one, never a truncated one.
    (Lightning's own transaction writes the temporary file to $TMPDIR, and a move across filesystems
    degrades to a copy onto the target.)"""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        path = os.fspath(path)
        folder = os.path.dirname(path) or "."
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
