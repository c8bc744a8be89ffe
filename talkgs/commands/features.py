"""``talkgs features``: add audio feature kinds to a prepared dataset.

The options of each kind come from the kind itself (``talkgs.audio.registry``, ``options``):
``FeaturesConfig`` gets one group of flags per kind that has options, ``--<kind>.<option>``,
documented by the kind's options dataclass, so a new kind needs nothing here. The class is
made from the registry when it is first asked for (and again after a kind is registered).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import tyro

import talkgs.audio  # noqa: F401  (registers every feature kind)
from talkgs import validate
from talkgs.audio.registry import REGISTRY, check_kinds, kinds_with_options
from talkgs.data import format as fmt
from talkgs.errors import AudioFeatureError, OutputError, UsageError


@dataclasses.dataclass(frozen=True)
class _Features:
    """Add audio feature kinds to a prepared dataset: compute them from its audio.wav, or import
    one kind from a .npy (e.g. the original's aud_ds.npy / aud_hu.npy)."""

    dataset: tyro.conf.Positional[Path]
    """A folder written by `talkgs prepare`; gains audio_<kind>.npy and a meta.json entry per kind
    (with the options it was computed with)."""
    kind: tuple[str, ...]
    """Feature kinds to add (the registered kinds are listed below)."""
    import_path: Annotated[Path | None, tyro.conf.arg(name="import")] = None
    """Import the (single) kind from this .npy instead of computing it: [N, W, C] or the
    transposed [N, C, W]; a frame count off by one is fitted."""
    force: bool = False
    """Replace kinds the dataset already has (refused otherwise)."""
    progress: bool = True
    """Show progress bars."""


_CLASSES: dict[tuple, type] = {}


def config_class() -> type:
    """The config class of the kinds registered now (the same class while they stay the same)."""
    key = tuple((k, fk.options, fk.import_only) for k, fk in sorted(REGISTRY.items()))
    if key not in _CLASSES:
        _CLASSES[key] = _make_config_class()
    return _CLASSES[key]


def __getattr__(name: str):
    if name in ("Config", "FeaturesConfig"):
        return config_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _make_config_class() -> type:
    """``_Features`` plus a field per kind with options, holding that kind's options dataclass;
    the help of --kind lists the registered kinds."""
    computed = [k for k, fk in sorted(REGISTRY.items()) if not fk.import_only]
    imported = [k for k, fk in sorted(REGISTRY.items()) if fk.import_only]
    kind_help = (f"Feature kinds to add: {', '.join(computed)} (computed), or with --import one kind, "
                 f"e.g. {', '.join(imported)} (import only).")
    fields = [("kind", Annotated[tuple[str, ...], tyro.conf.arg(help=kind_help)])]
    fields += [
        (fk.name, Annotated[fk.options, tyro.conf.arg(help=f"Options of --kind {fk.name} (`talkgs render`, `eval "
                                                           "--drive` and `serve` compute features with the defaults).")],
         dataclasses.field(default_factory=fk.options))
        for fk in kinds_with_options()
    ]
    cls = dataclasses.make_dataclass("FeaturesConfig", fields, bases=(_Features,), frozen=True)
    cls.__doc__, cls.__module__ = _Features.__doc__, __name__
    return cls



def options(cfg) -> dict:
    """``{kind: its options}`` for the kinds of ``cfg`` that have options."""
    base = {f.name for f in dataclasses.fields(_Features)}
    return {k: getattr(cfg, k) for k in cfg.kind if k not in base and hasattr(cfg, k)}


def check(cfg):
    meta = validate.input_dataset(cfg.dataset)
    if not cfg.kind:
        raise UsageError("--kind needs at least one feature kind (e.g. --kind phones)")
    if cfg.import_path is not None:
        if len(cfg.kind) != 1:
            raise UsageError(f"--import reads one kind from one file, got {len(cfg.kind)} kinds ({', '.join(cfg.kind)})")
        validate.input_file(cfg.import_path, "--import file", AudioFeatureError)
        check_kinds(cfg.kind, computed=False)
    else:
        check_kinds(cfg.kind, options=options(cfg))
    listed = (meta.get("audio") or {}).get("features") or {}
    for kind in cfg.kind:
        target = Path(cfg.dataset) / fmt.audio_feature_file(kind)
        if cfg.import_path is not None and validate.same_path(cfg.import_path, target):
            raise OutputError(f"--import {cfg.import_path} is the dataset's own {target.name}, which this would replace")
        if target.exists() and kind not in listed:
            raise OutputError(
                f"{target} exists but is not listed in {fmt.META} (talkgs did not write it); talkgs never replaces it: "
                "move it away first (nothing was changed)"
            )
    return cfg


def run(cfg) -> None:
    from talkgs.audio.dataset_features import add_features

    done = add_features(cfg.dataset, cfg.kind, cfg.import_path, force=cfg.force, progress=cfg.progress,
                        options=options(cfg))
    for kind, info in done.items():
        print(f"{kind}: {cfg.dataset / info['file']} {info['shape']} ({info['seconds']:.1f} s)")
