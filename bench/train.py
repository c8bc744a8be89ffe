"""Benchmark `talkgs train` + `talkgs eval` on one GPU: wall time per stage, it/s, peak memory,
Gaussian counts and val metrics.

    python bench/train.py DATASET --run RUN [--schedule-scale 1] [--resume]

With --resume it continues RUN (e.g. a longer schedule split over several device calls:
`--schedule-scale 3 --resume`). Prints a table last and writes bench/results/train/<device>.json:
rows of ``measure`` stage (one per stage), total and val.
"""

from __future__ import annotations

import dataclasses
import math
import os
import resource
import sys
import time
from pathlib import Path

import torch

import _harness as H  # bench/ is on sys.path; it puts the checkout there too
from talkgs.commands.eval import EvalConfig  # noqa: E402
from talkgs.data import format as fmt  # noqa: E402
from talkgs.train.config import TrainConfig, scale_stage  # noqa: E402
from talkgs.train.side import SIDE_DIR  # noqa: E402
from talkgs.eval.evaluate import evaluate  # noqa: E402
from talkgs.train.trainer import Trainer, resume_trainer  # noqa: E402


@torch.no_grad()
def write_snapshot(trainer, path: Path, n: int = 4) -> None:
    import cv2
    import numpy as np

    from talkgs.model.head import ground_truth_on_plate

    ds, model = trainer.ds, trainer.model.eval()
    idx = ds.val_idx[torch.linspace(0, ds.val_idx.numel() - 1, n).long()]
    x = trainer.frames.inputs(idx)
    full = model.render_frames(x.audio, x.eye, x.viewmats, x.Ks, ds.width, ds.height, x.background).image
    d = model.deform("face", x.audio, x.eye)
    face = model.render_branch(d, x.viewmats, x.Ks, ds.width, ds.height)
    d = model.deform("mouth", x.audio)
    mouth = model.render_branch(d, x.viewmats, x.Ks, ds.width, ds.height)
    gt = ground_truth_on_plate(ds.frames[idx], ds.labels[idx], ds.background)
    rows = []
    for i in range(n):
        tiles = [gt[i], full[i], face.alphas[i, 0].expand(-1, -1, 3), mouth.colors[i, 0]]
        rows.append(torch.cat(tiles, dim=1))
    img = (torch.cat(rows, dim=0).clamp(0, 1) * 255).byte().cpu().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR))


def _losses(stage, **weights):
    return dataclasses.replace(stage, losses=dataclasses.replace(stage.losses, **weights))


def _mouth_loss(cfg: TrainConfig) -> TrainConfig:
    """The mouth up close through the loss: the lips-crop L1 doubled and ST-LPIPS on the lips crop
    (face stage) and on the lips crop and random patches (fuse stage), from half of each stage."""
    return dataclasses.replace(cfg, face=_losses(cfg.face, lips=2.0, lpips=0.05),
                               fuse=_losses(cfg.fuse, lips=2.0, lpips=0.05))


def _mouth_branch(cfg: TrainConfig) -> TrainConfig:
    """_mouth_loss plus a larger inside-mouth branch: twice the initial Gaussians, a tri-plane with
    twice the finest resolution (~0.9 mm cells) and a motion MLP twice as wide."""
    cfg = _mouth_loss(cfg)
    m = cfg.model
    mm = m.mouth_motion
    return dataclasses.replace(cfg, model=dataclasses.replace(
        m, mouth_init=dataclasses.replace(m.mouth_init, n=2 * m.mouth_init.n),
        mouth_motion=dataclasses.replace(mm, hidden=2 * mm.hidden,
                                         triplane=dataclasses.replace(mm.triplane, max_res=2 * mm.triplane.max_res))))


def _audio_conditioning(cfg: TrainConfig) -> TrainConfig:
    """Each branch's audio net encodes the audio features (the original's design), no mouth state."""
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, conditioning="audio"))


def _no_lower_face_grid(cfg: TrainConfig) -> TrainConfig:
    """The face field reads the head tri-plane alone (no finer lower-face grid)."""
    m = cfg.model
    return dataclasses.replace(cfg, model=dataclasses.replace(
        m, face_motion=dataclasses.replace(m.face_motion, lower_face_grid=False)))


def _no_landmark_loss(cfg: TrainConfig) -> TrainConfig:
    """No landmark loss in the face stage."""
    return dataclasses.replace(cfg, face=_losses(cfg.face, landmarks=0.0))


def _batch4(cfg: TrainConfig) -> TrainConfig:
    """Half the frames per step (batch_size) in twice every stage's steps: the same frames seen
    with twice the launches per frame (the schedule before batches of 8)."""
    return dataclasses.replace(cfg, batch_size=cfg.batch_size // 2,
                               **{s: scale_stage(getattr(cfg, s), 2.0) for s in ("mouth", "face", "fuse")})


