"""DeepfakeDetector: one LightningModule for every network that returns the logit of "fake".

Frame networks (`input_kind = "frame"`) train on single crops and score a video by the mean fake
probability of its frames; clip networks (`"clip"`) take (B, T, 3, S, S) and score the clip.

Only the training step may run under the Trainer's reduced-precision autocast: validation, test and
prediction always compute in fp32 (bf16 moved MesoNet's test logits by up to 0.47), so the numbers
that select and compare models do not depend on the training speed-up.

Model selection (conf/callbacks/default.yaml: Lightning's ModelCheckpoint and EarlyStopping) monitors one
value logged at each validation epoch end, `SELECTION_METRIC`: the video AUC with ties broken by the lower
video loss (`auc_then_loss`), so a model that separates the validation set from the first epoch on is still
selected by something when finetuned.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import lightning as L
import torch
from torch import nn
from torchmetrics.aggregation import CatMetric

from src.models.metrics import ClassCounts, auc_then_loss, detection_metrics
from src.utils.errors import check
from src.utils.stats import eer_threshold

SELECTION_METRIC = "val/video_auc_then_loss"


def check_arguments(batch_size: int, pos_weight: float | str | None) -> None:
    """The ranges of DeepfakeDetector's arguments, without building anything (check_config calls it too).

    Args:
        batch_size: items per batch (model.batch_size), at least 1.
        pos_weight: the BCE weight of the fake class (model.pos_weight): null, a positive number, or "auto".
    """
    check(
        isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1,
        "model.batch_size",
        batch_size,
        "must be an integer >= 1",
    )
    number = isinstance(pos_weight, int | float) and not isinstance(pos_weight, bool)
    check(
        pos_weight is None or pos_weight == "auto" or (number and pos_weight > 0),
        "model.pos_weight",
        pos_weight,
        "null, a positive number, or auto (n_real / n_fake of the training split)",
    )


class DeepfakeDetector(L.LightningModule):
    """`instantiate(cfg.model)`: the network, how it is optimized, and what the rest of a run reads from it.

    Its parameters are the `model.*` keys: the structured config `ModelConfig` is generated from this
    signature (src/experiments/schemas.py), and the ranges are checked here (`check_arguments`).

    Args:
        net: the network (model.net): returns the logit of "fake".
        optimizer: a partial (model.optimizer) the module calls with its trainable parameters.
        scheduler: a partial called with the optimizer, stepped each epoch; null: none.
        pos_weight: the BCE weight of the fake class: null, a positive number, or "auto" (n_real / n_fake of
            the training split, set by the training task).
        channels_last: run 4-D inputs in channels-last memory format.
        name: the option name (run tag `model`, checkpoint folders).
        title: the display title (report columns); default: the name.
        input: the input contract (model.input: kind, size, mean, std, frames_per_clip, fixed_size), kept as
            `input_contract` beside `pretrained_cfg`.
        pretrained: where the net's published weights are (model.pretrained: file, url, sha256,
            torchvision_weights), kept as `pretrained_cfg`, which weights=pretrained reads.
        batch_size: what the data module batches by (Lightning's `batch_size` attribute).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable | None = None,
        pos_weight: float | str | None = None,
        channels_last: bool = True,
        name: str = "model",
        title: str | None = None,
        input: Mapping | None = None,
        pretrained: Mapping | None = None,
        batch_size: int = 32,
    ):
        check_arguments(batch_size, pos_weight)
        super().__init__()
        # no save_hyperparameters: the resolved config goes to the tracker, and checkpoints hold
        # only tensors and primitives so they load with weights_only=True
        self.name, self.title = name, title or name
        self.input_contract, self.pretrained_cfg = dict(input or {}), dict(pretrained or {})
        self.batch_size = batch_size
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.input_kind = getattr(net, "input_kind", "frame")
        self.channels_last = channels_last
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.register_buffer("pos_weight", torch.tensor(1.0))
        if isinstance(pos_weight, int | float):
            self.pos_weight.fill_(float(pos_weight))
        # a clip network has one score per clip: frame-level metrics would repeat the video metrics
        self.levels = ("frame", "video") if self.input_kind == "frame" else ("video",)
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_{level}": detection_metrics(f"{stage}/{level}_")
                for stage in ("val", "test")
                for level in self.levels
            }
        )
        self.val_classes = ClassCounts()  # P and N of the AUC's grid, counted over all processes
        # the epoch's validation scores (all processes): the decision threshold at their EER point travels
        # with the checkpoint, so evaluation reads the threshold the training's validation split chose
        self.val_scores, self.val_labels = CatMetric(), CatMetric()
        self.validation_metrics: dict[str, float] = {}  # of the latest validation epoch, saved in checkpoints

    # -- scoring --------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits: (B,) for frames (B, 3, S, S) or clips (B, T, 3, S, S) of a clip network;
        (B, T) per-frame logits for videos (B, T, 3, S, S) given to a frame network."""
        if self.input_kind == "frame" and x.dim() == 5:
            batch, steps = x.shape[:2]
            return self.forward(x.flatten(0, 1)).view(batch, steps)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x).float()

    def video_scores(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(fake probability per video (B,), per frame (B, T)) for a batch of videos."""
        video_logits, frame_logits = self.video_logits(x)
        return torch.sigmoid(video_logits), torch.sigmoid(frame_logits)

    def video_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(video logit (B,), frame logits (B, T)) in fp32, outside any autocast.

        A frame network's video score is the mean fake probability of its frames; its video logit is
        that mean's logit, computed in log space so that it stays finite where the probability underflows.
        A clip network's frame logits repeat the clip's.
        """
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = self(x.float()).float()
        if logits.dim() == 2:
            return self.video_logit_from_frames(logits), logits
        return logits, logits[:, None].expand(-1, x.shape[1])

    @staticmethod
    def video_logit_from_frames(frame_logits: torch.Tensor) -> torch.Tensor:
        """logit(mean over frames of sigmoid(frame logit)), in the input's dtype, without under- or overflow."""
        steps = frame_logits.shape[1]
        log_p = torch.logsumexp(nn.functional.logsigmoid(frame_logits), dim=1) - math.log(steps)
        log_not_p = torch.logsumexp(nn.functional.logsigmoid(-frame_logits), dim=1) - math.log(steps)
        return log_p - log_not_p

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(logits, labels, pos_weight=self.pos_weight)

    # -- steps ----------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, labels, _ = batch
        loss = self.loss(self(x), labels)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(labels))
        return loss

    def _eval_step(self, stage: str, batch) -> None:
        with torch.autocast(device_type=batch[0].device.type, enabled=False):  # metrics in fp32 too
            self._score_into_metrics(stage, batch)

    def _score_into_metrics(self, stage: str, batch) -> None:
        x, labels, _ = batch
        video_probs, frame_probs = self.video_scores(x)
        labels_int = labels.long()
        self.metrics[f"{stage}_video"].update(video_probs, labels_int)
        if stage == "val":
            self.val_classes.update(labels_int)
            self.val_scores.update(video_probs.float())
            self.val_labels.update(labels_int.float())
        if "frame" in self.levels:
            frames = labels_int[:, None].expand_as(frame_probs).flatten()
            self.metrics[f"{stage}_frame"].update(frame_probs.flatten(), frames)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step("test", batch)

    def _log_epoch(self, stage: str) -> dict[str, torch.Tensor]:
        """Log the stage's metrics (computed over all processes) and reset them; returns what was logged."""
        logged = {}
        for level in self.levels:
            collection = self.metrics[f"{stage}_{level}"]
            values = collection.compute()
            self.log_dict(values, prog_bar=(level == "video"), sync_dist=True)
            collection.reset()
            logged.update(values)
        return logged

    def on_validation_epoch_end(self) -> None:
        logged = self._log_epoch("val")
        positives, negatives = self.val_classes.compute().tolist()
        self.val_classes.reset()
        score = auc_then_loss(logged["val/video_auc"], logged["val/video_loss"], positives, negatives)
        self.log(SELECTION_METRIC, score, sync_dist=True)
        self.validation_metrics = {key: float(value) for key, value in logged.items()}
        if positives and negatives:
            scores, labels = self.val_scores.compute(), self.val_labels.compute()
            threshold = eer_threshold(scores.double().cpu().numpy(), labels.long().cpu().numpy())
            self.log("val/video_threshold", threshold, sync_dist=True)
            self.validation_metrics["val/video_threshold"] = threshold
        self.val_scores.reset()
        self.val_labels.reset()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the selected epoch's own AUC, loss and threshold travel with its checkpoint (best_model_score is the
        # composite)
        checkpoint["validation_metrics"] = dict(self.validation_metrics)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.validation_metrics = dict(checkpoint.get("validation_metrics") or {})

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def predict_step(self, batch, batch_idx: int):
        x, labels, videos = batch
        video_logits, frame_logits = self.video_logits(x)
        return {"video": videos, "label": labels, "video_logit": video_logits, "frame_logits": frame_logits}

    # -- optimisation ---------------------------------------------------------------------------
    def set_pos_weight(self, value: float) -> None:
        self.pos_weight.fill_(float(value))

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params=params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
