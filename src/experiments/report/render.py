"""The report's files: the Markdown document (checks, metric tables, paired comparisons), the robustness chart
and the HTML page (the document through the `markdown` package, the chart embedded, so MLflow's artifact
viewer shows it whole), written to reports/<sweep id>/ under the project root unless told otherwise."""

from __future__ import annotations

import base64
import html
import math
import mimetypes
import re
from collections.abc import Sequence
from pathlib import Path

import markdown
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor

from src.experiments.locations import PROJECT_ROOT
from src.experiments.report.collect import (
    REPLICATE_TAGS,
    augment_levels,
    augment_title,
    check_level,
    data_values,
    flagged_columns,
    lineage_flags,
    replicate_label,
)
from src.experiments.report.comparisons import render_comparisons
from src.experiments.report.cross_dataset import render_cross_dataset
from src.experiments.report.deployment import render_deployment
from src.experiments.report.records import Cell, Comparison, MetricValue
from src.experiments.report.tables import (
    FLAG,
    MISSING,
    Preset,
    column_name,
    columns,
    level_metric,
    render_tables,
)

REPORTS_DIR = PROJECT_ROOT / "reports"
NO_SWEEP_FOLDER = "all-runs"
CHART_FILE = "robustness.png"
PAGE_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:80em;padding:0 1em;line-height:1.4}"
    "table{border-collapse:collapse;margin:0.5em 0 1.2em}th,td{border:1px solid #ccc;padding:0.25em 0.6em;"
    "white-space:nowrap}th{background:#f3f3f3;text-align:left}tbody tr:nth-child(even){background:#fafafa}"
    "code{background:#f3f3f3;padding:0 0.2em}img{max-width:100%}h2{border-bottom:1px solid #ddd}"
)


# -- chart ----------------------------------------------------------------------------------------
def chart_title(level: str, data: str, sweep_id: str | None) -> str:
    """A chart panel's title.

    Args:
        level: "video" or "frame".
        data: the panel's data value.
        sweep_id: the reported sweep (None: no sweep).
    """
    return f"{level.capitalize()} AUC under test-time perturbation\ndata {data}, sweep {sweep_id or '(none)'}"


def _error_range(metric: MetricValue) -> tuple[float, float]:
    if metric.replicated:
        sd = 0.0 if math.isnan(metric.sd) else metric.sd
        return metric.value - sd, metric.value + sd
    if metric.low is None or metric.high is None:
        return metric.value, metric.value
    return metric.low, metric.high


def robustness_figure(cells: Sequence[Cell], level: str = "video", sweep_id: str | None = None):
    """AUC against augment level (one tick per level with runs, in axis order), one line per (model, weights)
    with data, one panel per data value; error bars are the 95 % bootstrap interval of a single run, or ± sd
    over replicates. A matplotlib Figure on an Agg canvas: no GUI backend or global pyplot state is touched.

    Args:
        cells: the cells of the report.
        level: "video" or "frame" AUC.
        sweep_id: the reported sweep, for the titles.
    """
    check_level(level)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = data_values(cells) or ["(no runs)"]
    most_levels = max(len(augment_levels([c for c in cells if c.data == d])) for d in panels)
    figure = Figure(figsize=((max(4.5, 1.4 * most_levels) + 3.5) * len(panels), 4.8))
    FigureCanvasAgg(figure)
    axes_list = figure.subplots(1, len(panels), squeeze=False)[0]
    colors = {
        col: f"C{i % 10}" for i, col in enumerate(columns(cells))
    }  # a column keeps its colour in every panel
    flagged = flagged_columns(cells)
    for axes, data in zip(axes_list, panels, strict=True):
        subset = [c for c in cells if c.data == data]
        levels = augment_levels(subset)
        by_key = {(c.model, c.weights, c.augment): c for c in subset}
        plotted = [
            col
            for col in columns(subset)
            if any(level_metric(by_key.get((*col, a)), level, "auc") for a in levels)
        ]
        for index, col in enumerate(plotted):
            offset = (index - (len(plotted) - 1) / 2) * 0.06  # dodge, so error bars do not hide each other
            xs, ys, below, above = [], [], [], []
            for position, augment in enumerate(levels):
                auc = level_metric(by_key.get((*col, augment)), level, "auc")
                if auc is None or math.isnan(auc.value):
                    continue
                low, high = _error_range(auc)
                xs.append(position + offset)
                ys.append(auc.value)
                below.append(max(auc.value - low, 0.0))
                above.append(max(high - auc.value, 0.0))
            label = column_name(*col, subset) + (
                f" {FLAG} mixed checkpoints" if (data, *col) in flagged else ""
            )
            axes.errorbar(xs, ys, yerr=[below, above], marker="o", capsize=3, label=label, color=colors[col])
        axes.axhline(0.5, linestyle="--", color="grey", linewidth=1, label="chance")
        axes.set_xticks(range(len(levels)), [augment_title(a, subset) for a in levels])
        axes.set(
            ylim=(0, 1.02),
            xlim=(-0.4, len(levels) - 0.6),
            xlabel="test-time augmentation",
            ylabel=f"{level} AUC",
            title=chart_title(level, data, sweep_id),
        )
        axes.grid(alpha=0.3)
        if not plotted:
            axes.text(0.5, 0.75, "no runs", ha="center", transform=axes.transAxes, color="grey")
        axes.legend(
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize="small",
            frameon=False,
            title="error bars: 95 % bootstrap CI,\nor ± sd over replicates",
            title_fontsize="small",
            alignment="left",
        )
    figure.tight_layout()
    return figure


