"""`python -m src.experiments.report` against a throwaway MLflow store filled with fake evaluate runs:
the tables must show exactly what was logged (newest run per cell, sweep and data filters, "–" for holes)."""

from __future__ import annotations

import random
import re
from pathlib import Path

import mlflow
import pytest

from src.experiments import report
from src.experiments.report import collect_results, main, plot_robustness, render_tables

SEED_HEADER = ["MesoNet", "MesoNet (finetuned)", "ResNetLSTM", "ResNetLSTM (finetuned)"]
ROW_ORDER = ["Loss", "AUC", "AP", "Accuracy", "EER"]
TITLES = ["Test metrics, no augmentation", "Test metrics, rotation/flip", "Test metrics, heavy augmentation"]
METRIC_OF_ROW = {"Loss": "loss", "AUC": "auc", "AP": "ap", "Accuracy": "acc", "EER": "eer"}
T0 = 1_700_000_000_000  # ms; explicit start times make "newest" unambiguous


class FakeStore:
    """Logs evaluate-like runs (tags + test/* metrics) and remembers what it logged, per cell."""

    def __init__(self, uri: str):
        self.uri = uri
        self.client = mlflow.MlflowClient(uri)
        self.experiment_id = self.client.create_experiment("evaluate", artifact_location=self._artifacts(uri))
        self.rng = random.Random(0)
        self.clock = T0

    @staticmethod
    def _artifacts(uri: str) -> str:
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlruns").as_uri()

    def log(self, model, weights, augment, data="synthetic", sweep=None, status="FINISHED") -> dict[str, float]:
        self.clock += 1000
        tags = {"model": model, "weights": weights, "augment": augment, "data": data}
        if sweep:
            tags["sweep_id"] = sweep
        run = self.client.create_run(self.experiment_id, start_time=self.clock, tags=tags)
        # values in (0.05, 0.95): a rounded real value is never "0.000", so "0.000" can only mean a bogus zero
        metrics = {f"test/{lvl}_{m}": self.rng.uniform(0.05, 0.95)
                   for lvl in ("video", "frame") for m in ("auc", "ap", "acc", "loss", "eer")}
        self.client.log_batch(run.info.run_id, metrics=[
            mlflow.entities.Metric(k, v, self.clock, 0) for k, v in metrics.items()])
        self.client.set_terminated(run.info.run_id, status, end_time=self.clock + 500)
        return metrics


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One populated store for the module (creating a sqlite store costs seconds, so share it).

    sweep-a: the seed grid minus ResNetLSTM (finetuned) under heavy augmentation.
    sweep-b (newer): MesoNet none again, and Meso4 none/flip (an extra model).
    single runs: a MesoNet scratch run, a celebdf run, and a newer FAILED run that must be ignored.
    """
    uri = f"sqlite:///{tmp_path_factory.mktemp('report-store')}/mlflow.db"
    fake = FakeStore(uri)
    logged: dict[str, dict] = {"sweep-a": {}, "sweep-b": {}, "latest": {}}
    for model in ("mesonet", "resnet_lstm"):
        for weights in ("pretrained", "finetuned"):
            for augment in ("none", "flip", "heavy"):
                if (model, weights, augment) == ("resnet_lstm", "finetuned", "heavy"):
                    continue
                logged["sweep-a"][(model, weights, augment)] = fake.log(model, weights, augment, sweep="sweep-a")
    logged["latest"].update(logged["sweep-a"])
    for cell in (("mesonet", "pretrained", "none"), ("meso4", "pretrained", "none"), ("meso4", "pretrained", "flip")):
        logged["sweep-b"][cell] = fake.log(*cell, sweep="sweep-b")
    logged["latest"].update(logged["sweep-b"])
    logged["latest"][("mesonet", "scratch", "heavy")] = fake.log("mesonet", "scratch", "heavy")
    logged["celebdf"] = {("mesonet", "pretrained", "none"): fake.log("mesonet", "pretrained", "none", data="celebdf")}
    fake.log("mesonet", "finetuned", "none", status="FAILED")  # newest of its cell, but not finished
    return uri, logged


@pytest.fixture
def use_store(store, monkeypatch):
    """Point MLFLOW_TRACKING_URI at the fake store, as `make report` would."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store[0])
    return store


