"""Lazy access to the two decoders talkgs can use, and mapping of their failures to MediaError.

PyAV (``av``) is the main backend: it reads and writes video and audio. The GPU machine has
no PyAV, only OpenCV built with FFmpeg, so reading video frames falls back to
``cv2.VideoCapture``. Nothing here imports ``av`` or ``cv2`` at module import time.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

from talkgs.errors import MediaError

BACKENDS = ("auto", "av", "cv2")


def import_av() -> Any | None:
    """The ``av`` module, or None where PyAV is not installed."""
    try:
        import av
    except ImportError:
        return None
    return av


def require_av(what: str) -> Any:
    """The ``av`` module; MediaError naming ``what`` needs it where PyAV is missing."""
    av = import_av()
    if av is None:
        raise MediaError(f"{what} needs PyAV (pip install av), which is not installed here")
    return av


def resolve_backend(backend: str) -> str:
    """'av' or 'cv2' for a requested backend ('auto' prefers PyAV)."""
    if backend not in BACKENDS:
        raise MediaError(f"unknown media backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "av" if import_av() is not None else "cv2"
    if backend == "av":
        require_av("the 'av' media backend")
    return backend


def check_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path; MediaError when it does not name an existing file."""
    p = Path(path)
    if not p.exists():
        raise MediaError(f"{p}: no such file")
    if not p.is_file():
        raise MediaError(f"{p}: not a file")
    return p


def one_line(e: BaseException) -> str:
    """A one-line description of a decoder exception (FFmpeg messages can hold newlines)."""
    msg = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return " ".join(str(msg).split())


@contextlib.contextmanager
def open_av_input(path: str | os.PathLike) -> Iterator[Any]:
    """An opened PyAV input container; unreadable or non-media files raise MediaError."""
    av = require_av(f"reading {path}")
    p = check_file(path)
    try:
        container = av.open(str(p), mode="r")
    except av.FFmpegError as e:
        raise MediaError(f"{p}: not a readable media file ({one_line(e)})") from None
    try:
        yield container
    finally:
        container.close()


@contextlib.contextmanager
def open_cv2_capture(path: str | os.PathLike) -> Iterator[Any]:
    """An opened ``cv2.VideoCapture`` (FFmpeg backend); MediaError when it cannot open."""
    import cv2

    p = check_file(path)
    cap = cv2.VideoCapture(str(p), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        raise MediaError(f"{p}: not a readable video file (OpenCV could not open it)")
    try:
        yield cap
    finally:
        cap.release()
