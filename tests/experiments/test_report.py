"""`python -m src.experiments.report` against throwaway MLflow stores filled with evaluate-like runs (tags,
metrics, video_scores.csv artifacts written here; no training): the report of one sweep must show exactly
what was logged, with intervals, replicates, lineage flags and paired comparisons, titled and ordered by the
runs' tags only (and a preset's table shape when one is chosen)."""

from __future__ import annotations

import csv
import dataclasses
import random
import re
from pathlib import Path

import mlflow
import numpy as np
import pytest

from src.experiments.report import collect, comparisons, main, render, tables
from src.experiments.report.collect import collect_cells
from src.experiments.report.records import Cell, ScoredRun
from src.experiments.report.render import plot_robustness, robustness_figure
from src.experiments.report.tables import load_preset, render_tables
from src.utils import stats
from src.utils.errors import ConfigError

SEED_HEADER = ["MesoNet", "MesoNet (finetuned)", "ResNetLSTM", "ResNetLSTM (finetuned)"]
STUDY = load_preset("study")
# the tags evaluate.py writes from conf/model/<name>.yaml and conf/augment/<name>.yaml
MODEL_TITLES = {"mesonet": "MesoNet", "resnet_lstm": "ResNetLSTM", "meso4": "Meso4"}
AUGMENT_TAGS = {
    "none": ("no augmentation", "0"),
    "flip": ("rotation/flip", "1"),
    "heavy": ("heavy augmentation", "2"),
    "jpeg": ("JPEG quality 30-70", "3"),
}
ROW_ORDER = ["Loss", "AUC", "AP", "Accuracy", "EER"]
TITLES = ["Test metrics, no augmentation", "Test metrics, rotation/flip", "Test metrics, heavy augmentation"]
METRIC_OF_ROW = {"Loss": "loss", "AUC": "auc", "AP": "ap", "Accuracy": "acc", "EER": "eer"}
T0 = 1_700_000_000_000  # ms; explicit start times make "newest" unambiguous


class FakeStore:
    """Logs evaluate-like runs (tags, test/* metrics, optionally video_scores.csv) and returns what it logged."""

    def __init__(self, uri: str, tmp: Path):
        self.uri, self.tmp = uri, tmp
        self.client = mlflow.MlflowClient(uri)
        self.experiments: dict[str, str] = {}
        self.rng = random.Random(0)
        self.clock = T0

    def experiment(self, name: str) -> str:
        if name not in self.experiments:
            location = (Path(self.uri.removeprefix("sqlite:///")).parent / "mlruns").as_uri()
            self.experiments[name] = self.client.create_experiment(name, artifact_location=location)
        return self.experiments[name]

    def log(
        self,
        model,
        weights,
        augment,
        data="synthetic",
        sweep=None,
        status="FINISHED",
        tags=None,
        scores=None,
        experiment="evaluate",
        intervals=True,
        extra=None,
    ) -> dict:
        """Random metrics (in (0.05, 0.95): a rounded real value is never "0.000"), or for `scores`
        (rows path, label, p_fake, group) the metrics and intervals stats computes from them. Tagged as
        evaluate.py tags (titles and axis position), `tags` added or overriding; `extra` metrics added."""
        self.clock += 1000
        title, axis = AUGMENT_TAGS[augment]
        all_tags = {
            "model": model,
            "weights": weights,
            "augment": augment,
            "data": data,
            "model_title": MODEL_TITLES[model],
            "augment_title": title,
            "augment_axis": axis,
            **(tags or {}),
        }
        if sweep:
            all_tags["sweep_id"] = sweep
        run = self.client.create_run(self.experiment(experiment), start_time=self.clock, tags=all_tags)
        run_id = run.info.run_id
        if scores is None:
            metrics = {
                f"test/{lvl}_{m}": self.rng.uniform(0.05, 0.95)
                for lvl in ("video", "frame")
                for m in stats.METRICS
            }
            if intervals:
                for m in stats.METRICS:
                    value = metrics[f"test/video_{m}"]
                    metrics[f"test/video_{m}_ci_low"] = value - self.rng.uniform(0.01, 0.04)
                    metrics[f"test/video_{m}_ci_high"] = value + self.rng.uniform(0.01, 0.04)
        else:
            probs, labels = [r[2] for r in scores], [r[1] for r in scores]
            values = stats.video_metrics(probs, labels)
            ci = stats.bootstrap_intervals(probs, labels, groups=[r[3] for r in scores], n_boot=200)
            metrics = {f"test/video_{m}": v for m, v in values.items()}
            metrics.update({f"test/video_{m}_ci_low": ci[m][0] for m in stats.METRICS})
            metrics.update({f"test/video_{m}_ci_high": ci[m][1] for m in stats.METRICS})
            folder = self.tmp / run_id
            folder.mkdir(parents=True)
            with (folder / "video_scores.csv").open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["path", "label", "logit", "p_fake", "group"])
                for path, label, prob, group in scores:
                    writer.writerow([path, label, repr(float(np.log(prob / (1 - prob)))), repr(prob), group])
            self.client.log_artifact(run_id, str(folder / "video_scores.csv"))
        metrics.update(extra or {})
        self.client.log_batch(
            run_id, metrics=[mlflow.entities.Metric(k, v, self.clock, 0) for k, v in metrics.items()]
        )
        self.client.set_terminated(run_id, status, end_time=self.clock + 500)
        return {"run_id": run_id, **metrics}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One populated store for the module (creating a sqlite store costs seconds, so share it).

    sweep-a (older): the seed grid minus ResNetLSTM (finetuned) under heavy augmentation, with intervals.
    sweep-b (newer, the latest): MesoNet none, Meso4 none/flip (an extra model), a celebdf run; no intervals.
    single runs (no sweep): a MesoNet scratch run and a newer FAILED run, which no sweep report shows.
    experiment evaluate-single: runs outside any sweep only (the fallback).
    """
    folder = tmp_path_factory.mktemp("report-store")
    uri = f"sqlite:///{folder}/mlflow.db"
    fake = FakeStore(uri, folder / "files")
    logged: dict[str, dict] = {"sweep-a": {}, "sweep-b": {}, "single": {}}
    for model in ("mesonet", "resnet_lstm"):
        for weights in ("pretrained", "finetuned"):
            for augment in ("none", "flip", "heavy"):
                if (model, weights, augment) == ("resnet_lstm", "finetuned", "heavy"):
                    continue
                logged["sweep-a"][(model, weights, augment)] = fake.log(
                    model, weights, augment, sweep="sweep-a"
                )
    for cell in (
        ("mesonet", "pretrained", "none"),
        ("meso4", "pretrained", "none"),
        ("meso4", "pretrained", "flip"),
    ):
        logged["sweep-b"][cell] = fake.log(*cell, sweep="sweep-b", intervals=False)
    logged["celebdf"] = {
        ("mesonet", "pretrained", "none"): fake.log(
            "mesonet", "pretrained", "none", data="celebdf", sweep="sweep-b", intervals=False
        )
    }
    fake.log("mesonet", "scratch", "heavy")
    fake.log("mesonet", "finetuned", "flip", sweep="sweep-b", tags={"debug": "fdr"})  # reports leave it out
    fake.log("mesonet", "finetuned", "none", sweep="sweep-b", status="FAILED")  # newest, but not finished
    for augment in ("none", "flip"):
        fake.log("mesonet", "pretrained", augment, experiment="evaluate-single")
        logged["single"][("mesonet", "pretrained", augment)] = fake.log(
            "mesonet", "pretrained", augment, experiment="evaluate-single"
        )  # re-run: replaces the first
    return uri, logged


@pytest.fixture
def use_store(store, monkeypatch):
    """Point MLFLOW_TRACKING_URI at the fake store, as `make report` would."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store[0])
    return store


