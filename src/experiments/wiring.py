"""How a task puts the config groups together: each group is built by Hydra from its `_target_`, and what
one group needs from another is passed here, as arguments, so that no group reads another group's keys."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from src.experiments.tracking import tracking_uri
from src.models.weights import Lineage, input_contract


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


def lineage(cfg: DictConfig, data_fingerprint: str | None = None) -> Lineage:
    """What finetuned weights must have been trained on to be scored under this config."""
    return Lineage(
        str(cfg.model.name),
        str(cfg.data.name),
        int(cfg.data.fold),
        input_contract(cfg.model.input),
        data_fingerprint,
    )
