"""Weight sources: scratch, pretrained (MesoNet Keras .h5 / torchvision ImageNet) and finetuned checkpoints.

Every file is treated as data: checkpoints load with `weights_only=True`, and a file that does not
fit the model fails with a message naming the file and the mismatch, never a silent partial load.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class WeightsNotFound(FileNotFoundError):
    pass


class IncompatibleWeights(ValueError):
    pass


def apply_weights(module, cfg: DictConfig) -> str:
    """Load the initial weights named by `cfg.weights` into the DeepfakeDetector; returns their origin."""
    source = cfg.weights.source
    if source == "scratch":
        return "scratch"
    if source == "pretrained":
        return load_pretrained(module.net, cfg)
    if source == "finetuned":
        path = resolve_finetuned_checkpoint(cfg)
        load_checkpoint(module, path)
        return str(path)
    raise ValueError(f"unknown weights.source={source!r}; choose scratch, pretrained or finetuned")


# -- pretrained -------------------------------------------------------------------------------
def load_pretrained(net, cfg: DictConfig) -> str:
    """Every network knows its own pretrained weights (`net.load_pretrained(cfg)`)."""
    if not hasattr(net, "load_pretrained"):
        raise ValueError(f"{type(net).__name__} has no pretrained weights; use weights=scratch")
    return net.load_pretrained(cfg)


DOWNLOAD_TIMEOUT_S = 60.0  # a stalled connection fails instead of hanging the run


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_file(path: str | Path) -> str:
    """How a weights file is recorded as provenance (tag `initial_weights`): its path and SHA-256."""
    return f"{path} sha256={sha256_of(path)}"


def check_sha256(path: Path, expected_prefix: str | None, fix: str) -> None:
    """Refuse a file whose SHA-256 does not start with the published `expected_prefix` (when there is one)."""
    if not expected_prefix:
        return
    actual = sha256_of(path)
    if not actual.startswith(expected_prefix.lower()):
        raise IncompatibleWeights(
            f"{path}: SHA-256 {actual[:16]}... does not match the published {expected_prefix} "
            f"(a corrupt, partial or substituted file). {fix}"
        )


def download(url: str, path: Path, sha256_prefix: str | None = None, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Download `url` to `path` atomically (a temporary sibling renamed into place), checking the hash
    before the file is ever visible under its final name. A stalled transfer fails after `timeout` s."""
    import urllib.request

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, tmp.open("wb") as out:  # noqa: S310
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
        check_sha256(tmp, sha256_prefix, f"Downloaded from {url}; try again later.")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def fetch_keras_weights(file_name: str, url: str, weights_dir: str | Path, sha256: str | None = None) -> Path:
    """The MesoNet .h5 file from the local cache, downloaded into it (and hash-checked) when missing."""
    path = Path(weights_dir).expanduser() / file_name
    if path.is_file():
        return path
    try:
        log.info("downloading %s from %s", file_name, url)
        return download(url, path, sha256)
    except OSError as error:  # URLError and socket timeouts are OSErrors
        raise WeightsNotFound(
            f"MesoNet weights {file_name} are not in {path.parent} and could not be downloaded from {url} "
            f"({error}). Copy {file_name} there (e.g. `make weights WEIGHTS_SRC=<folder with the .h5 files>`), "
            "or set paths.weights_dir=<folder> / DEEPFAKE_WEIGHTS_DIR."
        ) from error


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict of tensors from a .pth/.pt file, as data only: a pickle that carries code is refused."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError for code-carrying pickles, RuntimeError for non-checkpoints
        raise IncompatibleWeights(f"{path} is not a loadable weights file: {type(error).__name__}: {error}") from error
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise IncompatibleWeights(f"{path} holds no state dict of tensors")
    return state


