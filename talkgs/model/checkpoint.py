"""Reading a trained run: a checkpoint file -> validated state -> the TalkingHead it holds.

Below both ``talkgs.train`` (which writes checkpoints, ``talkgs.train.checkpoint``) and the
users of a trained run (``talkgs.synth`` (render, evaluate), ``talkgs serve``), so none
of those imports the trainer.

A checkpoint is a ``torch.save`` dict of tensors and plain values only (loadable with
``weights_only=True``) with ``kind`` = :data:`KIND` and a ``format_version``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import torch

from talkgs.errors import CheckpointError

FORMAT_VERSION = 1
KIND = "talkgs-head"


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



# --------------------------------------------------------------------------- load


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read and validate a checkpoint; one-line CheckpointError when missing, corrupt or foreign."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "latest.pt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for a damaged zip/pickle
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({first[:120]})") from None
    if not isinstance(state, dict) or state.get("kind") != KIND:
        raise CheckpointError(f"{path} is not a talkgs checkpoint")
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {state.get('format_version')!r}; this talkgs reads {FORMAT_VERSION}"
        )
    state["path"] = str(path)
    return state


def build_model(state: dict, device: str | torch.device = "cpu"):
    """The TalkingHead stored in a checkpoint, on ``device``, in eval mode."""
    from talkgs.model.config import HeadConfig

    cfg = config_from_dict(HeadConfig, state["model_config"])
    a = state["audio"]
    # Initial Gaussians are replaced by the stored ones; a cheap init avoids wasted work.
    cheap = dataclasses.replace(
        cfg,
        face_init=dataclasses.replace(cfg.face_init, n=8, scale=0.002),
        mouth_init=dataclasses.replace(cfg.mouth_init, n=8, scale=0.002),
    )
    model = cheap.setup(a["window"], a["channels"])
    model.cfg = cfg
    ours, theirs = set(model.state_dict()), set(state["model"])
    if ours != theirs:
        missing, extra = sorted(ours - theirs), sorted(theirs - ours)
        raise CheckpointError(
            f"checkpoint {state.get('path')} does not match this talkgs model "
            f"(missing {len(missing)} tensors, e.g. {missing[:2]}; unexpected {len(extra)}, e.g. {extra[:2]})"
        )
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(
            f"checkpoint {state.get('path')} does not match this talkgs model ({' '.join(str(e).split())[:200]})"
        ) from None
    return model.to(device).eval()
