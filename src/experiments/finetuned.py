"""weights=finetuned: a checkpoint written by train.py, found in the tracking store by its lineage.

A weight source like src/models/weights.py's, called as `source(module, lineage) -> Provenance`; it lives
here because it reads the MLflow store (through src/experiments/tracking), which models never touch.
"""

from __future__ import annotations

import datetime
import logging
import tempfile
from pathlib import Path

from src.experiments import tracking
from src.models.weights import Lineage, Provenance, WeightsNotFound, describe_file, load_checkpoint, sha256_of

log = logging.getLogger(__name__)
BEST_CHECKPOINT = "checkpoints/best.ckpt"  # where train.py logs a run's selected checkpoint


class Finetuned:
    """A checkpoint written by train.py: `path`, or the best checkpoint of MLflow run `run_id`, or of the
    latest finished training run whose lineage matches (same model, dataset and index fingerprint, fold and
    input contract; `train_data` for another dataset, `train_seed` for one seed). `tracking_uri` is the store
    of the training runs (the task passes the run's own when weights.tracking_uri is null). Its parameters are
    the `weights.*` keys of weights=finetuned (the schema is generated from them).

    Args:
        tracking_uri: the store of the training runs; null: the run's own.
        path: a checkpoint file instead of a search.
        run_id: an MLflow run of the train experiment instead of a search.
        train_data: the dataset the checkpoint was trained on (default: the evaluated one).
        train_fold: the fold (default: data.fold when train_data is the evaluated dataset, any otherwise).
        train_seed: only a training run with this seed.
        experiment: the MLflow experiment of the training runs.
        source: the option's name (run tag `weights`).
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        path: str | None = None,
        run_id: str | None = None,
        train_data: str | None = None,
        train_fold: int | None = None,
        train_seed: int | None = None,
        experiment: str = "train",
        source: str = "finetuned",
    ):
        self.name = source
        self.tracking_uri, self.path, self.run_id = tracking_uri, path, run_id
        self.train_data, self.train_fold, self.train_seed = train_data, train_fold, train_seed
        self.experiment = experiment

    def __call__(self, module, lineage: Lineage | None = None) -> Provenance:
        if self.path:
            path = Path(self.path).expanduser()
            if not path.is_file():
                raise WeightsNotFound(f"weights.path={path}: no such checkpoint file")
            load_checkpoint(module, path)
            return Provenance(describe_file(path))
        run = (
            self.find_run(lineage)
            if not self.run_id
            else tracking.client(self.tracking_uri).get_run(self.run_id)
        )
        run_id = run.info.run_id
        with tempfile.TemporaryDirectory(prefix="finetuned-") as tmp:  # no copy outlives the load
            try:
                local = tracking.download_artifact(self.tracking_uri, run_id, BEST_CHECKPOINT, tmp)
            except Exception as error:  # MlflowException for unknown runs or missing artifacts
                raise WeightsNotFound(
                    f"MLflow run {run_id} has no artifact {BEST_CHECKPOINT} ({error})"
                ) from error
            load_checkpoint(module, local)
            digest = sha256_of(local)
        tags = run.data.tags
        return Provenance(
            f"runs:/{run_id}/{BEST_CHECKPOINT} sha256={digest}", run_id, tags.get("weights"), tags.get("seed")
        )

    def candidates(self, model: str) -> list:
        """Finished training runs of `model` with a best checkpoint, newest first."""
        client = tracking.client(self.tracking_uri)
        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is None:
            return []
        return client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.model = '{model}' and attributes.status = 'FINISHED'",
            order_by=["attributes.end_time DESC"],
        )

    def requirements(self, lineage: Lineage, with_fingerprint: bool = True) -> dict[str, str]:
        """The tags a matching training run must carry.

        Args:
            lineage: the evaluated model and data; its `data_fingerprint` may be a function, called here.
            with_fingerprint: False to leave the index fingerprint out (no run to compare it with).
        """
        fingerprint = lineage.data_fingerprint if with_fingerprint else None
        fingerprint = fingerprint() if callable(fingerprint) else fingerprint
        data = self.train_data or lineage.data
        wanted = {"model": lineage.model, "data": data, "input_contract": lineage.input_contract}
        same_data = data == lineage.data
        fold = self.train_fold if self.train_fold is not None else (lineage.fold if same_data else None)
        if fold is not None:
            wanted["fold"] = str(fold)
        if same_data and fingerprint:
            wanted["data_fingerprint"] = fingerprint
        if self.train_seed is not None:
            wanted["seed"] = str(self.train_seed)
        return wanted

    def find_run(self, lineage: Lineage):
        runs = self.candidates(lineage.model)
        if not runs:  # nothing to compare the data's fingerprint with: no indexing
            raise WeightsNotFound(
                self.explain_missing(runs, self.requirements(lineage, with_fingerprint=False))
            )
        wanted = self.requirements(lineage)
        matches = [r for r in runs if all(r.data.tags.get(k) == v for k, v in wanted.items())]
        if not matches:
            raise WeightsNotFound(self.explain_missing(runs, wanted))
        run = matches[0]
        log.info(
            "weights=finetuned: using the checkpoint of run %s (%s, trained on %s fold %s, seed %s, finished %s)%s",
            run.info.run_id,
            run.info.run_name,
            run.data.tags.get("data"),
            run.data.tags.get("fold"),
            run.data.tags.get("seed"),
            _when(run.info.end_time),
            f"; the latest of {len(matches)} matching" if len(matches) > 1 else "",
        )
        return run

    def explain_missing(self, runs: list, wanted: dict[str, str]) -> str:
        """One line: what training runs exist, and which lineage none of them has."""

        def describe(tags: dict) -> str:
            text = f"{tags.get('data', '?')} fold {tags.get('fold', '?')}"
            if tags.get("input_contract") != wanted["input_contract"]:
                text += " (other input)"
            elif tags.get("data") == wanted["data"] and tags.get("data_fingerprint") != wanted.get(
                "data_fingerprint", tags.get("data_fingerprint")
            ):
                text += " (other index)"
            return text

        model = wanted["model"]
        found = sorted({describe(r.data.tags) for r in runs})
        have = (
            f"found {model} trained on " + ", ".join(found)
            if found
            else f"found no finished {model} training run"
        )
        want = (
            f"{wanted['data']}"
            + (f" fold {wanted['fold']}" if "fold" in wanted else "")
            + (f" seed {wanted['seed']}" if "seed" in wanted else "")
        )
        index = f", index {wanted['data_fingerprint']}" if "data_fingerprint" in wanted else ""
        return (
            f"weights=finetuned: {have}; none on {want} (input {wanted['input_contract']}{index}) in experiment "
            f"'{self.experiment}' of {self.tracking_uri}. Train one (python train.py model={model} "
            f"data={wanted['data']}"
            + (f" data.fold={wanted['fold']}" if "fold" in wanted else "")
            + "), or choose with weights.run_id=<run>, weights.path=<checkpoint> or weights.train_data=<data>."
        )


def _when(millis: int | None) -> str:
    return datetime.datetime.fromtimestamp((millis or 0) / 1000).strftime("%Y-%m-%d %H:%M:%S")
