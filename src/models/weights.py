"""Weight sources: scratch and pretrained (MesoNet Keras .h5 / torchvision ImageNet), and what every source
uses: lineage, provenance, hashed downloads, strict checkpoint loading. A source is called as
`source(module, lineage) -> Provenance`; finetuned checkpoints, found in the tracking store, are
src/experiments/finetuned.py's.

Every file is treated as data: checkpoints load with `weights_only=True`, and a file that does not
fit the model fails with a message naming the file and the mismatch, never a silent partial load.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from src.utils.errors import UserError, check
from src.utils.files import atomic_write

log = logging.getLogger(__name__)


class WeightsNotFound(UserError, FileNotFoundError):
    """Weights that are neither where they were looked for nor downloadable: the message says what to provide."""


class IncompatibleWeights(UserError, ValueError):
    """A weights file that does not fit: unreadable, code-carrying, another model's, or a hash mismatch."""


@dataclass(frozen=True)
class Lineage:
    """What a finetuned checkpoint must have been trained on to be scored here."""

    model: str
    data: str
    fold: int
    input_contract: str
    data_fingerprint: str | None = None


@dataclass
class Provenance:
    """Where the initial weights came from, as run tags: `initial_weights` is a file and its SHA-256 or
    `runs:/<id>/checkpoints/best.ckpt sha256=...`, never a temporary path."""

    initial_weights: str
    source_run_id: str | None = None
    source_weights: str | None = None  # the training run's own initial weights: pretrained | scratch
    train_seed: str | None = None

    def tags(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def input_contract(spec: Mapping) -> str:
    """One string for a model's input contract (kind, size, normalization, clip length): checkpoints are
    matched on it, since a model fed other pixels than it was trained on scores garbage silently."""
    mean = ",".join(f"{float(v):g}" for v in spec["mean"])
    std = ",".join(f"{float(v):g}" for v in spec["std"])
    return f"{spec['kind']}/{spec['size']}px/mean={mean}/std={std}/T={spec['frames_per_clip']}"


@dataclass
class PretrainedSpec:
    """Where weights=pretrained finds a net's published weights (`model.pretrained`, beside `model.input`;
    each net reads the keys it knows).

    Args:
        file: MesoNet's .h5 name in paths.weights_dir, or a local weights file for the other nets.
        url: MesoNet: where a missing .h5 is downloaded from.
        sha256: MesoNet: the expected hash of a file that is not among the originals.
        torchvision_weights: ResNet50: the member of torchvision's ResNet50_Weights.
    """

    file: str | None = None
    url: str | None = None
    sha256: str | None = None
    torchvision_weights: str | None = None


class Scratch:
    """Random initialization.

    Args:
        source: the option's name (run tag `weights`).
    """

    def __init__(self, source: str = "scratch"):
        self.name = source

    def __call__(self, module, lineage: Lineage | None = None) -> Provenance:
        return Provenance("scratch")


class Pretrained:
    """The weights each network was published with: `net.load_pretrained(module.pretrained_cfg, weights_dir)`
    (MesoNet's Keras files, ImageNet for the backbones). The net gets its own block (model.pretrained).

    Args:
        weights_dir: the folder of MesoNet's .h5 files (paths.weights_dir).
        source: the option's name (run tag `weights`).
    """

    def __init__(self, weights_dir: str, source: str = "pretrained"):
        self.weights_dir, self.name = weights_dir, source

    def __call__(self, module, lineage: Lineage | None = None) -> Provenance:
        net = module.net
        check(
            hasattr(net, "load_pretrained"),
            "weights",
            "pretrained",
            f"{type(net).__name__} has no published weights; use weights=scratch",
        )
        return Provenance(net.load_pretrained(module.pretrained_cfg, self.weights_dir))


# -- pretrained -------------------------------------------------------------------------------
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


def download(
    url: str, path: Path, sha256_prefix: str | None = None, timeout: float = DOWNLOAD_TIMEOUT_S
) -> Path:
    """Download `url` to `path` atomically (a temporary sibling renamed into place), checking the hash
    before the file is ever visible under its final name. A stalled transfer fails after `timeout` s."""
    import urllib.request

    path.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=timeout) as response, atomic_write(path) as out:  # noqa: S310
        for block in iter(lambda: response.read(1 << 20), b""):
            out.write(block)
        out.flush()
        check_sha256(Path(out.name), sha256_prefix, f"Downloaded from {url}; try again later.")
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
        raise IncompatibleWeights(
            f"{path} is not a loadable weights file: {type(error).__name__}: {error}"
        ) from error
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
    check_sha256(
        path,
        published,
        "Delete it so it is downloaded again, or give your own file with model.pretrained.file=<path>.",
    )
    return load_state_dict_file(path), f"torchvision ResNet50_Weights.{member} " + describe_file(path)


# -- checkpoints --------------------------------------------------------------------------------
def load_checkpoint(module, path: str | Path) -> None:
    """Load a Lightning checkpoint (or bare state dict) written by train.py, strictly, as data only."""
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError for code-carrying pickles, RuntimeError for non-checkpoints
        raise IncompatibleWeights(
            f"{path} is not a loadable checkpoint: {type(error).__name__}: {error}"
        ) from error
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
            f"{path} does not fit {type(module.net).__name__}: "
            + "; ".join(problems)
            + " (a checkpoint of another model?)"
        )
    module.load_state_dict(state, strict=True)
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint and hasattr(module, "on_load_checkpoint"):
        module.on_load_checkpoint(checkpoint)  # what the checkpoint recorded besides weights (validation)
