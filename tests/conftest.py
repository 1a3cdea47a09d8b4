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
        "data.train_frames_per_video=8",  # the default (16) is sized for learning the full set; tests need speed
        *(f"+data.synthetic.{key}={value}" for key, value in SMALL_SYNTHETIC.items()),
    ]


def prepared_datamodule(
    dataset: Path, cache_dir: Path, overrides: list[str], config: str = "train", stage="fit"
):
    """The DataModule of a composed real config on the small dataset, its crops cached and `stage` set up."""
    from src.experiments.wiring import build_datamodule

    datamodule = build_datamodule(compose_config(config, [*data_overrides(dataset, cache_dir), *overrides]))
    datamodule.prepare_data()
    datamodule.setup(stage)
    return datamodule


def videos_folder(dataset: Path, folder: Path, count: int) -> Path:
    """`count` videos of the dataset linked into `folder`, plus `broken.mp4` (not a video): what predict.py
    videos= scores, failures included."""
    folder.mkdir()
    for video in sorted(dataset.glob("Celeb-*/*.mp4"))[:count]:
        (folder / video.name).symlink_to(video)
    (folder / "broken.mp4").write_bytes(b"not a video")
    return folder


def predict_config(folder: Path, output: Path, cache_dir: Path, *extra: str):
    """predict.py's composed config: scratch weights on the videos in `folder`, scores to `output`, no tracking."""
    overrides = ["weights=scratch", f"videos={folder}", f"output={output}", "logger=none", "data=celebdf"]
    return compose_config("predict", [*overrides, f"data.cache_dir={cache_dir}", *extra])


def run_script(script: str, overrides: list[str], env: dict[str, str], timeout: int = 300):
    """Run train.py / evaluate.py as a user would, in a subprocess; fail with its output."""
    import subprocess
    import sys
    import tempfile

    outputs = Path(env.get("HYDRA_OUTPUTS") or tempfile.mkdtemp(prefix="hydra-"))
    hydra_dirs = [f"hydra.run.dir={outputs}/run", f"hydra.sweep.dir={outputs}/multirun"]
    result = subprocess.run(
        [sys.executable, script, *overrides, *hydra_dirs],
        cwd=PROJECT_ROOT,
        env={**os.environ, "HYDRA_FULL_ERROR": "1", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{script} {' '.join(overrides)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        )
    return result


@pytest.fixture(scope="session")
def trained_mesonet(small_dataset, small_cache, tmp_path_factory):
    """One real training run of MesoInception4 (from scratch, 2 epochs) in its own MLflow store:
    (environment pointing at the store, checkpoint folder)."""
    store = tmp_path_factory.mktemp("train-store")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db", "DEEPFAKE_NUM_WORKERS": "0"}
    checkpoints = store / "checkpoints"
    result = run_script(
        "train.py",
        [
            "weights=scratch",
            f"paths.checkpoint_dir={checkpoints}",
            "trainer.max_epochs=2",
            "trainer.log_every_n_steps=1",
            *data_overrides(small_dataset, small_cache),
        ],
        env,
    )
    (store / "train-output.txt").write_text(result.stdout + result.stderr)  # what the user saw
    return env, checkpoints
