"""Round trip through the original's data layout: prepare -> export-tg -> import-tg -> train.

    python bench/interop_roundtrip.py [--dataset DATASET] [--video ../shared/data/anchor_cnn_512_25fps.mp4]
        [--frames START STOP] [--work /tmp/interop_bench]

Without --dataset the video is prepared first (timed). Checks that cameras (1e-5), labels (exact)
and intrinsics survive, measures the frames' round-trip error, then trains the imported dataset
with the quick preset (CPU, 1/8 scale, few steps). Prints a table last and writes
bench/results/interop_roundtrip/cpu.json.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

import _harness as H  # bench/ is on sys.path; it puts the checkout there too
from talkgs.commands.export_tg import ExportTGConfig
from talkgs.commands.import_tg import ImportTGConfig
from talkgs.commands.prepare import PrepareConfig
from talkgs.data import format as fmt
from talkgs.interop.export_tg import export_tg
from talkgs.interop.import_tg import import_tg
from talkgs.train.config import TrainConfig


def main() -> None:
    ap = H.parser(__doc__, "interop_roundtrip")
    ap.add_argument("--dataset", type=Path, default=None, help="a prepared dataset (default: prepare --video)")
    ap.add_argument("--video", type=Path, default=H.REPO.parent / "shared" / "data" / "anchor_cnn_512_25fps.mp4",
                    help="the clip prepared when there is no --dataset")
    ap.add_argument("--frames", type=int, nargs=2, default=None, help="export only frames [START, STOP)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/interop_bench"), help="scratch folder")
    ap.add_argument("--train-scale", type=float, default=0.1, help="TrainConfig.schedule_scale (with the quick preset)")
    args = ap.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    ds = args.dataset
    if ds is None:
        ds = args.work / "prepared"
        t = time.perf_counter()
        from talkgs.prepare.pipeline import prepare

        prepare(PrepareConfig(video=args.video, output=ds, progress=False))
        times["prepare_s"] = time.perf_counter() - t
    meta0 = fmt.read_meta(ds)
    lo, hi = args.frames if args.frames else (0, int(meta0["n_frames"]))

    exp, back, run = args.work / "tg", args.work / "imported", args.work / "run"
    for p in (exp, back, run):
        shutil.rmtree(p, ignore_errors=True)
    t = time.perf_counter()
    er = export_tg(ExportTGConfig(dataset=ds, output=exp, frame_range=(lo, hi), progress=False))
    times["export_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ir = import_tg(ImportTGConfig(source=exp, output=back, progress=False))
    times["import_s"] = time.perf_counter() - t

    from talkgs.media import read_frames

    with np.load(ds / fmt.TRACKS) as a, np.load(back / fmt.TRACKS) as b:
        cam_err = float(np.abs(b["w2c"].astype(np.float64) - a["w2c"][lo:hi]).max())
    labels_equal = bool(np.array_equal(fmt.load_labels(back / fmt.LABELS), fmt.load_labels(ds / fmt.LABELS, lo, hi)))
    f0 = read_frames(ds / fmt.FRAMES, start=lo, stop=hi).astype(np.float32)
    f1 = read_frames(back / fmt.FRAMES).astype(np.float32)
    mae = float(np.abs(f0 - f1).mean())
    psnr = float(10 * np.log10(255.0**2 / ((f0 - f1) ** 2).mean()))
    del f0, f1
    meta1 = fmt.read_meta(back)

    from talkgs.train.trainer import train

    t = time.perf_counter()
    ckpt = train(
        TrainConfig.from_preset(
            "quick", dataset=back, output=run, schedule_scale=args.train_scale, image_scale=0.125,
            batch_size=2, device="cpu", progress=False, tensorboard=False,
        )
    )
    times["train_s"] = time.perf_counter() - t

    size_mb = sum(p.stat().st_size for p in exp.rglob("*") if p.is_file()) / 1e6
    result = {
        "n_frames": hi - lo,
        "export_dir_mb": round(size_mb, 1),
        "camera_max_abs_err": cam_err,
        "labels_equal": labels_equal,
        "intrinsics_equal": meta0["intrinsics"] == meta1["intrinsics"],
        "frames_mae": round(mae, 3),
        "frames_psnr_db": round(psnr, 2),
        "alignment": ir.alignment,
        "export_notes": er.notes,
        "import_missing": ir.missing,
        **{k: round(v, 2) for k, v in times.items()},
    }
    H.write("interop_roundtrip", args, [result], device="cpu",
            setup={"dataset": str(ds), "frames": [lo, hi], "size": [meta0["width"], meta0["height"]],
                   "checkpoint": str(ckpt)})
    rows = [(k, result[k]) for k in ("n_frames", "export_dir_mb", "camera_max_abs_err", "labels_equal",
                                      "intrinsics_equal", "frames_mae", "frames_psnr_db", "alignment")]
    rows += [(k, result[k]) for k in ("prepare_s", "export_s", "import_s", "train_s") if k in result]
    print("| quantity | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")


if __name__ == "__main__":
    main()
