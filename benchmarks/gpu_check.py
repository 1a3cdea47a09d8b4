"""GPU checks, for a machine with CUDA: `python -m benchmarks.gpu_check <frames.npz>`.

1. MTCNN on the GPU (`data.face_detector=mtcnn` with trainer=gpu) finds the faces it finds on the CPU:
   recall, false boxes and box agreement on the real-face frame set, and ms per frame on each device.
2. A training step under the GPU trainer's 16-bit autocast, while validation/prediction scores stay fp32
   and equal to a plain fp32 forward pass.

Make the frame set where scikit-image is installed: `python -m benchmarks.gpu_check --write <frames.npz>`.
"""

from __future__ import annotations

import json
import sys
import time

import cv2
import numpy as np
import torch


def write_frames(path: str) -> None:
    from benchmarks.detectors import real_face_frames

    frames = real_face_frames(repeats=2, empty=8, mesonet=None)  # the public-domain astronaut photo only
    encoded = [cv2.imencode(".jpg", f.image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1] for f in frames]
    np.savez(
        path,
        jpegs=np.array(encoded, dtype=object),
        boxes=np.array([f.box or (-1, -1, -1, -1) for f in frames]),
        heights=np.array([f.height or 0 for f in frames]),
        angles=np.array([f.angle or 0 for f in frames]),
    )


def detection(path: str) -> dict:
    from benchmarks.detectors import FaceFrame, iou, score_detector
    from src.data.faces.detectors import build_detector

    data = np.load(path, allow_pickle=True)
    frames = [
        FaceFrame(
            cv2.imdecode(j, cv2.IMREAD_COLOR)[..., ::-1].copy(),
            None if b[0] < 0 else tuple(b),
            h,
            a,
            "astronaut",
        )
        for j, b, h, a in zip(data["jpegs"], data["boxes"], data["heights"], data["angles"], strict=True)
    ]
    out = {}
    boxes = {}
    for device in ("cpu", "cuda"):
        detector = build_detector("mtcnn", device=device)
        score_detector(detector, frames[:8])  # warm-up (CUDA context, kernels)
        out[device] = score_detector(detector, frames)
        boxes[device] = [
            b
            for i in range(0, len(frames), 8)
            for b in detector.detect_batch(np.stack([f.image for f in frames[i : i + 8]]))
        ]
    pairs = [
        (a, b) for a, b in zip(boxes["cpu"], boxes["cuda"], strict=True) if a is not None and b is not None
    ]
    out["same_frames_with_a_face"] = sum(
        (a is None) == (b is None) for a, b in zip(boxes["cpu"], boxes["cuda"], strict=True)
    )
    out["frames"] = len(frames)
    out["median_box_iou_cpu_vs_cuda"] = float(np.median([iou(a, b) for a, b in pairs])) if pairs else None
    return out


def training_precision() -> dict:
    from functools import partial

    import lightning as L

    from src.models.module import DeepfakeDetector
    from src.models.nets.resnet_lstm import ResNetLSTM

    torch.manual_seed(0)
    module = DeepfakeDetector(ResNetLSTM(), optimizer=partial(torch.optim.Adam, lr=1e-4), name="resnet_lstm")
    x = torch.rand(8, 4, 3, 112, 112)
    y = torch.tensor([0, 1] * 4, dtype=torch.float32)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y, torch.arange(8)), batch_size=4)
    trainer = L.Trainer(
        accelerator="gpu",
        devices=1,
        precision="16-mixed",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
    )
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=data, val_dataloaders=data)
    fit_s = time.perf_counter() - start
    predicted = trainer.predict(module, dataloaders=data)
    logits = torch.cat([p["video_logit"] for p in predicted]).cpu()
    module = module.cuda().eval()
    with torch.inference_mode():
        reference = torch.cat([module(x[i : i + 4].cuda().contiguous()).float().cpu() for i in (0, 4)])
    return {
        "fit_s": fit_s,
        "val_video_auc": float(trainer.callback_metrics.get("val/video_auc", float("nan"))),
        "prediction_dtype": str(logits.dtype),
        "max_abs_diff_vs_fp32": float((logits - reference).abs().max()),
    }


if __name__ == "__main__":
    if sys.argv[1] == "--write":
        write_frames(sys.argv[2])
    else:
        print(
            json.dumps(
                {
                    "gpu": torch.cuda.get_device_name(0),
                    "torch": torch.__version__,
                    "mtcnn": detection(sys.argv[1]),
                    "training": training_precision(),
                },
                indent=1,
            )
        )
