"""Where a rendered batch's time goes, and what candidate speed-ups buy (and cost in pixels).

    python bench/render_profile.py RUN [--batch 32] [--iters 20] [--torch-face]

On val audio of the run's dataset (its own features file), at one batch size:

1. Parts, device-synchronised (median ms per batch): drive inputs, mouth-state prediction,
   each branch's deformation, its SH colours and its rasterization, compositing + uint8, the
   copy to the host. Their sum exceeds an unsynchronised batch slightly.
2. The top device operators of a few batches (torch.profiler), and per batch the kernel
   launches, host syncs and the device's busy share (bench/_profile.py).
3. Variants of the whole batch (uint8 frames on the device), each against the default's
   frames: ms per batch, frames/s, PSNR and largest pixel difference.
   - ``default``: ``HeadRenderer.render_batch``.
   - ``tf32``: float32 matmuls on TF32 tensor cores.
   - ``bf16_deform``: the motion fields under bfloat16 autocast (rasterization stays float32).
   - ``cull``: Gaussians of opacity < 1/255 removed first (the rasterizer skips any
     contribution below 1/255, so the frames should not change).
   - ``torch_sh``: SH colours evaluated in torch and handed to gsplat as colours (what
     ``rasterize`` did before it let gsplat evaluate them).
   - ``attended_codes``: the face field's first layer on materialised [B, N, A] attended codes
     (what ``FaceMotion`` did before its one-matmul form).
   - ``fused_face``: the face deformation as one Triton kernel (talkgs.model.fused_face), its
     products as three TF32 products each; ``fused_face_ieee``: the same with float32 products.
   - ``packed``: gsplat's packed mode (only visible Gaussian-camera pairs are kept), with the
     SH colours evaluated in torch as in ``torch_sh`` (compare with that row).

Prints tables and writes bench/results/render_profile/<device>.json (rows of ``measure`` part, op
and variant). CUDA only for the variants that call gsplat directly.
"""

from __future__ import annotations

import copy
import functools
import sys
import time
from pathlib import Path

import numpy as np
import torch

import _harness as H  # bench/ is on sys.path; it puts the checkout there too
from _profile import launch_summary, print_summary
from talkgs.data import format as fmt
from talkgs.model.audio_encoder import gather_windows
from talkgs.model.head import BRANCHES, composite
from talkgs.raster.sh import sh_to_rgb
from talkgs.render.graphs import DeformGraphs
from talkgs.render.renderer import HeadRenderer, to_uint8

VISIBLE_OPACITY = 1.0 / 255.0


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _median_ms(fn, dev: torch.device, iters: int) -> float:
    fn()
    _sync(dev)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        _sync(dev)
        times.append(time.perf_counter() - t)
    return 1000.0 * float(np.median(times))


@torch.no_grad()
def parts(r: HeadRenderer, win: torch.Tensor, plan, iters: int) -> dict[str, float]:
    """Median ms per part of one batch (each part synchronised)."""
    dev = r.device
    m = r.model
    acc: dict[str, list[float]] = {}

    def timed(name, fn):
        _sync(dev)
        t = time.perf_counter()
        out = fn()
        _sync(dev)
        acc.setdefault(name, []).append(1000.0 * (time.perf_counter() - t))
        return out

    for it in range(iters + 1):
        windows, eye, viewmats, Ks, bg = timed("drive inputs", lambda: r.inputs(win, plan))
        states = None
        if m.cfg.conditioning == "mouth_state":
            states = timed("mouth-state prediction", lambda: m.predict_states(windows))
        outs = {}
        for br in BRANCHES:
            d = timed(f"{br}: deformation", lambda: m.deform(br, windows, eye if br == "face" else None, states=states))
            timed(f"{br}: SH colours in torch (not on the CUDA path)",
                  lambda: sh_to_rgb(d.sh, d.means, viewmats, d.sh_degree) if d.sh_degree > 0 else None)
            o = timed(f"{br}: rasterize (SH + gsplat)",
                      lambda: m.render_branch(d, viewmats, Ks, r.width, r.height, backend=r.backend))
            outs[br] = (o.colors[:, 0], o.alphas[:, 0])
        img = timed("composite + uint8", lambda: to_uint8(composite(*outs["face"], *outs["mouth"], bg)))
        timed("copy to host", lambda: img.cpu())
        if it == 0:  # warm-up
            acc.clear()
    return {k: float(np.median(v)) for k, v in acc.items()}


