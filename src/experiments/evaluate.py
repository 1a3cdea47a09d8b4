"""What `python evaluate.py` runs: a model with its weights on the test list under a test-time
perturbation, recorded as one run.

Scores are computed in fp32 and kept in float64 from the logits on, so the metrics recomputed from the
`video_scores.csv` artifact are exactly the logged ones.

Besides the ranking metrics, what a deployment needs: calibration (`test/video_ece`, `reliability.png`),
detection at a low false-alarm rate (`test/video_tpr_fpr01`, `test/video_tpr_fpr05`), and a decision
threshold chosen where a deployment could choose it, on the validation split (`val/video_threshold`: the
EER point of the validation videos: for finetuned weights the one their training recorded in the checkpoint,
otherwise the fold's unperturbed validation videos scored here with the same weights; absent, and said so,
when there is no validation split with both classes), with the test accuracy at it
(`test/video_acc_val_threshold`) and each video's decision in `video_scores.csv`. Per-subset metrics
(`test/subset/...`) come from `src.experiments.evaluation.subsets`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import lightning as L
import numpy as np
from omegaconf import DictConfig

from src.experiments.cli import TaskRuns, task_wrapper
from src.experiments.evaluation import explain, plots, subsets
from src.experiments.evaluation.scores import score, split_scores, validation_threshold, write_scores_csv
from src.experiments.tracking import (
    Run,
    check_tracking_store,
    data_fingerprint,
    data_report_metrics,
    flat_params,
    run_name,
    run_tags,
    tracking_uri,
    uses_mlflow,
)
from src.experiments.wiring import build_datamodule, build_model, load_weights
from src.utils.stats import accuracy_at_threshold

log = logging.getLogger(__name__)


@task_wrapper
def evaluate(cfg: DictConfig, runs: TaskRuns) -> dict[str, float]:
    """Score the test list of `cfg.data` with `cfg.model` and `cfg.weights` under `cfg.augment`."""
    L.seed_everything(cfg.seed, workers=True)
    if uses_mlflow(cfg.get("logger")):
        check_tracking_store(tracking_uri(cfg))
    datamodule = build_datamodule(cfg)  # checks every data value before the run starts
    module = build_model(cfg)
    provenance = load_weights(cfg, module, datamodule)  # missing or unusable weights: no run is started
    run = runs.start(cfg.get("logger"), name=run_name(cfg), tags=run_tags(cfg))
    with run.files("evaluation") as folder:
        metrics, threshold_source = _evaluate_into(run, cfg, datamodule, folder, module, provenance)
    _print_summary(
        run, metrics, threshold_source, folder if folder.exists() else "(the files are in MLflow only)"
    )
    return metrics


def _print_summary(run: Run, metrics: dict[str, float], threshold_source: str, output) -> None:
    """The run's summary: the test video metrics with their intervals, and the decision threshold."""

    def interval(m: str) -> str:
        return (
            f"{metrics[f'test/video_{m}']:#.4g} [{metrics[f'test/video_{m}_ci_low']:.3g}, "
            f"{metrics[f'test/video_{m}_ci_high']:.3g}]"
        )

    if "val/video_threshold" in metrics:
        decision = (
            f"decision threshold {metrics['val/video_threshold']:.4g} ({threshold_source}): test accuracy "
            f"{metrics['test/video_acc_val_threshold']:.3f}"
        )
    else:
        decision = f"no decision threshold, val/video_threshold not logged: {threshold_source}"
    run.print_summary(
        "evaluate",
        [
            f"test video AUC {interval('auc')}, AP {interval('ap')}, EER {interval('eer')} "
            f"on {int(metrics['data/scored_videos'])} videos",
            f"TPR at 1 % FPR {interval('tpr_fpr01')}, at 5 % FPR {interval('tpr_fpr05')}; "
            f"ECE {metrics['test/video_ece']:.3f}",
            decision,
        ],
        {"output": output},
    )


def _evaluate_into(
    run: Run, cfg: DictConfig, datamodule, folder: Path, module, provenance
) -> tuple[dict[str, float], str]:
    """Score the test list into `run`; the files (scores, pictures, config, data report) go to `folder`.
    Returns the metrics and where the validation threshold comes from (or why there is none)."""
    run.log_params(flat_params(cfg))
    datamodule.prepare_data()
    datamodule.setup("test")
    fingerprint = data_fingerprint(datamodule)
    root = getattr(datamodule.index, "root", None) or cfg.data.get("root") or "-"
    run.log_dataset(f"{cfg.data.name}-fold{cfg.data.fold}", fingerprint or "unknown", str(root), "test")
    run.set_tags({**({"data_fingerprint": fingerprint} if fingerprint else {}), **provenance.tags()})
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False)
    test = split_scores(trainer.predict(module, datamodule=datamodule), module, datamodule.splits["test"])
    threshold, threshold_source = validation_threshold(cfg, trainer, module, datamodule)
    run.set_tags({"val_threshold_source": threshold_source})

    p_fake, labels, records = test.p_fake, test.labels, test.records
    groups = [r.identity for r in records]
    metrics = score(p_fake, labels, test.frame_probs, groups, seed=cfg.seed)
    if threshold is not None:
        metrics["val/video_threshold"] = threshold
        metrics["test/video_acc_val_threshold"] = accuracy_at_threshold(p_fake, labels, threshold)
    columns = subsets.groupings(records, datamodule)
    metrics.update(subsets.subset_scores(p_fake, labels, columns, groups, threshold, seed=cfg.seed))
    metrics["data/scored_videos"] = float(len(records))
    folder.mkdir(parents=True, exist_ok=True)
    report = datamodule.data_report()
    (folder / "data_report.json").write_text(json.dumps(report, indent=2, default=str))
    metrics.update(data_report_metrics(report))
    run.log_metrics(metrics)
    run.log_config(cfg)
    write_scores_csv(
        folder / "video_scores.csv", records, labels, test.video_logits, p_fake, test.frame_probs, threshold
    )
    dataset = datamodule.predict_dataloader().dataset
    plots.draw_evaluation_pictures(cfg, folder, metrics, p_fake, labels, records, test.videos, dataset)
    # where the model looked: class-activation maps over the crops of its worst mistakes and a few hits
    explain.write_explanations(
        module,
        datamodule,
        p_fake,
        labels,
        [r.path for r in records],
        lambda i: np.asarray(dataset[test.videos[i]][0]),
        folder / "explanations.png",
        f"{cfg.model.get('title') or cfg.model.name} ({cfg.weights.source} weights)",
        device=trainer.strategy.root_device,
    )
    return metrics, threshold_source
