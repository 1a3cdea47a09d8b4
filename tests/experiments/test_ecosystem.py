"""What Lightning + Hydra users expect (lightning-hydra-template's conveniences): debug presets, trainer
presets, extras.print_config, tags=[...] reaching MLflow, and an Optuna search (hparams_search=<name>)
whose study resumes and whose trials are MLflow runs."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir

from src.experiments.config import CONFIG_DIR, check_config, optuna_storage
from src.experiments.extras import print_config_tree
from src.experiments.sweeps.optuna_storage import saved_trials
from src.experiments.tracking import run_tags
from src.utils.errors import ConfigError
from tests.conftest import compose_config, data_overrides, run_script

DEBUG_PRESETS = sorted(p.stem for p in (CONFIG_DIR / "debug").glob("*.yaml"))
SEARCHES = sorted(p.stem for p in (CONFIG_DIR / "hparams_search").glob("*.yaml"))


def test_the_template_debug_presets_exist():
    assert set(DEBUG_PRESETS) == {"default", "fdr", "overfit", "limit", "profiler"}
    assert len(SEARCHES) >= 2  # at least one for MesoInception4 and one for a timm model


@pytest.mark.parametrize("preset", DEBUG_PRESETS)
def test_each_debug_preset_composes_checks_and_builds_its_trainer(preset):
    cfg = compose_config("train", [f"debug={preset}", "weights=scratch"])
    check_config(cfg)  # builds the Trainer, optimizer and callbacks too
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.detect_anomaly and cfg.data.num_workers == 0
    expected = {
        "fdr": ("fast_dev_run", True),
        "overfit": ("overfit_batches", 3),
        "limit": ("limit_train_batches", 0.05),
        "profiler": ("profiler", "simple"),
        "default": ("max_epochs", 1),
    }[preset]
    assert cfg.trainer[expected[0]] == expected[1]
    if preset == "overfit":  # stopping early would hide a model that cannot fit three batches
        assert cfg.callbacks.early_stopping is None


def test_a_debug_preset_wins_over_the_experiment_and_trainer():
    cfg = compose_config("train", ["debug=limit", "trainer.max_epochs=7"])
    assert cfg.trainer.max_epochs == 7  # the command line still wins
    assert compose_config("train", ["debug=limit"]).trainer.max_epochs == 3


@pytest.mark.parametrize("search", SEARCHES)
def test_each_hparams_search_composes_into_an_optuna_sweep(search, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/store/mlflow.db")
    cfg = compose_config("train", [f"hparams_search={search}"])
    check_config(cfg)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        sweeper = compose("train", [f"hparams_search={search}"], return_hydra_config=True).hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert cfg.optimized_metric == "best_val_video_auc"
    assert {"model.optimizer.lr", "model.optimizer.weight_decay", "train_augment"} <= set(sweeper.params)
    assert any("frames_per_video" in key for key in sweeper.params)
    assert sweeper.storage.url == f"sqlite:///{tmp_path}/store/optuna.db"  # next to the MLflow store
    assert sweeper.storage._target_ == "src.experiments.sweeps.optuna_storage.SqliteStudyStorage"
    assert sweeper.study_name == search


@pytest.mark.parametrize(
    ("uri", "folder"),
    [
        ("sqlite:////srv/store/mlflow.db", "/srv/store"),
        ("file:///srv/runs/mlruns", "/srv/runs"),
        ("/srv/runs/mlruns", "/srv/runs"),
    ],
)
def test_the_optuna_study_lives_next_to_a_local_mlflow_store(uri, folder):
    assert optuna_storage(uri) == f"sqlite:///{folder}/optuna.db"


def test_a_tracking_server_keeps_the_study_in_the_project():
    from src.experiments.config import PROJECT_ROOT

    assert optuna_storage("http://mlflow.example:5000") == f"sqlite:///{PROJECT_ROOT}/optuna.db"


@pytest.mark.parametrize("preset", ["ddp_sim", "mps"])
def test_trainer_presets_compose(preset):
    cfg = compose_config("train", [f"trainer={preset}"])
    expected = {"ddp_sim": ("cpu", "ddp_spawn", 2), "mps": ("mps", "auto", 1)}[preset]
    assert (cfg.trainer.accelerator, cfg.trainer.strategy, cfg.trainer.devices) == expected
    if preset == "mps" and not torch.backends.mps.is_available():
        pytest.skip("trainer=mps builds a Trainer only on Apple silicon (no MPS device here)")
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert trainer.world_size == expected[2] or preset == "mps"


def test_print_config_prints_each_group_as_a_tree(capsys):
    cfg = compose_config("train", ["extras.print_config=true", "model=xception"])
    print_config_tree(cfg)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].strip() == "config"
    first_groups = [line.split()[-1] for line in lines if line.startswith(("├── ", "└── "))][:3]
    assert first_groups == ["data", "model", "weights"]
    assert "legacy_xception.tf_in1k" in out  # values resolved and shown
    assert compose_config("train").extras.print_config is False  # off unless asked for


def test_tags_become_mlflow_tags_and_bad_ones_are_refused():
    cfg = compose_config("train", ["tags=[baseline,lr-test]"])
    tags = run_tags(cfg)
    assert tags["tags"] == "baseline, lr-test"
    assert tags["tag.baseline"] == tags["tag.lr-test"] == "true"
    with pytest.raises(ConfigError, match="tags: 'a:b' is not a valid MLflow tag name"):
        check_config(compose_config("train", ["tags=[a:b]"]), build=False)


def _runs(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    store = MlflowClient(tracking_uri)
    experiment = store.get_experiment_by_name("train")
    return store.search_runs([experiment.experiment_id]) if experiment else []


def _trials(db: Path) -> list[tuple[int, str]]:
    return [(number, record["state"]) for number, record in saved_trials(f"sqlite:///{db}", "mesonet_optuna")]


@pytest.mark.slow  # five short trainings in two sweeps: make test-all
def test_an_optuna_search_runs_resumes_and_tags_its_trials(small_dataset, small_cache, tmp_path):
    """Two trials of one short epoch, then the same command with three trials resumes the study (trial 2
    only); every trial is a FINISHED MLflow run tagged with the study and its trial number."""
    store = tmp_path / "store"
    store.mkdir()
    uri = f"sqlite:///{store}/mlflow.db"
    env = {"MLFLOW_TRACKING_URI": uri, "DEEPFAKE_NUM_WORKERS": "0"}
    overrides = [
        "hparams_search=mesonet_optuna",
        "weights=scratch",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=2",
        "test_after_fit=false",
        "data.batch_size=8",
        f"paths.checkpoint_dir={tmp_path}/ckpt",
        *data_overrides(small_dataset, small_cache),
    ]
    first = run_script("train.py", [*overrides, "hydra.sweeper.n_trials=2"], env, timeout=600)
    assert _trials(store / "optuna.db") == [(0, "COMPLETE"), (1, "COMPLETE")]
    assert "Optuna study 'mesonet_optuna' (2 trials)" in first.stdout and "best: trial" in first.stdout
    run_script("train.py", [*overrides, "hydra.sweeper.n_trials=1"], env, timeout=600)
    assert [number for number, _ in _trials(store / "optuna.db")] == [0, 1, 2]
    runs = _runs(uri)
    assert sorted(r.data.tags.get("optuna_trial") for r in runs) == ["0", "1", "2"]
    assert {r.data.tags.get("optuna_study") for r in runs} == {"mesonet_optuna"}
    assert {r.info.status for r in runs} == {"FINISHED"}
    # each trial's run trained with the parameters the study recorded for that trial
    params = {str(n): r["params"] for n, r in saved_trials(f"sqlite:///{store}/optuna.db", "mesonet_optuna")}
    for run in runs:
        recorded = params[run.data.tags["optuna_trial"]]
        assert run.data.tags["train_augment"] == recorded["train_augment"]
        assert float(run.data.params["model.optimizer.lr"]) == pytest.approx(recorded["model.optimizer.lr"])


@pytest.mark.slow  # a training process: make test-all
def test_debug_fdr_runs_one_batch_of_each_and_is_tagged(small_dataset, small_cache, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = run_script(
        "train.py",
        [
            "debug=fdr",
            "weights=scratch",
            "tags=[smoke]",
            f"paths.checkpoint_dir={tmp_path}/ckpt",
            *data_overrides(small_dataset, small_cache),
        ],
        {"MLFLOW_TRACKING_URI": uri},
    )
    assert "fast_dev_run saves none" in result.stdout
    (run,) = _runs(uri)
    assert run.data.tags["debug"] == "fdr" and run.data.tags["tag.smoke"] == "true"
    # Lightning swaps the logger for a dummy under fast_dev_run: the run records its setup, not metrics
    assert run.info.status == "FINISHED" and "data/skipped_videos" in run.data.metrics


def test_the_study_storage_resumes_from_its_sqlite_file_and_fails_a_trial_left_running(tmp_path):
    import optuna

    from src.experiments.sweeps.optuna_storage import SqliteStudyStorage, running_trials

    url = f"sqlite:///{tmp_path}/optuna.db"

    def study():
        return optuna.create_study(
            study_name="s", storage=SqliteStudyStorage(url), load_if_exists=True, direction="maximize"
        )

    first = study()
    first.optimize(lambda t: t.suggest_float("lr", 1e-5, 1e-3, log=True), n_trials=2)
    left_running = first.ask()  # a sweep killed while this trial ran
    left_running.suggest_categorical("train_augment", ["weak", "strong"])
    assert [n for n, _ in running_trials(url, "s")] == [2]
    resumed = study()
    assert [(t.number, t.state.name) for t in resumed.trials] == [
        (0, "COMPLETE"),
        (1, "COMPLETE"),
        (2, "FAIL"),
    ]
    assert resumed.best_value == max(t.value for t in first.trials if t.value is not None)
    resumed.optimize(lambda t: t.suggest_float("lr", 1e-5, 1e-3, log=True), n_trials=1)
    assert [n for n, r in saved_trials(url, "s") if r["state"] == "COMPLETE"] == [0, 1, 3]
    assert running_trials(url, "s") == []