def _face_x4_3(cfg: TrainConfig) -> TrainConfig:
    """The face stage a third longer (3000 steps of 8 frames instead of 2250): more steps where the
    lips learn to follow the mouth state, for about 20 s of an H100."""
    return dataclasses.replace(cfg, face=scale_stage(cfg.face, 4 / 3))


def _refine_every_50(cfg: TrainConfig) -> TrainConfig:
    """The mouth and face stages refine their Gaussians every 50 steps instead of 100: as often
    per frame seen as the 4-frame schedule, which grows a face branch about a third larger."""
    return dataclasses.replace(cfg, **{s: dataclasses.replace(getattr(cfg, s), densify=dataclasses.replace(
        getattr(cfg, s).densify, every=50)) for s in ("mouth", "face")})


def _net_lr_sqrt2(cfg: TrainConfig) -> TrainConfig:
    """The branches' network learning rates (grids, MLPs, audio nets) times sqrt(2): the usual
    scaling for twice the frames per step, which the 8-frame schedule took at the 4-frame rates."""
    m = cfg.model
    lrs = {f.name: getattr(m.net_lrs, f.name) * math.sqrt(2) for f in dataclasses.fields(m.net_lrs)}
    return dataclasses.replace(cfg, model=dataclasses.replace(m, net_lrs=dataclasses.replace(m.net_lrs, **lrs)))


VARIANTS = {"none": lambda cfg: cfg, "face_x4_3": _face_x4_3, "refine_every_50": _refine_every_50,
            "net_lr_sqrt2": _net_lr_sqrt2,
            "mouth_loss": _mouth_loss, "mouth_branch": _mouth_branch,
            "audio_conditioning": _audio_conditioning, "no_lower_face_grid": _no_lower_face_grid,
            "no_landmark_loss": _no_landmark_loss, "batch4": _batch4}
"""Bench variants (--variant): named changes to the preset's config, measured against it."""


