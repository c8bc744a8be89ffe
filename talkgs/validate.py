"""Every argument and path of every command, checked before any heavy import or work.

The CLI calls :func:`check` on the parsed config before it imports the command's module, so a
refused command answers in well under a second with one line (``talkgs: <problem>``, exit 2)
and has written nothing. The command functions call the same checks when used from Python.
This module imports neither torch nor a media library.

Outputs follow one rule (the marks are in :mod:`talkgs.provenance`): a path that exists and was not
made by talkgs for this purpose is never replaced or deleted; ``--force`` replaces only what
talkgs itself made there; an output that is (or would replace) an input is refused.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import socket
from pathlib import Path
from typing import Callable, Iterable

from talkgs import provenance as owner
from talkgs.conventions import MAX_MOUTH_AMPLITUDE
from talkgs.data import format as fmt
from talkgs.errors import (
    AudioFeatureError,
    CheckpointError,
    DatasetError,
    MediaError,
    OutputError,
    TalkgsError,
    UsageError,
)

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")
# Settings that may change when a run is resumed (how it runs, not what it trains).
RESUME_RUNTIME_FIELDS = ("dataset", "output", "resume", "device", "backend", "progress", "log_every",
                         "checkpoint_every", "tensorboard", "schedule_scale")


# ----------------------------------------------------------------------------------- paths


def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file or folder (symlinks and hard links included)."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def is_inside(child: str | os.PathLike, parent: str | os.PathLike) -> bool:
    """Whether ``child`` lies strictly inside the folder ``parent``."""
    c, p = Path(child).resolve(), Path(parent).resolve()
    return c != p and p in c.parents


def input_file(path: str | os.PathLike, what: str, error: type[TalkgsError] = UsageError) -> Path:
    """``path`` as a Path; one-line ``error`` unless it is an existing, readable file."""
    p = Path(path)
    if not p.exists():
        raise error(f"{what} {p} does not exist")
    if p.is_dir():
        raise error(f"{what} {p} is a folder; a file is needed")
    if not p.is_file():
        raise error(f"{what} {p} is not a regular file")
    if not os.access(p, os.R_OK):
        raise error(f"{what} {p} is not readable (permissions)")
    return p


def drive_dataset(path: str | os.PathLike, what: str = "--drive dataset") -> dict:
    """meta.json of a ``--drive`` dataset: only its meta, tracks and audio are read (a clip
    carried without frames, labels or plate still drives a head)."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"{what} {p} does not exist")
    if not p.is_dir():
        raise DatasetError(f"{what} {p} is a file; a dataset is a folder written by `talkgs prepare`")
    meta = fmt.read_meta(p, check_files=False)
    if not (p / fmt.TRACKS).is_file():
        raise DatasetError(f"{what} {p} has no {fmt.TRACKS}")
    return meta


