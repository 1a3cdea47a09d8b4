"""How much choosing the epoch on the test set inflates a test AUC (src/experiments/studies/selection_inflation.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from src.experiments.studies.selection_inflation import KEEP_EVERY_EPOCH, epoch_checkpoints, main
from src.utils.errors import UserError
from src.utils.stats import selection_inflation
from tests.conftest import data_overrides, run_script


def test_the_inflation_is_the_best_test_auc_minus_the_selected_ones_with_an_interval():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 30 + [1] * 30)
    epochs = np.stack([np.clip(rng.normal(0.45 + shift * labels, 0.2), 0, 1) for shift in (0.05, 0.3, 0.1)])
    aucs = [roc_auc_score(labels, row) for row in epochs]
    result = selection_inflation(epochs, labels, selected=2)
    assert result["best_epoch"] == int(np.argmax(aucs)) == 1
    assert result["diff"] == pytest.approx(max(aucs) - aucs[2])
    assert result["aucs"] == pytest.approx(aucs)
    assert 0 <= result["low"] <= result["diff"] <= result["high"]
    # the validation choice was also the best on test: nothing is added, and the resampled max never goes below
    unchanged = selection_inflation(epochs, labels, selected=1)
    assert unchanged["diff"] == 0 and unchanged["low"] >= 0


def test_a_run_that_kept_one_checkpoint_is_refused_with_the_fix(tmp_path):
    torch.save({"epoch": 3}, tmp_path / "best-03.ckpt")
    torch.save({"epoch": 4}, tmp_path / "last.ckpt")
    with pytest.raises(UserError, match=f"kept 1 epoch checkpoint.*{KEEP_EVERY_EPOCH}"):
        epoch_checkpoints(tmp_path / "best-03.ckpt")


def test_an_unknown_run_is_one_line(tmp_path, capsys):
    assert main(["--run", "nope", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]) == 1
    assert capsys.readouterr().err.splitlines()[-1].startswith("Error: --run nope: no such run")


@pytest.mark.slow  # a three-epoch training: make test-all
def test_every_epoch_of_a_training_run_is_scored_on_the_test_list(
    small_dataset, small_cache, tmp_path, capsys
):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_script(
        "train.py",
        [
            "weights=scratch",
            "trainer.max_epochs=3",
            "trainer.limit_train_batches=2",
            "callbacks.early_stopping=null",
            KEEP_EVERY_EPOCH,
            f"paths.checkpoint_dir={tmp_path}/ckpt",
            *data_overrides(small_dataset, small_cache),
        ],
        {"MLFLOW_TRACKING_URI": uri},
        timeout=900,
    )
    store = MlflowClient(uri)
    (run,) = store.search_runs([store.get_experiment_by_name("train").experiment_id])
    assert main(["--run", run.info.run_id, "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split("|")[1].strip() for row in rows] == ["0", "1", "2"]
    assert (
        sum("validation-selected" in row for row in rows) == 1 and "Selecting on the test set adds +" in out
    )
