"""The shortcut audit of a model (run=<evaluate run id>): its statistics on planted score tables, its
errors on runs it cannot audit, and a run end to end on an evaluate run of the small synthetic set."""

from __future__ import annotations

import math
import os
import sys

import mlflow
import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy import stats

from src.data.audit import CATEGORICAL, FEATURES, VideoFeatures
from src.experiments.studies.audit import run_model_audit
from src.experiments.studies.model_audit import (
    MIN_ABS_RHO,
    ORDERED,
    ModelAuditError,
    bootstrap_spearman,
    console_table,
    data_config,
    model_audit_table,
    risky_features,
    spearman_p,
)
from tests.conftest import compose_config, data_overrides


# -- the correlation and its interval ---------------------------------------------------------------------
def test_spearman_and_its_interval_match_scipy():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 12, 80).astype(float)  # ties: average ranks, as scipy
    y = 0.6 * x + rng.normal(0, 3, 80)
    rho, low, high = bootstrap_spearman(x, y, n_boot=400, seed=7)
    assert rho == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert spearman_p(x, y)[1] == pytest.approx(stats.spearmanr(x, y).pvalue, rel=1e-9)
    # the same resamples, each ranked by scipy one at a time
    draws = np.random.default_rng(7).integers(0, x.size, (400, x.size))
    one_by_one = [stats.spearmanr(x[d], y[d]).statistic for d in draws]
    assert (low, high) == pytest.approx(tuple(np.percentile(one_by_one, [2.5, 97.5])), abs=1e-12)
    # and scipy's own bootstrap (other resamples): the same interval up to resampling noise
    other = stats.bootstrap(
        (x, y),
        lambda a, b: stats.spearmanr(a, b).statistic,
        paired=True,
        vectorized=False,
        n_resamples=1000,
        method="percentile",
        random_state=0,
    ).confidence_interval
    assert low == pytest.approx(other.low, abs=0.05) and high == pytest.approx(other.high, abs=0.05)


def test_a_small_class_gets_an_exact_p_value():
    # 3 videos in perfect order: 2 of the 6 orderings are as extreme (scipy's t-approximation says p = 0)
    assert spearman_p([1.0, 2.0, 3.0], [0.1, 0.5, 0.9]) == (1.0, pytest.approx(1 / 3))
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=6), rng.normal(size=6)
    exact = stats.permutation_test(
        (x,),
        lambda a: stats.spearmanr(a, y).statistic,
        permutation_type="pairings",
        n_resamples=np.inf,
    ).pvalue
    assert spearman_p(x, y)[1] == pytest.approx(exact)
    x, y = rng.normal(size=30), rng.normal(size=30)  # larger classes: scipy's p-value
    assert spearman_p(x, y)[1] == stats.spearmanr(x, y).pvalue


def test_the_interval_covers_the_true_rank_correlation_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    pearson = 0.6
    truth = 6 / math.pi * math.asin(pearson / 2)  # Spearman's rho of a bivariate normal
    cover = 0
    for trial in range(150):
        x, y = rng.multivariate_normal([0, 0], [[1, pearson], [pearson, 1]], 40).T
        _, low, high = bootstrap_spearman(x, y, n_boot=500, seed=trial)
        cover += low <= truth <= high
    assert 0.86 <= cover / 150 <= 0.99


def test_no_correlation_of_a_constant_or_of_too_few_values():
    assert all(math.isnan(v) for v in bootstrap_spearman([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0]))
    assert all(math.isnan(v) for v in bootstrap_spearman([1.0, 2.0], [2.0, 1.0]))


# -- planted score tables -----------------------------------------------------------------------------
def table(n: int = 120, seed: int = 0, label_in: str | None = None):
    """Videos with independent standard-normal features (codec constant), half real, half fake; `label_in`:
    one feature shifted with the label (a data shortcut)."""
    rng = np.random.default_rng(seed)
    videos = []
    for i in range(n):
        label = i % 2
        values = {name: float(rng.normal()) for name in FEATURES if name not in CATEGORICAL}
        values["codec"] = "h264"
        if label_in:
            values[label_in] += 2.5 * label
        videos.append(VideoFeatures(f"v{i}.mp4", label, "test", values))
    return videos, rng


