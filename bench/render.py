"""Benchmark `talkgs render`: frames per second of the whole pipeline and end-to-end wall time.

    python bench/render.py RUN [--dataset DATASET] [--scale 1.0] [--batches 1,32] [--seconds 60]
                           [--rounds K] [--alternate fused-face|one-pass] [--torch-face] [--two-passes]

1. Pipeline FPS (features already extracted -> audio encoder, deformers, rasterization of
   both branches, compositing over the torso background, uint8, copy to host memory; no file
   encoding) at batch 1 and at larger batches, on ~`--frames` frames after a warm-up; `--rounds`
   times, and with `--alternate fused-face` (or `one-pass`) for a second renderer with the fused
   face kernel (or both branches' one rasterizer pass) the other way round too, the two
   alternating each round (rows then name their round, kernel and passes, and ``product``: the
   renderer as `talkgs render` builds it).
2. End to end for `--seconds` of audio: feature extraction + rendering + encoding (PyAV
   H.264 + AAC where installed; otherwise OpenCV's mp4v without audio, e.g. on the GPU machine,
   and the JSON says so), encoder on its own thread as in `talkgs render`.
3. The model's visible inside-mouth area (pixels, (1 - face alpha) x mouth alpha) on digital
   silence, on pink noise alone at -50 dBFS (a quiet room's pause: real recordings are never
   digitally silent), on training speech and on unseen speech, beside the dataset's mouth-interior label
   area (closed = 10th percentile, open = 90th percentile over training frames).

Prints a table last and writes bench/results/render/<device>.json: rows of ``measure`` pipeline
(one per batch size), end to end and mouth area.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

import _harness as H  # bench/ is on sys.path; it puts the checkout there too
from talkgs.audio import extract
from talkgs.audio.augment import QUIET_ROOM_DBFS, room_tone
from talkgs.data import format as fmt
from talkgs.data import load_dataset
from talkgs.media import read_wav
from talkgs.media import import_av
from talkgs.model.audio_encoder import gather_windows
import talkgs.render.renderer as R
from talkgs.render.renderer import HeadRenderer, _EncoderThread, render_features


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


class _Cv2Writer:
    """Video-only mp4 through OpenCV (machines without PyAV)."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]):
        import cv2

        self.cv2 = cv2
        self.w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        self.n_frames = 0

    def write_batch(self, frames: np.ndarray) -> None:
        for f in frames:
            self.w.write(self.cv2.cvtColor(f, self.cv2.COLOR_RGB2BGR))
            self.n_frames += 1

    def close(self) -> None:
        self.w.release()


class _PlainCopies:
    """The baseline of --plain-copy: ``.cpu()`` on the render stream, which waits for every
    kernel launched before it (the next batch's too)."""

    def __init__(self, device) -> None:
        pass

    @staticmethod
    def start(frames: torch.Tensor) -> torch.Tensor:
        return frames

    @staticmethod
    def finish(frames: torch.Tensor) -> np.ndarray:
        return frames.cpu().numpy()


def pipeline_fps(r: HeadRenderer, feats: np.ndarray, batch: int, n_frames: int, lanes: int = 1) -> float:
    n = min(n_frames, feats.shape[0])
    for _ in render_features(r, feats[: 2 * batch * lanes], batch, lanes=lanes):  # warm-up (allocations, kernels, graphs)
        pass
    _sync(r.device)
    t = time.perf_counter()
    done = sum(b.shape[0] for b in render_features(r, feats[:n], batch, lanes=lanes))
    _sync(r.device)
    return done / (time.perf_counter() - t)