def plot_robustness(
    cells: Sequence[Cell], path: str | Path, level: str = "video", sweep_id: str | None = None
) -> Path:
    """The robustness_figure as a PNG file.

    Args:
        cells: the cells of the report.
        path: the PNG file to write.
        level: "video" or "frame" AUC.
        sweep_id: the reported sweep, for the titles.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    robustness_figure(cells, level, sweep_id).savefig(path, dpi=100, bbox_inches="tight")
    return path


# -- document -------------------------------------------------------------------------------------
def check_notes(cells: Sequence[Cell]) -> list[str]:
    """One line per column with mixed checkpoints and per run replaced by a newer one of the same replicate.

    Args:
        cells: the cells of the report.
    """
    notes = []
    for flag in lineage_flags(cells):
        title = column_name(flag.model, flag.weights, cells)
        what = "source_run_id" if flag.weights == "finetuned" else "initial_weights"
        where = f"data `{flag.data}`" + (
            f", {replicate_label(flag.replicate)}" if any(flag.replicate) else ""
        )
        levels = "; ".join(
            f"{augment}: run `{run_id}` ({what} `{checkpoint or 'not recorded'}`)"
            for augment, run_id, checkpoint in flag.levels
        )
        notes.append(
            f"{FLAG} {title} ({where}): its levels were scored with different checkpoints, so they are "
            f"not comparable and get no level comparisons. {levels}"
        )
    for cell in cells:
        if cell.sweep_id is None:  # outside a sweep, re-runs replacing older runs is the intended use
            continue
        for old in cell.replaced:
            kept = next(run for run in cell.runs if run.replicate == old.replicate)
            notes.append(
                f"{cell.model}/{cell.weights}/{cell.augment} ({cell.data}): run "
                f"`{old.run_id}` has the same replicate tags as the newer run `{kept.run_id}`; "
                "the newer one is used."
            )
    return notes


def build_document(
    cells: Sequence[Cell],
    comparisons: Sequence[Comparison],
    *,
    tracking_uri: str,
    experiment: str,
    sweep_id: str | None,
    level: str,
    data: str | None = None,
    preset: Preset | None = None,
) -> str:
    """The report as Markdown: header, checks, metric tables, the deployment section (video level: operating
    points and subsets), paired comparisons, the chart.

    Args:
        cells: the cells of the report.
        comparisons: the paired comparisons of their runs.
        tracking_uri, experiment: where the runs were read from.
        sweep_id: the reported sweep (None: the latest run of each cell).
        level: "video" or "frame" metrics.
        data: the data tag the runs were filtered on, if any.
        preset: a table shape (None: only the columns with runs).
    """
    runs = sum(len(c.runs) for c in cells)
    scope = (
        f"sweep `{sweep_id}`"
        if sweep_id
        else "the latest finished run of each cell (no run belongs to a sweep)"
    )
    shape = (
        f" The columns of preset `{preset.name}` are shown even where no run scored them." if preset else ""
    )
    lines = [
        f"# Deepfake detection: {level}-level test metrics, sweep {sweep_id or '(none)'}",
        "",
        f"From {runs} evaluate runs of {scope} in experiment `{experiment}` of `{tracking_uri}`"
        + (f", data `{data}`" if data else "")
        + ".",
        f"Cells: value [95 % bootstrap interval]; replicated runs (differing only in {', '.join(REPLICATE_TAGS)}): "
        f"mean ± sd (n). Missing cells: {MISSING}.{shape}",
        "",
    ]
    notes = check_notes(cells)
    if notes:
        lines += ["## Checks", ""] + [f"- {note}" for note in notes] + [""]
    cross = render_cross_dataset(cells, preset) if level == "video" else ""
    if cross:
        lines.append(cross)
    lines.append(render_tables(cells, level, preset))
    deployment = render_deployment(cells, preset) if level == "video" else ""
    if deployment:
        lines.append(deployment)
    comparison_text = render_comparisons(comparisons)
    if comparison_text:
        lines.append(comparison_text)
    lines.append(f"![robustness]({CHART_FILE})")
    return "\n".join(lines) + "\n"


class _EmbedImages(Treeprocessor):
    """Every <img> of a local file becomes a data: URI of that file."""

    def __init__(self, md, folder: Path):
        super().__init__(md)
        self.folder = folder

    def run(self, root):
        for image in root.iter("img"):
            source = self.folder / image.get("src")
            kind = mimetypes.guess_type(source.name)[0] or "application/octet-stream"
            image.set("src", f"data:{kind};base64,{base64.b64encode(source.read_bytes()).decode('ascii')}")


class _ReportPage(Extension):
    """HTML in the text (run tags) is shown as text; images from `folder` are embedded."""

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = folder

    def extendMarkdown(self, md):
        md.preprocessors.deregister("html_block")
        md.inlinePatterns.deregister("html")
        md.treeprocessors.register(
            _EmbedImages(md, self.folder), "embed_images", 5
        )  # after "inline" made <img>


def markdown_to_html(text: str, folder: Path, title: str) -> str:
    """One HTML page: the Markdown through the `markdown` package (pipe tables), with the images it names
    (files in `folder`) embedded, so MLflow's artifact viewer shows it whole.

    Args:
        text: the Markdown.
        folder: where the images it names are.
        title: the page's title.
    """
    body = markdown.markdown(text, extensions=["tables", _ReportPage(folder)])
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{PAGE_STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


# -- files ----------------------------------------------------------------------------------------
def report_folder(sweep_id: str | None) -> Path:
    """reports/<sweep id>/ under the project root (the id made safe for a folder name), or reports/all-runs/.

    Args:
        sweep_id: the reported sweep (None: no sweep).
    """
    return REPORTS_DIR / (re.sub(r"[^\w.-]", "_", sweep_id) if sweep_id else NO_SWEEP_FOLDER)


def write_report(
    cells: Sequence[Cell],
    comparisons: Sequence[Comparison],
    out: Path,
    *,
    tracking_uri: str,
    experiment: str,
    sweep_id: str | None,
    level: str,
    data: str | None = None,
    preset: Preset | None = None,
) -> tuple[str, list[Path]]:
    """report.md, report.html and robustness.png in `out`.

    Args:
        cells, comparisons, tracking_uri, experiment, sweep_id, level, data, preset: as for `build_document`.
        out: the folder to write to.

    Returns:
        The Markdown and the three files.
    """
    out.mkdir(parents=True, exist_ok=True)
    chart = plot_robustness(cells, out / CHART_FILE, level=level, sweep_id=sweep_id)
    document = build_document(
        cells,
        comparisons,
        tracking_uri=tracking_uri,
        experiment=experiment,
        sweep_id=sweep_id,
        level=level,
        data=data,
        preset=preset,
    )
    markdown_file = out / "report.md"
    markdown_file.write_text(document, encoding="utf-8")
    page = out / "report.html"
    page.write_text(
        markdown_to_html(document, out, f"Deepfake detection report, sweep {sweep_id}"), encoding="utf-8"
    )
    return document, [markdown_file, page, chart]
