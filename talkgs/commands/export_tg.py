"""``talkgs export-tg``: a talkgs dataset in the TalkingGaussian / ER-NeRF data layout."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import tyro

from talkgs import validate
from talkgs.commands.common import frame_range, within
from talkgs.data import format as fmt


@dataclasses.dataclass(frozen=True)
class ExportTGConfig:
    """Write a talkgs dataset in the TalkingGaussian / ER-NeRF data layout (for the original's scripts)."""

    dataset: tyro.conf.Positional[Path]
    """A folder written by `talkgs prepare` or `talkgs import-tg`."""
    output: Annotated[Path, tyro.conf.arg(aliases=["-o"])]
    """Folder to write (the original's data/<ID>; appears only when complete; never the dataset)."""
    force: bool = False
    """Replace the files an earlier `talkgs export-tg` wrote at OUTPUT (other files there, e.g. the
    original's own outputs, are kept; a folder export-tg did not write is never replaced)."""
    frame_range: tuple[int, int] | None = None
    """Export only frames [start, stop) (re-numbered from 0; audio cut to match)."""
    jpeg_quality: int = 95
    """JPEG quality of ori_imgs, gt_imgs and bc.jpg, 1 to 100."""
    progress: bool = True
    """Print progress."""


Config = ExportTGConfig


def check(cfg: ExportTGConfig) -> ExportTGConfig:
    meta = validate.input_dataset(cfg.dataset)
    fmt.check_arrays(cfg.dataset, meta)
    frame_range("frame_range", cfg.frame_range, int(meta["n_frames"]), Path(cfg.dataset))
    within("jpeg_quality", cfg.jpeg_quality, 1, 100)
    validate.output_dir(cfg.output, inputs=[(cfg.dataset, "dataset")], force=cfg.force, kind="tg-export", command="export-tg")
    return cfg


def run(cfg: ExportTGConfig) -> None:
    from talkgs.interop.export_tg import export_tg

    res = export_tg(cfg)
    for note in res.notes:
        print(f"note: {note}")
    print(f"exported: {res.path} ({res.n_frames} frames)")
