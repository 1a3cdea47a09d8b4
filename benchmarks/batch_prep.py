"""Profile of the batch preparation on the training process: the DataModule's `on_after_batch_transfer`
on a MesoInception4 batch against the same normalisation done in place (one float temporary instead of
three). Runs in a fresh process (`python -m benchmarks.batch_prep '<overrides json>'`): in a long-lived one
the allocator keeps freed 25 MB blocks and the numbers no longer show the page-fault cost of new ones."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from src.experiments.config import PROJECT_ROOT
from src.experiments.wiring import build_datamodule


def measure(overrides: list[str], rounds: int = 20) -> dict:
    import torch

    from benchmarks.common import compose, median, rnd

    cfg = compose([*overrides, "model=mesonet"])
    dm = build_datamodule(cfg)
    size, batch = cfg.model.input.size, cfg.model.batch_size
    pixels = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8)
    batch_in = (pixels, torch.zeros(batch), torch.arange(batch))
    mean, scale = dm.mean, 1.0 / dm.std

    def framework():
        return dm.on_after_batch_transfer(batch_in, 0)[0]

    def in_place():
        return pixels.movedim(-1, -3).float().sub_(mean).mul_(scale)

    variants = {
        "on_after_batch_transfer (framework)": framework,
        "in place: float().sub_(mean).mul_(1/std)": in_place,
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {
        "batch": f"{batch}x{size}x{size}x3 uint8, a fresh process",
        "median_ms": {k: rnd(median(v) * 1e3, 2) for k, v in times.items()},
        "same_values_atol_1e-6": bool(torch.allclose(framework(), in_place(), atol=1e-6)),
    }


def profile_batch_prep(overrides: list[str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.batch_prep", json.dumps(overrides)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
