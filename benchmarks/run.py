"""Run the benchmarks: `python -m benchmarks.run [--quick] [--out benchmarks/results.json] [--work DIR]`.

Prints a Markdown table (and notes) and writes the results as JSON. Every ratio is taken within this run,
baseline and candidate interleaved where possible, so a busy machine slows both alike. See README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

from benchmarks.common import (
    FULL,
    QUICK,
    Measurement,
    compose,
    data_overrides,
    dataset_name,
    frame_size,
    loadavg,
    make_dataset,
)

HERE = Path(__file__).resolve().parent
SECTIONS = (
    "cache",
    "detectors",
    "loading",
    "loop",
    "precision",
    "models",
    "eval",
    "sweep",
    "predict",
    "scaling",
    "profile",
    "gpu",
    "sbi",
)
# trainings that take half an hour here: run with --only sbi
OPT_IN = ("sbi",)
DEFAULT_SECTIONS = tuple(name for name in SECTIONS if name not in OPT_IN)


def _log(message: str) -> None:
    print(
        f"[bench {time.strftime('%H:%M:%S')} load {loadavg()[0]:.1f}] {message}", file=sys.stderr, flush=True
    )


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "**no**"
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"
    return str(x)


def markdown(rows: list[Measurement]) -> str:
    lines = [
        "| # | measurement | value | unit | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, m in enumerate(rows, 1):
        lines.append(
            f"| {i} | {m.name} | {_fmt(m.value)} | {m.unit} | {_fmt(m.baseline)} | {_fmt(m.ratio)} | "
            f"{m.target} | {_fmt(m.met)} |"
        )
    lines.append("")
    lines += [f"{i}. {m.notes}" for i, m in enumerate(rows, 1) if m.notes]
    return "\n".join(lines)


def profile_markdown(profile: dict) -> str:
    lines = []
    for name, prof in profile.items():
        if "median_ms" in prof:
            lines += [
                f"\nProfile of {name} ({prof['batch']}; same values: {prof['same_values_atol_1e-6']}):",
                "",
                "| variant | ms (median) |",
                "|---|---|",
            ]
            lines += [f"| {variant} | {ms} |" for variant, ms in prof["median_ms"].items()]
        if "seconds_per_video" not in prof:
            continue
        lines += [
            f"\nProfile of one video's cache build, {name} ({prof['videos']} videos, 1 thread):",
            "",
            "| stage | ms/video (mean) | ms/video (median) | faces found | hits vs rendered face |",
            "|---|---|---|---|---|",
        ]
        for stage, seconds in prof["seconds_per_video"].items():
            detection = prof["detection"].get(stage.removeprefix("detect: "), {})
            lines.append(
                f"| {stage} | {seconds * 1e3:.1f} | {prof['median_seconds_per_video'][stage] * 1e3:.1f} | "
                f"{_fmt(detection.get('found_rate'))} | {_fmt(detection.get('hit_rate'))} |"
            )
    return "\n".join(lines)


def _merged(previous: dict, current: dict) -> dict:
    """`--only` re-measures some sections: their rows and timings replace those of the same name in the
    results file (and every row those sections wrote before, `sections.<name>.rows`), and every other
    section's numbers (with the date of their own run) stay."""
    if previous.get("mode") != current["mode"]:
        return current
    names = {m["name"] for m in current["measurements"]}
    # a re-measured section's earlier rows all go, renamed ones included
    names |= {
        row for s in current["sections"] for row in previous.get("sections", {}).get(s, {}).get("rows", [])
    }
    kept = [m for m in previous.get("measurements", []) if m["name"] not in names]
    order = [m["name"] for m in previous.get("measurements", [])]
    rows = sorted(
        kept + current["measurements"],
        key=lambda m: order.index(m["name"]) if m["name"] in order else len(order),
    )
    sections = {**previous.get("sections", {}), **current["sections"]}
    return {
        **previous,
        "sections": sections,
        "measurements": rows,
        "profile": {**previous.get("profile", {}), **current["profile"]},
        "gpu": current.get("gpu", previous.get("gpu", {})),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smaller dataset and fewer steps (a few minutes)"
    )
    parser.add_argument(
        "--out", type=Path, default=HERE / "results.json", help="where to write the JSON results"
    )
    parser.add_argument("--work", type=Path, default=HERE / "work", help="datasets, caches and scratch files")
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT_SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all but {', '.join(OPT_IN)})",
    )
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")

    plan = QUICK if args.quick else FULL
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    started, load_start = time.perf_counter(), loadavg()
    _log(f"{'quick' if plan.quick else 'full'} mode, work dir {work}")

    import torch

    if only == ["gpu"] and not torch.cuda.is_available():  # nothing to measure: no dataset to generate
        from benchmarks.gpu import not_measured

        previous = json.loads(args.out.read_text()) if args.out.exists() else {}
        gpu = not_measured(f"no CUDA device on this machine ({platform.node()}, {os.cpu_count()} CPUs)")
        args.out.write_text(json.dumps({**previous, "gpu": gpu}, indent=2, default=str))
        print(f"GPU: {gpu['status']} ({gpu['reason']})\nresults: {args.out}")
        return 0

    from benchmarks.batch_prep import profile_batch_prep
    from benchmarks.cache_bench import bench_cache_build, bench_cache_hires, crop_settings, profile_build
    from benchmarks.detectors import bench_detectors
    from benchmarks.evaluation import bench_eval_grid
    from benchmarks.large_sweep import bench_large_sweep
    from benchmarks.loading import bench_loading
    from benchmarks.model_costs import bench_model_costs
    from benchmarks.prediction import bench_prediction
    from benchmarks.sbi import bench_sbi
    from benchmarks.scaling import bench_scaling
    from benchmarks.training import bench_loop, bench_precision

    start = time.perf_counter()
    root = make_dataset(work, plan.data)
    generate_s = time.perf_counter() - start
    overrides = data_overrides(root, work / "cache" / dataset_name(plan.data), plan.data, plan.folds)
    cfg = compose(overrides)
    profile: dict = {}

    def profile_section() -> list[Measurement]:
        settings = crop_settings(cfg)
        count = 3 if plan.quick else 6
        profile["main dataset"] = profile_build(root, count, settings, work / "scratch" / "profile")
        profile[f"{frame_size(plan.hires)} dataset"] = profile_build(
            make_dataset(work, plan.hires), min(count, 4), settings, work / "scratch" / "profile"
        )
        profile["batch preparation"] = profile_batch_prep(overrides)
        return []

    sections = {
        "cache": lambda: bench_cache_build(plan, work, root, cfg) + bench_cache_hires(plan, work, cfg),
        "detectors": lambda: bench_detectors(plan, work),
        "loading": lambda: bench_loading(plan, work, overrides),
        "loop": lambda: bench_loop(plan, work, overrides),
        "precision": lambda: bench_precision(plan, overrides),
        "models": lambda: bench_model_costs(plan, overrides),
        "eval": lambda: bench_eval_grid(work, overrides, plan.eval_passes),
        "sweep": lambda: bench_large_sweep(work, plan.large_sweep, plan.folds, plan.large_sweep_frames),
        "predict": lambda: bench_prediction(root, work, 5 if plan.quick else 20),
        "scaling": lambda: bench_scaling(plan, work, cfg),
        "profile": profile_section,
        "sbi": lambda: bench_sbi(plan, work, overrides),
    }
    gpu: dict = {}

    def gpu_section() -> list[Measurement]:
        from benchmarks.gpu import bench_gpu

        gpu.update(bench_gpu(root, work, overrides))
        return []

    sections["gpu"] = gpu_section
    rows: list[Measurement] = []
    timings = {}
    for name in SECTIONS:
        if name not in only:
            continue
        _log(f"section {name}")
        start, load_before = time.perf_counter(), loadavg()
        produced = len(rows)
        try:
            rows += sections[name]()
        except Exception as error:  # one broken section must not hide the others' numbers
            traceback.print_exc()
            rows.append(
                Measurement(
                    f"{name}: FAILED",
                    None,
                    "",
                    None,
                    None,
                    "runs",
                    False,
                    f"{type(error).__name__}: {error}"[:500],
                    name,
                )
            )
        timings[name] = {
            "seconds": round(time.perf_counter() - start, 1),
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
            "rows": [m.name for m in rows[produced:]],
        }
        _log(f"section {name} took {timings[name]['seconds']:.0f} s")

    wall = time.perf_counter() - started
    load_end = loadavg()
    result = {
        "mode": "quick" if plan.quick else "full",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "wall_s": round(wall, 1),
        "loadavg_start": load_start,
        "loadavg_end": load_end,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "platform": platform.platform(),
        },
        "dataset": {
            "root": str(root),
            "params": plan.data or "embedded default",
            "folds": plan.folds,
            "generate_s": round(generate_s, 1),
        },
        "config": {
            "num_workers": cfg.data.num_workers,
            "build_workers": cfg.data.build_workers,
            "precision": cfg.trainer.precision,
            "detect_max_side": cfg.data.detect_max_side,
        },
        "sections": timings,
        "measurements": [m.as_dict() for m in rows],
        "profile": profile,
        **({"gpu": gpu} if gpu else {}),
    }
    if set(only) != set(SECTIONS) and args.out.exists():  # a partial run keeps the other sections
        result = _merged(json.loads(args.out.read_text()), result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(
        f"\n## Benchmarks ({result['mode']}, {wall / 60:.1f} min, load average {load_start} -> {load_end}, "
        f"{os.cpu_count()} CPUs)\n"
    )
    print(markdown(rows))
    if profile:
        print(profile_markdown(profile))
    if gpu:
        print(f"\nGPU: {json.dumps(gpu, indent=1)}")
    print(f"\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
