"""The embedded synthetic Celeb-DF generator: layout, decoding, determinism, idempotence, fakes, faces, presets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import decord
import numpy as np
import pytest

from src.data.synthetic import (
    GENERATOR_VERSION,
    MARKER,
    PRESETS,
    TEST_LIST,
    generate_synthetic_celebdf,
    video_codec,
)

SMALL = dict(seed=0, num_identities=4, real_per_identity=2, fakes_per_real=2, youtube_real=2, num_frames=24)
TINY = dict(num_identities=2, real_per_identity=1, fakes_per_real=1, youtube_real=0, num_frames=6)
NAMES = {
    "Celeb-real": re.compile(r"id(\d+)_(\d{4})\.mp4"),
    "Celeb-synthesis": re.compile(r"id(\d+)_id(\d+)_(\d{4})\.mp4"),
    "YouTube-real": re.compile(r"\d{5}\.mp4"),
}
V2_SHAPE = (PRESETS["v2"]["height"], PRESETS["v2"]["width"], 3)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return generate_synthetic_celebdf(tmp_path_factory.mktemp("small") / "celebdf", **SMALL)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """TINY at seed 0 and artifact strength 1, 0 (and seed 1) — generated lazily, once each."""
    made = {}

    def get(seed: int = 0, strength: float = 1.0) -> Path:
        if (seed, strength) not in made:
            root = tmp_path_factory.mktemp(f"tiny-{seed}-{strength}") / "celebdf"
            made[seed, strength] = generate_synthetic_celebdf(
                root, seed=seed, artifact_strength=strength, **TINY
            )
        return made[seed, strength]

    return get


def frames(path: Path) -> np.ndarray:
    reader = decord.VideoReader(str(path))
    return reader.get_batch(list(range(len(reader)))).asnumpy()


def marker(root: Path) -> dict:
    return json.loads((root / MARKER).read_text())


def face_tracks(root: Path) -> dict[str, list[list[float]]]:
    return marker(root)["faces"]


def videos(root: Path, folder: str) -> list[str]:
    return sorted(p.name for p in (root / folder).iterdir())


def face_box(track: list[list[float]], scale: float, shape: tuple[int, int], dy: float = 0.0) -> np.ndarray:
    """Per frame, a boolean (H, W) mask of the square of side scale x face height around the face centre
    (moved down by dy face heights)."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.stack(
        [
            (np.abs(xs - cx) < scale * h / 2) & (np.abs(ys - cy - dy * h) < scale * h / 2)
            for cx, cy, h in track
        ]
    )


def test_layout_and_names(small):
    for folder, pattern in NAMES.items():
        names = videos(small, folder)
        assert names and all(pattern.fullmatch(n) for n in names), (folder, names)
    real = videos(small, "Celeb-real")
    fakes = videos(small, "Celeb-synthesis")
    assert len(real) == 4 * 2 and len(fakes) == 4 * 2 * 2 and len(videos(small, "YouTube-real")) == 2
    assert "id3_0001.mp4" in real and "00001.mp4" in videos(small, "YouTube-real")
    for name in fakes:
        target, source, number = NAMES["Celeb-synthesis"].fullmatch(name).groups()
        assert target != source
        assert f"id{target}_{number}.mp4" in real  # every fake is made from an existing real video
    reals = len(real) + len(videos(small, "YouTube-real"))
    assert 1.2 <= len(fakes) / reals <= 2.5  # about Celeb-DF v1's two fakes per real video


