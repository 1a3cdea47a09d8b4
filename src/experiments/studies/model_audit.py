"""Shortcut audit of a model: do an evaluate run's per-video scores follow a cheap feature?

    make audit ARGS="run=<evaluate run id>"                 # python -m src.experiments.studies.audit run=<id>
    make audit ARGS="run=<id> data.root=/data/Celeb-DF-v2"  # the run's data settings, one key replaced

The data audit (`src.data.audit`) asks whether a cheap, manipulation-free feature (brightness, sharpness,
noise, face size, bitrate, ...) separates real from fake in the data; this asks whether a model's scores
follow one. The run's `video_scores.csv` gives each test video's label and logit; its data settings come
from the `config.yaml` evaluate.py logged (its `data` node; `data.<key>=` on the command line replaces
that key), and the features are measured by the data audit's own code, on the same videos.

Definition. Within each class separately -- real videos only, fake videos only, so that the label, which
a good model's score follows and a feature may follow too, is not the confound -- Spearman's rank
correlation rho between the feature and the model's logit (the logit, not p_fake: p_fake saturates to
ties), with a percentile bootstrap 95 % interval (the class's videos resampled with replacement). A
feature is flagged when in either class |rho| >= MIN_ABS_RHO, the interval excludes 0, and Spearman's
test (exact for classes of fewer than 9 videos) rejects rho = 0 at ALPHA Bonferroni-corrected over
features x classes: a model whose score rises with sharpness among real videos alone reads sharpness,
not manipulation. One class is enough: a model that calls blurry reals fake follows blur among the reals
only. Beside rho, on the AUC scale of the data
audit: the feature's AUC for telling the model's upper-half from its lower-half scores within each class
(its decisions, as far as a feature alone predicts them; 0.5 = not at all), and its real-vs-fake AUC on
the same videos (what it predicts of the labels). Categorical features (codec) have no order: left out.

The audit is a run of its own in experiment `audit` (tags audit_kind=model, audited_run=<id>): the
evaluate run stays as evaluate.py finished it, since reports and lineage read its status, end time and
files.
"""

from __future__ import annotations

import csv
import itertools
import math
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from src.data.audit import CATEGORICAL, FEATURES, VideoFeatures
from src.experiments import tracking
from src.utils.errors import ConfigError, UserError
from src.utils.stats import bootstrap_auc

MIN_ABS_RHO = 0.5  # the smallest within-class |Spearman rho| flagged: a strong, not a faint, dependence
ALPHA = 0.05  # family-wise: divided by the number of tests (features x classes)
EXACT_P_BELOW = 9  # classes of up to 8 videos get an exact p-value (8! = 40,320 orderings)
SCORES_ARTIFACT, CONFIG_ARTIFACT = "video_scores.csv", "config.yaml"
SCORE_COLUMNS = ("path", "label", "logit")
CLASSES = {0: "real", 1: "fake"}
ORDERED = [f for f in FEATURES if f not in CATEGORICAL]  # the features a rank correlation applies to


class ModelAuditError(UserError):
    """The run given cannot be audited: reported in one line."""


# ---------------------------------------------------------------------------------------------------------
# Statistics


def spearman_p(x, y) -> tuple[float, float]:
    """Spearman's rho and the two-sided p-value of rho = 0; NaN for fewer than 3 values or a constant
    variable. Below EXACT_P_BELOW values the p-value is exact (every ordering of x against y enumerated):
    scipy's t-approximation calls a perfect ordering of 3 videos, which 1 in 3 random ones have, p = 0."""
    from scipy.stats import rankdata, spearmanr

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return (math.nan, math.nan)
    result = spearmanr(x, y)
    rho = float(result.statistic)
    if x.size >= EXACT_P_BELOW:
        return (rho, float(result.pvalue))
    rx, ry = rankdata(x) - (x.size + 1) / 2, rankdata(y) - (x.size + 1) / 2
    orderings = np.array(list(itertools.permutations(range(x.size))))
    null = (rx[orderings] * ry).sum(1) / math.sqrt((rx**2).sum() * (ry**2).sum())
    return (rho, float(np.mean(np.abs(null) >= abs(rho) - 1e-12)))


