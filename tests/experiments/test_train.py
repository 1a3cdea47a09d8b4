"""train.py end to end on the small embedded dataset, against a temporary MLflow store."""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from tests.conftest import compose_config, data_overrides, run_script


def _train_runs(env, model: str = "mesonet"):
    """The store's training runs of `model` (the session store also holds other models' runs in make test-all)."""
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("train")
    return client, client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.model = '{model}'",
        order_by=["attributes.start_time DESC"],
    )


def test_training_run_is_tracked_with_tags_config_metrics_and_checkpoint(trained_mesonet, tmp_path):
    env, _ = trained_mesonet
    client, runs = _train_runs(env)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert {k: run.data.tags[k] for k in ("model", "weights", "augment", "data")} == {
        "model": "mesonet",
        "weights": "scratch",
        "augment": "none",
        "data": "synthetic",
    }
    for key in (
        "val/video_auc",
        "val/frame_auc",
        "val/video_eer",
        "test/video_auc",
        "test/frame_ap",
        "train/loss_epoch",
    ):
        assert key in run.data.metrics, key
    assert len(client.get_metric_history(run.info.run_id, "val/video_auc")) == 2  # per epoch
    assert run.data.metrics["data/skipped_videos"] == 0

    local = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, dst_path=str(tmp_path), tracking_uri=env["MLFLOW_TRACKING_URI"]
        )
    )
    config = yaml.safe_load((local / "config.yaml").read_text())
    assert config["model"]["name"] == "mesonet" and config["model"]["input"]["size"] == 256
    checkpoint = torch.load(local / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert any(k.startswith("net.") for k in checkpoint["state_dict"])
    assert (local / "data_report.json").is_file()


def test_a_training_run_prints_each_line_once_without_noise_and_ends_with_its_summary(trained_mesonet):
    env, checkpoints = trained_mesonet
    output = (checkpoints.parent / "train-output.txt").read_text()
    lines = [line.strip() for line in output.replace("\r", "\n").splitlines()]
    logged = [line.split("] - ", 1)[-1] for line in lines if line.startswith("[20")]  # Hydra's log format
    assert logged and len(logged) == len(set(logged)), "a log line was printed twice"
    assert sum("Seed set to" in line for line in lines) == 1
    for noise in (
        "litlogger",
        "exists and is not empty",
        "No positive samples",
        "smaller than the logging interval",
        "Downloading artifacts",
        "is not supported by the model summary",
    ):
        assert noise not in output, noise
    _, runs = _train_runs(env)
    summary = output[output.index(f"train run {runs[0].info.run_name} ({runs[0].info.run_id}) finished") :]
    assert "best checkpoint: " in summary and "(val/video_auc " in summary
    assert f"/#/experiments/{runs[0].info.experiment_id}/runs/{runs[0].info.run_id}" in summary
    test_line = next(line for line in summary.splitlines() if line.strip().startswith("test (video level)"))
    numbers = re.findall(r"[A-Z]+ (\d[\d.e+-]*)", test_line)
    significant = [n.replace(".", "").lstrip("0") for n in numbers]
    assert numbers and all(len(d) == 4 or not d for d in significant), (
        test_line
    )  # 4 significant digits, zeros kept
    assert "  output: " in summary, "the Hydra output folder (the run's log) is named"


def test_model_selection_monitors_validation_never_test():
    cfg = compose_config("train")
    monitored = [c.monitor for c in cfg.callbacks.values() if "monitor" in c]
    assert monitored and all(m.startswith("val/") for m in monitored)


def test_finetuned_weights_are_found_from_a_new_process(trained_mesonet, small_dataset, small_cache):
    env, _ = trained_mesonet
    _, runs = _train_runs(env)
    result = run_script(
        "evaluate.py", ["weights=finetuned", *data_overrides(small_dataset, small_cache)], env
    )
    assert (
        f"weights=finetuned: using the checkpoint of run {runs[0].info.run_id}"
        in result.stdout + result.stderr
    )  # the choice is printed
    assert (
        "Downloading artifacts" not in result.stdout + result.stderr
    )  # MLflow's bar for one small file is noise
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    evaluate = client.get_experiment_by_name("evaluate")
    run = client.search_runs([evaluate.experiment_id])[0]
    assert run.data.tags["initial_weights"].startswith(
        f"runs:/{runs[0].info.run_id}/checkpoints/best.ckpt sha256="
    )
    assert run.data.tags["source_run_id"] == runs[0].info.run_id
    # the evaluation scores the checkpoint's test videos as training's own test did
    assert run.data.metrics["test/video_auc"] == pytest.approx(
        runs[0].data.metrics["test/video_auc"], abs=1e-6
    )


def test_resume_continues_the_same_mlflow_run(trained_mesonet, small_dataset, small_cache):
    env, checkpoints = trained_mesonet
    _, before = _train_runs(env)
    run_script(
        "train.py",
        [
            "weights=scratch",
            "ckpt_path=last",
            f"paths.checkpoint_dir={checkpoints}",
            "trainer.max_epochs=3",
            *data_overrides(small_dataset, small_cache),
        ],
        env,
    )
    client, after = _train_runs(env)
    assert len(after) == len(before) == 1, "resuming must not create a new run"
    history = client.get_metric_history(after[0].info.run_id, "val/video_auc")
    assert len({m.step for m in history}) == 3 and after[0].info.status == "FINISHED"  # one per epoch


# meso4 shares MesoInception4's training path (tests/models/test_mesonet.py covers its network): slow tier
@pytest.mark.parametrize("model", [pytest.param("meso4", marks=pytest.mark.slow), "resnet_lstm"])
def test_each_model_trains_a_step(model, small_dataset, small_cache, tmp_path):
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "DEEPFAKE_NUM_WORKERS": "0"}
    extra = (
        ["model.input.frames_per_clip=2", "model.input.size=112", "model.net.freeze_backbone=true"]
        if model == "resnet_lstm"
        else []
    )
    run_script(
        "train.py",
        [
            f"model={model}",
            "weights=scratch",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=2",
            "trainer.limit_test_batches=2",
            f"paths.checkpoint_dir={tmp_path}/ckpt",
            *extra,
            *data_overrides(small_dataset, small_cache),
        ],
        env,
    )
    _, runs = _train_runs(env, model)
    assert runs and "val/video_auc" in runs[0].data.metrics


