"""`talkgs eval`: render a trained run against ground truth; image quality and lip sync.

Every frame is rendered by :class:`talkgs.render.renderer.HeadRenderer` (the renderer of
`talkgs render`), in sections:

- ``val``: the val split replayed (``DriveConfig(pose="replay")``): each frame with its own
  audio, eyes and camera, composited over that frame's ground-truth torso on the background
  plate (the original's protocol, so figures compare); the ground truth is the frame with its
  background-labelled pixels replaced by the plate (the original's ``gt_imgs``,
  :func:`talkgs.model.head.ground_truth_on_plate`). Image metrics per frame and averaged:
  PSNR, SSIM, ST-LPIPS (alex) on the full frame; PSNR over the head pixels (face, hair, mouth
  interior labels) and SSIM / ST-LPIPS on the square crop around the face box (the non-head
  area is ground truth, so the full-frame figures flatter every method that composites this way).
- ``train``: a contiguous block of training frames replayed the same way (default: the middle
  :data:`TRAIN_BLOCK` frames of the longest training shot in the run's frame range): how well
  the head fits what it was trained on.
- ``drive:NAME`` (``--drive DATASET``, repeatable): another prepared clip's audio drives this
  head with its default drive plan (its own poses, eyes and torso, ping-pong over its longest
  training shot), one output frame per frame of the other clip. The other clip's own mouth
  opening is real timing ground truth for a cross-speaker lip-sync score.

Lip sync, per section (:func:`talkgs.metrics.lips.sync_scores`):

- mouth opening: MediaPipe on the render, ``mouth_open`` = inner-lip gap / face height exactly
  as ``talkgs prepare`` computes it for the dataset (:func:`talkgs.prepare.signals.compute_signals`),
  against the ground truth's ``tracks.npz`` ``mouth_open``: Pearson ``r``, ``amplitude`` (std
  ratio render / ground truth), ``offset`` (the lag in frames within +-``max_lag`` that maximises
  the correlation; **positive = the render's mouth moves later than the ground truth**) and,
  for replayed sections, LMD (MediaPipe's 40 lip points, centroids removed, in pixels of the
  original frame size).
- the mouth (:mod:`talkgs.metrics.mouth`): on replayed sections, PSNR / SSIM / ST-LPIPS of a
  fixed-size crop around the ground truth's tracked lips (``mouth_psnr``, ``mouth_ssim``,
  ``mouth_lpips``; side ``mouth_crop_px``); on every section, the inside-mouth area (inner-lip
  contour / face height^2, the ground truth's from its tracks, the render's from MediaPipe on it)
  as ``lips.mouth.area_r`` and ``area_ratio_open`` (render / ground truth on the frames the ground
  truth's mouth is open), and ``teeth``: the share of open ground-truth frames with visible teeth
  whose render shows teeth too (the ground truth's teeth from its frames: the val frames, or a
  drive clip's frames.mp4 where present).
- label area (always; computed on the device while rendering, no MediaPipe): the render's
  visible inside-mouth area (``FrameRender.visible_mouth_area()``, the sum of
  (1 - face alpha) x mouth alpha) against the ground truth's mouth-interior label area (pixels
  with label 4): ``r``, ``offset`` and, where both are at the render's scale (replayed
  sections), ``amplitude``.

MediaPipe lives only in ``talkgs.prepare`` (CPU, ``talkgs[prepare]``). Where it is missing (the
GPU machine), every render the lip metrics need is saved under RUN/eval/lips/ (by default
cropped to the face region at 1:1 pixel scale; H.264 with PyAV, else MPEG-4 Part 2 through
OpenCV) with the ground truth they are compared against (lips/inputs.npz), and
``talkgs eval RUN --lips-only`` completes the report on any machine with MediaPipe, from
RUN/eval alone (no checkpoint or dataset needed; with the dataset and PyAV it also writes the
side-by-side video with sound).

Writes RUN/eval/metrics.json (``sections``: val, train, drive:NAME; ``mean``: the val image
metrics), val_render.mp4 and side_by_side.mp4 (ground truth | render, with the val audio).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from talkgs.commands.eval import EvalConfig
from talkgs.conventions import SAMPLE_RATE
from talkgs.data import LABEL_FACE, LABEL_HAIR, LABEL_MOUTH, label_area, load_dataset
from talkgs.data import format as fmt
from talkgs.errors import DatasetError, TalkgsError
from talkgs.fsutil import move_into, partial_dir, write_json
from talkgs.metrics import mouth as mouth_metrics
from talkgs.metrics.image import psnr, ssim
from talkgs.metrics.lips import lips_landmarks, lmd, sync_scores
from talkgs.model.audio_encoder import gather_windows
from talkgs.model.head import ground_truth_on_plate
from talkgs.render.drive import DriveConfig, longest_shot
from talkgs.render.renderer import HeadRenderer, to_uint8

HEAD_CROP = 256  # head-region SSIM / LPIPS crops are resized to this square size
TRAIN_BLOCK = 250  # frames in the default training block (10 s)
CROP_PAD = 0.2  # saved face crops: the union of the section's face boxes grown by this x its size per side
LIPS_DIR = "lips"
IMAGE_KEYS = ("psnr", "ssim", "lpips", "head_psnr", "head_ssim", "head_lpips", "mouth_psnr", "mouth_ssim", "mouth_lpips")


# --------------------------------------------------------------------------- what to render


@dataclasses.dataclass
class Section:
    """One rendered section and the ground truth its lip sync is measured against.

    frames_u8   uint8 [N, H, W, 3] the render (host memory)
    area        float [N] visible inside-mouth area of the render (render pixels)
    gt_area     float [N] mouth-interior label area of the ground truth (its own pixels); None
                without labels (a drive clip carried without its labels.npz)
    gt_open     float [N] ground-truth mouth opening (tracks.npz mouth_open)
    gt_lips     float [N, 40, 2] ground-truth lip points in original-frame pixels (replay only)
    face_box    [4] x0, y0, x1, y1 (render pixels): where the face is in every frame
    mouth_side  the side (render pixels) of the mouth crops of a replayed section (talkgs.metrics.mouth)
    gt_mouth_area  float [N] the ground truth's inside-mouth area (inner-lip contour / face height^2)
    gt_teeth    float [N] the ground truth's teeth fraction; None without its frames
    """

    name: str
    kind: str  # "replay" or "drive"
    info: dict
    frames_u8: np.ndarray
    area: np.ndarray
    gt_area: np.ndarray | None
    gt_open: np.ndarray
    gt_lips: np.ndarray | None
    face_box: tuple[int, int, int, int]
    mouth_side: int = 0
    gt_mouth_area: np.ndarray | None = None
    gt_teeth: np.ndarray | None = None
    image: dict[str, list[float]] | None = None
    render_s: float = 0.0

    @property
    def file_key(self) -> str:
        return file_key(self.name)


def file_key(section: str) -> str:
    """A section's name as a file name: ``drive:german`` -> ``drive_german``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", section.replace(":", "_"))


