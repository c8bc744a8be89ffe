"""``talkgs train``: train a head on a prepared dataset, or resume a run.

The config is :class:`talkgs.train.config.TrainConfig` (it lives beside the trainer). With
``--resume`` the run keeps its own settings: what the command line leaves at the defaults is
taken from the run's config.json before anything is checked, so the resume command a stopped
run prints (``talkgs train DATASET -o RUN --resume``) is accepted whatever the run was trained
with, and a flag that would change what it trains is refused.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from talkgs import provenance as owner
from talkgs import validate
from talkgs.commands.common import at_least, device, flag, frame_range, positive, within
from talkgs.conventions import MAX_MOUTH_AMPLITUDE
from talkgs.data import format as fmt
from talkgs.data import runs
from talkgs.errors import AudioFeatureError, CheckpointError, DatasetError, OutputError, UsageError
from talkgs.train.config import TrainConfig

Config = TrainConfig

# Settings that may change when a run is resumed (how it runs, not what it trains).
RESUME_RUNTIME_FIELDS = ("dataset", "output", "resume", "device", "backend", "progress", "log_every",
                         "checkpoint_every", "tensorboard", "schedule_scale", "branches_in_parallel")


def check(cfg: TrainConfig) -> TrainConfig:
    """Checks of ``talkgs train``; returns the config with the dataset as an absolute path (and,
    with ``--resume``, the run's own settings)."""
    from talkgs.audio import check_kinds

    meta = validate.input_dataset(cfg.dataset)
    dataset = Path(cfg.dataset)
    check_output(cfg, dataset)
    if cfg.resume:
        cfg = _resumed(cfg, meta, dataset)
    for name in ("batch_size", "log_every", "checkpoint_every"):
        at_least(name, getattr(cfg, name), 1)
    positive("image_scale", cfg.image_scale)
    positive("schedule_scale", cfg.schedule_scale)
    device(cfg.device)
    for stage in (cfg.mouth, cfg.face, cfg.fuse):
        _stage(stage)
    at_least("model.face_init.n", cfg.model.face_init.n, 1)
    at_least("model.mouth_init.n", cfg.model.mouth_init.n, 1)
    at_least("model.mouth_state.predictor_members", cfg.model.mouth_state.predictor_members, 1)
    if not 0.0 < cfg.predictor.amplitude <= MAX_MOUTH_AMPLITUDE:
        raise UsageError(f"--predictor.amplitude must be in (0, {MAX_MOUTH_AMPLITUDE:g}], got {cfg.predictor.amplitude}")
    others = _other_speakers(cfg, meta, dataset)
    n = int(meta["n_frames"])
    frame_range("frame_range", cfg.frame_range, n, dataset)
    lo, hi = cfg.frame_range or (0, n)
    t0, t1 = meta["split"]["train"]
    if min(hi, t1) <= max(lo, t0):
        raise UsageError(f"--frame-range {lo} {hi} holds no training frames of {dataset} (its train split is {t0}..{t1})")
    if cfg.image_scale * min(int(meta["width"]), int(meta["height"])) < 8:
        raise UsageError(f"--image-scale {cfg.image_scale} makes the {meta['width']}x{meta['height']} frames smaller than 8 pixels")
    check_kinds([cfg.audio_kind], computed=False)
    have = (meta.get("audio") or {}).get("features") or {}
    if cfg.audio_kind not in have:
        raise AudioFeatureError(
            f"dataset {dataset} has no '{cfg.audio_kind}' audio features (it has: {', '.join(sorted(have)) or 'none'}); "
            f"add them with `talkgs features {dataset} --kind {cfg.audio_kind}`"
        )
    if not (dataset / have[cfg.audio_kind].get("file", fmt.audio_feature_file(cfg.audio_kind))).is_file():
        raise DatasetError(f"dataset {dataset} lists '{cfg.audio_kind}' features but its file is missing")
    fmt.check_arrays(dataset, meta, audio_kinds=[cfg.audio_kind])
    return dataclasses.replace(
        cfg, dataset=Path(os.path.abspath(dataset)), predictor=dataclasses.replace(cfg.predictor, other_speakers=others)
    )


def run(cfg: TrainConfig) -> None:
    from talkgs.train.trainer import train

    path = train(cfg)
    print(f"checkpoint: {path}")


def check_output(cfg: TrainConfig, dataset: Path) -> None:
    """The run folder: new, empty, or (with --resume) a run with a checkpoint."""
    out = Path(cfg.output)
    if out.exists() and not out.is_dir():
        raise OutputError(f"output {out} is a file; -o names the run folder")
    validate.no_file_on_the_way(out)
    if validate.same_path(out, dataset) or validate.is_inside(dataset, out):
        raise OutputError(f"output {out} is or contains the dataset {dataset}; choose another folder (nothing was changed)")
    has_checkpoint = (out / "checkpoints" / "latest.pt").is_file()
    if out.exists() and not owner.is_empty_dir(out):
        if not owner.is_run(out):
            raise OutputError(f"output {out} exists and is not a talkgs run; choose another folder (nothing was changed)")
        if has_checkpoint and not cfg.resume:
            raise OutputError(f"run {out} already has checkpoints; pass --resume to continue it or choose another -o")
    if cfg.resume and not has_checkpoint:
        raise UsageError(f"run {out} has no checkpoint to resume (checkpoints/latest.pt); start it without --resume")


def _resumed(cfg: TrainConfig, meta: dict, dataset: Path) -> TrainConfig:
    """The config a resumed run trains with: its saved settings, with this command's runtime
    fields. Refuses another dataset and flags that change a saved setting."""
    from talkgs.configio import config_from_dict, config_to_dict

    out = Path(cfg.output)
    saved = runs.saved_config(out)
    if saved is None:  # a run from before config.json: the trainer takes its checkpoint's settings
        return cfg
    path, sha = runs.recorded_dataset(saved)
    if sha is None and path is not None and owner.is_dataset(Path(path)):
        sha = (owner.dataset_meta(Path(path)).get("source") or {}).get("sha256")
    if sha is not None and (meta.get("source") or {}).get("sha256") != sha:
        raise UsageError(
            f"--resume: dataset {dataset} is not the one run {out} was trained on ({saved.get('dataset')}); "
            "resume with that dataset or train a new run"
        )
    cur = config_to_dict(cfg)
    default = config_to_dict(TrainConfig(dataset=cfg.dataset, output=cfg.output))
    for name in cur:
        if name in RESUME_RUNTIME_FIELDS or name not in saved:
            continue
        d = _first_difference(cur[name], saved[name], default[name], name)
        if d is not None:
            key, new, old = d
            raise UsageError(
                f"--resume: {flag(key)} {new} differs from the run's {old}; a resumed run keeps its own "
                "settings (drop the flag, or train a new run)"
            )
    names = {f.name for f in dataclasses.fields(TrainConfig)} - set(RESUME_RUNTIME_FIELDS)
    try:
        kept = config_from_dict(TrainConfig, {k: v for k, v in saved.items() if k in names}
                                | {k: cur[k] for k in RESUME_RUNTIME_FIELDS})
    except (CheckpointError, TypeError, ValueError):  # saved by another talkgs: its checkpoint decides
        return cfg
    return dataclasses.replace(kept, **{k: getattr(cfg, k) for k in RESUME_RUNTIME_FIELDS})


def _stage(stage) -> None:
    p = stage.name
    at_least(f"{p}.iterations", stage.iterations, 1)
    at_least(f"{p}.warmup_static", stage.warmup_static, 0)
    within(f"{p}.curriculum_until", stage.curriculum_until, 0.0, 1.0)
    positive(f"{p}.lr_decay", stage.lr_decay)
    if stage.densify is not None:
        within(f"{p}.densify.until", stage.densify.until, 0.0, 1.0)
        positive(f"{p}.densify.max_screen_radius", stage.densify.max_screen_radius)
        positive(f"{p}.densify.max_world_scale_m", stage.densify.max_world_scale_m)
    for f in dataclasses.fields(stage.losses):
        v = getattr(stage.losses, f.name)
        if f.name == "lpips_start":
            within(f"{p}.losses.lpips_start", v, 0.0, 1.0)
        else:
            at_least(f"{p}.losses.{f.name}", v, 0.0)


def _first_difference(cur, saved, default, prefix: str) -> tuple[str, object, object] | None:
    """The first setting (dotted name, new value, the run's value) that was changed from the
    default on the command line and differs from the run's saved value."""
    if isinstance(cur, dict) and isinstance(saved, dict) and isinstance(default, dict):
        for k in cur:
            if k in saved and k in default:
                d = _first_difference(cur[k], saved[k], default[k], f"{prefix}.{k}" if prefix else k)
                if d is not None:
                    return d
        return None
    if cur != default and cur != saved:
        return prefix, cur, saved
    return None


def _other_speakers(cfg: TrainConfig, meta: dict, dataset: Path) -> tuple[Path, ...]:
    """Checks of ``--predictor.other-speakers``: prepared clips (meta, tracks and audio) that are
    not the training dataset, for a mouth-state head whose feature kind can be computed here.
    Returns their absolute paths (what the run's config records)."""
    from talkgs.audio import check_kinds

    paths = tuple(Path(p) for p in cfg.predictor.other_speakers)
    if not paths:
        return ()
    option = "--predictor.other-speakers"
    if cfg.model.conditioning != "mouth_state":
        raise UsageError(f"{option} trains the mouth-state predictor; an audio-conditioned head (--preset original) has none")
    check_kinds([cfg.audio_kind])  # their features are extracted with the head's kind
    source = (meta.get("source") or {}).get("sha256")
    for p in paths:
        other = validate.drive_dataset(p, f"{option} dataset")
        if not (p / fmt.AUDIO).is_file():
            raise DatasetError(f"{option} dataset {p} has no {fmt.AUDIO}")
        if validate.same_path(p, dataset) or (source is not None and (other.get("source") or {}).get("sha256") == source):
            raise UsageError(f"{option} {p} is the training dataset itself; give clips of other people")
    return tuple(Path(os.path.abspath(p)) for p in paths)
