"""evaluate.py: sweeps as Hydra multiruns into MLflow, the joblib launcher, failures, single videos."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from src.experiments.config import CONFIG_DIR, PROJECT_ROOT
from tests.conftest import data_overrides, run_script, videos_folder


def _best_checkpoint(checkpoints: Path) -> Path:
    return next(checkpoints.glob("*/run-*/best-*.ckpt"))


def _evaluate_runs(env, status=None):
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("evaluate")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    return client, [r for r in runs if status is None or r.info.status == status]


@pytest.fixture(scope="module")
def augmentation_sweep(trained_mesonet, small_dataset, small_cache, tmp_path_factory):
    """`python evaluate.py -m augment=none,flip,heavy` on the finetuned MesoNet, in a fresh store copy."""
    env, _ = trained_mesonet
    result = run_script(
        "evaluate.py", ["-m", "augment=none,flip,heavy", *data_overrides(small_dataset, small_cache)], env
    )
    return env, result


def test_augmentation_sweep_logs_one_tagged_run_per_level(augmentation_sweep, tmp_path):
    env, _ = augmentation_sweep
    client, runs = _evaluate_runs(env, "FINISHED")
    by_level = {r.data.tags["augment"]: r for r in runs if r.data.tags.get("sweep_id")}
    assert set(by_level) == {"none", "flip", "heavy"}
    assert len({r.data.tags["sweep_id"] for r in by_level.values()}) == 1
    for level, run in by_level.items():
        assert run.data.tags["model"] == "mesonet" and run.data.tags["weights"] == "finetuned"
        assert run.data.tags["data"] == "synthetic"
        for key in ("auc", "ap", "acc", "loss", "eer"):
            assert f"test/video_{key}" in run.data.metrics and f"test/frame_{key}" in run.data.metrics
            low, high = (
                run.data.metrics[f"test/video_{key}_ci_low"],
                run.data.metrics[f"test/video_{key}_ci_high"],
            )
            assert low <= run.data.metrics[f"test/video_{key}"] <= high, (key, low, high)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {
            "config.yaml",
            "roc_curve.png",
            "precision_recall.png",
            "confusion_matrix.png",
            "reliability.png",
            "worst_videos.png",
            "explanations.png",  # class-activation maps
            "video_scores.csv",
            "data_report.json",
        } <= artifacts, level
        assert run.data.tags["initial_weights"].startswith("runs:/") and run.data.tags["source_run_id"]
        assert run.data.tags["source_weights"] == "scratch"
        assert run.info.run_name.startswith(f"mesonet-finetuned-synthetic-{level}-f0-s42-")
        (dataset,) = client.get_run(run.info.run_id).inputs.dataset_inputs  # the UI's Dataset column
        assert (
            dataset.dataset.name == "synthetic-fold0"
            and dataset.dataset.digest == run.data.tags["data_fingerprint"][:36]
        )

    def rows(level):
        path = mlflow.artifacts.download_artifacts(
            run_id=by_level[level].info.run_id,
            artifact_path="video_scores.csv",
            dst_path=str(tmp_path / level),
            tracking_uri=env["MLFLOW_TRACKING_URI"],
        )
        return list(csv.DictReader(open(path)))

    def scores(level):
        return {row["path"]: float(row["p_fake"]) for row in rows(level)}

    # the artifact holds what was scored: metrics recomputed from it are the logged ones, exactly
    from src.utils.stats import video_metrics

    for level, run in by_level.items():
        table = rows(level)
        assert set(table[0]) >= {"path", "label", "logit", "p_fake"}
        labels = [int(row["label"]) for row in table]
        recomputed = video_metrics([float(row["p_fake"]) for row in table], labels)
        for key, value in recomputed.items():
            assert value == pytest.approx(run.data.metrics[f"test/video_{key}"], abs=1e-6), (level, key)
        assert run.data.metrics["data/scored_videos"] == len(table)

    none, heavy = scores("none"), scores("heavy")
    assert none.keys() == heavy.keys() and len(none) >= 4
    assert sum(abs(none[v] - heavy[v]) for v in none) / len(none) > 0.01, "heavy perturbation changed nothing"


DEPLOYMENT_METRICS = [
    "test/video_ece",
    *(f"test/video_tpr_fpr{x}{end}" for x in ("01", "05") for end in ("", "_ci_low", "_ci_high")),
    "val/video_threshold",
    "test/video_acc_val_threshold",
]


def test_every_evaluation_logs_what_a_deployment_needs(augmentation_sweep, tmp_path):
    """Calibration, TPR at 1 % / 5 % FPR, the validation threshold and the decisions at it, and per-subset
    metrics: logged under their public names, and equal to what the video_scores.csv artifact gives."""
    from sklearn.metrics import roc_auc_score

    from src.models.metrics import expected_calibration_error
    from src.utils.stats import video_metrics

    env, result = augmentation_sweep
    _, runs = _evaluate_runs(env, "FINISHED")
    by_level = {r.data.tags["augment"]: r for r in runs if r.data.tags.get("sweep_id")}
    assert set(by_level) == {"none", "flip", "heavy"}
    thresholds = set()
    for level, run in by_level.items():
        metrics = run.data.metrics
        assert set(DEPLOYMENT_METRICS) <= set(metrics), (
            level,
            sorted(set(DEPLOYMENT_METRICS) - set(metrics)),
        )
        assert "the EER point of the" in run.data.tags["val_threshold_source"]
        thresholds.add(metrics["val/video_threshold"])
        path = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id,
            artifact_path="video_scores.csv",
            dst_path=str(tmp_path / level),
            tracking_uri=env["MLFLOW_TRACKING_URI"],
        )
        table = list(csv.DictReader(open(path)))
        labels = np.array([int(row["label"]) for row in table])
        p_fake = np.array([float(row["p_fake"]) for row in table])
        decisions = np.array([int(row["decision_val_threshold"]) for row in table])
        assert (decisions == (p_fake >= metrics["val/video_threshold"])).all()
        assert metrics["test/video_acc_val_threshold"] == pytest.approx((decisions == labels).mean())
        assert metrics["test/video_ece"] == pytest.approx(
            expected_calibration_error(p_fake, labels), abs=1e-9
        )
        recomputed = video_metrics(p_fake, labels)
        assert metrics["test/video_tpr_fpr05"] == pytest.approx(recomputed["tpr_fpr05"], abs=1e-12)
        # per source folder: a one-class folder is ranked against every test video of the other class
        sources = np.array([row["path"].split("/")[0] for row in table])
        assert {"Celeb-real", "Celeb-synthesis"} <= set(sources)
        for source in set(sources):
            prefix = f"test/subset/source/{source}/"
            members = sources == source
            scope = members | (labels != labels[members][0])
            assert metrics[prefix + "videos"] == members.sum()
            assert metrics[prefix + "video_auc"] == pytest.approx(roc_auc_score(labels[scope], p_fake[scope]))
            low, high = metrics[prefix + "video_auc_ci_low"], metrics[prefix + "video_auc_ci_high"]
            assert low <= metrics[prefix + "video_auc"] <= high
            assert {prefix + "video_acc", prefix + "video_acc_val_threshold"} <= set(metrics)
    # chosen on the unperturbed validation split with the same weights: one threshold for every level
    assert len(thresholds) == 1
    assert "decision threshold" in result.stdout and "TPR at 1 % FPR" in result.stdout


def test_report_prints_the_seed_tables_from_the_sweep(augmentation_sweep, monkeypatch, capsys, tmp_path):
    from src.experiments import report

    env, _ = augmentation_sweep
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    assert report.main(["--no-log", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for title in ("no augmentation", "rotation/flip", "heavy augmentation"):  # from the runs' tags
        assert title in out
    assert "MesoNet (trained from scratch)" in out  # the fixture's model was trained from scratch
    assert (tmp_path / "report.md").is_file() and (tmp_path / "report.html").is_file()


def test_a_failing_job_is_reported_and_the_others_still_log(
    trained_mesonet, small_dataset, small_cache, tmp_path
):
    env, checkpoints = trained_mesonet
    store = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    good = _best_checkpoint(checkpoints)
    result = subprocess.run(
        [
            sys.executable,
            "evaluate.py",
            "-m",
            f"hydra.sweep.dir={tmp_path}/sweep",
            f"weights.path={tmp_path}/missing.ckpt,{good}",
            *data_overrides(small_dataset, small_cache),
        ],
        cwd=PROJECT_ROOT,
        env={**__import__("os").environ, **env, **store},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "missing.ckpt" in result.stderr.strip().splitlines()[-2]  # the failed job's own line
    _, runs = _evaluate_runs(store)
    # weights are loaded before a run starts: the job with missing weights leaves none, the other finishes
    assert [r.info.status for r in runs] == ["FINISHED"]


@pytest.mark.slow  # make test runs a real sweep through submitit_local; joblib in make test-all
def test_joblib_launcher_runs_parallel_jobs_into_one_sqlite_store(
    trained_mesonet, small_dataset, small_cache, tmp_path
):
    env, checkpoints = trained_mesonet
    store = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "DEEPFAKE_NUM_WORKERS": "0"}
    weights = f"weights.path={_best_checkpoint(checkpoints)}"
    run_script(
        "evaluate.py",
        [
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            weights,
            "augment=none,flip",
            *data_overrides(small_dataset, small_cache),
        ],
        {**env, **store},
    )
    client, runs = _evaluate_runs(store)
    assert sorted(r.data.tags["augment"] for r in runs) == ["flip", "none"]
    assert all(r.info.status == "FINISHED" and len(r.data.metrics) >= 10 for r in runs)


@pytest.mark.slow  # a launcher integration (submitit starts its own processes): make test-all
def test_submitit_local_launcher_runs_a_real_sweep(trained_mesonet, small_dataset, small_cache, tmp_path):
    """The same submitit code path as submitit_slurm (the documented route to a cluster), run locally."""
    env, checkpoints = trained_mesonet
    store = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "DEEPFAKE_NUM_WORKERS": "0"}
    weights = f"weights.path={_best_checkpoint(checkpoints)}"
    run_script(
        "evaluate.py",
        [
            "-m",
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=20",
            weights,
            "augment=none,flip",
            *data_overrides(small_dataset, small_cache),
        ],
        {**env, **store},
        timeout=600,
    )
    _, runs = _evaluate_runs(store)
    assert sorted(r.data.tags["augment"] for r in runs) == ["flip", "none"]
    assert all(r.info.status == "FINISHED" for r in runs)


def test_single_video_prediction_prints_probability_and_face_count(small_dataset, small_cache):
    if not (PROJECT_ROOT.parent / "shared" / "mesonet").is_dir():
        pytest.skip("../shared/mesonet is absent: no original MesoNet weights to predict with")
    video = next((small_dataset / "Celeb-synthesis").glob("*.mp4"))
    result = run_script(
        "predict.py",
        ["weights=pretrained", f"video={video}", *data_overrides(small_dataset, small_cache)],
        {"DEEPFAKE_WEIGHTS_DIR": str(PROJECT_ROOT.parent / "shared" / "mesonet" / "weights")},
    )
    assert f"{video}: P(fake) = " in result.stdout
    assert "faces detected in" in result.stdout and "of 20 frames" in result.stdout
    assert len(result.stdout.split("per-frame P(fake):")[1].split()) == 20


def test_slurm_launcher_config_composes():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("evaluate", overrides=["hydra/launcher=submitit_slurm"], return_hydra_config=True)
    assert "SlurmLauncher" in cfg.hydra.launcher._target_
    assert cfg.hydra.launcher.timeout_min > 0


def test_make_ui_serves_the_runs_over_the_rest_api(augmentation_sweep):
    """`make ui` on the sweep's store: the MLflow REST API on 127.0.0.1 lists the evaluate runs."""
    import json
    import os
    import signal
    import socket
    import time
    import urllib.request

    env, _ = augmentation_sweep
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        ["make", "ui", f"PORT={port}"],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    experiment = (
        mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"]).get_experiment_by_name("evaluate").experiment_id
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search",
        data=json.dumps({"experiment_ids": [experiment]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                runs = json.loads(urllib.request.urlopen(request, timeout=5).read())["runs"]
                break
            except OSError:
                assert server.poll() is None, "make ui exited"
                assert time.monotonic() < deadline, "the MLflow UI did not answer within 120 s"
                time.sleep(1)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    levels = {tag["value"] for run in runs for tag in run["data"]["tags"] if tag["key"] == "augment"}
    assert {"none", "flip", "heavy"} <= levels


def test_study_grid_preset_sweeps_the_seed_study():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("evaluate", overrides=["experiment=study_grid"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    grid = [set(params[k].split(",")) for k in ("model", "weights", "augment")]
    assert grid == [{"mesonet", "resnet_lstm"}, {"pretrained", "finetuned"}, {"none", "flip", "heavy"}]


@pytest.mark.slow
def test_full_grid_logs_twelve_runs(trained_mesonet, small_dataset, small_cache, tmp_path):
    """The seed grid end to end: pretrained MesoNet from the weights cache, pretrained ResNetLSTM from a
    local ImageNet file (a state dict the test makes), finetuned from training runs."""
    from torchvision.models import resnet50

    shared = PROJECT_ROOT.parent / "shared" / "mesonet" / "weights"
    if not shared.is_dir():
        pytest.skip("../shared/mesonet is absent: no original MesoNet weights")
    env, _ = trained_mesonet
    imagenet = tmp_path / "resnet50-imagenet.pth"
    __import__("torch").save(resnet50(weights=None).state_dict(), imagenet)
    env = {**env, "DEEPFAKE_WEIGHTS_DIR": str(shared)}
    clip = ["model.input.frames_per_clip=2", "model.input.size=112"]
    run_script(
        "train.py",
        [
            "model=resnet_lstm",
            "weights=pretrained",
            f"model.pretrained.file={imagenet}",
            "model.net.freeze_backbone=true",
            "trainer.max_epochs=1",
            f"paths.checkpoint_dir={tmp_path}/ckpt",
            *clip,
            *data_overrides(small_dataset, small_cache),
        ],
        env,
        timeout=600,
    )
    # one sweep per model: model.pretrained.file means the ImageNet file only to resnet_lstm
    grid = ["experiment=study_grid", *data_overrides(small_dataset, small_cache)]
    run_script("evaluate.py", [*grid, "hydra.sweeper.params.model=mesonet"], env, timeout=1200)
    # the clip model is scored with the input contract it was trained with (lineage refuses any other)
    run_script(
        "evaluate.py",
        [*grid, "hydra.sweeper.params.model=resnet_lstm", f"model.pretrained.file={imagenet}", *clip],
        env,
        timeout=1200,
    )
    _, sweep = _evaluate_runs(env, "FINISHED")
    cells = {(r.data.tags["model"], r.data.tags["weights"], r.data.tags["augment"]) for r in sweep}
    assert len(cells) == 12
    origins = {
        r.data.tags["model"] + "/" + r.data.tags["weights"]: r.data.tags["initial_weights"] for r in sweep
    }
    assert "MesoInception_DF.h5 sha256=234586d4" in origins["mesonet/pretrained"]
    assert origins["resnet_lstm/pretrained"].startswith(f"{imagenet} sha256=")


# -- batch prediction ------------------------------------------------------------------------------------
def test_videos_accepts_a_folder_a_glob_or_a_list_file(tmp_path):
    from src.experiments.predict import resolve_videos

    folder = tmp_path / "clips"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.mp4", "sub/b.MP4", "notes.txt"):
        (folder / name).write_bytes(b"x")
    assert resolve_videos(str(folder)) == [folder / "a.mp4", folder / "sub" / "b.MP4"]
    assert resolve_videos(f"{folder}/*.mp4") == [folder / "a.mp4"]
    listing = tmp_path / "list.txt"
    listing.write_text("# my videos\nclips/a.mp4\n\nclips/sub/b.MP4\n")
    assert resolve_videos(str(listing)) == [tmp_path / "clips/a.mp4", tmp_path / "clips/sub/b.MP4"]
    with pytest.raises(FileNotFoundError, match="no such folder"):
        resolve_videos(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="no video files"):
        resolve_videos(f"{tmp_path}/*.avi")


def test_batch_prediction_writes_a_row_per_video_failed_ones_included(small_dataset, small_cache, tmp_path):
    from src.experiments.predict import predict
    from tests.conftest import predict_config

    folder = videos_folder(small_dataset, tmp_path / "videos", 3)
    output = tmp_path / "out" / "scores.csv"
    rows = predict(predict_config(folder, output, small_cache))
    table = list(csv.DictReader(output.open()))
    assert [Path(r["path"]).name for r in table] == sorted(p.name for p in folder.iterdir())
    broken = next(r for r in table if r["path"].endswith("broken.mp4"))
    assert broken["p_fake"] == "" and broken["error"]
    scored = [r for r in table if r["p_fake"]]
    assert len(scored) == 3 and all(0 <= float(r["p_fake"]) <= 1 and int(r["frames"]) == 20 for r in scored)
    assert len(rows) == 4
    assert mlflow.MlflowClient().get_experiment_by_name("predict") is None, "logger=none must not log"


def test_batch_prediction_with_nothing_scorable_fails_its_run_and_keeps_the_csv(
    small_cache, tmp_path, capsys
):
    """No video could be scored: an error naming the CSV (exit 1 from the command line), the MLflow run FAILED
    with the reason, the CSV with every reason kept; the same command twice gives two run names."""
    from src.experiments.predict import predict
    from tests.conftest import compose_config

    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (folder / name).write_bytes(b"not a video")
    output = tmp_path / "scores.csv"
    cfg = compose_config(
        "predict",
        ["weights=scratch", f"videos={folder}", f"output={output}", f"data.cache_dir={small_cache}"],
    )
    for _ in range(2):
        with pytest.raises(
            ValueError, match=f"none of the 2 videos .* could be scored; the reasons are in {output}"
        ):
            predict(cfg)
    assert "Scored 0 of 2 videos" in capsys.readouterr().out
    assert [r["error"] != "" for r in csv.DictReader(output.open())] == [True, True]
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])  # the store predict used
    runs = client.search_runs([client.get_experiment_by_name("predict").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED", "FAILED"] and all(
        "could be scored" in r.data.tags["error"] for r in runs
    )
    assert len({r.info.run_name for r in runs}) == 2
    assert client.get_experiment_by_name("predict").tags.get("mlflow.note.content"), (
        "the experiment's description"
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["output={tmp}"], "is a folder: give a file name"),
        (["output={tmp}/file.txt/scores.csv"], "file.txt is a file, not a folder"),
        (["video={tmp}/a.mp4"], "give video=<file> .* or videos=<folder|glob|list file> .*, not both"),
    ],
)
def test_batch_prediction_refuses_an_unusable_output_or_two_inputs_before_scoring(
    overrides, message, tmp_path
):
    from src.experiments.predict import predict
    from src.utils.errors import ConfigError
    from tests.conftest import compose_config

    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "a.mp4").write_bytes(b"x")
    cfg = compose_config(
        "predict",
        [
            "weights=scratch",
            f"videos={tmp_path}",
            "logger=none",
            *(o.format(tmp=tmp_path) for o in overrides),
        ],
    )
    with pytest.raises(ConfigError, match=message):
        predict(cfg)


def test_evaluate_points_video_files_at_predict(monkeypatch, capsys):
    """Scoring video files moved to predict.py: evaluate.py video=... says so in one line."""
    import sys

    from src.experiments.cli import run

    monkeypatch.setattr(sys, "argv", ["evaluate.py", "video=clip.mp4"])
    with pytest.raises(SystemExit) as exit:
        run(lambda: pytest.fail("evaluate ran"), task="evaluate")
    assert exit.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "Error: video=clip.mp4: scoring video files is python predict.py video=<...> (evaluate.py evaluates a "
        "test list)"
    ]