def test_a_model_that_follows_a_feature_within_both_classes_is_flagged():
    videos, rng = table()
    logits = {v.path: 3.0 * v.label + v.values["brightness"] + 0.4 * rng.normal() for v in videos}
    rows = model_audit_table(videos, logits, resamples=500)
    assert risky_features(rows) == ["brightness"]
    by = {r.feature: r for r in rows}
    assert by["brightness"].flagged == {"real": True, "fake": True}
    assert by["brightness"].rho["real"].value > 0.8 and by["brightness"].half_auc["fake"].value > 0.8
    # brightness says nothing of the label: the model follows what the labels do not
    assert abs(by["brightness"].label_auc.value - 0.5) < 0.15
    assert [r.feature for r in rows] == ORDERED and "codec" not in ORDERED


def test_following_a_feature_in_one_class_is_enough():
    videos, rng = table()
    # among the reals only, the blurrier the video the more fake it looks
    logits = {
        v.path: 3.0 * v.label + (-v.values["sharpness"] if v.label == 0 else 0.0) + 0.3 * rng.normal()
        for v in videos
    }
    by = {r.feature: r for r in model_audit_table(videos, logits, resamples=500)}
    assert by["sharpness"].flagged == {"real": True, "fake": False}
    assert by["sharpness"].rho["real"].value < -MIN_ABS_RHO and by["sharpness"].rho["real"].high < 0
    assert risky_features(list(by.values())) == ["sharpness"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_independent_of_the_features_flag_nothing(seed):
    videos, rng = table(seed=seed)
    logits = {v.path: 3.0 * v.label + rng.normal() for v in videos}
    rows = model_audit_table(videos, logits, resamples=300)
    assert risky_features(rows) == []
    assert all(abs(r.rho[c].value) < MIN_ABS_RHO for r in rows for c in ("real", "fake"))


def test_a_feature_that_separates_the_labels_is_not_the_model_following_it():
    # noise is a data shortcut (it tells fakes) and the model separates the classes, but within a class
    # the score ignores noise: the pooled correlation is the label's, the within-class one is nothing
    videos, rng = table(label_in="noise")
    logits = {v.path: 3.0 * v.label + rng.normal() for v in videos}
    by = {r.feature: r for r in model_audit_table(videos, logits, resamples=300)}
    values = [v.values["noise"] for v in videos]
    assert stats.spearmanr(values, [logits[v.path] for v in videos]).statistic > 0.5
    assert by["noise"].label_auc.value > 0.9 and not by["noise"].risk


def test_a_weak_dependence_is_not_flagged_even_when_certain():
    videos, rng = table(n=800)
    logits = {v.path: 3.0 * v.label + 0.3 * v.values["face_size"] + rng.normal() for v in videos}
    row = next(r for r in model_audit_table(videos, logits, resamples=200) if r.feature == "face_size")
    assert 0.15 < row.rho["real"].value < MIN_ABS_RHO and row.rho["real"].low > 0  # certain, but weak
    assert not row.risk


def test_the_table_says_what_its_numbers_are():
    videos, rng = table()
    logits = {v.path: v.values["contrast"] + 0.3 * rng.normal() for v in videos}
    text = console_table(model_audit_table(videos, logits, resamples=200))
    assert "Spearman" in text and "WITHIN one class" in text and "95 % bootstrap interval" in text
    assert f"|rho| >= {MIN_ABS_RHO}" in text and "Bonferroni" in text
    header = next(line for line in text.splitlines() if line.startswith("feature"))
    assert "rho real (60)" in header and "label AUC" in header
    (contrast,) = [line for line in text.splitlines() if line.startswith("contrast ")]
    assert contrast.endswith("SHORTCUT") and "!" in contrast


def store():
    """A client of this test's store (mlflow's default URI may still be an earlier test's)."""
    return mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])


# -- the run's data settings, and runs that cannot be audited -----------------------------------------
def test_the_runs_data_settings_with_the_keys_typed_replacing_its_values():
    logged = OmegaConf.create(
        {
            "data": {
                "name": "celebdf",
                "root": "/old",
                "fold": 1,
                "cache_dir": "/older/cache",
                "index": {"_target_": "x", "root": "/old"},  # ${data.root} when it was composed
                "splits_dir": "/old/splits",
            }
        }
    )
    cfg = compose_config("audit", ["data.root=/new/place", "data.fold=2", "run=abc"])
    data = data_config(cfg, logged, ["data.root", "data.fold"])
    assert data.root == "/new/place" and data.fold == 2 and data.name == "celebdf"
    assert data.index.root == "/new/place" and data.splits_dir == "/new/place/splits"  # derived: follow
    assert data.cache_dir == "/older/cache" and cfg.run == "abc"  # not below /old: kept
    assert data_config(cfg, logged, []) == logged.data


