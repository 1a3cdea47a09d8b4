"""Determinism: two trainings with the same seed log the same metrics."""

from __future__ import annotations

import pytest

from tests.conftest import data_overrides, mlflow_runs, run_script, script_env


@pytest.mark.slow
def test_the_same_seed_gives_the_same_metrics(small_dataset, small_cache, tmp_path):
    metrics = []
    for attempt in ("a", "b"):
        store = tmp_path / attempt
        run_script(
            "train.py",
            [
                "weights=scratch",
                "trainer.max_epochs=2",
                f"paths.checkpoint_dir={store}/ckpt",
                *data_overrides(small_dataset, small_cache),
            ],
            {**script_env(store), "HYDRA_OUTPUTS": str(store / "hydra")},
        )
        (run,) = mlflow_runs(store, "train")
        metrics.append(
            {k: v for k, v in run.data.metrics.items() if k.startswith(("val/", "test/", "train/"))}
        )
    assert len(metrics[0]) >= 20 and metrics[0].keys() == metrics[1].keys()
    different = {k: (metrics[0][k], metrics[1][k]) for k in metrics[0] if metrics[0][k] != metrics[1][k]}
    assert not different, f"same seed, different metrics: {different}"
