"""Aligned face crops (`data.align`): the similarity fit, the template, the crops and their landmarks, and the
eye line on real photographs rotated by up to 30 degrees."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from src.data.cache import CropSettings, FaceCropCache
from src.data.faces.align import (
    ARCFACE_TEMPLATE_112,
    box_matrices,
    face_template,
    landmarks_from_json,
    landmarks_to_json,
    make_crops,
    similarity_transform,
    transform_points,
)
from src.data.faces.detectors import Face, build_detector
from src.data.faces.track import crop_faces, detect_faces
from src.data.faces.video import linspace_indices
from src.utils.errors import ConfigError
from tests.conftest import SHARED_MESONET

ROTATIONS = (0, 15, 30, -30)  # degrees, counter-clockwise as seen


def _similarity(degrees: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    angle = math.radians(degrees)
    rotation = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return np.hstack([rotation, np.array(shift)[:, None]])


def eye_angle(landmarks: np.ndarray) -> float:
    """The eye line's angle to the horizontal, in degrees (0: level)."""
    dx, dy = landmarks[1] - landmarks[0]
    return math.degrees(math.atan2(dy, dx))


def test_similarity_transform_recovers_a_known_similarity_and_never_mirrors():
    rng = np.random.default_rng(0)
    source = rng.uniform(0, 100, (5, 2))
    truth = _similarity(23.0, 1.7, (5.0, -3.0))
    target = source @ truth[:, :2].T + truth[:, 2]
    np.testing.assert_allclose(similarity_transform(source, target), truth, atol=1e-9)
    mirrored = target * [-1, 1]  # no rotation + scale + shift gives a mirror image: the fit stays a rotation
    assert np.linalg.det(similarity_transform(source, mirrored)[:, :2]) > 0


def test_the_template_is_arcfaces_shrunk_by_the_margin_about_the_centre():
    np.testing.assert_allclose(face_template(1.0), ARCFACE_TEMPLATE_112 / 112)
    spread = np.abs(face_template(1.0) - 0.5)
    np.testing.assert_allclose(np.abs(face_template(1.3) - 0.5), spread / 1.3)
    assert abs(eye_angle(face_template(1.3))) < 0.5  # the template's own eye line is level


def _frames_with_marked_face(count: int, degrees: float, size: int = 200):
    """Black frames with a white dot on the left eye of a template face rotated by `degrees` (its landmarks
    returned too)."""
    face = _similarity(degrees, 80.0, (60.0, 50.0))
    landmarks = face_template(1.0) @ face[:, :2].T + face[:, 2]
    frames = np.zeros((count, size, size, 3), np.uint8)
    x, y = np.round(landmarks[0]).astype(int)
    frames[:, y - 2 : y + 3, x - 2 : x + 3] = 255
    return frames, landmarks


def test_aligned_crops_take_the_landmarks_onto_the_template_and_fill_frames_without_them():
    frames, landmarks = _frames_with_marked_face(4, 35.0)
    box = (60, 50, 140, 130)
    faces = [Face(box, landmarks), None, Face(box, None), Face(box, landmarks)]  # 3rd: a box, no landmarks
    made = make_crops(frames, faces, np.ones(4, bool), crop_size=64, margin=1.3, align=True)
    template = face_template(1.3) * 64
    assert made.track.detected.tolist() == [True, False, False, True]  # no landmarks: no face to align
    assert made.track.num_filled == 2
    np.testing.assert_allclose(made.landmarks[[0, 3]], [template, template], atol=0.3)
    assert np.isnan(made.landmarks[[1, 2]]).all()  # stored landmarks are the detected ones only
    # every frame (the filled ones by their neighbours' landmarks) has the eye where the template has it
    for crop in made.crops:
        y, x = np.unravel_index(crop[..., 0].argmax(), crop.shape[:2])
        assert np.hypot(x - template[0, 0], y - template[0, 1]) <= 1.5
    box_crops = make_crops(frames, faces, np.ones(4, bool), crop_size=64, margin=1.3, align=False)
    assert box_crops.track.detected.tolist() == [True, False, True, True]  # unaligned, a box is a face
    assert np.isnan(box_crops.landmarks[2]).all() and not np.isnan(box_crops.landmarks[0]).any()


