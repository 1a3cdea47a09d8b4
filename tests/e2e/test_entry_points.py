"""train.py and evaluate.py as typed: bad videos, one-line errors, signals; no run left RUNNING."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import (
    RunsCode,
    data_overrides,
    kill_group,
    make_bad_videos,
    mlflow_runs,
    run_entry_point,
    run_script,
    script_env,
    start_script,
    wait_for,
)


def _finish(process: subprocess.Popen, logs: Path, timeout: float = 300) -> tuple[int, str, str]:
    try:
        code = process.wait(timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return code, (logs / "stdout").read_text(), (logs / "stderr").read_text()


def _artifact_json(store: Path, run_id: str, name: str, folder: Path) -> dict:
    import mlflow

    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=name, dst_path=str(folder), tracking_uri=f"sqlite:///{store}/mlflow.db"
    )
    return json.loads(Path(local).read_text())


# -- a corpus with bad videos and bad test-list lines: used and reported, never fatal ------------------
@pytest.fixture(scope="module")
def bad_corpus(small_dataset, tmp_path_factory) -> Path:
    """The small dataset plus bad videos (valid names) in train/val and in the test list, and bad test-list
    lines; a good video outside the root that the list points at. Returns the root."""
    base = tmp_path_factory.mktemp("bad-corpus")
    root = base / "root"
    shutil.copytree(small_dataset, root, ignore=shutil.ignore_patterns(".synthetic.json", ".face-cache"))
    bad = make_bad_videos(next((small_dataset / "Celeb-real").glob("*.mp4")), base / "made")
    placed = {
        "Celeb-real/id10_0000.mp4": "zero_bytes",
        "Celeb-real/id10_0001.mp4": "truncated_30",
        "Celeb-synthesis/id10_id0_0000.mp4": "truncated_90",
        "Celeb-synthesis/id11_id1_0000.mp4": "text",
        "Celeb-real/id11_0000.mp4": "short_5_frames",
        "Celeb-real/id12_0000.mp4": "grayscale",
        "Celeb-synthesis/id12_id2_0000.mp4": "odd_161x97",
        "YouTube-real/00077.mp4": "noise_no_face",
        # test list
        "Celeb-real/id13_0000.mp4": "faststart_truncated_90",
        "Celeb-synthesis/id13_id0_0000.mp4": "flat_no_face",
        "YouTube-real/00078.mp4": "grayscale",
    }
    for rel, kind in placed.items():
        shutil.copy(bad[kind], root / rel)
    outside = base / "outside" / "Celeb-real" / "id0_0000.mp4"  # a good video outside the root
    outside.parent.mkdir(parents=True)
    shutil.copy(next((small_dataset / "Celeb-real").glob("*.mp4")), outside)
    with (root / "List_of_testing_videos.txt").open("a") as listing:
        listing.write(
            "1 Celeb-real/id13_0000.mp4\n0 Celeb-synthesis/id13_id0_0000.mp4\n1 YouTube-real/00078.mp4\n"
            "this line is malformed\n"
            "1 Celeb-real/id99_0000.mp4\n"
            "1 ../outside/Celeb-real/id0_0000.mp4\n"
            "1 Celeb-real/../../outside/Celeb-real/id0_0000.mp4\n"
            f"1 {outside}\n"
        )
    return root


BAD_SKIPPED = {
    "Celeb-real/id10_0000.mp4",
    "Celeb-real/id10_0001.mp4",
    "Celeb-synthesis/id10_id0_0000.mp4",
    "Celeb-synthesis/id11_id1_0000.mp4",
    "Celeb-real/id13_0000.mp4",
}


BAD_DEGRADED = {"Celeb-real/id11_0000.mp4", "YouTube-real/00077.mp4", "Celeb-synthesis/id13_id0_0000.mp4"}


def _bad_data(root: Path, cache: Path) -> list[str]:
    return [
        "data=celebdf",
        f"data.root={root}",
        f"data.cache_dir={cache}",
        "data.folds=2",
        "data.frames_per_video=8",
    ]


@pytest.fixture(scope="module")
def bad_training(bad_corpus, tmp_path_factory):
    """`python train.py data=celebdf data.root=<bad corpus>`: (store, root, result)."""
    root = bad_corpus
    store = tmp_path_factory.mktemp("bad-train-store")
    result = run_script(
        "train.py",
        [
            *_bad_data(root, store / "cache"),
            "weights=scratch",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            f"paths.checkpoint_dir={store}/checkpoints",
        ],
        {**script_env(store), "HYDRA_OUTPUTS": str(store / "hydra")},
    )
    return store, root, result


def _check_data_report(report: dict, root: Path) -> None:
    skipped = {str(Path(v["path"]).relative_to(root)): v["reason"] for v in report["skipped_videos"]}
    assert set(skipped) == BAD_SKIPPED
    for rel, reason in skipped.items():
        assert str(root / rel) in reason, reason
    degraded = {str(Path(v["path"]).relative_to(root)): v["reason"] for v in report["degraded_videos"]}
    assert set(degraded) >= BAD_DEGRADED  # real videos may also have a frame or two without a detection
    assert degraded["Celeb-real/id11_0000.mp4"].startswith("short video: 5 of 8 frames")
    assert "centre crops" in degraded["YouTube-real/00077.mp4"]
    # test-list lines ("<list>:<n>: '<line>'"); the videos such lines name are quarantined as separate entries
    entries = {
        e["entry"].split(": ", 1)[1]: e["reason"]
        for e in report["skipped_index_entries"]
        if ": " in e["entry"]
    }
    assert "malformed" in entries["'this line is malformed'"]
    assert "file not found" in entries["'1 Celeb-real/id99_0000.mp4'"]
    assert "escapes the dataset root" in entries["'1 ../outside/Celeb-real/id0_0000.mp4'"]
    assert "escapes the dataset root" in entries["'1 Celeb-real/../../outside/Celeb-real/id0_0000.mp4'"]
    assert "absolute path" in entries[f"'1 {root.parent / 'outside' / 'Celeb-real' / 'id0_0000.mp4'}'"]
    # a rejected line naming Celeb-real/id0_0000.mp4 (through ../outside/) keeps that video out of training
    quarantined = {e["entry"]: e["reason"] for e in report["skipped_index_entries"] if ": " not in e["entry"]}
    assert "kept out of train/val" in quarantined["Celeb-real/id0_0000.mp4"]
    # nothing outside the root was ever decoded: every video of the report is an indexed one
    assert report["summary"]["videos"] == 26 + 11 - 1
    assert report["summary"]["failed_videos"] == len(BAD_SKIPPED)


def test_training_goes_on_with_the_good_videos_and_reports_the_bad(bad_training, tmp_path):
    store, root, result = bad_training
    (run,) = mlflow_runs(store, "train")
    assert run.info.status == "FINISHED"
    assert run.data.metrics["data/skipped_videos"] == len(BAD_SKIPPED)
    assert "val/video_auc" in run.data.metrics and "test/video_auc" in run.data.metrics
    _check_data_report(_artifact_json(store, run.info.run_id, "data_report.json", tmp_path), root)
    output = result.stdout + result.stderr
    for rel in BAD_SKIPPED:
        assert f"skipped video {root / rel}: {root / rel}" in output, rel  # the log names path and reason


def test_evaluation_scores_the_good_test_videos_and_reports_the_bad(bad_training, small_dataset, tmp_path):
    import csv

    import mlflow

    store, root, _ = bad_training
    (best,) = (store / "checkpoints").glob("*/run-*/best-*.ckpt")
    run_script(
        "evaluate.py",
        [*_bad_data(root, store / "cache"), "weights=finetuned", f"weights.path={best}"],
        {**script_env(store), "HYDRA_OUTPUTS": str(tmp_path / "hydra")},
    )
    (run,) = mlflow_runs(store, "evaluate")
    assert run.info.status == "FINISHED"
    assert run.data.metrics["data/skipped_videos"] == len(BAD_SKIPPED)
    _check_data_report(_artifact_json(store, run.info.run_id, "data_report.json", tmp_path), root)
    scores = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id,
        artifact_path="video_scores.csv",
        dst_path=str(tmp_path),
        tracking_uri=f"sqlite:///{store}/mlflow.db",
    )
    scored = {row["path"] for row in csv.DictReader(open(scores))}
    original = {
        line.split()[1] for line in (small_dataset / "List_of_testing_videos.txt").read_text().splitlines()
    }
    assert scored == original | {"Celeb-synthesis/id13_id0_0000.mp4", "YouTube-real/00078.mp4"}


@pytest.mark.slow
def test_parallel_sweep_jobs_lose_no_run_and_no_metric(bad_training, small_dataset, small_cache, tmp_path):
    store, _, _ = bad_training
    (best,) = (store / "checkpoints").glob("*/run-*/best-*.ckpt")
    run_script(
        "evaluate.py",
        [
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            f"weights.path={best}",
            "augment=none,flip,heavy",
            "seed=1,2",
            *data_overrides(small_dataset, small_cache),
        ],
        {**script_env(tmp_path), "HYDRA_OUTPUTS": str(tmp_path / "hydra")},
    )
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = mlflow_runs(tmp_path, "evaluate")
    assert sorted((r.data.tags["augment"], r.data.params["seed"]) for r in runs) == sorted(
        (a, s) for a in ("none", "flip", "heavy") for s in ("1", "2")
    )
    expected = {
        f"test/{level}_{m}" for level in ("video", "frame") for m in ("auc", "ap", "acc", "loss", "eer")
    }
    expected |= {"data/skipped_videos", "data/frame_detection_rate", "data/scored_videos"}
    expected |= {
        f"test/video_{m}_ci_{end}" for m in ("auc", "ap", "acc", "loss", "eer") for end in ("low", "high")
    }
    # each level's perturbation parameters are params too, so the count is per level
    for level in ("none", "flip", "heavy"):
        params = {len(r.data.params) for r in runs if r.data.tags["augment"] == level}
        assert len(params) == 1, f"{level} runs lost params: {params}"
    for run in runs:
        assert run.info.status == "FINISHED" and expected <= set(run.data.metrics), expected - set(
            run.data.metrics
        )
        for key in expected:
            assert len(client.get_metric_history(run.info.run_id, key)) == 1, key
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "data_report.json", "video_scores.csv", "roc_curve.png"} <= artifacts


# -- failures that must be clear, early and harmless ---------------------------------------------------
def _failing_cases(base: Path, small_dataset: Path) -> dict[str, tuple[str, list[str]]]:
    """case -> (script, overrides) of every run that must fail; "{work}" is the case's own folder."""
    # data=synthetic would generate the dataset into data.root: it must never come to that
    never = ["weights=scratch", "data.root={work}/never-generated"]
    cases = {
        "unknown_option": ("train.py", ["model=nonexistent"]),
        "misspelled_key": ("train.py", ["data.rooot=x"]),
        "folds": ("train.py", [*never, "data.folds=1"]),
        "fold": ("train.py", [*never, "data.folds=3", "data.fold=3"]),
        "frames_per_clip": (
            "train.py",
            [*never, "model=resnet_lstm", "model.input.frames_per_clip=30", "data.frames_per_video=20"],
        ),
        "image_size": ("train.py", [*never, "model.input.size=128"]),
        "missing_root": ("train.py", ["data=celebdf", f"data.root={base}/no-such-root", "weights=scratch"]),
        "missing_folder": ("train.py", ["data=celebdf", f"data.root={base}/no-folder", "weights=scratch"]),
        "empty_class": ("train.py", ["data=celebdf", f"data.root={base}/no-fakes", "weights=scratch"]),
        "evil_pickle": (
            "evaluate.py",
            [
                "weights=finetuned",
                f"weights.path={base}/evil.ckpt",
                *data_overrides(small_dataset, base / "evil-cache"),
            ],
        ),
    }
    for copy in ("no-fakes", "no-folder"):
        shutil.copytree(
            small_dataset, base / copy, ignore=shutil.ignore_patterns(".synthetic.json", ".face-cache")
        )
    for video in (base / "no-fakes" / "Celeb-synthesis").iterdir():
        video.unlink()
    shutil.rmtree(base / "no-folder" / "Celeb-synthesis")
    return cases


