"""Cross-session batching: the frames due for all live sessions of a head, in one device call.

Every tick, :meth:`Batcher.collect` takes the frames whose audio windows are final from the
sessions of each head (round robin over sessions, oldest frame first, at most ``max_batch``
per call: the renderer is fastest at batch 16-32), :meth:`Batcher.render` stacks their
windows ``[B, 8, W, C]`` and the matching slices of each session's own drive plan
(:meth:`talkgs.render.drive.DrivePlan.concat`) and calls ``render_batch`` once, and
:meth:`Batcher.deliver` hands each frame back to its session. N sessions therefore cost one
render of N frames per 40 ms instead of N renders of one frame.

Ticks are continuous: as soon as the device is free and some frame is due, the next batch
starts (:class:`BatchLoop`); a frame waits at most one batch for the device. A slow client
never stalls the others: nothing here waits on a session's sender (its frames beyond
``SessionLimits.max_out`` are dropped, see :class:`talkgs.serve.session.Session`), and a
session cannot take more than its share of a full batch.

Features whose model runs on the device (:class:`talkgs.audio.DeviceStream`: whisper, one
encoder window per frame) are batched the same way, as a first stage of each tick:
:meth:`Batcher.collect_features` takes every session's ready encoder inputs (grouped by the
streams' ``encode_key``: same encoder, same layout), :meth:`Batcher.encode` runs **one**
``encode`` call per group on the device, and :meth:`Batcher.accept_features` hands each
session its states, which become the windows it queues for rendering, all in the same tick.
A failed batched call is retried per session; a session whose own inputs fail ends (through
``Session.fail``), the others go on; a session that left meanwhile is skipped.

``collect*``, ``accept_features`` and ``deliver`` touch session state and run on the event
loop's thread; ``encode`` and ``render`` touch only the device and the batch, and run on one
worker thread (so the event loop keeps serving network traffic while the device works).
Everything but :class:`BatchLoop` is synchronous and testable without a network.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import itertools
import logging
import time
from typing import Callable, Hashable, Protocol

import numpy as np
import torch

from talkgs.conventions import SAMPLES_PER_FRAME
from talkgs.device import to_device_async
from talkgs.serve.session import FrameOut, Pending, Session
from talkgs.render.drive import DrivePlan
from talkgs.render.hostcopy import HostCopies

log = logging.getLogger("talkgs.serve")


class Renderer(Protocol):
    """What the batcher needs of a head (:class:`talkgs.render.renderer.HeadRenderer`)."""

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
class EncodeJob:
    """Encoder inputs of several sessions' device streams with one ``encode_key``, run in one call."""

    key: Hashable
    items: list[tuple[Session, int]]  # each session and its number of inputs, in ``inputs`` order
    inputs: np.ndarray  # [G, ...]
    t_collect: float


@dataclasses.dataclass
class Encoded:
    outputs: list[np.ndarray | BaseException]  # per item: its outputs [g, ...], or what failed
    t_start: float
    t_end: float
    failed_batch: BaseException | None = None


@dataclasses.dataclass
class InFlight:
    """A batch whose render and copy to the host are queued on the device (:meth:`Batcher.launch`)."""

    batch: Batch
    copy: tuple  # HostCopies.start's pending copy
    rendered: torch.cuda.Event | None  # the render's kernels are done (None off CUDA)
    t_start: float
    t_launched: float  # launch returned


@dataclasses.dataclass
class Rendered:
    frames: np.ndarray  # uint8 [B, H, W, 3] on the host
    t_start: float
    t_device: float  # the device finished (synchronised)
    t_host: float  # frames on the host
    gap_s: float = 0.0  # between launch and finish, spent on other work (the pipelined loop)


