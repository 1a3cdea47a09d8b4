"""What the framework costs on the public datasets, projected from measured per-video costs:
`python -m benchmarks.projection [--results benchmarks/results.json] [--cache DIR] [--nodes 8]` prints the
README's projection table (cache size on disk, cache build hours, CPU epoch time per model) and says, for
every figure, which measurement it comes from. Nothing here is measured on the datasets themselves: the
per-video costs come from `make bench` (`benchmarks/results.json`) and `python -m benchmarks.detectors`,
and the video counts and lengths from the datasets' papers. A figure without a measurement behind it says
"not measured" and is not guessed.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Dataset:
    name: str
    videos: int  # every video the cache holds
    train_videos: int  # an epoch's videos: the training part of the default split
    frame_pixels: int  # width x height of a typical video
    source: str


# Video counts from the datasets' papers; the training part is the default protocol's (data.folds=5 holds one
# fold of the non-test videos out for validation).
DATASETS = (
    Dataset(
        "Celeb-DF v2",
        6529,
        round((6529 - 518) * 4 / 5),
        942 * 500,
        "590 Celeb-real + 300 YouTube-real + 5,639 Celeb-synthesis videos, 518 in the test list (Li et al., CVPR "
        "2020); 4/5 of the rest train",
    ),
    Dataset(
        "FaceForensics++ (c23, 4 methods)",
        5000,
        720 * 5,
        1280 * 720,
        "1,000 originals + 4 x 1,000 manipulated; official split 720/140/140 per source (Rossler et al., ICCV 2019)",
    ),
    Dataset(
        "DFDC (training set)",
        119154,
        round(119154 * 4 / 5),
        1920 * 1080,
        "119,154 ten-second training videos, mostly 1920x1080 (Dolhansky et al., 2020); 4/5 train",
    ),
)
# The one per-video build cost measured on Celeb-DF-sized videos: docs/faces.md, `python -m benchmarks.detectors`
# (8 videos of 960x540, 30 fps, 13 s; data.face_detector=mtcnn with detect_every=2, the real-data default;
# 20 frames decoded, detected, cropped and written; in-process, 1 thread).
BUILD_S_PER_VIDEO_960 = 1.71
BUILD_SOURCE = (
    "1.71 s/video: `python -m benchmarks.detectors`, 960x540 13-s videos, mtcnn detect_every=2, 1 thread"
)
CORES_PER_NODE = 16


def _row(results: dict, prefix: str) -> dict | None:
    return next((m for m in results.get("measurements", []) if m["name"].startswith(prefix)), None)


def entry_bytes(cache: Path | None, frames: int = 20, side: int = 256) -> tuple[float, str]:
    """Bytes of one cache entry (.npy + .json): measured as the mean of the entries under `cache` when given,
    else the .npy's exact size for the default 20 crops of 256 px (plus a 3 KB metadata file)."""
    if cache is not None:
        sizes = [
            (p.stat().st_size + p.with_suffix(".json").stat().st_size, np.load(p, mmap_mode="r").shape[0])
            for p in sorted(cache.rglob("*.npy"))
            if p.with_suffix(".json").exists()
        ]
        if sizes:
            per_frame = sum(b for b, _ in sizes) / sum(n for _, n in sizes)
            return per_frame * frames, f"mean of {len(sizes)} entries in {cache}, scaled to {frames} frames"
    return (
        128 + frames * side * side * 3 + 3000,
        f"{frames} x {side}x{side}x3 uint8 + .npy header + ~3 KB JSON",
    )


COST_ROW = "training cost per train video per epoch: "
MODEL_TITLES = ("MesoNet", "Xception", "ResNetLSTM", "EfficientNet-B1+LSTM")  # conf/model/*.yaml titles


def model_costs(results: dict) -> dict[str, tuple[float, str] | None]:
    """Seconds per training video per epoch of each model, and its measurement: the faster of bf16-mixed and
    fp32 on the measuring CPU (`make bench` section `models`); None where not measured."""
    costs: dict[str, tuple[float, str] | None] = {}
    for title in MODEL_TITLES:
        row = _row(results, COST_ROW + title)
        if row is None or row.get("value") is None:
            costs[title] = None
            continue
        bf16, fp32 = row["value"], row["baseline"]
        seconds, which = (bf16, "bf16-mixed") if fp32 is None or bf16 <= fp32 else (fp32, "fp32")
        cpu = row.get("details", {}).get("cpu", "the measuring CPU")
        costs[title] = (
            seconds,
            f"{seconds:.3f} s/video in {which}, the faster on {cpu} (bf16-mixed {bf16:.3f}, fp32 "
            f"{fp32 if fp32 is None else round(fp32, 3)}): `make bench` section `models`",
        )
    return costs