def run_frame_range(renderer: HeadRenderer) -> tuple[int, int]:
    return renderer.frame_range if renderer.frame_range is not None else (0, renderer.n_dataset_frames)


def val_range(renderer: HeadRenderer) -> tuple[int, int]:
    """The val split intersected with the run's frame range."""
    lo, hi = run_frame_range(renderer)
    a, b = (int(v) for v in renderer.meta["split"]["val"])
    a, b = max(a, lo), min(b, hi)
    if b <= a:
        raise DatasetError(f"dataset {renderer.root} has no validation frames in the run's frame range {lo}:{hi}")
    return a, b


def train_block(renderer: HeadRenderer, size: int = TRAIN_BLOCK) -> tuple[int, int]:
    """The middle ``size`` frames of the longest shot inside the training split and the run's
    frame range (the whole shot when shorter)."""
    lo, hi = run_frame_range(renderer)
    t0, t1 = (int(v) for v in renderer.meta["split"]["train"])
    a, b = longest_shot(renderer.meta.get("shots") or [[0, renderer.n_dataset_frames]], max(lo, t0), min(hi, t1))
    if b - a > size:
        a += (b - a - size) // 2
        b = a + size
    return a, b


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
    return torch.cat([_resized(im[None, y0:y1, x0:x1], HEAD_CROP) for im, (x0, y0, x1, y1) in zip(images, boxes)])


def _resized(images: torch.Tensor, size: int) -> torch.Tensor:
    """``images [B, h, w, C]`` resized to ``[B, size, size, C]`` (bilinear, antialiased)."""
    import torch.nn.functional as F

    c = images.permute(0, 3, 1, 2)
    return F.interpolate(c, size=(size, size), mode="bilinear", antialias=True, align_corners=False).permute(0, 2, 3, 1)


def union_box(boxes: np.ndarray, width: int, height: int, pad: float = CROP_PAD) -> tuple[int, int, int, int]:
    """The box ``x0, y0, x1, y1`` (integers, even width and height, inside the image) holding
    every box of ``boxes [N, 4]`` grown by ``pad`` x its larger side on each side."""
    x0, y0 = boxes[:, 0].min(), boxes[:, 1].min()
    x1, y1 = boxes[:, 2].max(), boxes[:, 3].max()
    m = pad * max(x1 - x0, y1 - y0)
    a, b = int(max(np.floor(x0 - m), 0)), int(max(np.floor(y0 - m), 0))
    c, d = int(min(np.ceil(x1 + m), width)), int(min(np.ceil(y1 + m), height))
    # Even sizes (the video codecs need them): grow inwards from the image edge if needed.
    if (c - a) % 2:
        c, a = (c + 1, a) if c < width else (c, a - 1)
    if (d - b) % 2:
        d, b = (d + 1, b) if d < height else (d, b - 1)
    return max(a, 0), max(b, 0), c, d


def frame_figures(pred: torch.Tensor, gt: torch.Tensor, labels: torch.Tensor, face_box: torch.Tensor,
                  mouth_boxes, lp=None) -> dict[str, list[float]]:
    """Per-frame image figures (:data:`IMAGE_KEYS`; the LPIPS ones only with ``lp``) of renders
    ``pred [B, H, W, 3]`` (float, 0..1) against ``gt`` on the plate: the whole frame, the head
    (PSNR on the face/hair/mouth labels ``[B, H, W]``, SSIM and LPIPS on square crops around
    ``face_box [B, 4]``) and the fixed-size mouth crops ``mouth_boxes`` (one box per frame)."""
    h, w = pred.shape[1:3]
    head = (labels == LABEL_FACE) | (labels == LABEL_HAIR) | (labels == LABEL_MOUTH)
    out = {"psnr": psnr(pred, gt).tolist(), "ssim": ssim(pred, gt).tolist(),
           "head_psnr": psnr(pred, gt, mask=head).tolist()}
    boxes = _square_boxes(torch.as_tensor(face_box).float(), w, h)
    pc, gc = _crops(pred, boxes), _crops(gt, boxes)
    out["head_ssim"] = ssim(pc, gc).tolist()
    pm, gm = mouth_metrics.cut(pred, mouth_boxes), mouth_metrics.cut(gt, mouth_boxes)
    out["mouth_psnr"] = psnr(pm, gm).tolist()
    out["mouth_ssim"] = ssim(pm, gm).tolist()
    if lp is not None:
        size = mouth_metrics.MOUTH_LPIPS_SIZE
        out["lpips"] = lp(pred, gt).flatten().tolist()
        out["head_lpips"] = lp(pc, gc).flatten().tolist()
        out["mouth_lpips"] = lp(_resized(pm, size), _resized(gm, size)).flatten().tolist()
    return out