def test_a_sweep_ends_with_its_id_its_jobs_and_the_report_line(tmp_path, monkeypatch, capsys):
    """What PrepareSweep.on_multirun_end prints, from the config Hydra hands it (with its hydra node)."""
    from src.experiments.sweeps.callbacks import PrepareSweep

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "evaluate", overrides=[f"hydra.sweep.dir={tmp_path}/multirun/sweep-7"], return_hydra_config=True
        )
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("evaluate")
    for level, auc, seed in (("none", 0.8, "1"), ("heavy", 0.5, "2")):
        run = client.create_run(
            experiment,
            tags={
                "sweep_id": "sweep-7",
                "model": "mesonet",
                "weights": "finetuned",
                "data": "synthetic",
                "augment": level,
                "fold": "0",
                "seed": seed,
            },
        )
        client.log_metric(run.info.run_id, "test/video_auc", auc)
        client.set_terminated(run.info.run_id, "FINISHED")
    PrepareSweep().on_multirun_end(config=cfg)
    out = capsys.readouterr().out
    assert "Sweep sweep-7: 2 runs" in out and "make report SWEEP=sweep-7" in out
    assert "mesonet/finetuned/synthetic/heavy" in out and "0.5" in out and "FINISHED" in out
    assert "heavy fold 0 seed 2" in out, "a sweep over seeds shows each job's seed"


