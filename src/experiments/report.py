"""The seed study's tables and a robustness chart, built from the `evaluate` runs in the MLflow store.

    python -m src.experiments.report                      # latest finished run of every cell
    python -m src.experiments.report --sweep-id <id>      # only one multirun's jobs
    python -m src.experiments.report --level frame --data celebdf --out reports/ --no-log

A cell is one (model, weights, augment, data) combination. Without --sweep-id the latest finished run of
each cell is taken (so a re-run replaces an older one); with it, only that sweep's runs count. When the
runs cover several `data` tags and --data is not given, one set of tables (and one chart panel) is made
per data value, each under a `## Data: <name>` heading, rather than mixing datasets in one cell.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from src.experiments.tracking import EVALUATE_EXPERIMENT, default_tracking_uri, experiment_id, sqlite_file

REPORT_EXPERIMENT = "report"
LEVELS = ("video", "frame")
MISSING = "–"  # en dash: a cell without a run, never a zero
PRODUCE_RUNS = "python evaluate.py -m model=mesonet,resnet_lstm weights=pretrained,finetuned augment=none,flip,heavy"

AUGMENT_ORDER = ("none", "flip", "heavy")
AUGMENT_TITLES = {
    "none": "Test metrics, no augmentation",
    "flip": "Test metrics, rotation/flip",
    "heavy": "Test metrics, heavy augmentation",
}
AUGMENT_AXIS = {"none": "none", "flip": "rotation/flip", "heavy": "heavy"}
# (table row label, metric suffix after test/<level>_)
ROWS = (("Loss", "loss"), ("AUC", "auc"), ("AP", "ap"), ("Accuracy", "acc"), ("EER", "eer"))

MODEL_NAMES = {
    "mesonet": "MesoNet",
    "resnet_lstm": "ResNetLSTM",
    "meso4": "Meso4",
    "xception": "Xception",
    "efficientnet_lstm": "EfficientNet-B1+LSTM",
}
SEED_MODELS = ("mesonet", "resnet_lstm")
# the seed's four columns, always shown, in the seed's order
SEED_COLUMNS = (("mesonet", "pretrained"), ("mesonet", "finetuned"), ("resnet_lstm", "pretrained"),
                ("resnet_lstm", "finetuned"))
MODEL_ORDER = ("mesonet", "resnet_lstm", "meso4", "xception", "efficientnet_lstm")
WEIGHTS_ORDER = ("pretrained", "finetuned", "scratch")


# -- collecting -----------------------------------------------------------------------------------
def _quote(value: str) -> str:
    """A filter-string literal; MLflow's filter grammar has no escapes, so pick a quote the value lacks."""
    for quote in ("'", '"'):
        if quote not in value:
            return f"{quote}{value}{quote}"
    raise ValueError(f"cannot filter on {value!r}: it contains both quote characters")


def _store_missing(tracking_uri: str) -> bool:
    """True for a sqlite store whose file does not exist: reading it must not create an empty database."""
    path = sqlite_file(tracking_uri)
    return path is not None and not path.exists()


