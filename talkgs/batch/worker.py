"""What runs the jobs: a long-lived :class:`Worker` per device, in a local process or a Ray actor.

A worker runs one job at a time. prepare and train run as ``talkgs`` child processes, exactly
as on the command line (their own Ctrl-C handling: prepare keeps its finished steps, train
saves a resumable checkpoint). render runs in the worker itself, which keeps the heads it
loaded (:class:`talkgs.render.renderer.HeadRenderer`, by run) for the next render of the same
run. :meth:`Worker.interrupt` stops the current job the way Ctrl-C stops the command.

Executors (both used by :func:`talkgs.batch.scheduler.schedule`): :class:`LocalExecutor`, one
worker process per device of this host; :class:`RayExecutor`, one Ray actor per GPU of a Ray
cluster (``num_gpus=1``), or per unit of the custom resource ``talkgs_worker`` on CPU nodes.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import dataclasses
import io
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

# The custom resource a CPU node offers per batch worker (`ray start --resources '{"talkgs_worker": N}'`).
CPU_RESOURCE = "talkgs_worker"
MAX_HEADS = 8  # loaded heads a worker keeps (least recently used go first)
# A job's child: `talkgs ARGS` with Ctrl-C as KeyboardInterrupt even where the worker ignores or
# blocks it (a Ray worker's threads block signals, and a child inherits the mask).
_CHILD = ("import signal, sys; signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM}); "
          "signal.signal(signal.SIGINT, signal.default_int_handler); "
          "from talkgs.cli import main; sys.exit(main(sys.argv[1:]))")


@dataclasses.dataclass(frozen=True)
class Task:
    line: int  # the job's line in the jobs file
    command: str
    argv: tuple[str, ...]  # the command line it runs (command name first)
    cwd: str  # where relative paths of the line start


@dataclasses.dataclass(frozen=True)
class Outcome:
    line: int
    status: str  # "done", "failed" or "interrupted"
    message: str  # the one-line error (without "talkgs: "), or ""
    seconds: float
    worker: str


class Worker:
    """Runs tasks one at a time on one device; keeps the heads it rendered."""

    def __init__(self, name: str):
        self.name = name
        self._heads: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()
        self._child: subprocess.Popen | None = None
        self._thread: int | None = None  # ident of the thread running an in-process job
        self._stopped = False  # once interrupted, a worker starts no further job

    def run(self, task: Task) -> Outcome:
        t0 = time.monotonic()
        try:
            if self._stopped:
                status, message = "interrupted", "not started (the batch was interrupted)"
            elif task.command == "render":
                status, message = self._render(task)
            else:
                status, message = self._child_process(task)
        except KeyboardInterrupt:
            status, message = "interrupted", "interrupted"
        except Exception as e:  # e.g. the job's folder missing on this node: the job fails, the worker goes on
            status, message = "failed", f"{type(e).__name__}: {e}".splitlines()[0]
        return Outcome(task.line, status, message, time.monotonic() - t0, self.name)

    def interrupt(self) -> None:
        """Stop the current job as Ctrl-C stops its command (SIGINT to a child; KeyboardInterrupt
        in the thread rendering); no later job starts."""
        with self._lock:
            self._stopped = True
            if self._child is not None and self._child.poll() is None:
                self._child.send_signal(signal.SIGINT)
            elif self._thread is not None:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._thread), ctypes.py_object(KeyboardInterrupt))

    def _child_process(self, task: Task) -> tuple[str, str]:
        with self._lock:
            if self._stopped:
                return "interrupted", "not started (the batch was interrupted)"
            # Its own session: a terminal's Ctrl-C reaches the batch, which forwards one SIGINT here
            # (a second one would stop a training without its checkpoint).
            self._child = subprocess.Popen([sys.executable, "-c", _CHILD, *task.argv], cwd=task.cwd,
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                           errors="replace", start_new_session=True)
        tail: collections.deque = collections.deque(maxlen=200)
        try:
            for line in self._child.stdout:
                tail.append(line.rstrip("\n").split("\r")[-1])
            rc = self._child.wait()
        finally:
            with self._lock:
                self._child = None
        error = next((ln[len("talkgs: "):] for ln in reversed(tail) if ln.startswith("talkgs: ")), "")
        if rc == 0:
            return "done", ""
        if rc in (128 + signal.SIGINT, 128 + signal.SIGTERM) or self._stopped:
            return "interrupted", error or "interrupted"
        return "failed", error or next((ln for ln in reversed(tail) if ln.strip()), f"exit status {rc}")

    def _render(self, task: Task) -> tuple[str, str]:
        from talkgs.batch.plan import parse_args
        from talkgs.commands import render
        from talkgs.errors import TalkgsError
        from talkgs.render.renderer import render_audio

        with self._lock:
            if self._stopped:
                return "interrupted", "not started (the batch was interrupted)"
            self._thread = threading.get_ident()
        try:
            os.chdir(task.cwd)
            cfg = render.check(parse_args(list(task.argv)))
            with contextlib.redirect_stdout(io.StringIO()):
                render_audio(cfg, renderer=self._head(cfg))
            return "done", ""
        except TalkgsError as e:
            return "failed", str(e)
        except Exception as e:  # a job's bug is its failure, not the worker's
            return "failed", f"{type(e).__name__}: {e}".splitlines()[0]
        finally:
            with self._lock:
                self._thread = None
                # An interrupt that came as the job ended is dropped, not raised in the next one.
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(threading.get_ident()), ctypes.c_void_p(None))

    def _head(self, cfg):
        """The head ``cfg`` renders with: the one loaded before for the same checkpoint file and
        render settings, else a new one."""
        from talkgs import provenance as owner
        from talkgs.render.renderer import HeadRenderer

        ckpt = owner.run_checkpoint(Path(cfg.run)).resolve()
        st = ckpt.stat()
        key = (str(ckpt), st.st_mtime_ns, st.st_size, cfg.device, str(cfg.dataset), cfg.drive, cfg.backend,
               cfg.scale, cfg.mouth_amplitude)
        if key in self._heads:
            self._heads.move_to_end(key)
        else:
            self._heads[key] = HeadRenderer(cfg.run, cfg.device, cfg.dataset, cfg.drive, cfg.backend, cfg.scale,
                                            mouth_amplitude=cfg.mouth_amplitude)
            while len(self._heads) > MAX_HEADS:
                self._heads.popitem(last=False)
        return self._heads[key]


# ----------------------------------------------------------------------------------- devices


def local_gpus() -> list[str]:
    """The CUDA devices of this host (CUDA_VISIBLE_DEVICES where set), without loading CUDA."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        return [] if not ids or ids[0].startswith("-") else ids
    try:
        return [str(i) for i in range(len(os.listdir("/proc/driver/nvidia/gpus")))]
    except OSError:
        return []


