"""The tables, paired comparisons and a robustness chart of ONE evaluate sweep (`make report`).

    python -m src.experiments.report                      # the latest evaluate sweep
    python -m src.experiments.report --sweep-id <id>      # another sweep (make report SWEEP=<id>)
    python -m src.experiments.report --preset study       # the seed study's table shape (conf/report/study.yaml)
    python -m src.experiments.report --level frame --data celebdf --out somewhere/ --no-log

A cell is one (model, weights, augment, data) combination of the sweep; a column is one (model, weights).
- Cells print `0.893 [0.71, 1.00]`: the logged value and its 95 % bootstrap interval
  (`test/<level>_<m>_ci_low/_ci_high`, the bare value where the run has none).
- Runs of one cell that differ only in their `seed`, `train_seed` or `fold` tags are replicates: the cell
  prints `mean ± sd (n=3)`. Two runs with the same replicate tags: the latest is used, and a note says so.
- Lineage: within one replicate, every level of a column must have scored the same checkpoint (tag
  `source_run_id` for finetuned weights, `initial_weights` for pretrained ones). A column that did not is
  flagged (⚠ and a note naming the runs) and gets no level comparisons.
- Deployment (video level): per run the calibration error, TPR at 1 % and 5 % FPR, the validation threshold
  and the test accuracy at it; per augment level a table of the per-subset metrics (`test/subset/...`).
- Paired comparisons (video AUC, from the runs' `video_scores.csv`, joined on `path`): every level against
  `none` and finetuned against pretrained, with a paired-bootstrap interval, `*` where it excludes 0.
- Titles and order come from the runs' tags only: `model_title`, `augment_title`, `augment_axis` (position
  on the robustness axis), `source_weights`; runs without them show the `model` / `augment` tag itself.
  Columns: those with runs, in the order their first run started; a preset (conf/report/<name>.yaml) puts
  its columns first and shows them even without runs.

Modules: records (the typed records below), collect (runs from the store -> cells, order), tables (metric
tables, presets), deployment (operating points, subsets), comparisons (paired comparisons), cross_dataset
(AUC per test set), render (document, chart, HTML, files). Files (report.md, report.html with the chart
embedded, robustness.png) go to `reports/<sweep id>/` under the project root (or --out) and are logged as a
run of the MLflow experiment `report`. When no run of the experiment belongs to a sweep at all, the latest
finished run of each cell (and replicate) is reported.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from src.experiments import tracking
from src.experiments.report.collect import LEVELS, collect_cells, known_sweeps, latest_sweep, store_missing
from src.experiments.report.comparisons import ScoreFiles, paired_comparisons
from src.experiments.report.records import Cell
from src.experiments.report.render import NO_SWEEP_FOLDER, report_folder, write_report
from src.experiments.report.tables import load_preset, preset_names
from src.utils.errors import UserError

REPORT_EXPERIMENT = "report"
PRODUCE_RUNS = (
    "python evaluate.py -m model=mesonet,resnet_lstm weights=pretrained,finetuned augment=none,flip,heavy"
)


def log_report(
    tracking_uri: str,
    files: Sequence[Path],
    *,
    sweep_id: str | None,
    level: str,
    data: str | None,
    cells: Sequence[Cell],
    experiment: str = REPORT_EXPERIMENT,
) -> tracking.Run:
    """A new run in the report experiment with the files as artifacts and the ids of the runs it reports.

    Args:
        tracking_uri: the MLflow store.
        files: the report's files.
        sweep_id: the reported sweep (None: no sweep), a tag.
        level: "video" or "frame", a tag.
        data: the data tag the runs were filtered on, if any, a tag.
        cells: the reported cells (their run ids go to source_runs.txt).
        experiment: the experiment the report's run goes to.
    """
    tags = {
        "kind": "report",
        "level": level,
        **({"sweep_id": sweep_id} if sweep_id is not None else {}),
        **({"data": data} if data is not None else {}),
    }
    logger = {
        "_target_": "lightning.pytorch.loggers.MLFlowLogger",
        "experiment_name": experiment,
        "tracking_uri": tracking_uri,
    }
    run = tracking.Run.start(
        OmegaConf.create(logger),
        tags=tags,
        name=tracking.unique_name(f"report-{sweep_id or NO_SWEEP_FOLDER}-{level}"),
    )
    with run.state():
        run_ids = sorted(run.run_id for cell in cells for run in cell.runs)
        run.log_params({"source_runs": len(run_ids)})
        run.log_text("\n".join(run_ids) + "\n", "source_runs.txt")
        for file in files:
            run.log_file(file)
    return run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m src.experiments.report",
        description="The metric tables (Markdown and HTML), paired comparisons and a robustness chart of "
        "one evaluate sweep in the MLflow store.",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db)",
    )
    parser.add_argument(
        "--sweep-id", default=None, help="the sweep to report (default: the latest evaluate sweep)"
    )
    parser.add_argument(
        "--data",
        default=None,
        help="only runs with this data tag (default: all, one set of tables per data value)",
    )
    parser.add_argument("--level", choices=LEVELS, default="video", help="video- or frame-level metrics")
    parser.add_argument(
        "--preset",
        default=None,
        help="a table shape from conf/report/<name>.yaml: its columns first, shown even without "
        f"runs (presets: {', '.join(preset_names()) or 'none'}; default: the columns with runs)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for report.md, report.html and robustness.png (default: reports/<sweep id>/ "
        "in the project)",
    )
    parser.add_argument(
        "--experiment",
        default=tracking.EVALUATE_EXPERIMENT,
        help=f"experiment holding the evaluate runs (default: {tracking.EVALUATE_EXPERIMENT})",
    )
    parser.add_argument(
        "--no-log",
        action="store_true",
        help=f"do not log the report as a run of the MLflow experiment '{REPORT_EXPERIMENT}'",
    )
    return parser


def _nothing_found(tracking_uri: str, args: argparse.Namespace) -> str:
    filters = [
        f"{name}={value}" for name, value in (("sweep_id", args.sweep_id), ("data", args.data)) if value
    ]
    where = f"experiment '{args.experiment}' of the MLflow store {tracking_uri}"
    if store_missing(tracking_uri):
        where += f" (the database file {tracking.sqlite_file(tracking_uri)} does not exist)"
    lines = [
        f"No finished evaluate runs found in {where}"
        + (f" matching {', '.join(filters)}." if filters else ".")
    ]
    if args.sweep_id is not None or args.data is not None:
        sweeps = known_sweeps(tracking_uri, args.experiment)
        if sweeps:
            lines.append(f"Sweep ids present (newest first): {', '.join(sweeps)}")
    lines.append(f"Runs are produced by: {PRODUCE_RUNS}")
    lines.append("(set MLFLOW_TRACKING_URI or --tracking-uri if they were logged to another store)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Build report.md, report.html and robustness.png of one sweep, print the tables, log them.

    Args:
        argv: the command line's arguments (default: sys.argv[1:]).

    Returns:
        The exit status: 0, or 1 when there are no runs or the preset is unusable.
    """
    args = _parser().parse_args(argv)
    try:
        preset = load_preset(args.preset) if args.preset is not None else None
    except UserError as error:
        print(error, file=sys.stderr)
        return 1
    tracking_uri = args.tracking_uri or tracking.default_tracking_uri()
    sweep_id = args.sweep_id or latest_sweep(tracking_uri, args.experiment, data=args.data)
    cells = collect_cells(tracking_uri, sweep_id=sweep_id, data=args.data, experiment=args.experiment)
    if not cells:
        print(_nothing_found(tracking_uri, args), file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="report-scores-") as tmp:
        comparisons = paired_comparisons(cells, ScoreFiles(tracking_uri, Path(tmp)))
    out = args.out if args.out is not None else report_folder(sweep_id)
    document, files = write_report(
        cells,
        comparisons,
        out,
        tracking_uri=tracking_uri,
        experiment=args.experiment,
        sweep_id=sweep_id,
        level=args.level,
        data=args.data,
        preset=preset,
    )
    print(document)
    print(f"Wrote {', '.join(str(file) for file in files[:-1])} and {files[-1]}")
    if not args.no_log:
        run = log_report(
            tracking_uri, files, sweep_id=sweep_id, level=args.level, data=args.data, cells=cells
        )
        print(
            f"Logged MLflow run {run.id} in experiment '{REPORT_EXPERIMENT}' of {tracking_uri} "
            "(open report.html among its artifacts)"
        )
        print(run.link())
    return 0