@pytest.fixture(scope="module")
def failing_runs(request, small_dataset, tmp_path_factory):
    """The runs that must fail, those of the selected tests only, all started at once (each pays ~8 s of
    imports; the cores share them). Returns {case: (exit code, stdout, stderr, work folder)}."""
    import torch

    wanted = {
        item.callspec.params["case"]
        for item in request.session.items
        if "failing_runs" in getattr(item, "fixturenames", ()) and hasattr(item, "callspec")
    }
    base = tmp_path_factory.mktemp("failing")
    cases = _failing_cases(base, small_dataset)
    torch.save({"state_dict": RunsCode(base / "pwned")}, base / "evil.ckpt")
    if "too_many_bad" in wanted:  # in the cache of the bad training run: its failures count as when built
        bad_store, root, _ = request.getfixturevalue("bad_training")
        cases["too_many_bad"] = (
            "train.py",
            [*_bad_data(root, bad_store / "cache"), "weights=scratch", "data.max_bad_fraction=0.1"],
        )
    started = {}
    for case in sorted(wanted):
        script, overrides = cases[case]
        work = base / case
        overrides = [o.replace("{work}", str(work)) for o in overrides]
        started[case] = (
            start_script(
                script,
                [*overrides, f"paths.checkpoint_dir={work}/checkpoints"],
                script_env(work),
                work / "logs",
            ),
            work,
        )
    return {case: (*_finish(process, work / "logs"), work) for case, (process, work) in started.items()}


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unknown_option", "Could not find 'model/nonexistent'"),
        ("misspelled_key", "Could not override 'data.rooot'"),
    ],
)
def test_hydra_rejects_unknown_options_and_misspelled_keys(failing_runs, case, message):
    code, _, stderr, _ = failing_runs[case]
    assert code != 0 and message in stderr, stderr[-2000:]
    assert "Traceback" not in stderr