def _try_lpips(device, enabled: bool):
    if not enabled:
        return None, "disabled"
    try:
        from talkgs.metrics.lpips import load_lpips

        return load_lpips("alex", device), None
    except TalkgsError as e:
        return None, str(e)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def render_replay(renderer: HeadRenderer, name: str, frames: tuple[int, int], features: torch.Tensor,
                  features_start: int, cfg: EvalConfig, lp) -> Section:
    """Replay dataset frames ``[a, b)`` with their own audio, eyes, cameras and torso, and
    measure the images against :func:`ground_truth_on_plate`. ``features [M, W, C]`` are the
    run's features from dataset frame ``features_start`` on (windows at its ends are zero-padded,
    as in training)."""
    from talkgs.console import ProgressBar

    a, b = frames
    renderer.set_drive(DriveConfig(segment=(a, b), pose="replay", blinks="train"), keep_images=True)
    ims = renderer.images
    dev = renderer.device
    n = b - a
    states = renderer.measured_mouth_states(a, b) if cfg.mouth_states == "measured" else None
    with np.load(renderer.root / fmt.TRACKS) as z:
        all_landmarks = z["landmarks"]
    landmarks = all_landmarks[a:b].astype(np.float64) * renderer.scale  # render pixels
    side = mouth_metrics.mouth_crop_side(all_landmarks, renderer.scale)
    mouth_boxes = mouth_metrics.mouth_crop_boxes(mouth_metrics.lip_centres(landmarks), side, ims.width, ims.height)
    per_frame: dict[str, list[float]] = {k: [] for k in IMAGE_KEYS}
    renders, areas, gt_teeth = [], [], []
    render_s = 0.0
    for s in ProgressBar(range(0, n, cfg.batch_size), desc=name, disable=not cfg.progress, leave=False):
        e = min(s + cfg.batch_size, n)
        local = torch.arange(s, e, device=dev)
        win = gather_windows(features, local + (a - features_start), renderer.audio_window)
        _sync(dev)
        t = time.perf_counter()
        out = renderer.render(win, renderer.plan(e - s, s), None if states is None else states[s:e])
        pred = out.image.clamp(0.0, 1.0)
        _sync(dev)
        render_s += time.perf_counter() - t
        gt = ground_truth_on_plate(ims.frames[local], ims.labels[local], ims.background)
        figures = frame_figures(pred, gt, ims.labels[local], ims.tracks["face_box"][local], mouth_boxes[s:e], lp)
        for k, v in figures.items():
            per_frame[k] += v
        gt_teeth.append(mouth_metrics.teeth_fraction(to_uint8(gt).cpu().numpy(), landmarks[s:e]))
        renders.append(to_uint8(pred).cpu())
        areas.append(out.visible_mouth_area().cpu())
    gt_area = label_area(ims.labels, LABEL_MOUTH).cpu().numpy().astype(np.float64)
    with np.load(renderer.root / fmt.TRACKS) as z:
        gt_open = z["mouth_open"][a:b].astype(np.float64)
        gt_lips = lips_landmarks(z["landmarks"][a:b]).astype(np.float32)
    face_box = union_box(ims.tracks["face_box"].cpu().numpy(), ims.width, ims.height)
    return Section(
        name=name, kind="replay",
        info={"kind": "replay", "dataset": str(renderer.root), "frames": [a, b], "n_frames": n},
        frames_u8=torch.cat(renders).numpy(), area=torch.cat(areas).double().numpy(), gt_area=gt_area,
        gt_open=gt_open, gt_lips=gt_lips, face_box=face_box, mouth_side=side,
        gt_mouth_area=mouth_metrics.inner_lip_area(landmarks), gt_teeth=np.concatenate(gt_teeth),
        image={k: v for k, v in per_frame.items() if v}, render_s=render_s,
    )


def drive_features(renderer: HeadRenderer, root: Path, n: int) -> np.ndarray:
    """The other clip's features ``[n, W, C]`` of the run's kind: its audio_<kind>.npy when it
    has one computed with the run's options, else computed from its audio.wav."""
    from talkgs.audio import load_feature_file
    from talkgs.media import read_wav

    path = root / fmt.audio_feature_file(renderer.audio_kind)
    if path.is_file() and fmt.feature_options(fmt.read_meta(root), renderer.audio_kind) == renderer.audio_options:
        feats = load_feature_file(path, renderer.audio_kind, n)
    else:
        if not (root / fmt.AUDIO).is_file():
            raise DatasetError(f"drive dataset {root} has neither {path.name} nor {fmt.AUDIO}")
        wav, sr = read_wav(root / fmt.AUDIO)
        if sr != SAMPLE_RATE:
            raise DatasetError(f"{root / fmt.AUDIO} is {sr} Hz; a prepared dataset's audio is {SAMPLE_RATE} Hz")
        feats = renderer.extract_features(wav, n)
    renderer.check_features(feats)
    return feats


