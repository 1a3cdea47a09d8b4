"""An embedded synthetic Celeb-DF: procedural talking heads and face-swap fakes in the exact Celeb-DF layout.

``generate_synthetic_celebdf(root)`` writes::

    root/Celeb-real/id<N>_<NNNN>.mp4             real video NNNN of identity N
    root/Celeb-synthesis/id<N>_id<M>_<NNNN>.mp4  real video id<N>_<NNNN> with identity M's face swapped in
    root/YouTube-real/<NNNNN>.mp4                real videos of further identities, never swapped
    root/List_of_testing_videos.txt              "<1 real|0 fake> <folder>/<file>.mp4" (Celeb-DF: 1 = real)
    root/.synthetic.json                         written last: the parameters and, per video and frame,
                                                 the rendered face centre x, y and face height (pixels)

Two presets (``preset=``, config ``data.synthetic.preset``); the marker records the generator version,
so a folder made by one is never reused for the other.

``v2`` (default, ``render_v2``): 512x272 H.264 at 30 fps (MPEG-4 Part 2 when PyAV with libx264 is
missing), built to pass the shortcut audit (``src.data.audit``) while its manipulation traces stay
local: every real video has its own camera, a fake goes through its target's camera, and the fakes
of a real video take turns between a face swap and a mouth reenactment (with two fakes per real
video: one of each), so even a small validation split holds both about equally. The marker lists
each fake's method and strength.

``v1`` (``render_v1``): the first generator, 320x240 MPEG-4 at 25 fps, kept for comparison.

Both presets paint their people with ``painting``. A real video moves the head smoothly in front of a
static background, blinks, talks, is lit by a slowly changing gain and gradient, and has camera noise
(``scene``). A fake's target real video is rendered from exactly the same random stream (same
background, motion, lighting and noise), and the source identity's face (or mouth) is pasted onto it,
colour-transferred to the target skin.

Knobs: ``num_identities`` x ``real_per_identity`` real videos; ``fakes_per_real`` fakes of each,
with different source identities (Celeb-DF v1 has about two fakes per real video); ``youtube_real``
extra real videos; ``num_frames``, ``width``, ``height`` and ``fps`` of every video;
``artifact_strength`` (scales every trace; 0: nothing but the identity swap); and ``test_fraction``:
the test list holds all the videos of about that fraction of the identities (their real videos and
the fakes made from them, so no test target identity is in train/val; a test fake's source face may
belong to a train/val identity, as in Celeb-DF) and about that fraction of YouTube-real. A video
depends only on the seed, its name and the video parameters, so the same seed gives the same
decoded frames.

Generation (``dataset``) is atomic (a hidden sibling folder renamed into place) and idempotent: a
complete dataset with the same parameters is reused, one with other parameters raises ``ValueError``.
Videos are written by ``encode``.
"""

from src.data.synthetic.dataset import (
    DEFAULT_PRESET,
    GENERATOR_VERSION,
    MARKER,
    PRESETS,
    TEST_LIST,
    announce_synthetic,
    generate_synthetic_celebdf,
)
from src.data.synthetic.encode import video_codec

__all__ = [
    "DEFAULT_PRESET",
    "GENERATOR_VERSION",
    "MARKER",
    "PRESETS",
    "TEST_LIST",
    "announce_synthetic",
    "generate_synthetic_celebdf",
    "video_codec",
]