# each failing run costs ~8 s of CPU for its imports: one of a kind runs in the fast set
@pytest.mark.parametrize(
    ("case", "message"),
    [
        pytest.param(
            "folds", "data.folds=1: k-fold cross-validation needs at least 2 folds", marks=pytest.mark.slow
        ),
        pytest.param("fold", "data.fold=3 is out of range for data.folds=3", marks=pytest.mark.slow),
        pytest.param(
            "frames_per_clip",
            "model.input.frames_per_clip=30 > data.frames_per_video=20",
            marks=pytest.mark.slow,
        ),
        ("image_size", "model.input.size=128: this net has a fixed 256x256 input"),
    ],
)
def test_clashing_values_fail_before_any_data_work(failing_runs, case, message):
    code, _, stderr, work = failing_runs[case]
    assert code != 0 and message in stderr, stderr[-2000:]
    assert not (work / "never-generated").exists(), "the dataset was generated before the check"
    assert not (work / "checkpoints").exists()
    assert not mlflow_runs(work, "train"), "an MLflow run was started before the check"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing_root", "Celeb-DF root not found: {base}/no-such-root"),
        pytest.param(
            "missing_folder",
            "required folder missing: {base}/no-folder/Celeb-synthesis",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            "empty_class", "no fake videos in the train/val split of {base}/no-fakes", marks=pytest.mark.slow
        ),
    ],
)
def test_bad_dataset_folders_fail_with_a_clear_message(failing_runs, case, message):
    code, _, stderr, work = failing_runs[case]
    assert code != 0
    assert message.format(base=work.parent) in stderr, stderr[-2000:]
    assert not mlflow_runs(work, "train"), "a run was started for a dataset that cannot be used"


