"""Per-frame audio features, registered by name.

A feature kind maps a 16 kHz mono signal and a number of video frames to one window of
features per frame, ``float32 [N, W, C]``, centred on the frame centre (see
``talkgs.conventions``). Kinds register themselves with :func:`register`; optional ones
name the modules they need (``requires``) so that :func:`available_kinds` lists only
those that can run here. Kinds: ``mel`` (numpy), ``phones`` and ``phones_mel``
(pocketsphinx), ``hubert`` (transformers, local weights), ``whisper`` and ``whisper_base``
(transformers, pinned weight packages), ``deepspeech`` and ``esperanto`` (import only, see
:func:`talkgs.audio.load_feature_file`).

A kind owns its extraction options: a frozen dataclass (``options``) whose fields are the
extractor's keyword arguments, with a docstring per field (``talkgs features`` shows them as
``--<kind>.<field>``) and an optional ``check(kind)`` that refuses bad values in one line
before anything heavy loads. Fields marked :data:`RUNTIME` say how the extraction runs (e.g.
the device), not what it computes, and are not recorded in a dataset's meta.json. Adding a
kind touches only this package: the commands, the dataset format and the TalkingGaussian
layout (``tg_files``) read everything from the registry.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Callable, Iterable

import numpy as np

from talkgs.conventions import SAMPLE_RATE
from talkgs.errors import AudioFeatureError

ExtractFn = Callable[..., np.ndarray]
# dataclasses.field metadata of an option that says how a kind runs, not what it computes.
RUNTIME = {"runtime": True}


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
    options: type | None = None  # frozen dataclass of the extractor's keyword options (module docstring)
    tg_files: tuple[str, ...] = ()  # the kind's files in the original TalkingGaussian layout, preferred first

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
    import_only: bool = False, options: type | None = None, tg_files: tuple[str, ...] = (),
) -> Callable[[ExtractFn], ExtractFn]:
    """Decorator registering ``fn(wav, n_frames, **opts)`` as feature kind ``name``; ``options``
    (a frozen dataclass) names and documents the ``opts`` a user may choose."""

    def deco(fn: ExtractFn) -> ExtractFn:
        if name in REGISTRY:
            raise ValueError(f"audio feature kind {name!r} is registered twice")
        if not name.isidentifier():
            raise ValueError(f"audio feature kind {name!r} must be an identifier (it names command-line options)")
        if options is not None and not (dataclasses.is_dataclass(options) and options.__dataclass_params__.frozen):
            raise ValueError(f"options of audio feature kind {name!r} must be a frozen dataclass")
        doc = description or (fn.__doc__ or "").strip().split("\n")[0]
        REGISTRY[name] = FeatureKind(name, int(window), int(channels), fn, doc, tuple(requires), import_only,
                                     options, tuple(tg_files))
        return fn

    return deco


def kinds_with_options() -> list[FeatureKind]:
    """Computable kinds that have options, by name (what ``talkgs features`` offers flags for)."""
    return [fk for _, fk in sorted(REGISTRY.items()) if fk.options is not None and not fk.import_only]


def options_of(kind: str, given=None):
    """The options of ``kind``: ``given`` (an instance of its options dataclass, or a dict of
    some of its fields) over the defaults; None for a kind without options."""
    fk = REGISTRY[kind] if kind in REGISTRY else get_kind(kind)
    if fk.options is None:
        if given:
            raise AudioFeatureError(f"audio feature kind {kind!r} has no options, got {given!r}")
        return None
    if isinstance(given, fk.options):
        return given
    names = {f.name for f in dataclasses.fields(fk.options)}
    unknown = sorted(set(given or {}) - names)
    if unknown:
        raise AudioFeatureError(f"audio feature kind {kind!r} has no option {unknown[0]!r} (it has: {', '.join(sorted(names))})")
    return fk.options(**(given or {}))


def recorded_options(opts) -> dict:
    """What a dataset's meta.json records of ``opts``: the options that were set (not None)
    and choose what is computed (not :data:`RUNTIME`), paths as strings."""
    if opts is None:
        return {}
    out = {}
    for f in dataclasses.fields(opts):
        v = getattr(opts, f.name)
        if v is not None and not f.metadata.get("runtime"):
            out[f.name] = str(v) if isinstance(v, os.PathLike) else v
    return out


def check_kinds(kinds: Iterable[str], computed: bool = True, options: dict | None = None) -> None:
    """One line for an unknown kind, and with ``computed`` for a kind that cannot be computed
    here (import only, requirements missing) or whose options (``options[kind]``, else the
    defaults) its ``check`` refuses. Imports nothing heavy."""
    for kind in kinds:
        fk = get_kind(kind) if computed else REGISTRY.get(kind)
        if fk is None:
            get_kind(kind)  # the "unknown kind" error, listing the known ones
        if not computed:
            continue
        if fk.import_only:
            raise AudioFeatureError(
                f"{kind} features cannot be computed here, only imported: talkgs features DATASET --kind {kind} --import FILE.npy"
            )
        opts = options_of(kind, (options or {}).get(kind))
        if opts is not None and hasattr(opts, "check"):
            opts.check(kind)


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