def main() -> int:
    ap = H.parser(__doc__, "train")
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--schedule-scale", type=float, default=1.0)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--audio-kind", default=None, help="audio feature kind stored in the dataset (default: the preset's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lips-weight", type=float, default=None,
                    help="override LossWeights.lips of the face and fuse stages")
    ap.add_argument("--preset", default="default", help="the train preset to start from")
    ap.add_argument("--variant", default="none", choices=sorted(VARIANTS),
                    help="a bench variant applied over the preset (see VARIANTS)")
    ap.add_argument("--other-speakers", type=Path, nargs="+", default=None, metavar="DATASET",
                    help="prepared clips of other people: the predictor trains on them too (PredictorConfig."
                         "other_speakers); recorded in the variant's name")
    ap.add_argument("--shared-gpu", action="store_true",
                    help="other jobs share the GPU: recorded, so the times are never quoted as one training's")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--branches-in-parallel", default="auto", choices=["auto", "on", "off"],
                    help="the predictor and the mouth stage in a side process beside the face stage "
                         "(talkgs.train.side; auto: on CUDA)")
    ap.add_argument("--tf32", action="store_true",
                    help="variant: cuBLAS matrix products in TF32, in the run and its side process "
                         "(TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1, which the side process inherits)")
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--time-budget-s", type=float, default=None,
                    help="stop training (with a resumable checkpoint) after this many seconds")
    ap.add_argument("--snapshot", type=Path, default=None,
                    help="write a PNG of a few val frames: ground truth | render | face alpha | mouth branch")
    args = ap.parse_args()

    if args.tf32:
        os.environ["TORCH_ALLOW_TF32_CUBLAS_OVERRIDE"] = "1"
        torch.backends.cuda.matmul.allow_tf32 = True
    cfg = TrainConfig.from_preset(args.preset, args.dataset, args.run, schedule_scale=args.schedule_scale,
                                  seed=args.seed, resume=args.resume, progress=args.progress, log_every=100,
                                  branches_in_parallel=args.branches_in_parallel,
                                  **({} if args.audio_kind is None else {"audio_kind": args.audio_kind}))
    cfg = VARIANTS[args.variant](cfg)
    variant = args.variant
    if args.audio_kind is not None and args.audio_kind != TrainConfig.from_preset(args.preset, args.dataset, args.run).audio_kind:
        variant += f"+audio_kind={args.audio_kind}"
    if args.other_speakers:
        cfg = dataclasses.replace(cfg, predictor=dataclasses.replace(cfg.predictor, other_speakers=tuple(args.other_speakers)))
        variant += "+other_speakers=" + ",".join(p.name for p in args.other_speakers)
    if args.lips_weight is not None:
        cfg = dataclasses.replace(cfg, face=_losses(cfg.face, lips=args.lips_weight),
                                  fuse=_losses(cfg.fuse, lips=args.lips_weight))
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    trainer = resume_trainer(cfg) if args.resume else Trainer(cfg)
    t_setup = time.perf_counter() - t0
    if args.time_budget_s:
        import threading

        timer = threading.Timer(args.time_budget_s, trainer.request_stop)
        timer.daemon = True  # never keeps a finished benchmark alive
        timer.start()
    interrupted = False
    try:
        trainer.run()
    except KeyboardInterrupt:
        interrupted = True
    t_train = time.perf_counter() - t0
    side = (args.run / SIDE_DIR).is_dir()  # the predictor and the mouth stage ran in a side process
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else None
    stages = {s.name: s for s in trainer.stages}
    rows = []
    for name, secs in trainer.state.stage_times.items():
        if name not in stages:  # the mouth predictor's fit: seconds only, no steps of a stage
            rows.append({"stage": name, "seconds": round(secs, 1)})
            continue
        n_steps = trainer.state.stage_steps.get(name, 0)
        rows.append({"stage": name, "seconds": round(secs, 1), "iterations": stages[name].iterations,
                     "steps_run": n_steps, "batch": stages[name].batch_size,
                     "it_per_s": round(n_steps / secs, 1) if secs > 0 else None})
    total = {"setup_s": round(t_setup, 1), "train_wall_s": round(t_train, 1),
             "peak_gpu_mem_gib": round(peak, 2) if peak is not None else None,
             "num_gaussians": trainer.model.num_gaussians(), "interrupted": interrupted,
             "host_peak_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    val, notes = None, None
    if not args.no_eval and not interrupted:
        t1 = time.perf_counter()
        # Lip metrics need MediaPipe: without it (the GPU machine) eval saves the val renders they
        # need in RUN/eval/lips and `talkgs eval RUN --lips-only` completes them elsewhere.
        m = evaluate(EvalConfig(run=args.run, train_block=0, progress=False))
        total["eval_s"] = round(time.perf_counter() - t1, 1)
        val = {k: round(v, 4) for k, v in m["mean"].items()}
        mouth = m["sections"]["val"].get("lips", {}).get("mouth", {})
        for k in ("area_r", "area_ratio_open", "teeth"):  # None: pending (no MediaPipe) or undefined
            x = float(mouth.get(k, float("nan")))
            val[f"mouth_{k}"] = round(x, 4) if math.isfinite(x) else None
        notes = m.get("notes") or None
    if args.snapshot is not None and not interrupted:
        write_snapshot(trainer, args.snapshot)
    out = [{"measure": "stage", **r} for r in rows] + [{"measure": "total", **total}]
    if val is not None:
        out.append({"measure": "val", **val})
    setup = {"preset": args.preset, "variant": variant, "shared_gpu": args.shared_gpu, "tf32": args.tf32,
             "branches_in_parallel": cfg.branches_in_parallel, "side_process": side,
             **({"peak_gpu_mem_of": "the run's process (also host_peak_gib); its side process is not counted"} if side else {}),
             "lips_weight": cfg.face.losses.lips, "eval_notes": notes,
             "clip": Path(str((fmt.read_meta(args.dataset).get("source") or {}).get("path") or args.dataset)).name}
    H.write("train", args, out, device=dev, setup=setup)
    result = {"device": H.device_name(dev), "num_gaussians": total["num_gaussians"],
              "peak_gpu_mem_gib": total["peak_gpu_mem_gib"], **({"val": val, "eval_s": total["eval_s"]} if val else {})}
    print(f"\ntalkgs train on {result['device']} (schedule x{args.schedule_scale}{', resumed' if args.resume else ''})")
    print(f"{'stage':<8}{'iters':>8}{'batch':>7}{'seconds':>10}{'it/s':>8}")
    for r in rows:
        print(f"{r['stage']:<10}{r.get('iterations', ''):>8}{r.get('batch', ''):>7}{r['seconds']:>10.1f}{(r.get('it_per_s') or 0):>8.1f}")
    print(f"setup {t_setup:.1f} s; train wall {t_train:.1f} s; peak GPU memory {result['peak_gpu_mem_gib']} GiB; "
          f"Gaussians {result['num_gaussians']}")
    if "val" in result:
        v = result["val"]
        keys = ("psnr", "ssim", "lpips", "head_psnr", "head_ssim", "head_lpips", "mouth_psnr", "mouth_ssim",
                "mouth_lpips", "mouth_area_r", "mouth_area_ratio_open", "mouth_teeth")
        print("val: " + "  ".join(f"{k} {v[k]:.4f}" for k in keys if v.get(k) is not None)
              + f"  (eval {result['eval_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
