"""Structured configs: the types and keys of the config groups users type into.

Each YAML of a group starts its defaults list with `- /schema/<group>@_here_: <group>`, so Hydra merges
the YAML into the dataclass below: a value of the wrong type (`trainer.max_epochs=two`) or a misspelt key
(`trainer.max_epoch=2`) fails while Hydra composes the config, naming the key, before any data or weights
are touched. What a type cannot say (ranges, combinations, keys added with `+`, values `???` left
missing) is checked by `src.experiments.config.check_config`.

`register_schemas()` runs on import of `src.experiments.config`, which every entry point and compose
helper imports for CONFIG_DIR. The data group's schema is the data package's own (`src.data.settings`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from src.data.settings import InputContract


# -- model ------------------------------------------------------------------------------------------
@dataclass
class PretrainedSpec:
    """Where weights=pretrained finds the net's published weights (each net reads the keys it knows)."""

    file: str | None = None  # MesoNet's .h5 name in paths.weights_dir, or a local file for the others
    url: str | None = None  # MesoNet: where a missing .h5 is downloaded from
    sha256: str | None = None  # MesoNet: expected hash of a file not among the originals
    torchvision_weights: str | None = None  # ResNet50: torchvision's weights enum member


@dataclass
class ModelConfig:
    _target_: str = "src.models.module.DeepfakeDetector"
    _convert_: str = "all"
    name: str = MISSING  # the option name (MLflow tag `model`, checkpoint folders)
    title: str = MISSING  # display title (report columns)
    net: dict[str, Any] = MISSING  # the network: _target_ and its constructor arguments
    input: InputContract = field(default_factory=InputContract)
    pretrained: PretrainedSpec = field(default_factory=PretrainedSpec)  # module.pretrained_cfg
    batch_size: int = MISSING  # module.batch_size: what the data module batches by
    # optimization (conf/model/shared/optimization.yaml)
    optimizer: dict[str, Any] = MISSING  # a partial: the module passes its parameters
    scheduler: dict[str, Any] | None = None
    pos_weight: Any = None  # null, a positive number, or "auto" (n_real / n_fake of the training split)
    channels_last: bool = True


# -- trainer ----------------------------------------------------------------------------------------
@dataclass
class TrainerConfig:
    """Every argument of lightning.pytorch.Trainer (2.6) with its default, typed where the type is one
    OmegaConf knows (a test keeps this list equal to Trainer's signature). Values that are objects
    (logger, callbacks, plugins) are passed by the entry points, not typed in."""

    _target_: str = "lightning.pytorch.Trainer"
    accelerator: Any = "auto"
    strategy: Any = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    precision: Any = None
    logger: Any = None
    callbacks: Any = None
    fast_dev_run: Any = False
    max_epochs: int | None = None
    min_epochs: int | None = None
    max_steps: int = -1
    min_steps: int | None = None
    max_time: Any = None
    limit_train_batches: Any = None  # an int counts batches, a float is a fraction: not coerced
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    limit_predict_batches: Any = None
    overfit_batches: Any = 0.0
    val_check_interval: Any = None
    check_val_every_n_epoch: int | None = 1
    num_sanity_val_steps: int | None = None
    log_every_n_steps: int | None = None
    enable_checkpointing: bool | None = None
    enable_progress_bar: bool | None = None
    enable_model_summary: bool | None = None
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str | None = None
    deterministic: Any = None
    benchmark: bool | None = None
    inference_mode: bool = True
    use_distributed_sampler: bool = True
    profiler: Any = None
    detect_anomaly: bool = False
    barebones: bool = False
    plugins: Any = None
    sync_batchnorm: bool = False
    reload_dataloaders_every_n_epochs: int = 0
    default_root_dir: str | None = None
    enable_autolog_hparams: bool = True
    model_registry: str | None = None


# -- perturbations and augmentation ------------------------------------------------------------------
@dataclass
class AugmentConfig:
    """A test-time perturbation level: the transform evaluate.py applies, its display title and its
    position on the robustness axis."""

    level: str = MISSING
    title: str = MISSING
    axis: int = MISSING
    transform: dict[str, Any] = MISSING  # a partial (_target_, _partial_: true, parameters) called with size=


