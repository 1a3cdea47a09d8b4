"""Checkpoints of train.py: where a run keeps them, how a run resumes, and how they are written.

Every run gets its own checkpoint folder `<checkpoint_dir>/<model>-<weights>-<data>-fold<k>/run-<stamp>-<id>`
holding `run.json` (its MLflow run and the configuration it trains). `ckpt_path=last` resumes the newest
folder whose recorded configuration is this one, into its MLflow run; a folder of another configuration
is refused with the differences named. Checkpoint files are written atomically.

Model selection needs no class of its own: Lightning's ModelCheckpoint and EarlyStopping monitor the one
value DeepfakeDetector logs for it (`val/video_auc_then_loss`, conf/callbacks/default.yaml).
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from pathlib import Path

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from src.experiments.tracking import selected_options
from src.utils.files import atomic_write

log = logging.getLogger(__name__)
RUN_FILE = "run.json"
# what defines the training a checkpoint continues; everything else (trainer length, workers, where
# outputs and weights live, logging) may change on resume
RESUME_GROUPS = ("data", "model", "weights", "train_augment", "seed")
NOT_RESUME_KEYS = {"data": ("build_workers", "num_workers", "cache_dir"), "weights": ("tracking_uri",)}


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


class ResumeMismatch(ValueError):
    pass


def resume_key(cfg: DictConfig) -> dict:
    """The resolved configuration a resumed run must share with the run that wrote the checkpoint."""
    container = OmegaConf.to_container(cfg, resolve=True)
    key = {group: container.get(group) for group in RESUME_GROUPS}
    for group, names in NOT_RESUME_KEYS.items():
        if isinstance(key.get(group), dict):
            key[group] = {k: v for k, v in key[group].items() if k not in names}
    return json.loads(json.dumps(key, default=str))


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        name = f"{prefix}{key}"
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            out += _differences(a[key], b[key], f"{name}.")
        elif a.get(key) != b.get(key):
            out.append(f"{name}: {b.get(key)!r} (checkpoint) vs {a.get(key)!r} (now)")
    return out


def run_folder(cfg: DictConfig) -> tuple[Path, dict | None]:
    """(checkpoint folder of this run, its recorded run.json when resuming). A new run's folder name is
    unique; under DDP each process names its own, and Lightning's ModelCheckpoint takes rank 0's.

    Args:
        cfg: the composed train config (`ckpt_path`: null, "last" or a checkpoint file).
    """
    options = selected_options(cfg)
    family = (
        Path(cfg.paths.checkpoint_dir)
        / f"{options['model']}-{options['weights']}-{options['data']}-fold{cfg.data.fold}"
    )
    if cfg.ckpt_path is None:
        return family / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}", None
    key = resume_key(cfg)
    if cfg.ckpt_path == "last":
        folders = sorted(
            (p.parent for p in family.glob(f"run-*/{RUN_FILE}")), key=lambda p: p.stat().st_mtime
        )
        if not folders:
            raise FileNotFoundError(f"ckpt_path=last: no run of this configuration under {family}")
        for folder in reversed(folders):
            recorded = json.loads((folder / RUN_FILE).read_text())
            if recorded.get("resume_key") == key:
                return folder, recorded
        recorded = json.loads((folders[-1] / RUN_FILE).read_text())
        raise ResumeMismatch(
            f"ckpt_path=last: no run under {family} has this configuration; the newest ({folders[-1].name}) differs in "
            + "; ".join(_differences(key, recorded.get("resume_key", {}))[:5])
        )
    folder = Path(cfg.ckpt_path).expanduser().resolve().parent
    record = folder / RUN_FILE
    if not record.is_file():
        return (
            family / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}",
            None,
        )  # a foreign checkpoint
    recorded = json.loads(record.read_text())
    if recorded.get("resume_key") != key:
        raise ResumeMismatch(
            f"ckpt_path={cfg.ckpt_path}: the checkpoint's run trained another configuration: "
            + "; ".join(_differences(key, recorded.get("resume_key", {}))[:5])
        )
    return folder, recorded


def resume_checkpoint(folder: Path, wanted: Path) -> Path:
    """`wanted`, or when it is unreadable (a kill mid-write on another filesystem, a full disk), the newest
    checkpoint in its folder that loads, with a warning."""
    candidates = [wanted] + sorted(
        (p for p in folder.glob("*.ckpt") if p != wanted), key=lambda p: -p.stat().st_mtime
    )
    for candidate in candidates:
        if not candidate.is_file():
            continue
        try:
            torch.load(candidate, map_location="cpu", weights_only=True, mmap=True)
        except Exception as error:  # truncated zip, not a checkpoint
            log.warning(
                "checkpoint %s is unreadable (%s: %s); trying an older one",
                candidate,
                type(error).__name__,
                error,
            )
            continue
        if candidate != wanted:
            log.warning("resuming from %s instead of the unreadable %s", candidate.name, wanted.name)
        return candidate
    raise FileNotFoundError(
        f"no readable checkpoint in {folder} to resume from (tried {', '.join(c.name for c in candidates)})"
    )


def record_run(folder: Path, mlflow_run_id: str, cfg: DictConfig) -> None:
    """Write `run.json`: the MLflow run a resume continues and the configuration it must share."""
    (folder / RUN_FILE).write_text(
        json.dumps({"mlflow_run_id": mlflow_run_id, "resume_key": resume_key(cfg)}, indent=1)
    )


def recorded_validation(checkpoint: str | Path) -> dict[str, float]:
    """The validation metrics of the epoch a checkpoint holds (DeepfakeDetector records them in it): the
    monitored value orders epochs (AUC, then loss), while a person reads the selected epoch's AUC."""
    return torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True).get(
        "validation_metrics", {}
    )
