"""``talkgs serve``: trained heads live in a browser over WebRTC."""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from pathlib import Path
from typing import Annotated, Literal

import tyro

from talkgs.commands.common import at_least, device, input_run, mouth_amplitude, positive, run_dataset, within
from talkgs.data import runs
from talkgs.errors import AudioFeatureError, UsageError
from talkgs.render.drive import DriveConfig


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """Serve trained heads live in a browser: speech in (microphone or a file played by the page),
    the head's video with that speech out, over WebRTC; sessions share the device in batches."""

    runs: tyro.conf.Positional[tuple[Path, ...]]
    """Run folders written by `talkgs train`; the page offers exactly these heads (by folder name).
    Each run's dataset is read from the path the run recorded."""
    host: str = "127.0.0.1"
    """Address to listen on. Anything but loopback needs --token."""
    port: int = 8080
    """TCP port of the page and its API (WebRTC media uses UDP ports chosen by the system)."""
    token: str | None = None
    """Secret the page must present (open http://HOST:PORT/?token=...), at least 8 characters;
    required unless the host is loopback."""
    max_sessions: int = 16
    """Live sessions at once; the next one is refused with a message (not served worse)."""
    max_batch: int = 32
    """Most frames rendered in one device call."""
    idle_timeout_s: float = 10.0
    """A session whose audio stops arriving for this many seconds is closed."""
    device: str = "auto"
    """cuda, cpu or auto."""
    backend: Literal["auto", "gsplat", "torch"] = "auto"
    """Rasterizer backend (auto: gsplat on CUDA, torch elsewhere)."""
    mouth_amplitude: float = 1.0
    """Scale of the predicted mouth motion around the person's mean mouth: 1 as trained, above 1
    livelier, below 1 calmer (mouth_state runs; at most 3)."""
    drive: DriveConfig = DriveConfig()
    """Head pose, eyes and torso of every session (each session walks its own copy of the plan)."""
    cpu_threads: int = 1
    """Torch threads rendering on a CPU device (the network, audio and video-encoder threads need
    the other cores)."""
    ray: Annotated[tuple[str, ...] | None, tyro.conf.arg(metavar="[ADDRESS]")] = None
    """Spread sessions over workers that Ray places and supervises, one per GPU: `--ray` starts a
    local Ray instance over this host's devices, `--ray ADDRESS` joins a running cluster (`ray start
    --head` on one node, `ray start --address ADDRESS` on the others). This process keeps the page
    and the API; each worker loads every run from the same path, so runs and their datasets must be
    readable at that path on every node. --max-sessions then counts per worker. Needs
    `pip install 'talkgs[cluster]'`."""
    ray_workers: int = 0
    """With --ray: the number of workers (0: one per GPU of the cluster; with --device cpu, one per
    unit of the Ray resource `talkgs_cpu_worker`, of which a local instance gets this many)."""
    workers_per_gpu: int = 1
    """With --ray: the number N of workers sharing each GPU, each its own process with its own batch
    loop and 1/N of the GPU in Ray's accounting (with --ray-workers 0: N workers per GPU of the
    cluster). Not with --device cpu; ignored when --device auto falls back to CPU workers."""
    verbose: bool = False
    """Log every session's start, end and statistics."""


Config = ServeConfig


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check(cfg: ServeConfig) -> ServeConfig:
    from talkgs.audio import stream_kinds

    if not cfg.runs:
        raise UsageError("name at least one run to serve")
    states = [(run, input_run(run)[1]) for run in cfg.runs]
    mouth_amplitude(cfg.mouth_amplitude, states)
    device(cfg.device)
    if not is_loopback(cfg.host) and not cfg.token:
        raise UsageError(
            f"serving on {cfg.host} (not loopback) needs --token SECRET; the page is then opened as "
            f"http://{f'[{cfg.host}]' if ':' in cfg.host else cfg.host}:{cfg.port}/?token=SECRET"
        )
    if cfg.token is not None and len(cfg.token) < 8:
        raise UsageError("--token must be at least 8 characters")
    within("max_sessions", cfg.max_sessions, 1, 1024)
    within("max_batch", cfg.max_batch, 1, 1024)
    within("port", cfg.port, 1, 65535)
    positive("idle_timeout_s", cfg.idle_timeout_s)
    at_least("cpu_threads", cfg.cpu_threads, 1)
    within("ray_workers", cfg.ray_workers, 0, 1024)
    if cfg.ray is None and cfg.ray_workers:
        raise UsageError("--ray-workers needs --ray")
    within("workers_per_gpu", cfg.workers_per_gpu, 1, 16)
    if cfg.ray is None and cfg.workers_per_gpu > 1:
        raise UsageError("--workers-per-gpu needs --ray")
    if cfg.device == "cpu" and cfg.workers_per_gpu > 1:
        raise UsageError("--workers-per-gpu shares GPUs; with --device cpu give --ray-workers instead")
    if cfg.ray is not None:
        from talkgs.serve.cluster import INSTALL, ray_missing

        if len(cfg.ray) > 1:
            raise UsageError(f"--ray takes at most one address (the head node's, e.g. 10.0.0.1:6379), got {len(cfg.ray)}")
        if ray_missing():
            raise UsageError(f"--ray needs Ray, which is not installed: {INSTALL}")
    for run, state in states:
        kind = (state.get("audio") or {}).get("kind")
        if kind is not None and kind not in stream_kinds():
            raise AudioFeatureError(f"run {run} uses '{kind}' audio features, which cannot be computed from live "
                                    f"audio (streaming kinds: {', '.join(stream_kinds())})")
        run_dataset(run, state, advice=runs.PUT_BACK)
    # The port is checked now, not after minutes of loading.
    family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((cfg.host, cfg.port))
        except OSError as e:
            raise UsageError(f"cannot listen on {cfg.host}:{cfg.port}: {e.strerror or e}") from None
    return cfg


def run(cfg: ServeConfig) -> None:
    from talkgs.serve.app import serve

    serve(cfg)