def top_ops(r: HeadRenderer, win: torch.Tensor, plan, n: int = 5) -> tuple[str, list[dict]]:
    dev = r.device
    acts = [torch.profiler.ProfilerActivity.CPU]
    if dev.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    r.render_batch(win, plan)
    _sync(dev)
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(n):
            r.render_batch(win, plan)
        _sync(dev)
    key = "self_device_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    rows = sorted(prof.key_averages(), key=lambda e: -getattr(e, key, 0.0))[:25]
    ops = [{"name": e.key[:120], "calls": e.count, "self_cpu_ms_per_batch": e.self_cpu_time_total / 1000 / n,
            "self_device_ms_per_batch": getattr(e, "self_device_time_total", 0.0) / 1000 / n} for e in rows]
    plain_ms = _median_ms(lambda: r.render_batch(win, plan), dev, 3 * n)
    summary = {"measure": "launches", "ms_per_batch": plain_ms, **launch_summary(prof, n, plain_ms)}
    print_summary(summary, "batch")
    return prof.key_averages().table(sort_by=key.replace("device", "cuda"), row_limit=25), ops + [summary]


def _torch_sh_render_frames(r: HeadRenderer, model, win, plan, packed: bool):
    """``render_frames`` with the SH colours evaluated in torch and gsplat called directly on
    them (variants ``torch_sh`` and ``packed``)."""
    from gsplat import rasterization

    from talkgs.raster._checks import EPS2D, FAR_PLANE, NEAR_PLANE

    windows, eye, viewmats, Ks, bg = r.inputs(win, plan)
    states = model.predict_states(windows) if model.cfg.conditioning == "mouth_state" else None
    outs = {}
    for br in BRANCHES:
        d = model.deform(br, windows, eye if br == "face" else None, states=states)
        colors = sh_to_rgb(d.sh, d.means, viewmats, d.sh_degree)[:, 0]
        rgb, alpha, _ = rasterization(d.means, d.quats, d.scales, d.opacities, colors, viewmats, Ks, r.width, r.height,
                                      near_plane=NEAR_PLANE, far_plane=FAR_PLANE, eps2d=EPS2D,
                                      packed=packed, rasterize_mode="classic")
        outs[br] = (rgb[:, 0], alpha[:, 0])
    return to_uint8(composite(*outs["face"], *outs["mouth"], bg))


def _attended_codes_forward(mot, means, audio, eye=None):
    """``FaceMotion.forward`` with the [B, N, A] attended codes and three [B, N, H] products."""
    from talkgs.model.motion import FaceDeltas

    b = audio.shape[0]
    eye = audio.new_zeros(b, mot.eye_dim) if eye is None else eye.to(audio.dtype)
    feat = mot.features(means)
    a_aud, a_eye = mot.aud_att(feat), mot.eye_att(feat)
    first, fd, A = mot.deform[0].weight, feat.shape[1], mot.audio_dim
    h = ((feat @ first[:, :fd].T)[None] + (a_aud[None] * audio[:, None]) @ first[:, fd : fd + A].T
         + (a_eye[None] * eye[:, None]) @ first[:, fd + A :].T)
    out = mot.deform[1:](h)
    return FaceDeltas(out[..., :3] * mot.cfg.xyz_scale, out[..., 3:7], out[..., 7:10], a_aud, a_eye, audio, eye)


def culled(model) -> tuple[object, dict[str, int]]:
    """A copy of ``model`` without the Gaussians of opacity < 1/255; how many each branch lost."""
    from talkgs.model.gaussians import opacity_activation

    m = copy.deepcopy(model)
    lost = {}
    for br in BRANCHES:
        gs = m.gaussians(br)
        keep = opacity_activation(gs["opacities"]) >= VISIBLE_OPACITY
        lost[br] = int((~keep).sum())
        for k in list(gs.keys()):
            gs[k] = torch.nn.Parameter(gs[k].data[keep], requires_grad=False)
    return m, lost