class Batcher:
    """Sessions of several heads; one render call per head per tick (see module docstring)."""

    def __init__(self, renderers: dict[str, Renderer], max_batch: int = 32, clock: Callable[[], float] = time.monotonic):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.renderers = renderers
        self._copies: dict[str, HostCopies] = {}  # made on a head's first batch
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
        self.encode_ticks: collections.deque[dict] = collections.deque(maxlen=2000)
        """Recent encoder calls: size (inputs), sessions, seconds."""

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

    def due(self) -> bool:
        """Some session has frames due for the device or encoder inputs ready."""
        return any(s.pending or s.features_due() for s in self.sessions.values())

    # ------------------------------------------------------------------ feature stage
    def collect_features(self) -> list[EncodeJob]:
        """Every session's ready encoder inputs, one job per ``encode_key``. A session whose
        stream fails here ends; the others go on."""
        by_key: dict[Hashable, list[tuple[Session, np.ndarray]]] = collections.defaultdict(list)
        for s in list(self.sessions.values()):
            if not s.features_due():
                continue
            try:
                x = s.take_inputs()
            except Exception as e:  # noqa: BLE001 - one session's audio must not stop the others
                self._session_failed(s, e)
                continue
            if x.shape[0]:
                by_key[s.stream.encode_key].append((s, x))
        now = self.clock()
        return [EncodeJob(k, [(s, x.shape[0]) for s, x in parts], np.concatenate([x for _, x in parts]), now)
                for k, parts in by_key.items()]

    def encode(self, job: EncodeJob) -> Encoded:
        """One ``encode`` call for the whole job (on the render thread; touches no session
        state); if it fails, one call per session, so one session's inputs cannot cost the
        others their frames."""
        t0 = self.clock()
        stream = job.items[0][0].stream  # every stream with this key runs the same encoder
        bounds = list(itertools.pairwise(np.cumsum([0] + [g for _, g in job.items])))
        failed = None
        try:
            out = stream.encode(job.inputs)  # on the host when it returns (synchronised)
            outputs: list = [out[a:b] for a, b in bounds]
        except Exception as e:  # noqa: BLE001 - retried per session below
            failed = e
            outputs = []
            for (s, _), (a, b) in zip(job.items, bounds):
                try:
                    outputs.append(s.stream.encode(job.inputs[a:b]))
                except Exception as e2:  # noqa: BLE001 - this session's own failure
                    outputs.append(e2)
        return Encoded(outputs, t0, self.clock(), failed)

    def accept_features(self, job: EncodeJob, enc: Encoded) -> int:
        """Hand each session its outputs (sessions that left meanwhile are skipped); frames
        that became final."""
        n = 0
        if enc.failed_batch is not None:
            self.errors += 1
            log.error("encoder call for %d inputs of %d sessions failed (retried per session): %s",
                      job.inputs.shape[0], len(job.items), enc.failed_batch)
        for (s, _), out in zip(job.items, enc.outputs):
            if self.sessions.get(s.id) is not s or s.closed:
                continue
            if isinstance(out, BaseException):
                self._session_failed(s, out)
                continue
            try:
                n += s.accept_features(out)
            except Exception as e:  # noqa: BLE001
                self._session_failed(s, e)
        self.busy_s += enc.t_end - enc.t_start
        self.encode_ticks.append({"size": int(job.inputs.shape[0]), "sessions": len(job.items),
                                  "t": enc.t_start, "encode_s": enc.t_end - enc.t_start})
        return n

    def _session_failed(self, s: Session, error: BaseException) -> None:
        msg = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        log.warning("session %s: audio features failed: %s", s.id, msg)
        self.errors += 1
        self.remove(s.id)
        s.fail(f"audio features failed: {msg}")

    # ------------------------------------------------------------------ warm-up
    def warm_up(self) -> float:
        """Run every batch shape a tick can produce once, on the calling thread (the render
        thread): on CUDA each new shape builds library plans (cuFFT for the log-mel, cuDNN for
        convolutions, cuBLAS) on its first call, tens of ms that otherwise land on live frames:
        the first frames of a burst of new sessions, and the slow tail of encoder calls at
        high load (measured, bench/serve.py). On the CPU there are no plans: one call each.
        Returns the seconds spent."""
        from talkgs.audio import DeviceStream, open_stream

        t0 = self.clock()
        seen: set = set()
        for head, r in self.renderers.items():
            cuda = r.device.type == "cuda"
            # Largest first: a smaller size's capture reuses the pool blocks a larger one freed
            # (ascending, no freed block is large enough and every size allocates its own).
            for b in range(self.max_batch, 0, -1) if cuda else [1]:
                # Through launch/finish, so each size's pinned host buffer is allocated here too.
                windows = np.zeros((b, r.audio_window, *r.feature_shape), np.float32)
                self.finish(self.launch(Batch(head, [], windows, r.plan(b), t0)))
            st = open_stream(r.audio_kind)
            if not isinstance(st, DeviceStream) or st.encode_key in seen:
                continue
            seen.add(st.encode_key)
            st.feed(np.zeros(4 * SAMPLES_PER_FRAME, np.float32))
            w = st.ready_windows()[:1]
            for g in range(st.max_encode_batch, 0, -1) if cuda else [1]:  # largest first, as above
                st.encode(np.repeat(w, g, axis=0))
        return self.clock() - t0

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
        return self.finish(self.launch(batch))

    def launch(self, batch: Batch) -> InFlight:
        """Queue one ``render_batch`` call and the copy of its frames to the host, without
        waiting for the device (on a CPU the render is done when this returns). Render thread."""
        renderer = self.renderers[batch.head]
        dev = renderer.device
        t0 = self.clock()
        win = to_device_async(torch.as_tensor(batch.windows), dev)  # pinned: a pageable copy waits for the queue
        out = renderer.render_batch(win, batch.plan)
        rendered = None
        if dev.type == "cuda":
            rendered = torch.cuda.Event()
            rendered.record()
        if batch.head not in self._copies:
            self._copies[batch.head] = HostCopies(dev)
        copy = self._copies[batch.head].start(out)
        return InFlight(batch, copy, rendered, t0, self.clock())

    def finish(self, flight: InFlight) -> Rendered:
        """Wait for a launched batch's frames on the host. Render thread."""
        t0 = self.clock()
        if flight.rendered is not None:
            flight.rendered.synchronize()
        t1 = self.clock()
        frames = HostCopies.finish(flight.copy)
        return Rendered(frames, flight.t_start, t1, self.clock(), gap_s=t0 - flight.t_launched)

    def deliver(self, batch: Batch, rendered: Rendered) -> None:
        """Hand each frame to its session (sessions that left meanwhile are skipped)."""
        b = len(batch.items)
        for k, (s, p) in enumerate(batch.items):
            if self.sessions.get(s.id) is not s:
                continue
            s.deliver(FrameOut(p.index, rendered.frames[k], p.audio, p.t_in, p.t_final,
                               rendered.t_start, rendered.t_host, b))
        # The render thread's time on this batch: launching, then waiting for it (not the gap).
        self.busy_s += rendered.t_host - rendered.t_start - rendered.gap_s
        self.frames_rendered += b
        self.ticks.append({
            "head": batch.head, "size": b, "sessions": len({s.id for s, _ in batch.items}),
            "t": rendered.t_start, "render_s": rendered.t_device - rendered.t_start - rendered.gap_s,
            "copy_s": rendered.t_host - rendered.t_device,
        })

    def fail(self, batch: Batch, error: BaseException) -> None:
        """A batch failed on the device: its sessions keep their sound and go on."""
        self.errors += 1
        log.error("render of %d frames of head %s failed: %s", len(batch.items), batch.head, error)
        for s, p in batch.items:
            s.render_failed(p)

    def tick(self) -> int:
        """The feature stage (collect, encode, accept) then collect + render + deliver, on this
        thread (tests, benchmarks); frames rendered."""
        for job in self.collect_features():
            self.accept_features(job, self.encode(job))
        n = 0
        for batch in self.collect():
            self.deliver(batch, self.render(batch))
            n += len(batch.items)
        return n

    def stats(self, since_s: float = 5.0) -> dict:
        """Batch sizes and device time over the last ``since_s`` seconds."""
        now = self.clock()
        recent = [t for t in self.ticks if now - t["t"] <= since_s]
        enc = [t for t in self.encode_ticks if now - t["t"] <= since_s]
        busy = sum(t["render_s"] + t["copy_s"] for t in recent) + sum(t["encode_s"] for t in enc)
        return {
            "sessions": len(self.sessions),
            "batches": len(recent),
            "mean_batch": float(np.mean([t["size"] for t in recent])) if recent else 0.0,
            "max_batch": max((t["size"] for t in recent), default=0),
            "render_ms_p50": 1000.0 * float(np.median([t["render_s"] for t in recent])) if recent else 0.0,
            "encode_calls": len(enc),
            "mean_encode_batch": float(np.mean([t["size"] for t in enc])) if enc else 0.0,
            "encode_ms_p50": 1000.0 * float(np.median([t["encode_s"] for t in enc])) if enc else 0.0,
            "device_busy": busy / since_s,
            "frames_rendered": self.frames_rendered,
            "errors": self.errors,
        }