def mouth_label_area(root: Path, n: int, chunk: int = 64) -> np.ndarray:
    """``[n]`` pixels labelled mouth interior per frame of a dataset (its own size)."""
    out = []
    for s in range(0, n, chunk):
        labels = fmt.load_labels(root / fmt.LABELS, s, min(s + chunk, n))
        out.append((labels == LABEL_MOUTH).reshape(labels.shape[0], -1).sum(1))
    return np.concatenate(out).astype(np.float64)


def render_drive(renderer: HeadRenderer, name: str, root: Path, features: np.ndarray, cfg: EvalConfig) -> Section:
    """The head says another prepared clip's audio (its ``features [N, W, C]``, all frames) with
    its default drive plan; ground truth = that clip's own mouth opening and mouth-interior
    label area (when it has labels.npz)."""
    from talkgs.console import ProgressBar

    n_clip = features.shape[0]
    n = n_clip if cfg.drive_frames is None else min(n_clip, cfg.drive_frames)
    # All of the clip's features: the windows of the last rendered frames see the real audio after them.
    feats = torch.as_tensor(features).to(renderer.device, torch.float32)
    renderer.set_drive(DriveConfig())
    renders, areas = [], []
    t0 = time.perf_counter()
    for s in ProgressBar(range(0, n, cfg.batch_size), desc=name, disable=not cfg.progress, leave=False):
        e = min(s + cfg.batch_size, n)
        win = gather_windows(feats, torch.arange(s, e, device=renderer.device), renderer.audio_window)
        frames_u8, area = renderer.render_batch(win, renderer.plan(e - s, s), with_mouth=True)
        renders.append(frames_u8.cpu())
        areas.append(area.cpu())
    render_s = time.perf_counter() - t0
    with np.load(root / fmt.TRACKS) as z:
        gt_open = z["mouth_open"][:n].astype(np.float64)
        gt_landmarks = z["landmarks"]
    with np.load(renderer.root / fmt.TRACKS) as z:
        a, b = renderer.segment
        boxes = z["face_box"][a:b] * renderer.scale
    drive = renderer.drive
    return Section(
        name=name, kind="drive",
        info={"kind": "drive", "dataset": str(root), "frames": [0, n], "n_frames": n,
              "drive": {"pose": drive.pose, "segment": list(renderer.segment), "blinks": drive.blinks}},
        frames_u8=torch.cat(renders).numpy(), area=torch.cat(areas).double().numpy(),
        gt_area=mouth_label_area(root, n) if (root / fmt.LABELS).is_file() else None, gt_open=gt_open, gt_lips=None,
        face_box=union_box(boxes, renderer.width, renderer.height), render_s=render_s,
        gt_mouth_area=mouth_metrics.inner_lip_area(gt_landmarks[:n]), gt_teeth=clip_teeth(root, gt_landmarks, n),
    )


def clip_teeth(root: Path, landmarks: np.ndarray, n: int, chunk: int = 64) -> np.ndarray | None:
    """``[n]`` teeth fraction of a prepared clip's first ``n`` frames at its own size, with its
    tracked ``landmarks [N, 478, 2]`` (None where its frames.mp4 is absent)."""
    from talkgs.media import iter_frames

    if not (root / fmt.FRAMES).is_file():
        return None
    out, batch = [], []
    for i, frame in enumerate(iter_frames(root / fmt.FRAMES, stop=n)):
        batch.append(frame)
        if len(batch) == chunk or i == n - 1:
            out.append(mouth_metrics.teeth_fraction(np.stack(batch), landmarks[i + 1 - len(batch) : i + 1]))
            batch = []
    got = sum(map(len, out))
    if got != n:
        raise DatasetError(f"{root / fmt.FRAMES} has {got} frames; its dataset has {n}")
    return np.concatenate(out)


# --------------------------------------------------------------------------- lip metrics


def mediapipe_missing() -> str | None:
    """None where MediaPipe tracking works here; else why not (one line)."""
    try:
        from talkgs.prepare.track import mediapipe_missing as missing
    except ImportError as e:
        return f"talkgs.prepare.track cannot be imported ({e})"
    return missing()