def parse_report(markdown: str) -> dict[str, dict[str, tuple[list[str], dict[str, dict[str, str]]]]]:
    """{data: {table title: (column names, {row: {column: cell}})}} of the metric tables (the `## Data:`
    sections; other sections are skipped), checking the rows' order on the way."""
    parsed: dict = {}
    data = title = None
    for line in markdown.splitlines():
        if line.startswith("## "):
            data = line.removeprefix("## Data: ").strip() if line.startswith("## Data: ") else None
            title = None
            if data is not None:
                parsed[data] = {}
        elif line.startswith("### ") and data is not None:
            title = line.removeprefix("### ").strip()
            parsed[data][title] = ([], {})
        elif line.startswith("|") and title is not None:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            header, rows = parsed[data][title]
            if not header:
                header.extend(cells[1:])
            elif not set(cells[0]) <= set(":-"):
                rows[cells[0]] = dict(zip(header, cells[1:], strict=True))
    for section in parsed.values():
        for _, rows in section.values():
            assert list(rows) == ROW_ORDER
    return parsed


def expected_cell(metrics: dict | None, row: str, level: str = "video") -> str:
    if metrics is None:
        return "–"
    key = f"test/{level}_{METRIC_OF_ROW[row]}"
    text = f"{metrics[key]:.3f}"
    if f"{key}_ci_low" in metrics:
        text += f" [{metrics[f'{key}_ci_low']:.2f}, {metrics[f'{key}_ci_high']:.2f}]"
    return text


def check_table(table, cells: dict, augment: str, columns: dict[str, tuple[str, str]], level: str = "video"):
    """Every cell equals the logged metric to 3 decimals with its interval to 2, or "–" where nothing was logged."""
    header, rows = table
    for name, (model, weights) in columns.items():
        metrics = cells.get((model, weights, augment))
        for row in ROW_ORDER:
            assert rows[row][name] == expected_cell(metrics, row, level), (augment, name, row)


ALL_COLUMNS = {
    "MesoNet": ("mesonet", "pretrained"),
    "MesoNet (finetuned)": ("mesonet", "finetuned"),
    "ResNetLSTM": ("resnet_lstm", "pretrained"),
    "ResNetLSTM (finetuned)": ("resnet_lstm", "finetuned"),
    "MesoNet (untrained)": ("mesonet", "scratch"),
    "Meso4": ("meso4", "pretrained"),
}


