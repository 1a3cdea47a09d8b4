"""prepare.py: the face-crop cache built without training, in shards that are disjoint, together complete
and equal to one build, through Hydra's launchers; a later train or evaluate run builds nothing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from src.data.indexes.ffpp import write_ffpp_layout
from src.experiments.config import PROJECT_ROOT, check_config, config_error_line
from src.experiments.prepare import SUMMARY_FILE, prepare, shard_of, shard_records
from src.experiments.wiring import build_datamodule
from src.utils.errors import ConfigError
from tests.conftest import compose_config, run_script

# the smallest synthetic set that still gives FF++ three pairs: 13 videos of 8 frames
TINY = {"num_identities": 3, "real_per_identity": 2, "fakes_per_real": 1, "youtube_real": 1, "num_frames": 8}
ENV = {"DEEPFAKE_BUILD_WORKERS": "1", "DEEPFAKE_NUM_WORKERS": "0"}


def tiny_overrides(root: Path, cache_dir: Path) -> list[str]:
    return [
        f"data.root={root}",
        f"data.cache_dir={cache_dir}",
        "data.frames_per_video=4",
        *(f"+data.synthetic.{key}={value}" for key, value in TINY.items()),
    ]


def cache_files(cache_dir: Path) -> dict[str, str]:
    """Every file of a cache folder (temporary ones included) by its relative path: its content's SHA-256."""
    return {
        f.relative_to(cache_dir).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(cache_dir.rglob("*"))
        if f.is_file()
    }


