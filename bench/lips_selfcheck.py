"""Self-check of the lip-sync report's MediaPipe path on real frames: each dataset's own frames
stand in for a perfect render, so mouth r should be ~1, amplitude ~1, offset 0 and LMD ~0.
Compares the full frame, the face crop `talkgs eval` saves (1:1 pixel scale) and that crop after
the video codec of the completion path (H.264 with PyAV; --cv2: MPEG-4 Part 2 through OpenCV,
as on the GPU machine), and reports the saved size per frame.

    python bench/lips_selfcheck.py /work/data/anchor /work/data/german ... [--frames 250] [--cv2]

Sections: a dataset's val split and a block of training frames (the middle of its longest
training shot), at most --frames each. Needs MediaPipe (talkgs[prepare]). Writes
bench/results/lips_selfcheck/cpu.json.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import _harness as H  # bench/ is on sys.path; it puts the checkout there too
from talkgs.data import format as fmt
from talkgs.data import load_dataset
from talkgs.eval.evaluate import lip_scores, union_box
from talkgs.metrics.lips import lips_landmarks
from talkgs.render.drive import default_segment


def sections(meta: dict, max_frames: int) -> dict[str, tuple[int, int]]:
    va, vb = meta["split"]["val"]
    ta, tb = default_segment(meta)
    if tb - ta > max_frames:
        ta += (tb - ta - max_frames) // 2
        tb = ta + max_frames
    return {"val": (va, min(vb, va + max_frames)), "train": (ta, tb)}


def save_and_read(frames: np.ndarray, cv2_only: bool) -> tuple[np.ndarray, int]:
    from talkgs.media import read_frames, write_video_silent_cv2

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "crop.mp4"
        if cv2_only:
            write_video_silent_cv2(path, frames)
        else:
            from talkgs.eval.evaluate import save_render

            save_render(path, frames)
        size = path.stat().st_size
        h, w = frames.shape[1:3]
        return np.ascontiguousarray(read_frames(path)[:, :h, :w]), size


def main() -> int:
    ap = H.parser(__doc__, "lips_selfcheck")
    ap.add_argument("datasets", type=Path, nargs="+", help="prepared clips")
    ap.add_argument("--frames", type=int, default=250, help="most frames per section")
    ap.add_argument("--cv2", action="store_true", help="save through OpenCV (MPEG-4 Part 2), as without PyAV")
    args = ap.parse_args()
    rows = []
    for root in args.datasets:
        meta = fmt.read_meta(root)
        with np.load(root / fmt.TRACKS) as z:
            mouth_open, landmarks, face_box = z["mouth_open"], z["landmarks"], z["face_box"]
        for name, (a, b) in sections(meta, args.frames).items():
            ds = load_dataset(root, "cpu", audio_kind=None, frame_range=(a, b))
            frames = ds.frames.numpy()
            gt_open = mouth_open[a:b].astype(np.float64)
            gt_lips = lips_landmarks(landmarks[a:b])
            x0, y0, x1, y1 = union_box(face_box[a:b], ds.width, ds.height)
            crop = np.ascontiguousarray(frames[:, y0:y1, x0:x1])
            saved, size = save_and_read(crop, args.cv2)
            for variant, f in (("full", frames), ("face crop", crop), ("crop saved", saved)):
                t = time.perf_counter()
                s, _ = lip_scores(f, gt_open, gt_lips, 1.0, 8)
                rows.append({"dataset": root.name, "section": f"{name} {a}:{b}", "variant": variant,
                             "size": [int(f.shape[2]), int(f.shape[1])], "track_s": round(time.perf_counter() - t, 1),
                             "kb_per_frame": round(size / 1024 / len(f), 2) if variant == "crop saved" else None,
                             **{k: s[k] for k in ("r", "amplitude", "offset", "lmd_px", "detected_fraction")}})
                print(rows[-1], flush=True)
    head = f"{'dataset':<9}{'section':<16}{'variant':<12}{'size':>10}{'mouth r':>9}{'amp':>7}{'offset':>7}{'LMD px':>8}{'det':>6}{'kB/fr':>7}"
    lines = [head]
    for r in rows:
        kb = f"{r['kb_per_frame']:>7.1f}" if r["kb_per_frame"] is not None else f"{'':>7}"
        lines.append(f"{r['dataset']:<9}{r['section']:<16}{r['variant']:<12}{'x'.join(map(str, r['size'])):>10}"
                     f"{r['r']:>9.4f}{r['amplitude']:>7.3f}{r['offset']:>+7d}{r['lmd_px']:>8.3f}{r['detected_fraction']:>6.2f}{kb}")
    print("\n".join(lines))
    H.write("lips_selfcheck", args, rows, device="cpu",
            setup={"codec": "cv2 mp4v" if args.cv2 else "default (H.264 with PyAV)"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