def test_test_list(small):
    lines = (small / TEST_LIST).read_text().splitlines()
    assert lines
    listed = {}
    for line in lines:
        match = re.fullmatch(r"([01]) (Celeb-real|Celeb-synthesis|YouTube-real)/(\S+\.mp4)", line)
        assert match, line
        label, folder, name = match.groups()
        assert (small / folder / name).is_file(), line
        assert label == ("0" if folder == "Celeb-synthesis" else "1")  # Celeb-DF's list: 1 = real
        listed.setdefault(folder, set()).add(name)
    for folder in NAMES:
        fraction = len(listed.get(folder, ())) / len(videos(small, folder))
        assert 0 < fraction <= 0.5, (folder, fraction)
    # the test identities are whole: their real videos and all fakes made from them
    test_ids = {NAMES["Celeb-real"].fullmatch(n).group(1) for n in listed["Celeb-real"]}
    for name in videos(small, "Celeb-real"):
        assert (name in listed["Celeb-real"]) == (NAMES["Celeb-real"].fullmatch(name).group(1) in test_ids)
    for name in videos(small, "Celeb-synthesis"):
        target = NAMES["Celeb-synthesis"].fullmatch(name).group(1)
        assert (name in listed["Celeb-synthesis"]) == (target in test_ids)


def test_decord_reads_every_video_at_30_fps(small):
    paths = sorted(small.glob("*/*.mp4"))
    assert len(paths) == 8 + 16 + 2
    for path in paths:
        reader = decord.VideoReader(str(path))
        assert len(reader) == SMALL["num_frames"], path
        assert reader[len(reader) - 1].shape == V2_SHAPE
        assert reader.get_avg_fps() == pytest.approx(30)
    assert set(face_tracks(small)) == {p.relative_to(small).as_posix() for p in paths}


def test_h264_when_pyav_has_libx264(small):
    import cv2

    codec = marker(small)["codec"]
    assert codec == video_codec()
    if codec != "h264":
        pytest.skip("PyAV with libx264 is not installed: the videos are MPEG-4 Part 2")
    capture = cv2.VideoCapture(str(next(small.glob("Celeb-real/*.mp4"))))
    fourcc = int(capture.get(cv2.CAP_PROP_FOURCC))
    capture.release()
    assert "".join(chr((fourcc >> 8 * i) & 0xFF) for i in range(4)).lower() in ("h264", "avc1")


def test_deterministic_for_a_seed(tiny, tmp_path):
    again = generate_synthetic_celebdf(tmp_path / "again", seed=0, **TINY)
    for rel in ("Celeb-real/id0_0000.mp4", "Celeb-synthesis/id0_id1_0000.mp4"):
        assert np.array_equal(frames(tiny() / rel), frames(again / rel)), rel
        assert not np.array_equal(frames(tiny() / rel), frames(tiny(seed=1) / rel)), rel
    assert (tiny() / TEST_LIST).read_text() == (again / TEST_LIST).read_text()


def test_idempotent_and_guarded(small, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in small.rglob("*")}
    assert generate_synthetic_celebdf(small, **SMALL) == small
    assert {p: p.stat().st_mtime_ns for p in small.rglob("*")} == before
    assert [p.name for p in small.parent.iterdir()] == [small.name]  # no staging folder left behind

    with pytest.raises(ValueError, match="other parameters"):
        generate_synthetic_celebdf(small, **{**SMALL, "seed": 1})
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a dataset")
    with pytest.raises(FileExistsError):
        generate_synthetic_celebdf(foreign, **TINY)
    empty = tmp_path / "empty"
    empty.mkdir()
    generate_synthetic_celebdf(empty, **TINY)
    assert (empty / MARKER).is_file() and len(list(empty.glob("*/*.mp4"))) == 4


def test_a_folder_of_the_old_generator_is_not_reused_for_the_new_one(tiny):
    """v1 and v2 write their generator version into the marker: asking one for the other's folder fails."""
    old = tiny()
    params = marker(old)["params"]
    assert params["generator_version"] == GENERATOR_VERSION >= 2 and params["preset"] == "v2"
    with pytest.raises(ValueError, match="generator_version"):
        generate_synthetic_celebdf(old, preset="v1", **TINY)


def test_invalid_parameters(tmp_path):
    with pytest.raises(ValueError, match="fakes_per_real"):
        generate_synthetic_celebdf(tmp_path / "x", **{**TINY, "fakes_per_real": 2})
    with pytest.raises(ValueError, match="test_fraction"):
        generate_synthetic_celebdf(tmp_path / "x", test_fraction=1.0, **TINY)
    with pytest.raises(ValueError, match="multiple of 128"):
        generate_synthetic_celebdf(tmp_path / "x", width=448, **TINY)
    with pytest.raises(ValueError, match="preset"):
        generate_synthetic_celebdf(tmp_path / "x", preset="v9", **TINY)
    with pytest.raises(ValueError, match="num_frame"):
        generate_synthetic_celebdf(tmp_path / "x", num_frame=6)  # a typo is named, not ignored
    assert not (tmp_path / "x").exists()