def test_cells_print_the_value_and_its_interval(store):
    """`0.893 [0.71, 1.00]` from test/video_<m> and its _ci_low/_ci_high; columns in the sweep's order."""
    uri, logged = store
    markdown = render_tables(collect_cells(uri, sweep_id="sweep-a"))
    assert re.search(r"\| \d\.\d{3} \[\d\.\d\d, \d\.\d\d\] \|", markdown)
    parsed = parse_report(markdown)
    for title, augment in zip(TITLES, ("none", "flip", "heavy"), strict=True):
        table = parsed["synthetic"][title]
        assert table[0] == SEED_HEADER
        check_table(table, logged["sweep-a"], augment, {k: ALL_COLUMNS[k] for k in SEED_HEADER})
    assert parsed["synthetic"][TITLES[2]][1]["AUC"]["ResNetLSTM (finetuned)"] == "–"
    # frame level has no intervals: bare values
    frame = parse_report(render_tables(collect_cells(uri, sweep_id="sweep-a"), level="frame"))
    check_table(
        frame["synthetic"][TITLES[0]],
        logged["sweep-a"],
        "none",
        {k: ALL_COLUMNS[k] for k in SEED_HEADER},
        level="frame",
    )
    assert "[" not in frame["synthetic"][TITLES[0]][1]["AUC"]["MesoNet"]


def test_debugging_runs_are_left_out(store):
    uri, _ = store
    cells = {(c.model, c.weights, c.augment) for c in collect_cells(uri, sweep_id="sweep-b")}
    assert ("mesonet", "pretrained", "none") in cells and ("mesonet", "finetuned", "flip") not in cells


def test_default_is_the_latest_sweep_only(store):
    """Without a sweep id: the sweep of the newest finished sweep run; older sweeps and single runs stay out.
    Tables only for the levels with runs, columns only those with runs."""
    uri, logged = store
    assert collect.latest_sweep(uri) == "sweep-b"
    results = collect_cells(uri)
    assert {c.sweep_id for c in results} == {"sweep-b"}
    assert {(c.model, c.weights, c.augment) for c in results if c.data == "synthetic"} == set(
        logged["sweep-b"]
    )
    parsed = parse_report(render_tables(results))
    assert list(parsed) == ["celebdf", "synthetic"]
    assert list(parsed["synthetic"]) == TITLES[:2] and list(parsed["celebdf"]) == TITLES[:1]
    for title, augment in zip(TITLES[:2], ("none", "flip"), strict=True):
        table = parsed["synthetic"][title]
        assert table[0] == ["MesoNet", "Meso4"]  # no scratch column: that run is not in the sweep
        check_table(table, logged["sweep-b"], augment, {k: ALL_COLUMNS[k] for k in table[0]})
    assert parsed["celebdf"][TITLES[0]][0] == ["MesoNet"]
    check_table(parsed["celebdf"][TITLES[0]], logged["celebdf"], "none", {"MesoNet": ALL_COLUMNS["MesoNet"]})
    assert collect.latest_sweep(uri, data="celebdf") == "sweep-b"


def test_the_study_preset_shows_its_four_columns_first_even_without_runs(store):
    """conf/report/study.yaml: the seed's four columns in its order, – where nothing was scored (the FAILED
    run of sweep-b made no MesoNet (finetuned) cell), other columns with runs after them."""
    uri, logged = store
    assert STUDY.columns == (
        ("mesonet", "pretrained"),
        ("mesonet", "finetuned"),
        ("resnet_lstm", "pretrained"),
        ("resnet_lstm", "finetuned"),
    )
    parsed = parse_report(render_tables(collect_cells(uri), preset=STUDY))
    for title, augment in zip(TITLES[:2], ("none", "flip"), strict=True):
        table = parsed["synthetic"][title]
        assert table[0] == SEED_HEADER + ["Meso4"]
        check_table(table, logged["sweep-b"], augment, {k: ALL_COLUMNS[k] for k in SEED_HEADER + ["Meso4"]})
    assert parsed["synthetic"][TITLES[0]][1]["AUC"]["MesoNet (finetuned)"] == "–"
    check_table(
        parsed["celebdf"][TITLES[0]], logged["celebdf"], "none", {k: ALL_COLUMNS[k] for k in SEED_HEADER}
    )


def test_presets_are_checked_and_named_in_errors(tmp_path, monkeypatch, capsys):
    """An unknown preset names --preset and the presets there are; a malformed one names the file and entry."""
    assert main(["--preset", "no-such-preset", "--no-log"]) == 1
    message = capsys.readouterr().err
    assert "--preset='no-such-preset'" in message and "study" in message
    monkeypatch.setattr(tables, "PRESET_DIR", tmp_path)
    (tmp_path / "broken.yaml").write_text(
        "columns:\n  - {model: mesonet, weights: pretrained}\n  - {model: mesonet}\n"
    )
    with pytest.raises(ConfigError, match=r"broken.yaml: columns\[1\]="):
        load_preset("broken")
    (tmp_path / "empty.yaml").write_text("columns: []\n")
    with pytest.raises(ConfigError, match=r"empty.yaml: columns=\[\]"):
        load_preset("empty")


