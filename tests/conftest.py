"""Shared fixtures: composed real configs and one small synthetic Celeb-DF per session."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
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


# -- scripts run as subprocesses, their MLflow stores --------------------------------------------------
def run_entry_point(args: list[str], store: Path, timeout: int) -> subprocess.CompletedProcess:
    """`python <args>` in the project root with `script_env(store)`, its output captured as text; the caller
    asserts on the result (run_script asserts success)."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=PROJECT_ROOT,
        env=script_env(store),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def script_env(store: Path, **extra: str) -> dict[str, str]:
    """A complete environment for a subprocess: its own MLflow store and weights folder, no DataLoader
    workers, one face-crop build process."""
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db",
        "DEEPFAKE_WEIGHTS_DIR": str(store / "weights"),
        "DEEPFAKE_NUM_WORKERS": "0",
        "DEEPFAKE_BUILD_WORKERS": "1",
        "GIT_PYTHON_REFRESH": "quiet",
        **extra,
    }


def start_script(
    script: str, overrides: list[str], env: dict[str, str], logs: Path, **popen
) -> subprocess.Popen:
    """Start train.py / evaluate.py; stdout and stderr go to files (a full pipe would block it)."""
    logs.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, script, *overrides, f"hydra.run.dir={logs}/hydra"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=(logs / "stdout").open("w"),
        stderr=(logs / "stderr").open("w"),
        **popen,
    )


def mlflow_runs(store: Path, experiment: str, status: str | None = None) -> list:
    """The runs of `experiment` in the MLflow store under `store` (only those with `status`, if given)."""
    import mlflow

    if not (store / "mlflow.db").is_file():  # never create the store the process under test creates
        return []  # (and creating an empty store takes seconds)
    client = mlflow.MlflowClient(f"sqlite:///{store}/mlflow.db")
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found else []
    return [r for r in runs if status is None or r.info.status == status]


def wait_for(condition, process: subprocess.Popen, timeout: float, what: str, logs: Path | None = None):
    """Poll `condition()` until it holds; fail naming `what` if the process ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            detail = (logs / "stderr").read_text()[-3000:] if logs else ""
            raise AssertionError(f"the process ended (exit {process.returncode}) before {what}\n{detail}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process group this test started (with start_new_session=True), if anything is left."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


class RunsCode:
    """Pickled, a payload that runs code when unpickled: it writes 'pwned' into `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


# -- bad videos, made from a good one ------------------------------------------------------------------
def _frames(video: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def _write_video(path: Path, frames: list[np.ndarray], is_color: bool = True) -> Path:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (width, height), isColor=is_color
    )
    assert writer.isOpened(), path
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def _boxes(data: bytes | bytearray, start: int, end: int):
    while start + 8 <= end:
        size, kind = struct.unpack(">I4s", data[start : start + 8])
        yield start, size, kind
        start += size


def _faststart(data: bytes) -> bytes:
    """The same mp4 with its index (moov) in front of the frames (mdat), as streaming encoders write it.

    Cut short, such a file keeps its index, which claims every frame: the reader meets the missing
    data only when it reads frames, where decoders are most fragile. OpenCV writes moov last, so a
    plain cut loses the index and the file is rejected before any frame is read."""
    top = {kind: data[i : i + size] for i, size, kind in _boxes(data, 0, len(data))}
    moov = bytearray(top[b"moov"])

    def shift(start: int, end: int) -> None:  # chunk offsets move by the size of the moved index
        for i, size, kind in _boxes(moov, start, end):
            if kind in (b"trak", b"mdia", b"minf", b"stbl"):
                shift(i + 8, i + size)
            elif kind == b"stco":
                for j in range(struct.unpack(">I", moov[i + 12 : i + 16])[0]):
                    at = i + 16 + 4 * j
                    moov[at : at + 4] = struct.pack(
                        ">I", struct.unpack(">I", moov[at : at + 4])[0] + len(moov)
                    )

    shift(8, len(moov))
    return top[b"ftyp"] + top.get(b"free", b"") + bytes(moov) + top[b"mdat"]


def make_bad_videos(source: Path, folder: Path) -> dict[str, Path]:
    """One of each kind of bad video, made from the good mp4 `source`."""
    folder.mkdir(parents=True, exist_ok=True)
    data, frames = source.read_bytes(), _frames(source)
    faststart = _faststart(data)
    noise = np.random.default_rng(0).integers(0, 256, (len(frames), *frames[0].shape), dtype=np.uint8)
    made = {
        "zero_bytes": b"",
        "truncated_30": data[: len(data) * 3 // 10],
        "truncated_90": data[: len(data) * 9 // 10],
        "faststart_truncated_30": faststart[: len(faststart) * 3 // 10],
        "faststart_truncated_90": faststart[: len(faststart) * 9 // 10],
        "text": b"this is not a video\n" * 100,
        "random_bytes": np.random.default_rng(1).integers(0, 256, 20_000, dtype=np.uint8).tobytes(),
    }
    paths = {}
    for name, content in made.items():
        paths[name] = folder / f"{name}.mp4"
        paths[name].write_bytes(content)
    paths["short_5_frames"] = _write_video(folder / "short_5_frames.mp4", frames[:5])
    gray = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
    paths["grayscale"] = _write_video(folder / "grayscale.mp4", gray, is_color=False)
    paths["odd_161x97"] = _write_video(folder / "odd_161x97.mp4", [cv2.resize(f, (161, 97)) for f in frames])
    paths["noise_no_face"] = _write_video(folder / "noise_no_face.mp4", list(noise))
    paths["flat_no_face"] = _write_video(
        folder / "flat_no_face.mp4", [np.full_like(frames[0], 128)] * len(frames)
    )
    return paths
