"""Benchmark `talkgs serve`: N simulated clients, each speaking in real time; per-client fps,
latency (audio sample in -> the frame that says it out), first frame, device utilisation.

    python bench/serve.py RUN [--transport inproc|webrtc] [--clients 1 4 16 32] [--find-max]
                              [--seconds 8] [--audio WAV] [--device auto] [--ray K]

Transports:
- ``inproc`` (default; what runs on the GPU machine, which has no aiortc/PyAV): the server's
  own session + batcher + batch loop in this process; each client is a coroutine pushing
  20 ms of 16 kHz audio on the wall clock (as a microphone) and a sender taking its frames as
  soon as they are on the host (as aiortc's sender does). When PyAV is installed each frame
  is also VP8-encoded on a thread pool (aiortc's encoder settings), else encoding is left out
  and the JSON says so. Latency = frame taken by the sender - arrival of the frame's centre
  audio sample; per stage from the sessions' own timings.
- ``webrtc`` (CPU machine here): a real `talkgs serve` subprocess and N aiortc peers in this
  process (Opus up, VP8 + Opus down over loopback). Latency = decoded frame in the client -
  the client's sending of the frame's centre audio sample, i.e. including Opus, aiortc's
  audio jitter buffer, VP8 encode/decode and the network stack.

- ``--processes P`` (inproc, a variant): P processes on the one device, each with its own heads
  and batch loop (own GIL, own CUDA context) and its share of the clients, started on one
  clock; the rows merge their clients (``device_busy``: the busiest process's render thread;
  ``per_process``: each one's figures). What ``talkgs serve --ray`` with several workers per
  GPU would run, measured without Ray.
- ``--ray K`` (webrtc): the server is ``talkgs serve --ray --ray-workers K`` (a local Ray
  instance, K workers on this machine's GPUs, or CPU workers with ``--device cpu``; each worker
  may hold every client); rows add the sessions per worker, the front's offer round trip and
  the front process's own CPU time per session (its Ray workers not counted).

Network per session (webrtc): bytes the client's transport received and sent (video, sound,
RTCP, datachannel) per second of the measured window; inproc with encoding: the VP8 payload
bytes per second of each client.

Device memory (CUDA): ``gpu_reserved_gib``, what the process's caching allocator holds once the
batch loop has warmed every batch size up (its captured graphs' pool included; summed over
``--processes``).

Whisper heads: the sessions' encoder windows (one per frame) run in one batched call per tick
(``feature_*`` fields: calls per second, windows per call, ms per call); ``lookahead_ms`` is the
stream's plus the model's window, read from the session. ``--stream-window S`` (inproc, a
variant) gives the sessions Whisper streams whose encoder window is S seconds (the server's
default: 6.4; Whisper's own: 30).
A client "holds 25 fps" when it received >= 24 frames/s over the measured window (after a
warm-up). ``--find-max`` then searches for the largest N at which every client does, with the
latency p95 below 250 ms and every first frame below 300 ms (:func:`within_limits`); the
capacity row gives that N and the largest N that holds 25 fps alone.
Audio: ``--audio`` (16 kHz wav), default the run's dataset audio from its val split; client k
starts 1.3 k s into it (looped), so no two clients say the same thing at once.
Prints a table and writes bench/results/serve/<device>.json (``--name``, default the device tag,
with ``_webrtc`` for that transport): rows of ``measure`` trial (one per N) and capacity.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

import _harness as H  # bench/ is on sys.path; it puts the checkout there too
from talkgs.conventions import SAMPLE_RATE

REPO = H.REPO

CHUNK = SAMPLE_RATE // 50  # 20 ms
HOLD_FPS = 24.0
P95_LIMIT_MS = 250.0  # the speed issue's bar for a live session's latency p95 ...
FIRST_FRAME_LIMIT_MS = 300.0  # ... and for its first frame


def within_limits(row: dict) -> bool:
    """Whether a trial meets the bar: every client >= HOLD_FPS, latency p95 < P95_LIMIT_MS and
    every first frame < FIRST_FRAME_LIMIT_MS."""
    p95, first = row.get("latency_ms_p95"), row.get("first_frame_ms_max")
    return (bool(row["holds_25fps"]) and p95 is not None and p95 < P95_LIMIT_MS
            and first is not None and first < FIRST_FRAME_LIMIT_MS)


def capacity(table: list[dict]) -> dict:
    """The capacity row of trials ``table``: the largest N whose clients all hold HOLD_FPS, and
    the largest N that meets every limit (:func:`within_limits`); 0 where none does."""
    return {"largest_n_holding_25fps": max([r["clients"] for r in table if r["holds_25fps"]], default=0),
            "largest_n_within_limits": max([r["clients"] for r in table if within_limits(r)], default=0)}


# ------------------------------------------------------------------------------ helpers
class GpuSampler:
    """nvidia-smi utilisation.gpu samples (percent) on a thread, where nvidia-smi exists."""

    def __init__(self, period_s: float = 0.25):
        self.exe = shutil.which("nvidia-smi")
        self.period = period_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                out = subprocess.run([self.exe, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout.split()
                self.samples.append((time.monotonic(), float(out[0])))
            except Exception:
                pass
            self._stop.wait(self.period)

    def __enter__(self):
        if self.exe:
            self.t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()

    def mean(self, t0: float, t1: float) -> float | None:
        v = [u for t, u in self.samples if t0 <= t <= t1]
        return float(np.mean(v)) if v else None


def encoder_graphs(stream) -> dict | None:
    """Whisper streams on CUDA: how many encoder batch shapes ran as CUDA graphs in this process,
    or why capturing failed (None for other kinds and devices)."""
    g = getattr(getattr(stream, "enc", None), "_graphs", None)
    return None if g is None else {"captured": g.n_graphs, "failed": g.failed}


def torch_reserved_gib(device) -> float | None:
    """GiB the caching allocator holds on a CUDA ``device`` (None elsewhere)."""
    import torch

    return round(torch.cuda.memory_reserved(device) / 2**30, 2) if device.type == "cuda" else None


def _pct(a, q):
    return float(np.percentile(a, q)) if len(a) else None


def load_audio(args, renderer) -> np.ndarray:
    from talkgs.data import format as fmt
    from talkgs.media import read_audio

    if args.audio:
        return read_audio(args.audio, SAMPLE_RATE)
    root = Path(args.dataset or renderer.state["config"]["dataset"])
    wav = read_audio(root / fmt.AUDIO, SAMPLE_RATE)
    v0 = int(renderer.meta["split"]["val"][0]) * 640
    return wav[v0:] if wav.shape[0] - v0 > 5 * SAMPLE_RATE else wav


def make_encoder():
    """aiortc's VP8 encoder when aiortc is installed, else PyAV's libvpx with its settings,
    else None (no PyAV: encoding not measured)."""
    try:
        from aiortc.codecs import get_encoder
        from aiortc.rtcrtpparameters import RTCRtpCodecParameters

        return lambda: get_encoder(RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96))
    except ImportError:
        return None


# ------------------------------------------------------------------------------ in process
def live_stream(kind: str, window_s: float | None):
    """The session's feature stream: the server's (``open_stream``), or a Whisper stream whose
    encoder window is ``window_s`` (``--stream-window``, a variant)."""
    from talkgs.audio import WhisperStream, open_stream

    return open_stream(kind) if window_s is None else WhisperStream(kind, window_s=window_s)


async def trial_inproc(heads, head, n, seconds, warmup, audio, max_batch, encoder_factory, stream_window=None,
                       pipelined=False, first_client=0, start_gate=None):
    """``n`` clients numbered from ``first_client``; ``start_gate``: called once the batch loop is
    warm, returns the (monotonic) start time shared with other processes' clients."""
    import concurrent.futures

    from talkgs.serve.batcher import Batcher, BatchLoop
    from talkgs.serve.session import Session, SessionLimits

    r = heads[head]
    batcher = Batcher(heads, max_batch)
    loop = BatchLoop(batcher, pipelined=pipelined)
    loop.start()
    # The device memory the loop holds once every batch size is warm (its captured graphs' pool).
    reserved_gib = torch_reserved_gib(r.device)
    enc_pool = concurrent.futures.ThreadPoolExecutor(max_workers=8) if encoder_factory else None
    t_start = start_gate() if start_gate is not None else time.monotonic() + 0.2
    t_measure = t_start + warmup
    t_end = t_measure + seconds
    sessions, records, enc_times, firsts = [], [], [], []
    vp8_bytes: dict[str, int] = {}  # per session, payload bytes of frames sent in the measured window
    rng = np.random.default_rng(first_client)

    async def producer(s: Session, k: int):
        off = int(1.3 * k * SAMPLE_RATE)
        t0 = t_start + float(rng.uniform(0, 0.04))  # clients are not in phase
        j = 0
        while True:
            due = t0 + (j + 1) * CHUNK / SAMPLE_RATE
            if due > t_end:
                return
            await asyncio.sleep(max(due - time.monotonic(), 0))
            idx = (off + j * CHUNK + np.arange(CHUNK)) % audio.shape[0]
            s.push_audio(audio[idx], time.monotonic())
            j += 1

    async def sender(s: Session, rec: list):
        ev = asyncio.Event()
        s.on_frame = ev.set
        encoder = encoder_factory() if encoder_factory else None
        aloop = asyncio.get_running_loop()
        while time.monotonic() < t_end:
            f = s.take_frame()
            if f is None:
                ev.clear()
                try:
                    await asyncio.wait_for(ev.wait(), timeout=max(t_end - time.monotonic(), 0.01))
                except asyncio.TimeoutError:
                    return
                continue
            t_take = time.monotonic()
            if encoder is not None:
                import av

                vf = av.VideoFrame.from_ndarray(f.image, format="rgb24")
                vf.pts = f.index * 3600
                from fractions import Fraction

                vf.time_base = Fraction(1, 90000)
                t0 = time.monotonic()
                payloads, _ = await aloop.run_in_executor(enc_pool, encoder.encode, vf, False)
                enc_times.append(time.monotonic() - t0)
                if t_measure <= time.monotonic() < t_end:
                    vp8_bytes[s.id] = vp8_bytes.get(s.id, 0) + sum(len(p_) for p_ in payloads)
            t_out = time.monotonic()
            if not rec:  # where the first frame's time went (from the session's first audio)
                firsts.append({"index": f.index, "center_in": f.t_in - s.t_first_audio, "lookahead": f.t_final - f.t_in,
                               "queue": f.t_start - f.t_final, "render": f.t_host - f.t_start,
                               "send_wait": t_out - f.t_host, "batch": f.batch})
            rec.append((t_out, t_out - f.t_in, f.t_final - f.t_in, f.t_start - f.t_final, f.t_host - f.t_start,
                        t_take - f.t_host, t_out - t_take, f.batch))

    tasks = []
    for k in range(first_client, first_client + n):
        s = Session(f"c{k}", head, live_stream(r.audio_kind, stream_window), r.audio_window, SessionLimits(), plan_offset=37 * k)
        s.on_pending = loop.wake
        batcher.add(s)
        sessions.append(s)
        rec: list = []
        records.append(rec)
        tasks += [asyncio.create_task(producer(s, k)), asyncio.create_task(sender(s, rec))]
    await asyncio.gather(*tasks)
    await loop.stop()
    if enc_pool:
        enc_pool.shutdown()
    per_client = []
    for s, rec in zip(sessions, records):
        a = np.asarray([x for x in rec if t_measure <= x[0] < t_end]).reshape(-1, 8)
        first = None if s.t_first_sent is None else s.t_first_sent - s.t_first_audio
        per_client.append({"fps": a.shape[0] / seconds, "lat": a[:, 1], "stages": a[:, 2:7], "batch": a[:, 7],
                           "first_s": first, "dropped": s.counts["dropped"] + s.counts["skipped"]})
    feat = [t for t in batcher.encode_ticks if t_measure <= t["t"] < t_end]  # batched whisper encoder calls
    busy = (sum(t["render_s"] + t["copy_s"] for t in batcher.ticks if t_measure <= t["t"] < t_end)
            + sum(t["encode_s"] for t in feat)) / seconds
    sizes = [t["size"] for t in batcher.ticks if t_measure <= t["t"] < t_end]
    first_stages = {k: 1000 * float(np.median([f[k] for f in firsts])) for k in firsts[0] if k not in ("index", "batch")} if firsts else {}
    first_stages["first_index_max"] = max((f["index"] for f in firsts), default=None)
    return per_client, {"warm_up_s": loop.warm_up_s, "gpu_reserved_gib": reserved_gib, "first_frame_stages_ms_p50": first_stages, "device_busy": busy, "mean_batch": float(np.mean(sizes)) if sizes else 0.0,
                        "feature_calls_per_s": len(feat) / seconds,
                        "feature_batch_mean": float(np.mean([t["size"] for t in feat])) if feat else None,
                        "feature_ms_p50": 1000 * _pct([t["encode_s"] for t in feat], 50) if feat else None,
                        "feature_ms_p95": 1000 * _pct([t["encode_s"] for t in feat], 95) if feat else None,
                        "vp8_kbps_per_client": (8 * float(np.mean([vp8_bytes.get(s.id, 0) for s in sessions])) / seconds / 1000
                                                if enc_times else None),
                        "encode_ms_p50": 1000 * _pct(enc_times, 50) if enc_times else None,
                        "encode_ms_p95": 1000 * _pct(enc_times, 95) if enc_times else None}


