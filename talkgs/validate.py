"""The path rules every command shares: inputs that must exist, and outputs that may be written.

Each command's checks (``talkgs.commands.<name>.check``) use these before any heavy import, so
a refusal answers with one line (``talkgs: <problem>``, exit 2) and has written nothing. This
module imports neither torch nor a media library.

Outputs follow one rule (the marks are in :mod:`talkgs.provenance`): a path that exists and was not
made by talkgs for this purpose is never replaced or deleted; ``--force`` replaces only what
talkgs itself made there; an output that is (or would replace) an input is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

from talkgs import provenance as owner
from talkgs.data import format as fmt
from talkgs.errors import DatasetError, OutputError, TalkgsError, UsageError


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
    """meta.json of a clip that drives a head (``--drive``, ``--drive-video``, other speakers):
    only its meta, tracks and audio are read (a clip carried without frames, labels or plate
    still drives a head); its tracks.npz is checked for damage. Errors name it as ``what``."""
    p = Path(path)
    meta = _meta(p, what, check_files=False)
    fmt.check_arrays(p, meta, labels=False, what=what)
    return meta


def input_dataset(path: str | os.PathLike, what: str = "dataset") -> dict:
    """meta.json of the dataset folder ``path`` (complete, known format); DatasetError otherwise."""
    return _meta(Path(path), what)


def _meta(p: Path, what: str, check_files: bool = True) -> dict:
    meta = fmt.read_meta(p, check_files=check_files, what=what)
    if not isinstance(meta.get("n_frames"), int) or meta["n_frames"] < 1:
        raise DatasetError(f"{p / fmt.META} has no valid n_frames")
    return meta


def no_file_on_the_way(out: Path) -> None:
    """OutputError when a parent of ``out`` that exists is a file (the folder cannot be made)."""
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
    no_file_on_the_way(out)
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
    no_file_on_the_way(out)
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
