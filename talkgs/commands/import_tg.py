"""``talkgs import-tg``: a folder preprocessed for TalkingGaussian becomes a talkgs dataset."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal

import tyro

from talkgs import validate
from talkgs.errors import DatasetError


@dataclasses.dataclass(frozen=True)
class ImportTGConfig:
    """Turn a folder preprocessed for TalkingGaussian / ER-NeRF / RAD-NeRF into a talkgs dataset."""

    source: tyro.conf.Positional[Path]
    """The original's data folder (data/<ID>: transforms_*.json, ori_imgs/, parsing/, aud.wav, ...)."""
    output: Annotated[Path, tyro.conf.arg(aliases=["-o"])]
    """Dataset folder to write (appears only when complete; never inside SOURCE)."""
    force: bool = False
    """Replace the dataset files of a talkgs dataset at OUTPUT (other files there are kept; a
    folder that is not a talkgs dataset is never replaced)."""
    align: Literal["auto", "landmarks", "centroid", "marker", "none"] = "auto"
    """The original's world (BFM face) to ours: landmarks (a similarity fit to ori_imgs/*.lms),
    centroid (a shift), marker (undo export-tg), none; auto: marker, else landmarks, else centroid."""
    audio_features: tuple[str, ...] = ("mel", "whisper")
    """Feature kinds to compute from the waveform, with their default options (the original's
    feature files are imported too)."""
    progress: bool = True
    """Print progress."""


Config = ImportTGConfig


def check(cfg: ImportTGConfig) -> ImportTGConfig:
    from talkgs.audio import check_kinds

    src = Path(cfg.source)
    if not src.exists():
        raise DatasetError(f"{src} does not exist")
    if not src.is_dir():
        raise DatasetError(f"{src} is not a folder (the original's data/<ID> folder is needed)")
    check_kinds(cfg.audio_features)
    validate.output_dir(cfg.output, inputs=[(src, "source folder")], force=cfg.force, kind="dataset", command="import-tg")
    return cfg


def run(cfg: ImportTGConfig) -> None:
    from talkgs.interop.import_tg import import_tg

    res = import_tg(cfg)
    for item in res.missing:
        print(f"missing (optional): {item}")
    for note in res.notes:
        print(f"note: {note}")
    print(f"dataset: {res.path} ({res.n_frames} frames, world alignment: {res.alignment})")
