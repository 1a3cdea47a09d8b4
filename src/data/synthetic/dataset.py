"""Generating a synthetic Celeb-DF folder: the presets and their parameter checks, the marker that makes a
complete folder reusable, the random streams, and the layout both generators write."""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from src.data.logs import ONCE_PER_SWEEP
from src.data.synthetic.encode import encode_video, video_codec, write_mp4
from src.data.synthetic.painting import Textures, draw_identity, paint_textures
from src.data.synthetic.render_v1 import Clip, render_real, swap_face
from src.data.synthetic.render_v2 import (
    METHODS,
    ClipV2,
    add_pores,
    draw_camera,
    draw_manipulation,
    render_fake_v2,
    render_real_v2,
)
from src.data.synthetic.scene import talk_curve, to_uint8

log = logging.getLogger(__name__)
log.addFilter(ONCE_PER_SWEEP)

GENERATOR_VERSION = 3  # of the default preset; written into every marker, so an older folder is not reused
_VERSIONS = {"v1": 1, "v2": GENERATOR_VERSION}
DEFAULT_PRESET = "v2"
PRESETS: dict[str, dict[str, int | float]] = {
    "v1": dict(
        num_identities=10,
        real_per_identity=3,
        fakes_per_real=2,
        youtube_real=6,
        num_frames=48,
        width=320,
        height=240,
        fps=25,
        artifact_strength=1.0,
        test_fraction=0.2,
    ),
    "v2": dict(
        num_identities=22,
        real_per_identity=2,
        fakes_per_real=2,
        youtube_real=8,
        num_frames=32,
        width=512,
        height=272,
        fps=30,
        artifact_strength=1.0,
        test_fraction=0.2,
    ),
}
MARKER = ".synthetic.json"
TEST_LIST = "List_of_testing_videos.txt"

# SeedSequence tags: every random stream depends only on the seed and on what it draws for. Keys of one
# tag must not differ by trailing zeros only: SeedSequence pads its entropy with zeros.
TAG_IDENTITY, TAG_REAL, _TAG_FAKE, _TAG_SPLIT, _TAG_SOURCES, _TAG_YT_IDENTITY, _TAG_YT_VIDEO = range(7)


