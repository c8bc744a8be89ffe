"""Streaming audio features: the per-kind protocol that live input goes through.

A :class:`FeatureStream` turns mono 16 kHz float32 audio arriving in chunks of any size into
the per-frame feature windows ``[n, W, C]`` of one kind, each as soon as it is final, i.e.
equal to what :func:`talkgs.audio.extract` gives for the same frame of the whole audio (the
Whisper kinds' streams cannot see the audio after their lookahead, so theirs are close to it
instead, as measured in :mod:`talkgs.audio.whisper`):

- ``push(chunk [S]) -> [n, W, C]``: the frames that became final with this chunk;
- ``flush(n_frames=None) -> [m, W, C]``: end of input, the remaining frames (the clip's end
  padded as ``extract`` pads it); the stream is closed afterwards;
- ``lookahead_ms``: how much audio past a frame's own end (``640 (i + 1)`` samples) must
  have arrived before frame i is final; the fixed delay the kind adds to live output;
- ``kind``, ``window``, ``channels``, ``frames_emitted``, ``samples_received``.

Memory must stay bounded whatever the stream's length. Kinds that can stream register a
factory with :func:`register_stream`; :func:`open_stream` makes one for a run's kind, or
says in one line that the kind cannot stream (e.g. ``hubert``, whose encoder looks at whole
20 s chunks). The server only uses this protocol, so a new streaming kind plugs in here
without touching it. A kind whose
features need a model on the device (whisper) is also a :class:`DeviceStream`: the server
then runs that model once per tick for all sessions' streams instead of once per stream.
"""

from __future__ import annotations

from typing import Callable, Hashable, Protocol, runtime_checkable

import numpy as np

from talkgs.errors import AudioFeatureError


@runtime_checkable
class FeatureStream(Protocol):
    """Per-frame features of one kind for audio arriving in chunks (see module docstring)."""

    kind: str
    window: int
    channels: int
    lookahead_ms: float
    # Optional ``frames_per_step: int``: frames that become final together (default 1; whisper:
    # its hop). The server sizes its per-session queues by it.

    @property
    def frames_emitted(self) -> int: ...

    @property
    def samples_received(self) -> int: ...

    def push(self, chunk: np.ndarray) -> np.ndarray: ...

    def flush(self, n_frames: int | None = None) -> np.ndarray: ...


@runtime_checkable
class DeviceStream(FeatureStream, Protocol):
    """A :class:`FeatureStream` whose features come from a model run on the device (whisper),
    in two phases so that a server runs the model once for many streams: ``feed`` stores
    audio; ``ready_windows()`` hands out the model inputs ``[G, ...]`` that became final (each
    once, in order); ``encode(inputs)`` runs the model on the inputs of any streams with an
    equal ``encode_key`` at once (results do not depend on the batching); ``accept(outputs)``
    turns the outputs of the oldest ``len(outputs)`` inputs handed out into the frames' windows
    ``[n, W, C]``. ``end_input`` ends the input, ``finished`` says every frame was emitted,
    ``frames_ready()`` how many frames ``ready_windows`` would hand out, ``skip(n)`` drops the
    oldest ready frames uncomputed (a server catching up). ``push``/``flush`` are the same
    steps in one go, for single-stream users. ``encode`` runs the model on at most
    ``max_encode_batch`` inputs per call (more are split), so a server can run every input
    shape once before serving."""

    @property
    def encode_key(self) -> Hashable: ...

    @property
    def max_encode_batch(self) -> int: ...

    @property
    def finished(self) -> bool: ...

    def feed(self, chunk: np.ndarray) -> None: ...

    def end_input(self, n_frames: int | None = None) -> None: ...

    def frames_ready(self) -> int: ...

    def ready_windows(self, max_groups: int | None = None) -> np.ndarray: ...

    def encode(self, windows: np.ndarray) -> np.ndarray: ...

    def accept(self, states: np.ndarray) -> np.ndarray: ...

    def skip(self, n: int) -> int: ...


def checked_chunk(name: str, closed: bool, chunk) -> np.ndarray:
    """A pushed chunk as float32 ``[S]``; one-line errors for a push after flush or a chunk that
    is not mono (shared by every stream's ``push``)."""
    if closed:
        raise AudioFeatureError(f"{name} stream: push() after flush()")
    chunk = np.asarray(chunk, dtype=np.float32)
    if chunk.ndim != 1:
        raise AudioFeatureError(f"{name} stream: chunk must be mono [S], got shape {tuple(chunk.shape)}")
    return chunk


STREAMS: dict[str, Callable[[], FeatureStream]] = {}


def register_stream(kind: str) -> Callable:
    """Decorator registering a zero-argument factory (e.g. a class) of :class:`FeatureStream`
    for ``kind``."""

    def deco(factory: Callable[[], FeatureStream]):
        if kind in STREAMS:
            raise ValueError(f"a feature stream for {kind!r} is registered twice")
        STREAMS[kind] = factory
        return factory

    return deco


def stream_kinds() -> list[str]:
    """Kinds that can be computed incrementally, sorted."""
    return sorted(STREAMS)


def open_stream(kind: str) -> FeatureStream:
    """A new :class:`FeatureStream` of ``kind``; AudioFeatureError when ``kind`` cannot stream."""
    if kind not in STREAMS:
        known = ", ".join(stream_kinds()) or "none"
        raise AudioFeatureError(
            f"audio feature kind {kind!r} cannot be computed from live audio (streaming kinds: {known})"
        )
    return STREAMS[kind]()