# -- loggers: built by Hydra from conf/logger/<name>.yaml, used by train.py and evaluate.py alike --------
@pytest.mark.parametrize("option", ["mlflow", "csv", "none"])
def test_every_logger_option_builds_the_lightning_logger_it_names(option, tmp_path):
    from lightning.pytorch.loggers import CSVLogger, MLFlowLogger

    from src.experiments.tracking import Run, uses_mlflow
    from tests.conftest import compose_config

    cfg = compose_config("evaluate", [f"logger={option}", f"paths.root_dir={tmp_path}"])
    run = Run.start(cfg.get("logger"), tags={"model": "mesonet"}, name="r")
    logger = run.logger
    expected = {"mlflow": MLFlowLogger, "csv": CSVLogger, "none": type(None)}[option]
    assert type(logger) is expected and uses_mlflow(cfg.get("logger")) == (option == "mlflow")
    if option == "mlflow":  # the run exists at once, in the classic-ML experiment named by the task
        run = logger.experiment.get_run(logger.run_id)
        assert run.info.run_name == "r" and run.data.tags["model"] == "mesonet"
        experiment = logger.experiment.get_experiment(run.info.experiment_id)
        assert (
            experiment.name == "evaluate"
            and experiment.tags["mlflow.experimentKind"] == "custom_model_development"
        )


