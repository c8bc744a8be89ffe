"""Per-module speed on the device this runs on, with a synthetic head (no footage needed).

    python bench/speed.py [--device auto] [--face-gaussians N] [--mouth-gaussians N] [--size PX]
        [--batch B] [--audio-s S] [--kinds mel whisper]

The head: the talking-head model of the default configuration (mouth-state conditioning, tri-plane
motion fields, untrained weights) with --face-gaussians / --mouth-gaussians Gaussians initialised
on the bundled canonical face, seen from the front by a camera 1 m away whose focal length frames
the face as the anchor clip does, at --size x --size pixels. Untrained weights move the Gaussians
little, so the rasterizer sees about the canonical layout; a trained head's Gaussians are smaller
and more numerous (pass its count).

Modules, each timed alone (median of --repeats after --warmup calls):
  mouth-state prediction   audio windows [B, 8, W, C] -> states [B, m] (the predictor networks)
  deform: face / mouth     the branch's tri-plane motion field and condition code, B frames
  rasterize: face / mouth  one branch's deformed Gaussians, B frames
  render batch             TalkingHead.render_frames: both branches, composited over a background
  audio features: KIND     extracting KIND's features of --audio-s seconds of audio (model loaded)
  tri-plane lookups: cuDNN / native / native, spread order
                           the face field's tri-plane features of the face Gaussians (sorted
                           along x: neighbours in memory are neighbours in space) and their
                           gradient into the planes, with cuDNN's sampler (the default),
                           PyTorch's, and PyTorch's over the points in a spread order
  D-SSIM, conv / rows / matmul
                           1 - SSIM of a training batch and its gradient, the window applied as
                           depthwise 2-D convolutions, as 1-D convolutions over rows and columns
                           or as banded-matrix products (the same sums)
  train step: STAGE        one training step of STAGE (stage loss, backward, the Adam steps of
                           what the stage trains) at the stage's batch size, without
                           densification or LPIPS
Inference modules run under torch.no_grad(). Times: CUDA events on a GPU (device time of the work
queued by the call), perf_counter on a CPU. Writes bench/results/speed/<device>.json;
`python bench/results_md.py` renders docs/speed.md from every device's file.
"""

from __future__ import annotations

import os
import statistics
from typing import Any, Callable

import numpy as np
import torch

import _harness as H  # bench/ is on sys.path; it puts the checkout there too
from talkgs.audio import extract, get_kind
from talkgs.data import LABEL_FACE, LABEL_HAIR, LABEL_MOUTH
from talkgs.model.config import BranchInitConfig, HeadConfig
from talkgs.model import triplane
from talkgs.model.head import BRANCHES, TalkingHead
from talkgs.model.mouth import landmark_weights
from talkgs.train.config import FACE_STAGE, FUSE_STAGE, MOUTH_STAGE
from talkgs.model.inputs import FrameInputs
from talkgs.train import losses as L
from talkgs.train.batch import Batch
from talkgs.train.stages import stage_loss, trainable, trained_branches

# Device-dependent defaults: a trained head's size on a GPU; a size a 2-core CPU times in minutes.
DEFAULTS = {
    "cuda": dict(face_gaussians=140_000, mouth_gaussians=4_000, size=512, batch=32, warmup=5, repeats=20),
    "cpu": dict(face_gaussians=5_000, mouth_gaussians=500, size=128, batch=4, warmup=1, repeats=3),
}
DISTANCE_M = 1.0  # camera to head centre
FOCAL_PER_PX = 2.57  # focal length / image width: the anchor clip's (1315 px at 512 px)
LIPS = [61, 291, 0, 17, 13, 14]  # MediaPipe mesh indices of the lip corners and midlines
SAMPLE_RATE = 16_000