def test_without_sweeps_the_latest_run_per_cell_is_reported(store):
    uri, logged = store
    results = collect_cells(uri, experiment="evaluate-single")
    assert len(results) == 2 and all(len(c.runs) == 1 and c.sweep_id is None for c in results)
    parsed = parse_report(render_tables(results))
    check_table(
        parsed["synthetic"][TITLES[1]], logged["single"], "flip", {"MesoNet": ("mesonet", "pretrained")}
    )


def test_main_writes_reports_folder_of_the_sweep_prints_and_logs(use_store, tmp_path, monkeypatch, capsys):
    """Default: reports/<latest sweep>/ under the project root with report.md, report.html (chart embedded,
    for MLflow's artifact viewer) and robustness.png; the same files logged as a `report` run."""
    uri, logged = use_store
    monkeypatch.setattr(render, "REPORTS_DIR", tmp_path / "reports")
    assert main([]) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "reports" / "sweep-b"
    assert f"Wrote {out / 'report.md'}" in printed and "### Test metrics, no augmentation" in printed
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "sweep-b" in markdown.splitlines()[0]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<table>" in page and "data:image/png;base64," in page and "![" not in page
    assert (out / "robustness.png").read_bytes()[:4] == b"\x89PNG"

    run_id = re.search(r"Logged MLflow run (\w+)", printed).group(1)
    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == "report"
    assert run.data.tags["kind"] == "report" and run.data.tags["sweep_id"] == "sweep-b"
    assert run.info.status == "FINISHED"
    assert {"report.md", "report.html", "robustness.png"} <= {a.path for a in client.list_artifacts(run_id)}
    store_dir = Path(uri.removeprefix("sqlite:///")).parent
    assert run.info.artifact_uri.startswith(store_dir.as_uri())  # not into the working directory


def test_sweep_option_picks_another_sweep(use_store, tmp_path, monkeypatch, capsys):
    """--sweep-id (make report SWEEP=...) reports that sweep into reports/<id>/; --out overrides the folder."""
    uri, logged = use_store
    monkeypatch.setattr(render, "REPORTS_DIR", tmp_path / "reports")
    assert main(["--sweep-id", "sweep-a", "--no-log", "--preset", "study"]) == 0
    markdown = (tmp_path / "reports" / "sweep-a" / "report.md").read_text(encoding="utf-8")
    assert "preset `study`" in markdown
    check_table(
        parse_report(markdown)["synthetic"][TITLES[1]],
        logged["sweep-a"],
        "flip",
        {k: ALL_COLUMNS[k] for k in SEED_HEADER},
    )
    assert "Logged MLflow run" not in capsys.readouterr().out
    assert main(["--sweep-id", "sweep-a", "--no-log", "--out", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "report.html").exists()


def test_no_log_and_data_filter(use_store, tmp_path, capsys):
    """--no-log logs nothing; --data keeps one section."""
    uri, _ = use_store
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("report")
    before = len(client.search_runs([experiment.experiment_id])) if experiment else 0
    assert main(["--data", "celebdf", "--level", "frame", "--no-log", "--out", str(tmp_path)]) == 0
    assert list(parse_report((tmp_path / "report.md").read_text(encoding="utf-8"))) == ["celebdf"]
    assert "Logged MLflow run" not in capsys.readouterr().out
    experiment = client.get_experiment_by_name("report")
    assert (len(client.search_runs([experiment.experiment_id])) if experiment else 0) == before


def test_robustness_chart_is_png_with_a_title_naming_data_and_sweep(store, tmp_path):
    uri, _ = store
    for name, results in (
        ("one.png", collect_cells(uri, sweep_id="sweep-a")),
        ("all.png", collect_cells(uri)),
    ):
        path = plot_robustness(results, tmp_path / name, sweep_id="sweep-a")
        content = path.read_bytes()
        assert content[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(content) > 1024
    title = render.chart_title("video", "celebdf", "2024-05-01_12-00-00")
    assert "celebdf" in title and "2024-05-01_12-00-00" in title


def test_unknown_sweep_exits_1_with_hint(use_store, capsys):
    """A sweep id with no runs names the store and the sweeps that do exist."""
    uri, _ = use_store
    assert main(["--sweep-id", "no-such-sweep", "--no-log"]) == 1
    message = capsys.readouterr().err
    assert "No finished evaluate runs" in message and uri in message
    assert "sweep-b, sweep-a" in message


def test_empty_store_exits_1(tmp_path, monkeypatch, capsys):
    """No runs at all: exit code 1, a message naming store, experiment and the command; no db file made."""
    uri = f"sqlite:///{tmp_path}/empty/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main(["--no-log"]) == 1
    message = capsys.readouterr().err
    assert uri in message and "'evaluate'" in message and "python evaluate.py -m" in message
    assert not (tmp_path / "empty" / "mlflow.db").exists()
    assert collect_cells(uri) == []


def result_of(model, weights, augment, start, data="d", **tags) -> Cell:
    """A cell as collect_cells makes it, one run with an AUC of 0.8 and the given tags."""
    run = ScoredRun(
        run_id=f"{model}-{weights}-{augment}",
        tags={"model": model, "weights": weights, "augment": augment, **tags},
        metrics={"test/video_auc": 0.8},
        start_time=start,
    )
    return Cell(model, weights, augment, data, sweep_id="s", runs=[run])


def test_a_new_model_and_perturbation_sort_and_title_from_their_tags():
    """No list names `blur` or `newnet`: the tables follow augment_axis and augment_title, the columns the
    runs' start order and model_title."""
    results = [
        result_of(
            "newnet",
            "pretrained",
            "heavy",
            1,
            model_title="NewNet-X",
            augment_title="heavy augmentation",
            augment_axis="2",
        ),
        result_of(
            "newnet",
            "pretrained",
            "blur",
            2,
            model_title="NewNet-X",
            augment_title="Gaussian blur",
            augment_axis="1",
        ),
        result_of(
            "newnet",
            "pretrained",
            "none",
            3,
            model_title="NewNet-X",
            augment_title="no augmentation",
            augment_axis="0",
        ),
        result_of(
            "mesonet",
            "scratch",
            "none",
            4,
            model_title="MesoNet",
            augment_title="no augmentation",
            augment_axis="0",
        ),
        result_of(
            "mesonet",
            "finetuned",
            "blur",
            5,
            model_title="MesoNet",
            augment_title="Gaussian blur",
            augment_axis="1",
            source_weights="pretrained",
        ),
    ]
    assert collect.augment_levels(results) == ["none", "blur", "heavy"]
    parsed = parse_report(render_tables(results))["d"]
    assert list(parsed) == [
        "Test metrics, no augmentation",
        "Test metrics, Gaussian blur",
        "Test metrics, heavy augmentation",
    ]
    assert parsed["Test metrics, Gaussian blur"][0] == [
        "NewNet-X",
        "MesoNet (untrained)",
        "MesoNet (finetuned)",
    ]
    assert parsed["Test metrics, Gaussian blur"][1]["AUC"] == {
        "NewNet-X": "0.800",
        "MesoNet (untrained)": "–",
        "MesoNet (finetuned)": "0.800",
    }
    # a store from before the title tags: the tags themselves, levels by name
    old = [
        result_of("resnet_lstm", "pretrained", "none", 1),
        result_of("resnet_lstm", "pretrained", "flip", 2),
    ]
    assert list(parse_report(render_tables(old))["d"]) == ["Test metrics, flip", "Test metrics, none"]
    assert parse_report(render_tables(old))["d"]["Test metrics, none"][0] == ["resnet_lstm"]


def test_the_chart_has_a_tick_per_level_with_runs_only():
    """A sweep over augment=none,heavy: two ticks, no empty rotation/flip between them."""
    results = [
        result_of(
            "mesonet",
            "pretrained",
            augment,
            index,
            augment_title=AUGMENT_TAGS[augment][0],
            augment_axis=AUGMENT_TAGS[augment][1],
        )
        for index, augment in enumerate(("heavy", "none"))
    ]
    (axes,) = robustness_figure(results).axes
    assert [label.get_text() for label in axes.get_xticklabels()] == ["no augmentation", "heavy augmentation"]


# -- one study sweep with scores: replicates, lineage, titles from tags, paired comparisons ---------------------
N_VIDEOS = 40
STUDY_AUGMENT_TAGS = {
    "none": ("none", "0"),
    "flip": ("rotation/flip", "1"),
    "jpeg": ("JPEG q=30", "1.5"),
    "heavy": ("heavy", "2"),
}


def video_rows(probs) -> list[tuple[str, int, float, str]]:
    """(path, label, p_fake, group): 20 real then 20 fake videos of 8 identities."""
    rows = []
    for i, prob in enumerate(probs):
        label = int(i >= N_VIDEOS // 2)
        path = (
            f"Celeb-synthesis/id{i % 8}_id{(i + 3) % 8}_{i:04d}.mp4"
            if label
            else f"Celeb-real/id{i % 8}_{i:04d}.mp4"
        )
        rows.append((path, label, float(prob), f"id{i % 8}"))
    return rows


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Sweep `study`: MesoNet pretrained (none, flip, jpeg, heavy: heavy destroys it), MesoNet finetuned in three
    train_seed replicates (robust to heavy), ResNetLSTM pretrained (chance), ResNetLSTM trained from scratch whose
    none and flip runs scored different checkpoints, Meso4 untrained titled by a model_title tag."""
    folder = tmp_path_factory.mktemp("study-store")
    uri = f"sqlite:///{folder}/mlflow.db"
    fake = FakeStore(uri, folder / "files")
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], N_VIDEOS // 2)
    strong = 1 / (1 + np.exp(-(rng.normal(size=N_VIDEOS) + 2.5 * labels)))
    chance = rng.random(N_VIDEOS)

    def jitter(probs, seed):
        return np.clip(probs + np.random.default_rng(seed).normal(0, 0.01, probs.size), 1e-4, 1 - 1e-4)

    logged: dict = {}

    def log(model, weights, augment, probs, **tags):
        title, axis = STUDY_AUGMENT_TAGS[augment]
        run = fake.log(
            model,
            weights,
            augment,
            sweep="study",
            scores=video_rows(probs),
            tags={"augment_title": title, "augment_axis": axis, **tags},
        )
        logged.setdefault((model, weights, augment), []).append(run)

    weights_file = {"initial_weights": "MesoInception_DF.h5 sha256:abc"}
    for augment, probs in (
        ("none", strong),
        ("flip", jitter(strong, 1)),
        ("jpeg", jitter(strong, 2)),
        ("heavy", chance),
    ):
        log("mesonet", "pretrained", augment, probs, **weights_file)
    for seed in (1, 2, 3):
        for augment in ("none", "flip", "heavy"):
            log(
                "mesonet",
                "finetuned",
                augment,
                jitter(strong, 10 * seed + len(augment)),
                train_seed=str(seed),
                source_run_id=f"train-{seed}",
                source_weights="pretrained",
            )
    log("resnet_lstm", "pretrained", "none", chance, initial_weights="torchvision resnet50 sha256:def")
    log(
        "resnet_lstm",
        "pretrained",
        "flip",
        jitter(chance, 3),
        initial_weights="torchvision resnet50 sha256:def",
    )
    log("resnet_lstm", "finetuned", "none", strong, source_run_id="train-x", source_weights="scratch")
    log("resnet_lstm", "finetuned", "flip", strong, source_run_id="train-y", source_weights="scratch")
    log("meso4", "scratch", "none", chance, model_title="Meso-4")
    results = collect_cells(uri)
    return uri, logged, results


def test_titles_and_level_order_come_from_the_runs_tags(study):
    uri, logged, results = study
    parsed = parse_report(render_tables(results))["synthetic"]
    assert list(parsed) == [
        "Test metrics, none",
        "Test metrics, rotation/flip",
        "Test metrics, JPEG q=30",
        "Test metrics, heavy",
    ]
    header = parsed["Test metrics, none"][0]
    assert header == [
        "MesoNet",
        "MesoNet (finetuned)",
        "ResNetLSTM",
        "ResNetLSTM (trained from scratch) ⚠",
        "Meso-4 (untrained)",
    ]
    assert [collect.augment_title(a, results) for a in collect.augment_levels(results)] == [
        "none",
        "rotation/flip",
        "JPEG q=30",
        "heavy",
    ]


def test_replicates_are_aggregated_as_mean_and_sd(study):
    uri, logged, results = study
    parsed = parse_report(render_tables(results))["synthetic"]
    for row, metric in METRIC_OF_ROW.items():
        values = [run[f"test/video_{metric}"] for run in logged[("mesonet", "finetuned", "flip")]]
        mean, sd = stats.mean_sd(values)
        assert (
            parsed["Test metrics, rotation/flip"][1][row]["MesoNet (finetuned)"]
            == f"{mean:.3f} ± {sd:.3f} (n=3)"
        )
    # a single run keeps its interval
    single = logged[("mesonet", "pretrained", "flip")][0]
    assert parsed["Test metrics, rotation/flip"][1]["AUC"]["MesoNet"] == expected_cell(single, "AUC")


def test_a_column_scored_with_different_checkpoints_is_flagged(study, tmp_path):
    uri, logged, results = study
    flags = collect.lineage_flags(results)
    assert [(f.model, f.weights) for f in flags] == [("resnet_lstm", "finetuned")]
    assert main(["--tracking-uri", uri, "--sweep-id", "study", "--no-log", "--out", str(tmp_path)]) == 0
    markdown = (tmp_path / "report.md").read_text(encoding="utf-8")
    checks = markdown.split("## Checks", 1)[1].split("## Data:", 1)[0]
    note = next(line for line in checks.splitlines() if "ResNetLSTM (trained from scratch)" in line)
    for augment, source in (("none", "train-x"), ("flip", "train-y")):
        assert logged[("resnet_lstm", "finetuned", augment)][0]["run_id"] in note and source in note
    assert "MesoNet" not in checks  # replicates with their own checkpoints, the same at every level: no flag


def comparison(rows, column, label):
    (row,) = [r for r in rows if r.column == column and r.label == label]
    return row.difference if row.difference is not None else row.reason


def test_paired_comparisons_mark_only_differences_beyond_noise(study, tmp_path):
    uri, logged, results = study
    rows = comparisons.paired_comparisons(results, comparisons.ScoreFiles(uri, tmp_path))
    heavy = comparison(rows, "MesoNet", "heavy − none")
    expected = (
        logged[("mesonet", "pretrained", "heavy")][0]["test/video_auc"]
        - logged[("mesonet", "pretrained", "none")][0]["test/video_auc"]
    )
    assert heavy.diff == pytest.approx(expected, abs=1e-9) and heavy.videos == N_VIDEOS
    assert heavy.excludes_zero and heavy.high < 0
    for label in ("rotation/flip − none", "JPEG q=30 − none"):
        assert not comparison(rows, "MesoNet", label).excludes_zero
    for seed in (1, 2, 3):
        assert not comparison(rows, "MesoNet (finetuned)", f"heavy − none (train_seed={seed})").excludes_zero
        robust = comparison(rows, "MesoNet (finetuned)", f"finetuned − pretrained, heavy (train_seed={seed})")
        assert robust.excludes_zero and robust.low > 0
        assert not comparison(
            rows, "MesoNet (finetuned)", f"finetuned − pretrained, none (train_seed={seed})"
        ).excludes_zero
    assert comparison(rows, "ResNetLSTM (trained from scratch)", "finetuned − pretrained, none").excludes_zero
    assert "mixed checkpoints" in comparison(
        rows, "ResNetLSTM (trained from scratch)", "rotation/flip − none"
    )

    markdown = comparisons.render_comparisons(rows)
    table = {
        tuple(cells[:2]): cells[2:]
        for cells in (
            [c.strip() for c in line.strip().strip("|").split("|")]
            for line in markdown.splitlines()
            if line.startswith("|")
        )
    }
    assert table[("MesoNet", "heavy − none")] == [
        f"{heavy.diff:+.3f} [{heavy.low:+.2f}, {heavy.high:+.2f}] *",
        "40",
    ]
    assert not table[("MesoNet", "rotation/flip − none")][0].endswith("*")
    assert table[("ResNetLSTM (trained from scratch)", "rotation/flip − none")][0].startswith(
        "– (not compared"
    )
    assert "*: the interval excludes 0" in markdown


def test_comparisons_join_on_path_and_say_when_scores_are_missing(study, tmp_path):
    """Only videos scored by both runs are paired; a run without video_scores.csv gives a reason, not a number."""
    uri = study[0]
    fake = FakeStore(uri, tmp_path / "files")
    rng = np.random.default_rng(1)
    rows = video_rows(rng.random(N_VIDEOS))
    fake.log("mesonet", "pretrained", "none", sweep="s", scores=rows, experiment="evaluate-join")
    fake.log(
        "mesonet",
        "pretrained",
        "flip",
        sweep="s",
        scores=list(reversed(rows[1:-1])),  # 38, another order
        experiment="evaluate-join",
    )
    fake.log("resnet_lstm", "pretrained", "none", sweep="s", experiment="evaluate-join")
    fake.log("resnet_lstm", "pretrained", "flip", sweep="s", experiment="evaluate-join")
    results = collect_cells(uri, experiment="evaluate-join")
    compared = comparisons.paired_comparisons(results, comparisons.ScoreFiles(uri, tmp_path / "dl"))
    same = comparison(compared, "MesoNet", "rotation/flip − no augmentation")
    assert same.videos == N_VIDEOS - 2 and same.diff == 0.0
    assert "no video_scores.csv" in comparison(compared, "ResNetLSTM", "rotation/flip − no augmentation")


def test_the_deployment_section_shows_operating_points_and_a_subset_table(tmp_path):
    """Operating points per run (– where a run has no validation threshold) and per augment level a table of
    the subsets, in grouping order and face sizes by size, each AUC row saying what a one-class subset is
    ranked against; nothing of it at frame level or for runs that logged none of these metrics."""
    from src.experiments.report.deployment import render_deployment

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    fake = FakeStore(uri, tmp_path / "files")

    def subset(grouping, value, videos, fakes, auc, acc, at_threshold=None):
        prefix = f"test/subset/{grouping}/{value}/"
        values = {"videos": videos, "fake_videos": fakes, "video_auc": auc, "video_acc": acc}
        values.update({"video_auc_ci_low": auc - 0.1, "video_auc_ci_high": auc + 0.05})
        values.update({"video_acc_ci_low": acc - 0.2, "video_acc_ci_high": acc})
        if at_threshold is not None:
            values["video_acc_val_threshold"] = at_threshold
        return {prefix + key: value for key, value in values.items()}

    pretrained = {
        "test/video_ece": 0.123,
        "test/video_tpr_fpr01": 0.25,
        "test/video_tpr_fpr01_ci_low": 0.1,
        "test/video_tpr_fpr01_ci_high": 0.4,
        "test/video_tpr_fpr05": 0.5,
        **subset("face_size", "128-256px", 6, 3, 0.7, 0.5),
        **subset("face_size", "64-128px", 4, 2, 0.6, 0.25),
        **subset("source", "Celeb-real", 5, 0, 0.8, 0.6),
        **subset("source", "Celeb-synthesis", 5, 5, 0.75, 0.4),
    }
    finetuned = {
        **pretrained,
        "val/video_threshold": 0.4321,
        "test/video_acc_val_threshold": 0.9,
        **subset("source", "Celeb-real", 5, 0, 0.95, 1.0, at_threshold=0.8),
    }
    fake.log("mesonet", "pretrained", "none", sweep="s", extra=pretrained)
    fake.log("mesonet", "finetuned", "none", sweep="s", extra=finetuned)
    fake.log("mesonet", "finetuned", "flip", sweep="s")  # a run that logged none of these metrics
    results = collect_cells(uri, sweep_id="s")
    text = render_deployment(results)
    lines = text.splitlines()

    def cells(line: str) -> list[str]:
        return [cell.strip() for cell in line.strip().strip("|").split("|")]

    operating = [cells(line) for line in lines if line.startswith("| MesoNet")]
    assert operating[0] == [
        "MesoNet",
        "no augmentation",
        "0.123",
        "0.250 [0.10, 0.40]",
        "0.500",
        "–",
        "–",
    ]  # pretrained: no validation threshold
    assert operating[1][:2] == ["MesoNet (finetuned)", "no augmentation"] and operating[1][5:] == [
        "0.432",
        "0.900",
    ]
    assert operating[2][2:] == ["–"] * 5  # the flip run logged none of them
    table_start = lines.index("### Subsets, data synthetic, no augmentation")
    assert "### Subsets, data synthetic, rotation/flip" not in lines  # no subsets at that level
    rows = [cells(line) for line in lines[table_start + 2 :] if line]
    header, body = rows[0], rows[2:]
    assert header == ["Subset", "Videos", "Metric", "MesoNet", "MesoNet (finetuned)"]
    assert [row[0] for row in body if row[0]] == [
        "source: Celeb-real",
        "source: Celeb-synthesis",
        "face_size: 64-128px",
        "face_size: 128-256px",
    ]
    real = body[0:3]
    assert real[0][1:] == ["5 (0 fake)", "AUC vs all test fakes", "0.800 [0.70, 0.85]", "0.950 [0.85, 1.00]"]
    assert real[1][2:] == ["Accuracy at 0.5", "0.600 [0.40, 0.60]", "1.000 [0.80, 1.00]"]
    assert real[2][2:] == ["Accuracy at val threshold", "–", "0.800"]
    assert body[3][2] == "AUC vs all test reals" and body[6][2] == "AUC"
    document = render.build_document(
        results, [], tracking_uri=uri, experiment="evaluate", sweep_id="s", level="video"
    )
    assert "## Deployment: calibration, operating points, subsets" in document
    assert parse_report(document)  # the metric tables still parse, rows in the seed's order
    frame = render.build_document(
        results, [], tracking_uri=uri, experiment="evaluate", sweep_id="s", level="frame"
    )
    assert "## Deployment" not in frame
    assert render_deployment([c for c in results if c.augment == "flip"]) == ""


def test_the_cross_dataset_table_puts_test_sets_in_columns_beside_published_numbers():
    """experiment=cross_dataset's runs: one row per model, the preset's test-set order, video and frame AUC
    with intervals, and the published column quoting only the numbers the preset lists, with their source."""
    from src.experiments.report.cross_dataset import NOT_QUOTED, render_cross_dataset
    from src.experiments.report.tables import load_preset

    def scored(data, video, frame):
        result = result_of("mesonet", "finetuned", "none", 1, data=data, model_title="MesoNet")
        metrics = {
            "test/video_auc": video,
            "test/video_auc_ci_low": video - 0.1,
            "test/video_auc_ci_high": video + 0.05,
            "test/frame_auc": frame,
            "test/frame_auc_ci_low": frame - 0.2,
            "test/frame_auc_ci_high": frame + 0.1,
        }
        result.runs[0] = dataclasses.replace(result.runs[0], metrics=metrics)
        return result

    preset = load_preset("cross_dataset")
    results = [scored("uadfv", 0.61, 0.58), scored("ffpp", 0.93, 0.88), scored("celebdf", 0.7, 0.66)]
    perturbed = result_of("mesonet", "finetuned", "heavy", 2, data="celebdf")  # not a cross-dataset cell
    text = render_cross_dataset([*results, perturbed], preset)
    header = next(line for line in text.splitlines() if line.startswith("| model"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["model", "level", "ffpp", "celebdf", "uadfv"]
    video = next(line for line in text.splitlines() if "| video" in line)
    assert "0.930 [0.83, 0.98]" in video and video.index("0.930") < video.index("0.700") < video.index(
        "0.610"
    )
    assert "0.880 [0.68, 0.98]" in next(line for line in text.splitlines() if "| frame" in line)
    published = next(line for line in text.splitlines() if "| published" in line)
    assert "0.6966" in published and published.count(NOT_QUOTED) == 2  # only Celeb-DF v2 is quoted
    assert "arXiv:2307.01426" in text
    assert render_cross_dataset([results[0]], preset) == ""  # one test set: no cross-dataset table
