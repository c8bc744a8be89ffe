"""What talkgs made: the marks that tell a command's own earlier output from a user's file.

The rule of every command that writes (README "Files talkgs writes and what --force
replaces"): a path that exists and was not made by talkgs for this purpose is never replaced
or deleted; ``--force`` replaces only the files talkgs itself made there, never the command's
own input and never anything else in the folder. The marks, one per kind of output:

- dataset (``prepare``, ``import-tg``): ``meta.json`` with a ``format_version``. Its own files
  are :func:`dataset_files` (the fixed dataset files and the feature files listed in meta.json);
  ``inspect/``, notes and anything else in the folder are not.
- run (``train``): ``config.json`` with ``"kind": "talkgs-run"`` (runs written before the mark:
  ``checkpoints/latest.pt`` holding a talkgs checkpoint).
- TalkingGaussian folder (``export-tg``): ``transforms_train.json`` with the top-level key
  ``talkgs`` (:data:`talkgs.interop.tg_layout.MARKER_KEY`). Its own files: :data:`TG_EXPORT_FILES`.
- video (``render``, ``inspect.mp4``): the mp4 ``comment`` tag ``made by talkgs ...`` (in the
  ``moov`` box, read here without a media library).
- image (``contact_sheet.png``): a PNG ``tEXt`` chunk ``Software`` = ``made by talkgs ...``.

Nothing here imports torch or a media library: the CLI checks outputs before any heavy import.
"""

from __future__ import annotations

import json
import struct
import zipfile
import zlib
from pathlib import Path

from talkgs import __version__
from talkgs.data import format as fmt

MADE_BY = "made by talkgs"
RUN_KIND = "talkgs-run"
RUN_FORMAT_VERSION = 1
RUN_CONFIG = "config.json"
RUN_HISTORY = "train_history.json"
CHECKPOINT_KIND = b"talkgs-head"  # talkgs.model.checkpoint.KIND, as pickled in data.pkl


def made_by(what: str) -> str:
    """The tag text written into talkgs' videos and images, e.g. ``made by talkgs 0.1.0 (render)``."""
    return f"{MADE_BY} {__version__} ({what})"


def read_json(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


# ----------------------------------------------------------------------------------- datasets


def dataset_meta(path: Path) -> dict | None:
    """meta.json of a talkgs dataset folder (any format version), or None."""
    meta = read_json(Path(path) / fmt.META)
    if meta is None or not isinstance(meta.get("format_version"), int):
        return None
    return meta


def is_dataset(path: Path) -> bool:
    return dataset_meta(path) is not None


def dataset_files(meta: dict) -> list[str]:
    """Names of the files a dataset consists of: what ``--force`` may replace in its folder."""
    names = list(fmt.REQUIRED_FILES)
    features = (meta.get("audio") or {}).get("features") or {}
    for kind, info in features.items():
        name = (info or {}).get("file") or fmt.audio_feature_file(kind)
        if "/" not in name and name not in names:
            names.append(name)
    return names


# ----------------------------------------------------------------------------------- runs


def run_config(path: Path) -> dict | None:
    """The marked config.json of a run folder (the TrainConfig fields, plus the mark), or None."""
    doc = read_json(Path(path) / RUN_CONFIG)
    if doc is None or doc.get("kind") != RUN_KIND:
        return None
    return doc


def is_talkgs_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a torch.save zip whose pickle names talkgs' checkpoint kind (no torch)."""
    try:
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            return name is not None and CHECKPOINT_KIND in z.read(name)
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def run_checkpoint(run: Path) -> Path:
    """The checkpoint a run argument names: RUN/checkpoints/latest.pt, or the file itself."""
    run = Path(run)
    return run / "checkpoints" / "latest.pt" if run.is_dir() or not run.suffix else run


def is_run(path: Path) -> bool:
    path = Path(path)
    if not path.is_dir():
        return False
    return run_config(path) is not None or is_talkgs_checkpoint(path / "checkpoints" / "latest.pt")


# ----------------------------------------------------------------------------------- export-tg


def tg_export_files() -> list[str]:
    """Names `talkgs export-tg` writes into the original's data folder."""
    from talkgs.interop import tg_layout as tg

    names = [tg.TRANSFORMS_TRAIN, tg.TRANSFORMS_VAL, tg.ORI_IMGS, tg.GT_IMGS, tg.PARSING, tg.TORSO_IMGS,
             tg.TEETH_MASK, tg.BACKGROUND, tg.AU_CSV, tg.AUDIO_WAV]
    for files in tg.FEATURE_FILES.values():
        names += [f for f in files if f not in names]
    return names


def is_tg_export(path: Path) -> bool:
    from talkgs.interop import tg_layout as tg

    doc = read_json(Path(path) / tg.TRANSFORMS_TRAIN)
    return doc is not None and isinstance(doc.get(tg.MARKER_KEY), dict)


# ----------------------------------------------------------------------------------- mp4 tag


def _mp4_boxes(f, end: int):
    """(type, payload offset, payload size) of the boxes in ``f`` from its position to ``end``."""
    while f.tell() + 8 <= end:
        start = f.tell()
        size, kind = struct.unpack(">I4s", f.read(8))
        header = 8
        if size == 1:
            size = struct.unpack(">Q", f.read(8))[0]
            header = 16
        elif size == 0:
            size = end - start
        if size < header or start + size > end:
            return
        yield kind, start + header, size - header
        f.seek(start + size)


def is_talkgs_video(path: Path, max_moov: int = 64 << 20) -> bool:
    """Whether the mp4 at ``path`` carries talkgs' ``comment`` tag (see :func:`made_by`)."""
    path = Path(path)
    try:
        end = path.stat().st_size
        with open(path, "rb") as f:
            for kind, offset, size in _mp4_boxes(f, end):
                if kind == b"moov":
                    if size > max_moov:
                        return False
                    f.seek(offset)
                    return MADE_BY.encode() in f.read(size)
    except (OSError, struct.error):
        return False
    return False


# ----------------------------------------------------------------------------------- PNG tag

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_KEY = b"Software"


def png_with_tag(png: bytes, text: str) -> bytes:
    """PNG bytes with a ``tEXt`` chunk ``Software`` = ``text`` right after the header chunk."""
    if not png.startswith(_PNG_SIGNATURE):
        raise ValueError("not PNG data")
    ihdr_end = len(_PNG_SIGNATURE) + 8 + struct.unpack(">I", png[8:12])[0] + 4
    body = b"tEXt" + _PNG_KEY + b"\0" + text.encode("latin-1", "replace")
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
    return png[:ihdr_end] + chunk + png[ihdr_end:]


def is_talkgs_png(path: Path) -> bool:
    """Whether the PNG at ``path`` has talkgs' ``tEXt`` tag (chunks before the image data only)."""
    try:
        with open(path, "rb") as f:
            if f.read(8) != _PNG_SIGNATURE:
                return False
            while True:
                head = f.read(8)
                if len(head) < 8:
                    return False
                size, kind = struct.unpack(">I4s", head)
                if kind in (b"IDAT", b"IEND"):
                    return False
                data = f.read(size)
                f.seek(4, 1)
                if kind == b"tEXt" and data.startswith(_PNG_KEY + b"\0") and MADE_BY.encode() in data:
                    return True
    except (OSError, struct.error):
        return False