def cameras(b: int, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``viewmats [B, 1, 4, 4]`` (OpenCV, looking at the face from the front) and ``Ks [B, 1, 3, 3]``."""
    w2c = torch.eye(4, device=device)
    w2c[1, 1] = w2c[2, 2] = -1.0  # head frame +y up, +z out of the face -> camera +y down, +z forward
    w2c[2, 3] = DISTANCE_M
    f = FOCAL_PER_PX * size
    K = torch.tensor([[f, 0.0, size / 2], [0.0, f, size / 2], [0.0, 0.0, 1.0]], device=device)
    return w2c.expand(b, 1, 4, 4).contiguous(), K.expand(b, 1, 3, 3).contiguous()


def project(points: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor) -> torch.Tensor:
    """Pixels ``[B, K, 2]`` of head-frame points ``[K, 3]``."""
    cam = points[None] @ viewmats[:, 0, :3, :3].transpose(1, 2) + viewmats[:, 0, None, :3, 3]
    uv = cam @ Ks[:, 0].transpose(1, 2)
    return uv[..., :2] / uv[..., 2:3]


def synthetic_batch(model: TalkingHead, b: int, size: int, window: tuple[int, int], device: torch.device,
                    gen: torch.Generator) -> Batch:
    """Training inputs of ``b`` frames: random target images over face / hair / mouth labels laid
    out from the projected landmarks, random audio windows and mouth states."""
    viewmats, Ks = cameras(b, size, device)
    lm = project(model.neutral_landmarks, viewmats, Ks)  # [B, 468, 2]
    lo, hi = lm.min(1).values, lm.max(1).values
    lips_lo, lips_hi = lm[:, LIPS].min(1).values, lm[:, LIPS].max(1).values
    ys = torch.arange(size, device=device)[:, None] + 0.5
    xs = torch.arange(size, device=device)[None, :] + 0.5
    labels = torch.zeros(b, size, size, dtype=torch.uint8, device=device)
    for i in range(b):
        face = (xs >= lo[i, 0]) & (xs < hi[i, 0]) & (ys >= lo[i, 1]) & (ys < hi[i, 1])
        hair = (xs >= lo[i, 0]) & (xs < hi[i, 0]) & (ys < lo[i, 1]) & (ys >= lo[i, 1] - 0.2 * (hi[i, 1] - lo[i, 1]))
        mouth = (xs >= lips_lo[i, 0]) & (xs < lips_hi[i, 0]) & (ys >= lips_lo[i, 1]) & (ys < lips_hi[i, 1])
        labels[i][face] = LABEL_FACE
        labels[i][hair] = LABEL_HAIR
        labels[i][mouth] = LABEL_MOUTH

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen).to(device)

    m = model.cfg.mouth_state.n_components
    inputs = FrameInputs(audio=rand(b, 8, *window), eye=rand(b, model.cfg.eye_dim), viewmats=viewmats, Ks=Ks,
                         background=rand(b, size, size, 3))
    return Batch(
        idx=torch.arange(b, device=device), inputs=inputs, gt=rand(b, size, size, 3), labels=labels,
        lips_box=torch.cat([lips_lo, lips_hi], 1), lips_box_host=torch.cat([lips_lo, lips_hi], 1).cpu(), states=0.1 * torch.randn(b, m, generator=gen).to(device),
        landmarks=lm + rand(b, lm.shape[1], 2), landmark_weights=torch.as_tensor(landmark_weights(), device=device),
    )


def train_step(model: TalkingHead, stage, batch: Batch, size: int, device: torch.device) -> Callable[[], None]:
    """One dynamic-phase step of ``stage`` as the trainer runs it, minus densification: Adam per
    trained Gaussian parameter, AdamW over the trained branches' networks."""
    gauss = []
    for branch in BRANCHES:
        train_gs = branch in trained_branches(stage)
        opts = model.gaussian_optimizers(branch) if train_gs else {}
        for name, p in model.gaussians(branch).items():
            keep = train_gs and trainable(stage, branch, name)
            p.requires_grad_(keep)
            if keep:
                gauss.append(opts[name])
        train_nets = stage.name != "fuse" and train_gs
        br = model.branch(branch)
        for p in list(br.motion.parameters()) + list(br.audio.parameters()):
            p.requires_grad_(train_nets)
    groups = [g for b in trained_branches(stage) for g in model.network_param_groups(b)] if stage.name != "fuse" else []
    nets = [torch.optim.AdamW(groups, betas=(0.9, 0.99), weight_decay=1e-4)] if groups else []
    key = torch.zeros(3, device=device)
    step = stage.warmup_static  # the first step with motion

    def run() -> None:
        loss, *_ = stage_loss(model, stage, batch, step, model.cfg.sh_degree, key, size, size, "auto", lpips_on=False)
        loss.backward()
        for o in gauss + nets:
            o.step()
            o.zero_grad(set_to_none=True)

    return run


def timed(timer, fn: Callable[[], Any], warmup: int, repeats: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    ms = [timer(fn) for _ in range(repeats)]
    return {"ms": statistics.median(ms), "ms_min": min(ms), "runs": repeats}


def synthetic_speech(seconds: float) -> np.ndarray:
    """A deterministic speech-like signal (the features' cost does not depend on the content)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    env = 0.3 + 0.25 * np.sin(2 * np.pi * 3.0 * t)
    return (env * (0.2 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * (200 + 5 * t) * t))).astype(np.float32)


def main() -> int:
    ap = H.parser(__doc__, "speed")
    ap.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    ap.add_argument("--face-gaussians", type=int, default=None, help="face branch Gaussians (default: 140k GPU, 5k CPU)")
    ap.add_argument("--mouth-gaussians", type=int, default=None, help="mouth branch Gaussians (default: 4k GPU, 500 CPU)")
    ap.add_argument("--size", type=int, default=None, help="image width and height, px (default: 512 GPU, 128 CPU)")
    ap.add_argument("--batch", type=int, default=None, help="frames per render call (default: 32 GPU, 4 CPU)")
    ap.add_argument("--audio-s", type=float, default=10.0, help="seconds of audio per feature extraction")
    ap.add_argument("--kinds", nargs="+", default=["mel", "whisper"], help="audio feature kinds timed")
    ap.add_argument("--conditioning-kind", default="whisper", help="feature kind whose window shape the head takes")
    ap.add_argument("--warmup", type=int, default=None, help="untimed calls before each module (default: 5 GPU, 1 CPU)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per module (default: 20 GPU, 3 CPU)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--only", default=None, help="time only the modules whose name starts with this")
    args = ap.parse_args()

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    for k, v in DEFAULTS[device.type].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    torch.set_num_threads(args.threads)
    timer = H.timer(device)
    gen = torch.Generator().manual_seed(0)
    window = get_kind(args.conditioning_kind).shape
    cfg = HeadConfig(face_init=BranchInitConfig(n=args.face_gaussians, kind="surface"),
                     mouth_init=BranchInitConfig(n=args.mouth_gaussians, kind="cavity"))
    model = TalkingHead(cfg, *window, generator=gen).to(device)
    b, size = args.batch, args.size
    batch = synthetic_batch(model, b, size, window, device, gen)
    wr = (args.warmup, args.repeats)
    rows: list[dict] = []

    def add(module: str, detail: str, fn: Callable[[], Any], frames: int | None = b) -> None:
        if args.only is not None and not module.startswith(args.only):
            return
        row = {"module": module, "detail": detail, "batch": frames, **timed(timer, fn, *wr)}
        rows.append(row)
        print(f"{module:<28}{row['ms']:>10.2f} ms  ({detail})", flush=True)

    n = model.num_gaussians()
    with torch.no_grad():
        w, eye, vm, Ks, bg = batch.inputs
        states = model.predict_states(w)
        add("mouth-state prediction", f"audio windows [{b}, 8, {window[0]}, {window[1]}] -> states", lambda: model.predict_states(w))
        d = {}
        for br in BRANCHES:
            e = eye if br == "face" else None
            d[br] = model.deform(br, w, e, states=states)
            add(f"deform: {br}", f"{n[br]} Gaussians, tri-plane motion field", lambda br=br, e=e: model.deform(br, w, e, states=states))
        for br in BRANCHES:
            add(f"rasterize: {br}", f"{n[br]} Gaussians, {size}x{size}",
                lambda br=br: model.render_branch(d[br], vm, Ks, size, size))
        add("render batch", f"both branches + composite, {size}x{size}",
            lambda: model.render_frames(w, eye, vm, Ks, size, size, bg, states=states))
    wav = synthetic_speech(args.audio_s)
    frames = int(round(args.audio_s * 25))
    for kind in args.kinds:
        opts = {} if kind == "mel" else {"device": str(device)}
        try:
            extract(kind, wav[: SAMPLE_RATE], 25, **opts)  # loads the model
            add(f"audio features: {kind}", f"{args.audio_s:g} s of audio", lambda kind=kind, opts=opts: extract(kind, wav, frames, **opts),
                frames=frames)
        except Exception as e:  # noqa: BLE001 - a kind this machine cannot run is reported, the others still timed
            rows.append({"module": f"audio features: {kind}", "detail": f"{args.audio_s:g} s of audio", "error": str(e)[:200]})
            print(f"audio features: {kind}: {e}", flush=True)
    # The face field's tri-plane lookups and their gradient into the planes (a training step's
    # share), the Gaussians sorted along the grid's first axis: neighbours in memory are neighbours
    # in space, as densification's clones and splits are.
    grids = model.branch("face").motion.grids()
    means = model.gaussians("face")["means"].detach()
    means = means[torch.argsort(means[:, 0])]
    defaults = triplane.NATIVE_SAMPLER_ON_CUDA, triplane.SPREAD_MIN_POINTS
    for name, (native, spread) in (("cuDNN", (False, None)), ("native", (True, None)),
                                   ("native, spread order", triplane.SPREAD_VARIANT)):
        def lookup(native=native, spread=spread):
            triplane.NATIVE_SAMPLER_ON_CUDA, triplane.SPREAD_MIN_POINTS = native, spread
            try:
                torch.cat([g(means) for g in grids], dim=-1).sum().backward()
            finally:
                triplane.NATIVE_SAMPLER_ON_CUDA, triplane.SPREAD_MIN_POINTS = defaults
        add(f"tri-plane lookups: {name}", f"{n['face']} points, {sum(g.n_levels for g in grids)} levels, with the planes' gradient",
            lookup, frames=None)
    for blur in ("conv", "rows", "matmul"):
        pred = torch.rand(FACE_STAGE.batch_size, size, size, 3, generator=gen).to(device).requires_grad_()
        target = torch.rand(FACE_STAGE.batch_size, size, size, 3, generator=gen).to(device)
        add(f"D-SSIM, {blur}", f"1 - SSIM and its gradient, {FACE_STAGE.batch_size}x{size}x{size}",
            lambda blur=blur, pred=pred, target=target: L.dssim(pred, target, blur=blur).backward(),
            frames=FACE_STAGE.batch_size)
    for stage in (MOUTH_STAGE, FACE_STAGE, FUSE_STAGE):
        tb = synthetic_batch(model, stage.batch_size, size, window, device, gen)
        what = " + ".join(trained_branches(stage))
        add(f"train step: {stage.name}", f"{what} branch, {size}x{size}, no densification",
            train_step(model, stage, tb, size, device), frames=stage.batch_size)
    setup = {"face_gaussians": n["face"], "mouth_gaussians": n["mouth"], "size": [size, size],
             "conditioning": cfg.conditioning, "window": list(window), "cpu_threads": torch.get_num_threads(),
             "timing": "CUDA events, median" if device.type == "cuda" else "perf_counter, median",
             "load_avg_1_5_15": list(os.getloadavg())}  # other work on the machine slows CPU figures
    H.write("speed", args, rows, device=str(device), setup=setup)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
