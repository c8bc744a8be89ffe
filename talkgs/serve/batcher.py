"""Cross-session batching: the frames due for all live sessions of a head, in one device call.

Every tick, :meth:`Batcher.collect` takes the frames whose audio windows are final from the
sessions of each head (round robin over sessions, oldest frame first, at most ``max_batch``
per call: the renderer is fastest at batch 16-32), :meth:`Batcher.render` stacks their
windows ``[B, 8, W, C]`` and the matching slices of each session's own drive plan
(:meth:`talkgs.synth.drive.DrivePlan.concat`) and calls ``render_batch`` once, and
:meth:`Batcher.deliver` hands each frame back to its session. N sessions therefore cost one
render of N frames per 40 ms instead of N renders of one frame.

Ticks are continuous: as soon as the device is free and some frame is due, the next batch
starts (:class:`BatchLoop`); a frame waits at most one batch for the device. A slow client
never stalls the others: nothing here waits on a session's sender (its frames beyond
``SessionLimits.max_out`` are dropped, see :class:`talkgs.serve.session.Session`), and a
session cannot take more than its share of a full batch.

``collect`` and ``deliver`` touch session state and run on the event loop's thread;
``render`` touches only the device and the batch, and runs on one worker thread (so the
event loop keeps serving network traffic while the device works). Everything but
:class:`BatchLoop` is synchronous and testable without a network.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import logging
import time
from typing import Callable, Protocol

import numpy as np
import torch

from talkgs.serve.session import FrameOut, Pending, Session
from talkgs.synth.drive import DrivePlan

log = logging.getLogger("talkgs.serve")


class Renderer(Protocol):
    """What the batcher needs of a head (:class:`talkgs.synth.render.HeadRenderer`)."""

    device: torch.device
    audio_kind: str
    audio_window: int
    feature_shape: tuple[int, int]
    width: int
    height: int

    def plan(self, n_out: int, start: int = 0) -> DrivePlan: ...

    def render_batch(self, windows: torch.Tensor, plan: DrivePlan) -> torch.Tensor: ...


@dataclasses.dataclass
class Batch:
    """Frames of several sessions of one head, rendered in one call."""

    head: str
    items: list[tuple[Session, Pending]]
    windows: np.ndarray  # float32 [B, size, W, C]
    plan: DrivePlan  # B frames
    t_collect: float


@dataclasses.dataclass
class Rendered:
    frames: np.ndarray  # uint8 [B, H, W, 3] on the host
    t_start: float
    t_device: float  # the device finished (synchronised)
    t_host: float  # frames on the host


class Batcher:
    """Sessions of several heads; one render call per head per tick (see module docstring)."""

    def __init__(self, renderers: dict[str, Renderer], max_batch: int = 32, clock: Callable[[], float] = time.monotonic):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.renderers = renderers
        self.max_batch = int(max_batch)
        self.clock = clock
        self.sessions: dict[str, Session] = {}
        self._rr: dict[str, int] = collections.defaultdict(int)
        self.ticks: collections.deque[dict] = collections.deque(maxlen=2000)
        """Recent batches: head, size, sessions, render and copy seconds."""
        self.busy_s = 0.0
        """Seconds the device spent in render calls (utilisation = busy_s / wall time)."""
        self.frames_rendered = 0
        self.errors = 0

    # ------------------------------------------------------------------ sessions
    def add(self, session: Session) -> None:
        if session.head not in self.renderers:
            raise KeyError(session.head)
        self.sessions[session.id] = session

    def remove(self, sid: str) -> Session | None:
        s = self.sessions.pop(sid, None)
        if s is not None:
            s.close()
        return s

    def pending(self) -> int:
        return sum(len(s.pending) for s in self.sessions.values())

    # ------------------------------------------------------------------ one tick
    def collect(self) -> list[Batch]:
        """Take the due frames: at most ``max_batch`` per head, one session at a time in turn
        (the starting session rotates every tick), each session's oldest frame first."""
        by_head: dict[str, list[Session]] = collections.defaultdict(list)
        for s in self.sessions.values():
            if s.pending and not s.closed:
                by_head[s.head].append(s)
        batches = []
        for head, sessions in by_head.items():
            r = self._rr[head] % len(sessions)
            self._rr[head] += 1
            queue = sessions[r:] + sessions[:r]
            items: list[tuple[Session, Pending]] = []
            while queue and len(items) < self.max_batch:
                nxt = []
                for s in queue:
                    if len(items) >= self.max_batch:
                        break
                    p = s.take_pending()
                    if p is None:
                        continue
                    items.append((s, p))
                    if s.pending:
                        nxt.append(s)
                queue = nxt
            # Frames of one session stay in order within the batch (the sender expects it).
            items.sort(key=lambda sp: (sp[0].id, sp[1].index))
            renderer = self.renderers[head]
            plan = DrivePlan.concat([renderer.plan(1, s.plan_offset + p.index) for s, p in items])
            windows = np.stack([p.window for _, p in items])
            batches.append(Batch(head, items, windows, plan, self.clock()))
        return batches

    def render(self, batch: Batch) -> Rendered:
        """One ``render_batch`` call on the head's device; frames copied to the host. Touches no
        session state (runs on the render thread)."""
        renderer = self.renderers[batch.head]
        dev = renderer.device
        t0 = self.clock()
        win = torch.as_tensor(batch.windows).to(dev, non_blocking=True)
        out = renderer.render_batch(win, batch.plan)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t1 = self.clock()
        frames = out.cpu().numpy()
        t2 = self.clock()
        return Rendered(frames, t0, t1, t2)

    def deliver(self, batch: Batch, rendered: Rendered) -> None:
        """Hand each frame to its session (sessions that left meanwhile are skipped)."""
        b = len(batch.items)
        for k, (s, p) in enumerate(batch.items):
            if self.sessions.get(s.id) is not s:
                continue
            s.deliver(FrameOut(p.index, rendered.frames[k], p.audio, p.t_in, p.t_final,
                               rendered.t_start, rendered.t_host, b))
        self.busy_s += rendered.t_host - rendered.t_start
        self.frames_rendered += b
        self.ticks.append({
            "head": batch.head, "size": b, "sessions": len({s.id for s, _ in batch.items}),
            "t": rendered.t_start, "render_s": rendered.t_device - rendered.t_start,
            "copy_s": rendered.t_host - rendered.t_device,
        })

    def fail(self, batch: Batch, error: BaseException) -> None:
        """A batch failed on the device: its sessions keep their sound and go on."""
        self.errors += 1
        log.error("render of %d frames of head %s failed: %s", len(batch.items), batch.head, error)
        for s, p in batch.items:
            s.render_failed(p)

    def tick(self) -> int:
        """collect + render + deliver on this thread (tests, benchmarks); frames rendered."""
        n = 0
        for batch in self.collect():
            self.deliver(batch, self.render(batch))
            n += len(batch.items)
        return n

    def stats(self, since_s: float = 5.0) -> dict:
        """Batch sizes and device time over the last ``since_s`` seconds."""
        now = self.clock()
        recent = [t for t in self.ticks if now - t["t"] <= since_s]
        busy = sum(t["render_s"] + t["copy_s"] for t in recent)
        return {
            "sessions": len(self.sessions),
            "batches": len(recent),
            "mean_batch": float(np.mean([t["size"] for t in recent])) if recent else 0.0,
            "max_batch": max((t["size"] for t in recent), default=0),
            "render_ms_p50": 1000.0 * float(np.median([t["render_s"] for t in recent])) if recent else 0.0,
            "device_busy": busy / since_s,
            "frames_rendered": self.frames_rendered,
            "errors": self.errors,
        }


class BatchLoop:
    """Runs the batcher's ticks on the event loop, rendering on one worker thread."""

    def __init__(self, batcher: Batcher):
        self.batcher = batcher
        self._wake = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="talkgs-render")
        self._task: asyncio.Task | None = None

    def wake(self) -> None:
        """Frames became due (sessions call this through ``on_pending``)."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="talkgs-batch-loop")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self.batcher.pending() == 0:
                self._wake.clear()
                await self._wake.wait()
                continue
            for batch in self.batcher.collect():
                try:
                    rendered = await loop.run_in_executor(self._executor, self.batcher.render, batch)
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # a failed batch must not stop the others' sessions
                    self.batcher.fail(batch, e)
                    continue
                self.batcher.deliver(batch, rendered)
