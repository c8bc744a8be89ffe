"""Config dataclasses <-> plain dicts (config.json, checkpoints). Torch-free, so the command
line can compare a run's saved settings with new arguments before anything heavy loads."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

from talkgs.errors import CheckpointError

# --------------------------------------------------------------------------- config <-> dict


def config_to_dict(cfg: Any) -> Any:
    """JSON-ready form of a (nested) config dataclass."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def _from_value(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _from_value(args[0], value)
    if origin in (typing.Union, types.UnionType):
        for a in args:
            if a is type(None):
                continue
            try:
                return _from_value(a, value)
            except (TypeError, ValueError, KeyError):
                continue
        return value
    if dataclasses.is_dataclass(tp):
        return config_from_dict(tp, value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_value(args[0], v) for v in value)
        return tuple(_from_value(a, v) for a, v in zip(args, value))
    if tp is Path:
        return Path(value)
    return value


def config_from_dict(cls: type, data: dict) -> Any:
    """Rebuild a (nested) config dataclass from :func:`config_to_dict` output; unknown keys are
    an error (they mean the checkpoint comes from another talkgs)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise CheckpointError(f"config of {cls.__name__} has unknown fields {sorted(unknown)}")
    kwargs = {k: _from_value(hints[k], v) for k, v in data.items()}
    return cls(**kwargs)

