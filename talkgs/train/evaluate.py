"""`talkgs eval`: render the validation split of a run and measure it.

Protocol (the original's, so figures compare): every val frame is rendered with its own
audio, eyes and camera, and composited over that frame's ground-truth torso on the
background plate (:func:`talkgs.model.head.torso_background`); the ground truth is the frame
with its background-labelled pixels replaced by the plate (the original's ``gt_imgs``,
:func:`talkgs.model.head.ground_truth_on_plate`). Reported per frame and averaged:

- full frame: PSNR, SSIM, ST-LPIPS (alex);
- head region only: PSNR over the head pixels (face, hair, mouth interior labels), SSIM and
  ST-LPIPS on the square crop around the face box (the non-head area is ground truth, so the
  full-frame figures flatter every method that composites this way);
- lips: LMD (MediaPipe's 40 lip landmarks, centroids removed, pixels) and the correlation of
  rendered vs ground-truth mouth opening. These need MediaPipe (CPU, `talkgs[prepare]`); on a
  machine without it they are skipped and `talkgs eval RUN --lips-only` computes them later
  from the saved val render.

Writes RUN/eval/metrics.json, RUN/eval/val_render.mp4 and RUN/eval/side_by_side.mp4
(ground truth | render, with the val audio).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from talkgs.config import EvalConfig
from talkgs.data import LABEL_FACE, LABEL_HAIR, LABEL_MOUTH, load_dataset
from talkgs.errors import TalkgsError
from talkgs.fsutil import write_json
from talkgs.metrics.image import psnr, ssim
from talkgs.model.head import ground_truth_on_plate, torso_background
from talkgs.model import checkpoint as ckpt
from talkgs.device import resolve_device
from talkgs.train.trainer import Conditioning

HEAD_CROP = 256  # head-region SSIM / LPIPS crops are resized to this square size


@torch.no_grad()
def render_frames(model, cond: Conditioning, idx: torch.Tensor, width: int, height: int, backend: str = "auto"):
    """Composited frames ``[B, H, W, 3]`` float in [0, 1] for dataset frames ``idx [B]`` with their
    own audio, eyes, cameras and torso background."""
    ds = cond.ds
    viewmats, Ks = cond.cameras(idx)
    bg = torso_background(ds.frames[idx], ds.labels[idx], ds.background)
    out = model.render_frames(cond.audio(idx), cond.eye_all[idx], viewmats, Ks, width, height, bg, backend=backend)
    return out.image.clamp(0.0, 1.0)


def _square_boxes(face_box: torch.Tensor, width: int, height: int, pad: float = 0.25) -> list[tuple[int, int, int, int]]:
    boxes = []
    for x0, y0, x1, y1 in face_box.tolist():
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        s = max(x1 - x0, y1 - y0) * (1 + 2 * pad)
        s = min(max(s, 32), width, height)
        a = int(round(min(max(cx - s / 2, 0), width - s)))
        b = int(round(min(max(cy - s / 2, 0), height - s)))
        boxes.append((a, b, a + int(s), b + int(s)))
    return boxes


def _crops(images: torch.Tensor, boxes) -> torch.Tensor:
    import torch.nn.functional as F

    out = []
    for im, (x0, y0, x1, y1) in zip(images, boxes):
        c = im[y0:y1, x0:x1].permute(2, 0, 1)[None]
        out.append(F.interpolate(c, size=(HEAD_CROP, HEAD_CROP), mode="bilinear", antialias=True, align_corners=False)[0])
    return torch.stack(out).permute(0, 2, 3, 1)


def _try_lpips(device, enabled: bool):
    if not enabled:
        return None, "disabled"
    try:
        from talkgs.metrics.lpips import load_lpips

        return load_lpips("alex", device), None
    except TalkgsError as e:
        return None, str(e)


def evaluate(cfg: EvalConfig) -> dict:
    run = Path(cfg.run)
    out_dir = run / "eval"
    if cfg.lips_only:
        return lip_metrics_from_render(run, cfg)
    state = ckpt.load(run)
    device = resolve_device(cfg.device)
    train_cfg = state["config"]
    dataset = ckpt.run_dataset(state, cfg.dataset)
    scale = float(train_cfg.get("image_scale", 1.0))
    frame_range = train_cfg.get("frame_range")
    ds = load_dataset(
        dataset, device, audio_kind=state["audio"]["kind"],
        frame_range=tuple(frame_range) if frame_range else None, scale=scale,
    )
    model = ckpt.build_model(state, device)
    cond = Conditioning(ds, state["eye_ratio_ref"], model.cfg.audio.window)
    val = ds.val_idx
    if val.numel() == 0:
        raise TalkgsError(f"dataset {dataset} has no validation frames in the run's frame range")
    lp, lp_note = _try_lpips(device, cfg.lpips)

    per_frame: dict[str, list[float]] = {k: [] for k in ("psnr", "ssim", "lpips", "head_psnr", "head_ssim", "head_lpips")}
    renders = []
    t0 = time.perf_counter()
    render_s = 0.0
    from tqdm import tqdm

    for s in tqdm(range(0, val.numel(), cfg.batch_size), desc="eval", disable=not cfg.progress, leave=False):
        idx = val[s : s + cfg.batch_size]
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        pred = render_frames(model, cond, idx, ds.width, ds.height)
        if device.type == "cuda":
            torch.cuda.synchronize()
        render_s += time.perf_counter() - t
        gt = ground_truth_on_plate(ds.frames[idx], ds.labels[idx], ds.background)
        head = (ds.labels[idx] == LABEL_FACE) | (ds.labels[idx] == LABEL_HAIR) | (ds.labels[idx] == LABEL_MOUTH)
        per_frame["psnr"] += psnr(pred, gt).tolist()
        per_frame["ssim"] += ssim(pred, gt).tolist()
        per_frame["head_psnr"] += psnr(pred, gt, mask=head).tolist()
        boxes = _square_boxes(ds.tracks["face_box"][idx].float(), ds.width, ds.height)
        pc, gc = _crops(pred, boxes), _crops(gt, boxes)
        per_frame["head_ssim"] += ssim(pc, gc).tolist()
        if lp is not None:
            per_frame["lpips"] += lp(pred, gt).flatten().tolist()
            per_frame["head_lpips"] += lp(pc, gc).flatten().tolist()
        renders.append((pred * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).cpu())
    frames_u8 = torch.cat(renders).numpy()
    metrics = {
        "run": str(run),
        "checkpoint": state["path"],
        "dataset": str(dataset),
        "image_scale": scale,
        "frame_range": list(frame_range) if frame_range else None,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "n_val_frames": int(val.numel()),
        "image_size": [ds.width, ds.height],
        "protocol": "val split; own audio/eyes/camera; composited over the GT torso on the plate; "
        "ground truth = frame with background-labelled pixels replaced by the plate (the original's gt_imgs)",
        "mean": {k: float(np.mean(v)) for k, v in per_frame.items() if v},
        "render_fps": float(val.numel() / max(render_s, 1e-9)),
        "eval_s": round(time.perf_counter() - t0, 2),
        "notes": {},
        "per_frame": {k: v for k, v in per_frame.items() if v},
    }
    if lp is None:
        metrics["notes"]["lpips"] = f"ST-LPIPS skipped: {lp_note}"
    out_dir.mkdir(parents=True, exist_ok=True)
    val_np = val.cpu().numpy() + ds.frame_offset
    np.save(out_dir / "val_frames.npy", val_np)
    if cfg.video:
        _write_videos(out_dir, ds, frames_u8, val.cpu().numpy(), metrics)
    if cfg.lip_metrics:
        lips = _lip_metrics(frames_u8, ds, val.cpu().numpy(), scale)
        metrics["notes"].update(lips.pop("notes", {}))
        metrics["mean"].update(lips.pop("mean", {}))
        metrics["per_frame"].update(lips.pop("per_frame", {}))
    write_json(out_dir / "metrics.json", metrics)
    _print_summary(metrics)
    return metrics


def _write_videos(out_dir: Path, ds, frames_u8: np.ndarray, val_local: np.ndarray, metrics: dict, render: bool = True) -> None:
    """val_render.mp4 and side_by_side.mp4 (ground truth | render) with the val audio. Without
    PyAV (the GPU machine) only a silent val_render.mp4 is written, through OpenCV."""
    from talkgs.conventions import SAMPLES_PER_FRAME
    from talkgs.media import VideoWriter, read_wav, write_video_silent_cv2
    from talkgs.media._backend import import_av

    if import_av() is None:
        if render:
            write_video_silent_cv2(out_dir / "val_render.mp4", frames_u8)
        metrics["notes"]["video"] = (
            "PyAV missing: silent val_render.mp4 written with OpenCV; run `talkgs eval RUN --lips-only` "
            "where PyAV is installed for side_by_side.mp4 with audio"
        )
        return
    wav, _ = read_wav(ds.root / "audio.wav")
    a = (int(val_local[0]) + ds.frame_offset) * SAMPLES_PER_FRAME
    audio = wav[a : a + len(frames_u8) * SAMPLES_PER_FRAME]
    gt = ds.frames[torch.as_tensor(val_local, device=ds.device)].cpu().numpy()
    if render:
        with VideoWriter(out_dir / "val_render.mp4", audio=audio, crf=14) as w:
            w.write_batch(frames_u8)
    with VideoWriter(out_dir / "side_by_side.mp4", audio=audio, crf=18) as w:
        for g, f in zip(gt, frames_u8):
            w.write(np.concatenate([g, f], axis=1))
    metrics["notes"].pop("video", None)


def _lip_metrics(frames_u8: np.ndarray, ds, val_local: np.ndarray, scale: float) -> dict:
    """LMD and mouth-opening correlation of rendered frames against the dataset's landmarks."""
    try:
        from talkgs.prepare.landmarks import track_video
        from talkgs.prepare.signals import compute_signals
    except ImportError as e:
        return {"notes": {"lips": f"lip metrics skipped: {e} (install talkgs[prepare]; run `talkgs eval RUN --lips-only`)"}}
    from talkgs.metrics.lips import lips_landmarks, lmd, mouth_opening_correlation

    try:
        tr = track_video(list(frames_u8), n_frames_hint=len(frames_u8), progress=False)
    except ImportError as e:
        return {"notes": {"lips": f"lip metrics skipped: {e}"}}
    ok = tr.detected
    gt_lm = ds.tracks["landmarks"][torch.as_tensor(val_local, device=ds.device)].cpu().numpy()
    d = np.full(len(frames_u8), np.nan)
    if ok.any():
        d[ok] = lmd(lips_landmarks(tr.landmarks[ok]), lips_landmarks(gt_lm[ok])) / scale
    h, w = frames_u8.shape[1:3]
    opening = compute_signals(tr.landmarks, w, h)["mouth_open"]
    gt_open = ds.tracks["mouth_open"][torch.as_tensor(val_local, device=ds.device)].cpu().numpy()
    corr = mouth_opening_correlation(opening[ok], gt_open[ok]) if ok.sum() > 2 else float("nan")
    return {
        "mean": {
            "lmd_px": float(np.nanmean(d)),
            "mouth_open_corr": float(corr),
            "lips_detected_fraction": float(ok.mean()),
        },
        "per_frame": {"lmd_px": [float(x) for x in d], "mouth_open_render": [float(x) for x in opening]},
        "notes": {"lmd": "LMD in pixels of the original frame size; MediaPipe's 40 lip points, centroids removed"},
    }