def input_dataset(path: str | os.PathLike, what: str = "dataset") -> dict:
    """meta.json of the dataset folder ``path`` (complete, known format); DatasetError otherwise."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"{what} {p} does not exist")
    if not p.is_dir():
        raise DatasetError(f"{what} {p} is a file; a dataset is a folder written by `talkgs prepare`")
    meta = fmt.read_meta(p)
    if not isinstance(meta.get("n_frames"), int) or meta["n_frames"] < 1:
        raise DatasetError(f"{p / fmt.META} has no valid n_frames")
    return meta


def _no_file_on_the_way(out: Path) -> None:
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"cannot write {out}: {parent} is a file")
            return


def output_file(
    out: str | os.PathLike,
    *,
    inputs: Iterable[tuple[str | os.PathLike | None, str]],
    force: bool,
    made_by_talkgs: Callable[[Path], bool],
    command: str,
    suffix: str | None = None,
) -> Path:
    """Check a file output: not a folder, not an input, and an existing file only with ``force``
    and only when talkgs ``command`` wrote it."""
    out = Path(out)
    if suffix is not None and out.suffix.lower() != suffix:
        raise UsageError(f"output {out} must be a {suffix} file")
    if out.is_dir():
        raise OutputError(f"output {out} is a folder; -o names the file to write")
    for path, what in inputs:
        if path is not None and same_path(out, path):
            raise OutputError(f"output {out} is the {what}; choose another name (nothing was changed)")
    _no_file_on_the_way(out)
    if out.exists():
        if not made_by_talkgs(out):
            raise OutputError(
                f"output {out} exists and was not written by `talkgs {command}`; talkgs never replaces it, "
                "even with --force: choose another name (nothing was changed)"
            )
        if not force:
            raise OutputError(f"output {out} exists (an earlier `talkgs {command}`); pass --force to replace it or choose another name")
    return out


_FOLDER_KINDS: dict[str, tuple[str, Callable[[Path], bool], Callable[[Path], list[str]]]] = {
    # kind: (what it is called, is it ours, the names --force replaces)
    "dataset": ("a talkgs dataset", owner.is_dataset, lambda p: owner.dataset_files(owner.dataset_meta(p) or {})),
    "tg-export": ("the output of an earlier `talkgs export-tg`", owner.is_tg_export, lambda p: owner.tg_export_files()),
}


def output_dir(
    out: str | os.PathLike,
    *,
    inputs: Iterable[tuple[str | os.PathLike | None, str]],
    force: bool,
    kind: str,
    command: str,
    refuse_without_force: bool = True,
) -> list[str] | None:
    """Check a folder output. Returns None when it is absent or empty (written fresh), else the
    names talkgs made in it, which ``force`` replaces (everything else there is kept)."""
    out = Path(out)
    what, ours, own_names = _FOLDER_KINDS[kind]
    if out.exists() and not out.is_dir():
        raise OutputError(f"output {out} is a file; -o names a folder")
    _no_file_on_the_way(out)
    inputs = [(Path(p), w) for p, w in inputs if p is not None]
    for path, w in inputs:
        if same_path(out, path):
            raise OutputError(f"output {out} is the {w} itself; choose another folder (nothing was changed)")
        if path.exists() and is_inside(out, path) and path.is_dir():
            raise OutputError(f"output {out} is inside the {w} {path}; choose a folder outside it (nothing was changed)")
    if not out.exists() or owner.is_empty_dir(out):
        return None
    if not ours(out):
        raise OutputError(
            f"output {out} exists and is not {what}; talkgs never replaces it, even with --force: "
            "choose another folder (nothing was changed)"
        )
    names = own_names(out)
    for path, w in inputs:
        if is_inside(path, out):
            top = path.resolve().relative_to(out.resolve()).parts[0]
            if top in names:
                raise OutputError(f"the {w} {path} is part of {what} at {out}, which --force would replace; "
                                  "choose another folder (nothing was changed)")
    if not force and refuse_without_force:
        raise OutputError(
            f"output {out} holds {what}; pass --force to replace its files "
            "(other files there are kept) or choose another folder"
        )
    return names


# ----------------------------------------------------------------------------------- values


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def positive(name: str, value: float) -> None:
    if not (value > 0) or math.isinf(value):
        raise UsageError(f"{_flag(name)} must be > 0, got {value}")


def at_least(name: str, value: float, lo: float) -> None:
    if not (value >= lo):
        raise UsageError(f"{_flag(name)} must be >= {lo}, got {value}")


def within(name: str, value: float, lo: float, hi: float) -> None:
    if not (lo <= value <= hi):
        raise UsageError(f"{_flag(name)} must be in [{lo}, {hi}], got {value}")


def mouth_state_option(flag: str, runs: Iterable[str | os.PathLike]) -> None:
    """``flag`` needs mouth_state runs: one line naming the first run saved otherwise (runs
    saved before the option existed were audio-conditioned)."""
    for run in runs:
        saved = saved_run_config(run)
        cond = (saved.get("model") or {}).get("conditioning", "audio") if saved is not None else None
        if cond is not None and cond != "mouth_state":
            raise UsageError(f"{flag} needs a run trained with --model.conditioning mouth_state; {run} is '{cond}'")


def mouth_amplitude(value: float, runs: Iterable[str | os.PathLike]) -> None:
    if not (0.0 < value <= MAX_MOUTH_AMPLITUDE):
        raise UsageError(f"--mouth-amplitude must be in (0, {MAX_MOUTH_AMPLITUDE:g}], got {value}")
    if value != 1.0:
        mouth_state_option("--mouth-amplitude", runs)


def device(name: str) -> None:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", name):
        raise UsageError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N")


def frame_range(name: str, rng: tuple[int, int] | None, n_frames: int, dataset: Path) -> None:
    if rng is None:
        return
    a, b = rng
    if not (0 <= a < b <= n_frames):
        raise UsageError(f"{_flag(name)} {a} {b} is not a range [start, stop) inside the {n_frames} frames of {dataset}")


def audio_kinds(kinds: Iterable[str], computed: bool = True, models: dict | None = None) -> None:
    """Known kinds whose requirements are installed; ``computed``: kinds that can be computed
    (for the Whisper kinds: their weights are found, ``models[kind]`` or the default)."""
    import talkgs.audio  # noqa: F401  (registers every kind)
    from talkgs.audio.registry import REGISTRY, get_kind

    for kind in kinds:
        fk = get_kind(kind) if computed else REGISTRY.get(kind)
        if fk is None:
            get_kind(kind)  # the "unknown kind" error, listing the known ones
        if computed and fk.import_only:
            raise AudioFeatureError(
                f"{kind} features cannot be computed here, only imported: talkgs features DATASET --kind {kind} --import FILE.npy"
            )
        if computed and kind in ("whisper", "whisper_base"):
            from talkgs.audio.whisper import resolve_model  # stdlib + numpy: no torch here

            resolve_model((models or {}).get(kind), kind)  # one line when the weights are absent


# ----------------------------------------------------------------------------------- runs


def run_dataset_path(run, recorded: str | None, sha256: str | None, override: str | os.PathLike | None) -> Path:
    """The dataset a run uses: ``override`` (``--dataset``) when given, else the path the run
    recorded. One-line DatasetError, mentioning ``--dataset``, when it is missing, not a dataset
    or a dataset of another video (``sha256`` of the run's source video, when known)."""
    if override is not None:
        p = Path(override)
        meta = input_dataset(p, "--dataset")
        if sha256 and (meta.get("source") or {}).get("sha256") != sha256:
            raise DatasetError(f"--dataset {p} is not the dataset run {run} was trained on (another source video)")
        return p
    if not recorded:
        raise DatasetError(f"run {run} records no dataset; pass --dataset DIR")
    p = Path(recorded)
    if not p.exists():
        raise DatasetError(f"dataset {p} of run {run} does not exist (moved or deleted?); pass --dataset DIR")
    try:
        meta = fmt.read_meta(p)
    except DatasetError as e:
        raise DatasetError(f"{e} (the dataset run {run} records; pass --dataset DIR for another copy)") from None
    if sha256 and (meta.get("source") or {}).get("sha256") != sha256:
        raise DatasetError(f"dataset {p} of run {run} now holds another video's dataset; pass --dataset DIR with the run's own")
    return p


def input_run(run: str | os.PathLike) -> Path:
    """The checkpoint a run argument names (RUN/checkpoints/latest.pt or a .pt file)."""
    run = Path(run)
    if not run.exists():
        raise CheckpointError(f"run {run} does not exist")
    ckpt = owner.run_checkpoint(run)
    if run.is_dir() and not ckpt.is_file():
        raise CheckpointError(f"{run} has no checkpoints/latest.pt; a run is a folder written by `talkgs train`")
    return ckpt


def saved_run_config(run: str | os.PathLike) -> dict | None:
    """A run's config.json as a dict (marked or from before the mark), or None."""
    run = Path(run)
    folder = run if run.is_dir() else run.parent.parent
    doc = owner.run_config(folder)
    if doc is None:
        doc = owner._read_json(folder / owner.RUN_CONFIG)
        if doc is None or "audio_kind" not in doc or "dataset" not in doc:
            return None
    return doc


def _recorded_dataset(doc: dict) -> tuple[str | None, str | None]:
    """(dataset path, source sha256) a run's config.json records. A relative path (runs made
    before paths were recorded absolute) is not trusted here: it depends on the directory the
    run was started from, and the checkpoint holds the absolute one."""
    path, sha = doc.get("dataset"), doc.get("dataset_sha256")
    if path is not None and not Path(path).is_absolute():
        path = None
    return path, sha


# ----------------------------------------------------------------------------------- commands


def prepare(cfg):
    input_file(cfg.video, "input video", MediaError)
    within("val_fraction", cfg.val_fraction, 0.0, 0.5)
    positive("min_duration_s", cfg.min_duration_s)
    within("max_missing_fraction", cfg.max_missing_fraction, 0.0, 1.0)
    at_least("smooth_sigma", cfg.smooth_sigma, 0.0)
    if not cfg.audio_features:
        raise UsageError("--audio-features needs at least one kind (e.g. mel)")
    audio_kinds(cfg.audio_features)
    output_dir(cfg.output, inputs=[(cfg.video, "input video")], force=cfg.force, kind="dataset",
               command="prepare", refuse_without_force=False)
    work = Path(cfg.output).with_name(Path(cfg.output).name + ".partial")
    if work.exists() and not (work.is_dir() and ((work / "source.json").is_file() or owner.is_empty_dir(work))):
        raise OutputError(f"{work} exists and was not made by `talkgs prepare` (its work folder); move it away (nothing was changed)")
    return cfg


def inspect(cfg):
    input_dataset(cfg.dataset)
    if cfg.max_frames is not None:
        at_least("max_frames", cfg.max_frames, 1)
    out = Path(cfg.output) if cfg.output is not None else Path(cfg.dataset) / "inspect"
    if out.exists() and not out.is_dir():
        raise OutputError(f"output {out} is a file; -o names a folder")
    for name, ours in (("inspect.mp4", owner.is_talkgs_video), ("contact_sheet.png", owner.is_talkgs_png)):
        output_file(out / name, inputs=[], force=cfg.force, made_by_talkgs=ours, command="inspect")
    return cfg


def features(cfg):
    meta = input_dataset(cfg.dataset)
    if not cfg.kind:
        raise UsageError("--kind needs at least one feature kind (e.g. --kind phones)")
    if cfg.import_path is not None:
        if len(cfg.kind) != 1:
            raise UsageError(f"--import reads one kind from one file, got {len(cfg.kind)} kinds ({', '.join(cfg.kind)})")
        input_file(cfg.import_path, "--import file", AudioFeatureError)
        audio_kinds(cfg.kind, computed=False)
    else:
        audio_kinds(cfg.kind, models={"whisper": cfg.whisper_model, "whisper_base": cfg.whisper_base_model})
    device(cfg.device)
    listed = (meta.get("audio") or {}).get("features") or {}
    for kind in cfg.kind:
        target = Path(cfg.dataset) / fmt.audio_feature_file(kind)
        if cfg.import_path is not None and same_path(cfg.import_path, target):
            raise OutputError(f"--import {cfg.import_path} is the dataset's own {target.name}, which this would replace")
        if target.exists() and kind not in listed:
            raise OutputError(
                f"{target} exists but is not listed in {fmt.META} (talkgs did not write it); talkgs never replaces it: "
                "move it away first (nothing was changed)"
            )
    return cfg


def _stage(stage) -> None:
    p = stage.name
    at_least(f"{p}.iterations", stage.iterations, 1)
    at_least(f"{p}.warmup_static", stage.warmup_static, 0)
    for f in ("curriculum_until", "densify_until"):
        within(f"{p}.{f}", getattr(stage, f), 0.0, 1.0)
    positive(f"{p}.lr_decay", stage.lr_decay)
    positive(f"{p}.max_screen_radius", stage.max_screen_radius)
    positive(f"{p}.max_world_scale_m", stage.max_world_scale_m)
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


def train(cfg):
    """Checks of ``talkgs train``; returns the config with the dataset as an absolute path."""
    from talkgs.train.config import TrainConfig
    from talkgs.configio import config_to_dict

    meta = input_dataset(cfg.dataset)
    dataset = Path(cfg.dataset)
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
    within("predictor.select_after", cfg.predictor.select_after, 0.0, 1.0)
    if not 0.0 < cfg.predictor.amplitude <= MAX_MOUTH_AMPLITUDE:
        raise UsageError(f"--predictor.amplitude must be in (0, {MAX_MOUTH_AMPLITUDE:g}], got {cfg.predictor.amplitude}")
    bad_room = [db for db in cfg.predictor.room_tone_dbfs if not db < 0]
    if bad_room:
        raise UsageError(f"--predictor.room-tone-dbfs levels must be below 0 dBFS, got {bad_room[0]:g}")
    if cfg.predictor.room_tone_dbfs and not cfg.predictor.silent_clip_s > 0:
        raise UsageError("--predictor.room-tone-dbfs needs --predictor.silent-clip-s > 0 (its clips are that long)")
    others = _other_speakers(cfg, meta, dataset)
    n = int(meta["n_frames"])
    frame_range("frame_range", cfg.frame_range, n, dataset)
    lo, hi = cfg.frame_range or (0, n)
    t0, t1 = meta["split"]["train"]
    if min(hi, t1) <= max(lo, t0):
        raise UsageError(f"--frame-range {lo} {hi} holds no training frames of {dataset} (its train split is {t0}..{t1})")
    if cfg.image_scale * min(int(meta["width"]), int(meta["height"])) < 8:
        raise UsageError(f"--image-scale {cfg.image_scale} makes the {meta['width']}x{meta['height']} frames smaller than 8 pixels")
    audio_kinds([cfg.audio_kind], computed=False)
    have = (meta.get("audio") or {}).get("features") or {}
    if cfg.audio_kind not in have:
        raise AudioFeatureError(
            f"dataset {dataset} has no '{cfg.audio_kind}' audio features (it has: {', '.join(sorted(have)) or 'none'}); "
            f"add them with `talkgs features {dataset} --kind {cfg.audio_kind}`"
        )
    if not (dataset / have[cfg.audio_kind].get("file", fmt.audio_feature_file(cfg.audio_kind))).is_file():
        raise DatasetError(f"dataset {dataset} lists '{cfg.audio_kind}' features but its file is missing")

    out = Path(cfg.output)
    if out.exists() and not out.is_dir():
        raise OutputError(f"output {out} is a file; -o names the run folder")
    _no_file_on_the_way(out)
    if same_path(out, dataset) or is_inside(dataset, out):
        raise OutputError(f"output {out} is or contains the dataset {dataset}; choose another folder (nothing was changed)")
    has_checkpoint = (out / "checkpoints" / "latest.pt").is_file()
    if out.exists() and not owner.is_empty_dir(out):
        if not owner.is_run(out):
            raise OutputError(f"output {out} exists and is not a talkgs run; choose another folder (nothing was changed)")
        if has_checkpoint and not cfg.resume:
            raise OutputError(f"run {out} already has checkpoints; pass --resume to continue it or choose another -o")
    if cfg.resume:
        if not has_checkpoint:
            raise UsageError(f"run {out} has no checkpoint to resume (checkpoints/latest.pt); start it without --resume")
        saved = saved_run_config(out)
        if saved is not None:
            path, sha = _recorded_dataset(saved)
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
                    flag, new, old = d
                    raise UsageError(
                        f"--resume: {_flag(flag)} {new} differs from the run's {old}; a resumed run keeps its own "
                        "settings (drop the flag, or train a new run)"
                    )
    return dataclasses.replace(
        cfg, dataset=Path(os.path.abspath(dataset)), predictor=dataclasses.replace(cfg.predictor, other_speakers=others)
    )


def _other_speakers(cfg, meta: dict, dataset: Path) -> tuple[Path, ...]:
    """Checks of ``--predictor.other-speakers``: prepared clips (meta, tracks and audio) that are
    not the training dataset, for a mouth-state head whose feature kind can be computed here.
    Returns their absolute paths (what the run's config records)."""
    paths = tuple(Path(p) for p in cfg.predictor.other_speakers)
    if not paths:
        return ()
    flag = "--predictor.other-speakers"
    if cfg.model.conditioning != "mouth_state":
        raise UsageError(f"{flag} trains the mouth-state predictor; it needs --model.conditioning mouth_state")
    audio_kinds([cfg.audio_kind])  # their features are extracted with the head's kind
    source = (meta.get("source") or {}).get("sha256")
    for p in paths:
        other = drive_dataset(p, f"{flag} dataset")
        if not (p / fmt.AUDIO).is_file():
            raise DatasetError(f"{flag} dataset {p} has no {fmt.AUDIO}")
        if same_path(p, dataset) or (source is not None and (other.get("source") or {}).get("sha256") == source):
            raise UsageError(f"{flag} {p} is the training dataset itself; give clips of other people")
    return tuple(Path(os.path.abspath(p)) for p in paths)


def evaluate(cfg):
    at_least("batch_size", cfg.batch_size, 1)
    device(cfg.device)
    run = Path(cfg.run)
    at_least("max_lag", cfg.max_lag, 0)
    at_least("train_block", cfg.train_block, 0)
    if cfg.drive_frames is not None:
        at_least("drive_frames", cfg.drive_frames, 1)
    for name, rng in (("val_frames", cfg.val_frames), ("train_frames", cfg.train_frames)):
        if rng is not None and not (0 <= rng[0] < rng[1]):
            raise UsageError(f"{_flag(name)} {rng[0]} {rng[1]} is not a frame range [start, stop)")
    if cfg.lips_only:
        if cfg.mouth_amplitude != 1.0 or cfg.mouth_states != "audio":
            raise UsageError(
                "--lips-only scores the renders an earlier eval saved; --mouth-amplitude and --mouth-states "
                f"choose what is rendered: give them to that eval (talkgs eval {run} ...) instead"
            )
        ev = run / "eval"
        if not (ev / "metrics.json").is_file():
            raise UsageError(f"{ev} has no metrics.json; run `talkgs eval {run}` first")
        if cfg.dataset is not None:
            input_dataset(cfg.dataset, "--dataset")
        return cfg
    input_run(run)
    mouth_amplitude(cfg.mouth_amplitude, [run])
    if cfg.mouth_states == "measured":
        mouth_state_option("--mouth-states measured", [run])
    saved = saved_run_config(run)
    if saved is not None:
        path, sha = _recorded_dataset(saved)
        if path is not None or cfg.dataset is not None:
            run_dataset_path(run, path, sha, cfg.dataset)
    elif cfg.dataset is not None:
        input_dataset(cfg.dataset, "--dataset")
    for d in cfg.drive:
        drive_dataset(d)
    return cfg


def render(cfg):
    ckpt = input_run(cfg.run)
    input_file(cfg.audio, "audio file", MediaError)
    if cfg.features is not None:
        input_file(cfg.features, "--features file", AudioFeatureError)
    if cfg.drive_video is not None:
        dv = Path(cfg.drive_video)
        if dv.is_file():
            raise UsageError(
                f"--drive-video takes the other video's prepared folder: `talkgs prepare {dv} -o DIR`, then "
                f"--drive-video DIR (its lips are tracked once, by prepare)"
            )
        drive_dataset(dv, "--drive-video dataset")
    at_least("batch_size", cfg.batch_size, 1)
    if cfg.scale is not None:
        positive("scale", cfg.scale)
    within("crf", cfg.crf, 0, 51)
    if cfg.preset not in X264_PRESETS:
        raise UsageError(f"--preset {cfg.preset!r} is not an x264 preset ({', '.join(X264_PRESETS)})")
    device(cfg.device)
    d = cfg.drive
    at_least("drive.blink_rate_per_min", d.blink_rate_per_min, 0.0)
    if cfg.audio_kind is not None:
        audio_kinds([cfg.audio_kind], computed=False)
    mouth_amplitude(cfg.mouth_amplitude, [cfg.run])
    if cfg.drive_video is not None:
        mouth_state_option("--drive-video", [cfg.run])
    saved = saved_run_config(cfg.run)
    meta = None
    if saved is not None:
        kind = saved.get("audio_kind")
        if cfg.audio_kind is not None and kind is not None and cfg.audio_kind != kind:
            raise AudioFeatureError(
                f"run {cfg.run} was trained with '{kind}' audio features and cannot be driven by "
                f"'{cfg.audio_kind}' features (train another run with --audio-kind {cfg.audio_kind})"
            )
        path, sha = _recorded_dataset(saved)
        if path is not None or cfg.dataset is not None:
            meta = fmt.read_meta(run_dataset_path(cfg.run, path, sha, cfg.dataset))
    elif cfg.dataset is not None:
        meta = input_dataset(cfg.dataset, "--dataset")
    if meta is not None:
        n = int(meta["n_frames"])
        frame_range("drive.segment", d.segment, n, Path(cfg.dataset or saved.get("dataset")))
        if d.still_frame is not None and not (0 <= d.still_frame < n):
            raise UsageError(f"--drive.still-frame {d.still_frame} is outside the dataset's {n} frames")
    output_file(
        cfg.output,
        inputs=[(cfg.audio, "--audio file"), (cfg.features, "--features file"), (ckpt, "run's checkpoint")],
        force=cfg.force,
        made_by_talkgs=owner.is_talkgs_video,
        command="render",
        suffix=".mp4",
    )
    return cfg


def import_tg(cfg):
    src = Path(cfg.source)
    if not src.exists():
        raise DatasetError(f"{src} does not exist")
    if not src.is_dir():
        raise DatasetError(f"{src} is not a folder (the original's data/<ID> folder is needed)")
    audio_kinds(cfg.audio_features)
    output_dir(cfg.output, inputs=[(src, "source folder")], force=cfg.force, kind="dataset", command="import-tg")
    return cfg


def export_tg(cfg):
    meta = input_dataset(cfg.dataset)
    frame_range("frame_range", cfg.frame_range, int(meta["n_frames"]), Path(cfg.dataset))
    within("jpeg_quality", cfg.jpeg_quality, 1, 100)
    output_dir(cfg.output, inputs=[(cfg.dataset, "dataset")], force=cfg.force, kind="tg-export", command="export-tg")
    return cfg


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(cfg):
    if not cfg.runs:
        raise UsageError("name at least one run to serve")
    for run in cfg.runs:
        input_run(run)
    mouth_amplitude(cfg.mouth_amplitude, cfg.runs)
    device(cfg.device)
    if not is_loopback(cfg.host) and not cfg.token:
        raise UsageError(
            f"serving on {cfg.host} (not loopback) needs --token SECRET; the page is then opened as "
            f"http://{f'[{cfg.host}]' if ':' in cfg.host else cfg.host}:{cfg.port}/?token=SECRET"
        )
    if cfg.token is not None and len(cfg.token) < 8:
        raise UsageError("--token must be at least 8 characters")
    within("max_sessions", cfg.max_sessions, 1, 1024)
    within("max_batch", cfg.max_batch, 1, 1024)
    within("port", cfg.port, 1, 65535)
    positive("idle_timeout_s", cfg.idle_timeout_s)
    at_least("cpu_threads", cfg.cpu_threads, 1)
    # The port is checked now, not after minutes of loading.
    family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((cfg.host, cfg.port))
        except OSError as e:
            raise UsageError(f"cannot listen on {cfg.host}:{cfg.port}: {e.strerror or e}") from None
    return cfg


_BY_CONFIG = {
    "PrepareConfig": prepare,
    "InspectConfig": inspect,
    "FeaturesConfig": features,
    "TrainConfig": train,
    "EvalConfig": evaluate,
    "RenderConfig": render,
    "ServeConfig": serve,
    "ImportTGConfig": import_tg,
    "ExportTGConfig": export_tg,
}


def check(cfg):
    """Run the checks of ``cfg``'s command; returns the (possibly normalised) config."""
    return _BY_CONFIG[type(cfg).__name__](cfg)
