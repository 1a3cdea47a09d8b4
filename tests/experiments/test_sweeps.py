"""Sweeps: every job's values checked before the first job; failed jobs reported in the sweep's table."""

from __future__ import annotations

import pytest

from tests.conftest import data_overrides, mlflow_runs, run_entry_point


def test_a_bad_value_in_any_job_of_a_sweep_fails_before_the_first_job_and_the_data_work(tmp_path):
    """Job #0 used to run to the end (or the data be generated) before job #1 failed with a traceback."""
    result = run_entry_point(
        [
            "evaluate.py",
            "-m",
            "weights=scratch",
            "augment=none,heavvy",
            f"data.root={tmp_path}/never",
            f"hydra.sweep.dir={tmp_path}/multirun",
        ],
        tmp_path,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: Could not find 'augment/heavvy'; choose one of flip, "
        "heavy, jpeg, none (job augment=heavvy); no job was started"
    )
    assert "Traceback" not in result.stderr and "Launching" not in result.stdout + result.stderr
    assert not mlflow_runs(tmp_path, "evaluate") and not (tmp_path / "never").exists()
    assert not (tmp_path / "multirun").exists()


@pytest.mark.parametrize(
    "sweep, message",
    [
        (
            ["data.batch_size=4,0"],
            "ConfigError: data.batch_size=0: must be at least 1 (job data.batch_size=0)",
        ),
        (
            ["trainer.devices=1,abc"],
            "ConfigError: trainer.devices='abc': `devices` selected with `CPUAccelerator` should be an int > 0. "
            "(job trainer.devices=abc)",
        ),
        (
            ["model=mesonet,meso4", "trainer.max_epochs=1,-1"],
            "ConfigError: trainer.max_epochs=-1: must be at least 1 "
            "(job model=mesonet trainer.max_epochs=-1)",
        ),
    ],
)
def test_the_sweep_check_composes_every_value_of_every_swept_key(sweep, message, capsys):
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from src.experiments.config import CONFIG_DIR
    from src.experiments.sweeps.callbacks import check_jobs

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["weights=scratch"], return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.overrides.task = ["weights=scratch", *sweep]
            cfg.hydra.job.config_name = "train"
        with pytest.raises(SystemExit) as stopped:
            check_jobs(cfg)
        assert stopped.value.code == 1
        assert capsys.readouterr().err.strip() == f"Error: {message}; no job was started"
        with open_dict(cfg):
            cfg.hydra.overrides.task = ["weights=scratch", "model=mesonet,meso4", "train_augment=weak,strong"]
        check_jobs(cfg)  # a good grid passes


def test_a_sweep_whose_jobs_fail_at_run_time_still_ends_with_its_table_and_a_line_per_failed_job(
    small_dataset, small_cache, tmp_path
):
    """weights=finetuned with nothing trained fails inside each job: Hydra raised the first job's error with a
    traceback and no sweep summary."""
    result = run_entry_point(
        [
            "evaluate.py",
            "-m",
            "augment=none,flip",
            *data_overrides(small_dataset, small_cache),
            f"hydra.sweep.dir={tmp_path}/multirun/sweep-9",
        ],
        tmp_path,
        timeout=180,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert (
        "Sweep sweep-9: 0 runs" in result.stdout and "Traceback" not in result.stderr
    )  # failed before a run
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 3 and errors[-1].startswith("Error: 2 of 2 jobs failed")
    assert all("WeightsNotFound" in line for line in errors[:2])
    assert "job augment=none failed" in errors[0] and "job augment=flip failed" in errors[1]
