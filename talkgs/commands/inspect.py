"""``talkgs inspect``: draw a prepared dataset's tracking and labels over its frames."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import tyro

from talkgs import provenance as owner
from talkgs import validate
from talkgs.commands.common import at_least
from talkgs.data import format as fmt
from talkgs.errors import OutputError


@dataclasses.dataclass(frozen=True)
class InspectConfig:
    """Draw a prepared dataset's landmarks, pose axes, labels and signals over its frames."""

    dataset: tyro.conf.Positional[Path]
    """A folder written by `talkgs prepare`."""
    output: Annotated[Path | None, tyro.conf.arg(aliases=["-o"])] = None
    """Folder for inspect.mp4 and contact_sheet.png (default: DATASET/inspect)."""
    max_frames: int | None = None
    """Draw only the first N frames into the video (the contact sheet always spans the clip)."""
    force: bool = False
    """Replace inspect.mp4 / contact_sheet.png written by an earlier `talkgs inspect` (files of
    those names that talkgs did not write are never replaced)."""
    progress: bool = True
    """Show progress bars."""


Config = InspectConfig


def output_folder(cfg: InspectConfig) -> Path:
    return Path(cfg.output) if cfg.output is not None else Path(cfg.dataset) / "inspect"


def check(cfg: InspectConfig) -> InspectConfig:
    meta = validate.input_dataset(cfg.dataset)
    fmt.check_arrays(cfg.dataset, meta)
    if cfg.max_frames is not None:
        at_least("max_frames", cfg.max_frames, 1)
    out = output_folder(cfg)
    if out.exists() and not out.is_dir():
        raise OutputError(f"output {out} is a file; -o names a folder")
    for name, ours in (("inspect.mp4", owner.is_talkgs_video), ("contact_sheet.png", owner.is_talkgs_png)):
        validate.output_file(out / name, inputs=[], force=cfg.force, made_by_talkgs=ours, command="inspect")
    return cfg


def run(cfg: InspectConfig) -> None:
    from talkgs.prepare.inspect import write_inspect

    paths = write_inspect(cfg.dataset, output_folder(cfg), max_frames=cfg.max_frames, progress=cfg.progress)
    for name, path in paths.items():
        print(f"{name}: {path}")