def load_head(args):
    """The run's heads on the device (as `talkgs serve` loads them), its name, and the clients' audio."""
    from talkgs.commands.serve import ServeConfig
    from talkgs.serve.app import head_names, load_heads

    cfg = ServeConfig(runs=(args.run,), device=args.device, max_batch=args.max_batch, cpu_threads=args.cpu_threads)
    heads = load_heads(cfg, [args.dataset], cuda_graphs=not args.eager, fused_face=not args.torch_face)
    head = head_names([args.run])[0]
    if args.two_passes:  # the baseline: the face and mouth branches in two rasterizer calls
        for r in heads.values():
            r.one_pass = False
    if args.eager_encoder:  # the baseline: every Whisper encoder call runs eagerly
        enc = getattr(live_stream(heads[head].audio_kind, args.stream_window), "enc", None)
        if enc is not None:
            enc.graphs.failed = "off (bench/serve.py --eager-encoder)"
    return heads, head, load_audio(args, heads[head])


def process_main(conn, args) -> None:
    """One of ``--processes P``: its own copy of the heads and batch loop on the same device; runs
    the trials the parent sends (clients, first client) and sends back their records."""
    heads, head, audio = load_head(args)
    conn.send("loaded")
    while (msg := conn.recv()) is not None:
        n, first = msg

        def gate():
            conn.send("ready")
            return conn.recv()

        conn.send(asyncio.run(trial_inproc(heads, head, n, args.seconds, args.warmup, audio, args.max_batch, None,
                                           args.stream_window, args.pipelined, first, gate)))


