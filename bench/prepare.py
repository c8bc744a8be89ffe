"""Benchmark `talkgs prepare`: wall time of the real command, per-step times, dataset size.

    python bench/prepare.py [--video ../shared/data/anchor_cnn_512_25fps.mp4] [--keep DIR]

Runs the CLI in a subprocess (so import and start-up time count, as for a user), into a
temporary folder, then prints a table and writes bench/results/prepare/cpu.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _harness as H  # bench/ is on sys.path; it puts the checkout there too


def main() -> int:
    ap = H.parser(__doc__, "prepare")
    ap.add_argument("--video", type=Path, default=H.REPO.parent / "shared/data/anchor_cnn_512_25fps.mp4",
                    help="the clip prepared")
    ap.add_argument("--keep", type=Path, default=None, help="also keep the dataset here")
    args = ap.parse_args()
    if not args.video.is_file():
        print(f"bench/prepare.py: {args.video} not found", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="talkgs-bench-"))
    ds = tmp / "dataset"
    cmd = [sys.executable, "-m", "talkgs", "prepare", str(args.video), "-o", str(ds), "--no-progress"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        print(r.stdout, r.stderr, file=sys.stderr)
        return r.returncode
    meta = json.loads((ds / "meta.json").read_text())
    files = {p.name: p.stat().st_size for p in sorted(ds.iterdir())}
    total = sum(files.values())
    result = {
        "wall_s": round(wall, 2),
        "steps_s": meta["timings_s"],
        "dataset_bytes": total,
        "files_bytes": files,
        "n_frames": meta["n_frames"],
        "quality": meta["quality"],
        "focal_px": meta["intrinsics"]["fx"],
        "focal_uncertainty_px": meta["focal_uncertainty_px"],
        "inpainted_fraction": meta["background"]["inpainted_fraction"],
    }
    if args.keep:
        shutil.rmtree(args.keep, ignore_errors=True)
        shutil.move(str(ds), str(args.keep))
    shutil.rmtree(tmp, ignore_errors=True)
    H.write("prepare", args, [result], device="cpu", setup={"cli": " ".join(["talkgs"] + cmd[3:])})

    print(f"\ntalkgs prepare on {args.video.name}: {meta['n_frames']} frames, {os.cpu_count()} CPU cores")
    print(f"{'step':<14}{'seconds':>10}")
    for k, v in meta["timings_s"].items():
        print(f"{k:<14}{v:>10.2f}")
    print(f"{'wall (CLI)':<14}{wall:>10.2f}")
    print(f"\n{'file':<18}{'MiB':>10}")
    for k, v in files.items():
        print(f"{k:<18}{v / 2**20:>10.2f}")
    print(f"{'total':<18}{total / 2**20:>10.2f}")
    q = meta["quality"]
    print(
        f"\nface found {q['face_detected_fraction']:.4f}; reprojection {q['reproj_error_px_mean']:.2f} px "
        f"(raw {q['reproj_error_raw_px_mean']:.2f}); focal {result['focal_px']:.0f} "
        f"+- {result['focal_uncertainty_px']:.0f} px; plate inpainted {result['inpainted_fraction']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