def lip_scores(frames_u8: np.ndarray, gt_open: np.ndarray, gt_lips: np.ndarray | None, scale: float,
               max_lag: int, gt_mouth: dict | None = None) -> tuple[dict, dict]:
    """MediaPipe on rendered frames ``[N, h, w, 3]`` (whole frames or crops at the render's
    pixel scale; ``scale`` = render size / original size): ``(scores, per_frame)``.

    scores: ``r``, ``amplitude``, ``offset``, ``r_at_offset``, ``n`` of the render's mouth
    opening against ``gt_open [N]``; ``detected_fraction``; ``lmd_px`` (original-frame pixels)
    against ``gt_lips [N, 40, 2]`` when given. Frames where no face is found count as unknown.
    With ``gt_mouth`` (``area [N]``, ``teeth [N]`` or None), also ``mouth``: the render's
    inside-mouth area and teeth against the ground truth's (:func:`mouth_scores`).
    """
    from talkgs.prepare.track import track_video
    from talkgs.prepare.signals import compute_signals

    tr = track_video(list(frames_u8), n_frames_hint=len(frames_u8), progress=False)
    ok = tr.detected
    h, w = frames_u8.shape[1:3]
    opening = compute_signals(tr.landmarks, w, h)["mouth_open"].astype(np.float64)
    opening[~ok] = np.nan
    scores = sync_scores(opening, gt_open, max_lag)
    scores["detected_fraction"] = float(ok.mean())
    per_frame = {"mouth_open_render": [float(x) for x in opening]}
    if gt_lips is not None:
        d = np.full(len(frames_u8), np.nan)
        if ok.any():
            d[ok] = lmd(lips_landmarks(tr.landmarks[ok]) / scale, gt_lips[ok])
        scores["lmd_px"] = float(np.nanmean(d)) if ok.any() else float("nan")
        per_frame["lmd_px"] = [float(x) for x in d]
    if gt_mouth is not None:
        area = np.full(len(frames_u8), np.nan)
        teeth = np.full(len(frames_u8), np.nan)
        if ok.any():
            area[ok] = mouth_metrics.inner_lip_area(tr.landmarks[ok])
            teeth[ok] = mouth_metrics.teeth_fraction(frames_u8[ok], tr.landmarks[ok])
        scores["mouth"] = mouth_scores(area, teeth, gt_mouth["area"], gt_mouth["teeth"], gt_open)
        per_frame["mouth_area_render"] = [float(x) for x in area]
        per_frame["teeth_render"] = [float(x) for x in teeth]
    return scores, per_frame


def mouth_scores(area: np.ndarray, teeth: np.ndarray, gt_area: np.ndarray, gt_teeth: np.ndarray | None,
                 gt_open: np.ndarray) -> dict:
    """The render's inside-mouth area and teeth ``[N]`` (NaN where its face was not found) against
    the ground truth's: ``area_r``, ``area_ratio_open``, ``n_open`` and, with ``gt_teeth``,
    ``teeth`` and ``n_teeth_gt`` (talkgs.metrics.mouth)."""
    out = mouth_metrics.area_scores(area, gt_area, gt_open)
    if gt_teeth is not None:
        out.update(mouth_metrics.teeth_score(teeth, gt_teeth, gt_open))
    return out


def label_area_scores(sec: Section, max_lag: int) -> dict:
    if sec.gt_area is None:
        return {"note": f"{sec.info['dataset']} has no {fmt.LABELS}"}
    s = sync_scores(sec.area, sec.gt_area, max_lag)
    if sec.kind != "replay":  # the other clip's labels are at its own size: no amplitude
        s.pop("amplitude")
    return s


def save_render(path: Path, frames: np.ndarray, codec: str = "compact") -> Path:
    """Save rendered frames for the lip metrics; returns the file written (its suffix follows
    the codec). ``compact``: H.264 crf 12 with PyAV, else MPEG-4 Part 2 through OpenCV (the GPU
    machine); ``lossless``: FFV1 through OpenCV (bit-exact, ~20x larger)."""
    from talkgs.media import write_video, write_video_silent_cv2
    from talkgs.media import import_av

    if codec == "lossless":
        return _write_ffv1(path.with_suffix(".avi"), frames)
    path = path.with_suffix(".mp4")
    if import_av() is not None:
        write_video(path, frames, crf=12, preset="fast")
    else:
        write_video_silent_cv2(path, frames)
    return path


def _write_ffv1(path: Path, frames: np.ndarray) -> Path:
    """Lossless FFV1 in AVI through OpenCV (its FFmpeg has the encoder; no PyAV needed)."""
    import cv2

    from talkgs.errors import MediaError
    from talkgs.fsutil import atomic_path

    h, w = frames.shape[1:3]
    with atomic_path(path, suffix=".avi") as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"FFV1"), 25.0, (w, h))
        if not writer.isOpened():
            raise MediaError(f"{path}: OpenCV cannot write FFV1 here (use --lips-codec compact)")
        try:
            for f in frames:
                writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        finally:
            writer.release()
    return path


# --------------------------------------------------------------------------- eval


def _check_drive_datasets(paths: tuple[Path, ...]) -> list[tuple[str, Path]]:
    """``[(section name, root)]`` of the --drive datasets; one-line errors for what is not a
    prepared dataset. A drive clip needs meta.json, tracks.npz and its audio (audio_<kind>.npy or
    audio.wav); labels.npz (for the label-area signal) and frames.mp4 are optional."""
    out, seen = [], set()
    for p in paths:
        p = Path(p)
        # Frames, labels and plate of a drive clip are not needed (its audio and mouth opening are).
        fmt.read_meta(p, check_files=False)  # one-line DatasetError for anything that is not a dataset
        if not (p / fmt.TRACKS).is_file():
            raise DatasetError(f"drive dataset {p} has no {fmt.TRACKS}")
        name = p.resolve().name
        k = 2
        base = name
        while name in seen:
            name = f"{base}_{k}"
            k += 1
        seen.add(name)
        out.append((f"drive:{name}", p))
    return out


