"""Face detectors on real faces, and the cache build at Celeb-DF scale.

`python -m benchmarks.detectors [--repeats 3] [--videos 8] [--skip-build]` prints two tables:

1. Detection on frames made from real faces: the four MesoNet face crops in ../shared/mesonet (when present)
   and scikit-image's public-domain astronaut photo, pasted onto face-free photos from skimage.data in
   960x540 frames at face heights 40/60/100/200 px, rotated 0/15/30 degrees, JPEG quality 40-90, plus
   empty frames. A hit is a box with IoU >= 0.3 against the pasted face's box; a false box is any other
   box. ms/frame with 1 thread.
2. Cache build time per video on Celeb-DF-like videos (960x540, 30 fps, 13 s, 20 frames sampled) for Haar
   and the detectors that find real faces, with sparse detection (`detect_every`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import Measurement, median, rnd

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_MESONET = PROJECT_ROOT.parent / "shared" / "mesonet"
FRAME_SIZE = (960, 540)
HEIGHTS = (40, 60, 100, 200)
ANGLES = (0, 15, 30)
IOU_HIT = 0.3
# face boxes (x0, y0, x1, y1, forehead to chin) in each source image, set by eye on the images and checked
# against MTCNN's and YuNet's boxes on the untouched images (all IoU > 0.8)
MESONET_FACES = {
    "df/df00204.jpg": (81, 12, 271, 284),
    "df/df01254.jpg": (47, 12, 201, 231),
    "real/real00240.jpg": (65, 0, 240, 222),
    "real/real00772.jpg": (18, 0, 175, 195),
}
ASTRONAUT_FACE = (180, 62, 268, 174)
BACKGROUNDS = ("coffee", "rocket", "brick", "grass", "gravel", "hubble_deep_field")  # no faces in these


@dataclass
class FaceFrame:
    image: np.ndarray  # (540, 960, 3) RGB uint8
    box: tuple[float, float, float, float] | None  # the pasted face, None for an empty frame
    height: int = 0
    angle: float = 0.0
    source: str = ""


def face_sources(mesonet: Path | None = SHARED_MESONET) -> list[tuple[str, np.ndarray, tuple]]:
    """(name, RGB image, face box) of every real face available: the MesoNet crops (if present), the astronaut."""
    from skimage import data

    sources = []
    if mesonet is not None and mesonet.is_dir():
        for name, box in MESONET_FACES.items():
            image = cv2.imread(str(mesonet / "test_images" / name))
            if image is None:
                raise FileNotFoundError(f"{mesonet / 'test_images' / name}: missing or unreadable")
            sources.append((name, cv2.cvtColor(image, cv2.COLOR_BGR2RGB), box))
    astronaut = data.astronaut()
    x0, y0, x1, y1 = ASTRONAUT_FACE
    # the face with some head and shoulders around it, not the whole photo
    context = astronaut[max(0, y0 - 60) : y1 + 60, max(0, x0 - 60) : x1 + 60]
    sources.append(
        (
            "astronaut",
            np.ascontiguousarray(context),
            (x0 - max(0, x0 - 60), y0 - max(0, y0 - 60), x1 - max(0, x0 - 60), y1 - max(0, y0 - 60)),
        )
    )
    return sources


def backgrounds() -> list[np.ndarray]:
    from skimage import data

    out = []
    for name in BACKGROUNDS:
        image = getattr(data, name)()
        image = np.stack([image] * 3, axis=-1) if image.ndim == 2 else image[..., :3]
        width, height = FRAME_SIZE
        scale = max(width / image.shape[1], height / image.shape[0])
        resized = cv2.resize(
            image, (int(np.ceil(image.shape[1] * scale)), int(np.ceil(image.shape[0] * scale)))
        )
        top, left = (resized.shape[0] - height) // 2, (resized.shape[1] - width) // 2
        out.append(np.ascontiguousarray(resized[top : top + height, left : left + width]))
    return out


def paste_face(
    background: np.ndarray,
    source: np.ndarray,
    face_box,
    height: int,
    angle: float,
    centre: tuple[float, float],
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """`source` scaled so its face is `height` px tall, rotated by `angle` degrees about the face centre, with the
    face centre at `centre` of `background`; returns the frame and the face's (axis-aligned, unrotated-size) box."""
    x0, y0, x1, y1 = face_box
    scale = height / (y1 - y0)
    face_centre = ((x0 + x1) / 2, (y0 + y1) / 2)
    matrix = cv2.getRotationMatrix2D(face_centre, angle, scale)
    matrix[:, 2] += np.array(centre) - np.array(face_centre)
    size = (background.shape[1], background.shape[0])
    warped = cv2.warpAffine(source, matrix, size, flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    mask = cv2.warpAffine(np.ones(source.shape[:2], np.uint8), matrix, size, flags=cv2.INTER_NEAREST)
    frame = np.where(mask[..., None] > 0, warped, background)
    half_w, half_h = (x1 - x0) * scale / 2, height / 2
    return frame, (centre[0] - half_w, centre[1] - half_h, centre[0] + half_w, centre[1] + half_h)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def real_face_frames(
    repeats: int = 1, empty: int = 12, seed: int = 0, mesonet: Path | None = SHARED_MESONET
) -> list[FaceFrame]:
    """Every face source at every height and angle, `repeats` times (other background, place, JPEG quality,
    rotation direction), then `empty` frames of background only."""
    rng = np.random.default_rng(seed)
    sources, grounds = face_sources(mesonet), backgrounds()
    width, height_px = FRAME_SIZE
    frames = []
    for _ in range(repeats):
        for name, source, box in sources:
            for height in HEIGHTS:
                for angle in ANGLES:
                    ground = grounds[rng.integers(len(grounds))]
                    margin_x, margin_y = 0.9 * height, 0.8 * height
                    centre = (
                        rng.uniform(margin_x, width - margin_x),
                        rng.uniform(margin_y, height_px - margin_y),
                    )
                    signed = float(angle * rng.choice((-1, 1)))
                    image, face = paste_face(ground, source, box, height, signed, centre)
                    frames.append(
                        FaceFrame(jpeg(image, int(rng.integers(40, 91))), face, height, angle, name)
                    )
    for _ in range(empty):
        ground = grounds[rng.integers(len(grounds))]
        if rng.random() < 0.5:
            ground = ground[:, ::-1]
        frames.append(FaceFrame(jpeg(np.ascontiguousarray(ground), int(rng.integers(40, 91))), None))
    return frames


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def score_detector(detector, frames: list[FaceFrame], batch: int = 8) -> dict:
    """Recall (overall, 30-degree faces, 40 px faces), false boxes and ms/frame of `detector` on `frames`."""
    images = np.stack([f.image for f in frames])
    start = time.perf_counter()
    found = []
    for i in range(0, len(images), batch):
        found += detector.detect_batch(images[i : i + batch])
    seconds = time.perf_counter() - start
    hits = [
        f.box is not None and box is not None and iou(box, f.box) >= IOU_HIT
        for f, box in zip(frames, found, strict=True)
    ]
    false_boxes = sum(box is not None and not hit for box, hit in zip(found, hits, strict=True))

    def recall(keep) -> float | None:
        chosen = [hit for f, hit in zip(frames, hits, strict=True) if f.box is not None and keep(f)]
        return sum(chosen) / len(chosen) if chosen else None

    return {
        "recall": recall(lambda f: True),
        "recall_30deg": recall(lambda f: f.angle == 30),
        "recall_40px": recall(lambda f: f.height == 40),
        "false_boxes": false_boxes,
        "face_frames": sum(f.box is not None for f in frames),
        "empty_frames": sum(f.box is None for f in frames),
        "ms_per_frame": 1e3 * seconds / len(frames),
    }


# label: (data.face_detector, detector keyword arguments); the first of each name is that detector's default
VARIANTS = {
    "mtcnn (default: 640 px, min face 24)": ("mtcnn", {}),
    "mtcnn at 960 px, min face 32": ("mtcnn", {"detect_max_side": 960, "min_face": 32}),
    "mtcnn at 480 px, min face 20": ("mtcnn", {"detect_max_side": 480, "min_face": 20}),
    "yuface (YuNet) at 640 px": ("yuface", {}),
    "yuface (YuNet) at 960 px": ("yuface", {"detect_max_side": 960}),
    "dlib HOG at 960 px, upsample 1": ("dlib", {}),
    "haar as before (320 px, min 48)": ("haar", {}),
    "haar at 960 px, min 48": ("haar", {"detect_max_side": 960}),
}


def make_variant(name: str, kwargs: dict):
    """A detector with non-default parameters (build_detector takes only the configured ones)."""
    from src.data.faces.detectors import (
        DlibHogFaceDetector,
        HaarFaceDetector,
        MTCNNFaceDetector,
        YuFaceDetector,
    )

    classes = {
        "mtcnn": MTCNNFaceDetector,
        "yuface": YuFaceDetector,
        "dlib": DlibHogFaceDetector,
        "haar": HaarFaceDetector,
    }
    return classes[name](**kwargs)


def bench_detection(repeats: int = 3, empty: int = 20) -> tuple[list[Measurement], list[dict]]:
    from src.data.faces.detectors import MissingDetectorPackage

    cv2.setNumThreads(1)
    frames = real_face_frames(repeats=repeats, empty=empty)
    sources = sorted({f.source for f in frames if f.source})
    rows, table = [], []
    for label, (name, kwargs) in VARIANTS.items():
        try:
            detector = make_variant(name, kwargs)
            detector.detect(frames[0].image)  # load and warm up
        except MissingDetectorPackage as error:
            table.append({"detector": label, "missing": str(error)})
            continue
        result = score_detector(detector, frames)
        table.append({"detector": label, **result})
        rows.append(
            Measurement(
                f"detector recall on real faces: {label}",
                rnd(result["recall"]),
                "recall",
                None,
                None,
                ">= 0.95 (real-data default)" if label.startswith("mtcnn (default") else "",
                result["recall"] >= 0.95 if label.startswith("mtcnn (default") else None,
                f"{result['face_frames']} face frames from {len(sources)} faces ({', '.join(sources)}) + "
                f"{result['empty_frames']} empty, 960x540; 30-degree recall {rnd(result['recall_30deg'])}, "
                f"40 px recall {rnd(result['recall_40px'])}, {result['false_boxes']} false boxes, "
                f"{result['ms_per_frame']:.0f} ms/frame (1 thread)",
                "detectors",
                result,
            )
        )
    return rows, table


# -- cache build on Celeb-DF-like videos --------------------------------------------------------------
def write_celebdf_like_videos(
    folder: Path, count: int, seconds: float = 13.0, fps: int = 30
) -> tuple[list[Path], str]:
    """`count` 960x540 videos of a real face drifting and turning slowly over a photo; H.264 where OpenCV has an
    encoder, else MPEG-4 part 2. Returns (videos, codec)."""
    folder.mkdir(parents=True, exist_ok=True)
    sources, grounds = face_sources(), backgrounds()
    codec_file = folder / "codec.txt"  # the fourcc the existing videos were written with
    codec, videos = (codec_file.read_text().strip() if codec_file.is_file() else None), []
    for i in range(count):
        path = folder / f"video{i:02d}.mp4"
        videos.append(path)
        if path.is_file() and path.stat().st_size > 0 and codec is not None:
            continue
        rng = np.random.default_rng(i)
        writer = None
        for fourcc in ("avc1", "mp4v") if codec is None else (codec,):
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, FRAME_SIZE)
            if writer.isOpened():
                codec = fourcc
                codec_file.write_text(codec)
                break
        name, source, box = sources[i % len(sources)]
        ground = grounds[i % len(grounds)]
        height = float(rng.uniform(110, 220))  # Celeb-DF interview faces: roughly 100-250 px tall
        start = np.array([rng.uniform(300, 660), rng.uniform(200, 340)])
        drift = rng.uniform(-60, 60, size=2)
        frames_total = int(seconds * fps)
        for t in range(frames_total):
            phase = t / frames_total
            centre = start + drift * np.sin(2 * np.pi * phase)
            angle = 12 * np.sin(4 * np.pi * phase)
            frame, _ = paste_face(
                ground, source, box, height * (1 + 0.1 * np.sin(2 * np.pi * phase)), angle, tuple(centre)
            )
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
    return videos, {"avc1": "H.264", "mp4v": "MPEG-4 part 2 (no H.264 encoder in OpenCV)"}[codec or "mp4v"]


