"""Shared fixtures: composed real configs and one small synthetic Celeb-DF per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from src.experiments.config import CONFIG_DIR, PROJECT_ROOT

SHARED_MESONET = PROJECT_ROOT.parent / "shared" / "mesonet"
# small enough for seconds, big enough for 2 folds with both classes on every side
SMALL_SYNTHETIC = {"num_identities": 4, "real_per_identity": 2, "youtube_real": 2, "num_frames": 24}


def compose_config(config_name: str = "train", overrides: list[str] | None = None):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides or [])


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    from src.data.synthetic import generate_synthetic_celebdf

    return generate_synthetic_celebdf(tmp_path_factory.mktemp("celebdf") / "root", seed=0, **SMALL_SYNTHETIC)


@pytest.fixture(scope="session")
def small_cache(tmp_path_factory) -> Path:
    """A face-crop cache folder shared by the tests that only read the small dataset."""
    return tmp_path_factory.mktemp("face-cache")


@pytest.fixture(autouse=True)
def _isolated_tracking(tmp_path, monkeypatch):
    """No test writes to the project's own MLflow store or weights cache."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("DEEPFAKE_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("DEEPFAKE_BUILD_WORKERS", "1")
    monkeypatch.setenv("DEEPFAKE_NUM_WORKERS", "0")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def data_overrides(root: Path, cache_dir: Path, folds: int = 2) -> list[str]:
    """Hydra overrides pointing data=synthetic at the small session dataset."""
    return [
        f"data.root={root}",
        f"data.cache_dir={cache_dir}",
        f"data.folds={folds}",
        *(f"+data.synthetic.{key}={value}" for key, value in SMALL_SYNTHETIC.items()),
    ]


def run_script(script: str, overrides: list[str], env: dict[str, str], timeout: int = 300):
    """Run train.py / evaluate.py as a user would, in a subprocess; fail with its output."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, script, *overrides],
        cwd=PROJECT_ROOT,
        env={**os.environ, "HYDRA_FULL_ERROR": "1", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"{script} {' '.join(overrides)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result
