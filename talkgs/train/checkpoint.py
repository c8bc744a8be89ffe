"""Checkpoints: one file holding the resolved config, the model, and everything needed to resume.

Layout of ``RUN/``::

    config.json              the run's mark and its resolved TrainConfig (written at start)
    train_history.json       logged steps, written with every latest.pt (kept across resumes)
    checkpoints/latest.pt    newest resumable state (periodic, end of each stage, Ctrl-C)
    checkpoints/<stage>.pt   state at the end of each stage
    logs/                    TensorBoard

A checkpoint is a ``torch.save`` dict of tensors and plain values only (loadable with
``weights_only=True``): ``kind``, ``format_version``, what a reader of the run needs besides the
model (``config``, ``model_config``, ``audio``, ``dataset``, ``num_gaussians``), and the
:meth:`talkgs.train.state.TrainState.state_dict` of the run (``model``, ``eye_ratio_ref``, the
position in the schedule, optimisers, sampler, generators, history). Files are written
atomically. Reading one back (``load``, ``build_model``) lives in :mod:`talkgs.model.checkpoint`,
below every user of a run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from talkgs.configio import config_from_dict
from talkgs.data import Dataset
from talkgs.data import format as fmt
from talkgs.errors import UsageError
from talkgs.fsutil import atomic_path, write_json
from talkgs.model.checkpoint import FORMAT_VERSION, KIND, config_to_dict
from talkgs.provenance import RUN_CONFIG, RUN_FORMAT_VERSION, RUN_KIND
from talkgs.train.config import TrainConfig
from talkgs.train.state import TrainState


def save_config(run: Path, cfg: TrainConfig, dataset_sha256: str | None = None) -> None:
    """``RUN/config.json``: the run's mark (``kind``, ``format_version``; see talkgs.provenance), the
    source video's hash of its dataset, then every TrainConfig field."""
    mark = {"kind": RUN_KIND, "format_version": RUN_FORMAT_VERSION, "dataset_sha256": dataset_sha256}
    write_json(Path(run) / RUN_CONFIG, {**mark, **config_to_dict(cfg)})


def save(path: Path, cfg: TrainConfig, ds: Dataset, state: TrainState) -> Path:
    """Write the checkpoint of ``state`` (a run of ``cfg`` on ``ds``) to ``path`` atomically
    and return ``path``."""
    header = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "config": config_to_dict(cfg),
        "model_config": config_to_dict(state.model.cfg),
        "audio": {
            "kind": cfg.audio_kind,
            "window": int(ds.audio.shape[1]),
            "channels": int(ds.audio.shape[2]),
            # The options the dataset's features were computed with (talkgs.audio.recorded_options).
            "options": fmt.feature_options(ds.meta, cfg.audio_kind),
        },
        "dataset": {"path": str(Path(cfg.dataset).resolve()), "sha256": ds.meta["source"]["sha256"]},
        "num_gaussians": state.model.num_gaussians(),
    }
    path = Path(path)
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save({**header, **state.state_dict()}, tmp)
    return path


def run_complete(checkpoint: dict) -> bool:
    """Whether a checkpoint's run has finished every stage of its schedule."""
    cfg = config_from_dict(TrainConfig, checkpoint["config"])
    return len(checkpoint["completed"]) >= len(cfg.resolved_stages())


def resumed_config(cfg: TrainConfig, checkpoint: dict) -> TrainConfig:
    """The config a resumed run trains with: the run's own (``checkpoint``'s) settings, with only
    how it runs taken from ``cfg`` (dataset path, output, device, backend, logging, checkpoint
    interval, branches_in_parallel, schedule_scale when given). The dataset must be the run's (the same source video;
    it may have moved); output stays ``cfg.output`` (a moved run folder resumes where it is)."""
    saved = config_from_dict(TrainConfig, checkpoint["config"])
    sha = (checkpoint.get("dataset") or {}).get("sha256")
    if sha and fmt.read_meta(cfg.dataset).get("source", {}).get("sha256") != sha:
        raise UsageError(
            f"--resume: dataset {cfg.dataset} is not the one run {cfg.output} was trained on "
            f"({checkpoint['dataset'].get('path')}); resume with that dataset or train a new run"
        )
    return dataclasses.replace(
        saved,
        dataset=cfg.dataset,
        output=cfg.output,
        resume=True,
        device=cfg.device,
        backend=cfg.backend,
        progress=cfg.progress,
        log_every=cfg.log_every,
        checkpoint_every=cfg.checkpoint_every,
        tensorboard=cfg.tensorboard,
        branches_in_parallel=cfg.branches_in_parallel,
        schedule_scale=cfg.schedule_scale if cfg.schedule_scale != 1.0 else saved.schedule_scale,
    )
