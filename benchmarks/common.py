"""Shared pieces of the benchmarks: the result record, the run plan of each mode, datasets, configs, timing."""

from __future__ import annotations

import gc
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from src.experiments.config import CONFIG_DIR, PROJECT_ROOT


@dataclass
class Measurement:
    """One row of the results table.

    `ratio` is value / baseline unless the row says otherwise; `met` is None for rows without a target.
    """

    name: str
    value: float | None
    unit: str
    baseline: float | None
    ratio: float | None
    target: str
    met: bool | None
    notes: str = ""
    section: str = ""
    details: dict = field(default_factory=dict)

    @classmethod
    def at_least(
        cls,
        name: str,
        value: float,
        baseline: float,
        unit: str,
        times: float,
        notes: str,
        section: str,
        details: dict | None = None,
        digits: int = 3,
    ) -> Measurement:
        """A row whose target is a speed-up: value / baseline >= `times`."""
        speedup = ratio(value, baseline)
        met = None if speedup is None else speedup >= times  # no baseline: nothing to judge
        return cls(
            name,
            rnd(value, digits),
            unit,
            rnd(baseline, digits),
            rnd(speedup),
            f">= {times:g}x",
            met,
            notes,
            section,
            details or {},
        )

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    """What a mode measures, and how much of it."""

    quick: bool
    # the main synthetic dataset (generate_synthetic_celebdf keyword arguments; {} = the embedded default)
    data: dict
    folds: int
    build_videos: int  # videos per cache-build timing
    build_rounds: int
    # a Celeb-DF-sized variant of the synthetic set, for the detection-resolution row: 896x504 is 16:9 and near
    # Celeb-DF's 942x500 within the generator's rule (v2: width a multiple of 128, height even)
    hires: dict
    loader_rounds: int
    loader_frames_per_video: int
    loader_samples: int  # samples per timed loader run (whole passes)
    meso_steps: int  # timed training steps per Lightning / plain-loop run (MesoInception4)
    lstm_steps: int  # the same for ResNetLSTM
    overhead_rounds: int  # Lightning+MLflow vs plain loop: ABBA rounds
    meso_throughput_rounds: int
    lstm_throughput_rounds: int
    auc_epochs: int
    eval_passes: int  # timed passes of the pure-inference baseline
    scaling: tuple[dict, ...]  # datasets of growing size
    scaling_train_frames: int  # data.train_frames_per_video of the scaling training epochs
    # the evaluation sweep at a real size: a set whose test list is as long as Celeb-DF v2's (518 videos)
    large_sweep: dict = field(default_factory=dict)
    large_sweep_frames: int = 8  # data.frames_per_video of that sweep


SCALING_BASE = {"real_per_identity": 2, "fakes_per_real": 2, "youtube_real": 2, "num_frames": 48}

LARGE_SWEEP = {
    "num_identities": 100,
    "real_per_identity": 2,
    "fakes_per_real": 2,
    "youtube_real": 10,
    "num_frames": 16,
    "width": 256,
    "height": 144,
    "test_fraction": 0.85,
}

QUICK = Plan(
    quick=True,
    data={"num_identities": 6, "real_per_identity": 2, "youtube_real": 2, "num_frames": 48},
    folds=2,
    build_videos=8,
    build_rounds=1,
    hires={
        "num_identities": 4,
        "real_per_identity": 1,
        "fakes_per_real": 1,
        "youtube_real": 0,
        "num_frames": 48,
        "width": 896,
        "height": 504,
    },
    loader_rounds=3,
    loader_frames_per_video=20,
    loader_samples=1500,
    meso_steps=5,
    lstm_steps=2,
    overhead_rounds=2,
    meso_throughput_rounds=3,
    lstm_throughput_rounds=1,
    auc_epochs=1,
    eval_passes=2,
    scaling=tuple({**SCALING_BASE, "num_identities": n, "youtube_real": 0} for n in (3, 5, 8)),
    scaling_train_frames=16,
    large_sweep={**LARGE_SWEEP, "num_identities": 20, "youtube_real": 4},
)

FULL = Plan(
    quick=False,
    data={},
    folds=5,
    build_videos=24,
    build_rounds=2,
    hires={
        "num_identities": 6,
        "real_per_identity": 1,
        "fakes_per_real": 2,
        "youtube_real": 0,
        "num_frames": 48,
        "width": 896,
        "height": 504,
    },
    loader_rounds=5,
    loader_frames_per_video=20,
    loader_samples=4000,
    meso_steps=8,
    lstm_steps=4,
    overhead_rounds=3,
    meso_throughput_rounds=4,
    lstm_throughput_rounds=2,
    auc_epochs=2,
    eval_passes=2,
    scaling=tuple({**SCALING_BASE, "num_identities": n} for n in (4, 8, 16)),
    scaling_train_frames=16,
    large_sweep=LARGE_SWEEP,
)


# -- datasets and configs -------------------------------------------------------------------------
def dataset_name(params: dict) -> str:
    if not params:
        return "synthetic-default"
    short = {
        "num_identities": "i",
        "real_per_identity": "r",
        "fakes_per_real": "f",
        "youtube_real": "y",
        "num_frames": "n",
        "width": "w",
        "height": "h",
    }
    return "synthetic-" + "-".join(f"{short.get(k, k)}{v}" for k, v in sorted(params.items()))


def frame_size(params: dict) -> str:
    """`<width>x<height>` of a synthetic set's generator parameters."""
    return f"{params['width']}x{params['height']}"


def make_dataset(work: Path, params: dict) -> Path:
    """Generate (or reuse) a synthetic Celeb-DF under work/data; seed 0, like data=synthetic."""
    from src.data.synthetic import generate_synthetic_celebdf

    return generate_synthetic_celebdf(work / "data" / dataset_name(params), seed=0, **params)


def data_overrides(root: Path, cache_dir: Path, params: dict, folds: int) -> list[str]:
    """Hydra overrides pointing data=synthetic at a generated dataset and a cache folder."""
    return [
        f"data.root={root}",
        f"data.cache_dir={cache_dir}",
        f"data.folds={folds}",
        *(f"+data.synthetic.{key}={value}" for key, value in params.items()),
    ]


def compose(overrides: list[str], config_name: str = "train"):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides)


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def release() -> None:
    """Collect garbage so DataLoader workers of finished loaders exit before the next timing."""
    gc.collect()
    time.sleep(0.2)


# -- numbers ---------------------------------------------------------------------------------------
def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished (reaped) child processes."""
    import resource

    return sum(
        getattr(resource.getrusage(who), field)
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        for field in ("ru_utime", "ru_stime")
    )


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def median(values) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or baseline is None or baseline == 0 or math.isnan(value) or math.isnan(baseline):
        return None
    return value / baseline


def rnd(x: float | None, digits: int = 3) -> float | None:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return round(float(x), digits)


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares y = a + b x: (a, b, R^2)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    b = sxy / sxx
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys, strict=True))
    return a, b, 1 - ss_res / ss_tot if ss_tot else 1.0


def auc_standard_error(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUC from n_pos positives and n_neg negatives."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (
        n_pos * n_neg
    )
    return math.sqrt(max(var, 0.0))


def run_entry_point(script: str, args: list[str], env: dict | None = None) -> float:
    """Seconds of `python <script> <args>` from the project root, as a user types it; a failure raises with
    the end of its output."""
    command = [sys.executable, script, *args]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return seconds


class Stopwatch:
    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start