def job_summaries(sweep_dir: Path) -> list[dict]:
    return [json.loads(f.read_text()) for f in sorted(sweep_dir.glob(f"*/{SUMMARY_FILE}"))]


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """Two shards through the joblib launcher, in parallel, on a synthetic set neither has yet (both race to
    generate it): (dataset root, cache folder, sweep folder, what the user saw, the MLflow store path)."""
    base = tmp_path_factory.mktemp("prepare")
    root, cache, store = base / "synthetic", base / "cache", base / "mlflow.db"
    env = {**ENV, "HYDRA_OUTPUTS": str(base / "outputs"), "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    overrides = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "shard=0,1", "shards=2"]
    result = run_script("prepare.py", [*overrides, *tiny_overrides(root, cache)], env, timeout=600)
    return root, cache, base / "outputs" / "multirun", result.stdout + result.stderr, store


# -- the split ------------------------------------------------------------------------------------------
PATHS = [f"Celeb-real/id{i}_{j:04d}.mp4" for i in range(20) for j in range(3)] + [
    f"manipulated_sequences/Deepfakes/c23/videos/{i:03d}_{i + 1:03d}.mp4" for i in range(60)
]


@pytest.mark.parametrize("shards", [1, 2, 3, 7])
def test_the_shards_are_disjoint_and_together_complete(shards):
    from src.data.indexes.base import VideoRecord

    records = [
        VideoRecord(p, label=i % 2, identity="", source="", is_test=False) for i, p in enumerate(PATHS)
    ]
    parts = [shard_records(records, shard, shards) for shard in range(shards)]
    paths = [r.path for part in parts for r in part]
    assert sorted(paths) == sorted(PATHS)  # each video in exactly one shard
    assert all(0 <= shard_of(p, shards) < shards for p in PATHS)
    assert all(part for part in parts)  # 120 videos leave no shard of up to 7 empty
    assert all(part == sorted(part, key=records.index) for part in parts)  # index order kept


def test_the_split_is_the_same_in_every_process():
    """Not Python's hash(), which is salted per process: every job and machine must agree on every video."""
    code = "from src.experiments.prepare import shard_of; import sys; print([shard_of(p, 5) for p in sys.argv[1:]])"
    other = subprocess.run(
        [sys.executable, "-c", code, *PATHS[::7]],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONHASHSEED": str(hash("salt") % 1000 + 1)},  # not this process's salt
        capture_output=True,
        text=True,
        check=True,
    )
    assert other.stdout == f"{[shard_of(p, 5) for p in PATHS[::7]]}\n"


# -- bad keys -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("shard", "shards"), [(2, 2), (-1, 2), (0, 0), (5, 3)])
def test_a_shard_out_of_range_is_one_line_naming_the_keys(shard, shards, tmp_path):
    cfg = compose_config("prepare", [f"shard={shard}", f"shards={shards}", f"paths.data_dir={tmp_path}"])
    with pytest.raises(
        ConfigError, match=rf"^shard={shard} shards={shards}: need shards >= 1 and 0 <= shard"
    ):
        check_config(cfg)


def test_a_shard_that_is_not_a_number_fails_at_composition():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as error:
        compose_config("prepare", ["shard=first"])
    assert config_error_line(error.value) == (
        "shard=first: Value 'first' of type 'str' could not be converted to Integer"
    )


def _run_failing(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [
            sys.executable,
            "prepare.py",
            *args,
            f"paths.data_dir={tmp_path}",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result


def test_bad_shard_keys_end_the_command_in_one_line_before_any_data_work(tmp_path):
    single = _run_failing(["shard=2", "shards=2"], tmp_path)
    assert single.stderr.strip().splitlines()[-1].startswith("Error: ConfigError: shard=2 shards=2: need")
    sweep = _run_failing(["-m", "shard=0,1,2", "shards=2"], tmp_path)
    last = sweep.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ConfigError: shard=2 shards=2: need") and last.endswith(
        "(job shard=2); no job was started"
    )
    assert not (tmp_path / "sweep" / "0").exists() and not list(tmp_path.glob("synthetic-*"))


# -- the joblib launcher, against one build -------------------------------------------------------------
def test_joblib_shards_generate_the_set_once_and_build_each_video_once(sharded):
    root, cache, sweep, output, store = sharded
    jobs = job_summaries(sweep)
    assert sorted((job["shard"], job["shards"]) for job in jobs) == [(0, 2), (1, 2)]
    indexed = jobs[0]["indexed_videos"]
    assert indexed == len(list(root.glob("*/*.mp4"))) == 13
    assert sum(job["videos"] for job in jobs) == indexed and all(job["videos"] for job in jobs)
    assert all(job["built"] == job["videos"] and job["reused"] == job["failed"] == 0 for job in jobs)
    # the racing jobs took turns: one generated the set, the other found it complete
    assert output.count("generating the embedded synthetic Celeb-DF") == 1
    assert not list(root.parent.glob(f".{root.name}.partial-*"))
    # each job said what it did, and the sweep added them up; no MLflow store was created
    for job in jobs:
        assert f"shard {job['shard']} of 2: {job['videos']} of the 13 videos" in output
        assert f"built {job['videos']}, reused 0, skipped 0" in output
    assert f"Prepare sweep {sweep}: 2 jobs, 13 videos: 13 built, 0 reused, 0 skipped" in output
    assert "not in this sweep" not in output
    assert not store.exists()


def test_sharded_entries_equal_one_build_and_a_later_run_builds_none(sharded, tmp_path):
    root, cache, _, _, _ = sharded
    sharded_files = cache_files(cache)
    assert sharded_files and not any(name.endswith(".tmp") for name in sharded_files)
    single = build_datamodule(compose_config("train", tiny_overrides(root, tmp_path / "single")))
    single.prepare_data()  # how train.py builds the cache, in one process
    assert single.build_report.num_built == 13
    assert cache_files(tmp_path / "single") == sharded_files  # same entries, same bytes
    for task in ("train", "evaluate"):
        later = build_datamodule(compose_config(task, tiny_overrides(root, cache)))
        later.prepare_data()
        assert (later.build_report.num_built, later.build_report.num_reused) == (0, 13), task
    # a second builder of an entry (another job, a concurrent run) rewrites the same bytes atomically
    video = root / later.index.records[0].path
    later.cache.build_one(video, later.cache.detector())
    assert cache_files(cache) == sharded_files


@pytest.mark.parametrize("option", ["celebdf", "ffpp"])
def test_every_dataset_option_prepares_in_shards(option, sharded, tmp_path):
    """data=celebdf and data=ffpp (the synthetic set in their layouts): two shards together build every
    video of the index, and the data module then finds them all."""
    root, *_ = sharded
    if option == "ffpp":
        root = write_ffpp_layout(root, tmp_path / "ffpp", methods=["Deepfakes"])
    overrides = [
        f"data={option}",
        f"data.root={root}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.frames_per_video=4",
        "data.face_detector=haar",
    ]
    jobs = [prepare(compose_config("prepare", [*overrides, f"shard={i}", "shards=2"])) for i in (0, 1)]
    indexed = jobs[0]["indexed_videos"]
    assert indexed == (12 if option == "ffpp" else 13)
    assert sum(job["built"] for job in jobs) == sum(job["videos"] for job in jobs) == indexed
    later = build_datamodule(compose_config("train", overrides))
    later.prepare_data()
    assert (later.build_report.num_built, later.build_report.num_reused) == (0, indexed)


@pytest.mark.slow  # about 75 s on 2 busy cores: submitit's start-up and polling
def test_submitit_local_shards_build_the_same_entries(sharded, tmp_path):
    """The code path of submitit_slurm (a cluster's shards), run locally."""
    root, cache, *_ = sharded
    env = {**ENV, "HYDRA_OUTPUTS": str(tmp_path / "outputs")}
    overrides = [
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=20",
        "shard=0,1",
        "shards=2",
    ]
    result = run_script(
        "prepare.py", [*overrides, *tiny_overrides(root, tmp_path / "cache")], env, timeout=600
    )
    jobs = job_summaries(tmp_path / "outputs" / "multirun")
    assert sorted(job["shard"] for job in jobs) == [0, 1] and sum(job["built"] for job in jobs) == 13
    assert "2 jobs, 13 videos: 13 built" in result.stdout
    assert cache_files(tmp_path / "cache") == cache_files(cache)


# -- a cache folder shared by machines ---------------------------------------------------------------------
def test_a_dead_workers_leftovers_are_removed_but_not_another_machines_files(tmp_path):
    """On a shared folder, a process of another machine can have the same id as a build process that died
    here: only this machine's leftovers of that id are removed, never the other's file being written."""
    import socket

    from src.data.cache.pool import remove_temporary_files
    from src.utils.files import atomic_write

    folder = tmp_path / "ab"
    folder.mkdir()
    with pytest.raises(InterruptedError), atomic_write(folder / "entry.npy") as handle:
        name = Path(handle.name).name  # this process's temporary name
        raise InterruptedError  # killed mid-write: a leftover of that name, recreated below
    mine = folder / name
    other = folder / name.replace(f".{socket.gethostname()}-", ".other-node-")  # same id, another machine
    assert other != mine
    for file in (mine, other):
        file.write_bytes(b"half written")
    remove_temporary_files(tmp_path, os.getpid())
    assert not mine.exists() and other.exists()