def _pipeline_rows(renderers: list[HeadRenderer], feats: np.ndarray, batches: list[int], frames: int, lanes: int,
                   rounds: int, product: HeadRenderer | None = None) -> list[dict]:
    """Pipeline frames/s of each renderer at each batch size, ``rounds`` times, the renderers
    alternating within each round; rows name the round and the kernel only where there are several."""
    rows, largest = [], max(batches)
    for k in range(rounds):
        for rr in renderers:
            for b in [b for b in batches if b <= largest]:
                try:
                    fps = pipeline_fps(rr, feats, b, frames, lanes)
                except torch.OutOfMemoryError:
                    largest = b - 1
                    break
                row = {"batch": b, "fps": round(fps, 1)}
                if rounds > 1:
                    row["round"] = k
                if len(renderers) > 1:
                    row["fused_face"] = rr.model.fused_kernel is not None
                    row["one_pass"] = rr.one_pass
                    row["product"] = rr is product
                rows.append(row)
                print(f"batch {b}: {fps:.1f} frames/s" + "".join(f", {a} {row[a]}" for a in _TAGS if a in row),
                      flush=True)
    return rows


_TAGS = ("round", "fused_face", "one_pass")


def _first_batch(r: HeadRenderer, feats: np.ndarray, batch: int):
    """Audio windows and drive plan of the first ``batch`` frames (what the parity checks render)."""
    windows = gather_windows(torch.as_tensor(feats, device=r.device).half(), np.arange(min(batch, len(feats))), r.audio_window)
    return windows, r.plan(windows.shape[0])


def graphs_parity(r: HeadRenderer, feats: np.ndarray, batch: int = 32) -> int:
    """Largest uint8 difference between the graphed and the eager render of one batch."""
    windows, plan = _first_batch(r, feats, batch)
    with torch.no_grad():
        graphed = r.render_batch(windows, plan).clone()
        graphs, r.graphs = r.graphs, None
        try:
            eager = r.render_batch(windows, plan)
        finally:
            r.graphs = graphs
    return int((graphed.int() - eager.int()).abs().max())


def fused_parity(r: HeadRenderer, feats: np.ndarray, batch: int = 32) -> int:
    """Largest uint8 difference between renders of one batch with the fused face deformation and
    with PyTorch's (both eager)."""
    windows, plan = _first_batch(r, feats, batch)
    graphs, r.graphs = r.graphs, None
    try:
        with torch.no_grad():
            got = r.render_batch(windows, plan).clone()
            with r.model.eager_face():
                want = r.render_batch(windows, plan)
    finally:
        r.graphs = graphs
    return int((got.int() - want.int()).abs().max())


def one_pass_parity(r: HeadRenderer, feats: np.ndarray, batch: int = 32) -> int:
    """Largest uint8 difference between renders of one batch with both branches in one
    rasterizer pass and in two."""
    windows, plan = _first_batch(r, feats, batch)
    was = r.one_pass
    try:
        with torch.no_grad():
            r.one_pass = True
            got = r.render_batch(windows, plan).clone()
            r.one_pass = False
            want = r.render_batch(windows, plan)
    finally:
        r.one_pass = was
    return int((got.int() - want.int()).abs().max())


def end_to_end(r: HeadRenderer, wav: np.ndarray, batch: int, out: Path) -> dict:
    t0 = time.perf_counter()
    n = int(round(len(wav) / 640))
    feats = extract(r.audio_kind, wav, n)
    t_feat = time.perf_counter() - t0
    if import_av() is not None:
        from talkgs.media import VideoWriter

        writer = VideoWriter(out, audio=wav, preset="fast")
        writer.open()
        encoder = "PyAV libx264 (fast) + AAC"
    else:
        writer = _Cv2Writer(out, 25.0, (r.width, r.height))
        encoder = "OpenCV mp4v, no audio (PyAV not installed here)"
    enc = _EncoderThread(writer)
    for b in render_features(r, feats, batch):
        enc.put(b)
    enc.finish()
    writer.close()
    wall = time.perf_counter() - t0
    return {"audio_s": len(wav) / 16000, "frames": n, "features_s": round(t_feat, 2), "wall_s": round(wall, 2),
            "encode_busy_s": round(enc.busy_s, 2), "fps": round(n / wall, 1), "encoder": encoder,
            "frames_written": writer.n_frames}


