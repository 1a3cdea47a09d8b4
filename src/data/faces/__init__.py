"""From a video file to face crops: decoding (video.py), face detectors (detectors.py), boxes over the frames
(track.py), boxed or aligned crops (align.py)."""