def evaluate(cfg: EvalConfig) -> dict:
    run = Path(cfg.run)
    if cfg.lips_only:
        return complete_lip_metrics(cfg)
    if cfg.max_lag < 0:
        raise TalkgsError(f"--max-lag must be >= 0, got {cfg.max_lag}")
    if cfg.drive_frames is not None and cfg.drive_frames < 1:
        raise TalkgsError(f"--drive-frames must be >= 1, got {cfg.drive_frames}")
    drives = _check_drive_datasets(cfg.drive)
    t0 = time.perf_counter()
    renderer = HeadRenderer(run, cfg.device, cfg.dataset, drive=None, mouth_amplitude=cfg.mouth_amplitude)
    device = renderer.device
    lo, hi = run_frame_range(renderer)
    vr = val_range(renderer)
    if cfg.val_frames is not None:
        a, b = (int(v) for v in cfg.val_frames)
        if not (vr[0] <= a < b <= vr[1]):
            raise TalkgsError(f"--val-frames {a} {b} is outside the val frames {vr[0]}:{vr[1]}")
        vr = (a, b)
    if cfg.train_frames is not None:
        tr_a, tr_b = (int(v) for v in cfg.train_frames)
        if not (lo <= tr_a < tr_b <= hi):
            raise TalkgsError(f"--train-frames {tr_a} {tr_b} is outside the run's frames {lo}:{hi}")
    else:
        tr_a, tr_b = train_block(renderer, cfg.train_block) if cfg.train_block > 0 else (0, 0)
    feats = load_dataset(renderer.root, device, audio_kind=renderer.audio_kind, frame_range=(lo, hi),
                         scale=renderer.scale, load_images=False).audio
    # Every drive clip's features before any rendering: a missing or wrong feature file fails now.
    drive_feats = [drive_features(renderer, root, int(fmt.read_meta(root, check_files=False)["n_frames"])) for _, root in drives]
    lp, lp_note = _try_lpips(device, cfg.lpips)
    mp_missing = mediapipe_missing() if cfg.lip_metrics else "disabled (--no-lip-metrics)"
    save = cfg.save_renders or (mp_missing is not None and cfg.lip_metrics)

    out_dir = run / "eval"
    # Built beside RUN/eval and moved in when complete: a failure or Ctrl-C leaves RUN/eval as it was.
    work = partial_dir(out_dir)
    lips_dir = work / LIPS_DIR
    try:
        metrics = {
            "run": str(run),
            "checkpoint": renderer.state["path"],
            "dataset": str(renderer.root),
            "image_scale": renderer.scale,
            "frame_range": [lo, hi] if renderer.frame_range else None,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "n_val_frames": vr[1] - vr[0],
            "image_size": [renderer.width, renderer.height],
            "protocol": "replayed sections (val, train): own audio/eyes/camera; composited over the GT torso on the "
            "plate; ground truth = frame with background-labelled pixels replaced by the plate (the original's gt_imgs). "
            "drive sections: another clip's audio, this head's default drive plan; lip metrics on the "
            f"{cfg.render_crop} {'crop' if cfg.render_crop == 'face' else 'frame'}",
            "offset_sign": "offset > 0: the render's mouth moves later than the ground truth's (frames)",
            "max_lag": cfg.max_lag,
            "mouth": {"replayed_sections": cfg.mouth_states, "amplitude": cfg.mouth_amplitude}
            if renderer.model.mouth_basis is not None else {"replayed_sections": "audio"},
            "notes": {},
            "sections": {},
        }
        if lp is None:
            metrics["notes"]["lpips"] = f"ST-LPIPS skipped: {lp_note}"
        inputs: dict[str, np.ndarray] = {}

        def finish(sec: Section) -> None:
            """Score one section and let its frames go (sections are rendered one at a time)."""
            entry = dict(sec.info)
            if sec.image is not None:
                entry["image"] = {k: float(np.mean(v)) for k, v in sec.image.items()}
            entry["label_area"] = label_area_scores(sec, cfg.max_lag)
            entry["per_frame"] = {
                "visible_mouth_area": [float(x) for x in sec.area],
                **({"label_area": [float(x) for x in sec.gt_area]} if sec.gt_area is not None else {}),
                "mouth_open_gt": [float(x) for x in sec.gt_open],
                "mouth_area_gt": [float(x) for x in sec.gt_mouth_area],
                **({"teeth_gt": [float(x) for x in sec.gt_teeth]} if sec.gt_teeth is not None else {}),
                **(sec.image or {}),
            }
            if sec.kind == "replay":
                entry["mouth_crop_px"] = sec.mouth_side
            gt_mouth = {"area": sec.gt_mouth_area, "teeth": sec.gt_teeth}
            crop = _crop(sec, cfg.render_crop)
            if mp_missing is None:
                scores, pf = lip_scores(crop, sec.gt_open, sec.gt_lips, renderer.scale, cfg.max_lag, gt_mouth)
                entry["lips"] = scores
                entry["per_frame"].update(pf)
            if save:
                lips_dir.mkdir(exist_ok=True)
                rel = save_render(lips_dir / sec.file_key, crop, cfg.lips_codec).relative_to(work).as_posix()
                box = sec.face_box if cfg.render_crop == "face" else (0, 0, renderer.width, renderer.height)
                entry["lips_render"] = {"file": rel, "size": [int(crop.shape[2]), int(crop.shape[1])], "box": list(box)}
                inputs[f"{sec.file_key}__mouth_open"] = sec.gt_open
                inputs[f"{sec.file_key}__mouth_area"] = sec.gt_mouth_area
                if sec.gt_teeth is not None:
                    inputs[f"{sec.file_key}__teeth"] = sec.gt_teeth
                if sec.gt_lips is not None:
                    inputs[f"{sec.file_key}__lips"] = sec.gt_lips
            metrics["sections"][sec.name] = entry

        val = render_replay(renderer, "val", vr, feats, lo, cfg, lp)
        metrics["mean"] = {k: float(np.mean(v)) for k, v in val.image.items()}
        metrics["render_fps"] = float(val.info["n_frames"] / max(val.render_s, 1e-9))
        if cfg.video:
            _write_videos(work, renderer.root, val.frames_u8, vr, renderer.scale, metrics["notes"],
                          gt_u8=renderer.images.frames.cpu().numpy())
        finish(val)
        del val
        if tr_b > tr_a:
            finish(render_replay(renderer, "train", (tr_a, tr_b), feats, lo, cfg, lp))
        for (name, root), f in zip(drives, drive_feats):
            finish(render_drive(renderer, name, root, f, cfg))
        if inputs:
            np.savez_compressed(lips_dir / "inputs.npz", **inputs)
        if mp_missing is not None and save:
            size = sum(p.stat().st_size for p in lips_dir.iterdir())
            size_s = f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 1024:.0f} kB"
            metrics["notes"]["lips"] = (
                f"lip metrics pending: {mp_missing}. The renders they need are in {out_dir / LIPS_DIR} ({size_s}, "
                f"{cfg.render_crop} {'crop' if cfg.render_crop == 'face' else 'frames'}, {cfg.lips_codec}); complete the report on a "
                f"machine with talkgs[prepare] (MediaPipe), from {out_dir} alone: talkgs eval {run} --lips-only"
            )
            metrics["lips_pending"] = True
        elif mp_missing is not None:
            metrics["notes"]["lips"] = f"lip metrics skipped: {mp_missing}"
        metrics["eval_s"] = round(time.perf_counter() - t0, 2)
        write_json(work / "metrics.json", metrics)
        # An earlier eval's lips/ goes even when this one saves none: its renders must not be
        # completed against these metrics. Other entries of RUN/eval stay.
        move_into(work, out_dir, replace=sorted({p.name for p in work.iterdir()} | {LIPS_DIR}), last="metrics.json")
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    print_summary(metrics)
    return metrics