def bootstrap_spearman(x, y, n_boot: int = 2000, seed: int = 0, level: float = 0.95):
    """(rho, low, high): Spearman's rho and its percentile bootstrap interval, pairs resampled with
    replacement (indices `default_rng(seed).integers(0, n, (n_boot, n))`); every resample is ranked
    at once (average ranks for ties), so 2000 resamples of a few hundred videos take milliseconds."""
    from scipy.stats import rankdata

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    rho = spearman_p(x, y)[0]
    if math.isnan(rho):
        return (math.nan, math.nan, math.nan)
    draws = np.random.default_rng(seed).integers(0, x.size, (n_boot, x.size))
    rx, ry = rankdata(x[draws], axis=1), rankdata(y[draws], axis=1)
    rx -= rx.mean(1, keepdims=True)
    ry -= ry.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample of one repeated value: no rho
        values = (rx * ry).sum(1) / np.sqrt((rx**2).sum(1) * (ry**2).sum(1))
    values = values[np.isfinite(values)]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail]) if values.size else (math.nan, math.nan)
    return (rho, float(low), float(high))


def upper_half(scores) -> np.ndarray:
    """1 for the scores above their median (the model's higher-scored half), else 0."""
    scores = np.asarray(scores, np.float64)
    return (scores > np.median(scores)).astype(np.int64)


@dataclass
class Estimate:
    value: float
    low: float
    high: float

    def cell(self, flagged: bool = False) -> str:
        if math.isnan(self.value):
            return "-"
        return f"{self.value:.2f} [{self.low:.2f},{self.high:.2f}]" + ("!" if flagged else " ")


NAN = Estimate(math.nan, math.nan, math.nan)


@dataclass
class ModelAuditRow:
    """One feature: per class (`real`, `fake`) its videos, rho, rho's p-value, the AUC for the model's
    upper vs lower half and the flag; and its real-vs-fake AUC on all the scored videos."""

    feature: str
    n: dict[str, int]
    rho: dict[str, Estimate]
    p_value: dict[str, float]
    half_auc: dict[str, Estimate]
    label_auc: Estimate
    flagged: dict[str, bool]

    @property
    def risk(self) -> bool:
        return any(self.flagged.values())


def flag(rho: Estimate, p_value: float, tests: int) -> bool:
    """|rho| >= MIN_ABS_RHO, its interval excluding 0, and p < ALPHA / tests (Bonferroni)."""
    return (
        not math.isnan(rho.value)
        and abs(rho.value) >= MIN_ABS_RHO
        and (rho.low > 0 or rho.high < 0)
        and p_value < ALPHA / tests
    )


def model_audit_table(
    videos: list[VideoFeatures], logits: dict[str, float], resamples: int = 2000, seed: int = 0
) -> list[ModelAuditRow]:
    """One row per ordered feature, from the measured `videos` and the model's logit per video path."""
    tests = len(ORDERED) * len(CLASSES)
    rows = []
    for feature in ORDERED:
        usable = [v for v in videos if v.path in logits and math.isfinite(_number(v.values.get(feature)))]
        values = np.array([_number(v.values[feature]) for v in usable], np.float64)
        scores = np.array([logits[v.path] for v in usable], np.float64)
        labels = np.array([v.label for v in usable], np.int64)
        n, rho, p_value, half, flagged = {}, {}, {}, {}, {}
        for label, name in CLASSES.items():
            x, y = values[labels == label], scores[labels == label]
            n[name] = int(x.size)
            rho[name] = Estimate(*bootstrap_spearman(x, y, resamples, seed))
            p_value[name] = spearman_p(x, y)[1]
            half[name] = Estimate(*bootstrap_auc(x, upper_half(y), resamples, seed)) if x.size else NAN
            flagged[name] = flag(rho[name], p_value[name], tests)
        label_auc = Estimate(*bootstrap_auc(values, labels, resamples, seed)) if values.size else NAN
        rows.append(ModelAuditRow(feature, n, rho, p_value, half, label_auc, flagged))
    return rows