def test_a_video_without_landmarks_falls_back_to_centre_crops_like_one_without_faces():
    frames = np.random.default_rng(0).integers(0, 255, (3, 90, 120, 3), dtype=np.uint8)
    made = make_crops(frames, [Face((10, 10, 50, 50)), None, None], np.ones(3, bool), 32, 1.3, align=True)
    assert made.track.centre_fallback and np.isnan(made.landmarks).all()
    np.testing.assert_array_equal(made.crops, crop_faces(frames, made.track.boxes, 32))


def test_box_crop_landmarks_land_where_crop_faces_puts_their_pixels():
    frames, landmarks = _frames_with_marked_face(1, 0.0)
    boxes = np.array([[40, 30, 160, 150]])
    crops = crop_faces(frames, boxes, 60)
    x, y = transform_points(landmarks[None], box_matrices(boxes, 60))[0, 0]
    rows, cols = np.nonzero(crops[0, ..., 0] > 100)
    assert abs(cols.mean() - x) < 0.6 and abs(rows.mean() - y) < 0.6


def test_landmarks_round_trip_through_the_entry_format_and_a_bad_list_is_refused():
    points = np.arange(20, dtype=float).reshape(2, 5, 2) / 3
    points[1] = np.nan
    stored = landmarks_to_json(points)
    assert stored[1] is None
    np.testing.assert_allclose(landmarks_from_json(stored, 2), points, atol=0.005)
    assert np.isnan(landmarks_from_json(None, 3)).all() and landmarks_from_json(None, 3).shape == (3, 5, 2)
    with pytest.raises(ValueError, match="for 3 frames"):
        landmarks_from_json(stored, 3)


def test_align_with_a_detector_without_landmarks_is_a_one_line_error_naming_the_key_and_the_fix():
    with pytest.raises(ConfigError) as error:
        CropSettings(align=True, face_detector="haar")
    message = str(error.value)
    assert message.startswith("data.align=true needs face landmarks") and "\n" not in message
    assert "data.face_detector=haar" in message and "data.face_detector=mtcnn" in message
    assert "data.align=false" in message
    with pytest.raises(ConfigError, match="data.align='yes'"):
        CropSettings(align="yes")
    assert CropSettings(align=True).align  # the default detector (mtcnn) gives landmarks


# -- real photographs -----------------------------------------------------------------------------------------
# scikit-image's public-domain astronaut and the MesoNet crops (real faces, two real and two deepfakes)
REAL_FACES = ["astronaut"] + (
    [p.relative_to(SHARED_MESONET).as_posix() for p in sorted(SHARED_MESONET.glob("test_images/*/*.jpg"))]
    or ["mesonet"]
)


def _real_face(name: str) -> np.ndarray:
    """The RGB photo `name` of REAL_FACES; skips the test when its source is absent."""
    if name == "astronaut":
        data = pytest.importorskip(
            "skimage.data", reason="scikit-image (the dev extra) has the astronaut photo"
        )
        return data.astronaut()
    if not SHARED_MESONET.is_dir():
        pytest.skip(f"{SHARED_MESONET} is absent: no MesoNet face crops to rotate")
    return cv2.cvtColor(cv2.imread(str(SHARED_MESONET / name)), cv2.COLOR_BGR2RGB)


def rotated(image: np.ndarray, degrees: float, pad: int = 80) -> np.ndarray:
    """`image` on a grey canvas (`pad` px around it: the crops are tight, and a face in a video has
    surroundings), rotated counter-clockwise by `degrees`, the canvas grown to hold all of it."""
    grey = (90, 90, 90)
    image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=grey)
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    size = (int(height * sin + width * cos + 1), int(height * cos + width * sin + 1))
    matrix[:, 2] += (size[0] / 2 - width / 2, size[1] / 2 - height / 2)
    return cv2.warpAffine(image, matrix, size, borderMode=cv2.BORDER_CONSTANT, borderValue=grey)


