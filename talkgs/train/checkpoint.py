"""Checkpoints: one file holding the resolved config, the model, and everything needed to resume.

Layout of ``RUN/``::

    config.json              the run's mark and its resolved TrainConfig (written at start)
    train_history.json       logged steps, written with every latest.pt (kept across resumes)
    checkpoints/latest.pt    newest resumable state (periodic, end of each stage, Ctrl-C)
    checkpoints/<stage>.pt   state at the end of each stage
    logs/                    TensorBoard

A checkpoint is a ``torch.save`` dict of tensors and plain values only (loadable with
``weights_only=True``) with a ``format_version``. Files are written atomically. Reading one back
(``load``, ``build_model``) lives in :mod:`talkgs.model.checkpoint`, below every user of a run;
resuming a run is :func:`talkgs.train.trainer.resume_trainer`. This module never imports the
trainer: it reads what it saves from the trainer object it is given.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from talkgs.train.config import TrainConfig
from talkgs.fsutil import atomic_path, write_json
from talkgs.model.checkpoint import FORMAT_VERSION, KIND, config_to_dict
from talkgs.provenance import RUN_CONFIG, RUN_FORMAT_VERSION, RUN_KIND


def save_config(run: Path, cfg: TrainConfig, dataset_sha256: str | None = None) -> None:
    """``RUN/config.json``: the run's mark (``kind``, ``format_version``; see talkgs.provenance), the
    source video's hash of its dataset, then every TrainConfig field."""
    mark = {"kind": RUN_KIND, "format_version": RUN_FORMAT_VERSION, "dataset_sha256": dataset_sha256}
    write_json(Path(run) / RUN_CONFIG, {**mark, **config_to_dict(cfg)})


# --------------------------------------------------------------------------- save


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
            # The options the dataset's features were computed with (talkgs.audio.recorded_options).
            "options": dict((trainer.ds.meta["audio"]["features"][trainer.cfg.audio_kind]).get("options") or {}),
        },
        "eye_ratio_ref": trainer.eye_ratio_ref.detach().cpu().clone(),
        "dataset": {"path": str(Path(trainer.cfg.dataset).resolve()), "sha256": trainer.ds.meta["source"]["sha256"]},
        "optimizers": _optimizer_states(trainer) if tag == "latest" else None,
        "sampler": {"rng": json.dumps(sampler["rng"]), "queue": torch.as_tensor(np.asarray(sampler["queue"]))},
        "torch_rng": torch.get_rng_state(),
        "predictor_report": json.dumps(getattr(trainer, "predictor_report", None)),
    }
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)
    return path


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
