"""``talkgs prepare``: a talking-head video becomes a training dataset."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import tyro

from talkgs import provenance as owner
from talkgs import validate
from talkgs.commands.common import at_least, positive, within
from talkgs.errors import MediaError, OutputError, UsageError


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """Turn a talking-head video into a training dataset (landmarks, pose, labels, plate, audio)."""

    video: tyro.conf.Positional[Path]
    """Input video (any container PyAV reads) with a video and an audio stream, at least
    --min-duration-s long."""
    output: Annotated[Path, tyro.conf.arg(aliases=["-o"])]
    """Dataset folder to write. Work happens in OUTPUT.partial, renamed when complete; an
    interrupted run resumes from it."""
    force: bool = False
    """Redo every step and replace the dataset files of an existing dataset at OUTPUT (other files
    in that folder, e.g. inspect/, are kept; a folder that is not a dataset is never replaced)."""
    val_fraction: float = 1.0 / 11.0
    """Fraction of the frames, at the end of the clip, held out for validation (0 to 0.5)."""
    min_duration_s: float = 5.0
    """Shortest input accepted, in seconds."""
    max_missing_fraction: float = 0.01
    """Refuse the video when the face is missing in more than this fraction of its frames (0 to 1)."""
    smooth_sigma: float = 1.0
    """Zero-phase Gaussian smoothing of the head pose, in frames (0 = off); never across cuts."""
    audio_features: tuple[str, ...] = ("mel", "whisper")
    """Audio feature kinds to compute and store, with their default options (`talkgs features`
    adds kinds later, with options)."""
    progress: bool = True
    """Show progress bars."""
    verbose: bool = False
    """Show the log lines of MediaPipe / TensorFlow Lite (hidden otherwise)."""


Config = PrepareConfig


def check(cfg: PrepareConfig) -> PrepareConfig:
    from talkgs.audio import check_kinds

    validate.input_file(cfg.video, "input video", MediaError)
    within("val_fraction", cfg.val_fraction, 0.0, 0.5)
    positive("min_duration_s", cfg.min_duration_s)
    within("max_missing_fraction", cfg.max_missing_fraction, 0.0, 1.0)
    at_least("smooth_sigma", cfg.smooth_sigma, 0.0)
    if not cfg.audio_features:
        raise UsageError("--audio-features needs at least one kind (e.g. mel)")
    check_kinds(cfg.audio_features)
    validate.output_dir(cfg.output, inputs=[(cfg.video, "input video")], force=cfg.force, kind="dataset",
                        command="prepare", refuse_without_force=False)
    work = Path(cfg.output).with_name(Path(cfg.output).name + ".partial")
    if work.exists() and not (work.is_dir() and ((work / "source.json").is_file() or owner.is_empty_dir(work))):
        raise OutputError(f"{work} exists and was not made by `talkgs prepare` (its work folder); move it away (nothing was changed)")
    return cfg


def run(cfg: PrepareConfig) -> None:
    from talkgs.prepare.pipeline import prepare

    prepare(cfg)
