"""A trained run as the commands see it before torch loads: its config.json, the structure of
its checkpoint and the dataset it uses.

A run folder holds ``config.json`` (the TrainConfig it was trained with, marked as a run, see
:mod:`talkgs.provenance`) and ``checkpoints/latest.pt``, a ``torch.save`` zip archive whose
``data.pkl`` holds a dict of plain values and tensors. :func:`check_checkpoint` reads that dict
without torch (tensors become placeholders), so a damaged or foreign file is refused in one
line before any model code loads. The dataset a run uses is the one it recorded (absolute
path and its source video's sha256) unless the user names another copy.
"""

from __future__ import annotations

import collections
import os
import pickle
import zipfile
import zlib
from pathlib import Path

from talkgs import provenance as owner
from talkgs.data import format as fmt
from talkgs.errors import CheckpointError, DatasetError, short

CHECKPOINT_KIND = owner.CHECKPOINT_KIND.decode()
CHECKPOINT_FORMAT_VERSION = 2  # the layout of talkgs.train.checkpoint.save (TrainState.state_dict)


def check_checkpoint_header(state: object, path: str | os.PathLike) -> None:
    """One-line CheckpointError unless ``state`` (a checkpoint's top-level dict) is a talkgs
    checkpoint of the format version this talkgs reads."""
    if not isinstance(state, dict) or state.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(f"{path} is not a talkgs checkpoint")
    if state.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {state.get('format_version')!r}; this talkgs reads "
            f"{CHECKPOINT_FORMAT_VERSION}"
        )


# ----------------------------------------------------------------------------------- checkpoint


def checkpoint_path(run: str | os.PathLike) -> Path:
    """The checkpoint a run argument names (RUN/checkpoints/latest.pt or a .pt file); one-line
    CheckpointError when it is not there."""
    run = Path(run)
    if not run.exists():
        raise CheckpointError(f"run {run} does not exist")
    ckpt = owner.run_checkpoint(run)
    if run.is_dir() and not ckpt.is_file():
        raise CheckpointError(f"{run} has no checkpoints/latest.pt; a run is a folder written by `talkgs train`")
    return ckpt


class _Placeholder:
    """Stands for a tensor, storage, dtype or device of the pickle: accepts any construction."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


class _Header(pickle.Unpickler):
    """Unpickles a checkpoint's data.pkl without torch: torch's classes and functions become
    :class:`_Placeholder`, storages are not read, and any other global is refused (what
    ``torch.load(weights_only=True)`` would refuse too)."""

    _ALLOWED = {("collections", "OrderedDict"): collections.OrderedDict, ("builtins", "set"): set,
                ("builtins", "frozenset"): frozenset, ("builtins", "slice"): slice,
                ("builtins", "bytearray"): bytearray, ("builtins", "complex"): complex}

    def __init__(self, f):
        super().__init__(f)
        self.storages: list[str] = []

    def find_class(self, module, name):
        if module == "torch" or module.startswith("torch."):
            return _Placeholder
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if (module, name) == ("_codecs", "encode"):
            import codecs

            return codecs.encode
        raise pickle.UnpicklingError(f"it holds a Python object of {module}.{name}")

    def persistent_load(self, pid):
        # torch.save's storage reference: ("storage", storage type, key, location, numel)
        if isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage":
            self.storages.append(str(pid[2]))
        return None


def check_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint's dict (tensors as placeholders) after checking, without torch, that
    ``path`` is a complete torch.save archive of a talkgs checkpoint of this format version:
    its zip directory, its pickle (CRC and content) and the presence of every tensor record.
    One-line CheckpointError otherwise."""
    path = Path(path)
    fix = "it is damaged (cut short or overwritten?); use another checkpoint of the run or train it again"
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            pkl = next((n for n in sorted(names) if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if pkl is None:
                raise CheckpointError(f"{path} is not a talkgs checkpoint (a zip archive without data.pkl)")
            prefix = pkl[: -len("data.pkl")]
            unpickler = _Header(z.open(pkl))
            try:
                state = unpickler.load()
            except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError, ValueError) as e:
                raise CheckpointError(f"{path} is not a talkgs checkpoint ({short(e, 80)})") from None
            lost = [k for k in unpickler.storages if f"{prefix}data/{k}" not in names]
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"checkpoint {path} is not a complete zip archive ({short(e, 60)}); {fix}") from None
    except (OSError, zlib.error, zipfile.LargeZipFile) as e:
        raise CheckpointError(f"checkpoint {path} is unreadable ({short(e, 60)}); {fix}") from None
    check_checkpoint_header(state, path)
    if lost:
        raise CheckpointError(f"checkpoint {path} lacks {len(lost)} of its tensor records; {fix}")
    return state


