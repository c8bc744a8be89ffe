"""Reading a trained run: a checkpoint file -> validated state -> the TalkingHead it holds.

Below both ``talkgs.train`` (which writes checkpoints, ``talkgs.train.checkpoint``) and the
users of a trained run (``talkgs.render`` (render, evaluate), ``talkgs serve``), so none
of those imports the trainer.

A checkpoint is a ``torch.save`` dict of tensors and plain values only (loadable with
``weights_only=True``) with ``kind`` = :data:`KIND` and a ``format_version``; its layout is in
:mod:`talkgs.train.checkpoint`. Readers use ``config``, ``model_config``, ``audio``, ``dataset``,
``model`` and ``eye_ratio_ref``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

# Config <-> dict lives in the torch-free talkgs.configio; re-exported for the readers of runs.
from talkgs.configio import config_from_dict, config_to_dict  # noqa: F401
from talkgs.errors import CheckpointError, short

from talkgs.data.runs import CHECKPOINT_FORMAT_VERSION as FORMAT_VERSION  # noqa: F401 (for the writer)
from talkgs.data.runs import CHECKPOINT_KIND as KIND  # noqa: F401 (for the writer)
from talkgs.data.runs import check_checkpoint_header


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
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({short(e)})") from None
    check_checkpoint_header(state, path)
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
            f"checkpoint {state.get('path')} does not match this talkgs model ({short(e, 200)})"
        ) from None
    return model.to(device).eval()