def _foreign_runs():
    """A train run and an evaluate run without files, in the test's store."""
    client = store()
    ids = {}
    for experiment, source in (("train", "train.py"), ("evaluate", "evaluate.py")):
        run = client.create_run(client.create_experiment(experiment), tags={"mlflow.source.name": source})
        client.set_terminated(run.info.run_id)
        ids[experiment] = run.info.run_id
    return ids


def test_runs_that_cannot_be_audited_are_refused_in_one_line_and_exit_code_1(tmp_path, monkeypatch, capsys):
    ids = _foreign_runs()  # one store for the whole test: creating one takes seconds
    cases = {
        "0123456789abcdef0123456789abcdef": "no such run in the MLflow store",
        ids["train"]: "is not an evaluate run",
        ids["evaluate"]: "has no video_scores.csv artifact",
    }
    for run_id, message in cases.items():
        cfg = compose_config("audit", [f"run={run_id}", f"audit.output_dir={tmp_path}"])
        with pytest.raises(ModelAuditError, match=message) as error:
            run_model_audit(cfg, [])
        assert "\n" not in str(error.value) and run_id in str(error.value)
    # as a user runs it: the entry point, in this process (a subprocess costs seconds of imports)
    assert audit_command([f"run={ids['evaluate']}"], tmp_path, monkeypatch, capsys) == (
        1,
        [f"Error: ModelAuditError: run={ids['evaluate']} " + str(error.value).split(" ", 1)[1]],
    )


