"""Per-frame audio features for the audio-driven deformation, by registered kind.

``extract(kind, wav [S] float32 16 kHz, n_frames) -> float32 [N, W, C]``: one window per
video frame, centred on the frame centre, zero-padded at the ends. Kinds: see
``available_kinds()``; ``mel`` is built in (numpy only, runs everywhere).
"""

from talkgs.audio.registry import REGISTRY, FeatureKind, available_kinds, extract, get_kind, register
from talkgs.audio import mel as _mel  # noqa: F401  (registers the "mel" kind)
from talkgs.audio.mel import MelStream, extract_mel, mel_windows

__all__ = [
    "REGISTRY",
    "FeatureKind",
    "MelStream",
    "available_kinds",
    "extract",
    "extract_mel",
    "get_kind",
    "mel_windows",
    "register",
]
