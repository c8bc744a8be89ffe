"""Benchmark `talkgs prepare`: wall time of the real command, per-step times, dataset size, peak
host memory, and
(with --baseline) the same for an earlier checkout, in the same run, with the tracking compared.

    python bench/prepare.py [--video ../shared/data/anchor_cnn_512_25fps.mp4] [--keep DIR]
        [--baseline CHECKOUT]

Runs the CLI in a subprocess (so import and start-up time count, as for a user), into a
temporary folder, then prints a table and writes bench/results/prepare/<--name>.json (default
cpu.json). ``--baseline CHECKOUT`` (e.g. ``git worktree add /tmp/base <commit>``) runs that
checkout's `talkgs prepare` first on the same clip, with the same Python, and adds a row for it
(``code`` baseline, its commit) and a row ``measure`` agreement: how far this checkout's tracks
are from the baseline's (landmarks and face box in pixels, cameras, reprojection error).
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

import numpy as np

import _harness as H  # bench/ is on sys.path; it puts the checkout there too


def run_prepare(video: Path, ds: Path, checkout: Path) -> tuple[dict, float, float]:
    """`talkgs prepare VIDEO -o DS` with the code of ``checkout``; (its meta.json, wall seconds,
    the peak resident memory of its processes together in GiB, sampled every 50 ms)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(checkout), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "talkgs", "prepare", str(video), "-o", str(ds), "--no-progress"]
    with tempfile.TemporaryFile() as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=checkout)
        peak_gib = H.wait_sampling_rss(proc)  # the command and its audio feature process together
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            log.seek(0)
            raise SystemExit(f"bench/prepare.py: talkgs prepare ({checkout}) failed:\n{log.read().decode(errors='replace')}")
    return json.loads((ds / "meta.json").read_text()), wall, peak_gib


def summary(ds: Path, meta: dict, wall: float, host_peak_gib: float) -> dict:
    files = {p.name: p.stat().st_size for p in sorted(ds.iterdir())}
    return {
        "wall_s": round(wall, 2),
        "host_peak_gib": round(host_peak_gib, 2),
        "steps_s": meta["timings_s"],
        "dataset_bytes": sum(files.values()),
        "files_bytes": files,
        "n_frames": meta["n_frames"],
        "quality": meta["quality"],
        "focal_px": meta["intrinsics"]["fx"],
        "focal_uncertainty_px": meta["focal_uncertainty_px"],
        "inpainted_fraction": meta["background"]["inpainted_fraction"],
    }


def tracking_agreement(new: Path, base: Path) -> dict:
    """How far the tracks of dataset ``new`` are from those of ``base`` (same clip): per-frame
    landmark distance in pixels (mean, 99th percentile, max), face box corners (max px), the
    cameras (max absolute difference of ``w2c``), and each one's mean reprojection error."""
    with np.load(new / "tracks.npz") as a, np.load(base / "tracks.npz") as b:
        if a["landmarks"].shape != b["landmarks"].shape:
            return {"error": f"landmarks {a['landmarks'].shape} against {b['landmarks'].shape}"}
        d = np.linalg.norm(a["landmarks"].astype(np.float64) - b["landmarks"], axis=-1)  # [N, 478]
        return {
            "measure": "agreement",
            "landmark_px_mean": float(d.mean()), "landmark_px_p99": float(np.percentile(d, 99)),
            "landmark_px_max": float(d.max()),
            "face_box_px_max": float(np.abs(a["face_box"].astype(np.float64) - b["face_box"]).max()),
            "w2c_max_abs": float(np.abs(a["w2c"].astype(np.float64) - b["w2c"]).max()),
            "reproj_px_mean": float(a["reproj_error_px"].mean()),
            "reproj_px_mean_baseline": float(b["reproj_error_px"].mean()),
            "identical_tracks": all(np.array_equal(a[k], b[k]) for k in a.files if k in b.files),
        }


def _git_commit(checkout: Path) -> str:
    r = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=checkout, capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


def main() -> int:
    ap = H.parser(__doc__, "prepare")
    ap.add_argument("--video", type=Path, default=H.REPO.parent / "shared/data/anchor_cnn_512_25fps.mp4",
                    help="the clip prepared")
    ap.add_argument("--keep", type=Path, default=None, help="also keep the dataset here")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="a checkout of an earlier commit: its prepare runs first, and the tracks are compared")
    args = ap.parse_args()
    if not args.video.is_file():
        print(f"bench/prepare.py: {args.video} not found", file=sys.stderr)
        return 2
    if args.baseline is not None and not (args.baseline / "talkgs" / "__init__.py").is_file():
        print(f"bench/prepare.py: --baseline {args.baseline} is not a talkgs checkout", file=sys.stderr)
        return 2

    video = args.video.resolve()  # each prepare runs in its own checkout's folder
    tmp = Path(tempfile.mkdtemp(prefix="talkgs-bench-"))
    rows = []
    try:
        base_ds = tmp / "baseline"
        if args.baseline is not None:
            meta, wall, peak = run_prepare(video, base_ds, args.baseline.resolve())
            rows.append({"code": "baseline", "commit": _git_commit(args.baseline), **summary(base_ds, meta, wall, peak)})
        ds = tmp / "dataset"
        meta, wall, peak = run_prepare(video, ds, H.REPO)
        rows.append({"code": "this", "commit": H.commit(), **summary(ds, meta, wall, peak)} if args.baseline
                    else summary(ds, meta, wall, peak))
        if args.baseline is not None:
            rows.append(tracking_agreement(ds, base_ds))
        if args.keep:
            shutil.rmtree(args.keep, ignore_errors=True)
            shutil.move(str(ds), str(args.keep))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    H.write("prepare", args, rows, device="cpu", setup={"cli": f"talkgs prepare {args.video} -o DATASET --no-progress"})

    print(f"\ntalkgs prepare on {args.video.name}: {meta['n_frames']} frames, {os.cpu_count()} CPU cores")
    timed = [r for r in rows if "wall_s" in r]
    names = [r.get("code", "this") for r in timed]
    print(f"{'step':<14}" + "".join(f"{n:>12}" for n in names))
    for k in meta["timings_s"]:
        print(f"{k:<14}" + "".join(f"{r['steps_s'].get(k, float('nan')):>12.2f}" for r in timed))
    print(f"{'wall (CLI)':<14}" + "".join(f"{r['wall_s']:>12.2f}" for r in timed))
    print(f"{'MiB':<14}" + "".join(f"{r['dataset_bytes'] / 2**20:>12.2f}" for r in timed))
    print(f"{'host peak GiB':<14}" + "".join(f"{r['host_peak_gib']:>12.2f}" for r in timed))
    for r in timed:
        q = r["quality"]
        print(f"{r.get('code', 'this')}: face found {q['face_detected_fraction']:.4f}; reprojection "
              f"{q['reproj_error_px_mean']:.2f} px (raw {q['reproj_error_raw_px_mean']:.2f}); focal {r['focal_px']:.0f} "
              f"+- {r['focal_uncertainty_px']:.0f} px; plate inpainted {r['inpainted_fraction']:.3f}")
    agree = [r for r in rows if r.get("measure") == "agreement"]
    if agree:
        print("tracks against the baseline's: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                             for k, v in agree[0].items() if k != "measure"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
