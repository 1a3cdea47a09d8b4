"""Training cost per video of every model, on this machine: optimizer steps on real batches of the embedded
set, under bf16-mixed autocast (the training default) and in fp32, the two interleaved step by step
(`benchmarks.training.step_throughput`). An epoch's cost per training video is the step time of the items an
epoch draws from one video: `data.train_frames_per_video` crops for a frame model (its default, as on the
public datasets; the bench set draws more), one clip for a clip model.
`benchmarks/projection.py` turns these into epoch hours on the public datasets."""

from __future__ import annotations

import platform

from benchmarks.common import Measurement, Plan, compose, rnd
from benchmarks.training import step_throughput
from src.data.settings import LoaderSettings

# model: its batch for this measurement (smaller than the default for the big ones, to keep the section short)
MODELS = {"mesonet": None, "xception": 8, "resnet_lstm": None, "efficientnet_lstm": None}
DEFAULT, FP32 = "bf16-mixed + channels_last (default)", "fp32 + channels_last"


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            line = next(line for line in info if line.startswith("model name"))
        return line.split(":", 1)[1].strip()
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def bench_model_costs(plan: Plan, overrides: list[str]) -> list[Measurement]:
    rows = []
    cpu = _cpu()
    for model, batch in MODELS.items():
        extra = () if batch is None else (f"model.batch_size={batch}",)
        cfg = compose([*overrides, f"model={model}", *extra])
        measured = step_throughput(overrides, model, extra, [DEFAULT, FP32], 1 if plan.quick else 2)
        frame_model = cfg.model.input.kind == "frame"
        # an epoch on a public dataset draws the default number of crops per video, not the bench set's
        per_video_items = LoaderSettings().train_frames_per_video if frame_model else 1
        seconds = {name: per_video_items / rate for name, rate in measured["rates"].items()}
        faster = min(seconds, key=seconds.get)
        rows.append(
            Measurement(
                f"training cost per train video per epoch: {cfg.model.title}",
                rnd(seconds[DEFAULT], 4),
                "s/video",
                rnd(seconds[FP32], 4),
                rnd(seconds[DEFAULT] / seconds[FP32]),
                "",
                None,
                f"{cpu}; batch {measured['batch']} "
                f"({measured['frames_per_batch']} frames), {per_video_items} "
                f"{'crops (the default data.train_frames_per_video)' if frame_model else 'clip'} per video per epoch; value under bf16-mixed autocast + "
                f"channels_last (the default), baseline fp32 + channels_last; faster here: {faster}; "
                "optimizer steps on real batches, the first left out",
                "4 precision",
                {"rates_items_per_s": {k: rnd(v, 3) for k, v in measured["rates"].items()}, "cpu": cpu},
            )
        )
    return rows
