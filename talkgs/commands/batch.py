"""``talkgs batch``: a file of prepare / train / render jobs run across the GPUs of this host or a
Ray cluster, one job per device at a time, each starting when the outputs it needs exist.

The jobs file is read, parsed and checked whole before anything starts (:mod:`talkgs.batch.plan`);
the jobs run on local worker processes or Ray actors (:mod:`talkgs.batch.worker`) under one
scheduler (:mod:`talkgs.batch.scheduler`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import signal
import threading
from pathlib import Path
from typing import Sequence

import tyro

from talkgs.commands.common import at_least
from talkgs.errors import UsageError

LOCAL_RAY = "local"  # --ray without an address: a Ray instance started here


@dataclasses.dataclass(frozen=True)
class BatchConfig:
    """Run a file of prepare / train / render jobs on the GPUs of this host or a Ray cluster."""

    jobs: tyro.conf.Positional[Path]
    """Jobs file: one `prepare ...`, `train ...` or `render ...` a line, with that command's
    arguments (`#` comments, blank lines). Relative paths start at the current folder."""
    ray: str | None = None
    """Run the jobs as Ray actors (needs talkgs[cluster]): `--ray` alone starts a Ray instance on
    this host, `--ray ADDRESS` joins a running cluster (one job per GPU, or per `talkgs_worker`
    resource of a CPU node)."""
    workers: int | None = None
    """Jobs at a time: one per GPU (default: every GPU of this host or cluster, at most this many);
    on a host without CUDA this many CPU workers (default 1)."""


Config = BatchConfig


def command_line(args: Sequence[str]) -> list[str]:
    """``args`` with a bare ``--ray`` (last, or before another flag) given its value ``local``."""
    args = list(args)
    for i, a in enumerate(args):
        if a == "--ray" and (i + 1 == len(args) or args[i + 1].startswith("-")):
            args.insert(i + 1, LOCAL_RAY)
            break
    return args


def ray_installed() -> bool:
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        return False


def _reachable(address: str, timeout_s: float = 5.0) -> None:
    """One line unless ``address`` (HOST:PORT of a cluster's head) accepts a connection: Ray itself
    retries for minutes before it gives up."""
    import socket

    if "://" in address:  # ray://HOST:PORT (Ray Client): Ray reports its own errors
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray {address}: give the cluster's head as HOST:PORT (e.g. 10.0.0.5:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise UsageError(f"--ray {address}: no Ray cluster answers there ({e.strerror or e})") from None


def check(cfg: BatchConfig) -> BatchConfig:
    from talkgs.batch.plan import plan

    if cfg.workers is not None:
        at_least("workers", cfg.workers, 1)
    if cfg.ray is not None and not ray_installed():
        raise UsageError("--ray needs Ray: pip install 'talkgs[cluster]'")
    if cfg.ray not in (None, LOCAL_RAY):
        _reachable(cfg.ray)
    plan(cfg.jobs)
    return cfg


def run(cfg: BatchConfig) -> None:
    from talkgs.batch.plan import plan
    from talkgs.batch.scheduler import schedule
    from talkgs.batch.worker import LocalExecutor, RayExecutor

    jobs, ledger = plan(cfg.jobs)  # again: the files may have changed since check
    if all(j.done for j in jobs):
        executor = _NoWorkers()
    elif cfg.ray is None:
        executor = LocalExecutor(cfg.workers)
    else:
        executor = RayExecutor(None if cfg.ray == LOCAL_RAY else cfg.ray, cfg.workers)
    # Ctrl-C stops the batch even where it was started with SIGINT ignored (as `train` does).
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler) if in_main else None
    try:
        status = schedule(jobs, ledger, executor, echo=lambda s: print(s, flush=True))
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)
    if status:
        raise SystemExit(status)


class _NoWorkers:
    """The executor of a batch with nothing to run: no worker is started."""

    names: list[str] = []

    def close(self) -> None:
        pass