def _recv(conn, doing: str):
    """The next message from a serve process, or a clear error where it has ended."""
    try:
        return conn.recv()
    except EOFError:
        raise RuntimeError(f"a serve process ended during {doing} (its traceback is above)") from None


class Processes:
    """``--processes P``: P batch loops in P processes on one device, each with its share of a
    trial's clients, started on one clock (CLOCK_MONOTONIC is system-wide)."""

    def __init__(self, args, p: int):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # a CUDA context does not survive fork
        self.conns, self.procs = [], []
        for _ in range(p):
            a, b = ctx.Pipe()
            proc = ctx.Process(target=process_main, args=(b, args), daemon=True)
            proc.start()
            self.conns.append(a)
            self.procs.append(proc)
        for c in self.conns:
            _recv(c, "loading its head")

    def trial(self, n: int) -> tuple[list, dict]:
        p = len(self.conns)
        shares = [n // p + (1 if i < n % p else 0) for i in range(p)]
        firsts = np.concatenate([[0], np.cumsum(shares)[:-1]]).tolist()
        used = [(c, m, f) for c, m, f in zip(self.conns, shares, firsts) if m > 0]
        for c, m, f in used:
            c.send((m, int(f)))
        for c, _, _ in used:
            _recv(c, "its warm-up")
        t_start = time.monotonic() + 0.3
        for c, _, _ in used:
            c.send(t_start)
        results = [_recv(c, "a trial") for c, _, _ in used]
        per = [x for r_, _ in results for x in r_]
        extras = [e for _, e in results]
        merged = {  # the busiest process's render thread is what gives out first
            "device_busy": max(e["device_busy"] for e in extras),
            "mean_batch": float(np.mean([e["mean_batch"] for e in extras])),
            "warm_up_s": max(e["warm_up_s"] or 0.0 for e in extras),
            "gpu_reserved_gib": None if any(e["gpu_reserved_gib"] is None for e in extras)
            else sum(e["gpu_reserved_gib"] for e in extras),
            "first_frame_stages_ms_p50": extras[0]["first_frame_stages_ms_p50"],
            "feature_calls_per_s": sum(e["feature_calls_per_s"] for e in extras),
            **{k: (float(np.mean([e[k] for e in extras])) if all(e[k] is not None for e in extras) else None)
               for k in ("feature_batch_mean", "feature_ms_p50", "feature_ms_p95")},
            "vp8_kbps_per_client": None, "encode_ms_p50": None, "encode_ms_p95": None,
            "clients_per_process": shares, "per_process": extras,
        }
        return per, merged

    def close(self) -> None:
        for c in self.conns:
            try:
                c.send(None)
            except OSError:  # a process that died (its traceback is above) has closed its end
                pass
        for proc in self.procs:
            proc.join(30)


# ------------------------------------------------------------------------------ webrtc
def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    import os

    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


async def transport_bytes(client) -> tuple[int, int]:
    """(received, sent) bytes of the client's current connection (its ICE/DTLS transport)."""
    rep = await client.pc.getStats()
    got = [(s.bytesReceived, s.bytesSent) for s in rep.values() if s.type == "transport"]
    return (sum(g[0] for g in got), sum(g[1] for g in got)) if got else (0, 0)


async def trial_webrtc(url, head, n, seconds, warmup, audio, token=None, front_pid=None):
    import aiohttp

    from talkgs.serve.client import LiveClient

    clients = []
    for k in range(n):
        off = int(1.3 * k * SAMPLE_RATE) % audio.shape[0]
        clients.append(LiveClient(url, head, np.roll(audio, -off), token=token))
    offer_ms = []

    async def connect(c):
        t = time.monotonic()
        await c.connect()
        offer_ms.append(1000 * (time.monotonic() - t))

    cpu_c = cpu_seconds(front_pid) if front_pid else None
    await asyncio.gather(*(connect(c) for c in clients))
    cpu_offers = cpu_seconds(front_pid) - cpu_c if front_pid else None
    t0 = time.monotonic()
    await asyncio.sleep(warmup)
    t_measure = time.monotonic()
    cpu0 = cpu_seconds(front_pid) if front_pid else None
    net0 = await asyncio.gather(*(transport_bytes(c) for c in clients))

    async def get_status():
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/api/status", headers={"X-Talkgs-Token": token} if token else {}) as r:
                return await r.json()

    status0 = await get_status()
    await asyncio.sleep(seconds)
    t_end = time.monotonic()
    net1 = await asyncio.gather(*(transport_bytes(c) for c in clients))
    cpu1 = cpu_seconds(front_pid) if front_pid else None
    status = await get_status()
    per_client = []
    for c in clients:
        lat = c.latencies(since=t_measure)
        srv = next((s for s in status["sessions"] if s["session"] == c.session), {})
        stages = srv.get("latency_ms", {})
        per_client.append({"fps": c.fps(t_measure, t_end), "lat": lat, "first_s": c.first_frame_s(),
                           "server_stages_ms": {k: v["p50"] for k, v in stages.items()},
                           "dropped": sum(srv.get("counts", {}).get(k, 0) for k in ("dropped", "skipped"))})
    await asyncio.gather(*(c.close() for c in clients))
    await asyncio.sleep(1.0)
    dt = t_end - t_measure
    extra = {"device_busy": status["batches"]["device_busy"], "mean_batch": status["batches"]["mean_batch"],
             "since_connect_s": t_end - t0,
             "down_kbps_per_client": 8 * float(np.mean([b[0] - a[0] for a, b in zip(net0, net1)])) / dt / 1000,
             "up_kbps_per_client": 8 * float(np.mean([b[1] - a[1] for a, b in zip(net0, net1)])) / dt / 1000,
             "offer_ms_p50": _pct(offer_ms, 50), "offer_ms_max": max(offer_ms)}
    if "workers" in status:
        extra["sessions_per_worker"] = {w["worker"]: sum(c.worker == w["worker"] for c in clients) for w in status["workers"]}
        extra["device_busy_per_worker"] = {w["worker"]: w["device_busy"] for w in status["workers"]}
        # Each worker process's CPU time (all its threads: media, features, render) per second.
        w0 = {w["worker"]: w for w in status0["workers"]}
        extra["worker_cpu_s_per_s"] = {w["worker"]: (w["cpu_s"] - w0[w["worker"]]["cpu_s"]) / (w["t_report"] - w0[w["worker"]]["t_report"])
                                       for w in status["workers"] if w["t_report"] > w0[w["worker"]]["t_report"]}
    if cpu0 is not None:
        extra["front_cpu_s_per_s"] = (cpu1 - cpu0) / dt
        extra["front_cpu_s_per_offer"] = cpu_offers / n  # the connect phase (also the reports meanwhile)
    return per_client, extra


def start_server(run, port, max_sessions, args) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "talkgs", "serve", str(run), "--port", str(port), "--device", args.device,
           "--max-sessions", str(max_sessions), "--max-batch", str(args.max_batch), "--idle-timeout-s", "30"]
    if args.ray:
        cmd += ["--ray", "--ray-workers", str(args.ray)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    for line in proc.stdout:
        print(f"  {line.rstrip()}")
        if line.startswith("[serve] open"):
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc
    raise SystemExit(f"talkgs serve exited with {proc.wait()}")


# ------------------------------------------------------------------------------ mouth
def mouth_check(run, device, backend, audio, dataset=None) -> dict:
    """Through the server's path (session -> batcher -> render_batch) with a still head and open
    eyes: the mouth box's mean change between consecutive frames (grey levels) while 4 s of
    speech play and in the 2 s of digital silence after them."""
    from talkgs.audio import open_stream
    from talkgs.serve.batcher import Batcher
    from talkgs.serve.session import Session, SessionLimits
    from talkgs.render.drive import DriveConfig
    from talkgs.render.renderer import HeadRenderer

    r = HeadRenderer(run, device, dataset=dataset, drive=DriveConfig(pose="still", blinks="open"), backend=backend)
    with np.load(Path(dataset or r.state["config"]["dataset"]) / "tracks.npz") as z:
        x0, y0, x1, y1 = (z["lips_box"][r.segment[0]] * r.scale).tolist()
    box = (int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1)))
    wav = np.concatenate([audio[: 4 * SAMPLE_RATE], np.zeros(2 * SAMPLE_RATE, np.float32)])
    s = Session("m", "h", open_stream(r.audio_kind), r.audio_window, SessionLimits(max_pending=10**6, max_out=10**6))
    b = Batcher({"h": r}, 32)
    b.add(s)
    for k, c in enumerate(np.split(wav, np.arange(CHUNK, wav.shape[0], CHUNK))):
        s.push_audio(c)
        if k % 8 == 7:
            b.tick()
    s.end_audio()
    while b.due():
        b.tick()
    frames = []
    while (f := s.take_frame()) is not None:
        frames.append(f.image[box[1] : box[3], box[0] : box[2]].astype(np.int16))
    d = np.abs(np.diff(np.stack(frames), axis=0)).mean(axis=(1, 2, 3))
    speech, silence = d[5:95], d[110:145]  # frames whose windows hold only speech / only silence
    return {"box": box, "speech_change_p50": float(np.median(speech)), "speech_change_p90": float(np.percentile(speech, 90)),
            "silence_change_p50": float(np.median(silence)), "silence_change_max": float(silence.max())}