def torchvision_state_dict(member: str, file: str | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """ImageNet ResNet50 weights and their provenance: `file` when given, else torchvision's file from its
    cache (TORCH_HOME), downloaded there when missing. The cached file's SHA-256 must start with the prefix
    torchvision publishes in its name (resnet50-0676ba61.pth), and every file loads as data only."""
    from torch.hub import HASH_REGEX, get_dir
    from torchvision.models import ResNet50_Weights

    if file:
        path = Path(file).expanduser()
        if not path.is_file():
            raise WeightsNotFound(f"model.pretrained.file={path}: no such file")
        return load_state_dict_file(path), describe_file(path)
    weights = ResNet50_Weights[member]
    path = Path(get_dir()) / "checkpoints" / Path(weights.url).name
    published = HASH_REGEX.search(path.name).group(1)
    if not path.is_file():
        try:
            log.info("downloading %s", weights.url)
            download(weights.url, path, published)
        except OSError as error:
            raise WeightsNotFound(
                f"torchvision ResNet50 ImageNet weights ({member}) are not cached at {path} and could not be "
                f"downloaded from {weights.url} ({error}). Put the file there (or set TORCH_HOME), give your own "
                "file with model.pretrained.file=<path>, or use weights=scratch."
            ) from error
    check_sha256(path, published, "Delete it so it is downloaded again, or give your own file with "
                 "model.pretrained.file=<path>.")
    return load_state_dict_file(path), f"torchvision ResNet50_Weights.{member} " + describe_file(path)


# -- finetuned --------------------------------------------------------------------------------
def resolve_finetuned_checkpoint(cfg: DictConfig) -> Path:
    """weights.path, else the best checkpoint of weights.run_id, else of the latest finished train run
    of this model in the MLflow store."""
    if cfg.weights.get("path"):
        path = Path(cfg.weights.path).expanduser()
        if not path.is_file():
            raise WeightsNotFound(f"weights.path={path}: no such checkpoint file")
        return path
    import mlflow

    from src.experiments.tracking import TRAIN_EXPERIMENT, tracking_uri

    client = mlflow.MlflowClient(tracking_uri(cfg))
    run_id = cfg.weights.get("run_id")
    if not run_id:
        experiment = client.get_experiment_by_name(TRAIN_EXPERIMENT)
        runs = []
        if experiment is not None:
            runs = client.search_runs(
                [experiment.experiment_id],
                filter_string=f"tags.model = '{cfg.model.name}' and attributes.status = 'FINISHED'",
                order_by=["attributes.end_time DESC"],
                max_results=1,
            )
        if not runs:
            raise WeightsNotFound(
                f"weights=finetuned: no finished training run of model={cfg.model.name} in experiment "
                f"'{TRAIN_EXPERIMENT}' of {tracking_uri(cfg)}. Train one first (python train.py model={cfg.model.name}) "
                "or give weights.path=<checkpoint> / weights.run_id=<run>."
            )
        run_id = runs[0].info.run_id
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="checkpoints/best.ckpt", tracking_uri=tracking_uri(cfg)
        )
    except Exception as error:  # MlflowException for unknown runs or missing artifacts
        raise WeightsNotFound(f"MLflow run {run_id} has no artifact checkpoints/best.ckpt ({error})") from error
    log.info("finetuned weights: run %s -> %s", run_id, local)
    return Path(local)


def load_checkpoint(module, path: str | Path) -> None:
    """Load a Lightning checkpoint (or bare state dict) written by train.py, strictly, as data only."""
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError for code-carrying pickles, RuntimeError for non-checkpoints
        raise IncompatibleWeights(f"{path} is not a loadable checkpoint: {type(error).__name__}: {error}") from error
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise IncompatibleWeights(f"{path} holds no state dict of tensors")
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected.keys() & state.keys()
        if state[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"missing {len(missing)} keys (e.g. {missing[:3]})")
        if unexpected:
            problems.append(f"unexpected {len(unexpected)} keys (e.g. {unexpected[:3]})")
        if mismatched:
            problems.append(f"shape mismatch: {mismatched[:3]}")
        raise IncompatibleWeights(
            f"{path} does not fit {type(module.net).__name__}: " + "; ".join(problems)
            + " (a checkpoint of another model?)"
        )
    module.load_state_dict(state, strict=True)
