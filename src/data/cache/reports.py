"""What a cache build reports: one `VideoReport` per video (stored in its entry) and the `BuildReport`."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class VideoReport:
    """What happened to one video during the cache build."""

    path: str
    ok: bool
    num_frames: int = 0
    num_detected: int = 0
    num_filled: int = 0
    centre_fallback: bool = False
    reason: str = ""
    num_searched: int = 0  # frames the detector ran on (data.detect_every > 1 skips some)
    key: str = ""  # the cache entry it was read from or written to ("" when the video was never keyed)

    @property
    def degraded(self) -> str:
        """Why the crops of a usable video are not all detected faces ('' if they are)."""
        if self.centre_fallback:
            return "no face detected in any frame: centre crops"
        missed = self.frames_searched - self.num_detected
        if missed:
            return f"no face in {missed} of {self.frames_searched} searched frames: boxes from neighbouring detections"
        return ""

    @property
    def frames_searched(self) -> int:
        """Frames the detector ran on (data.detect_every=k searches about every k-th; older entries: all)."""
        return self.num_searched or self.num_frames


@dataclass
class BuildReport:
    videos: list[VideoReport] = field(default_factory=list)  # one per video asked for, in that order
    num_built: int = 0
    num_reused: int = 0

    @property
    def failed(self) -> list[VideoReport]:
        return [v for v in self.videos if not v.ok]

    @property
    def frame_detection_rate(self) -> float:
        """Detections per frame the detector searched (not per frame: interpolated frames were not searched)."""
        searched = sum(v.frames_searched for v in self.videos if v.ok)
        return sum(v.num_detected for v in self.videos if v.ok) / searched if searched else 0.0

    def summary(self) -> dict[str, float]:
        ok = [v for v in self.videos if v.ok]
        return {
            "videos": len(self.videos),
            "built": self.num_built,
            "reused": self.num_reused,
            "failed_videos": len(self.failed),
            "degraded_videos": sum(bool(v.reason or v.degraded) for v in ok),
            "centre_fallback_videos": sum(v.centre_fallback for v in ok),
            "filled_frames": sum(v.num_filled for v in ok),
            "frames": sum(v.num_frames for v in ok),
            "searched_frames": sum(v.frames_searched for v in ok),
            "frame_detection_rate": round(self.frame_detection_rate, 4),
        }