def lip_metrics_from_render(run: Path, cfg: EvalConfig) -> dict:
    """``--lips-only``: lip metrics from RUN/eval/val_render.mp4, merged into metrics.json."""
    from talkgs.media import read_frames

    out_dir = run / "eval"
    mpath = out_dir / "metrics.json"
    if not (out_dir / "val_render.mp4").is_file() or not mpath.is_file():
        raise TalkgsError(f"{out_dir} has no val_render.mp4/metrics.json; run `talkgs eval {run}` first")
    metrics = json.loads(mpath.read_text())
    # Everything needed is in metrics.json, so this also works where only RUN/eval was copied
    # back from a GPU machine (no checkpoint).
    dataset = Path(cfg.dataset) if cfg.dataset is not None else Path(metrics["dataset"])
    scale = float(metrics.get("image_scale", 1.0))
    frame_range = metrics.get("frame_range")
    ds = load_dataset(dataset, "cpu", audio_kind=None, frame_range=tuple(frame_range) if frame_range else None,
                      scale=scale, load_images=cfg.video)
    frames = read_frames(out_dir / "val_render.mp4")
    val_local = np.load(out_dir / "val_frames.npy") - ds.frame_offset
    if cfg.video:
        _write_videos(out_dir, ds, frames, val_local, metrics, render=False)
    lips = _lip_metrics(frames, ds, val_local, scale)
    metrics["notes"].update(lips.pop("notes", {}))
    metrics["mean"].update(lips.pop("mean", {}))
    metrics["per_frame"].update(lips.pop("per_frame", {}))
    write_json(mpath, metrics)
    _print_summary(metrics)
    return metrics


def _print_summary(metrics: dict) -> None:
    m = metrics["mean"]
    print(f"\neval of {metrics['run']} on {metrics.get('n_val_frames')} val frames ({metrics.get('device')})")
    print(f"{'metric':<18}{'value':>10}")
    for k in ("psnr", "ssim", "lpips", "head_psnr", "head_ssim", "head_lpips", "lmd_px", "mouth_open_corr"):
        if k in m:
            print(f"{k:<18}{m[k]:>10.4f}")
    for k, v in metrics.get("notes", {}).items():
        print(f"note ({k}): {v}")