@pytest.mark.parametrize("case", ["too_many_bad"])
def test_too_many_bad_videos_is_a_clear_failure_naming_them(failing_runs, bad_corpus, case):
    code, _, stderr, work = failing_runs[case]
    root = bad_corpus
    assert code != 0
    line = next((line for line in stderr.splitlines() if "TooManyBadVideos: " in line), "")
    # 26 + 11 videos, less the one a rejected test-list line keeps out of train/val
    assert f"5 of 36 videos under {root} could not be decoded" in line, stderr[-3000:]
    assert "> data.max_bad_fraction=0.1" in line
    named = [rel for rel in BAD_SKIPPED if f"{root / rel}: " in line]
    assert len(named) >= 3, line
    assert not mlflow_runs(work, "train")


@pytest.mark.parametrize("case", ["evil_pickle"])
def test_evil_checkpoint_is_refused_by_evaluate_without_running_its_code(failing_runs, case, tmp_path):
    import torch

    code, _, stderr, work = failing_runs[case]
    evil, marker = work.parent / "evil.ckpt", work.parent / "pwned"
    assert code != 0
    assert f"{evil} is not a loadable checkpoint" in stderr, stderr[-2000:]
    assert not marker.exists(), "loading the checkpoint ran the code in it"
    assert not mlflow_runs(work, "evaluate"), (
        "weights are loaded before a run starts: no run for unusable ones"
    )
    # such a file is really evil: an unsafe load runs it (so the check above can fail)
    torch.save({"state_dict": RunsCode(tmp_path / "pwned")}, tmp_path / "evil.ckpt")
    torch.load(tmp_path / "evil.ckpt", weights_only=False)
    assert (tmp_path / "pwned").read_text() == "pwned"