# ----------------------------------------------------------------------------------- config.json


def saved_config(run: str | os.PathLike) -> dict | None:
    """A run's config.json as a dict (marked, or from before the mark), or None. ``run`` is the
    run folder or a checkpoint inside its ``checkpoints/``."""
    run = Path(run)
    folder = run if run.is_dir() else run.parent.parent
    doc = owner.run_config(folder)
    if doc is None:
        doc = owner.read_json(folder / owner.RUN_CONFIG)
        if doc is None or "audio_kind" not in doc or "dataset" not in doc:
            return None
    return doc


def recorded_dataset(doc: dict | None, state: dict | None = None) -> tuple[str | None, str | None]:
    """(dataset path, source sha256) a run records: from its config.json ``doc``, else from its
    checkpoint ``state``. A relative path in config.json (runs made before paths were recorded
    absolute) is not trusted: it depends on the directory the run was started from, and the
    checkpoint holds the absolute one."""
    path, sha = (doc or {}).get("dataset"), (doc or {}).get("dataset_sha256")
    if path is not None and not Path(path).is_absolute():
        path = None
    if state is not None:
        ds = state.get("dataset") or {}
        path = path or ds.get("path") or (state.get("config") or {}).get("dataset")
        sha = sha or ds.get("sha256")
    return path, sha


# ----------------------------------------------------------------------------------- its dataset

# What to tell a user whose run's dataset is not where the run recorded it: render and eval take
# --dataset; serve reads every run's dataset from the recorded path.
PASS_DATASET = "pass --dataset DIR"
PUT_BACK = "put the dataset back at that path (serve has no --dataset; render and eval have)"


def run_dataset_path(run, recorded: str | None, sha256: str | None, override: str | os.PathLike | None = None,
                     advice: str = PASS_DATASET) -> Path:
    """The dataset a run uses: ``override`` (``--dataset``) when given, else the path the run
    recorded. One-line DatasetError ending in ``advice`` when it is missing, not a dataset or
    a dataset of another video (``sha256`` of the run's source video, when known)."""
    if override is not None:
        p = Path(override)
        meta = fmt.read_meta(p, what="--dataset")
        if sha256 and (meta.get("source") or {}).get("sha256") != sha256:
            raise DatasetError(f"--dataset {p} is not the dataset run {run} was trained on (another source video)")
        return p
    if not recorded:
        raise DatasetError(f"run {run} records no dataset; {advice}")
    p = Path(recorded)
    if not p.exists():
        raise DatasetError(f"dataset {p} of run {run} does not exist (moved or deleted?); {advice}")
    try:
        meta = fmt.read_meta(p)
    except DatasetError as e:
        raise DatasetError(f"{e} (the dataset run {run} records; {advice})") from None
    if sha256 and (meta.get("source") or {}).get("sha256") != sha256:
        raise DatasetError(f"dataset {p} of run {run} now holds another video's dataset; {advice}")
    return p


def run_dataset(state: dict, override: str | os.PathLike | None = None) -> Path:
    """The dataset a loaded run (its checkpoint ``state``) uses: ``override`` (``--dataset``)
    when given, else the one the run recorded (see :func:`run_dataset_path`)."""
    path, sha = recorded_dataset(None, state)
    return run_dataset_path(state.get("path", "the run"), path, sha, override)
