"""Crash-safe file output: write under a temporary name in the same folder, then rename.

An interrupted run therefore never leaves a file (or dataset folder) that looks complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _default_mode() -> int:
    """0666 minus the process umask (what a plain open() would give)."""
    return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    ``suffix`` keeps the extension (some writers pick the format from it). On an
    exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, _default_mode())  # mkstemp makes 0600; outputs should be shareable
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def partial_dir(path: str | os.PathLike) -> Path:
    """A new, empty temporary folder beside ``path`` (``.NAME.XXXX.partial``), with the mode a
    plain mkdir would give (mkdtemp makes 0700), so that renamed to ``path`` it is an ordinary
    folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success rename it to ``path``.

    ``path`` must not exist when the block ends (callers decide about --force first).
    """
    path = Path(path)
    tmp = partial_dir(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for the duration of a short critical section (a few renames),
    then deliver them. Only the main thread handles signals, so elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    sigs = (signal.SIGINT, signal.SIGTERM)
    old = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in sigs}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if caught:
            signal.raise_signal(caught[0])


@contextlib.contextmanager
def signals_noted() -> Iterator[list[int]]:
    """Note each SIGINT and SIGTERM as it arrives, then handle it as before (its handler runs as
    usual). The yielded list tells code that catches a library's error whether a signal came
    meanwhile: a signal landing inside a native import can surface as that library's own
    ImportError, without the KeyboardInterrupt. Only the main thread handles signals, so
    elsewhere the list stays empty."""
    noted: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield noted
        return
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def note(signum, frame):
        noted.append(signum)
        previous = old[signum]
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:  # what the default would do, as an interrupt that unwinds
            raise KeyboardInterrupt

    for s, handler in old.items():
        if handler != signal.SIG_IGN:
            signal.signal(s, note)
    try:
        yield noted
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def move_into(src: str | os.PathLike, dst: str | os.PathLike, replace: Iterable[str] = (), last: str | None = None) -> None:
    """Move every entry of the finished folder ``src`` into the folder ``dst``, then remove ``src``.

    ``replace`` names what an earlier run of the same command made in ``dst`` (the only entries
    that may go); entries of ``dst`` that are neither in ``replace`` nor in ``src`` are never
    touched. ``last`` (the file that marks ``dst`` as complete, e.g. meta.json) is taken out
    first and moved in at the end, so an interruption never leaves a folder that looks complete
    but mixes old and new files. The renames run with signals held back; the replaced entries
    are deleted afterwards. A ``dst`` that does not exist is simply ``src`` renamed.
    """
    src, dst = Path(src), Path(dst)
    if not dst.exists():
        os.replace(src, dst)
        return
    new = sorted(p.name for p in src.iterdir())
    # Everything that would be replaced must be ours to replace: a new entry whose name is
    # taken by something else in dst is an error (callers check this before any work).
    clash = [n for n in new if (dst / n).exists() and n not in set(replace) | {last}]
    if clash:
        raise FileExistsError(f"{dst} holds {', '.join(clash)}, which talkgs did not make")
    trash = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent))
    try:
        with signals_deferred():
            old = [n for n in dict.fromkeys([*([last] if last else []), *replace]) if (dst / n).exists() or (dst / n).is_symlink()]
            for n in old:
                os.replace(dst / n, trash / n)
            for n in new:
                if n != last:
                    os.replace(src / n, dst / n)
            if last is not None and (src / last).exists():
                os.replace(src / last, dst / last)
    finally:
        shutil.rmtree(trash, ignore_errors=True)
    shutil.rmtree(src, ignore_errors=True)


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()
