"""How time and memory grow with the length of the training clip.

    python bench/clip_length.py DATASET --minutes 1.2 5 10 --work DIR [--train] [--kinds mel whisper]
        [--source-video]

Builds longer datasets from a real prepared one, then measures each. A longer clip is the
dataset's training part played forward, backward, forward, ... (each turn continues where the
last ended, so motion, pose and speech stay continuous; audio, tracks, label maps and frames are
reversed together) until the length is reached, followed by the dataset's own val part once, so
val frames are never trained on. Audio features are computed from the built audio with
``talkgs features``. A length of 0 (or the dataset's own) measures the dataset as it is.

Per length: the dataset's size on disk; the peak host memory (RSS) of loading it onto the
device with talkgs.data.load_dataset; with ``--train`` (a GPU), the default training's wall
time, peak GPU memory, peak host memory and val metrics, each in a fresh process. Building
writes H.264 with PyAV, or MPEG-4 Part 2 through OpenCV where PyAV is missing (the GPU machine:
the val metrics of those clips then include that codec's loss); the datasets go to --work,
outside the repository (they derive from footage).
Writes bench/results/clip_length/<device>.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import _harness as H  # bench/ is on sys.path; it puts the checkout there too
from talkgs.conventions import FPS, SAMPLES_PER_FRAME  # noqa: E402
from talkgs.data import format as fmt  # noqa: E402

CHUNK = 256  # frames held in memory at once while building


def pingpong(lo: int, hi: int, n: int) -> np.ndarray:
    """Source frame indices ``[n]`` walking ``[lo, hi)`` forward, backward, forward, ...; each
    turn starts next to where the last ended (no frame is repeated at a turn)."""
    span = hi - lo
    if span < 2:
        raise ValueError("need at least two frames to walk")
    period = 2 * (span - 1)
    k = np.arange(n) % period
    return lo + np.where(k < span, k, period - k)


def build(src: Path, dst: Path, minutes: float, kinds: list[str]) -> Path:
    """``dst``: ``src`` lengthened to ``minutes`` (module docstring); returns ``dst``."""
    from talkgs.media import VideoWriter, import_av, iter_frames, read_wav, write_video_silent_cv2, write_wav

    meta = fmt.read_meta(src)
    n_src = int(meta["n_frames"])
    (t0, t1), (v0, v1) = meta["split"]["train"], meta["split"]["val"]
    n_train = max(int(round(minutes * 60 * FPS)) - (v1 - v0), t1 - t0)
    index = np.concatenate([pingpong(t0, t1, n_train), np.arange(v0, v1)])
    n = len(index)
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)

    wav, _ = read_wav(src / fmt.AUDIO)
    wav = np.pad(wav, (0, max(0, n_src * SAMPLES_PER_FRAME - len(wav))))
    frames_of_audio = wav[: n_src * SAMPLES_PER_FRAME].reshape(n_src, SAMPLES_PER_FRAME)
    # A frame walked backward plays its audio backward: the speech envelope follows the mouth.
    backward = np.r_[False, np.diff(index) < 0]
    backward[0] = n > 1 and index[1] < index[0]
    audio = np.where(backward[:, None], frames_of_audio[index, ::-1], frames_of_audio[index]).reshape(-1)
    write_wav(dst / fmt.AUDIO, audio)

    with np.load(src / fmt.TRACKS) as z:
        tracks = {k: z[k][index] for k in z.files}
    # Each forward or backward run of a shot is a shot of its own (cuts stay cuts).
    turn = np.r_[0, np.cumsum((np.diff(tracks["shot"]) != 0) | (backward[1:] != backward[:-1]))]
    tracks["shot"] = turn.astype(tracks["shot"].dtype)
    np.savez(dst / fmt.TRACKS, **tracks)

    labels = np.concatenate(list(fmt.iter_labels(src / fmt.LABELS)))
    fmt.save_labels(dst / fmt.LABELS, labels[index])
    del labels

    # Frames: decode the source once into memory-mapped storage, then write in the walk's order.
    store = np.lib.format.open_memmap(dst / "source_frames.npy", "w+", np.uint8,
                                      (n_src, int(meta["height"]), int(meta["width"]), 3))
    for i, frame in enumerate(iter_frames(src / fmt.FRAMES)):
        store[i] = frame
    if import_av() is not None:
        with VideoWriter(dst / fmt.FRAMES, fps=FPS, crf=12) as writer:
            for a in range(0, n, CHUNK):
                writer.write_batch(np.asarray(store[index[a:a + CHUNK]]))
    else:  # the GPU machine: MPEG-4 Part 2 through OpenCV, one chunk in memory at a time
        write_video_silent_cv2(dst / fmt.FRAMES, (f for a in range(0, n, CHUNK) for f in np.asarray(store[index[a:a + CHUNK]])),
                               fps=FPS)
    del store
    (dst / "source_frames.npy").unlink()
    shutil.copy(src / fmt.BACKGROUND, dst / fmt.BACKGROUND)

    cuts = np.flatnonzero(np.diff(tracks["shot"])) + 1
    bounds = np.r_[0, cuts, n]
    new = dict(meta)
    new["n_frames"] = n
    new["split"] = {"train": [0, n_train], "val": [n_train, n]}
    new["shots"] = [[int(a), int(b)] for a, b in zip(bounds[:-1], bounds[1:])]
    digest = hashlib.sha256(f"{meta['source']['sha256']} pingpong {n_train} + val".encode()).hexdigest()
    new["source"] = {**meta["source"], "sha256": digest, "duration_s": n / FPS,
                     "built_by": f"bench/clip_length.py from {src} ({minutes} min)"}
    new["audio"] = {**meta["audio"], "features": {}}
    (dst / fmt.META).write_text(json.dumps(new, indent=2) + "\n")
    if kinds:
        subprocess.run([sys.executable, "-m", "talkgs", "features", str(dst), "--kind", *kinds, "--no-progress"],
                       check=True)
    return dst


def source_video(root: Path, out: Path) -> Path:
    """A video with sound of a built dataset (its frames.mp4's stream as it is, its audio.wav as
    AAC): what `talkgs prepare` of that length takes (bench/prepare.py --video). Needs PyAV."""
    from talkgs.media import import_av

    av = import_av()
    if av is None:
        raise SystemExit("bench/clip_length.py: --source-video needs PyAV (pip install av)")
    with av.open(str(root / fmt.FRAMES)) as vin, av.open(str(root / fmt.AUDIO)) as ain, av.open(str(out), "w") as mux:
        video = mux.add_stream_from_template(vin.streams.video[0])
        audio = mux.add_stream("aac", rate=16000)
        for packet in vin.demux(vin.streams.video[0]):
            if packet.dts is not None:
                packet.stream = video
                mux.mux(packet)
        for frame in ain.decode(audio=0):
            frame.pts = None
            mux.mux(audio.encode(frame))
        mux.mux(audio.encode(None))
    return out


def size_on_disk(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


LOAD = """
import json, resource, sys, time
import torch
from talkgs.data.loader import load_dataset
t = time.perf_counter()
ds = load_dataset(sys.argv[1], sys.argv[2], audio_kind=None)
if ds.frames.is_cuda:
    torch.cuda.synchronize()