# the detect_every recommended with mtcnn: 1.2-1.6x Haar per video, boxes at IoU 0.97 of every-frame detection
DEFAULT_DETECT_EVERY = 2
BUILD_VARIANTS = (("haar", 1), ("mtcnn", 1), ("mtcnn", 2), ("mtcnn", 4), ("yuface", 1), ("yuface", 4))


def bench_build(work: Path, count: int = 8, variants=BUILD_VARIANTS) -> tuple[list[Measurement], list[dict]]:
    """Per-video cache build time (decode 20 frames, detect, crop, write) of each (detector, detect_every),
    one video at a time in this process (1 thread), the variants interleaved per video; and videos/s of a
    whole FaceCropCache.build (1 worker process, start-up included) for Haar and the default."""
    from benchmarks.common import fresh_dir
    from src.data.cache import CropSettings, FaceCropCache
    from src.data.faces.detectors import MissingDetectorPackage, build_detector

    cv2.setNumThreads(1)
    videos, codec = write_celebdf_like_videos(work / "videos", count)
    base = CropSettings(frames_per_video=20, crop_size=256)
    caches, detectors = {}, {}
    for name, every in variants:
        try:
            detectors[name] = detectors.get(name) or build_detector(name)
        except MissingDetectorPackage:
            continue
        settings = replace(
            base, face_detector=name, detect_max_side=detectors[name].detect_max_side, detect_every=every
        )
        caches[(name, every)] = FaceCropCache(fresh_dir(work / "cache" / f"{name}-{every}"), settings)
    for detector in detectors.values():
        detector.detect_batch(np.zeros((2, 540, 960, 3), np.uint8))  # load the model before timing
    seconds = {v: [] for v in caches}
    reports = {v: [] for v in caches}
    for i, video in enumerate(videos):
        order = list(caches) if i % 2 == 0 else list(caches)[::-1]
        for variant in order:
            start = time.perf_counter()
            reports[variant].append(caches[variant].build_one(video, detectors[variant[0]]))
            seconds[variant].append(time.perf_counter() - start)
    haar = median(seconds[("haar", 1)]) if ("haar", 1) in seconds else None
    rows, table = [], []
    for variant, times in seconds.items():
        name, every = variant
        per_video = median(times)
        detected = sum(r.num_detected for r in reports[variant])
        searched = sum(getattr(r, "num_searched", 0) or r.num_frames for r in reports[variant])
        # how far the interpolated crop boxes are from those of the same detector run on every frame
        box_iou = None
        if every > 1 and (name, 1) in caches:
            box_iou = float(
                np.mean(
                    [
                        iou(a, b)
                        for video in videos
                        for a, b in zip(
                            caches[(name, 1)].load(video)[1]["boxes"],
                            caches[variant].load(video)[1]["boxes"],
                            strict=True,
                        )
                    ]
                )
            )
        entry = {
            "detector": name,
            "detect_every": every,
            "s_per_video": per_video,
            "box_iou_vs_every_frame": box_iou,
            "vs_haar": per_video / haar if haar else None,
            "searched_frames_per_video": searched / len(videos),
            "detected_of_searched": detected / searched if searched else None,
            "centre_fallback_videos": sum(r.centre_fallback for r in reports[variant]),
        }
        table.append(entry)
        is_default = variant == ("mtcnn", DEFAULT_DETECT_EVERY)
        rows.append(
            Measurement(
                f"cache build per video, {name}, detect_every={every}",
                rnd(per_video),
                "s/video (median)",
                rnd(haar),
                rnd(entry["vs_haar"]),
                "<= 2x haar" if is_default else "",
                (entry["vs_haar"] <= 2) if is_default and haar else None,
                f"{len(videos)} videos 960x540 30 fps 13 s ({codec}), 20 frames sampled, in-process, 1 thread; "
                f"faces found in {entry['detected_of_searched']:.2f} of searched frames",
                "detectors",
                entry,
            )
        )
    # the whole build as the cache runs it, in a spawned worker process; building 1 video first measures the
    # worker's start-up (imports, model), paid once per worker, not per video
    for name in ("haar", "mtcnn"):
        if (name, 1) not in caches:
            continue
        every = DEFAULT_DETECT_EVERY if name == "mtcnn" else 1
        settings = replace(caches[(name, 1)].settings, detect_every=every)
        timings = []
        for subset in (videos[:1], videos):
            start = time.perf_counter()
            report = FaceCropCache(fresh_dir(work / "cache" / f"full-{name}"), settings).build(
                subset, workers=1, progress=False
            )
            timings.append(time.perf_counter() - start)
        rate = len(videos) / timings[1]
        marginal = (timings[1] - timings[0]) / (len(videos) - 1) if len(videos) > 1 else None
        table.append(
            {
                "detector": name,
                "detect_every": every,
                "build_videos_per_s_1_worker": rate,
                "build_s_per_video_after_startup": marginal,
                "startup_and_first_video_s": timings[0],
                "frame_detection_rate": report.frame_detection_rate,
            }
        )
        rows.append(
            Measurement(
                f"cache build, {name}, detect_every={every}, 1 worker",
                rnd(rate),
                "videos/s",
                None,
                None,
                "",
                None,
                f"FaceCropCache.build of {len(videos)} videos, worker start-up included "
                f"(start-up + first video {timings[0]:.1f} s; then "
                f"{marginal if marginal is not None else float('nan'):.2f} s/video)",
                "detectors",
            )
        )
    return rows, table