# ----------------------------------------------------------------------------------- local


def _local_main(index: int, name: str, env: dict, tasks, results) -> None:
    os.setsid()  # a terminal's Ctrl-C reaches the batch only, which forwards the stop here
    os.environ.update(env)
    worker = Worker(name)
    signal.signal(signal.SIGINT, lambda signum, frame: worker.interrupt())
    signal.signal(signal.SIGTERM, lambda signum, frame: worker.interrupt())
    while (task := tasks.get()) is not None:
        results.put((index, worker.run(task)))


class LocalExecutor:
    """One worker process per device of this host: a GPU each (CUDA_VISIBLE_DEVICES), or
    ``workers`` CPU workers."""

    def __init__(self, workers: int | None):
        import multiprocessing as mp

        gpus = local_gpus()
        if gpus:
            devices = [(f"cuda:{g}", {"CUDA_VISIBLE_DEVICES": g}) for g in gpus[: workers or len(gpus)]]
        else:
            # The cores shared out: each worker's torch threads (where OMP_NUM_THREADS is not set).
            threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // (workers or 1)))
            devices = [(f"cpu:{k}", {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": threads}) for k in range(workers or 1)]
        ctx = mp.get_context("spawn")
        self.names = [name for name, _ in devices]
        self._results = ctx.Queue()
        self._tasks = [ctx.Queue() for _ in devices]
        self._procs = [ctx.Process(target=_local_main, args=(i, name, env, self._tasks[i], self._results), daemon=True)
                       for i, (name, env) in enumerate(devices)]
        for p in self._procs:
            p.start()
        self._busy: dict[int, Task] = {}

    def submit(self, index: int, task: Task) -> None:
        self._busy[index] = task
        self._tasks[index].put(task)

    def next(self) -> tuple[int, Outcome]:
        """The next finished task: (worker index, outcome). Blocks; Ctrl-C raises here."""
        while True:
            try:
                index, outcome = self._results.get(timeout=1.0)
                self._busy.pop(index, None)
                return index, outcome
            except queue.Empty:
                for i, task in list(self._busy.items()):
                    if not self._procs[i].is_alive():
                        del self._busy[i]
                        return i, Outcome(task.line, "failed", f"worker {self.names[i]} died (exit code "
                                          f"{self._procs[i].exitcode})", 0.0, self.names[i])

    def interrupt(self) -> None:
        for i in self._busy:
            if self._procs[i].is_alive():
                os.kill(self._procs[i].pid, signal.SIGINT)

    def close(self) -> None:
        for i, q in enumerate(self._tasks):
            if self._procs[i].is_alive():
                q.put(None)
        for p in self._procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()


# ----------------------------------------------------------------------------------- Ray


class _Actor:
    """A :class:`Worker` as a Ray actor (two threads: one runs the job, one takes interrupt())."""

    def __init__(self, index: int):
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        self.worker = Worker(f"{socket.gethostname()}:{'cuda:' + gpus if gpus else f'cpu:{index}'}")

    def name(self) -> str:
        return self.worker.name

    def run(self, task: Task) -> Outcome:
        return self.worker.run(task)

    def interrupt(self) -> None:
        self.worker.interrupt()


class RayExecutor:
    """One Ray actor per GPU of the cluster at ``address`` (None: a Ray instance started here),
    or per ``talkgs_worker`` resource on a cluster without GPUs (``workers`` of them here)."""

    def __init__(self, address: str | None, workers: int | None):
        import ray

        from talkgs.errors import UsageError

        self._ray = ray
        self._started = address is None
        if self._started:
            gpus = local_gpus()
            # address "local": a new instance here, even where RAY_ADDRESS names a cluster
            ray.init(address="local", resources=None if gpus else {CPU_RESOURCE: workers or 1},
                     include_dashboard=False, log_to_driver=False, configure_logging=False)
        else:
            try:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise UsageError(f"--ray {address}: no Ray cluster answers there ({first})") from None
        have = ray.cluster_resources()
        n_gpu, n_cpu = int(have.get("GPU", 0)), int(have.get(CPU_RESOURCE, 0))
        if n_gpu:
            opts, n = {"num_gpus": 1}, n_gpu
        elif n_cpu:
            opts, n = {"resources": {CPU_RESOURCE: 1}}, n_cpu
        else:
            ray.shutdown()
            raise UsageError(f"the Ray cluster at {address} has no GPU and no '{CPU_RESOURCE}' resource; start its "
                             f"CPU nodes with `ray start ... --resources '{{\"{CPU_RESOURCE}\": N}}'`")
        n = min(n, workers) if workers else n
        cls = ray.remote(_Actor).options(num_cpus=0, max_concurrency=2, **opts)
        self._actors = [cls.remote(i) for i in range(n)]
        self.names = ray.get([a.name.remote() for a in self._actors])
        self._busy: dict = {}  # object ref -> (worker index, task)

    def submit(self, index: int, task: Task) -> None:
        self._busy[self._actors[index].run.remote(task)] = (index, task)

    def next(self) -> tuple[int, Outcome]:
        ray = self._ray
        while True:
            done, _ = ray.wait(list(self._busy), num_returns=1, timeout=0.25)
            if done:
                index, task = self._busy.pop(done[0])
                try:
                    return index, ray.get(done[0])
                except ray.exceptions.RayError as e:
                    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    return index, Outcome(task.line, "failed", f"worker {self.names[index]}: {msg}", 0.0, self.names[index])

    def interrupt(self) -> None:
        for index, _ in self._busy.values():
            self._actors[index].interrupt.remote()

    def close(self) -> None:
        for a in self._actors:
            self._ray.kill(a)
        self._ray.shutdown()