class BatchLoop:
    """Runs the batcher's ticks on the event loop, rendering on one worker thread.

    ``pipelined``: a tick's batches are launched, and the previous tick's are collected and
    delivered only then, so the device renders one tick while the host prepares the next (its
    encoder call, collecting, delivering); frames then wait up to one more tick (a variant,
    bench/serve.py --pipelined)."""

    def __init__(self, batcher: Batcher, pipelined: bool = False):
        self.batcher = batcher
        self.pipelined = pipelined
        self._wake = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="talkgs-render")
        self._task: asyncio.Task | None = None
        self.warm_up_s: float | None = None

    def wake(self) -> None:
        """Frames became due (sessions call this through ``on_pending``)."""
        self._wake.set()

    def start(self, warm_up: bool = True) -> None:
        """Start ticking; ``warm_up`` first runs every batch shape once on the render thread
        (:meth:`Batcher.warm_up`; blocks the caller, ~3 s for a head on an H200: call it before
        serving)."""
        if warm_up:
            self.warm_up_s = self._executor.submit(self.batcher.warm_up).result()
            log.info("batch loop warmed up in %.2f s", self.warm_up_s)
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
        in_flight: list[InFlight] = []  # pipelined: the previous tick's batches, launched
        while True:
            if not in_flight and not self.batcher.due():
                self._wake.clear()
                await self._wake.wait()
                continue
            for job in self.batcher.collect_features():
                # encode() never raises (it reports failures per session); accept on this thread.
                enc = await loop.run_in_executor(self._executor, self.batcher.encode, job)
                self.batcher.accept_features(job, enc)
            launched = []
            for batch in self.batcher.collect():
                if not self.pipelined:
                    rendered = await self._device(loop, self.batcher.render, batch, batch)
                    if rendered is not None:
                        self.batcher.deliver(batch, rendered)
                elif (flight := await self._device(loop, self.batcher.launch, batch, batch)) is not None:
                    launched.append(flight)
            for flight in in_flight:
                rendered = await self._device(loop, self.batcher.finish, flight, flight.batch)
                if rendered is not None:
                    self.batcher.deliver(flight.batch, rendered)
            in_flight = launched

    async def _device(self, loop, fn, arg, batch: Batch):
        """``fn(arg)`` on the render thread; a failure fails ``batch`` alone (None)."""
        try:
            return await loop.run_in_executor(self._executor, fn, arg)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a failed batch must not stop the others' sessions
            self.batcher.fail(batch, e)
            return None
