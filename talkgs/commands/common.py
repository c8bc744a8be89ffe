"""Value rules and run rules several commands share (torch-free, like every check)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable

from talkgs.conventions import MAX_MOUTH_AMPLITUDE
from talkgs.data import runs
from talkgs.device import check_name
from talkgs.errors import UsageError


def flag(name: str) -> str:
    """The command-line flag of a config field: ``predictor.other_speakers`` -> ``--predictor.other-speakers``."""
    return "--" + name.replace("_", "-")


def positive(name: str, value: float) -> None:
    if not (value > 0) or math.isinf(value):
        raise UsageError(f"{flag(name)} must be > 0, got {value}")


def at_least(name: str, value: float, lo: float) -> None:
    if not (value >= lo):
        raise UsageError(f"{flag(name)} must be >= {lo}, got {value}")


def within(name: str, value: float, lo: float, hi: float) -> None:
    if not (lo <= value <= hi):
        raise UsageError(f"{flag(name)} must be in [{lo}, {hi}], got {value}")


def device(name: str) -> None:
    check_name(name)


def frame_range(name: str, rng: tuple[int, int] | None, n_frames: int, dataset: Path) -> None:
    if rng is None:
        return
    a, b = rng
    if not (0 <= a < b <= n_frames):
        raise UsageError(f"{flag(name)} {a} {b} is not a range [start, stop) inside the {n_frames} frames of {dataset}")


def input_run(run: str | os.PathLike) -> tuple[Path, dict]:
    """The checkpoint a run argument names and its contents (tensors as placeholders), both
    checked without torch (:func:`talkgs.data.runs.check_checkpoint`)."""
    ckpt = runs.checkpoint_path(run)
    return ckpt, runs.check_checkpoint(ckpt)


def mouth_state_option(option: str, run_states: Iterable[tuple[str | os.PathLike, dict]]) -> None:
    """``option`` needs mouth_state runs: one line naming the first run saved otherwise (runs
    saved before the option existed were audio-conditioned). ``run_states``: (run, checkpoint
    contents) pairs."""
    for run, state in run_states:
        saved = runs.saved_config(run) or state.get("config") or {}
        cond = (saved.get("model") or {}).get("conditioning", "audio")
        if cond != "mouth_state":
            raise UsageError(f"{option} needs a mouth-state run; {run} is '{cond}'-conditioned (--preset original)")


def mouth_amplitude(value: float, run_states: Iterable[tuple[str | os.PathLike, dict]]) -> None:
    if not (0.0 < value <= MAX_MOUTH_AMPLITUDE):
        raise UsageError(f"--mouth-amplitude must be in (0, {MAX_MOUTH_AMPLITUDE:g}], got {value}")
    if value != 1.0:
        mouth_state_option("--mouth-amplitude", run_states)


def run_dataset(run, state: dict, override=None, advice: str = runs.PASS_DATASET,
                audio_kinds: Iterable[str] = ()) -> tuple[Path, dict] | None:
    """(folder, meta.json) of the dataset a run uses, its arrays (and the features of
    ``audio_kinds``) checked for damage without torch; None when the run records no dataset
    and no ``override`` is given."""
    from talkgs.data import format as fmt

    path, sha = runs.recorded_dataset(runs.saved_config(run), state)
    if path is None and override is None:
        return None
    root = runs.run_dataset_path(run, path, sha, override, advice)
    meta = fmt.read_meta(root)
    fmt.check_arrays(root, meta, audio_kinds=audio_kinds)
    return root, meta
