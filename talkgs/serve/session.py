"""One live session: its audio in, its feature stream, its clock, its frames out (pure, no I/O).

Clock: a session's timeline is its own input audio. Video frame i says input samples
``[640 i, 640 (i + 1))`` (talkgs.conventions); it can be rendered once its window of
features is final (:class:`talkgs.render.windows.FrameWindows` over the kind's
:class:`talkgs.audio.FeatureStream`): for ``mel`` once 182.5 ms of audio past the frame's end
has arrived, for ``whisper`` 160 ms (40 + 120 ms) plus the encoder run. A ``mel`` stream's
features are computed in :meth:`Session.push_audio`; a :class:`talkgs.audio.DeviceStream`'s
(whisper) encoder runs are batched across sessions by the batcher (:meth:`take_inputs`, then
:meth:`accept_features` with the states). Frames are rendered by the
:class:`talkgs.serve.batcher.Batcher` together with other sessions' frames and come back
through :meth:`Session.deliver`.

Audio out is the session's own input audio, released frame by frame when the frame that says
it is sent (or dropped): the sender emits a frame's picture and its 40 ms of sound together,
so lips and sound leave the server in sync whatever the render delay, and a dropped picture
never drops sound.

Bounds (memory and latency per session, whatever the client does):
- features: the stream keeps ~1.2k samples (mel) or history + lookahead (whisper: ~5.1 s),
  the windows ``size - 1`` frames; a device stream whose ready frames exceed ``max_pending``
  (the device fell behind) skips the oldest uncomputed (their sound still goes out) and
  restarts its windows after them, as at a clip's start;
- ``max_pending`` frames waiting for the device (beyond: the oldest are skipped, their sound
  still goes out);
- ``max_out`` rendered frames waiting for the sender (a slow sender: the oldest are dropped);
- ``max_audio_out_s`` of sound waiting for the audio sender (beyond: the oldest is dropped);
- latency statistics over the last ``stats_window`` frames.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import Callable

import numpy as np

from talkgs.audio.stream import DeviceStream, FeatureStream
from talkgs.conventions import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from talkgs.errors import TalkgsError
from talkgs.render.windows import FrameWindows

STAGES = ("lookahead", "queue", "render", "send_wait", "total")
"""Per-frame latency stages, each in seconds: ``lookahead`` (the frame's centre audio sample
arrived -> its feature window is final: the kind's lookahead and the model's window, plus
the feature computation), ``queue`` (final -> its batch starts on the device), ``render``
(the batch: audio code, deformation, rasterisation, compositing, copy to host), ``send_wait``
(on the host -> taken by the sender) and ``total`` (centre sample in -> frame to the encoder)."""


@dataclasses.dataclass(frozen=True)
class SessionLimits:
    """Bounds of one session (memory and latency)."""

    max_pending: int = 6
    """Frames waiting for the device (240 ms): beyond, the oldest are skipped (their sound still
    goes out), so a device that falls behind catches up instead of piling up latency and ever
    larger, ever slower batches."""
    max_out: int = 3
    """Rendered frames waiting for the sender (120 ms); beyond, the oldest are dropped."""
    max_audio_out_s: float = 1.0
    """Sound waiting for the audio sender; beyond, the oldest is dropped."""
    max_chunk_s: float = 1.0
    """Longest audio chunk accepted at once (a WebRTC packet holds 10-60 ms)."""
    stats_window: int = 250
    """Frames the latency statistics look back over (10 s)."""


@dataclasses.dataclass
class Pending:
    """A frame whose window is final, waiting for the device."""

    index: int
    window: np.ndarray  # float32 [size, W, C]
    audio: np.ndarray  # int16 [640]
    t_in: float  # the frame's centre audio sample arrived
    t_final: float  # its window became final


@dataclasses.dataclass
class FrameOut:
    """A rendered frame on the host, with the sound it says and its timings."""

    index: int
    image: np.ndarray  # uint8 [H, W, 3]
    audio: np.ndarray  # int16 [640]
    t_in: float
    t_final: float
    t_start: float  # its batch started on the device
    t_host: float  # its batch was on the host
    batch: int  # frames in its batch


def _to_int16(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, -1.0, 1.0) * 32767.0).round().astype(np.int16)


class Session:
    """A live session of one head: push audio in, get its rendered frames and sound out.

    Not thread-safe: call it from one thread (the server's event loop); only the batcher's
    render step runs elsewhere, and it touches no session state.
    """

    def __init__(
        self,
        sid: str,
        head: str,
        stream: FeatureStream,
        window_size: int,
        limits: SessionLimits = SessionLimits(),
        clock: Callable[[], float] = time.monotonic,
        plan_offset: int = 0,
    ):
        self.id = sid
        self.head = head
        self.stream = stream
        self.windows = FrameWindows(window_size, (stream.window, stream.channels))
        self._win_base = 0  # session frame of the windows' frame 0 (moves when a device stream skips)
        self.device_stream = isinstance(stream, DeviceStream)
        """Its features come from a model the batcher runs for all sessions (whisper)."""
        self._ending = False  # end_audio() was called (device streams: the tail is still to come)
        # A stream that finalises frames in steps of k (e.g. whisper with hop 5) hands the device k frames at
        # once, and the device hands the sender k at once: both queues must hold a step, or
        # frames are skipped/dropped on every step (measured: 15 of 25 fps sent with k = 5).
        step = max(1, int(getattr(stream, "frames_per_step", 1)))
        limits = dataclasses.replace(
            limits,
            max_pending=limits.max_pending + step - 1,
            max_out=limits.max_out + step - 1,
        )
        self.limits = limits
        self.clock = clock
        self.plan_offset = int(plan_offset)
        """Position of frame 0 in the head's drive plan (pose, eyes, torso)."""
        self.lookahead_ms = stream.lookahead_ms + 1000.0 * self.windows.ahead / FPS
        """Audio past a frame's end needed before it can be rendered (mel: 182.5 ms, whisper: 160 ms)."""
        self.pending: collections.deque[Pending] = collections.deque()
        self.out: collections.deque[FrameOut] = collections.deque()
        self._audio_out: collections.deque[np.ndarray] = collections.deque()
        self._audio_out_n = 0
        self._audio_out_pts = 0  # sample index of the next sound to go out
        # Sound leaves in frame order: a frame's sound waits here until every earlier frame's has gone.
        self._audio_gate: dict[int, np.ndarray] = {}
        self._audio_next = 0
        # Input samples not yet handed to a final frame, from absolute sample _hist_start.
        self._hist = np.zeros(0, np.float32)
        self._hist_start = 0
        self._arrivals: collections.deque[tuple[int, float]] = collections.deque()  # (chunk end, time)
        self.samples_in = 0
        self.closed = False
        self.on_pending: Callable[[], None] | None = None
        """Called when frames became final (wakes the batch loop)."""
        self.on_frame: Callable[[], None] | None = None
        """Called when a rendered frame arrived (wakes the sender)."""
        self.on_audio: Callable[[], None] | None = None
        """Called when sound was released (wakes the audio sender)."""
        self.on_error: Callable[[str], None] | None = None
        """Called when the session's features failed (the server closes the session)."""
        self.t_created = clock()
        self.t_first_audio: float | None = None
        self.t_last_audio: float | None = None
        self.t_first_sent: float | None = None
        self.counts = collections.Counter()
        self.stages: dict[str, collections.deque[float]] = {
            k: collections.deque(maxlen=limits.stats_window) for k in STAGES
        }
        self._sent_times: collections.deque[float] = collections.deque(maxlen=2 * FPS)

    # ------------------------------------------------------------------ audio in
    def push_audio(self, samples: np.ndarray, t: float | None = None) -> int:
        """Add mono 16 kHz float32 samples ``[S]`` that arrived at time ``t`` (default: now);
        returns the number of frames that became final (device streams: 0, their frames become
        final when the batcher hands back their states)."""
        if self.closed:
            return 0
        x = np.asarray(samples)
        if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
            raise TalkgsError(f"session {self.id}: audio must be mono float samples, got {x.dtype} {tuple(x.shape)}")
        if x.shape[0] > self.limits.max_chunk_s * SAMPLE_RATE:
            raise TalkgsError(f"session {self.id}: an audio chunk of {x.shape[0]} samples is longer than {self.limits.max_chunk_s} s")
        x = np.nan_to_num(x.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
        t = self.clock() if t is None else t
        if self.t_first_audio is None:
            self.t_first_audio = t
        self.t_last_audio = t
        self.samples_in += x.shape[0]
        self._arrivals.append((self.samples_in, t))
        self._hist = np.concatenate([self._hist, x])
        if self.device_stream:
            self.stream.feed(x)
            if self.stream.frames_ready() and self.on_pending is not None:
                self.on_pending()
            return 0
        first, wins = self.windows.push(self.stream.push(x))
        return self._add_pending(first, wins)

    def end_audio(self) -> int:
        """The input ended: the remaining frames become final (the end padded as silence);
        device streams: they become ready for the batcher."""
        if self.closed or self._ending or self.stream.frames_emitted == 0 and self.samples_in == 0:
            return 0
        self._ending = True
        if self.device_stream:
            self.stream.end_input()
            n = self._flush_windows() if self.stream.finished else 0
            if self.on_pending is not None:
                self.on_pending()
            return n
        first, wins = self.windows.push(self.stream.flush())
        n = self._add_pending(first, wins)
        return n + self._flush_windows()

    def _flush_windows(self) -> int:
        first, wins = self.windows.flush()
        return self._add_pending(first, wins)

    # ------------------------------------------------------------------ device features (batcher side)
    def features_due(self) -> bool:
        """A device stream has encoder inputs ready."""
        return self.device_stream and not self.closed and self.stream.frames_ready() > 0

    def take_inputs(self) -> np.ndarray:
        """The device stream's encoder inputs ``[G, ...]`` that became ready, oldest first. A
        backlog beyond ``max_pending`` frames (the device fell behind) is skipped first."""
        st = self.stream
        excess = st.frames_ready() - self.limits.max_pending
        if excess > 0:
            k = st.skip(excess)
            if k:
                # Frames whose features are in the windows but not out yet are lost with them.
                self._skip_frames(self._win_base + self.windows.frames_emitted, st.frames_emitted)
                self.windows = FrameWindows(self.windows.size, self.windows.shape)
                self._win_base = st.frames_emitted
        return st.ready_windows()

    def accept_features(self, states: np.ndarray) -> int:
        """The device's outputs for the inputs taken last (:meth:`take_inputs`); returns the
        frames that became final."""
        if self.closed:
            return 0
        first, wins = self.windows.push(self.stream.accept(states))
        n = self._add_pending(first, wins)
        if self._ending and self.stream.finished:
            n += self._flush_windows()
        return n

    def fail(self, reason: str) -> None:
        """The session's features failed: it ends (through ``on_error``, the server's close)."""
        self.counts["feature_errors"] += 1
        if self.on_error is not None:
            self.on_error(reason)

    def _arrival(self, sample: int) -> float:
        """Arrival time of an input sample (of the chunk that held it)."""
        for end, t in self._arrivals:
            if sample < end:
                return t
        return self._arrivals[-1][1] if self._arrivals else self.clock()

    def _frame_audio(self, i: int) -> np.ndarray:
        """Frame i's input sound, int16 ``[640]``."""
        a = SAMPLES_PER_FRAME * i - self._hist_start
        audio = self._hist[max(a, 0) : max(a + SAMPLES_PER_FRAME, 0)]
        if audio.shape[0] < SAMPLES_PER_FRAME:  # the input's last, partial frame
            audio = np.pad(audio, (0, SAMPLES_PER_FRAME - audio.shape[0]))
        return _to_int16(audio)

    def _forget_before(self, frame: int) -> None:
        """Forget input audio and arrival times no frame from ``frame`` on needs."""
        keep = SAMPLES_PER_FRAME * frame - self._hist_start
        if keep > 0:
            self._hist = self._hist[keep:]
            self._hist_start += keep
        while len(self._arrivals) > 1 and self._arrivals[0][0] <= self._hist_start:
            self._arrivals.popleft()

    def _skip_frames(self, a: int, b: int) -> None:
        """Frames [a, b) will never be rendered: their sound goes out."""
        for i in range(a, b):
            self._release_audio(i, self._frame_audio(i))
        self.counts["skipped"] += max(b - a, 0)
        self._forget_before(b)

    def _add_pending(self, first: int, wins: np.ndarray) -> int:
        n = wins.shape[0]
        if n == 0:
            return 0
        first += self._win_base
        now = self.clock()
        for j in range(n):
            i = first + j
            t_in = self._arrival(SAMPLES_PER_FRAME * i + SAMPLES_PER_FRAME // 2)
            self.pending.append(Pending(i, wins[j], self._frame_audio(i), t_in, now))
        self.counts["final"] += n
        self._forget_before(first + n)
        while len(self.pending) > self.limits.max_pending:
            p = self.pending.popleft()
            self._release_audio(p.index, p.audio)
            self.counts["skipped"] += 1
        if self.on_pending is not None:
            self.on_pending()
        return n

    # ------------------------------------------------------------------ batcher side
    def take_pending(self) -> Pending | None:
        return self.pending.popleft() if self.pending else None

    def deliver(self, frame: FrameOut) -> None:
        """A rendered frame is on the host (called by the batcher)."""
        if self.closed:
            return
        while len(self.out) >= self.limits.max_out:
            old = self.out.popleft()
            self._release_audio(old.index, old.audio)
            self.counts["dropped"] += 1
        self.out.append(frame)
        self.counts["rendered"] += 1
        if self.on_frame is not None:
            self.on_frame()

    def render_failed(self, p: Pending) -> None:
        """A frame's batch failed on the device: its sound still goes out."""
        if not self.closed:
            self._release_audio(p.index, p.audio)
            self.counts["failed"] += 1

    # ------------------------------------------------------------------ sender side
    def take_frame(self) -> FrameOut | None:
        """The next frame to send (oldest first), its sound released to the audio sender."""
        if not self.out:
            return None
        f = self.out.popleft()
        now = self.clock()
        self._release_audio(f.index, f.audio)
        self.counts["sent"] += 1
        if self.t_first_sent is None:
            self.t_first_sent = now
        self._sent_times.append(now)
        for k, v in zip(STAGES, (f.t_final - f.t_in, f.t_start - f.t_final, f.t_host - f.t_start,
                                 now - f.t_host, now - f.t_in)):
            self.stages[k].append(v)
        return f

    def _release_audio(self, index: int, audio: np.ndarray) -> None:
        self._audio_gate[index] = audio
        released = False
        while self._audio_next in self._audio_gate:
            a = self._audio_gate.pop(self._audio_next)
            self._audio_next += 1
            self._audio_out.append(a)
            self._audio_out_n += a.shape[0]
            released = True
        if not released:
            return
        cap = int(self.limits.max_audio_out_s * SAMPLE_RATE)
        while self._audio_out_n > cap:
            old = self._audio_out.popleft()
            self._audio_out_n -= old.shape[0]
            self._audio_out_pts += old.shape[0]
            self.counts["audio_dropped"] += old.shape[0]
        if self.on_audio is not None:
            self.on_audio()

    def audio_available(self) -> int:
        return self._audio_out_n

    def take_audio(self, n: int) -> tuple[int, np.ndarray] | None:
        """``(pts, int16 [n])``: the next ``n`` samples of sound to send (pts in samples of the
        session's timeline), or None while fewer are waiting."""
        if self._audio_out_n < n:
            return None
        parts, got = [], 0
        while got < n:
            a = self._audio_out[0]
            k = min(n - got, a.shape[0])
            parts.append(a[:k])
            if k == a.shape[0]:
                self._audio_out.popleft()
            else:
                self._audio_out[0] = a[k:]
            got += k
        self._audio_out_n -= n
        pts = self._audio_out_pts
        self._audio_out_pts += n
        return pts, np.concatenate(parts)

    # ------------------------------------------------------------------ stats
    def fps(self, now: float | None = None) -> float:
        """Frames sent over the last second."""
        now = self.clock() if now is None else now
        return float(sum(1 for t in self._sent_times if now - t <= 1.0))

    def latency_ms(self) -> dict[str, dict[str, float]]:
        """p50 / p95 per stage (ms) over the last frames sent."""
        out = {}
        for k, v in self.stages.items():
            if v:
                a = np.asarray(v) * 1000.0
                out[k] = {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95))}
        return out

    def summary(self) -> dict:
        first = None
        if self.t_first_sent is not None and self.t_first_audio is not None:
            first = 1000.0 * (self.t_first_sent - self.t_first_audio)
        return {
            "session": self.id,
            "head": self.head,
            "fps": self.fps(),
            "first_frame_ms": first,
            "lookahead_ms": self.lookahead_ms,
            "latency_ms": self.latency_ms(),
            "counts": dict(self.counts),
            "pending": len(self.pending),
            "out": len(self.out),
            "audio_out_ms": 1000.0 * self._audio_out_n / SAMPLE_RATE,
            "audio_in_s": self.samples_in / SAMPLE_RATE,
        }

    def close(self) -> None:
        self.closed = True
        self.pending.clear()
        self.out.clear()
        self._audio_out.clear()
        self._audio_gate.clear()
        self._audio_out_n = 0
        self._hist = np.zeros(0, np.float32)
        for cb in (self.on_frame, self.on_audio):
            if cb is not None:
                cb()
