"""Audio feature extraction speed: seconds of compute per minute of audio and real-time factor
for mel, whisper (tiny.en) and whisper_base, on the CPU (torch threads = --threads) and on CUDA
when available; plus the cost of one WhisperStream step (one encoder window: the live default's and Whisper's 30 s).

    python bench/audio_features.py [--dataset DATASET] [--seconds 60] [--threads 2]
        [--whisper-model tiny.en] [--whisper-base-model base] [--kinds mel whisper] [--devices cuda]


Audio: the first --seconds of DATASET/audio.wav, else a deterministic synthetic signal (the
cost does not depend on the content). Each kind is loaded and run once on 5 s first (the load
time is reported apart), then timed --repeat times on the whole audio (median). Prints a table
and writes bench/results/audio_features/<device>.json (rows: ``measure`` extract / stream step).
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import _harness as H  # bench/ is on sys.path; it puts the checkout there too
from talkgs.audio import extract
from talkgs.audio import whisper as W

SR = 16000


def synthetic(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR
    env = 0.3 + 0.25 * np.sin(2 * np.pi * 3.0 * t)
    return (env * (0.2 * rng.standard_normal(t.shape[0]) + 0.3 * np.sin(2 * np.pi * (200 + 5 * t) * t))).astype(np.float32)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def time_kind(kind: str, wav: np.ndarray, device: str, opts: dict, repeat: int) -> dict:
    n = wav.shape[0] // 640
    t0 = time.perf_counter()
    extract(kind, wav[: 5 * SR], 5 * 25, **opts)  # load + warm-up
    sync(device)
    load_s = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f = extract(kind, wav, n, **opts)
        sync(device)
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    audio_s = wav.shape[0] / SR
    return {"kind": kind, "device": device, "shape": list(f.shape), "first_call_s": load_s, "seconds": sec,
            "runs_s": times, "s_per_audio_min": sec * 60.0 / audio_s, "rtf": sec / audio_s, "x_realtime": audio_s / sec}


def time_stream(kind: str, model, device: str, repeat: int, window_s: float) -> dict:
    """One WhisperStream step = one encoder window of ``window_s`` (the live default's or
    Whisper's 30 s) at the default layer, holding the default layout's audio."""
    enc = W.load_encoder(model, kind, None, device)
    lay = dataclasses.replace(W.DEFAULT_STREAM, window_s=window_s).check()
    x = synthetic(30.0)[None, : lay.span]
    W.encode(enc, x, lay.positions)
    sync(device)
    times = []
    for _ in range(max(repeat, 3)):
        t0 = time.perf_counter()
        W.encode(enc, x, lay.positions)
        sync(device)
        times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1000
    return {"kind": kind, "device": device, "layer": enc.layers[0], "window_s": window_s, "window_ms": ms,
            "min_hop_frames_realtime": int(np.ceil(ms / 40.0))}


def main() -> int:
    ap = H.parser(__doc__, "audio_features")
    ap.add_argument("--dataset", type=Path, default=None, help="time DATASET/audio.wav (default: a synthetic signal)")
    ap.add_argument("--seconds", type=float, default=60.0, help="audio length timed (s)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per kind (median)")
    ap.add_argument("--whisper-model", default=None, help="default: $TALKGS_WHISPER_MODEL, else tiny.en")
    ap.add_argument("--whisper-base-model", default=None, help="default: $TALKGS_WHISPER_BASE_MODEL, else base")
    ap.add_argument("--kinds", nargs="+", default=["mel", "whisper", "whisper_base"], help="feature kinds timed")
    ap.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.dataset is not None:
        from talkgs.media import read_wav

        wav, sr = read_wav(args.dataset / "audio.wav")
        assert sr == SR
        wav = wav[: int(args.seconds * SR)].astype(np.float32)
        source = str(args.dataset / "audio.wav")
    else:
        wav = synthetic(args.seconds)
        source = "synthetic"
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    models = {"whisper": args.whisper_model, "whisper_base": args.whisper_base_model}
    rows, streams = [], []
    for dev in devices:
        for kind in args.kinds:
            opts = {} if kind == "mel" else {"model": models[kind], "device": dev}
            if kind == "mel" and dev != "cpu":
                continue  # numpy only
            try:
                rows.append(time_kind(kind, wav, dev, opts, args.repeat))
                if kind != "mel":
                    streams += [time_stream(kind, models[kind], dev, args.repeat, w) for w in (W.DEFAULT_STREAM.window_s, 30.0)]
            except Exception as e:  # noqa: BLE001 - report and go on with the other kinds
                print(f"{kind} on {dev}: {e}", file=sys.stderr)
                rows.append({"kind": kind, "device": dev, "error": str(e)})
            print(f"  {kind} on {dev}: done", flush=True)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    audio_s = wav.shape[0] / SR
    H.write("audio_features", args, [{"measure": "extract", **r} for r in rows]
            + [{"measure": "stream step", **r} for r in streams],
            device="cuda" if any(d.startswith("cuda") for d in devices) else "cpu",
            setup={"audio": source, "audio_s": audio_s, "cpus": os.cpu_count(), "load_average": os.getloadavg(),
                   "whisper_models": {k: str(v) if v else None for k, v in models.items()}})
    print(f"\n{audio_s:.0f} s of audio ({source}); CPU threads {args.threads}; GPU {gpu}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'kind':<14}{'device':<8}{'[W, C]':<10}{'s / audio min':>14}{'RTF':>9}{'x realtime':>12}{'first call s':>14}")
    for r in rows:
        if "error" in r:
            print(f"{r['kind']:<14}{r['device']:<8}error: {r['error']}")
            continue
        wc = "x".join(str(v) for v in r["shape"][1:])
        print(f"{r['kind']:<14}{r['device']:<8}{wc:<10}{r['s_per_audio_min']:>14.3f}{r['rtf']:>9.4f}{r['x_realtime']:>12.1f}"
              f"{r['first_call_s']:>14.2f}")
    if streams:
        print(f"\n{'stream step':<14}{'device':<8}{'layer':>6}{'window s':>9}{'ms / window':>13}{'min hop (frames) for real time':>32}")
        for s in streams:
            print(f"{s['kind']:<14}{s['device']:<8}{s['layer']:>6}{s['window_s']:>9.2f}{s['window_ms']:>13.1f}{s['min_hop_frames_realtime']:>32}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
