"""bf16 autocast on a CPU with and without bf16 instructions.

`python -m benchmarks.bf16_cpu [--steps 3]` times training steps (forward, backward, Adam) of MesoInception4
(batch 32 of 256x256) and a ResNet50 (batch 8 of 224x224), channels_last, under bf16 autocast and in fp32,
twice: with oneDNN free to use every instruction this CPU has, and with oneDNN capped at AVX2
(`ONEDNN_MAX_CPU_ISA=AVX2`), which stands in for a CPU without AVX512-BF16/AMX (most laptops and older
servers). Each setting runs in its own process, because oneDNN reads the cap once at start-up. The
training default chooses for the hardware (`src.experiments.hardware.choose_precision`); the table ends with
what it chose on the measuring CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks.common import rnd

NETWORKS = {"MesoInception4, batch 32": (32, 256), "ResNet50, batch 8": (8, 224)}


def _network(name: str):
    if name.startswith("MesoInception4"):
        from src.models.nets.mesonet import MesoInception4

        return MesoInception4()
    import torchvision

    return torchvision.models.resnet50()


def step_seconds(steps: int) -> dict:
    """Best step time of each network under fp32 and bf16 autocast, the two alternating (the first step of
    each round left out: oneDNN builds its kernels there)."""
    import torch

    torch.manual_seed(0)
    out = {}
    for name, (batch, side) in NETWORKS.items():
        net = _network(name).to(memory_format=torch.channels_last)
        x = torch.randn(batch, 3, side, side).to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
        times = {"fp32": [], "bf16": []}
        for bf16 in (False, True, False, True):
            for step in range(steps + 1):
                start = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss = net(x).float().mean()
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                if step:
                    times["bf16" if bf16 else "fp32"].append(time.perf_counter() - start)
        out[name] = {k: min(v) for k, v in times.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(step_seconds(args.steps)))
        return 0
    print("| oneDNN | network | fp32 s/step | bf16 s/step | bf16 / fp32 |\n|---|---|---|---|---|")
    for label, cap in (("this CPU's instructions", None), ("capped at AVX2 (no bf16)", "AVX2")):
        env = dict(os.environ) | ({"ONEDNN_MAX_CPU_ISA": cap} if cap else {})
        command = [sys.executable, "-m", "benchmarks.bf16_cpu", "--child", "--steps", str(args.steps)]
        result = json.loads(
            subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
        )
        for name, seconds in result.items():
            ratio = seconds["bf16"] / seconds["fp32"]
            print(f"| {label} | {name} | {rnd(seconds['fp32'])} | {rnd(seconds['bf16'])} | {rnd(ratio)}x |")
    from src.experiments.hardware import choose_precision

    choice = choose_precision("cpu")
    print(
        f"\nThe training default (trainer.precision auto) on this CPU: {choice.precision} ({choice.reason})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
