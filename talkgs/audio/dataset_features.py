"""Add audio feature kinds to an existing dataset (``talkgs features``).

Computed kinds are extracted from ``DATASET/audio.wav``; with ``import_path`` one kind is
imported from a ``.npy`` file instead (:func:`talkgs.audio.imported.load_feature_file`).
Each kind is written as ``audio_<kind>.npy`` (float16, like ``talkgs prepare``) and recorded
in ``meta.json``'s ``audio.features``; both writes are atomic and nothing else in the
dataset changes. An existing kind is only replaced with ``force``.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from talkgs.data import format as fmt
from talkgs.errors import AudioFeatureError, DatasetError
from talkgs.fsutil import atomic_path, write_json

FLOAT16_MAX = float(np.finfo(np.float16).max)


def _save_float16(path: Path, arr: np.ndarray) -> None:
    big = float(np.abs(arr).max()) if arr.size else 0.0
    if not np.isfinite(big) or big > FLOAT16_MAX:
        raise AudioFeatureError(f"{path.name}: values up to {big:g} do not fit float16 storage")
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, arr.astype(np.float16))


def _accepts(fn, name: str) -> bool:
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def add_features(
    dataset: str | os.PathLike,
    kinds: Sequence[str],
    import_path: str | os.PathLike | None = None,
    force: bool = False,
    progress: bool = True,
    options: dict[str, dict] | None = None,
) -> dict[str, dict]:
    """Compute (or, with ``import_path``, import) ``kinds`` into ``dataset``.

    ``options`` maps a kind to its options (an instance of the kind's options dataclass, or a
    dict of some of its fields, e.g. ``{"hubert": {"model": DIR}}``); meta.json records the
    options each kind was computed with (:func:`talkgs.audio.registry.recorded_options`).
    Returns ``{kind: {"file", "shape", "seconds"}}``.
    Every kind is checked before any work starts: unknown or unavailable kinds, and kinds
    already present without ``force``, are one-line errors and leave the dataset untouched.
    """
    from talkgs.audio.registry import REGISTRY, get_kind, options_of, recorded_options

    root = Path(dataset)
    meta = fmt.read_meta(root)
    n = int(meta["n_frames"])
    kinds = list(dict.fromkeys(kinds))
    if not kinds:
        raise AudioFeatureError("no feature kind given (e.g. --kind phones)")
    if import_path is not None:
        if len(kinds) != 1:
            raise AudioFeatureError(f"--import reads one kind from one file, got {len(kinds)} kinds ({', '.join(kinds)})")
        if kinds[0] not in REGISTRY:
            get_kind(kinds[0])  # unknown kind: the error lists the known ones
    else:
        for kind in kinds:
            get_kind(kind)  # unknown, or its requirements are missing
    have = meta.get("audio", {}).get("features", {})
    if not force:
        present = [k for k in kinds if k in have or (root / fmt.audio_feature_file(k)).exists()]
        if present:
            raise DatasetError(
                f"dataset {root} already has {', '.join(present)} audio features; use --force to replace them"
            )

    wav = None
    results: dict[str, dict] = {}
    for kind in kinds:
        t0 = time.perf_counter()
        if import_path is not None:
            from talkgs.audio.imported import load_feature_file

            feats = load_feature_file(import_path, kind, n_frames=n)
        else:
            from talkgs.audio.registry import extract

            if wav is None:
                from talkgs.media import read_wav

                wav, sr = read_wav(root / fmt.AUDIO)
                if sr != 16000:
                    raise DatasetError(f"{root / fmt.AUDIO} is {sr} Hz; a talkgs dataset stores 16 kHz audio")
            chosen = options_of(kind, (options or {}).get(kind))
            opts = dataclasses.asdict(chosen) if chosen is not None else {}
            if progress and _accepts(REGISTRY[kind].extract, "progress"):
                opts.setdefault("progress", True)
            feats = extract(kind, wav, n, **opts)
        path = root / fmt.audio_feature_file(kind)
        _save_float16(path, feats)
        # Re-read meta.json right before writing it: only this kind's entry changes.
        meta = json.loads((root / fmt.META).read_text())
        audio = meta.setdefault("audio", {"sample_rate": 16000, "features": {}})
        entry = {"file": path.name, "shape": list(feats.shape)}
        recorded = recorded_options(chosen) if import_path is None else {}
        if recorded:
            entry["options"] = recorded  # e.g. a non-default model or layer: the run copies them
        if import_path is not None:
            entry["from"] = "imported"  # as talkgs.interop.import_tg marks imported kinds
        audio.setdefault("features", {})[kind] = entry
        write_json(root / fmt.META, meta)
        results[kind] = {"file": path.name, "shape": list(feats.shape), "seconds": time.perf_counter() - t0}
    return results
