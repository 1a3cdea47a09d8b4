"""How a task puts the config groups together: each group is built by Hydra from its `_target_`, and what
one group needs from another is passed here, as arguments, so that no group reads another group's keys."""

from __future__ import annotations

from collections.abc import Callable

import hydra
from omegaconf import DictConfig, OmegaConf

from src.experiments.tracking import tracking_uri
from src.models.weights import Lineage, Provenance, input_contract


def _plain(node):
    return None if node is None else OmegaConf.to_container(node, resolve=True)


def build_datamodule(cfg: DictConfig):
    """`instantiate(cfg.data)`, fed with the model's input contract and batch size (`data.batch_size`
    overrides it), the training augmentation, the test-time perturbation and the run's seed, where the
    task has them (the audit has no model: the data module's defaults apply)."""
    wiring = {"augment_seed": int(cfg.seed)}
    if cfg.get("model") is not None:
        wiring["input_contract"] = _plain(cfg.model.input)
        wiring["batch_size"] = cfg.data.get("batch_size") or cfg.model.batch_size
    if cfg.get("train_augment") is not None:
        wiring["train_augment"] = _plain(cfg.train_augment.transform)
    if cfg.get("augment") is not None:
        wiring["test_augment"] = _plain(cfg.augment.transform)
    return hydra.utils.instantiate(cfg.data, **wiring)


def build_model(cfg: DictConfig):
    """`instantiate(cfg.model)`: the LightningModule with its network."""
    return hydra.utils.instantiate(cfg.model)


def build_weights(cfg: DictConfig):
    """`instantiate(cfg.weights)`: the weight source, called as `source(module, lineage)`. Finetuned weights
    look for training runs in the run's own store unless weights.tracking_uri names another."""
    if "tracking_uri" in cfg.weights and not cfg.weights.tracking_uri:
        return hydra.utils.instantiate(cfg.weights, tracking_uri=tracking_uri(cfg))
    return hydra.utils.instantiate(cfg.weights)


def load_weights(cfg: DictConfig, module, datamodule=None) -> Provenance:
    """The one place a task's initial weights are resolved and loaded into `module`, before any data work:
    a missing file or training run fails here. Finetuned weights are matched to the data's lineage; its
    index fingerprint is read from `datamodule` (indexing, no cache build) only once a training run of the
    model is found to compare it with.

    Args:
        cfg: the composed config (its `weights`, `model` and `data` groups).
        module: the LightningModule `build_model` made.
        datamodule: the task's data module, when the task has a dataset (predict has none).
    """
    fingerprint = (lambda: datamodule.dataset_index().fingerprint()) if datamodule is not None else None
    return build_weights(cfg)(module, lineage(cfg, fingerprint))


def lineage(cfg: DictConfig, data_fingerprint: str | Callable[[], str | None] | None = None) -> Lineage:
    """What finetuned weights must have been trained on to be scored under this config.

    Args:
        cfg: the composed config.
        data_fingerprint: the dataset index's fingerprint, or a function that computes it when asked.
    """
    return Lineage(
        str(cfg.model.name),
        str(cfg.data.name),
        int(cfg.data.fold),
        input_contract(cfg.model.input),
        data_fingerprint,
    )