@torch.no_grad()
def mouth_areas(r: HeadRenderer, dataset: Path, wav: np.ndarray, train_s: tuple[float, float],
                val_s: tuple[float, float]) -> dict:
    ds = load_dataset(dataset, "cpu", audio_kind=None, scale=r.scale)
    area = (ds.labels[ds.train_idx] == fmt.LABEL_MOUTH).sum(dim=(1, 2)).float().numpy()

    def visible(x: np.ndarray) -> float:
        n = len(x) // 640
        f = torch.as_tensor(extract(r.audio_kind, x, n), device=r.device)
        out = []
        for s in range(0, n, 32):
            idx = torch.arange(s, min(s + 32, n), device=r.device)
            _, a = r.render_batch(gather_windows(f, idx, 8), r.plan(idx.numel(), s), with_mouth=True)
            out.append(a.float().cpu())
        return float(torch.cat(out).mean())

    seg = lambda a, b: wav[int(a * 16000) : int(b * 16000)]  # noqa: E731
    return {
        "gt_closed_p10_px": float(np.percentile(area, 10)),
        "gt_median_px": float(np.median(area)),
        "gt_open_p90_px": float(np.percentile(area, 90)),
        "render_silence_px": visible(np.zeros(16000 * 4, np.float32)),
        "render_room_tone_px": visible(room_tone(16000 * 4, QUIET_ROOM_DBFS, np.random.default_rng(0))),
        "render_train_speech_px": visible(seg(*train_s)),
        "render_val_speech_px": visible(seg(*val_s)),
    }