def _crop(sec: Section, mode: str) -> np.ndarray:
    if mode == "full":
        return sec.frames_u8
    x0, y0, x1, y1 = sec.face_box
    return np.ascontiguousarray(sec.frames_u8[:, y0:y1, x0:x1])


def _write_videos(out_dir: Path, root: Path, frames_u8: np.ndarray, frames: tuple[int, int], scale: float,
                  notes: dict, render: bool = True, gt_u8: np.ndarray | None = None) -> None:
    """val_render.mp4 and side_by_side.mp4 (ground truth | render) with the val audio. Without
    PyAV (the GPU machine) only a silent val_render.mp4 is written, through OpenCV. ``gt_u8``:
    the ground-truth frames at the render's size (default: decoded from the dataset)."""
    from talkgs.conventions import SAMPLES_PER_FRAME
    from talkgs.media import VideoWriter, read_wav, write_video_silent_cv2
    from talkgs.media import import_av

    if import_av() is None:
        if render:
            write_video_silent_cv2(out_dir / "val_render.mp4", frames_u8)
        notes["video"] = (
            "PyAV missing: silent val_render.mp4 written with OpenCV; run `talkgs eval RUN --lips-only` "
            "where PyAV is installed for side_by_side.mp4 with audio"
        )
        return
    a, b = frames
    wav, _ = read_wav(root / fmt.AUDIO)
    audio = wav[a * SAMPLES_PER_FRAME : b * SAMPLES_PER_FRAME]
    gt = gt_u8 if gt_u8 is not None else load_dataset(root, "cpu", audio_kind=None, frame_range=(a, b), scale=scale).frames.numpy()
    if render:
        with VideoWriter(out_dir / "val_render.mp4", audio=audio, crf=14) as w:
            w.write_batch(frames_u8)
    with VideoWriter(out_dir / "side_by_side.mp4", audio=audio, crf=18) as w:
        for g, f in zip(gt, frames_u8):
            w.write(np.concatenate([g, f], axis=1))
    notes.pop("video", None)


# --------------------------------------------------------------------------- --lips-only