def parse_report(markdown: str) -> dict[str, dict[str, tuple[list[str], dict[str, dict[str, str]]]]]:
    """{data: {table title: (column names, {row: {column: cell}})}}, checking the rows' order on the way."""
    parsed: dict = {}
    data = title = None
    for line in markdown.splitlines():
        if line.startswith("## Data: "):
            data = line.removeprefix("## Data: ").strip()
            parsed[data] = {}
        elif line.startswith("### "):
            title = line.removeprefix("### ").strip()
            parsed[data][title] = ([], {})
        elif line.startswith("|") and title is not None:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            header, rows = parsed[data][title]
            if not header:
                header.extend(cells[1:])
            elif not set(cells[0]) <= set(":-"):
                rows[cells[0]] = dict(zip(header, cells[1:], strict=True))
    for tables in parsed.values():
        for _, rows in tables.values():
            assert list(rows) == ROW_ORDER
    return parsed


def expected_cell(metrics: dict[str, float] | None, row: str, level: str = "video") -> str:
    return "–" if metrics is None else f"{metrics[f'test/{level}_{METRIC_OF_ROW[row]}']:.3f}"


def check_table(table, cells: dict, augment: str, columns: dict[str, tuple[str, str]], level: str = "video"):
    """Every cell of the table equals the logged metric rounded to 3 decimals, or "–" where nothing was logged."""
    header, rows = table
    for name, (model, weights) in columns.items():
        metrics = cells.get((model, weights, augment))
        for row in ROW_ORDER:
            assert rows[row][name] == expected_cell(metrics, row, level), (augment, name, row)
            if metrics is not None:
                assert float(rows[row][name]) == pytest.approx(
                    round(metrics[f"test/{level}_{METRIC_OF_ROW[row]}"], 3), abs=1e-9)


ALL_COLUMNS = {
    "MesoNet": ("mesonet", "pretrained"), "MesoNet (finetuned)": ("mesonet", "finetuned"),
    "ResNetLSTM": ("resnet_lstm", "pretrained"), "ResNetLSTM (finetuned)": ("resnet_lstm", "finetuned"),
    "MesoNet (scratch)": ("mesonet", "scratch"), "Meso4": ("meso4", "pretrained"),
}


def test_latest_run_per_cell(store):
    """Without a sweep the newest finished run of each cell wins; extra models and scratch get columns."""
    uri, logged = store
    results = collect_results(uri, data="synthetic")
    assert {(r["model"], r["weights"], r["augment"]) for r in results} == set(logged["latest"])
    parsed = parse_report(render_tables(results))
    assert list(parsed) == ["synthetic"]
    assert list(parsed["synthetic"]) == TITLES
    for title, augment in zip(TITLES, ("none", "flip", "heavy"), strict=True):
        table = parsed["synthetic"][title]
        assert table[0] == SEED_HEADER + ["MesoNet (scratch)", "Meso4"]
        check_table(table, logged["latest"], augment, ALL_COLUMNS)
    # sweep-b's MesoNet run replaced sweep-a's; the FAILED newer run did not replace anything
    mesonet_none = parsed["synthetic"][TITLES[0]][1]["AUC"]["MesoNet"]
    assert mesonet_none == f"{logged['sweep-b'][('mesonet', 'pretrained', 'none')]['test/video_auc']:.3f}"
    assert parsed["synthetic"][TITLES[2]][1]["AUC"]["ResNetLSTM (finetuned)"] == "–"


