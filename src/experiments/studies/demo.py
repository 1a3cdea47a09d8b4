"""`make demo`: the seed study on the embedded dataset, as the commands a user would type.

Trains MesoInception4 and a CPU-sized ResNet50+LSTM, evaluates the model x weights x augmentation
grid over the weights available offline, and prints the report.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

from src.experiments.config import PROJECT_ROOT
from src.experiments.tracking import default_tracking_uri

# CPU-sized ResNetLSTM: 8-frame clips, a few epochs; the evaluation uses the same clip contract
RESNET_CPU = ["model.input.frames_per_clip=8", "trainer.max_epochs=3"]


def imagenet_weights_cached() -> bool:
    from torch.hub import get_dir
    from torchvision.models import ResNet50_Weights

    return (Path(get_dir()) / "checkpoints" / Path(ResNet50_Weights.IMAGENET1K_V1.url).name).is_file()


def mesonet_weights_cached() -> bool:
    from hydra import compose, initialize_config_dir

    from src.experiments.config import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train")
    return (Path(cfg.paths.weights_dir).expanduser() / cfg.model.pretrained.file).is_file()


def run(args: list[str], check: bool = True) -> int:
    print(f"\n$ python {shlex.join(args)}", flush=True)
    start = time.perf_counter()
    code = subprocess.call([sys.executable, *args], cwd=PROJECT_ROOT)
    print(f"  ({time.perf_counter() - start:.0f} s, exit code {code})", flush=True)
    if check and code != 0:
        raise SystemExit(f"demo step failed: python {shlex.join(args)}")
    return code


def main() -> None:
    start = time.perf_counter()
    uri = default_tracking_uri()
    print(f"MLflow store: {uri}")
    meso_weights = "pretrained" if mesonet_weights_cached() else "scratch"
    resnet_weights = "pretrained" if imagenet_weights_cached() else "scratch"
    if meso_weights == "scratch":
        print(
            "Original MesoNet weights not in the weights cache (make weights): MesoNet trains from scratch."
        )
    if resnet_weights == "scratch":
        print("torchvision's ImageNet ResNet50 is not cached (offline): ResNetLSTM trains from scratch.")
    resnet_train = [f"weights={resnet_weights}", *RESNET_CPU]
    if resnet_weights == "pretrained":
        resnet_train.append("model.net.freeze_backbone=true")

    run(["train.py", "model=mesonet", f"weights={meso_weights}", "trainer.max_epochs=20"])
    run(["train.py", "model=resnet_lstm", *resnet_train])

    meso_grid = "pretrained,finetuned" if meso_weights == "pretrained" else "finetuned"
    resnet_grid = "pretrained,finetuned" if resnet_weights == "pretrained" else "finetuned"
    levels = "augment=none,flip,heavy"
    # one sweep folder (one sweep id) for both grids, so the report shows them side by side
    sweep = f"hydra.sweep.dir=multirun/evaluate/demo-{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    failures = run(
        [
            "evaluate.py",
            "-m",
            "model=mesonet",
            f"weights={meso_grid}",
            levels,
            sweep,
            "hydra.sweep.subdir=mesonet-${hydra.job.num}",
        ],
        check=False,
    )
    failures += run(
        [
            "evaluate.py",
            "-m",
            "model=resnet_lstm",
            f"weights={resnet_grid}",
            levels,
            RESNET_CPU[0],
            sweep,
            "hydra.sweep.subdir=resnet-${hydra.job.num}",
        ],
        check=False,
    )
    run(["-m", "src.experiments.report", "--preset", "study"])
    print(
        f"\nDemo finished in {(time.perf_counter() - start) / 60:.1f} min"
        + (" (some evaluation jobs failed: see above)" if failures else "")
    )
    print(
        f"MLflow store: {uri}\nOpen the UI with: make ui   (then http://127.0.0.1:5000/#/experiments/"
        "<evaluate's id>?workflowType=machine_learning, or choose 'Model training' at the top left)"
    )


if __name__ == "__main__":
    main()
