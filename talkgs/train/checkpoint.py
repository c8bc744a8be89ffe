"""Checkpoints: one file holding the resolved config, the model, and everything needed to resume.

Layout of ``RUN/``::

    config.json              the resolved TrainConfig of the run (written at start)
    checkpoints/latest.pt    newest resumable state (periodic, end of each stage, Ctrl-C)
    checkpoints/<stage>.pt   state at the end of each stage
    logs/                    TensorBoard

A checkpoint is a ``torch.save`` dict of tensors and plain values only (loadable with
``weights_only=True``) with a ``format_version``. Files are written atomically.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

import numpy as np
import torch

from talkgs.config import TrainConfig
from talkgs.errors import CheckpointError
from talkgs.fsutil import atomic_path, write_json

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


def save_config(run: Path, cfg: TrainConfig) -> None:
    write_json(Path(run) / "config.json", config_to_dict(cfg))


# --------------------------------------------------------------------------- save / load


def _optimizer_states(trainer) -> dict:
    gauss = getattr(trainer, "_gauss_opts", None) or {}
    net = getattr(trainer, "_net_opt", None)
    strategies = getattr(trainer, "_strategies_live", None) or {}
    return {
        "gaussians": {b: {k: o.state_dict() for k, o in opts.items()} for b, opts in gauss.items()},
        "networks": net.state_dict() if net is not None else None,
        "strategies": {b: state for b, (_, state) in strategies.items()},
    }


def save(trainer, tag: str) -> Path:
    """Write ``RUN/checkpoints/<tag>.pt`` atomically and return its path."""
    path = Path(trainer.out) / "checkpoints" / f"{tag}.pt"
    sampler = trainer.sampler.state_dict()
    state = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "config": config_to_dict(trainer.cfg),
        "model_config": config_to_dict(trainer.model.cfg),
        "stage_index": trainer.stage_index,
        "stage_step": trainer.stage_step,
        "completed": list(trainer.completed),
        "global_step": trainer.global_step,
        "model": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
        "num_gaussians": trainer.model.num_gaussians(),
        "audio": {
            "kind": trainer.cfg.audio_kind,
            "window": int(trainer.ds.audio.shape[1]),
            "channels": int(trainer.ds.audio.shape[2]),
        },
        "eye_ratio_ref": trainer.eye_ratio_ref.detach().cpu().clone(),
        "dataset": {"path": str(Path(trainer.cfg.dataset).resolve()), "sha256": trainer.ds.meta["source"]["sha256"]},
        "optimizers": _optimizer_states(trainer) if tag == "latest" else None,
        "sampler": {"rng": json.dumps(sampler["rng"]), "queue": torch.as_tensor(np.asarray(sampler["queue"]))},
        "torch_rng": torch.get_rng_state(),
    }
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)
    return path


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
    from talkgs.model.head import HeadConfig

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


def resume_trainer(cfg: TrainConfig):
    """A Trainer positioned where ``cfg.output``'s latest checkpoint stopped."""
    from talkgs.train.trainer import Conditioning, Trainer

    state = load(Path(cfg.output) / "checkpoints" / "latest.pt")
    saved = config_from_dict(TrainConfig, state["config"])
    # The run's own schedule and model are kept; only how it runs may change on resume.
    run_cfg = dataclasses.replace(
        saved,
        resume=True,
        device=cfg.device,
        backend=cfg.backend,
        progress=cfg.progress,
        log_every=cfg.log_every,
        checkpoint_every=cfg.checkpoint_every,
        tensorboard=cfg.tensorboard,
        schedule_scale=cfg.schedule_scale if cfg.schedule_scale != 1.0 else saved.schedule_scale,
    )
    trainer = Trainer(run_cfg)
    trainer.model = build_model(state, trainer.device).train()
    trainer.eye_ratio_ref = state["eye_ratio_ref"]
    trainer.cond = Conditioning(trainer.ds, trainer.eye_ratio_ref, trainer.model.cfg.audio.window)
    trainer.stage_index = int(state["stage_index"])
    trainer.stage_step = int(state["stage_step"])
    trainer.completed = list(state["completed"])
    trainer.global_step = int(state["global_step"])
    if len(trainer.completed) > trainer.stage_index:  # saved at a stage's end
        trainer.stage_index = len(trainer.completed)
        trainer.stage_step = 0
    trainer.sampler.load_state_dict({"rng": json.loads(state["sampler"]["rng"]), "queue": state["sampler"]["queue"].numpy()})
    torch.set_rng_state(state["torch_rng"])
    trainer._pending_opt_state = state.get("optimizers") if trainer.stage_step > 0 else None
    return trainer


def restore_optimizers(trainer, gauss_opts: dict, net_opt, strategies: dict) -> None:
    """Load saved optimiser and densification state into a resumed stage's fresh optimisers."""
    saved = trainer._pending_opt_state
    trainer._pending_opt_state = None
    if not saved:
        return
    for b, opts in gauss_opts.items():
        for k, o in opts.items():
            s = saved["gaussians"].get(b, {}).get(k)
            if s is not None:
                o.load_state_dict(s)
    if net_opt is not None and saved.get("networks") is not None:
        net_opt.load_state_dict(saved["networks"])
    for b, (strat, state) in strategies.items():
        s = saved["strategies"].get(b)
        if s is not None:
            for k in state:
                state[k] = s[k].to(state[k].device)