def audit_command(args: list[str], tmp_path, monkeypatch, capsys) -> tuple[int, list[str]]:
    """`python -m src.experiments.studies.audit <args>` in this process: its exit code and its stderr lines."""
    from src.experiments.studies.audit import main

    monkeypatch.setattr(sys, "argv", ["audit", *args, f"hydra.run.dir={tmp_path}/hydra"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        main()
    return exit.value.code, capsys.readouterr().err.strip().splitlines()


# -- end to end ---------------------------------------------------------------------------------------------
def logged_scores_run(dataset, cache, tmp_path) -> str:
    """An evaluate run as evaluate.py records one -- its config.yaml (data.root since moved away) and a
    video_scores.csv -- whose logits follow the file size within each class: a planted shortcut on real
    videos. Every video of the small set is listed, so each class has enough videos to flag."""
    from src.data.indexes.celebdf import index_celebdf

    cfg = compose_config("evaluate", ["weights=scratch", *data_overrides(dataset, cache)])
    cfg.data.root = "/moved/away"
    client = store()
    experiment = client.create_experiment("evaluate")
    run_id = client.create_run(experiment, tags={"mlflow.source.name": "evaluate.py"}).info.run_id
    client.log_text(run_id, OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
    scores = tmp_path / "video_scores.csv"
    with scores.open("w") as f:
        f.write("path,label,logit,p_fake\n")
        for r in index_celebdf(dataset).records:
            logit = 2.0 * r.label + (dataset / r.path).stat().st_size / 1e5
            f.write(f"{r.path},{r.label},{logit!r},{1 / (1 + math.exp(-logit))!r}\n")
    client.log_artifact(run_id, str(scores))
    client.set_terminated(run_id)
    return run_id


def test_audit_of_a_logged_score_table_flags_its_planted_shortcut(
    small_dataset, small_cache, tmp_path, monkeypatch, capsys
):
    run_id = logged_scores_run(small_dataset, small_cache, tmp_path)
    evaluated = store().get_run(run_id)
    out = tmp_path / "audit"
    overrides = [f"run={run_id}", f"audit.output_dir={out}", "audit.bootstrap_resamples=300"]
    cfg = compose_config("audit", [*overrides, f"data.root={small_dataset}"])
    rows = run_model_audit(cfg, ["data.root"])  # the run's data settings, data.root replaced
    by = {r.feature: r for r in rows}
    videos = len(list(small_dataset.glob("*/*.mp4")))
    assert by["file_size"].n["real"] + by["file_size"].n["fake"] == videos
    assert by["file_size"].flagged == {"real": True, "fake": True} and "file_size" in risky_features(rows)
    assert by["file_size"].rho["real"].value == pytest.approx(1.0)
    assert cfg.data.name == "synthetic" and cfg.data.cache_dir == str(small_cache)  # from the run
    table = (out / f"model-{run_id}" / "model_audit.md").read_text()
    assert "| file_size |" in table and "Spearman" in table and "The model follows: file_size" in table

    client = store()
    (audit,) = client.search_runs([client.get_experiment_by_name("audit").experiment_id])
    assert audit.info.status == "FINISHED" and audit.data.tags["audit_kind"] == "model"
    assert audit.data.tags["audited_run"] == run_id and "file_size" in audit.data.tags["shortcut_risks"]
    assert audit.data.metrics["rho/real/file_size"] == pytest.approx(by["file_size"].rho["real"].value)
    assert audit.data.metrics["videos_audited"] == videos
    files = {a.path for a in client.list_artifacts(audit.info.run_id, "audit")}
    assert {"audit/model_audit.md", "audit/model_audit.csv", "audit/scores_features.csv"} <= files
    after = client.get_run(run_id)  # the audited run is left as it was
    assert after.info.status == "FINISHED" and after.info.end_time == evaluated.info.end_time

    # the command with another dataset than the run's: refused in one line
    other = ["data=celebdf", f"data.root={small_dataset}"]
    code, lines = audit_command([*overrides, *other], tmp_path, monkeypatch, capsys)
    assert code == 1 and lines == [
        "Error: ConfigError: data=celebdf with run=: the run's own data settings (synthetic) are audited; "
        "drop data= and replace single keys (data.root=...)"
    ]


@pytest.mark.slow  # an evaluate run first (~40 s on 2 shared cores): make test-all
def test_audit_of_an_evaluate_run(small_dataset, small_cache, tmp_path, capsys):
    """An evaluate run (an untrained MesoNet: the audit reads its scores, whatever they are), audited by id
    with no data= retyped: the features of exactly its test videos, the table, the files and an audit run."""
    from src.experiments.evaluate import evaluate

    evaluate(compose_config("evaluate", ["weights=scratch", *data_overrides(small_dataset, small_cache)]))
    client = store()
    (evaluated,) = client.search_runs([client.get_experiment_by_name("evaluate").experiment_id])
    out = tmp_path / "audit"
    cfg = compose_config(
        "audit", [f"run={evaluated.info.run_id}", f"audit.output_dir={out}", "audit.bootstrap_resamples=300"]
    )
    assert cfg.data.root != str(small_dataset)  # the composed default: the run's own settings must be used
    capsys.readouterr()
    rows = run_model_audit(cfg, [])
    printed = capsys.readouterr().out

    scores = (out / f"model-{evaluated.info.run_id}" / "scores_features.csv").read_text().splitlines()
    tested = evaluated.data.metrics["data/scored_videos"]
    assert len(scores) - 1 == tested and cfg.data.root == str(small_dataset)
    assert [r.feature for r in rows] == ORDERED
    by = {r.feature: r for r in rows}
    assert by["brightness"].n["real"] + by["brightness"].n["fake"] == tested
    assert all(math.isnan(by["fps"].rho[c].value) for c in ("real", "fake"))  # one fps: no rank order
    assert "Spearman" in printed and "rho real" in printed and "The model follows:" in printed
    # classes of at most 6 videos: the exact p-value is at least 2 / 6! > 0.05 / 36, nothing can be flagged
    assert max(by["brightness"].n.values()) <= 6 and risky_features(rows) == []

    experiment = client.get_experiment_by_name("audit")
    (audit,) = client.search_runs([experiment.experiment_id])
    assert audit.info.status == "FINISHED" and audit.data.tags["audit_kind"] == "model"
    assert audit.data.tags["audited_run"] == evaluated.info.run_id and audit.data.tags["data"] == "synthetic"
    if not math.isnan(by["brightness"].rho["fake"].value):
        assert audit.data.metrics["rho/fake/brightness"] == pytest.approx(by["brightness"].rho["fake"].value)
    assert audit.data.metrics["videos_audited"] == tested
    files = {a.path for a in client.list_artifacts(audit.info.run_id, "audit")}
    assert {"audit/model_audit.md", "audit/model_audit.csv", "audit/scores_features.csv"} <= files
    after = client.get_run(evaluated.info.run_id)  # the audited run is left as evaluate.py finished it
    assert after.info.status == "FINISHED" and after.info.end_time == evaluated.info.end_time