def test_sweep_filter(store):
    """--sweep-id keeps one multirun's runs only; the seed's four columns stay even when empty."""
    uri, logged = store
    parsed = parse_report(render_tables(collect_results(uri, sweep_id="sweep-a")))
    for title, augment in zip(TITLES, ("none", "flip", "heavy"), strict=True):
        table = parsed["synthetic"][title]
        assert table[0] == SEED_HEADER  # no Meso4 or scratch column: those runs are not in sweep-a
        check_table(table, logged["sweep-a"], augment, {k: ALL_COLUMNS[k] for k in SEED_HEADER})

    markdown = render_tables(collect_results(uri, sweep_id="sweep-b"))
    parsed = parse_report(markdown)
    for title, augment in zip(TITLES, ("none", "flip", "heavy"), strict=True):
        table = parsed["synthetic"][title]
        assert table[0] == SEED_HEADER + ["Meso4"]
        check_table(table, logged["sweep-b"], augment, {k: ALL_COLUMNS[k] for k in SEED_HEADER + ["Meso4"]})
    assert "0.000" not in markdown  # missing cells are never rendered as zeros


def test_data_sections_and_frame_level(store):
    """Several data tags give one section each; --level frame reads test/frame_* metrics."""
    uri, logged = store
    results = collect_results(uri)
    parsed = parse_report(render_tables(results, level="frame"))
    assert list(parsed) == ["celebdf", "synthetic"]
    check_table(parsed["celebdf"][TITLES[0]], logged["celebdf"], "none",
                {k: ALL_COLUMNS[k] for k in SEED_HEADER}, level="frame")
    assert parsed["celebdf"][TITLES[0]][0] == SEED_HEADER
    check_table(parsed["synthetic"][TITLES[1]], logged["latest"], "flip", ALL_COLUMNS, level="frame")
    with pytest.raises(ValueError, match="level"):
        render_tables(results, level="clip")


def test_robustness_chart_is_png(store, tmp_path):
    """The chart is a real PNG image, also when several data values need several panels."""
    uri, _ = store
    for name, results in (("one.png", collect_results(uri, data="synthetic")), ("all.png", collect_results(uri))):
        path = plot_robustness(results, tmp_path / name)
        content = path.read_bytes()
        assert content[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(content) > 1024


def test_main_writes_prints_and_logs(use_store, tmp_path, capsys):
    """main() writes both files, prints the tables, and logs them as a `report` run next to the store."""
    uri, logged = use_store
    out = tmp_path / "out"
    assert main(["--sweep-id", "sweep-a", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "### Test metrics, no augmentation" in printed
    markdown = (out / "report.md").read_text(encoding="utf-8")
    check_table(parse_report(markdown)["synthetic"][TITLES[1]], logged["sweep-a"], "flip",
                {k: ALL_COLUMNS[k] for k in SEED_HEADER})
    assert (out / "robustness.png").read_bytes()[:4] == b"\x89PNG"

    run_id = re.search(r"Logged MLflow run (\w+)", printed).group(1)
    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == "report"
    assert run.data.tags["kind"] == "report" and run.data.tags["sweep_id"] == "sweep-a"
    assert run.info.status == "FINISHED"
    assert {"report.md", "robustness.png"} <= {a.path for a in client.list_artifacts(run_id)}
    store_dir = Path(uri.removeprefix("sqlite:///")).parent
    assert run.info.artifact_uri.startswith(store_dir.as_uri())  # not into the working directory


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
    assert collect_results(uri) == []


def test_column_names_and_order():
    """Seed columns first, then the seed models' scratch runs, then other models; unknown names kept."""
    results = [{"model": m, "weights": w, "augment": "none", "data": "d", "run_id": "x", "metrics": {}}
               for m, w in (("mystery", "pretrained"), ("efficientnet_lstm", "finetuned"), ("xception", "pretrained"),
                            ("resnet_lstm", "scratch"), ("meso4", "scratch"))]
    names = [report.column_name(*c) for c in report.columns(results)]
    assert names == SEED_HEADER + ["ResNetLSTM (scratch)", "Meso4 (scratch)", "Xception",
                                   "EfficientNet-B1+LSTM (finetuned)", "mystery"]