print(json.dumps({"load_s": time.perf_counter() - t, "frames": ds.n_frames,
                  "host_peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "device_gib": ds.nbytes / 2**30}))
"""


def measure_load(root: Path, device: str) -> dict:
    out = subprocess.run([sys.executable, "-c", LOAD, str(root), device], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(H.REPO)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_train(root: Path, run: Path, kind: str, extra: list[str]) -> dict:
    """The default training in a fresh process (bench/train.py ... ``extra``), its result rows and host peak."""
    res = run.with_suffix(".json")
    t = time.perf_counter()
    subprocess.run([sys.executable, str(H.REPO / "bench" / "train.py"), str(root), "--run", str(run),
                    "--audio-kind", kind, "--out", str(res), *extra], check=True)
    wall = time.perf_counter() - t
    rows = H.read(res)["rows"]
    total = next((r for r in rows if r.get("measure") == "total"), {})
    val = next((r for r in rows if r.get("measure") == "val"), {})
    return {"process_wall_s": round(wall, 1), "train_s": total.get("train_wall_s"),
            "peak_gpu_gib": total.get("peak_gpu_mem_gib"), "train_host_peak_gib": total.get("host_peak_gib"),
            "val_psnr": val.get("psnr"), "val_head_psnr": val.get("head_psnr"), "val_lpips": val.get("lpips")}


def main() -> int:
    ap = H.parser(__doc__, "clip_length")
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--minutes", type=float, nargs="+", default=[0, 5, 10])
    ap.add_argument("--work", type=Path, required=True, help="folder for the built datasets and runs")
    ap.add_argument("--kinds", nargs="*", default=["mel", "whisper"], help="feature kinds computed for built datasets")
    ap.add_argument("--device", default="auto", help="where load_dataset puts the clip: auto, cuda or cpu")
    ap.add_argument("--train", action="store_true", help="also train the default on each (GPU)")
    ap.add_argument("--audio-kind", default="whisper", help="feature kind trained with (--train)")
    ap.add_argument("--branches-in-parallel", default="auto", choices=["auto", "on", "off"],
                    help="the trainings' --branches-in-parallel (bench/train.py; auto: on CUDA)")
    ap.add_argument("--source-video", action="store_true",
                    help="also write each built clip as a video with sound, WORK/clip_<M>min.mp4 (for bench/prepare.py)")
    args = ap.parse_args()
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    rows = []
    for minutes in args.minutes:
        t = time.perf_counter()
        root = args.dataset if minutes <= 0 else build(args.dataset, args.work / f"clip_{minutes:g}min", minutes,
                                                         args.kinds)
        built_s = time.perf_counter() - t
        if args.source_video and minutes > 0:
            print(f"source video: {source_video(root, args.work / f'clip_{minutes:g}min.mp4')}", flush=True)
        n = int(fmt.read_meta(root)["n_frames"])
        row = {"minutes": round(n / FPS / 60, 2), "frames": n, "build_s": round(built_s, 1) if minutes > 0 else 0,
               "dataset_mib": round(size_on_disk(root) / 2**20, 1), "device": device}
        row.update({k: round(v, 3) if isinstance(v, float) else v for k, v in measure_load(root, device).items()})
        if args.train:
            extra = ["--branches-in-parallel", args.branches_in_parallel]
            row.update(measure_train(root, args.work / f"run_{minutes:g}min", args.audio_kind, extra))
        print(row, flush=True)
        rows.append(row)
        # Written after every length: a long run cut short keeps the lengths it finished.
        H.write("clip_length", args, rows, device=device,
                note="host_peak_gib: the loading process's peak resident memory (frames and maps go to --device)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
