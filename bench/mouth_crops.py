"""Mouth crops to look at: are the lips apart and the teeth shown where the ground truth shows them?

    python bench/mouth_crops.py RUN [--dataset DIR] [--drive OTHER_DATASET] [--n 6] [--crops DIR]

Writes CROPS/val_widest.png: the --n val frames whose ground-truth mouth opening is widest, the
ground truth (on the plate, as eval compares it) on top, the render (the frame's own audio,
eyes and camera) below it and, for mouth_state runs, the render with the frame's measured mouth
state (what the renderer does with an exact mouth) at the bottom; each the mouth crop `talkgs eval`
scores (talkgs.metrics.mouth: a fixed square per dataset around the frame's tracked lips), shown
at 128 x 128. --frames F ... adds CROPS/frames.png, the same for any
dataset frames (e.g. training frames where eval's mouth r is off).
With --drive: CROPS/drive_<name>.png, the head saying OTHER's audio (its default drive plan) for
--seq consecutive frames around OTHER's widest opening, every frame, render only (OTHER's
frames need not be present), each labelled with OTHER's own opening. The result
(bench/results/mouth_crops/<--name>.json, or --out) holds one row per frame shown: its set, the
ground-truth opening and the render's visible inside-mouth area.

    python bench/mouth_crops.py RUN [RUN ...] --saved [--frames F ...] [--crops DIR] [--peer RESULT]

--saved: no model, no GPU: the val renders each RUN's `talkgs eval` saved for the lip metrics
(RUN/eval/lips/, a lossy codec: on a machine without PyAV, MPEG-4 Part 2) under the ground truth,
one row per RUN (e.g. a default and its variants, trained elsewhere), for the --n widest val
frames and the --frames that lie in the val split: CROPS/saved.png (default CROPS: the first
RUN's eval/crops), each render labelled with the visible inside-mouth area its eval measured.
--peer RESULT adds a row for the original (bench/peer_tg.py score's result JSON: the val face
crops it saved, read from the path it names, labelled TG).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import _harness as H  # bench/ is on sys.path; it puts the checkout there too


def crop(img: np.ndarray, box, size: int) -> np.ndarray:
    import cv2

    x0, y0, x1, y1 = box
    return cv2.resize(np.ascontiguousarray(img[y0:y1, x0:x1]), (size, size), interpolation=cv2.INTER_NEAREST)


def label(img: np.ndarray, text: str) -> np.ndarray:
    import cv2

    out = img.copy()
    cv2.putText(out, text, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1, cv2.LINE_AA)
    return out


def save_rgb(path: Path, rgb: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), rgb[..., ::-1]):
        raise SystemExit(f"mouth_crops: cannot write {path}")


def in_frame(crops: np.ndarray, x0: int, y0: int, height: int, width: int) -> np.ndarray:
    """Saved face crops ``[N, h, w, 3]`` put back at ``(x0, y0)`` in black ``height x width`` frames."""
    n, h, w = crops.shape[:3]
    full = np.zeros((n, height, width, 3), np.uint8)
    full[:, y0 : y0 + h, x0 : x0 + w] = crops[:, : height - y0, : width - x0]
    return full


def saved_crops(args) -> None:
    """--saved: crops of the renders each run's eval saved, under the ground truth (module docstring)."""
    import json

    from talkgs.data import load_dataset
    from talkgs.data import format as fmt
    from talkgs.media.frames import read_frames
    from talkgs.metrics.mouth import lip_centres, mouth_crop_boxes, mouth_crop_side
    from talkgs.model.head import ground_truth_on_plate
    from talkgs.render.renderer import to_uint8

    size = 128
    saved = []
    for run in args.run:
        path = run / "eval" / "metrics.json"
        if not path.is_file():
            raise SystemExit(f"mouth_crops: {path} is missing (run `talkgs eval {run}` first)")
        m = json.loads(path.read_text())
        val = m["sections"]["val"]
        if "lips_render" not in val:
            raise SystemExit(f"mouth_crops: {path} lists no saved val renders (eval saves them where MediaPipe is missing, "
                             "or with --save-renders)")
        saved.append((run, m, val))
    runs_ranges = {tuple(v["frames"]) for _, _, v in saved}
    if len(runs_ranges) != 1:
        raise SystemExit(f"mouth_crops: the runs' val splits differ: {sorted(runs_ranges)}")
    a, b = runs_ranges.pop()
    root = args.dataset or Path(saved[0][1]["dataset"])
    scale = float(saved[0][1].get("image_scale", 1.0))
    outside = [f for f in args.frames if not a <= f < b]
    if outside:
        raise SystemExit(f"mouth_crops: --frames {outside} are outside the val split {a}:{b} the saved renders hold")
    with np.load(root / fmt.TRACKS) as z:
        all_open = z["mouth_open"].astype(np.float64)
        all_landmarks = z["landmarks"] * scale
    ds = load_dataset(root, "cpu", audio_kind=None, scale=scale, frame_range=(a, b))
    gt = to_uint8(ground_truth_on_plate(ds.frames, ds.labels, ds.background)).numpy()
    side = mouth_crop_side(all_landmarks)
    boxes = mouth_crop_boxes(lip_centres(all_landmarks), side, ds.width, ds.height)
    widest = np.sort(np.argsort(-all_open[a:b])[: args.n]) + a
    frames = sorted(set(int(f) for f in widest) | set(args.frames))
    renders = []
    for run, _, val in saved:
        rend = val["lips_render"]
        w, h = rend["size"]
        x0, y0 = rend["box"][:2]
        fr = read_frames(run / "eval" / rend["file"])[:, :h, :w]
        if fr.shape[0] != b - a:
            raise SystemExit(f"mouth_crops: {run / 'eval' / rend['file']} has {fr.shape[0]} frames, the val split {b - a}")
        renders.append((run.name, in_frame(fr, x0, y0, ds.height, ds.width), val["per_frame"]["visible_mouth_area"]))
    if args.peer is not None:
        row = json.loads(args.peer.read_text())["rows"][0]
        if list(row["frames"]) != [a, b]:
            raise SystemExit(f"mouth_crops: {args.peer} scored frames {row['frames']}, the runs' val split is {a}:{b}")
        x0, y0, x1, y1 = row["lips_render"]["box"]
        fr = read_frames(Path(row["lips_render"]["file"]))[:, : y1 - y0, : x1 - x0]
        if fr.shape[0] != b - a:
            raise SystemExit(f"mouth_crops: {row['lips_render']['file']} has {fr.shape[0]} frames, the val split {b - a}")
        renders.append(("TG", in_frame(fr, x0, y0, ds.height, ds.width), None))
    rows = [np.concatenate([label(crop(gt[f - a], boxes[f], size), f"{f} gt {all_open[f]:.3f}") for f in frames], 1)]
    report = []
    for name, full, area in renders:
        rows.append(np.concatenate([label(crop(full[f - a], boxes[f], size),
                                          name if area is None else f"{name} {area[f - a]:.0f}px") for f in frames], 1))
        report += [{"set": "saved val", "run": name, "frame": f, "gt_open": float(all_open[f]),
                    "render_visible_mouth_px": None if area is None else float(area[f - a])} for f in frames]
    out = args.crops or args.run[0] / "eval" / "crops"
    save_rgb(out / "saved.png", np.concatenate(rows, 0))
    print(f"mouth_crops: {out / 'saved.png'} (frames {frames}; rows: ground truth, {', '.join(r[0] for r in renders)})")
    H.write("mouth_crops", args, report, device="cpu",
            setup={"crops": str(out), "source": "saved eval renders", "mouth_crop_px": side,
                   "runs": [str(r) for r in args.run]})


