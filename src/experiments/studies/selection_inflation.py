"""How much choosing the epoch on the test set inflates a test AUC (`make selection RUN=<train run id>`).

    python -m src.experiments.studies.selection_inflation --run <train run id> [--tracking-uri URI]

Scores every epoch's checkpoint of one training run on its test list (fp32, unperturbed) and prints, per
epoch, the validation AUC its checkpoint recorded and the test AUC with its 95 % interval; then the
validation-selected epoch (the run's best checkpoint, what this framework reports) beside the best epoch on
the test set (what a table that keeps the best epoch per test set reports), with the difference and its
interval (the max re-taken in each bootstrap resample: `stats.selection_inflation`).

The run must have kept every epoch's checkpoint: train with `callbacks.model_checkpoint.save_top_k=-1`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from src.experiments import tracking
from src.utils.errors import UserError
from src.utils.stats import bootstrap_intervals, selection_inflation

KEEP_EVERY_EPOCH = "callbacks.model_checkpoint.save_top_k=-1"


def epoch_checkpoints(best: Path) -> list[Path]:
    """The epoch checkpoints in the best checkpoint's folder (not last.ckpt), oldest epoch first."""
    folder = best.parent
    found = [p for p in folder.glob("*.ckpt") if p.name != "last.ckpt"]
    if len(found) < 2:
        raise UserError(
            f"the run kept {len(found)} epoch checkpoint(s) in {folder}: train it with {KEEP_EVERY_EPOCH} "
            "to keep every epoch's"
        )
    return sorted(
        found, key=lambda p: torch.load(p, map_location="cpu", weights_only=True, mmap=True)["epoch"]
    )


def _training_run(uri: str, run_id: str, folder: Path):
    """(the run's resolved config, its best checkpoint): one line for a run that is not a training run."""
    try:
        run = tracking.client(uri).get_run(run_id)
    except Exception as error:  # unknown id, unreachable store: the same fix
        raise UserError(f"--run {run_id}: no such run in {uri} ({type(error).__name__})") from None
    best = run.data.tags.get("best_checkpoint")
    if not best:
        raise UserError(f"--run {run_id} has no best_checkpoint tag: give the id of a finished train.py run")
    if not Path(best).is_file():
        raise UserError(f"--run {run_id}: its checkpoint {best} is not on this machine")
    config = tracking.download_artifact(uri, run_id, "config.yaml", str(folder))
    return OmegaConf.load(config), Path(best)


def score_epochs(cfg, checkpoints: Sequence[Path]) -> dict:
    """Each checkpoint on the test list: p_fake (epochs, videos), labels, groups, epochs, validation AUCs."""
    import lightning as L

    from src.experiments.evaluation.scores import split_scores
    from src.experiments.wiring import build_datamodule, build_model
    from src.models.weights import load_checkpoint

    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("test")
    module = build_model(cfg)
    trainer = L.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=1,
        precision="32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    p_fake, epochs, val_auc, order = [], [], [], None
    for path in checkpoints:
        load_checkpoint(module, path)
        scored = split_scores(
            trainer.predict(module, datamodule=datamodule), module, datamodule.splits["test"]
        )
        paths = [r.path for r in scored.records]
        position = np.argsort(paths)
        if order is None:
            order, labels = [paths[i] for i in position], scored.labels[position]
            groups = [scored.records[i].identity for i in position]
        p_fake.append(scored.p_fake[position])
        epochs.append(int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"]))
        val_auc.append(module.validation_metrics.get("val/video_auc", float("nan")))
    return {
        "p_fake": np.stack(p_fake),
        "labels": labels,
        "groups": groups,
        "epochs": epochs,
        "val_auc": val_auc,
    }


def render(scored: dict, selected: int, run_id: str) -> str:
    labels, groups = scored["labels"], scored["groups"]
    result = selection_inflation(scored["p_fake"], labels, selected, groups)
    lines = [
        f"Test-set selection, training run {run_id}: {len(labels)} test videos "
        f"({int(labels.sum())} fake), {len(scored['epochs'])} epoch checkpoints",
        "",
        "| epoch | val AUC | test AUC [95 % interval] | |",
        "|---:|---:|---:|:---|",
    ]
    for i, (epoch, val) in enumerate(zip(scored["epochs"], scored["val_auc"], strict=True)):
        low, high = bootstrap_intervals(scored["p_fake"][i], labels, groups)["auc"]
        marks = ["validation-selected"] if i == selected else []
        marks += ["best on test"] if i == result["best_epoch"] else []
        lines.append(
            f"| {epoch} | {val:.3f} | {result['aucs'][i]:.3f} [{low:.2f}, {high:.2f}] | {', '.join(marks)} |"
        )
    lines += [
        "",
        f"Validation-selected (what this framework reports): test AUC {result['aucs'][selected]:.3f}; best epoch "
        f"on the test set: {result['aucs'][result['best_epoch']]:.3f}. Selecting on the test set adds "
        f"{result['diff']:+.3f} [{result['low']:.3f}, {result['high']:.3f}] (95 % bootstrap over test videos, "
        "the best epoch re-chosen in each resample).",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m src.experiments.studies.selection_inflation", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--run", required=True, help="the MLflow id of a finished train.py run")
    parser.add_argument(
        "--tracking-uri", default=None, help="MLflow store (default: MLFLOW_TRACKING_URI or the project's)"
    )
    args = parser.parse_args(argv)
    uri = args.tracking_uri or tracking.default_tracking_uri()
    try:
        with tempfile.TemporaryDirectory(prefix="selection-") as tmp:
            cfg, best = _training_run(uri, args.run, Path(tmp))
        checkpoints = epoch_checkpoints(best)
        if best.resolve() not in [c.resolve() for c in checkpoints]:
            raise UserError(
                f"--run {args.run}: its best checkpoint {best} is not among {best.parent}'s epochs"
            )
    except UserError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    scored = score_epochs(cfg, checkpoints)
    selected = [c.resolve() for c in checkpoints].index(best.resolve())
    print(render(scored, selected, args.run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