def project(results: dict, cache: Path | None = None, nodes: int = 8) -> dict:
    """The projection's figures and their sources."""
    sources: dict[str, str] = {}
    per_entry, sources["size"] = entry_bytes(cache)
    two = _row(results, "cache build: 2 workers vs 1")
    efficiency = two["ratio"] / 2 if two and two.get("ratio") else None
    sources["2 cores"] = (
        f"{BUILD_SOURCE}; 2 build workers ran at {efficiency:.2f} of twice one worker's rate "
        f"(`make bench`, cache build: 2 workers vs 1)"
        if efficiency
        else "not measured"
    )
    sources["16 cores"] = (
        f"16 build workers at the 2-worker efficiency ({efficiency:.2f}); not measured beyond 2 cores"
        if efficiency
        else "not measured"
    )
    sources["nodes"] = (
        f"{nodes} nodes of 16 cores, one shard each (`prepare.py -m shard=...`): shards are disjoint"
    )
    gpu = results.get("gpu", {})
    gpu_build = (
        next((m for m in gpu.get("measurements", []) if "cache build" in m.get("name", "")), None)
        if gpu.get("status") != "not measured"
        else None
    )
    sources["gpu"] = (
        f"`python -m benchmarks.run --only gpu` on {gpu.get('device')}"
        if gpu_build
        else "not measured (no GPU lent)"
    )
    models = model_costs(results)
    rows = []
    for data in DATASETS:
        pixel_factor = data.frame_pixels / (960 * 540)
        one_core_h = data.videos * BUILD_S_PER_VIDEO_960 / 3600
        row = {
            "dataset": data.name,
            "videos": data.videos,
            "train_videos": data.train_videos,
            "cache_gb": data.videos * per_entry / 1e9,
            "pixel_factor": pixel_factor,
            "build_h": {
                "2 cores": one_core_h / (2 * efficiency) if efficiency else None,
                "16 cores": one_core_h / (CORES_PER_NODE * efficiency) if efficiency else None,
                f"{nodes} nodes": one_core_h / (nodes * CORES_PER_NODE * efficiency) if efficiency else None,
                "1 GPU": None if not gpu_build else data.videos / gpu_build["value"] / 3600,
            },
            "epoch_h": {
                name: (data.train_videos * cost[0] / 3600 if cost else None) for name, cost in models.items()
            },
        }
        rows.append(row)
    sources.update({f"epoch {name}": cost[1] if cost else "not measured" for name, cost in models.items()})
    return {"rows": rows, "sources": sources, "nodes": nodes}


def _h(hours: float | None) -> str:
    if hours is None:
        return "not measured"
    return f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.1f} h"


def markdown(projection: dict) -> str:
    rows, sources, nodes = projection["rows"], projection["sources"], projection["nodes"]
    build_cols = list(rows[0]["build_h"])
    model_cols = list(rows[0]["epoch_h"])
    head = ["dataset", "videos", "cache on disk", *(f"build, {c}" for c in build_cols)]
    head += [f"epoch (CPU, 2 cores), {m}" for m in model_cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [
            row["dataset"],
            f"{row['videos']:,} ({row['train_videos']:,} train)",
            f"{row['cache_gb']:.0f} GB",
        ]
        cells += [_h(row["build_h"][c]) for c in build_cols]
        cells += [_h(row["epoch_h"][m]) for m in model_cols]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- videos, {data.name}: {data.source}" for data in DATASETS]
    notes.append(f"- cache on disk: {sources['size']}")
    notes += [
        f"- build, {c}: {sources.get(c.split(',')[0], sources.get(c, ''))}" for c in ("2 cores", "16 cores")
    ]
    notes.append(f"- build, {nodes} nodes: {sources['nodes']}")
    notes.append(f"- build, 1 GPU: {sources['gpu']}")
    notes += [f"- epoch, {m}: {sources[f'epoch {m}']}" for m in model_cols]
    big = [r for r in rows if r["pixel_factor"] > 1.5]
    notes.append(
        "- build hours assume 960x540 frames; "
        + ", ".join(f"{r['dataset']}'s frames have {r['pixel_factor']:.1f}x the pixels" for r in big)
        + ", so their decoding costs more and those hours are a lower bound"
    )
    return "\n".join(lines) + "\n\n" + "\n".join(notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=HERE / "results.json")
    parser.add_argument(
        "--cache", type=Path, default=None, help="a built cache folder to measure entry sizes"
    )
    parser.add_argument("--nodes", type=int, default=8)
    args = parser.parse_args(argv)
    print(markdown(project(json.loads(args.results.read_text()), args.cache, args.nodes)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