@dataclass
class TrainAugmentConfig:
    """A training augmentation: its name (run tag `train_augment`) and the transform the data module applies."""

    level: str = MISSING
    transform: dict[str, Any] = MISSING  # a partial (_target_, _partial_: true, parameters) called with size=


# -- weight sources -----------------------------------------------------------------------------------
@dataclass
class ScratchWeights:
    _target_: str = "src.models.weights.Scratch"
    source: str = "scratch"


@dataclass
class PretrainedWeights:
    _target_: str = "src.models.weights.Pretrained"
    source: str = "pretrained"
    weights_dir: str = MISSING


@dataclass
class FinetunedWeights:
    _target_: str = "src.experiments.finetuned.Finetuned"
    source: str = "finetuned"
    tracking_uri: str | None = None  # null: the run's own store
    path: str | None = None
    run_id: str | None = None
    train_data: str | None = None
    train_fold: int | None = None
    train_seed: int | None = None


# -- the top-level configs ------------------------------------------------------------------------------
@dataclass
class ExtrasConfig:
    """Conveniences around a run (conf/extras/)."""

    print_config: bool = False  # print the composed config as a tree before the run


@dataclass
class _Groups:
    """What every task has; each group is typed by its own schema (or is free: paths, logger)."""

    paths: Any = None
    data: Any = None
    logger: Any = None
    task: str = MISSING
    seed: int = 42
    extras: ExtrasConfig = field(default_factory=ExtrasConfig)
    tags: list[str] = field(default_factory=list)  # MLflow tags of the run


@dataclass
class _ModelTask(_Groups):
    """A task that runs a model: with its weights, under a Trainer."""

    model: Any = None
    weights: Any = None
    trainer: Any = None


@dataclass
class TrainConfig(_ModelTask):
    train_augment: Any = None
    callbacks: Any = None
    ckpt_path: str | None = None  # null: start fresh; "last": resume this configuration; or a checkpoint
    test_after_fit: bool = True
    optimized_metric: str = "best_val_video_auc"  # what train.py returns to a sweeper (hparams_search)


@dataclass
class EvaluateConfig(_ModelTask):
    augment: Any = None


@dataclass
class PredictConfig(_ModelTask):
    augment: Any = None
    video: str | None = None  # one video file: its score and per-frame scores printed
    videos: str | None = None  # a folder, a glob pattern or a list file: a CSV row per video
    output: str | None = None  # the CSV (default: <hydra output dir>/predictions.csv)
    explain: bool = False  # true: <video stem>_cam.png per video, its crops' class-activation maps


@dataclass
class PrepareConfig(_Groups):
    """prepare.py: shard `shard` of `shards` of the dataset's face-crop cache (config.check_config: the range)."""

    shard: int = 0
    shards: int = 1


@dataclass
class AuditSettings:
    frames_per_video: int = 8
    band: list[float] = field(default_factory=lambda: [0.35, 0.65])
    bootstrap_resamples: int = 2000
    seed: int = 0
    output_dir: str = MISSING
    mlflow: bool = True


@dataclass
class AuditConfig(_Groups):
    audit: AuditSettings = field(default_factory=AuditSettings)
    run: str | None = None  # an evaluate run's id: audit its model's scores instead of the dataset


GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "model": {"model": ModelConfig},
    "trainer": {"trainer": TrainerConfig},
    "augment": {"augment": AugmentConfig},
    "train_augment": {"train_augment": TrainAugmentConfig},
    "weights": {"scratch": ScratchWeights, "pretrained": PretrainedWeights, "finetuned": FinetunedWeights},
    "train": {"train": TrainConfig},
    "evaluate": {"evaluate": EvaluateConfig},
    "predict": {"predict": PredictConfig},
    "prepare": {"prepare": PrepareConfig},
    "audit": {"audit": AuditConfig},
}


def register_schemas() -> None:
    """Store every schema in Hydra's ConfigStore under group `schema/<group>` (the data group's from
    `src.data.settings`, generated from the settings it builds). Idempotent: storing again replaces them."""
    from hydra.core.config_store import ConfigStore

    from src.data import settings as data_schema

    store = ConfigStore.instance()
    for group, nodes in GROUP_SCHEMAS.items():
        for name, node in nodes.items():
            store.store(group=f"schema/{group}", name=name, node=node)
    data_schema.register(store)