@pytest.mark.slow  # two training processes: make test-all
def test_ddp_on_cpu_runs_two_processes_into_one_run(small_dataset, small_cache, tmp_path):
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "DEEPFAKE_NUM_WORKERS": "0"}
    result = run_script(
        "train.py",
        [
            "trainer=ddp",
            "weights=scratch",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=2",
            "trainer.limit_test_batches=2",
            f"paths.checkpoint_dir={tmp_path}/ckpt",
            *data_overrides(small_dataset, small_cache),
        ],
        env,
    )
    log = result.stdout + result.stderr
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in log
    _, runs = _train_runs(env)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and "test/video_auc" in runs[0].data.metrics
    assert len(list((tmp_path / "ckpt").glob("*/run-*"))) == 1


def test_logger_none_trains_without_any_tracking_store(small_dataset, small_cache, tmp_path):
    """logger=none: Lightning gets no logger (not its default one), nothing is written to MLflow, and the
    run still ends with its summary and checkpoint."""
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/store/mlflow.db", "DEEPFAKE_NUM_WORKERS": "0"}
    (tmp_path / "store").mkdir()
    result = run_script(
        "train.py",
        [
            "logger=none",
            "weights=scratch",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=2",
            "trainer.limit_test_batches=2",
            f"paths.checkpoint_dir={tmp_path}/ckpt",
            f"hydra.run.dir={tmp_path}/out",
            *data_overrides(small_dataset, small_cache),
        ],
        env,
    )
    assert "not logged (logger=none)" in result.stdout and "best checkpoint: " in result.stdout
    assert list((tmp_path / "ckpt").rglob("best-*.ckpt"))
    assert not (tmp_path / "store" / "mlflow.db").exists()
    assert not list(tmp_path.rglob("lightning_logs")), "Lightning's default logger must not step in"


X86 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 avx512f avx512bw {extra}\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd {extra}\nCPU implementer\t: 0x41\n"


@pytest.mark.parametrize(
    ("cpuinfo", "native"),
    [
        (X86.format(extra="avx512_bf16 avx512_vnni"), True),
        (X86.format(extra="amx_bf16 amx_tile"), True),
        (X86.format(extra="avx512_vnni"), False),
        (ARM.format(extra="bf16 i8mm"), True),
        (ARM.format(extra="sve"), False),
        ("", None),
    ],
)
def test_the_training_precision_fits_the_cpu(cpuinfo, native):
    from src.experiments.hardware import choose_precision, cpu_has_bf16

    assert cpu_has_bf16(cpuinfo) is native
    choice = choose_precision("cpu", cpuinfo)
    # bf16 autocast only where the CPU has bf16 units; fp32 where it has none or cannot be read
    assert choice.precision == ("bf16-mixed" if native else "32-true")
    assert choice.reason


def _no_cuda():
    return None


@pytest.mark.parametrize(
    ("cuda_bf16", "expected"),
    [(lambda: True, "bf16-mixed"), (lambda: False, "16-mixed"), (_no_cuda, "32-true")],
)
def test_the_training_precision_fits_the_gpu(cuda_bf16, expected):
    from src.experiments.hardware import choose_precision

    assert choose_precision("gpu", cuda_bf16=cuda_bf16).precision == expected
    assert choose_precision("mps").precision == "32-true"


def test_the_composed_trainer_chooses_its_precision_and_an_explicit_one_wins(monkeypatch):
    from src.experiments import hardware
    from src.experiments.hardware import trainer_precision

    without_bf16 = X86.format(extra="avx512_vnni")
    real_read = hardware.cpu_has_bf16
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda cpuinfo=None: real_read(without_bf16))
    cfg = compose_config("train", [])
    assert cfg.trainer.precision == "32-true"  # the resolver asks the (forced) CPU answer
    assert "no bf16" in trainer_precision(cfg.trainer).reason
    monkeypatch.setattr(
        hardware, "cpu_has_bf16", lambda cpuinfo=None: real_read(X86.format(extra="amx_bf16"))
    )
    assert compose_config("train", []).trainer.precision == "bf16-mixed"
    explicit = compose_config("train", ["trainer.precision=32-true"])
    assert explicit.trainer.precision == "32-true"
    assert trainer_precision(explicit.trainer).reason.startswith("set explicitly")
