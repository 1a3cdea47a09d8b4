"""The data report of a prepared data module: what was used, skipped or degraded, per split and class."""

from __future__ import annotations

from src.data.indexes.base import VideoRecord, identity_overlap

MOSTLY_UNDETECTED = 0.5  # a video with a face detected in fewer of its frames is flagged in the data report


def data_report(module) -> dict:
    """Counts and per-video problems, for the tracker: per split and class, the indexed, used and
    skipped videos, their frames (detected, filled from a neighbour, centre-crop fallbacks), the
    identity overlap between splits, and the videos whose faces were mostly not found."""
    report = module.build_report
    split_of = {r.path: split for split, part in module.indexed_splits.items() for r in part}
    skipped = [
        {"path": v.path, "video": path, "split": split_of.get(path, ""), "reason": v.reason}
        for path, v in module.video_reports.items()
        if not v.ok
    ]
    per_split = {
        split: {
            name: _split_stats(module, [r for r in part if r.label == label])
            for name, label in (("real", 0), ("fake", 1))
        }
        for split, part in module.indexed_splits.items()
    }
    mostly_undetected = [
        {
            "path": v.path,
            "video": path,
            "split": split_of.get(path, ""),
            "frames": v.num_frames,
            "frames_detected": v.num_detected,
            "centre_fallback": v.centre_fallback,
        }
        for path, v in module.video_reports.items()
        if v.ok and v.num_detected < MOSTLY_UNDETECTED * v.frames_searched
    ]
    summary = {
        **report.summary(),
        "indexed_videos": len(module.video_reports),
        "skipped_videos": len(skipped),
        "mostly_undetected_videos": len(mostly_undetected),
    }
    return {
        "summary": summary,
        "splits": per_split,
        "identity_split": module.split.identity_split,
        "identity_overlap": identity_overlap(module.splits),
        "skipped_videos": skipped,
        "degraded_videos": [
            {"path": v.path, "reason": "; ".join(filter(None, [v.reason, v.degraded]))}
            for v in report.videos
            if v.ok and (v.reason or v.degraded)
        ],
        "mostly_undetected_videos": mostly_undetected,
        "skipped_index_entries": [{"entry": e, "reason": r} for e, r in module.index.skipped],
        "class_counts": module.class_counts(),
    }


def _split_stats(module, records: list[VideoRecord]) -> dict[str, int]:
    reports = [module.video_reports[r.path] for r in records]
    used = [v for v in reports if v.ok]
    return {
        "indexed": len(reports),
        "used": len(used),
        "skipped": len(reports) - len(used),
        "frames": sum(v.num_frames for v in used),
        "frames_detected": sum(v.num_detected for v in used),
        "frames_filled": sum(v.num_filled for v in used),  # took a box from neighbouring detections
        "centre_fallback_videos": sum(v.centre_fallback for v in used),
        "centre_fallback_frames": sum(v.num_frames for v in used if v.centre_fallback),
        "mostly_undetected_videos": sum(v.num_detected < MOSTLY_UNDETECTED * v.frames_searched for v in used),
    }