def complete_lip_metrics(cfg: EvalConfig) -> dict:
    """``--lips-only``: the lip metrics of every section from the renders an earlier eval saved
    in RUN/eval/lips/ (and the ground truth in lips/inputs.npz), merged into metrics.json. Needs
    only RUN/eval; with the dataset and PyAV it also writes side_by_side.mp4 with sound."""
    from talkgs.media import read_frames

    run = Path(cfg.run)
    out_dir = run / "eval"
    mpath = out_dir / "metrics.json"
    if not mpath.is_file():
        raise TalkgsError(f"{out_dir} has no metrics.json; run `talkgs eval {run}` first")
    metrics = json.loads(mpath.read_text())
    sections = metrics.get("sections", {})
    todo = {k: s for k, s in sections.items() if "lips_render" in s}
    if not todo:
        raise TalkgsError(
            f"{out_dir} holds no saved renders for the lip metrics (lips/); eval saves them where MediaPipe is "
            f"missing, or with --save-renders"
        )
    missing = mediapipe_missing()
    if missing is not None:
        raise TalkgsError(f"--lips-only needs MediaPipe (talkgs[prepare]): {missing}")
    inputs_path = out_dir / LIPS_DIR / "inputs.npz"
    if not inputs_path.is_file():
        raise TalkgsError(f"{inputs_path} is missing; copy the whole {out_dir} folder")
    inputs = np.load(inputs_path)
    scale = float(metrics.get("image_scale", 1.0))
    max_lag = int(metrics.get("max_lag", cfg.max_lag))
    for name, entry in todo.items():
        rend = entry["lips_render"]
        path = out_dir / rend["file"]
        if not path.is_file():
            raise TalkgsError(f"{path} is missing; copy the whole {out_dir} folder")
        w, h = rend["size"]
        frames = read_frames(path)[:, :h, :w]
        n = int(entry["n_frames"])
        if frames.shape[0] != n:
            raise TalkgsError(f"{path} has {frames.shape[0]} frames; section {name} has {n}")
        key = file_key(name)
        gt_lips = inputs[f"{key}__lips"] if f"{key}__lips" in inputs.files else None
        gt_mouth = None
        if f"{key}__mouth_area" in inputs.files:  # inputs without the ground truth's mouth area: no mouth scores
            gt_mouth = {"area": inputs[f"{key}__mouth_area"],
                        "teeth": inputs[f"{key}__teeth"] if f"{key}__teeth" in inputs.files else None}
        scores, pf = lip_scores(np.ascontiguousarray(frames), inputs[f"{key}__mouth_open"].astype(np.float64),
                                gt_lips, scale, max_lag, gt_mouth)
        entry["lips"] = scores
        entry.setdefault("per_frame", {}).update(pf)
    metrics.pop("lips_pending", None)
    metrics["notes"].pop("lips", None)
    metrics["notes"]["lips_completed"] = f"lip metrics from the saved renders in {out_dir / LIPS_DIR} (--lips-only)"
    if cfg.video and (out_dir / "val_render.mp4").is_file():
        root = Path(cfg.dataset) if cfg.dataset is not None else Path(metrics["dataset"])
        val = sections.get("val", {}).get("frames")
        if (root / fmt.META).is_file() and val is not None:
            frames = read_frames(out_dir / "val_render.mp4")
            w, h = metrics["image_size"]
            _write_videos(out_dir, root, frames[:, :h, :w], tuple(val), scale, metrics["notes"], render=False)
    write_json(mpath, metrics)
    print_summary(metrics)
    return metrics


# --------------------------------------------------------------------------- the table


def _fmt(v, spec: str, width: int) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return f"{'-':>{width}}"
    return f"{format(v, spec):>{width}}"


def section_label(name: str, entry: dict) -> str:
    if entry.get("kind") == "replay":
        a, b = entry["frames"]
        return f"{name} {a}:{b}"
    return name.replace("drive:", "drive ")


def summary_table(metrics: dict) -> list[str]:
    """The report's lip-sync table, one row per section."""
    head = (f"{'section':<22}{'frames':>7}{'mouth r':>9}{'amp':>7}{'LMD px':>8}{'offset':>8}"
            f"{'area r':>9}{'area amp':>10}{'area off':>10}{'inner r':>9}{'inner x':>9}{'teeth':>7}")
    lines = [head]
    for name, e in metrics.get("sections", {}).items():
        lips = e.get("lips", {})
        la = e.get("label_area", {})
        mo = lips.get("mouth", {})
        lines.append(
            f"{section_label(name, e):<22}{e['n_frames']:>7}{_fmt(lips.get('r'), '.3f', 9)}"
            f"{_fmt(lips.get('amplitude'), '.2f', 7)}{_fmt(lips.get('lmd_px'), '.2f', 8)}"
            f"{_fmt(lips.get('offset'), '+d', 8)}{_fmt(la.get('r'), '.3f', 9)}"
            f"{_fmt(la.get('amplitude'), '.2f', 10)}{_fmt(la.get('offset'), '+d', 10)}"
            f"{_fmt(mo.get('area_r'), '.3f', 9)}{_fmt(mo.get('area_ratio_open'), '.2f', 9)}{_fmt(mo.get('teeth'), '.2f', 7)}"
        )
    return lines


def print_summary(metrics: dict) -> None:
    secs = metrics.get("sections", {})
    print(f"\neval of {metrics['run']} ({metrics.get('device')}, {metrics['image_size'][0]}x{metrics['image_size'][1]})")
    mouth = metrics.get("mouth") or {}
    if mouth.get("replayed_sections") == "measured" or mouth.get("amplitude", 1.0) != 1.0:
        print(f"mouth: replayed sections with {mouth.get('replayed_sections')} states; "
              f"predicted mouth motion x{mouth.get('amplitude', 1.0):g}")
    img = {k: e["image"] for k, e in secs.items() if "image" in e}
    if img:
        print(f"{'image':<12}" + "".join(f"{section_label(k, secs[k]):>18}" for k in img))
        for key in IMAGE_KEYS:
            if any(key in v for v in img.values()):
                print(f"{key:<12}" + "".join(_fmt(v.get(key), ".4f", 18) for v in img.values()))
    print("lip sync: mouth r / amp / offset = MediaPipe mouth opening of the render vs the ground truth's; "
          "area = visible inside-mouth area vs mouth-interior labels; offset > 0: render later (frames); "
          "inner r / x = inner-lip area of render vs ground truth (r; render/gt on open frames); "
          "teeth = share of open gt frames with teeth where the render shows them")
    for line in summary_table(metrics):
        print(line)
    for k, v in metrics.get("notes", {}).items():
        print(f"note ({k}): {v}")
