"""Rasterization speed: forward and forward+backward times on head-sized scenes.

    python3 bench/raster.py --device cuda    # GPU machine (gsplat): bench/results/raster/<gpu>.json
    python bench/raster.py --device cpu      # torch backend, smaller sizes: bench/results/raster/cpu.json

Scenes (talkgs.raster.testing.head_scene): means uniform in a 0.15 m cube, scales lognormal
around 2.5 mm, opacities uniform in [0.05, 0.95], RGB colours, camera 0.7 m away with
fx = fy = 1200 px at 512 px (scaled with the width). "batch 8" = 8 frames, each with its own
N Gaussians and its own camera (means [8, N, 3], viewmats [8, 1, 4, 4]), as in training.

Defaults: on CUDA, N = 20k / 100k / 300k at 512x512 with the gsplat backend (10 warm-up
calls, median of 50, timed with CUDA events); on CPU, N = 2k / 10k / 20k at 128x128 and
256x256 with the torch backend and 2 threads (1 warm-up call, median of 3, wall clock).
Forward is timed with gradients enabled (as in training); forward+backward adds
``(colors.sum() + alphas.sum()).backward()``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import torch

import _harness as H  # bench/ is on sys.path; it puts the checkout there too
from talkgs.raster import rasterize
from talkgs.raster.testing import head_scene, params_of

DEFAULTS = {
    "cuda": dict(sizes=[20_000, 100_000, 300_000], res=[512], warmup=10, repeats=50),
    "cpu": dict(sizes=[2_000, 10_000, 20_000], res=[128, 256], warmup=1, repeats=3),
}


def bench_one(n: int, res: int, batch: int, device, backend: str, warmup: int, repeats: int):
    """Median forward and forward+backward ms for one configuration."""
    scene = head_scene(n, res, batch=(batch,) if batch > 1 else (), seed=0, device=device)
    params = list(params_of(scene).values())
    timer = H.timer(device)

    def fwd():
        return rasterize(**scene, backend=backend)

    def fwd_bwd():
        out = rasterize(**scene, backend=backend)
        (out.colors.sum() + out.alphas.sum()).backward()

    def clear():
        for p in params:
            p.grad = None

    result = {}
    for name, fn in (("fwd", fwd), ("fwd_bwd", fwd_bwd)):
        times, cpu = [], []
        for i in range(warmup + repeats):
            clear()
            c0 = time.process_time()
            ms = timer(fn)
            if i >= warmup:
                times.append(ms)
                cpu.append((time.process_time() - c0) * 1e3)
        result[f"{name}_ms"] = round(statistics.median(times), 3)
        result[f"{name}_ms_all"] = [round(t, 3) for t in times]
        if device.type == "cpu":  # CPU time of all threads: shows contention from other jobs
            result[f"{name}_cpu_ms"] = round(statistics.median(cpu), 3)
    with torch.no_grad():
        out = fwd()
    result["backend"] = out.backend
    result["visible_frac"] = round(out.visible.float().mean().item(), 4)
    result["mean_alpha"] = round(out.alphas.mean().item(), 4)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = H.parser(__doc__, "raster")
    ap.add_argument("--device", choices=["cuda", "cpu"],
                    default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--backend", choices=["auto", "gsplat", "torch"], default="auto", help="rasterizer backend")
    ap.add_argument("--sizes", type=int, nargs="*", help="numbers of Gaussians per frame")
    ap.add_argument("--res", type=int, nargs="*", help="square image sizes (px)")
    ap.add_argument("--batches", type=int, nargs="*", default=[1, 8], help="frames per call")
    ap.add_argument("--warmup", type=int, help="untimed calls first")
    ap.add_argument("--repeats", type=int, help="timed calls (median)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    args = ap.parse_args(argv)  # fmt: skip

    device = torch.device(args.device)
    d = DEFAULTS[device.type]
    sizes = args.sizes or d["sizes"]
    resolutions = args.res or d["res"]
    warmup = d["warmup"] if args.warmup is None else args.warmup
    repeats = d["repeats"] if args.repeats is None else args.repeats
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    setup = {
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "warmup": warmup,
        "repeats": repeats,
        "timing": "CUDA events, median" if device.type == "cuda" else "perf_counter, median",
    }
    if device.type == "cpu":
        setup["load_avg_before"] = list(os.getloadavg())

    print(f"bench/raster.py on {H.device_name(args.device)}, torch {torch.__version__}, "
          f"threads {setup['threads']}, median of {repeats} after {warmup} warm-up")  # fmt: skip
    print(f"{'backend':8} {'N':>8} {'res':>5} {'batch':>5} {'fwd ms':>10} {'fwd+bwd ms':>11} "
          f"{'visible':>8}")  # fmt: skip
    results = []
    for res in resolutions:
        for batch in args.batches:
            for n in sizes:
                r = dict(n=n, width=res, height=res, batch=batch, cameras=1)
                r.update(bench_one(n, res, batch, device, args.backend, warmup, repeats))
                results.append(r)
                row = f"{r['backend']:8} {n:>8} {res:>5} {batch:>5} {r['fwd_ms']:>10.2f} "
                row += f"{r['fwd_bwd_ms']:>11.2f} {r['visible_frac']:>8.3f}"
                print(row, flush=True)
    if device.type == "cpu":
        setup["load_avg_after"] = list(os.getloadavg())
    H.write("raster", args, results, device=args.device, setup=setup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
