"""The demo's look at the mouth: a close-up video of the head saying a sentence, and a strip of
val frames (ground truth above, render below). `make demo` runs it.

    python bench/demo_strip.py RUN --audio SPEECH --out DIR [--close-scale S] [--n 6]

- DIR/closeup.mp4: the head saying SPEECH (its default drive plan, as `talkgs render` makes
  it), each frame the whole picture beside its mouth, with SPEECH's sound. The mouth is the
  lips' region rendered at --close-scale of the dataset's frame size (default: 4x the run's
  training scale, at most 1): the Gaussians render at any scale, so a 64x64 head's mouth,
  a few pixels wide in its own frame, is drawn with 4x as many pixels. Both panels are
  enlarged to HEIGHT pixels.
- DIR/strip.png: the --n val frames whose tracked mouth opening is widest (at least GAP frames
  apart), one column each: the ground-truth mouth crop on top, the render's (the frame's own
  audio, eyes and camera) below, both at --close-scale and enlarged to CELL pixels.

It prints what it wrote and how long each part took.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.mouth_crops import crop, label, save_rgb  # noqa: E402

HEIGHT = 288  # pixels of each close-up video panel
CELL = 192  # pixels of each strip cell
GAP = 8  # frames between the strip's columns at least
CLOSE_FACTOR = 4.0  # the close-up's scale over the training scale


def crop_view(renderer, box: tuple[int, int, int, int]) -> None:
    """Render only ``box`` ``(x0, y0, x1, y1)`` (pixels of ``renderer``'s frame) from now on: the
    principal point moves by the box's corner and the torso backgrounds are cropped to it."""
    x0, y0, x1, y1 = box
    K = renderer.K.clone()
    K[..., 0, 2] -= x0
    K[..., 1, 2] -= y0
    renderer.K = K
    renderer.backgrounds = renderer.backgrounds[:, y0:y1, x0:x1].contiguous()
    renderer.width, renderer.height = x1 - x0, y1 - y0


def union(boxes: list[tuple[int, int, int, int]], width: int, height: int) -> tuple[int, int, int, int]:
    """The box holding ``boxes``, with even sides (inside the frame)."""
    b = np.asarray(boxes)
    x0, y0, x1, y1 = int(b[:, 0].min()), int(b[:, 1].min()), int(b[:, 2].max()), int(b[:, 3].max())
    x1 = x1 + (x1 - x0) % 2 if x1 < width else x1 - (x1 - x0) % 2
    y1 = y1 + (y1 - y0) % 2 if y1 < height else y1 - (y1 - y0) % 2
    return x0, y0, x1, y1


def enlarge(img: np.ndarray, height: int) -> np.ndarray:
    """``img`` resized to ``height`` rows (bicubic), its width even."""
    import cv2

    h, w = img.shape[:2]
    width = int(round(w * height / h / 2)) * 2
    return np.clip(cv2.resize(img, (width, height), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


def closeup_video(run: Path, audio: Path, out: Path, scale: float, device: str) -> dict:
    """DIR/closeup.mp4 (see the module docstring), the mouth at ``scale``; returns what was made."""
    import torch

    from talkgs.conventions import FPS
    from talkgs.data import format as fmt
    from talkgs.media import VideoWriter
    from talkgs.metrics.mouth import lip_centres, mouth_crop_boxes, mouth_crop_side
    from talkgs.render.renderer import HeadRenderer, features_for, load_audio_for_render, render_features

    whole = HeadRenderer(run, device)
    mouth = HeadRenderer(run, whole.device, scale=scale)
    wav16, wav_mux, rate, n = load_audio_for_render(audio)
    feats = features_for(whole, wav16, n, None)
    # The mouth panel: every drive frame's lips inside one box, so the camera does not jump.
    frames = np.asarray(mouth.plan(n, 0).frames)
    with np.load(mouth.root / fmt.TRACKS) as z:
        side = mouth_crop_side(z["landmarks"], scale)
        boxes = mouth_crop_boxes(lip_centres(z["landmarks"][frames] * scale), side, mouth.width, mouth.height)
    box = union(boxes, mouth.width, mouth.height)
    crop_view(mouth, box)
    with torch.no_grad(), VideoWriter(out, fps=FPS, audio=wav_mux, sample_rate=rate, crf=18) as w:
        for a, b in zip(render_features(whole, feats), render_features(mouth, feats)):
            for fa, fb in zip(a, b):
                sep = np.full((HEIGHT, 4, 3), 32, np.uint8)
                w.write(np.concatenate([enlarge(fa, HEIGHT), sep, enlarge(fb, HEIGHT)], 1))
    return {"frames": n, "whole": (whole.width, whole.height), "mouth": (box[2] - box[0], box[3] - box[1])}


def strip_png(run: Path, out: Path, n: int, scale: float, device: str) -> list[int]:
    """DIR/strip.png (see the module docstring), the crops at ``scale``; returns its frames."""
    import torch

    from talkgs.data import format as fmt
    from talkgs.data import load_dataset
    from talkgs.eval.evaluate import val_range
    from talkgs.metrics.mouth import lip_centres, mouth_crop_boxes, mouth_crop_side
    from talkgs.model.audio_encoder import gather_windows
    from talkgs.render.drive import DriveConfig
    from talkgs.render.renderer import HeadRenderer, to_uint8

    r = HeadRenderer(run, device, drive=None, scale=scale)
    a, b = val_range(r)
    with np.load(r.root / fmt.TRACKS) as z:
        opening = z["mouth_open"].astype(np.float64)
        boxes = mouth_crop_boxes(lip_centres(z["landmarks"] * scale), mouth_crop_side(z["landmarks"], scale),
                                 r.width, r.height)
    chosen: list[int] = []
    for f in np.argsort(-opening[a:b]) + a:  # widest first, GAP apart
        if all(abs(int(f) - c) >= GAP for c in chosen):
            chosen.append(int(f))
        if len(chosen) == n:
            break
    chosen.sort()
    feats = load_dataset(r.root, r.device, audio_kind=r.audio_kind, scale=scale, load_images=False).audio
    cols = []
    for f in chosen:
        r.set_drive(DriveConfig(segment=(f, f + 1), pose="replay", blinks="train"), keep_images=True)
        with torch.no_grad():
            fr = r.render(gather_windows(feats, torch.tensor([f], device=r.device), r.audio_window), r.plan(1, 0))
        render = to_uint8(fr.image.clamp(0, 1))[0].cpu().numpy()
        gt = r.images.frames[0].cpu().numpy()
        box = boxes[f]
        cols.append(np.concatenate([label(crop(gt, box, CELL), f"{f} ground truth"),
                                    label(crop(render, box, CELL), f"{f} render")], 0))
    save_rgb(out, np.concatenate(cols, 1))
    return chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--audio", type=Path, required=True, help="speech for closeup.mp4")
    ap.add_argument("--out", type=Path, required=True, help="folder for closeup.mp4 and strip.png")
    ap.add_argument("--close-scale", type=float, default=None,
                    help="scale of the dataset's frame size for the mouth (default: 4x the training scale, at most 1)")
    ap.add_argument("--n", type=int, default=6, help="val frames in the strip")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    if args.close_scale is not None and not 0 < args.close_scale <= 1:
        raise SystemExit(f"demo_strip: --close-scale must be in (0, 1], got {args.close_scale}")
    args.out.mkdir(parents=True, exist_ok=True)
    from talkgs.model import checkpoint as ckpt

    train_scale = float(ckpt.load(args.run, map_location="cpu")["config"].get("image_scale", 1.0))
    scale = args.close_scale or min(1.0, CLOSE_FACTOR * train_scale)

    t0 = time.perf_counter()
    c = closeup_video(args.run, args.audio, args.out / "closeup.mp4", scale, args.device)
    t1 = time.perf_counter()
    print(f"demo: {args.out / 'closeup.mp4'}: the head saying {args.audio.name} ({c['frames']} frames, with sound), "
          f"the whole {c['whole'][0]}x{c['whole'][1]} picture beside its mouth rendered at {scale / train_scale:g}x "
          f"the training scale ({c['mouth'][0]}x{c['mouth'][1]} pixels), both enlarged to {HEIGHT} pixels high "
          f"({t1 - t0:.0f} s)", flush=True)
    frames = strip_png(args.run, args.out / "strip.png", args.n, scale, args.device)
    t2 = time.perf_counter()
    print(f"demo: {args.out / 'strip.png'}: the {len(frames)} val frames with the widest mouths ({frames}), "
          f"ground truth above, render below ({t2 - t1:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
