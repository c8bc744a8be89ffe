"""Parity check: gsplat vs the torch backend on the same random scenes (GPU machine).

    python3 bench/raster_parity.py      # bench/results/raster_parity/<gpu>.json

renders every case of ``talkgs.raster.testing.parity_cases`` (256x256 by default) with both
backends on CUDA, backpropagates the same random linear loss over colour, alpha, accumulated
depth and extras, and prints per case the relative L2 image errors and the cosine similarity
of the gradients per parameter (and of means2d, the densification signal). The thresholds
and their justification are in ``talkgs/raster/testing.py`` (PARITY_*). Exit status 1 if
any case fails, 2 if gsplat/CUDA is unavailable.

``--self-check`` (CPU is fine) instead compares the torch backend with copies of itself that
break one convention each (pixel centres, dilation, alpha clamp, transmittance stop, ...),
to show that the thresholds catch such mismatches (bench/results/raster_parity/self_check_cpu.json).
"""

from __future__ import annotations

import contextlib
import sys
import time

import torch

import _harness as H  # bench/ is on sys.path; it puts the checkout there too
from talkgs.raster import _api, _torch
from talkgs.raster._gsplat import gsplat_unavailable_reason
from talkgs.raster.testing import (
    PARITY_GRAD_COS_MIN,
    PARITY_IMAGE_REL_MAX,
    PARITY_VISIBLE_AGREE_MIN,
    compare_backends,
    parity_cases,
    parity_failures,
)

GRAD_COLUMNS = ("means", "quats", "scales", "opacities", "colors", "sh_coeffs", "extras", "means2d")
IMAGE_COLUMNS = ("colors", "alphas", "depth*alpha", "extras")


@contextlib.contextmanager
def _set(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def _shifted_pixel_centres():
    """Pixel centres at integer coordinates instead of +0.5 (a classic off-by-half)."""
    orig = _torch._composite_group

    def shifted(means2d, *args):
        return orig(means2d + 0.5, *args)

    return _set(_torch, "_composite_group", shifted)


def _float64_backend():
    """The torch backend computing in float64: differs from float32 by rounding only, which
    shows the noise floor (rare threshold flips included) that parity must tolerate."""
    orig = _api.rasterize_torch

    def f64(*args, **kwargs):
        cast = [a.double() if torch.is_tensor(a) else a for a in args]
        kw = {k: (v.double() if torch.is_tensor(v) else v) for k, v in kwargs.items()}
        res = orig(*cast, **kw)
        dtype = args[0].dtype
        return _torch.RasterResult(
            render=res.render.to(dtype),
            alphas=res.alphas.to(dtype),
            means2d=res.means2d.to(dtype),  # a copy: its .grad stays None (row shows "-")
            radii=res.radii,
            depths=res.depths.to(dtype),
        )

    return _set(_api, "rasterize_torch", f64)


# name -> context-manager factory that breaks one convention of the torch backend.
PERTURBATIONS = {
    "none (torch vs torch)": None,
    "rounding only (float64)": _float64_backend,
    "pixel centres at integers": _shifted_pixel_centres,
    "no 0.3 px^2 dilation": lambda: _set(_api, "EPS2D", 0.0),
    "dilation 0.1 px^2": lambda: _set(_api, "EPS2D", 0.1),
    "alpha clamp 0.99 (3DGS)": lambda: _set(_torch, "ALPHA_MAX", 0.99),
    "no 1/255 alpha skip": lambda: _set(_torch, "ALPHA_MIN", 0.0),
    "no transmittance stop": lambda: _set(_torch, "T_MIN", 1e-30),
}


def _row(name: str, m: dict, failures: list[str]) -> str:
    img = " ".join(
        f"{m['image_rel'][k]:9.2e}" if k in m["image_rel"] else f"{'-':>9}" for k in IMAGE_COLUMNS
    )
    cos = " ".join(
        f"{m['grad_cos'][k]:9.6f}" if k in m["grad_cos"] else f"{'-':>9}" for k in GRAD_COLUMNS
    )
    status = "ok" if not failures else "FAIL"
    return f"{name[:26]:26} {img} | {cos} | {m['visible_agree']:7.5f} {status}"


def _header() -> str:
    img = " ".join(f"{k[:9]:>9}" for k in IMAGE_COLUMNS)
    cos = " ".join(f"{k[:9]:>9}" for k in GRAD_COLUMNS)
    return (
        f"{'':26} {'image relative L2 error':^39} | {'gradient cosine similarity':^79} |\n"
        f"{'case':26} {img} | {cos} | {'vis.agr':>7} result"
    )


def main(argv: list[str] | None = None) -> int:
    ap = H.parser(__doc__, "raster_parity")
    ap.add_argument("--size", type=int, default=256, help="image width and height (px)")
    ap.add_argument("--cases", nargs="*", help="subset of case names (default: all)")
    ap.add_argument("--self-check", action="store_true",
                    help="torch vs perturbed torch (runs on CPU): shows the thresholds' power")
    ap.add_argument("--device", default=None, help="device for --self-check (default: cpu)")
    args = ap.parse_args(argv)  # fmt: skip

    report: dict = {
        "thresholds": {
            "image_rel_max": PARITY_IMAGE_REL_MAX,
            "grad_cos_min": PARITY_GRAD_COS_MIN,
            "visible_agree_min": PARITY_VISIBLE_AGREE_MIN,
        },
    }
    if args.self_check:
        device = torch.device(args.device or "cpu")
        report["mode"] = "self-check: torch backend vs torch backend with one convention broken"
        cases = parity_cases(args.size, device)
        names = args.cases or ["head_5k_rgb_bg"]
        runs = [(f"{c}: {p}", c, PERTURBATIONS[p], "torch") for c in names for p in PERTURBATIONS]
    else:
        reason = gsplat_unavailable_reason()
        if reason is not None:
            print(f"raster_parity: gsplat backend unavailable: {reason}", file=sys.stderr)
            return 2
        device = torch.device("cuda")
        report["mode"] = "gsplat vs torch backend"
        cases = parity_cases(args.size, device)
        names = args.cases or list(cases)
        runs = [(c, c, None, "gsplat") for c in names]
    print(f"{report['mode']} at {args.size}x{args.size} on {H.device_name(str(device))}")
    print(
        f"thresholds: image rel err <= {PARITY_IMAGE_REL_MAX:g}, grad cosine >= "
        f"{PARITY_GRAD_COS_MIN:g}, visibility agreement >= {PARITY_VISIBLE_AGREE_MIN:g}"
    )
    print(_header())
    results = {}
    all_ok = True
    for label, case, patch, test in runs:
        scene, kwargs = cases[case]()
        t0 = time.perf_counter()
        m = compare_backends(scene, kwargs, ref="torch", test=test, test_patch=patch)
        m["seconds"] = round(time.perf_counter() - t0, 2)
        failures = parity_failures(m)
        m["failures"] = failures
        results[label] = m
        all_ok &= not failures
        print(_row(label, m, failures), flush=True)
        for f in failures:
            print(f"    {f}")
    rows = [{"case": k, **v} for k, v in results.items()]
    if args.self_check:
        for row in rows:  # whether the thresholds caught this perturbation
            row["detected"] = bool(row["failures"])
    else:
        print("PASSED" if all_ok else "FAILED")
    if args.self_check and args.name is None and args.out is None:
        args.name = f"self_check_{H.device_tag(str(device))}"
    H.write("raster_parity", args, rows, device=str(device), setup=report)
    return 0 if (all_ok or args.self_check) else 1


if __name__ == "__main__":
    sys.exit(main())