def generate_synthetic_celebdf(root, *, preset: str = DEFAULT_PRESET, seed: int = 0, **knobs) -> Path:
    """Generate the synthetic Celeb-DF set into ``root`` (or reuse the one there) and return ``root``.

    ``preset`` picks the generator (``v2``, the default, or ``v1``, the first one) and its default
    knobs (``PRESETS``); ``knobs`` override them.
    """
    if preset not in PRESETS:
        raise ValueError(
            f"unknown synthetic preset {preset!r} (data.synthetic.preset); choose one of {sorted(PRESETS)}"
        )
    unknown = sorted(set(knobs) - set(PRESETS[preset]))
    if unknown:
        raise ValueError(
            f"unknown synthetic dataset parameters {unknown} for preset {preset}; known: {sorted(PRESETS[preset])}"
        )
    params = {"generator_version": _VERSIONS[preset], "seed": int(seed)}
    if preset != "v1":  # v1 markers have no preset key: v1 folders made before presets existed are reused
        params["preset"] = preset
    for key, default in PRESETS[preset].items():
        params[key] = type(default)(knobs.get(key, default))
    root = Path(root).expanduser()
    _validate(params)
    if _existing_params(root, params):
        return root
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(
            f"{root} exists and is not a complete synthetic dataset (it has no {MARKER}); "
            "remove it or choose another data.root"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.parent / f".{root.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        (_write_dataset if preset == "v1" else _write_dataset_v2)(staging, params)
        try:
            if root.is_dir() and not any(root.iterdir()):
                root.rmdir()  # POSIX renames onto an empty folder, Windows does not
            os.rename(staging, root)
        except OSError:
            if not _existing_params(root, params):  # fine if a concurrent call published the same set
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _validate(p: dict) -> None:
    problems = []
    for key in ("num_identities", "num_frames", "fps"):
        if p[key] < 1:
            problems.append(f"{key} must be >= 1")
    for key in ("real_per_identity", "fakes_per_real", "youtube_real"):
        if p[key] < 0:
            problems.append(f"{key} must be >= 0")
    if p["fakes_per_real"] > p["num_identities"] - 1:
        problems.append("fakes_per_real must be <= num_identities - 1 (each fake swaps in another identity)")
    if p["width"] < 160 or p["height"] < 120:
        problems.append("width x height must be at least 160 x 120 to hold a detectable face")
    if p["generator_version"] >= 2 and (p["width"] % 128 or p["height"] % 2):
        # even: H.264 stores colour at half resolution; x 128: x264 through PyAV encodes other widths
        # (chroma rows not 64-byte aligned) differently from run to run
        problems.append("width must be a multiple of 128 and height even")
    if p["artifact_strength"] < 0:
        problems.append("artifact_strength must be >= 0")
    if not 0 <= p["test_fraction"] < 1:
        problems.append("test_fraction must be in [0, 1)")
    if problems:
        raise ValueError("invalid synthetic dataset parameters: " + "; ".join(problems))


def _existing_params(root: Path, params: dict) -> bool:
    """True when root holds a complete dataset made with these parameters; raise if made with others."""
    marker = root / MARKER
    if not marker.is_file():
        return False
    existing = json.loads(marker.read_text())["params"]
    if existing != params:
        diff = {
            k: (existing.get(k), params.get(k))
            for k in sorted(params.keys() | existing.keys())
            if existing.get(k) != params.get(k)
        }
        raise ValueError(
            f"{root} holds a synthetic dataset generated with other parameters (existing, requested): "
            f"{diff}; delete it or choose another data.root"
        )
    return True


def seeded_rng(seed: int, *keys: int) -> np.random.Generator:
    """The random stream of one thing the generator draws, the same on every machine.

    Args:
        seed: the set's seed (``data.synthetic.seed``).
        keys: a ``TAG_*`` and the thing's numbers (identity, video).
    """
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def _write_dataset(out: Path, p: dict) -> None:
    seed, n_ids = p["seed"], p["num_identities"]
    test_ids, test_youtube = _make_folders_and_test_split(out, p)
    textures = [paint_textures(draw_identity(seeded_rng(seed, TAG_IDENTITY, i))) for i in range(n_ids)]
    test_lines, faces = [], {}

    def write(rel: str, frames: np.ndarray, clip: Clip, is_test: bool, real: bool) -> None:
        write_mp4(out / rel, frames, p["fps"])
        faces[rel] = np.round(clip.faces, 1).tolist()
        if is_test:
            test_lines.append(f"{int(real)} {rel}")

    def render(tex: Textures, rng: np.random.Generator) -> Clip:
        return render_real(tex, rng, p["num_frames"], (p["height"], p["width"]), p["fps"])

    for n in range(n_ids):
        for v in range(p["real_per_identity"]):
            clip = render(textures[n], seeded_rng(seed, TAG_REAL, n, v))
            write(f"Celeb-real/id{n}_{v:04d}.mp4", clip.frames(), clip, n in test_ids, real=True)
            others = [m for m in range(n_ids) if m != n]
            sources = seeded_rng(seed, _TAG_SOURCES, n, v).choice(others, p["fakes_per_real"], replace=False)
            for m in sorted(sources.tolist()):
                rng = seeded_rng(seed, _TAG_FAKE, n, v, m)
                fake = swap_face(clip, textures[n], textures[m], rng, p["artifact_strength"])
                write(f"Celeb-synthesis/id{n}_id{m}_{v:04d}.mp4", fake, clip, n in test_ids, real=False)
    for k in range(p["youtube_real"]):  # one further identity per YouTube video
        clip = render(
            paint_textures(draw_identity(seeded_rng(seed, _TAG_YT_IDENTITY, k))),
            seeded_rng(seed, _TAG_YT_VIDEO, k),
        )
        write(f"YouTube-real/{k:05d}.mp4", clip.frames(), clip, k in test_youtube, real=True)

    _write_test_list_and_marker(out, test_lines, {"params": p, "faces": faces})


def _make_folders_and_test_split(out: Path, p: dict) -> tuple[set[int], set[int]]:
    """Creates the Celeb-DF video folders; returns the test identities and the test YouTube videos."""
    for folder in ("Celeb-real", "Celeb-synthesis", "YouTube-real"):
        (out / folder).mkdir(parents=True)
    split = seeded_rng(p["seed"], _TAG_SPLIT)
    test_ids = _test_subset(split, p["num_identities"], p["test_fraction"])
    return test_ids, _test_subset(split, p["youtube_real"], p["test_fraction"])


def _write_test_list_and_marker(out: Path, test_lines: list[str], marker: dict) -> None:
    """The test list, then the marker: written last, it says the folder is complete."""
    (out / TEST_LIST).write_text("".join(line + "\n" for line in sorted(test_lines)))
    (out / MARKER).write_text(json.dumps(marker, separators=(",", ":")))


def _test_subset(rng: np.random.Generator, n: int, fraction: float) -> set[int]:
    """About ``fraction`` of ``range(n)``: at least one when fraction > 0, never all of them."""
    count = min(n - 1, max(1, round(fraction * n))) if fraction > 0 and n > 1 else 0
    return set(rng.permutation(n)[:count].tolist())


def _write_dataset_v2(out: Path, p: dict) -> None:
    seed, n_ids = p["seed"], p["num_identities"]
    size, n, fps = (p["height"], p["width"]), p["num_frames"], p["fps"]
    codec = video_codec()
    test_ids, test_youtube = _make_folders_and_test_split(out, p)
    identities = [draw_identity(seeded_rng(seed, TAG_IDENTITY, i)) for i in range(n_ids)]
    textures = [
        add_pores(paint_textures(ident), seeded_rng(seed, TAG_IDENTITY, i, 1))
        for i, ident in enumerate(identities)
    ]
    test_lines, faces, methods = [], {}, {}
    total = n_ids * p["real_per_identity"] * (1 + p["fakes_per_real"]) + p["youtube_real"]
    bar = tqdm(total=total, desc="synthetic videos", unit="video")

    def write(rel: str, frames: np.ndarray, clip: ClipV2, crf: int, is_test: bool, real: bool) -> None:
        encode_video(out / rel, frames, fps, crf, codec)
        bar.update()
        faces[rel] = np.round(clip.faces, 1).tolist()
        if is_test:
            test_lines.append(f"{int(real)} {rel}")

    for i in range(n_ids):
        for v in range(p["real_per_identity"]):
            rng = seeded_rng(seed, TAG_REAL, i, v)
            camera = draw_camera(rng)
            clip = render_real_v2(textures[i], rng, n, size, fps, camera)
            write(f"Celeb-real/id{i}_{v:04d}.mp4", to_uint8(clip.shot), clip, camera.crf, i in test_ids, True)
            others = [m for m in range(n_ids) if m != i]
            pick = seeded_rng(seed, _TAG_SOURCES, i, v)
            sources = pick.choice(others, p["fakes_per_real"], replace=False)
            first = int(pick.integers(2))  # the fakes of a real video take turns: swap, reenactment, swap...
            for k, m in enumerate(sorted(sources.tolist())):
                rng = seeded_rng(seed, _TAG_FAKE, i, v, m)
                manip = draw_manipulation(rng, n, p["artifact_strength"], METHODS[(first + k) % 2])
                driver = talk_curve(
                    rng, np.arange(n) / fps
                )  # the reenactment's mouth follows another speaker
                fake = render_fake_v2(
                    clip, textures[i], textures[m], driver, manip, rng, identities[i].mouth_y
                )
                rel = f"Celeb-synthesis/id{i}_id{m}_{v:04d}.mp4"
                write(
                    rel, fake, clip, draw_camera(rng).crf, i in test_ids, False
                )  # encoded anew, like a real fake
                methods[rel] = {"method": manip.method, "strength": round(manip.strength, 3)}
    for k in range(p["youtube_real"]):
        rng = seeded_rng(seed, _TAG_YT_VIDEO, k)
        camera = draw_camera(rng)
        tex = add_pores(
            paint_textures(draw_identity(seeded_rng(seed, _TAG_YT_IDENTITY, k))),
            seeded_rng(seed, _TAG_YT_IDENTITY, k, 1),
        )
        clip = render_real_v2(tex, rng, n, size, fps, camera)
        write(f"YouTube-real/{k:05d}.mp4", to_uint8(clip.shot), clip, camera.crf, k in test_youtube, True)

    bar.close()
    _write_test_list_and_marker(
        out, test_lines, {"params": p, "codec": codec, "fakes": methods, "faces": faces}
    )


def announce_synthetic(root: Path, params: dict) -> None:
    """Say where the embedded set goes and how big it is before generating it (a mistyped data.root is
    noticed), and refuse a folder that holds something else instead of writing next to it."""
    if (root / MARKER).is_file():
        return
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        if (root / "Celeb-real").is_dir() or (root / "Celeb-synthesis").is_dir():
            raise ValueError(
                f"data.root={root} holds a Celeb-DF dataset, not the embedded synthetic one: "
                f"use data=celebdf data.root={root}"
            )
        raise ValueError(
            f"data.root={root} exists and holds neither the embedded synthetic set nor a Celeb-DF "
            "layout: give data=synthetic a new folder, or use data=celebdf / data=ffpp for a real dataset"
        )
    knobs = {**PRESETS.get(params.get("preset", "v2"), {}), **params}
    videos = (
        knobs["num_identities"] * knobs["real_per_identity"] * (1 + knobs["fakes_per_real"])
        + knobs["youtube_real"]
    )
    megabytes = videos * knobs["num_frames"] * knobs["width"] * knobs["height"] * 0.06 / 1e6  # ~0.06 B/pixel
    log.warning(
        "generating the embedded synthetic Celeb-DF (preset %s) into %s: %d videos of %d frames, "
        "about %.0f MB; this happens once",
        knobs.get("preset", "v2"),
        root,
        videos,
        knobs["num_frames"],
        megabytes,
    )