def test_evaluate_with_the_csv_logger_writes_its_metrics_and_files_there_and_nothing_to_mlflow(
    small_dataset, small_cache, tmp_path
):
    """logger=csv used to be ignored by evaluate.py, which always wrote to MLflow."""
    from src.experiments.evaluate import evaluate
    from tests.conftest import compose_config

    cfg = compose_config(
        "evaluate",
        [
            "weights=scratch",
            "logger=csv",
            f"logger.save_dir={tmp_path}/logs",
            *data_overrides(small_dataset, small_cache),
        ],
    )
    metrics = evaluate(cfg)
    (folder,) = (tmp_path / "logs" / "evaluate").iterdir()
    logged = list(csv.DictReader((folder / "metrics.csv").open()))
    assert float(logged[0]["test/video_auc"]) == pytest.approx(metrics["test/video_auc"])
    assert {
        "video_scores.csv",
        "roc_curve.png",
        "worst_videos.png",
        "explanations.png",
        "config.yaml",
        "data_report.json",
        "hparams.yaml",
    } <= {p.name for p in folder.iterdir()}
    assert "tags.model: mesonet" in (folder / "hparams.yaml").read_text()
    store = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])  # this test's own store (conftest)
    assert store.search_experiments(filter_string="name = 'evaluate'") == []


@pytest.mark.parametrize(
    "weights, message",
    [
        (["weights=finetuned"], "found no finished mesonet training run"),
        (
            ["weights=pretrained", "model.pretrained.url=http://127.0.0.1:9/MesoInception_DF.h5"],
            "MesoNet weights MesoInception_DF.h5 are not in",
        ),  # an empty weights cache, no download possible
    ],
)
def test_missing_weights_fail_before_a_run_or_any_data_work(weights, message, tmp_path):
    """The error was raised inside the run: every such evaluation (each job of a sweep) left a FAILED run."""
    from src.experiments.evaluate import evaluate
    from src.models.weights import WeightsNotFound
    from tests.conftest import compose_config

    cfg = compose_config("evaluate", [*weights, f"data.root={tmp_path}/never"])
    with pytest.raises(WeightsNotFound, match=message):
        evaluate(cfg)
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])  # the store evaluate() used
    experiment = client.get_experiment_by_name("evaluate")
    assert experiment is None or not client.search_runs([experiment.experiment_id])
    assert not (tmp_path / "never").exists()