def _search_all(client, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=filter_string, order_by=["attributes.start_time DESC"],
            max_results=1000, page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def collect_results(tracking_uri: str, sweep_id: str | None = None, data: str | None = None,
                    experiment: str = EVALUATE_EXPERIMENT) -> list[dict]:
    """One dict per (model, weights, augment, data) cell from the finished evaluate runs: keys model,
    weights, augment, data, run_id, metrics (all of the run's metrics), sweep_id, start_time.

    Of several runs of one cell the latest (by start time) wins. Runs without model/weights/augment tags
    (not written by evaluate.py) are skipped. Returns [] for an absent store or experiment.
    """
    if _store_missing(tracking_uri):
        return []
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    clauses = ["attributes.status = 'FINISHED'"]
    if sweep_id is not None:
        clauses.append(f"tags.sweep_id = {_quote(sweep_id)}")
    if data is not None:
        clauses.append(f"tags.data = {_quote(data)}")
    cells: dict[tuple[str, str, str, str], dict] = {}
    for run in _search_all(client, found.experiment_id, " and ".join(clauses)):
        tags = run.data.tags
        if not all(tags.get(key) for key in ("model", "weights", "augment")):
            continue
        key = (tags["model"], tags["weights"], tags["augment"], tags.get("data") or "unknown")
        rank = (run.info.start_time or 0, run.info.end_time or 0, run.info.run_id)
        if key in cells and cells[key]["_rank"] >= rank:
            continue
        cells[key] = {
            "model": key[0], "weights": key[1], "augment": key[2], "data": key[3],
            "run_id": run.info.run_id, "metrics": dict(run.data.metrics),
            "sweep_id": tags.get("sweep_id"), "start_time": run.info.start_time, "_rank": rank,
        }
    results = [{k: v for k, v in cell.items() if k != "_rank"} for cell in cells.values()]
    return sorted(results, key=lambda r: (r["data"], _column_sort_key(r["model"], r["weights"]),
                                          _augment_sort_key(r["augment"])))


def known_sweeps(tracking_uri: str, experiment: str = EVALUATE_EXPERIMENT, limit: int = 10) -> list[str]:
    """Sweep ids of the most recent finished evaluate runs, newest first (for the 'nothing found' hint)."""
    results = collect_results(tracking_uri, experiment=experiment)
    newest: dict[str, int] = {}
    for result in results:
        if result["sweep_id"]:
            newest[result["sweep_id"]] = max(newest.get(result["sweep_id"], 0), result["start_time"] or 0)
    return sorted(newest, key=newest.get, reverse=True)[:limit]


# -- naming and ordering --------------------------------------------------------------------------
def column_name(model: str, weights: str) -> str:
    """The seed's column names: pretrained is the plain model name, other weights in parentheses."""
    name = MODEL_NAMES.get(model, model)
    return name if weights == "pretrained" else f"{name} ({weights})"


def _column_sort_key(model: str, weights: str) -> tuple:
    if (model, weights) in SEED_COLUMNS:
        return (0, SEED_COLUMNS.index((model, weights)), "", "")
    model_rank = MODEL_ORDER.index(model) if model in MODEL_ORDER else len(MODEL_ORDER)
    weights_rank = WEIGHTS_ORDER.index(weights) if weights in WEIGHTS_ORDER else len(WEIGHTS_ORDER)
    # the seed models' other weights (scratch) right after the seed columns, then the other models
    group = 1 if model in SEED_MODELS else 2
    return (group, model_rank, model if model_rank == len(MODEL_ORDER) else "", f"{weights_rank:02d}{weights}")


def _augment_sort_key(augment: str) -> tuple:
    return (AUGMENT_ORDER.index(augment), "") if augment in AUGMENT_ORDER else (len(AUGMENT_ORDER), augment)


def columns(results: Iterable[dict]) -> list[tuple[str, str]]:
    """(model, weights) columns: the seed's four always, then any others that have runs."""
    present = {(r["model"], r["weights"]) for r in results}
    return sorted(present | set(SEED_COLUMNS), key=lambda c: _column_sort_key(*c))


def augment_levels(results: Iterable[dict]) -> list[str]:
    """none, flip, heavy always (the seed's three tables), then any other levels that have runs."""
    return sorted({r["augment"] for r in results} | set(AUGMENT_ORDER), key=_augment_sort_key)


def _data_values(results: Sequence[dict]) -> list[str]:
    return sorted({r["data"] for r in results})


def _check_level(level: str) -> None:
    if level not in LEVELS:
        raise ValueError(f"level={level!r}: expected one of {', '.join(LEVELS)}")


def _metric(result: dict | None, level: str, suffix: str) -> float | None:
    if result is None:
        return None
    value = result["metrics"].get(f"test/{level}_{suffix}")
    return None if value is None else float(value)


def _format(value: float | None) -> str:
    if value is None:
        return MISSING
    return "nan" if math.isnan(value) else f"{value:.3f}"


# -- tables ---------------------------------------------------------------------------------------
def _table(cells: dict[tuple[str, str], dict], cols: list[tuple[str, str]], level: str) -> list[str]:
    header = [""] + [column_name(*c) for c in cols]
    width = max(8, *(len(label) for label, _ in ROWS))
    lines = ["| " + " | ".join(h.ljust(width) if i == 0 else h for i, h in enumerate(header)) + " |",
             "| :" + "-" * (width - 1) + " | " + " | ".join("-" * (max(len(h), 5) - 1) + ":" for h in header[1:]) + " |"]
    for label, suffix in ROWS:
        values = [_format(_metric(cells.get(c), level, suffix)) for c in cols]
        lines.append("| " + label.ljust(width) + " | " + " | ".join(
            v.rjust(max(len(h), 5)) for v, h in zip(values, header[1:], strict=True)) + " |")
    return lines


def render_tables(results: Sequence[dict], level: str = "video") -> str:
    """The seed's tables as Markdown: per data value a `## Data:` section with one table per augmentation
    level (none, flip, heavy always; others after), rows Loss/AUC/AP/Accuracy/EER, columns per column_name."""
    _check_level(level)
    data_values = _data_values(results) or ["(no runs)"]
    out: list[str] = []
    for data in data_values:
        subset = [r for r in results if r["data"] == data]
        out += [f"## Data: {data}", ""]
        cols = columns(subset)
        for augment in augment_levels(subset):
            cells = {(r["model"], r["weights"]): r for r in subset if r["augment"] == augment}
            title = AUGMENT_TITLES.get(augment, f"Test metrics, augment={augment}")
            out += [f"### {title}", ""] + _table(cells, cols, level) + [""]
    return "\n".join(out).rstrip() + "\n"


# -- chart ----------------------------------------------------------------------------------------
def plot_robustness(results: Sequence[dict], path: str | Path, level: str = "video") -> Path:
    """AUC against augmentation level, one line per (model, weights) with data, one panel per data value.

    Uses matplotlib's Figure directly (Agg canvas), so no GUI backend or global pyplot state is touched.
    """
    _check_level(level)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data_values = _data_values(results) or ["(no runs)"]
    figure = Figure(figsize=(7.5 * len(data_values), 4.5))
    FigureCanvasAgg(figure)
    axes_list = figure.subplots(1, len(data_values), squeeze=False)[0]
    palette = [f"C{i % 10}" for i in range(len(columns(results)))]
    colors = dict(zip(columns(results), palette, strict=True))  # a column keeps its colour in every panel
    for axes, data in zip(axes_list, data_values, strict=True):
        subset = [r for r in results if r["data"] == data]
        levels = augment_levels(subset)
        xs = list(range(len(levels)))
        cells = {(r["model"], r["weights"], r["augment"]): r for r in subset}
        plotted = 0
        for col in columns(subset):
            ys = [_metric(cells.get((*col, augment)), level, "auc") for augment in levels]
            if all(y is None or math.isnan(y) for y in ys):
                continue
            axes.plot(xs, [math.nan if y is None else y for y in ys], marker="o", label=column_name(*col),
                      color=colors[col])
            plotted += 1
        axes.axhline(0.5, linestyle="--", color="grey", linewidth=1, label="chance")
        axes.set_xticks(xs, [AUGMENT_AXIS.get(a, a) for a in levels])
        axes.set(ylim=(0, 1), xlim=(-0.3, len(levels) - 0.7), xlabel="test-time augmentation",
                 ylabel=f"{level} AUC", title=f"Robustness ({data})" if len(data_values) > 1 else "Robustness")
        axes.grid(alpha=0.3)
        if not plotted:
            axes.text(0.5, 0.75, "no runs", ha="center", transform=axes.transAxes, color="grey")
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    figure.tight_layout()
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path


# -- logging --------------------------------------------------------------------------------------
def log_report(tracking_uri: str, files: Sequence[Path], *, sweep_id: str | None, level: str,
               data: str | None, results: Sequence[dict], experiment: str = REPORT_EXPERIMENT) -> str:
    """A new run in the report experiment with the files as artifacts; returns its run id."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    tags = {"kind": "report", "level": level}
    if sweep_id is not None:
        tags["sweep_id"] = sweep_id
    if data is not None:
        tags["data"] = data
    run_name = f"report-{sweep_id or 'latest'}-{level}"
    run = client.create_run(experiment_id(client, tracking_uri, experiment), tags=tags, run_name=run_name)
    run_id = run.info.run_id
    try:
        client.log_param(run_id, "source_runs", len(results))
        client.log_text(run_id, "\n".join(sorted(r["run_id"] for r in results)) + "\n", "source_runs.txt")
        for file in files:
            client.log_artifact(run_id, str(file))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


# -- command line ---------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m src.experiments.report",
        description="The seed study's tables (Markdown) and a robustness chart from the MLflow evaluate runs.",
    )
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db)")
    parser.add_argument("--sweep-id", default=None,
                        help="only the runs of this multirun sweep (default: latest finished run of every cell)")
    parser.add_argument("--data", default=None,
                        help="only runs with this data tag (default: all, one set of tables per data value)")
    parser.add_argument("--level", choices=LEVELS, default="video", help="video- or frame-level metrics")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for report.md and robustness.png (default: a new temporary folder)")
    parser.add_argument("--experiment", default=EVALUATE_EXPERIMENT,
                        help=f"experiment holding the evaluate runs (default: {EVALUATE_EXPERIMENT})")
    parser.add_argument("--no-log", action="store_true",
                        help=f"do not log the report as a run of the MLflow experiment '{REPORT_EXPERIMENT}'")
    return parser


def _nothing_found(tracking_uri: str, args: argparse.Namespace) -> str:
    filters = [f"{name}={value}" for name, value in (("sweep_id", args.sweep_id), ("data", args.data)) if value]
    where = f"experiment '{args.experiment}' of the MLflow store {tracking_uri}"
    if _store_missing(tracking_uri):
        where += f" (the database file {sqlite_file(tracking_uri)} does not exist)"
    lines = [f"No finished evaluate runs found in {where}" + (f" matching {', '.join(filters)}." if filters else ".")]
    if args.sweep_id is not None or args.data is not None:
        sweeps = known_sweeps(tracking_uri, args.experiment)
        if sweeps:
            lines.append(f"Sweep ids present (newest first): {', '.join(sweeps)}")
    lines.append(f"Runs are produced by: {PRODUCE_RUNS}")
    lines.append("(set MLFLOW_TRACKING_URI or --tracking-uri if they were logged to another store)")
    return "\n".join(lines)


def _document(results: Sequence[dict], tracking_uri: str, args: argparse.Namespace) -> str:
    scope = f"sweep `{args.sweep_id}`" if args.sweep_id else "latest finished run of each cell"
    header = [
        f"# Deepfake detection: {args.level}-level test metrics",
        "",
        f"From {len(results)} evaluate runs ({scope}) in experiment `{args.experiment}` of `{tracking_uri}`"
        + (f", data `{args.data}`" if args.data else "") + f". Missing cells: {MISSING}.",
        "",
        "",
    ]
    return "\n".join(header) + render_tables(results, args.level) + "\n![robustness](robustness.png)\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Build report.md and robustness.png, print the tables, log them; 1 when there are no runs."""
    args = _parser().parse_args(argv)
    tracking_uri = args.tracking_uri or default_tracking_uri()
    results = collect_results(tracking_uri, sweep_id=args.sweep_id, data=args.data, experiment=args.experiment)
    if not results:
        print(_nothing_found(tracking_uri, args), file=sys.stderr)
        return 1
    out = args.out if args.out is not None else Path(tempfile.mkdtemp(prefix="deepfake-report-"))
    out.mkdir(parents=True, exist_ok=True)
    document = _document(results, tracking_uri, args)
    report = out / "report.md"
    report.write_text(document, encoding="utf-8")
    chart = plot_robustness(results, out / "robustness.png", level=args.level)
    print(document)
    print(f"Wrote {report} and {chart}")
    if not args.no_log:
        run_id = log_report(tracking_uri, [report, chart], sweep_id=args.sweep_id, level=args.level,
                            data=args.data, results=results)
        print(f"Logged MLflow run {run_id} in experiment '{REPORT_EXPERIMENT}' of {tracking_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
