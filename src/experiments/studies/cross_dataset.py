"""`make cross-dataset`: the cross-dataset protocol end to end on embedded data, as a user would type it.

Embedded data stands in for the real sets: every "dataset" here is the embedded synthetic generator with its
own seed (its own identities, cameras and videos, none shared with the training set), written in that
dataset's layout (src/data/synthetic/layouts.py), so the indexers, the aligned 32-frame preprocessing, the
finetuned-weights lineage, the evaluation sweep and the report's cross-dataset table all run for real. The
numbers say nothing about Celeb-DF, DFDC or any real set: one generator made all of them.

With the real datasets a user types the two commands this prints, with `data.root=` and `paths.datasets.*=`
pointing at their folders (docs: Evaluation and reports, the cross-dataset protocol).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from src.experiments.config import CONFIG_DIR, PROJECT_ROOT

# small sets, every frame sampled: the FF++ stand-in 16 real videos with one fake each (FF++'s layout pairs
# them into train/val/test), each test set 20 videos (8 real with a fake each, 4 YouTube-real)
SET_SIZE = {"real_per_identity": 2, "fakes_per_real": 1, "num_frames": 32}
IDENTITIES = {"ffpp": 8}  # the others: 4
# the protocol's sets, as its experiment lists them (the training set, FF++, first)
TEST_SETS = tuple(OmegaConf.load(CONFIG_DIR / "experiment" / "cross_dataset.yaml").paths.datasets)


def stand_ins(folder: Path) -> dict[str, Path]:
    """The training set (FF++ layout, seed 0) and a test set of its own seed in each other layout. The
    FF++ column is the in-dataset one: its test split is held out from the same seed's training videos."""
    from src.data.synthetic import generate_synthetic_celebdf
    from src.data.synthetic.layouts import LAYOUTS

    roots: dict[str, Path] = {}
    for seed, name in enumerate(TEST_SETS):
        size = {
            **SET_SIZE,
            "num_identities": IDENTITIES.get(name, 4),
            "youtube_real": 0 if name == "ffpp" else 4,
        }
        source = generate_synthetic_celebdf(folder / f"synthetic-seed{seed}", seed=seed, **size)
        roots[name] = source if name == "celebdf" else LAYOUTS[name](source, folder / name)
    return roots


def run(args: list[str]) -> None:
    print(f"\n$ python {shlex.join(args)}", flush=True)
    start = time.perf_counter()
    code = subprocess.call([sys.executable, *args], cwd=PROJECT_ROOT)
    print(f"  ({time.perf_counter() - start:.0f} s, exit code {code})", flush=True)
    if code != 0:
        raise SystemExit(f"cross-dataset step failed: python {shlex.join(args)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--folder", type=Path, default=PROJECT_ROOT / "data" / "cross-dataset")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--models", default="mesonet", help="comma-separated model options to train and test")
    args = parser.parse_args(argv)
    roots = stand_ins(args.folder)
    for model in args.models.split(","):
        run(
            [
                "train.py",
                "experiment=cross_dataset_train",
                f"model={model}",
                f"data.root={roots['ffpp']}",
                "weights=scratch",
                f"trainer.max_epochs={args.epochs}",
                "data.folds=2",
                "tags=[cross_dataset_demo]",
            ]
        )
    run(
        [
            "evaluate.py",
            "experiment=cross_dataset",
            f"model={args.models}",
            "weights.train_fold=0",
            "tags=[cross_dataset_demo]",
            *(f"paths.datasets.{name}={root}" for name, root in roots.items()),
        ]
    )
    run(["-m", "src.experiments.report", "--preset", "cross_dataset"])


if __name__ == "__main__":
    main()