def test_v1_preset_keeps_the_old_generator(tmp_path):
    root = generate_synthetic_celebdf(tmp_path / "v1", preset="v1", **TINY)
    params = marker(root)["params"]
    assert params["generator_version"] == 1 and "preset" not in params  # the marker of v1 folders
    assert frames(root / "Celeb-real/id0_0000.mp4").shape == (TINY["num_frames"], 240, 320, 3)


def test_fakes_change_the_face_only(small):
    """Outside the face and a margin the fake is its target real video, up to its own compression."""
    tracks = face_tracks(small)
    for name in videos(small, "Celeb-synthesis")[::3]:
        target, _, number = NAMES["Celeb-synthesis"].fullmatch(name).groups()
        real_rel = f"Celeb-real/id{target}_{number}.mp4"
        fake, real = frames(small / "Celeb-synthesis" / name), frames(small / real_rel)
        diff = np.abs(fake.astype(np.int16) - real).mean(-1)
        lower_face = face_box(tracks[real_rel], 0.35, real.shape[1:3], dy=0.2)  # mouth: both methods
        outside = ~face_box(tracks[real_rel], 1.6, real.shape[1:3])
        assert diff[lower_face].mean() > 2.5 * diff[outside].mean() + 1, name


def test_both_manipulation_methods_with_varied_strength(small):
    fakes = marker(small)["fakes"]
    assert set(fakes) == {f"Celeb-synthesis/{n}" for n in videos(small, "Celeb-synthesis")}
    assert {f["method"] for f in fakes.values()} == {"swap", "reenact"}
    strengths = [f["strength"] for f in fakes.values()]
    assert len(set(strengths)) == len(strengths) and max(strengths) - min(strengths) > 0.05  # per video


def test_reenactment_leaves_the_eyes_alone(small):
    tracks = face_tracks(small)
    reenacted = [rel for rel, f in marker(small)["fakes"].items() if f["method"] == "reenact"]
    swapped = [rel for rel, f in marker(small)["fakes"].items() if f["method"] == "swap"]

    def eye_and_mouth_change(rel: str) -> tuple[float, float]:
        target, _, number = NAMES["Celeb-synthesis"].fullmatch(Path(rel).name).groups()
        real_rel = f"Celeb-real/id{target}_{number}.mp4"
        diff = np.abs(frames(small / rel).astype(np.int16) - frames(small / real_rel)).mean(-1)
        shape = diff.shape[1:]
        eyes = face_box(tracks[real_rel], 0.25, shape, dy=-0.15)
        mouth = face_box(tracks[real_rel], 0.25, shape, dy=0.25)
        return diff[eyes].mean(), diff[mouth].mean()

    for rel in reenacted[:3]:
        eyes, mouth = eye_and_mouth_change(rel)
        assert mouth > 2 * eyes, (rel, eyes, mouth)
    eyes_swapped = np.mean([eye_and_mouth_change(rel)[0] for rel in swapped[:3]])
    eyes_reenacted = np.mean([eye_and_mouth_change(rel)[0] for rel in reenacted[:3]])
    assert eyes_swapped > 2 * eyes_reenacted  # a swap replaces the eyes too


def test_artifact_strength_changes_only_the_fake_face(tiny):
    clean, traced = tiny(strength=0.0), tiny(strength=1.0)
    real = "Celeb-real/id0_0000.mp4"
    assert np.array_equal(frames(clean / real), frames(traced / real))
    fake = "Celeb-synthesis/id0_id1_0000.mp4"
    a, b = frames(clean / fake), frames(traced / fake)
    inner = face_box(face_tracks(clean)[fake], 0.6, a.shape[1:3])
    outside = ~face_box(face_tracks(clean)[fake], 1.6, a.shape[1:3])
    change = np.abs(a.astype(np.int16) - b).mean(-1)
    assert change[inner].mean() > 2 * change[outside].mean()