# ------------------------------------------------------------------------------ main
def summarise(n, per_client, extra, gpu_util):
    fps = np.asarray([c["fps"] for c in per_client])
    lat = np.concatenate([c["lat"] for c in per_client]) if per_client else np.zeros(0)
    firsts = [c["first_s"] for c in per_client if c["first_s"] is not None]
    row = {
        "clients": n,
        "fps_min": float(fps.min()), "fps_mean": float(fps.mean()),
        "holds_25fps": bool(fps.min() >= HOLD_FPS),
        "latency_ms_p50": None if not lat.size else 1000 * _pct(lat, 50),
        "latency_ms_p95": None if not lat.size else 1000 * _pct(lat, 95),
        "first_frame_ms_max": 1000 * max(firsts) if firsts else None,
        "first_frame_ms_p50": 1000 * float(np.median(firsts)) if firsts else None,
        "dropped_frames": int(sum(c["dropped"] for c in per_client)),
        "gpu_util_pct": gpu_util,
        **extra,
    }
    if per_client and "stages" in per_client[0]:
        st = np.concatenate([c["stages"] for c in per_client])
        names = ("lookahead", "queue", "render", "send_wait", "encode")
        row["stages_ms_p50"] = {k: 1000 * _pct(st[:, i], 50) for i, k in enumerate(names)} if st.size else {}
        row["stages_ms_p95"] = {k: 1000 * _pct(st[:, i], 95) for i, k in enumerate(names)} if st.size else {}
        bs = np.concatenate([c["batch"] for c in per_client])
        row["frames_per_batch_p50"] = _pct(bs, 50) if bs.size else None
    elif per_client:
        row["server_stages_ms_p50"] = per_client[0].get("server_stages_ms")
    return row


