"""Run folders, resume into the same run and configuration, atomic checkpoints and their fallback."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.conftest import (
    data_overrides,
    kill_group,
    mlflow_runs,
    run_script,
    script_env,
    start_script,
    wait_for,
)


@pytest.mark.slow  # resume is in make test through tests/experiments/test_train.py and the run-folder tests
def test_a_run_killed_mid_training_resumes_into_the_same_mlflow_run(small_dataset, small_cache, tmp_path):
    import mlflow

    env, checkpoints, logs = script_env(tmp_path), tmp_path / "checkpoints", tmp_path / "first"
    common = [
        "weights=scratch",
        f"paths.checkpoint_dir={checkpoints}",
        "trainer.limit_train_batches=2",
        "test_after_fit=false",
        *data_overrides(small_dataset, small_cache),
    ]
    first = start_script("train.py", [*common, "trainer.max_epochs=30"], env, logs, start_new_session=True)
    try:
        wait_for(
            lambda: any(checkpoints.glob("*/run-*/last.ckpt")), first, 240, "a last.ckpt was written", logs
        )
    finally:
        kill_group(first)
    (killed,) = mlflow_runs(tmp_path, "train")
    assert killed.info.status == "RUNNING", "the run was not interrupted"
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    before = {m.step for m in client.get_metric_history(killed.info.run_id, "val/video_auc")}

    run_script(
        "train.py",
        [*common, "ckpt_path=last", "trainer.max_epochs=3"],
        {**env, "HYDRA_OUTPUTS": str(tmp_path / "second")},
    )
    (run,) = mlflow_runs(tmp_path, "train")
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert run.data.tags["resumed_from"] == "last"
    history = client.get_metric_history(run.info.run_id, "val/video_auc")
    steps = {m.step for m in history}  # one validation per epoch, at the step count it was reached
    assert before and before < steps and len(steps) == 3


def _train_cfg(tmp_path: Path, *extra: str):
    from tests.conftest import compose_config

    return compose_config("train", ["weights=scratch", f"paths.checkpoint_dir={tmp_path}/ckpt", *extra])


def test_two_runs_never_share_a_checkpoint_folder_even_with_a_fixed_output_dir(tmp_path):
    from src.experiments.checkpointing import run_folder

    cfg = _train_cfg(tmp_path)
    assert run_folder(cfg)[0] != run_folder(cfg)[0]


def test_resume_refuses_a_folder_of_another_configuration(tmp_path):
    from src.experiments.checkpointing import RUN_FILE, ResumeMismatch, resume_key, run_folder

    first = _train_cfg(tmp_path, "data.root=/data/one", "seed=1")
    folder, _ = run_folder(first)
    folder.mkdir(parents=True)
    (folder / RUN_FILE).write_text(json.dumps({"mlflow_run_id": "abc", "resume_key": resume_key(first)}))
    (folder / "last.ckpt").write_bytes(b"x")
    again, recorded = run_folder(
        _train_cfg(
            tmp_path,
            "data.root=/data/one",
            "seed=1",
            "ckpt_path=last",
            "trainer.max_epochs=40",
            "data.num_workers=0",
        )
    )
    assert again == folder and recorded["mlflow_run_id"] == "abc"
    for change, named in (
        ("data.root=/data/two", "data.root"),
        ("data.folds=3", "data.folds"),
        ("seed=2", "seed"),
    ):
        with pytest.raises(ResumeMismatch, match=named):
            run_folder(_train_cfg(tmp_path, "data.root=/data/one", "seed=1", "ckpt_path=last", change))
    with pytest.raises(ResumeMismatch, match="data.root"):
        run_folder(_train_cfg(tmp_path, "data.root=/data/two", "seed=1", f"ckpt_path={folder / 'last.ckpt'}"))


def test_checkpoints_are_written_atomically_in_their_own_folder(tmp_path, monkeypatch):
    """A kill mid-write (here: the rename fails) leaves the previous checkpoint intact and no partial file."""
    import torch

    from src.experiments.checkpointing import AtomicCheckpointIO

    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)
    writes = []
    real_save = torch.save
    monkeypatch.setattr(
        torch,
        "save",
        lambda obj, f, *a, **k: (writes.append(os.path.dirname(f.name)), real_save(obj, f, *a, **k)),
    )

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert writes == [str(tmp_path)], "the temporary file must live next to the checkpoint"
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_corrupt_last_checkpoint_falls_back_to_the_newest_good_one(tmp_path, caplog):
    import torch

    from src.experiments.checkpointing import resume_checkpoint

    torch.save({"epoch": 3}, tmp_path / "best-03.ckpt")
    time.sleep(0.01)
    good = tmp_path / "last.ckpt"
    torch.save({"epoch": 5}, good)
    truncated = good.read_bytes()[: len(good.read_bytes()) // 2]
    assert resume_checkpoint(tmp_path, good) == good
    good.write_bytes(truncated)
    assert resume_checkpoint(tmp_path, good) == tmp_path / "best-03.ckpt"
    assert "unreadable" in caplog.text
