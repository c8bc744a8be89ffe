"""Per-frame audio features for the audio-driven deformation, by registered kind.

``extract(kind, wav [S] float32 16 kHz, n_frames) -> float32 [N, W, C]``: one window per
video frame, centred on the frame centre, zero-padded at the ends. Kinds: see
``available_kinds()``; ``mel`` is built in (numpy only, runs everywhere). ``phones`` and
``phones_mel`` need pocketsphinx, ``hubert`` needs transformers and local weights,
``whisper`` / ``whisper_base`` need transformers and the hash-pinned weight packages (or local
weights), ``deepspeech`` and ``esperanto`` can only be imported (``load_feature_file``). Importing
this package registers every kind without importing pocketsphinx or transformers.

Live input goes through ``open_stream(kind)`` (:mod:`talkgs.audio.stream`): push 16 kHz
chunks, get each frame's window as soon as it is final; ``mel`` (``MelStream``, equal to
``extract``), ``whisper`` and ``whisper_base`` (``WhisperStream``, close to ``extract``) stream.
"""

from talkgs.audio.registry import (
    REGISTRY, RUNTIME, FeatureKind, available_kinds, check_kinds, extract, get_kind, options_of, recorded_options, register,
)
from talkgs.audio.stream import DeviceStream, FeatureStream, open_stream, register_stream, stream_kinds
from talkgs.audio import mel as _mel  # noqa: F401  (registers the "mel" kind)
from talkgs.audio.mel import MelStream, extract_mel, mel_windows
from talkgs.audio import phones as _phones  # noqa: F401  (registers "phones", "phones_mel")
from talkgs.audio import hubert as _hubert  # noqa: F401  (registers "hubert")
from talkgs.audio import whisper as _whisper  # noqa: F401  (registers "whisper", "whisper_base")
from talkgs.audio.whisper import WhisperStream
from talkgs.audio import imported as _imported  # noqa: F401  (registers "deepspeech", "esperanto")
from talkgs.audio.imported import load_feature_file

__all__ = [
    "REGISTRY",
    "RUNTIME",
    "DeviceStream",
    "FeatureKind",
    "FeatureStream",
    "MelStream",
    "WhisperStream",
    "available_kinds",
    "check_kinds",
    "extract",
    "extract_mel",
    "get_kind",
    "load_feature_file",
    "mel_windows",
    "open_stream",
    "options_of",
    "recorded_options",
    "register",
    "register_stream",
    "stream_kinds",
]
