"""Per-frame audio features, registered by name.

A feature kind maps a 16 kHz mono signal and a number of video frames to one window of
features per frame, ``float32 [N, W, C]``, centred on the frame centre (see
``talkgs.conventions``). Kinds register themselves with :func:`register`; optional ones
name the modules they need (``requires``) so that :func:`available_kinds` lists only
those that can run here. Kinds: ``mel`` (numpy), ``phones`` and ``phones_mel``
(pocketsphinx), ``hubert`` (transformers, local weights), ``whisper`` and ``whisper_base``
(transformers, pinned weight packages) and ``deepspeech`` (import only, see
:func:`talkgs.audio.load_feature_file`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import Callable

import numpy as np

from talkgs.conventions import SAMPLE_RATE
from talkgs.errors import AudioFeatureError

ExtractFn = Callable[..., np.ndarray]


@dataclasses.dataclass(frozen=True)
class FeatureKind:
    """A registered feature: ``extract(wav [S], n_frames, **opts) -> [n_frames, window, channels]``."""

    name: str
    window: int
    channels: int
    extract: ExtractFn
    description: str = ""
    requires: tuple[str, ...] = ()
    import_only: bool = False  # computed elsewhere; only `talkgs features --import` stores it

    @property
    def shape(self) -> tuple[int, int]:
        """Per-frame feature shape ``(W, C)``."""
        return (self.window, self.channels)

    def missing(self) -> list[str]:
        """Required modules that are not importable here."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]


REGISTRY: dict[str, FeatureKind] = {}


def register(
    name: str, *, window: int, channels: int, description: str = "", requires: tuple[str, ...] = (),
    import_only: bool = False,
) -> Callable[[ExtractFn], ExtractFn]:
    """Decorator registering ``fn(wav, n_frames, **opts)`` as feature kind ``name``."""

    def deco(fn: ExtractFn) -> ExtractFn:
        if name in REGISTRY:
            raise ValueError(f"audio feature kind {name!r} is registered twice")
        doc = description or (fn.__doc__ or "").strip().split("\n")[0]
        REGISTRY[name] = FeatureKind(name, int(window), int(channels), fn, doc, tuple(requires), import_only)
        return fn

    return deco


def available_kinds() -> list[str]:
    """Names of the registered kinds whose required modules are installed, sorted."""
    return sorted(k for k, v in REGISTRY.items() if not v.missing())


def get_kind(kind: str) -> FeatureKind:
    """The registered :class:`FeatureKind`; AudioFeatureError for an unknown or unavailable one."""
    if kind not in REGISTRY:
        known = ", ".join(sorted(REGISTRY)) or "none"
        raise AudioFeatureError(f"unknown audio feature kind {kind!r}; known kinds: {known}")
    fk = REGISTRY[kind]
    missing = fk.missing()
    if missing:
        raise AudioFeatureError(f"audio feature kind {kind!r} needs {', '.join(missing)}, which is not installed")
    return fk


def extract(kind: str, wav: np.ndarray, n_frames: int, **opts) -> np.ndarray:
    """Features ``float32 [n_frames, W, C]`` of kind ``kind`` for mono 16 kHz ``wav [S]``.

    There is exactly one window per video frame whatever the signal length (the signal is
    zero-padded or trimmed to n_frames * 640 samples). ``opts`` go to the kind's extractor.
    """
    fk = get_kind(kind)
    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise AudioFeatureError(f"{kind}: audio must be mono [S], got shape {tuple(wav.shape)}")
    if not np.issubdtype(wav.dtype, np.floating):
        raise AudioFeatureError(f"{kind}: audio must be float in [-1, 1], got {wav.dtype}")
    if int(n_frames) != n_frames or n_frames < 0:
        raise AudioFeatureError(f"{kind}: n_frames must be a non-negative integer, got {n_frames}")
    opts = dict(opts)
    sr = opts.pop("sample_rate", SAMPLE_RATE)
    if sr != SAMPLE_RATE:
        raise AudioFeatureError(f"{kind}: audio must be {SAMPLE_RATE} Hz, got {sr} Hz (resample first)")
    out = fk.extract(wav.astype(np.float32, copy=False), int(n_frames), **opts)
    expected = (int(n_frames), fk.window, fk.channels)
    if out.shape != expected:
        raise AudioFeatureError(f"{kind}: extractor returned shape {out.shape}, expected {expected}")
    return out.astype(np.float32, copy=False)