@pytest.mark.parametrize(
    "override, key",
    [
        ("trainer.precision=8", "trainer.precision"),
        ("data.folds=abc", "data.folds"),
        ("trainer.max_epochs=two", "trainer.max_epochs"),
        ("data.frames_per_video=0", "data.frames_per_video"),
    ],
)
def test_bad_values_fail_before_any_run_starts(override, key, tmp_path):
    result = run_entry_point(
        ["evaluate.py", "weights=scratch", override, f"data.root={tmp_path}/never"],
        tmp_path,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert key in last and "Traceback" not in result.stderr
    assert not mlflow_runs(tmp_path, "evaluate") and not (tmp_path / "never").exists()


# -- signals end runs as KILLED, non-zero; errors as FAILED --------------------------------------------
def _signal_after(
    process: subprocess.Popen, condition, logs: Path, signum: int = signal.SIGTERM, timeout: float = 240
):
    try:
        wait_for(condition, process, timeout, "the moment to signal", logs)
        process.send_signal(signum)
        return process.wait(timeout=120)
    finally:
        kill_group(process)


def test_sigterm_during_training_ends_the_run_killed_with_a_non_zero_status(
    small_dataset, small_cache, tmp_path
):
    env, logs = script_env(tmp_path), tmp_path / "logs"
    checkpoints = tmp_path / "checkpoints"
    process = start_script(
        "train.py",
        [
            "weights=scratch",
            f"paths.checkpoint_dir={checkpoints}",
            "trainer.max_epochs=50",
            "trainer.limit_train_batches=2",
            *data_overrides(small_dataset, small_cache),
        ],
        env,
        logs,
        start_new_session=True,
    )
    code = _signal_after(process, lambda: any(checkpoints.glob("*/run-*/last.ckpt")), logs)
    assert code == 128 + signal.SIGTERM, (logs / "stderr").read_text()[-2000:]
    (run,) = mlflow_runs(tmp_path, "train")
    assert run.info.status == "KILLED" and "SIGTERM" in run.data.tags["error"]


def test_sigterm_during_an_evaluation_sweep_stops_it_and_no_run_stays_running(
    trained_mesonet, small_dataset, small_cache, tmp_path
):
    _, checkpoints = trained_mesonet
    best = next(checkpoints.glob("*/run-*/best-*.ckpt"))
    env, logs = script_env(tmp_path), tmp_path / "logs"
    process = start_script(
        "evaluate.py",
        [
            "-m",
            f"weights.path={best}",
            "augment=none,flip,heavy,jpeg",
            f"hydra.sweep.dir={tmp_path}/sweep",
            *data_overrides(small_dataset, small_cache),
        ],
        env,
        logs,
        start_new_session=True,
    )
    # the sweep folder of job 0 exists once the store was created (before the jobs): polling it is safe then
    code = _signal_after(
        process,
        lambda: (tmp_path / "sweep" / "0").is_dir() and bool(mlflow_runs(tmp_path, "evaluate", "FINISHED")),
        logs,
    )
    assert code == 128 + signal.SIGTERM, (logs / "stderr").read_text()[-2000:]
    runs = mlflow_runs(tmp_path, "evaluate")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert len(runs) < 4, "the sweep went on after SIGTERM"


@pytest.mark.slow  # signals are in make test through training and sweeps: make test-all
def test_sigterm_during_evaluates_cache_build_ends_the_run_killed(small_dataset, tmp_path):
    """The face-crop cache is built inside the run: a signal there must not leave it RUNNING."""
    root = tmp_path / "root"
    shutil.copytree(small_dataset, root, copy_function=os.link)
    env, logs = script_env(tmp_path), tmp_path / "logs"
    process = start_script(
        "evaluate.py",
        ["weights=scratch", *data_overrides(root, tmp_path / "fresh-cache")],
        env,
        logs,
        start_new_session=True,
    )
    code = _signal_after(process, lambda: any((tmp_path / "fresh-cache").rglob("*.json")), logs)
    assert code == 128 + signal.SIGTERM, (logs / "stderr").read_text()[-2000:]
    (run,) = mlflow_runs(tmp_path, "evaluate")
    assert run.info.status == "KILLED"


def test_an_unwritable_artifact_folder_ends_the_run_failed(
    trained_mesonet, small_dataset, small_cache, tmp_path
):
    """An error after the run started (here: the artifact store) marks it FAILED, never RUNNING."""
    if os.geteuid() == 0:
        pytest.skip("root may write to read-only folders")
    _, checkpoints = trained_mesonet
    best = next(checkpoints.glob("*/run-*/best-*.ckpt"))
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir(mode=0o555)
    client.create_experiment("evaluate", artifact_location=artifacts.as_uri())
    result = run_entry_point(
        ["evaluate.py", f"weights.path={best}", *data_overrides(small_dataset, small_cache)],
        tmp_path,
        timeout=300,
    )
    assert result.returncode != 0
    (run,) = mlflow_runs(tmp_path, "evaluate")
    assert run.info.status == "FAILED"