def main() -> int:
    ap = H.parser(__doc__, "render")
    ap.add_argument("run", type=Path, help="a trained run")
    ap.add_argument("--dataset", type=Path, default=None, help="the run's dataset (default: as recorded in the run)")
    ap.add_argument("--scale", type=float, default=None, help="render scale (default: the run's)")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--batches", default="1,2,4,8,16,32,64", help="comma-separated batch sizes (frames per call)")
    ap.add_argument("--frames", type=int, default=800, help="frames timed per batch size")
    ap.add_argument("--seconds", type=float, default=60.0, help="audio length of the end-to-end run")
    ap.add_argument("--video", type=Path, default=Path("/tmp/talkgs_bench_render.mp4"), help="the end-to-end video")
    ap.add_argument("--no-mouth", action="store_true", help="skip the mouth-area measurement")
    ap.add_argument("--per-call-fields", action="store_true",
                    help="baseline: evaluate the motion fields' spatial part in every call (no fix_fields)")
    ap.add_argument("--eager", action="store_true",
                    help="baseline: the deformation runs eagerly instead of replaying CUDA graphs (HeadRenderer(cuda_graphs=False))")
    ap.add_argument("--lanes", type=int, default=1,
                    help="variant: batches in flight at once, each on its own thread and CUDA stream (render_features(lanes=))")
    ap.add_argument("--torch-face", action="store_true",
                    help="baseline: the face deformation by PyTorch's ops instead of the fused kernel (HeadRenderer(fused_face=False))")
    ap.add_argument("--plain-copy", action="store_true",
                    help="baseline: copy each batch to the host with .cpu() on the render stream (no talkgs.render.hostcopy)")
    ap.add_argument("--rounds", type=int, default=1, help="pipeline measurements per batch size")
    ap.add_argument("--two-passes", action="store_true",
                    help="baseline: rasterize the face and mouth branches in two calls (HeadRenderer(one_pass=False))")
    ap.add_argument("--alternate", choices=("fused-face", "one-pass"), default=None,
                    help="also measure a second renderer with the fused face kernel (or the one rasterizer pass) "
                         "the other way round, alternating with the first each round (the same process and machine)")
    args = ap.parse_args()
    if args.plain_copy:
        R.HostCopies = _PlainCopies

    def renderer(fused_face: bool, one_pass: bool) -> HeadRenderer:
        rr = HeadRenderer(args.run, args.device, args.dataset, scale=args.scale, cuda_graphs=not args.eager,
                          fused_face=fused_face, one_pass=one_pass)
        if args.per_call_fields:
            rr.model.train().eval()  # train() drops the fixed spatial part; eval() keeps it dropped
        return rr

    t0 = time.perf_counter()
    fused, one_pass = not args.torch_face, not args.two_passes
    r = renderer(fused, one_pass)
    dev = r.device
    t_load = time.perf_counter() - t0
    dataset = Path(args.dataset) if args.dataset else Path(r.state["config"]["dataset"])
    wav, _ = read_wav(dataset / fmt.AUDIO)
    # Unseen speech for timing: the val split's audio, repeated to the length asked for.
    v0 = int(r.meta["split"]["val"][0]) * 640
    val_wav = wav[v0:]
    reps = int(np.ceil(args.seconds * 16000 / len(val_wav)))
    audio = np.tile(val_wav, reps)[: int(args.seconds * 16000)]
    feats = extract(r.audio_kind, audio, int(round(len(audio) / 640)))

    graphs_diff = graphs_parity(r, feats) if r.graphs is not None else None
    renderers = [r]
    if args.alternate == "fused-face":
        renderers.append(renderer(not fused, one_pass))
    elif args.alternate == "one-pass":
        renderers.append(renderer(fused, not one_pass))
    with_kernel = next((x for x in renderers if x.model.fused_kernel is not None), None)
    fused_diff = fused_parity(with_kernel, feats) if with_kernel is not None else None
    one_pass_diff = one_pass_parity(r, feats) if r.device.type == "cuda" else None
    lanes_diff = None
    if args.lanes > 1:  # the lanes' frames against one lane's, four batches of 32
        one = np.concatenate(list(render_features(r, feats[:128], 32)))
        many = np.concatenate(list(render_features(r, feats[:128], 32, lanes=args.lanes)))
        lanes_diff = int(np.abs(one.astype(np.int16) - many.astype(np.int16)).max())
    # the product: built with the kernel and one pass, as talkgs render is
    product = next((x for x in renderers if x.model.fused_kernel is not None and x.one_pass), None)
    rows = _pipeline_rows(renderers, feats, [int(x) for x in args.batches.split(",")], args.frames, args.lanes, args.rounds,
                          product)
    # the end-to-end run below is the first renderer's (as built: neither runs off CUDA)
    mine = {"fused_face": r.model.fused_kernel is not None, "one_pass": r.one_pass}
    best = max((x for x in rows if all(x.get(k, v) == v for k, v in mine.items())), key=lambda x: x["fps"])
    e2e = end_to_end(r, audio, best["batch"], args.video)
    mouth = None
    if not args.no_mouth:
        n = int(r.meta["n_frames"])
        mouth = mouth_areas(r, dataset, wav, (30.0, 40.0), (r.meta["split"]["val"][0] / 25, n / 25))
    out = [{"measure": "pipeline", **row} for row in rows] + [{"measure": "end to end", "batch": best["batch"], **e2e}]
    if mouth is not None:
        out.append({"measure": "mouth area", **mouth})
    setup = {"run": str(args.run), "fields": "per call" if args.per_call_fields else "fixed",
             "cuda_graphs": r.graphs is not None, "graphs_max_px_diff": graphs_diff,
             "fused_face": r.model.fused_kernel is not None, "fused_max_px_diff": fused_diff,
             "one_pass": r.one_pass, "one_pass_max_px_diff": one_pass_diff,
             "lanes": args.lanes, "lanes_max_px_diff": lanes_diff,
             "size": [r.width, r.height], "gaussians": r.model.num_gaussians(), "audio_kind": r.audio_kind, "load_s": round(t_load, 2), "cpu_threads": torch.get_num_threads()}
    H.write("render", args, out, device=str(dev), setup=setup)
    print(f"\ntalkgs render on {H.device_name(str(dev))}: {r.width}x{r.height}, Gaussians {setup['gaussians']}")
    print(f"{'batch':>6}{'frames/s':>12}")
    for row in rows:
        print(f"{row['batch']:>6}{row['fps']:>12.1f}" + "".join(f"  {a} {row[a]}" for a in _TAGS if a in row))
    print(f"end to end, {e2e['audio_s']:.0f} s of audio ({e2e['frames']} frames, {e2e['encoder']}): "
          f"{e2e['wall_s']:.1f} s wall = {e2e['fps']:.1f} frames/s (features {e2e['features_s']} s, "
          f"encoder busy {e2e['encode_busy_s']} s)")
    if mouth is not None:
        print("visible mouth area (px): " + ", ".join(f"{k} {v:.1f}" for k, v in mouth.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