def bench_detectors(plan, work: Path) -> list[Measurement]:
    """The `detectors` section of `make bench`: both tables, smaller in quick mode."""
    threads = cv2.getNumThreads()
    try:
        detection_rows, _ = bench_detection(repeats=1 if plan.quick else 3, empty=12 if plan.quick else 20)
        build_rows, _ = bench_build(work / "detectors", count=4 if plan.quick else 8)
    finally:
        cv2.setNumThreads(threads)  # 1 thread here; the later sections keep their own setting
    return detection_rows + build_rows


def markdown_tables(detection: list[dict], build: list[dict]) -> str:
    lines = [
        "| detector | recall | 30-degree faces | 40 px faces | false boxes | ms per frame (1 thread) |",
        "|---|---|---|---|---|---|",
    ]
    for row in detection:
        if "missing" in row:
            lines.append(f"| {row['detector']} | not installed: {row['missing']} | | | | |")
            continue
        lines.append(
            f"| {row['detector']} | {row['recall']:.2f} | {row['recall_30deg']:.2f} | "
            f"{row['recall_40px']:.2f} | {row['false_boxes']} | {row['ms_per_frame']:.0f} |"
        )
    if build:
        lines += [
            "",
            "| detector | detect_every | s/video (median, in-process) | x Haar | frames searched/video | "
            "faces found in searched frames | crop-box IoU vs every frame |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in (r for r in build if "s_per_video" in r):
            box_iou = row["box_iou_vs_every_frame"]
            lines.append(
                f"| {row['detector']} | {row['detect_every']} | {row['s_per_video']:.3f} | "
                f"{row['vs_haar']:.2f} | {row['searched_frames_per_video']:.1f} | "
                f"{row['detected_of_searched']:.2f} | {'-' if box_iou is None else f'{box_iou:.3f}'} |"
            )
        lines += [
            "",
            "| detector | detect_every | FaceCropCache.build, 1 worker: videos/s | worker start-up + "
            "first video (s) | s/video after start-up | frame_detection_rate |",
            "|---|---|---|---|---|---|",
        ]
        for row in (r for r in build if "build_videos_per_s_1_worker" in r):
            lines.append(
                f"| {row['detector']} | {row['detect_every']} | {row['build_videos_per_s_1_worker']:.2f} | "
                f"{row['startup_and_first_video_s']:.1f} | {row['build_s_per_video_after_startup']:.2f} | "
                f"{row['frame_detection_rate']:.2f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="passes over every face x height x angle")
    parser.add_argument("--empty", type=int, default=20, help="frames without a face")
    parser.add_argument("--videos", type=int, default=8, help="Celeb-DF-like videos for the build timing")
    parser.add_argument("--work", type=Path, default=Path(__file__).resolve().parent / "work" / "detectors")
    parser.add_argument("--skip-build", action="store_true", help="only the detection table")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if not SHARED_MESONET.is_dir():
        print(f"note: {SHARED_MESONET} is absent: real faces from the astronaut photo only", file=sys.stderr)
    _, detection = bench_detection(args.repeats, args.empty)
    build = [] if args.skip_build else bench_build(args.work, args.videos)[1]
    print(markdown_tables(detection, build))
    return 0


if __name__ == "__main__":
    os.environ.setdefault(
        "OMP_NUM_THREADS", "1"
    )  # libfacedetection (yuface) and dlib: 1 thread like the rest
    sys.exit(main())