@pytest.mark.parametrize("name", REAL_FACES)
def test_aligned_real_faces_have_a_level_eye_line_at_every_roll_and_none_is_lost(name):
    """MTCNN (CPU) + alignment on a real photo rotated by 0, +-15, +-30 degrees: a face is found at every angle
    and the eye line of the aligned crop is level within 5 degrees, measured both by the detected landmarks
    mapped into the crop and by running the detector again on the crop."""
    image = _real_face(name)
    pytest.importorskip("facenet_pytorch", reason="facenet-pytorch (MTCNN) is a project dependency")
    detector = build_detector("mtcnn")
    measured = {}
    for degrees in ROTATIONS:
        frame = rotated(image, degrees)[None]
        faces, searched = detect_faces(frame, detector)
        assert faces[0] is not None, f"{name}: no face found when rotated by {degrees} degrees"
        made = make_crops(frame, faces, searched, crop_size=256, margin=1.3, align=True)
        again = detector.find_faces(made.crops)[0]
        assert again is not None, f"{name}: no face found in the crop aligned from {degrees} degrees"
        measured[degrees] = (
            eye_angle(faces[0].landmarks),
            eye_angle(made.landmarks[0]),
            eye_angle(again.landmarks),
        )
    print(f"\n{name}: degrees -> (eye line in the frame, in the crop mapped, in the crop detected again)")
    for degrees, angles in measured.items():
        print(f"  {degrees:+3d}: " + ", ".join(f"{a:+6.2f}" for a in angles))
    # the rotation reaches the detector: its eye line turns with the photo (image y down: -degrees)
    assert abs(measured[30][0] - measured[0][0] + 30) < 8, measured
    for degrees, (_, mapped, detected) in measured.items():
        assert abs(mapped) <= 5 and abs(detected) <= 5, f"{name} rotated by {degrees}: {measured[degrees]}"


def _rolling_video(path, image: np.ndarray, count: int = 12) -> np.ndarray:
    """A video of `image` rolling from -30 to +30 degrees; returns the roll of each frame."""
    rolls = np.linspace(-30, 30, count)
    frames = [rotated(image, roll, pad=40) for roll in rolls]
    height, width = (min(f.shape[i] for f in frames) // 2 * 2 for i in (0, 1))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (width, height))
    for frame in frames:  # each cut to the smallest about its centre, where the face stays
        top, left = (frame.shape[0] - height) // 2, (frame.shape[1] - width) // 2
        writer.write(cv2.cvtColor(frame[top : top + height, left : left + width], cv2.COLOR_RGB2BGR))
    writer.release()
    return rolls


def test_an_aligned_cache_entry_stores_level_crops_and_their_landmarks(tmp_path):
    """A real face rolling through 60 degrees, cached aligned with sparse detection and linspace sampling:
    every crop (searched or filled) has a level eye line, and the entry holds the detected landmarks."""
    pytest.importorskip("facenet_pytorch", reason="facenet-pytorch (MTCNN) is a project dependency")
    video = tmp_path / "roll.mp4"
    _rolling_video(video, _real_face("astronaut")[:300, 80:400])
    settings = CropSettings(
        frames_per_video=6, crop_size=128, align=True, frame_sampling="linspace", detect_every=2
    )
    cache = FaceCropCache(tmp_path / "cache", settings)
    detector = cache.detector()
    report = cache.build_one(video, detector)
    assert report.ok and not report.centre_fallback and report.num_detected == report.num_searched == 4
    crops, meta = cache.load(video)
    assert meta["frame_indices"] == linspace_indices(12, 6).tolist() == [0, 2, 4, 7, 9, 11]
    searched = np.array(meta["searched"])
    assert meta["landmarks"].shape == (6, 5, 2)
    assert not np.isnan(meta["landmarks"][searched]).any() and np.isnan(meta["landmarks"][~searched]).all()
    stored = [eye_angle(points) for points in meta["landmarks"][searched]]
    again = [eye_angle(face.landmarks) for face in detector.find_faces(np.asarray(crops))]
    assert max(map(abs, stored)) <= 5 and max(map(abs, again)) <= 5, (stored, again)
    unaligned = FaceCropCache(tmp_path / "cache", CropSettings(frames_per_video=6, crop_size=128))
    assert unaligned.key(video) != cache.key(video)  # an aligned entry is never an unaligned one