def test_haar_detects_the_faces(small):
    from src.data.faces.detectors import HaarFaceDetector

    detector = HaarFaceDetector(320)
    tracks = face_tracks(small)
    hits = {"real": [], "fake": []}
    for rel, track in sorted(tracks.items()):
        for i, frame in zip(range(0, 24, 4), frames(small / rel)[::4], strict=True):
            box = detector.detect(frame)
            cx, cy, height = track[i]
            on_face = box is not None and (
                abs((box[0] + box[2]) / 2 - cx) < 0.25 * height
                and abs((box[1] + box[3]) / 2 - cy) < 0.25 * height
            )
            hits["fake" if rel.startswith("Celeb-synthesis") else "real"].append(on_face)
    for kind, found in hits.items():
        assert np.mean(found) >= 0.9, (kind, np.mean(found))


def test_fakes_of_a_real_video_take_turns_between_the_methods(small):
    """With two fakes per real video, one is a face swap and one a mouth reenactment: every validation
    split holds both methods about equally, however few videos it has."""
    by_real: dict[str, list[str]] = {}
    for rel, fake in marker(small)["fakes"].items():
        target, _, number = NAMES["Celeb-synthesis"].fullmatch(Path(rel).name).groups()
        by_real.setdefault(f"{target}_{number}", []).append(fake["method"])
    assert by_real and all(sorted(methods) == ["reenact", "swap"] for methods in by_real.values()), by_real


def test_the_blend_darkens_a_thin_seam_along_the_mask_edge():
    """The seam is a local trace: with it, the fake is darker in a thin band at the edge of the pasted
    region, not over the paste, and nowhere else."""
    import dataclasses

    import cv2

    from src.data.synthetic.dataset import TAG_IDENTITY, TAG_REAL, seeded_rng
    from src.data.synthetic.painting import draw_identity, paint_textures
    from src.data.synthetic.render_v2 import draw_camera, draw_manipulation, render_fake_v2, render_real_v2
    from src.data.synthetic.scene import to_uint8

    n, size, fps = 2, (272, 512), 30
    identities = [draw_identity(seeded_rng(0, TAG_IDENTITY, i)) for i in range(2)]
    textures = [paint_textures(ident) for ident in identities]
    rng = seeded_rng(0, TAG_REAL, 0, 0)
    camera = dataclasses.replace(draw_camera(rng), blur=0.0, noise=0.0)
    clip = render_real_v2(textures[0], rng, n, size, fps, camera)
    real = to_uint8(clip.shot).astype(np.int16)
    for method in ("swap", "reenact"):
        manip = draw_manipulation(seeded_rng(0, 99), n, 1.0, method)
        assert manip.seam > 0.1
        with_seam, without = (
            render_fake_v2(
                clip,
                textures[0],
                textures[1],
                np.zeros(n, np.int64),
                dataclasses.replace(manip, seam=seam),
                seeded_rng(0, 7),
                identities[0].mouth_y,
            ).astype(np.int16)
            for seam in (manip.seam, 0.0)
        )
        darker = (with_seam - without).mean(-1) < -3
        pasted = (np.abs(without - real).max(-1) > 2).astype(np.uint8)
        assert darker.any(), method
        near_paste = np.stack([cv2.dilate(frame, np.ones((7, 7), np.uint8)) for frame in pasted]).astype(bool)
        assert (darker & ~near_paste).sum() < 0.05 * darker.sum(), method  # only at the paste
        assert darker.sum() < 0.4 * pasted.sum(), method  # a band, not the whole paste
        for frame in range(n):  # on the edge: few pixels deep inside the pasted region
            closed = cv2.morphologyEx(pasted[frame], cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
            depth = cv2.distanceTransform(closed, cv2.DIST_L2, 3)
            assert np.median(depth[darker[frame]]) < 5, (method, frame, np.median(depth[darker[frame]]))