def main() -> None:
    ap = H.parser(__doc__, "mouth_crops")
    ap.add_argument("run", type=Path, nargs="+", help="a trained run (several only with --saved)")
    ap.add_argument("--saved", action="store_true",
                    help="crops of the val renders each RUN's eval saved (no model, no GPU; module docstring)")
    ap.add_argument("--dataset", type=Path, default=None, help="the run's dataset (default: as recorded in the run)")
    ap.add_argument("--drive", type=Path, action="append", default=[], help="another prepared clip (repeatable)")
    ap.add_argument("--n", type=int, default=6, help="widest val frames shown")
    ap.add_argument("--seq", type=int, default=10, help="consecutive frames of each --drive sequence")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--frames", type=int, nargs="*", default=[], help="more dataset frames: CROPS/frames.png")
    ap.add_argument("--mouth-amplitude", type=float, default=1.0, help="scale of the predicted mouth motion")
    ap.add_argument("--crops", type=Path, default=None, help="folder of the PNGs (default: RUN/eval/crops)")
    ap.add_argument("--peer", type=Path, default=None,
                    help="with --saved: bench/peer_tg.py score's result JSON; the original's saved val crops as a row")
    args = ap.parse_args()
    if args.peer is not None and not args.saved:
        ap.error("--peer goes with --saved")
    if args.saved:
        return saved_crops(args)
    if len(args.run) != 1:
        raise SystemExit("mouth_crops: one RUN (several only with --saved)")
    args.run = args.run[0]

    import torch

    from talkgs.data import load_dataset
    from talkgs.data import format as fmt
    from talkgs.metrics.mouth import lip_centres, mouth_crop_boxes, mouth_crop_side
    from talkgs.model.audio_encoder import gather_windows
    from talkgs.model.head import ground_truth_on_plate
    from talkgs.render.drive import DriveConfig
    from talkgs.eval.evaluate import drive_features, val_range
    from talkgs.render.renderer import HeadRenderer, to_uint8

    out = args.crops or args.run / "eval" / "crops"
    r = HeadRenderer(args.run, args.device, args.dataset, drive=None, mouth_amplitude=args.mouth_amplitude)
    dev = r.device
    a, b = val_range(r)
    n_data = r.n_dataset_frames
    bad = [f for f in args.frames if not 0 <= f < n_data]
    if bad:
        raise SystemExit(f"mouth_crops: --frames {bad} outside the dataset's {n_data} frames")
    with np.load(r.root / fmt.TRACKS) as z:
        all_open = z["mouth_open"].astype(np.float64)
        all_landmarks = z["landmarks"] * r.scale
    side = mouth_crop_side(all_landmarks)
    all_boxes = mouth_crop_boxes(lip_centres(all_landmarks), side, r.width, r.height)
    feats = load_dataset(r.root, dev, audio_kind=r.audio_kind, scale=r.scale, load_images=False).audio
    measured = r.model.mouth_basis is not None
    report: dict[str, list[dict]] = {"val": [], "frames": []}
    drive_rows: list[dict] = []
    size = 128

    def columns(frames) -> tuple[list[np.ndarray], list[dict]]:
        """One column per dataset frame: ground truth / render / render with the measured state."""
        cols, rows = [], []
        for f in frames:
            f = int(f)
            r.set_drive(DriveConfig(segment=(f, f + 1), pose="replay", blinks="train"), keep_images=True)
            win = gather_windows(feats, torch.tensor([f], device=dev), r.audio_window)
            ims = r.images
            gt = to_uint8(ground_truth_on_plate(ims.frames[:1], ims.labels[:1], ims.background))[0].cpu().numpy()
            box = all_boxes[f]
            fr = r.render(win, r.plan(1, 0))
            area = float(fr.visible_mouth_area()[0])
            col = [label(crop(gt, box, size), f"{f} gt {all_open[f]:.3f}"),
                   label(crop(to_uint8(fr.image.clamp(0, 1))[0].cpu().numpy(), box, size), f"audio {area:.0f}px")]
            row = {"frame": f, "gt_open": float(all_open[f]), "render_visible_mouth_px": area}
            if measured:
                fm = r.render(win, r.plan(1, 0), r.measured_mouth_states(f, f + 1))
                area_m = float(fm.visible_mouth_area()[0])
                col.append(label(crop(to_uint8(fm.image.clamp(0, 1))[0].cpu().numpy(), box, size), f"measured {area_m:.0f}px"))
                row["measured_state_visible_mouth_px"] = area_m
            cols.append(np.concatenate(col, 0))
            rows.append(row)
        return cols, rows

    order = np.sort(np.argsort(-all_open[a:b])[: args.n]) + a
    cols, report["val"] = columns(order)
    save_rgb(out / "val_widest.png", np.concatenate(cols, 1))
    print(f"mouth_crops: {out / 'val_widest.png'} (frames {[v['frame'] for v in report['val']]})")
    if args.frames:
        cols, report["frames"] = columns(args.frames)
        save_rgb(out / "frames.png", np.concatenate(cols, 1))
        print(f"mouth_crops: {out / 'frames.png'} (frames {args.frames})")

    for root in args.drive:
        n = int(fmt.read_meta(root, check_files=False)["n_frames"])
        f = torch.as_tensor(drive_features(r, root, n)).to(dev, torch.float32)
        with np.load(root / fmt.TRACKS) as z:
            d_open = z["mouth_open"][:n].astype(np.float64)
        c = int(np.argmax(d_open))
        s = max(0, min(n - args.seq, c - args.seq // 2))
        idx = torch.arange(s, s + args.seq, device=dev)
        r.set_drive(DriveConfig())
        fr = r.render(gather_windows(f, idx, r.audio_window), r.plan(args.seq, s))
        frames = to_uint8(fr.image.clamp(0, 1)).cpu().numpy()
        plan = r.plan(args.seq, s)
        own_boxes = all_boxes[np.asarray(plan.frames)]  # the lips of the frames whose cameras the render replays
        row = [label(crop(frames[k], own_boxes[k], size), f"{s + k} gt {d_open[s + k]:.3f}") for k in range(args.seq)]
        name = root.resolve().name
        save_rgb(out / f"drive_{name}.png", np.concatenate(row, 1))
        areas = fr.visible_mouth_area().cpu().tolist()
        drive_rows += [{"set": f"drive:{name}", "frame": s + k, "gt_open": float(d_open[s + k]),
                        "render_visible_mouth_px": areas[k]} for k in range(args.seq)]
        print(f"mouth_crops: {out / f'drive_{name}.png'} (frames {s}:{s + args.seq})")
    rows = ([{"set": "val widest", **v} for v in report["val"]] + [{"set": "frames", **v} for v in report["frames"]]
            + drive_rows)
    H.write("mouth_crops", args, rows, device=str(dev),
            setup={"crops": str(out), "gaussians": r.model.num_gaussians(), "mouth_crop_px": side})


if __name__ == "__main__":
    main()