def _number(value) -> float:
    """A feature value as a float; NaN when it is missing or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def risky_features(rows: list[ModelAuditRow]) -> list[str]:
    return [r.feature for r in rows if r.risk]


# ---------------------------------------------------------------------------------------------------------
# Tables and files


def caption() -> str:
    tests = len(ORDERED) * len(CLASSES)
    return (
        "rho: Spearman rank correlation between the feature and the model's logit WITHIN one class (real "
        "videos only, fake videos only: the label is not the confound), 95 % bootstrap interval. half AUC: "
        "how well the feature alone tells the model's upper-half from its lower-half scores within the "
        "class (0.5 = not at all). label AUC: the feature's real-vs-fake AUC on the same videos. ! = the "
        f"model follows the feature (shortcut risk): |rho| >= {MIN_ABS_RHO}, its interval excluding 0 and "
        f"Spearman's p < {ALPHA} / {tests} features x classes (Bonferroni), in either class."
    )


def _heads(rows: list[ModelAuditRow]) -> list[str]:
    n = rows[0].n if rows else {"real": 0, "fake": 0}
    return [
        f"rho real ({n['real']})",
        f"rho fake ({n['fake']})",
        "half AUC real",
        "half AUC fake",
        "label AUC",
    ]


def _cells(row: ModelAuditRow) -> list[str]:
    return [
        row.rho["real"].cell(row.flagged["real"]),
        row.rho["fake"].cell(row.flagged["fake"]),
        row.half_auc["real"].cell(),
        row.half_auc["fake"].cell(),
        row.label_auc.cell(),
    ]


def console_table(rows: list[ModelAuditRow]) -> str:
    width = max(map(len, ORDERED)) + 2
    out = textwrap.wrap(caption(), width + 21 * 5 + 10)
    out.append("feature".ljust(width) + "".join(h.rjust(21) for h in _heads(rows)) + "  risk")
    for row in rows:
        cells = "".join(c.rjust(21) for c in _cells(row))
        out.append(row.feature.ljust(width) + cells + ("  SHORTCUT" if row.risk else ""))
    return "\n".join(out)


def markdown_table(rows: list[ModelAuditRow]) -> str:
    lines = [
        "| feature | " + " | ".join(_heads(rows)) + " | shortcut risk |",
        "| :-- |" + " --: |" * 5 + " :-: |",
    ]
    for row in rows:
        cells = [c.rstrip().replace("!", " **!**") for c in _cells(row)]
        lines.append(f"| {row.feature} | " + " | ".join(cells) + f" | {'**yes**' if row.risk else 'no'} |")
    return "\n".join(lines) + "\n"


def write_reports(
    videos: list[VideoFeatures],
    logits: dict[str, float],
    rows: list[ModelAuditRow],
    out_dir: Path,
    title: str,
) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"features": out_dir / "scores_features.csv", "csv": out_dir / "model_audit.csv"}
    files["md"] = out_dir / "model_audit.md"
    with files["features"].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "logit", *FEATURES])
        for v in videos:
            writer.writerow([v.path, v.label, repr(logits[v.path]), *(v.values.get(k, "") for k in FEATURES)])
    with files["csv"].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["feature", "class", "n", "rho", "rho_ci_low", "rho_ci_high", "rho_p_value"]
            + ["half_auc", "half_auc_ci_low", "half_auc_ci_high", "flagged"]
        )
        for r in rows:
            for c in CLASSES.values():
                rho, half = r.rho[c], r.half_auc[c]
                writer.writerow(
                    [r.feature, c, r.n[c], rho.value, rho.low, rho.high, r.p_value[c]]
                    + [half.value, half.low, half.high, int(r.flagged[c])]
                )
    risky = risky_features(rows)
    legend = "\n".join(f"- `{name}`: {FEATURES[name]}" for name in ORDERED)
    files["md"].write_text(
        f"# Shortcut audit of a model: {title}\n\n{caption().replace('! =', '**!** =')}\n\n"
        + markdown_table(rows)
        + f"\nThe model follows: {', '.join(risky) if risky else 'none of these features'}\n\n"
        f"Features:\n{legend}\n"
    )
    return files


# ---------------------------------------------------------------------------------------------------------
# The evaluate run


@dataclass
class AuditedRun:
    id: str
    name: str
    tags: dict[str, str]
    labels: dict[str, int]  # video path -> label (1 = fake), from video_scores.csv
    logits: dict[str, float]
    config: DictConfig  # what evaluate.py logged as config.yaml


def load_run(uri: str, run_id: str) -> AuditedRun:
    """The evaluate run `run_id` of the store at `uri`, its scores and its logged config; a
    ModelAuditError naming the run and the fix when it is unknown, not an evaluate run, or lacks a file."""
    from mlflow.exceptions import MlflowException

    store = tracking.client(uri)
    try:
        run = store.get_run(run_id)
    except MlflowException:
        raise ModelAuditError(
            f"run={run_id}: no such run in the MLflow store {uri}; copy an evaluate run's id from make ui "
            f"(experiment '{tracking.EVALUATE_EXPERIMENT}') or set MLFLOW_TRACKING_URI to its store"
        ) from None
    tags, name = run.data.tags, run.info.run_name
    source = tags.get("mlflow.source.name", "")
    if source != "evaluate.py":
        experiment = store.get_experiment(run.info.experiment_id).name
        raise ModelAuditError(
            f"run={run_id} ({name}, experiment '{experiment}', source {source or 'unknown'}) is not an evaluate "
            "run; give the id of an evaluate.py run: its video_scores.csv holds the scores audited"
        )
    with tempfile.TemporaryDirectory(prefix="model-audit-") as tmp:
        files = {}
        for artifact in (SCORES_ARTIFACT, CONFIG_ARTIFACT):
            try:
                files[artifact] = Path(tracking.download_artifact(uri, run_id, artifact, tmp))
            except (MlflowException, OSError):
                raise ModelAuditError(
                    f"run={run_id} ({name}, status {run.info.status}) has no {artifact} artifact; "
                    "audit an evaluate run that finished (make ui lists them)"
                ) from None
        with files[SCORES_ARTIFACT].open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in SCORE_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ModelAuditError(f"run={run_id}: {SCORES_ARTIFACT} lacks column(s) {', '.join(missing)}")
            try:
                table = [(row["path"], int(row["label"]), float(row["logit"])) for row in reader]
            except (TypeError, ValueError) as error:
                raise ModelAuditError(
                    f"run={run_id}: {SCORES_ARTIFACT} has a row that is not a number ({error})"
                ) from None
        config = OmegaConf.load(files[CONFIG_ARTIFACT])
    if not isinstance(config, DictConfig) or not isinstance(config.get("data"), DictConfig):
        raise ModelAuditError(f"run={run_id}: its {CONFIG_ARTIFACT} has no data settings (data:)")
    labels = {path: label for path, label, _ in table}
    logits = {path: logit for path, _, logit in table if math.isfinite(logit)}
    return AuditedRun(run_id, name, dict(tags), labels, logits, config)


def command_line_data_keys(run_data: str) -> list[str]:
    """The `data.<key>` paths typed on the command line (Hydra's task overrides), which replace the run's
    values; `data=<option>` only when it is the run's own dataset (its keys become typeable)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    keys = []
    for override in HydraConfig.get().overrides.task:
        key, _, value = override.lstrip("+~").partition("=")
        if key == "data" and value != run_data:
            raise ConfigError(
                f"data={value} with run=: the run's own data settings ({run_data}) are audited; drop data= "
                "and replace single keys (data.root=...)"
            )
        if key.startswith("data."):
            keys.append(key)
    return keys


def data_config(cfg: DictConfig, logged: DictConfig, keys: list[str]) -> DictConfig:
    """The run's logged `data` node with the values of `keys` taken from `cfg` as composed. The log is
    resolved, so what the run derived from a replaced path by interpolation (`index.root: ${data.root}`,
    FF++'s `${data.root}/splits`) would keep the old path: a string equal to it, or below it, follows it."""
    data = OmegaConf.to_container(logged.data, resolve=True)
    for key in keys:
        name, new = key.removeprefix("data."), OmegaConf.select(cfg, key)
        old = OmegaConf.select(OmegaConf.create(data), name)
        if isinstance(old, str) and old and isinstance(new, str):
            data = _follow(data, old.rstrip("/"), new.rstrip("/"))
        data = OmegaConf.create(data)
        OmegaConf.update(data, name, new, merge=False)
        data = OmegaConf.to_container(data)
    return OmegaConf.create(data)


def _follow(node, old: str, new: str):
    """`node` with every string equal to `old`, or a path below it, moved to `new`."""
    if isinstance(node, dict):
        return {k: _follow(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [_follow(v, old, new) for v in node]
    if isinstance(node, str) and (node.rstrip("/") == old or node.startswith(old + "/")):
        return new + node.rstrip("/")[len(old) :]
    return node
