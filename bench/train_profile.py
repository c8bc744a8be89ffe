"""Where a training step's time goes: per-part wall times (device-synchronised) and the top
operators of a few steps of one stage, after its static warm-up.

    python bench/train_profile.py DATASET [--stage face] [--skip 30] [--steps 40]
        [--schedule-scale 0.2] [--ssim-blur auto|conv|rows|matmul] [--triplane default|spread] [--checkpoint RUN/checkpoints/face.pt --at 0.9]

Runs `talkgs train` on DATASET into a temporary folder up to ``--skip`` dynamic steps into
``--stage`` (with ``--checkpoint``: from that checkpoint of a real run, its Gaussians and
networks, placed ``--at`` that fraction of ``--stage`` with fresh optimisers, so a late step is
timed at its real size), then times ``--steps`` steps: the loss forward and its parts (deform, rasterize,
landmark loss, D-SSIM), the backward pass, densification, the optimiser steps, the batch and
the rest (learning rates, logging, checkpoints); then profiles
the same number of steps with torch.profiler (kernel launches, host syncs and the device's busy
share per step: bench/_profile.py), then times as many steps with no synchronisation at all.
Prints a table and writes
bench/results/train_profile/<device>.json (rows of ``measure`` step, part and op); the run itself
is thrown away. Timing wrappers synchronise the device, so the per-part sum exceeds an
unprofiled step slightly.
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

import _harness as H  # bench/ is on sys.path; it puts the checkout there too
from _profile import launch_summary, print_summary
import talkgs.train.stages as S  # noqa: E402
import talkgs.train.trainer as T
from talkgs.model import triplane
from talkgs.model.checkpoint import load as load_checkpoint
from talkgs.train import checkpoint as ckpt
from talkgs.train.config import PredictorConfig, TrainConfig


class _Done(Exception):
    pass


def from_checkpoint(cfg: TrainConfig, path: Path, stage: str, at: float) -> tuple[T.Trainer, int]:
    """A trainer on ``path``'s model and run settings, placed at ``at`` of ``stage`` with fresh
    optimisers (the stage's first step past its static warm-up at the earliest), and that step."""
    checkpoint = load_checkpoint(path)
    cfg = ckpt.resumed_config(dataclasses.replace(cfg, schedule_scale=1.0), checkpoint)
    names = [s.name for s in cfg.resolved_stages()]
    index = names.index(stage)
    stage_cfg = cfg.resolved_stages()[index]
    step = max(int(at * stage_cfg.iterations), stage_cfg.warmup_static)
    checkpoint = {**checkpoint, "stage_index": index, "stage_step": step, "optimizers": None,
                  "completed": names[:index], "stage_rng": None}
    return T.Trainer(cfg, checkpoint), step


def main() -> int:
    ap = H.parser(__doc__, "train_profile")
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--stage", default="face", choices=["mouth", "face", "fuse"])
    ap.add_argument("--skip", type=int, default=30, help="dynamic steps before timing")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--schedule-scale", type=float, default=0.2)
    ap.add_argument("--image-scale", type=float, default=1.0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--audio-kind", default=TrainConfig.audio_kind)
    ap.add_argument("--ssim-blur", default="auto", choices=["auto", "conv", "rows", "matmul"],
                    help="how D-SSIM applies its window (talkgs.metrics.image._gaussian_blur)")
    ap.add_argument("--triplane", default="default", choices=["default", "spread"],
                    help="variant spread: tri-plane lookups with PyTorch's sampler over the points in a spread order")
    ap.add_argument("--checkpoint", type=Path, help="a run's checkpoint (RUN/checkpoints/<stage>.pt) to start from")
    ap.add_argument("--at", type=float, default=0.9, help="with --checkpoint: where in --stage to start, in [0, 1)")
    args = ap.parse_args()

    if args.triplane == "spread":
        triplane.NATIVE_SAMPLER_ON_CUDA, triplane.SPREAD_MIN_POINTS = triplane.SPREAD_VARIANT
    tmp = Path(tempfile.mkdtemp(prefix="talkgs_prof_"))
    cfg = TrainConfig(dataset=args.dataset, output=tmp / "run", schedule_scale=args.schedule_scale,
                      image_scale=args.image_scale, device=args.device, progress=False, tensorboard=False,
                      checkpoint_every=10**9, audio_kind=args.audio_kind,
                      predictor=PredictorConfig(augment=False, steps=100))
    if args.checkpoint is None:
        trainer = T.Trainer(cfg)
        stage_cfg = next(s for s in trainer.stages if s.name == args.stage)
        # Earlier stages run for only a few steps: they are not what is measured.
        trainer.state.stages = tuple(
            s if s.name == args.stage else
            dataclasses.replace(s, iterations=min(s.iterations, 20), warmup_static=min(s.warmup_static, 5))
            for s in trainer.stages)
        first = stage_cfg.warmup_static + args.skip
    else:
        trainer, first = from_checkpoint(cfg, args.checkpoint, args.stage, args.at)
        first += args.skip
    dev = trainer.device
    times: dict[str, list[float]] = defaultdict(list)
    state = {"prof": None, "t_step": None, "step_times": []}

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def timed(name, fn):
        def wrapper(*a, **k):
            if not state.get("timing"):
                return fn(*a, **k)
            sync()
            t0 = time.perf_counter()
            out = fn(*a, **k)
            sync()
            times[name].append(time.perf_counter() - t0)
            return out
        return wrapper

    model = trainer.model
    model.deform = timed("deform", model.deform)
    model.render_branch = timed("rasterize", model.render_branch)
    S.face_landmark_loss = timed("landmark loss", S.face_landmark_loss)
    dssim = S.L.dssim if args.ssim_blur == "auto" else functools.partial(S.L.dssim, blur=args.ssim_blur)
    S.L.dssim = timed("dssim", dssim)
    inner_loss = timed("loss forward (all)", T.stage_loss)
    # The rest of a step, part by part (Tensor.backward calls torch.autograd.backward).
    st = trainer.state
    torch.autograd.backward = timed("backward", torch.autograd.backward)
    st.densify_before_backward = timed("densify (statistics and edits)", st.densify_before_backward)
    st.densify_after_backward = timed("densify (statistics and edits)", st.densify_after_backward)
    st.optimizer_step = timed("optimiser steps", st.optimizer_step)
    trainer.frames.batch = timed("batch (draw, gather to the device)", trainer.frames.batch)

    def stage_loss(model_, stage, batch, step, *a, **k):
        if stage.name == args.stage:
            now = time.perf_counter()
            if state["t_step"] is not None and state.get("timing"):
                sync()
                state["step_times"].append(time.perf_counter() - state["t_step"])
            if step == first:
                state["timing"] = True
            elif step == first + args.steps:
                state["timing"] = False
                if dev.type == "cuda":
                    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
                else:
                    acts = [torch.profiler.ProfilerActivity.CPU]
                state["prof"] = torch.profiler.profile(activities=acts)
                state["prof"].start()
            elif step == first + 2 * args.steps:
                sync()
                state["prof"].stop()
                state["t_plain"] = time.perf_counter()
            elif step == first + 3 * args.steps:
                sync()
                state["plain_ms"] = 1000 * (time.perf_counter() - state["t_plain"]) / args.steps
                raise _Done
            sync()
            state["t_step"] = time.perf_counter() if step >= first else None
            del now
        return inner_loss(model_, stage, batch, step, *a, **k)

    T.stage_loss = stage_loss
    t0 = time.perf_counter()
    try:
        trainer.run()
    except _Done:
        pass
    wall = time.perf_counter() - t0
    step_ms = 1000 * sum(state["step_times"]) / max(len(state["step_times"]), 1)
    parts = {k: 1000 * sum(v) / max(len(state["step_times"]), 1) for k, v in times.items()}
    named = ("loss forward (all)", "backward", "densify (statistics and edits)", "optimiser steps",
             "batch (draw, gather to the device)")
    parts["rest (learning rates, logging, checkpoints)"] = step_ms - sum(parts.get(k, 0.0) for k in named)
    n = model.num_gaussians()
    prof = state["prof"]
    sort = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=30) if prof is not None else ""
    ops = []
    if prof is not None:
        for e in sorted(prof.key_averages(), key=lambda e: -getattr(e, "self_device_time_total", e.self_cpu_time_total))[:40]:
            ops.append({"name": e.key, "calls": e.count, "self_cpu_ms": e.self_cpu_time_total / 1000,
                        "self_device_ms": getattr(e, "self_device_time_total", 0.0) / 1000})
    plain_ms = state.get("plain_ms", step_ms)
    launch = launch_summary(prof, args.steps, plain_ms) if prof is not None else {}
    out = ([{"measure": "step", "steps": len(state["step_times"]), "ms_per_step": step_ms,
             "ms_per_step_unsynchronised": plain_ms, **launch}]
           + [{"measure": "part", "part": k, "ms_per_step": v} for k, v in parts.items()]
           + [{"measure": "op", **o} for o in ops])
    H.write("train_profile", args, out, device=str(dev), setup={"gaussians": n, "wall_s": wall})
    print(table)
    print(f"\n{args.stage} stage, {len(state['step_times'])} steps timed, Gaussians {n}, device {H.device_name(str(dev))}")
    print(f"{'part':<46}{'ms/step':>10}")
    for k, v in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"{k:<46}{v:>10.2f}")
    print(f"{'step (parts synchronised)':<46}{step_ms:>10.2f}")
    print(f"{'step (no synchronisation)':<46}{plain_ms:>10.2f}")
    if launch:
        print_summary(launch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
