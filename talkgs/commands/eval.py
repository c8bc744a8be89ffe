"""``talkgs eval``: render a trained run against ground truth and score it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal

import tyro

from talkgs import validate
from talkgs.commands.common import at_least, device, flag, input_run, mouth_amplitude, mouth_state_option, run_dataset
from talkgs.data import format as fmt
from talkgs.errors import DatasetError, UsageError


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Render a trained run against ground truth: image metrics on the val split, lip sync on the
    val split, a block of training frames and other clips' audio (--drive)."""

    run: tyro.conf.Positional[Path]
    """A run folder written by `talkgs train`."""
    dataset: Path | None = None
    """The run's dataset, where it is no longer at the path the run recorded."""
    drive: Annotated[tuple[Path, ...], tyro.conf.UseAppendAction] = ()
    """Another prepared dataset whose audio drives this head (with this head's poses); lip sync
    is scored against that clip's own mouth opening. Repeatable."""
    val_frames: tuple[int, int] | None = None
    """Only these val frames [start, stop) (default: the whole val split; a part is for quick checks)."""
    train_frames: tuple[int, int] | None = None
    """Training frames [start, stop) of the train section (default: the middle --train-block
    frames of the longest training shot)."""
    train_block: int = 250
    """Frames in the default train section (0: no train section)."""
    drive_frames: int | None = None
    """At most this many frames (from the start) of each --drive clip (default: all of them)."""
    mouth_amplitude: float = 1.0
    """Scale of the predicted mouth motion around the person's mean mouth: 1 as trained, above 1
    livelier, below 1 calmer (mouth_state runs; at most 3)."""
    mouth_states: Literal["audio", "measured"] = "audio"
    """Mouth states of the val and train sections: predicted from their audio, or measured from
    their tracked lips (the renderer without the audio -> mouth predictor; mouth_state runs)."""
    max_lag: int = 8
    """Audio-video offsets searched, in frames either side."""
    device: str = "auto"
    """cuda, cpu or auto."""
    batch_size: int = 8
    """Frames rendered per call."""
    lpips: bool = True
    """Compute ST-LPIPS (needs talkgs[metrics]); skipped with a note when unavailable."""
    lip_metrics: bool = True
    """Mouth-opening r, amplitude, offset and LMD (need MediaPipe); without it the renders are
    saved in RUN/eval/lips/ for `talkgs eval RUN --lips-only` where it is installed."""
    lips_only: bool = False
    """Only compute the lip metrics from the renders saved by an earlier eval (needs only RUN/eval)."""
    render_crop: Literal["face", "full"] = "face"
    """Where MediaPipe looks: the section's face region (the union of its face boxes, padded) at
    1:1 pixel scale, or the full frame."""
    save_renders: bool = False
    """Save the renders for --lips-only even where MediaPipe is installed (to check that path)."""
    lips_codec: Literal["compact", "lossless"] = "compact"
    """How those renders are saved: compact (H.264, or MPEG-4 Part 2 without PyAV; lossy) or
    lossless (FFV1, bit-exact, larger)."""
    video: bool = True
    """Write the side-by-side val video (ground truth | render) with the audio."""
    progress: bool = True
    """Show progress bars."""
    verbose: bool = False
    """Show the log lines of MediaPipe / TensorFlow Lite during the lip metrics (hidden otherwise)."""


Config = EvalConfig


def check(cfg: EvalConfig) -> EvalConfig:
    at_least("batch_size", cfg.batch_size, 1)
    device(cfg.device)
    run = Path(cfg.run)
    at_least("max_lag", cfg.max_lag, 0)
    at_least("train_block", cfg.train_block, 0)
    if cfg.drive_frames is not None:
        at_least("drive_frames", cfg.drive_frames, 1)
    for name, rng in (("val_frames", cfg.val_frames), ("train_frames", cfg.train_frames)):
        if rng is not None and not (0 <= rng[0] < rng[1]):
            raise UsageError(f"{flag(name)} {rng[0]} {rng[1]} is not a frame range [start, stop)")
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
            validate.input_dataset(cfg.dataset, "--dataset")
        return cfg
    _, state = input_run(run)
    mouth_amplitude(cfg.mouth_amplitude, [(run, state)])
    if cfg.mouth_states == "measured":
        mouth_state_option("--mouth-states measured", [(run, state)])
    kind = (state.get("audio") or {}).get("kind")
    found = run_dataset(run, state, cfg.dataset, audio_kinds=[kind] if kind else [])
    if found is None and cfg.dataset is not None:
        validate.input_dataset(cfg.dataset, "--dataset")
    for d in cfg.drive:
        meta = validate.drive_dataset(d)
        feats = Path(d) / fmt.audio_feature_file(kind or "")
        if kind and feats.is_file():
            fmt.check_npy(feats, rows=int(meta["n_frames"]))
        elif kind and not (Path(d) / fmt.AUDIO).is_file():
            raise DatasetError(f"--drive dataset {d} has neither {feats.name} nor {fmt.AUDIO}")
    return cfg


def run(cfg: EvalConfig) -> None:
    from talkgs.eval.evaluate import evaluate

    evaluate(cfg)