def main() -> None:
    ap = H.parser(__doc__, "serve")
    ap.add_argument("run", type=Path, help="a trained run")
    ap.add_argument("--transport", choices=["inproc", "webrtc"], default="inproc")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 32])
    ap.add_argument("--find-max", action="store_true", help="search the largest N that holds 25 fps")
    ap.add_argument("--max-clients", type=int, default=256, help="upper bound of the search")
    ap.add_argument("--seconds", type=float, default=8.0, help="measured window per trial")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds before a trial's measured window")
    ap.add_argument("--audio", type=Path, default=None, help="16 kHz wav the clients say (default: the dataset's val audio)")
    ap.add_argument("--dataset", type=Path, default=None, help="the run's dataset (default: as recorded in the run)")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--max-batch", type=int, default=32, help="frames per render batch")
    ap.add_argument("--no-encode", action="store_true", help="inproc: leave VP8 encoding out")
    ap.add_argument("--cpu-threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--eager", action="store_true",
                    help="baseline: the deformation runs eagerly instead of replaying CUDA graphs (inproc)")
    ap.add_argument("--port", type=int, default=8765, help="webrtc: the server's port")
    ap.add_argument("--ray", type=int, default=0, metavar="K",
                    help="webrtc: serve with `talkgs serve --ray --ray-workers K` (a local Ray instance)")
    ap.add_argument("--note", default=None, help="one sentence a reader of the result needs (e.g. the machine's load)")
    ap.add_argument("--idle-s", type=float, default=3.0,
                    help="webrtc: seconds the front's CPU time is measured with no session, before the trials")
    ap.add_argument("--eager-encoder", action="store_true",
                    help="inproc, Whisper heads: the encoder runs eagerly instead of replaying CUDA graphs (a baseline)")
    ap.add_argument("--torch-face", action="store_true",
                    help="inproc: the face deformation by PyTorch's ops instead of the fused kernel (a baseline)")
    ap.add_argument("--two-passes", action="store_true",
                    help="inproc: the face and mouth branches rasterized in two calls instead of one (a baseline)")
    ap.add_argument("--pipelined", action="store_true",
                    help="inproc: the batch loop delivers a tick's frames after launching the next tick's (a variant)")
    ap.add_argument("--stream-window", type=float, default=None, metavar="S",
                    help="inproc, Whisper heads: the sessions' encoder window in seconds (default: the server's)")
    ap.add_argument("--mouth-check", action="store_true",
                    help="also measure the mouth box's change in speech vs silence through the server's path")
    ap.add_argument("--processes", type=int, default=1, metavar="P",
                    help="inproc: P batch loops in P processes on the one device, the clients split among them (a variant)")
    ap.add_argument("--switch-interval-ms", type=float, default=None,
                    help="Python's thread switch interval (default: Python's 5 ms), for the render thread's share of the GIL")
    args = ap.parse_args()
    if args.ray and args.transport != "webrtc":
        ap.error("--ray needs --transport webrtc")
    if (args.stream_window is not None or args.torch_face or args.pipelined or args.eager_encoder or args.two_passes) \
            and args.transport != "inproc":
        ap.error("--stream-window, --torch-face, --two-passes, --eager-encoder and --pipelined are inproc variants "
                 "(a served session is the server's own)")
    if args.processes < 1 or (args.processes > 1 and args.transport != "inproc"):
        ap.error("--processes is a positive count, and more than 1 only with --transport inproc")
    if args.processes > 1 and not args.no_encode:
        ap.error("--processes measures the batch loops: add --no-encode")
    if args.eager and args.transport != "inproc":
        ap.error("--eager is measured in process (--transport inproc)")
    if args.switch_interval_ms is not None:
        sys.setswitchinterval(args.switch_interval_ms / 1000.0)

    t0 = time.perf_counter()
    heads, head, audio = load_head(args)
    r = heads[head]
    print(f"[bench] head {head}: {r.width}x{r.height} on {r.device}, loaded in {time.perf_counter() - t0:.1f} s; "
          f"audio {audio.shape[0] / SAMPLE_RATE:.1f} s; transport {args.transport}")
    from talkgs.serve.session import Session

    # Audio past a frame's end needed before it can be rendered: the stream's + the model's window.
    probe_stream = live_stream(r.audio_kind, args.stream_window)
    lookahead_ms = Session("probe", head, probe_stream, r.audio_window).lookahead_ms
    stream_window_s = getattr(getattr(probe_stream, "layout", None), "window_s", None)  # Whisper streams
    print(f"[bench] feature kind {r.audio_kind}: lookahead {lookahead_ms:g} ms past a frame's end")
    dev_name = H.device_name(str(r.device))
    encoder_factory = None if args.no_encode or args.transport != "inproc" else make_encoder()
    proc = None
    if args.transport == "webrtc":
        from talkgs.serve.webrtc import restrict_ice_addresses

        restrict_ice_addresses("127.0.0.1")
        proc = start_server(args.run, args.port, max(args.clients + [args.max_clients if args.find_max else 0]) + 1, args)
        url = f"http://127.0.0.1:{args.port}"
        del heads  # the subprocess renders; free this process's copy
        cpu0 = cpu_seconds(proc.pid)
        time.sleep(args.idle_s)
        front_idle = (cpu_seconds(proc.pid) - cpu0) / args.idle_s
        print(f"[bench] the server process idle: {front_idle:.3f} CPU s per s")

    procs = Processes(args, args.processes) if args.processes > 1 else None
    rows: dict[int, dict] = {}

    def run_trial(n: int) -> dict:
        with GpuSampler() as gpu:
            t0 = time.monotonic()
            if procs is not None:
                per, extra = procs.trial(n)
            elif args.transport == "inproc":
                per, extra = asyncio.run(trial_inproc(heads, head, n, args.seconds, args.warmup, audio, args.max_batch,
                                                      encoder_factory, args.stream_window, args.pipelined))
            else:
                per, extra = asyncio.run(trial_webrtc(url, head, n, args.seconds, args.warmup, audio,
                                                      front_pid=proc.pid))
            util = gpu.mean(t0 + args.warmup, time.monotonic())
        row = summarise(n, per, extra, util)
        rows[n] = row
        print(f"[bench] N={n:3d}: fps min {row['fps_min']:.1f} mean {row['fps_mean']:.1f}, latency p50 "
              f"{row['latency_ms_p50'] or float('nan'):.0f} p95 {row['latency_ms_p95'] or float('nan'):.0f} ms, first frame "
              f"<= {row['first_frame_ms_max'] or float('nan'):.0f} ms, device busy {100 * row['device_busy']:.0f} %, "
              f"batch {row['mean_batch']:.1f}" + (f", sessions per worker {row['sessions_per_worker']}, server CPU "
              f"{row.get('front_cpu_s_per_s', 0):.3f} s/s, offer p50 {row['offer_ms_p50']:.0f} ms"
              if row.get("sessions_per_worker") else "") + (f", network down {row['down_kbps_per_client']:.0f} / up "
              f"{row['up_kbps_per_client']:.0f} kbit/s per client" if row.get("down_kbps_per_client") else "")
              + (f", feature calls {row['feature_calls_per_s']:.0f}/s of "
              f"{row['feature_batch_mean']:.1f} windows, {row['feature_ms_p50']:.1f} ms p50"
              if row.get("feature_batch_mean") else ""), flush=True)
        if row.get("first_frame_stages_ms_p50"):
            print("        first frame p50 (ms): " + ", ".join(f"{k} {v:.0f}" for k, v in row["first_frame_stages_ms_p50"].items()
                                                       if v is not None) + f"; warm-up {row.get('warm_up_s') or 0:.2f} s"
                  + (f", {row['gpu_reserved_gib']:.1f} GiB reserved" if row.get("gpu_reserved_gib") is not None else ""),
                  flush=True)
        return row

    try:
        for n in args.clients:
            run_trial(n)
        if args.find_max:
            ok = [n for n, r_ in rows.items() if within_limits(r_)]
            bad = [n for n, r_ in rows.items() if not within_limits(r_)]
            lo = max(ok) if ok else 0
            hi = min([b for b in bad if b > lo], default=None)
            while hi is None and lo < args.max_clients:
                n = min(max(lo + 1, int(lo * 1.5)), args.max_clients)
                if within_limits(run_trial(n)):
                    lo = n
                else:
                    hi = n
            while hi is not None and hi - lo > max(1, lo // 16):
                n = (lo + hi) // 2
                if within_limits(run_trial(n)):
                    lo = n
                else:
                    hi = n
            print(f"[bench] largest N within the limits: {lo}")
    finally:
        if procs is not None:
            procs.close()
        if proc is not None:
            proc.terminate()
            proc.wait(20)

    mouth = None
    if args.mouth_check:
        mouth = mouth_check(args.run, r.device, "auto", audio, args.dataset)
        print(f"[bench] mouth box change (grey levels): speech p50 {mouth['speech_change_p50']:.2f} "
              f"p90 {mouth['speech_change_p90']:.2f}, silence p50 {mouth['silence_change_p50']:.2f} "
              f"max {mouth['silence_change_max']:.2f}")
    table = [rows[n] for n in sorted(rows)]
    cap = capacity(table)
    setup = {
        "run": str(args.run), "head": head, "size": [r.width, r.height],
        "switch_interval_ms": 1000.0 * sys.getswitchinterval(),
        "encode": ("vp8 (aiortc encoder)" if encoder_factory else "not measured (no aiortc/PyAV here)")
        if args.transport == "inproc" else "vp8 + opus over loopback (aiortc)",
        "audio_kind": r.audio_kind, "lookahead_ms": lookahead_ms, "mouth_check": mouth,
        "stream_window_s": stream_window_s,
        "cuda_graphs": r.graphs is not None, "n_graphs": None if r.graphs is None else r.graphs.n_graphs,
        "fused_face": r.model.fused_kernel is not None, "one_pass": r.one_pass, "pipelined": args.pipelined, "processes": args.processes,
        "encoder_graphs": encoder_graphs(probe_stream),
    }
    if args.transport == "webrtc":
        setup["server_idle_cpu_s_per_s"] = front_idle
        setup["server"] = f"talkgs serve --ray --ray-workers {args.ray}" if args.ray else "talkgs serve"
    if args.name is None and args.out is None and args.transport != "inproc":
        args.name = f"{H.device_tag(str(r.device))}_{args.transport}" + (f"_ray{args.ray}" if args.ray else "")
    out = [{"measure": "trial", **row} for row in table] + [{"measure": "capacity", **cap}]
    H.write("serve", args, out, device=str(r.device), setup=setup, note=args.note)
    print(f"\n{'N':>4} {'fps min':>8} {'fps mean':>8} {'lat p50':>8} {'lat p95':>8} {'1st max':>8} {'busy%':>6} "
          f"{'gpu%':>5} {'batch':>6}  ({dev_name}, {r.width}x{r.height}, {args.transport})")
    for row in table:
        f = lambda v, p=0: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
        print(f"{row['clients']:>4} {f(row['fps_min'], 1):>8} {f(row['fps_mean'], 1):>8} {f(row['latency_ms_p50']):>8} "
              f"{f(row['latency_ms_p95']):>8} {f(row['first_frame_ms_max']):>8} {f(100 * row['device_busy']):>6} "
              f"{f(row['gpu_util_pct']):>5} {f(row['mean_batch'], 1):>6}")
    print(f"largest N at >= {HOLD_FPS:.0f} fps per client: {cap['largest_n_holding_25fps']}; "
          f"also with latency p95 < {P95_LIMIT_MS:.0f} ms and first frame < {FIRST_FRAME_LIMIT_MS:.0f} ms: "
          f"{cap['largest_n_within_limits']}")


if __name__ == "__main__":
    main()