@torch.no_grad()
def variants(r: HeadRenderer, win, plan, iters: int, names: list[str]) -> list[dict]:
    dev = r.device
    ref = r.render_batch(win, plan)
    rows = []
    fused_default = r.model.fused_kernel is not None

    def score(name, fn, extra=None):
        # Fresh graphs: the renderer's were captured with the default deformation, which a
        # replay would repeat whatever the variant changed.
        saved = r.graphs
        r.graphs = DeformGraphs(r.model, r.mouth_amplitude) if saved is not None else None
        try:
            out = fn()
            ms = _median_ms(fn, dev, iters)
        except Exception as e:  # noqa: BLE001 - one variant failing must not lose the others
            rows.append({"variant": name, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"})
            print(f"{name}: failed: {rows[-1]['error']}", flush=True)
            return
        finally:
            r.graphs = saved
        diff = (out.float() - ref.float()).abs()
        mse = float((diff ** 2).mean())
        row = {"variant": name, "ms_per_batch": round(ms, 2), "fps": round(win.shape[0] * 1000.0 / ms, 1),
               "psnr_vs_default": None if mse == 0 else round(10 * np.log10(255.0 ** 2 / mse), 2),
               "max_abs_diff": int(diff.max()), **(extra or {})}
        rows.append(row)
        print(row, flush=True)

    for name in names:
        if name == "default":
            score(name, lambda: r.render_batch(win, plan))
        elif name == "tf32":
            old = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = True
            try:
                score(name, lambda: r.render_batch(win, plan))
            finally:
                torch.backends.cuda.matmul.allow_tf32 = old
        elif name == "bf16_deform":
            m = r.model
            orig = m.deform

            def deform_bf16(*a, **k):
                with torch.autocast(dev.type, dtype=torch.bfloat16):
                    d = orig(*a, **k)
                for f in ("means", "quats", "scales", "opacities", "sh"):
                    setattr(d, f, getattr(d, f).float())
                return d

            m.deform = deform_bf16
            try:
                score(name, lambda: r.render_batch(win, plan))
            finally:
                del m.deform
        elif name == "cull":
            m, lost = culled(r.model)
            orig_model = r.model
            r.model = m
            try:
                score(name, lambda: r.render_batch(win, plan), {"culled": lost, "kept": m.num_gaussians()})
            finally:
                r.model = orig_model
        elif name == "torch_sh":
            score(name, lambda: _torch_sh_render_frames(r, r.model, win, plan, packed=False))
        elif name == "attended_codes":
            mot = r.model.branch("face").motion
            mot.forward = functools.partial(_attended_codes_forward, mot)
            try:
                score(name, lambda: r.render_batch(win, plan))
            finally:
                del mot.forward
        elif name in ("fused_face", "fused_face_ieee"):
            r.model.fix_fields(fused=True)
            try:
                if r.model.fused_kernel is None:
                    rows.append({"variant": name, "error": "Triton cannot run on this device"})
                else:
                    if name == "fused_face_ieee":
                        r.model.fused_kernel.precision = "ieee"
                    score(name, lambda: r.render_batch(win, plan))
            finally:
                r.model.fix_fields(fused=fused_default)
        elif name == "packed":
            score(name, lambda: _torch_sh_render_frames(r, r.model, win, plan, packed=True))
        else:
            raise SystemExit(f"unknown variant {name!r}")
    return rows


def main() -> int:
    ap = H.parser(__doc__, "render_profile")
    ap.add_argument("run", type=Path, help="a trained run")
    ap.add_argument("--dataset", type=Path, default=None, help="the run's dataset (default: as recorded in the run)")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--batch", type=int, default=32, help="frames per batch")
    ap.add_argument("--iters", type=int, default=20, help="timed batches per part and variant (median)")
    ap.add_argument("--variants", default="default,tf32,bf16_deform,cull,torch_sh,attended_codes,fused_face,fused_face_ieee,packed",
                    help="comma-separated variants (see above)")
    ap.add_argument("--torch-face", action="store_true",
                    help="profile with PyTorch's face deformation (HeadRenderer(fused_face=False)) as the default")
    args = ap.parse_args()

    r = HeadRenderer(args.run, args.device, args.dataset, fused_face=not args.torch_face)
    dev = r.device
    feats = torch.as_tensor(np.array(fmt.load_features(r.root / fmt.audio_feature_file(r.audio_kind)))).to(dev, torch.float16)
    v0 = int(r.meta["split"]["val"][0])
    idx = torch.arange(v0, v0 + args.batch, device=dev).clamp(max=feats.shape[0] - 1)
    win = gather_windows(feats, idx, r.audio_window)
    plan = r.plan(args.batch, 0)

    p = parts(r, win, plan, args.iters)
    table, ops = top_ops(r, win, plan)
    names = [n for n in args.variants.split(",") if n]
    if dev.type != "cuda":
        names = [n for n in names if n in ("default", "cull", "attended_codes")]
    rows = variants(r, win, plan, args.iters, names)

    out = ([{"measure": "part", "part": k, "ms_per_batch": v} for k, v in p.items()]
           + [{"measure": "op", **o} for o in ops] + [{"measure": "variant", **v} for v in rows])
    setup = {"run": str(args.run), "size": [r.width, r.height], "gaussians": r.model.num_gaussians(),
             "cuda_graphs": r.graphs is not None, "fused_face": r.model.fused_kernel is not None}
    H.write("render_profile", args, out, device=str(dev), setup=setup)
    print(table)
    print(f"\n{H.device_name(str(dev))}, batch {args.batch}, {r.width}x{r.height}, Gaussians {setup['gaussians']}")
    print(f"{'part':<40}{'ms/batch':>10}")
    for k, v in p.items():
        print(f"{k:<40}{v:>10.2f}")
    print(f"\n{'variant':<14}{'ms/batch':>10}{'frames/s':>10}{'PSNR vs default':>17}{'max diff':>10}")
    for row in rows:
        if "error" in row:
            print(f"{row['variant']:<14} failed: {row['error']}")
            continue
        ps = "identical" if row["psnr_vs_default"] is None else f"{row['psnr_vs_default']:.2f}"
        print(f"{row['variant']:<14}{row['ms_per_batch']:>10.2f}{row['fps']:>10.1f}{ps:>17}{row['max_abs_diff']:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
