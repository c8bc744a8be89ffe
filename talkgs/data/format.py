"""The dataset folder format (see docs/design.md and README "Dataset layout").

One definition of the file names, label values and meta.json checks, shared by the writer
(`talkgs.prepare.pipeline`), the loader and `talkgs inspect`.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from talkgs.errors import DatasetError

FORMAT_VERSION = 1

META = "meta.json"
FRAMES = "frames.mp4"
AUDIO = "audio.wav"
LABELS = "labels.npz"
TRACKS = "tracks.npz"
BACKGROUND = "background.png"

# Semantic classes of the per-frame label maps.
LABEL_BACKGROUND = 0
LABEL_TORSO = 1  # torso and neck
LABEL_HAIR = 2  # head but not face (hair, ears, hat)
LABEL_FACE = 3
LABEL_MOUTH = 4  # mouth interior: inside the inner-lip contour
LABEL_NAMES = {
    LABEL_BACKGROUND: "background",
    LABEL_TORSO: "torso+neck",
    LABEL_HAIR: "hair",
    LABEL_FACE: "face",
    LABEL_MOUTH: "mouth interior",
}

REQUIRED_FILES = (META, FRAMES, AUDIO, LABELS, TRACKS, BACKGROUND)

TRACK_KEYS = (
    "landmarks",
    "landmarks_z",
    "landmark_interpolated",
    "w2c",
    "w2c_raw",
    "reproj_error_px",
    "mouth_open",
    "mouth_gap_px",
    "eye_ratio",
    "blink",
    "lips_box",
    "face_box",
    "shot",
)


def audio_feature_file(kind: str) -> str:
    """File name of a stored audio feature kind, e.g. ``audio_mel.npy``."""
    return f"audio_{kind}.npy"


def feature_options(meta: dict, kind: str) -> dict:
    """The options a dataset's ``kind`` features were computed with (meta.json), ``{}`` for
    the kind's defaults or a kind the dataset does not hold."""
    return dict((((meta.get("audio") or {}).get("features") or {}).get(kind) or {}).get("options") or {})


def read_meta(root: str | Path, check_files: bool = True, what: str = "dataset") -> dict:
    """Read and validate ``meta.json``; one-line DatasetError on any problem, naming the folder
    as ``what`` (e.g. ``--drive dataset``)."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{what} {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"{what} {root} is a file; a dataset is a folder written by `talkgs prepare`")
    meta_path = root / META
    if not meta_path.is_file():
        raise DatasetError(
            f"{what} {root} is not a complete talkgs dataset (no {META}); run `talkgs prepare` first"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(f"{meta_path} is unreadable: {e}") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{meta_path} is not a talkgs dataset's meta.json")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise DatasetError(
            f"{what} {root} has dataset format version {version!r}; this talkgs reads version {FORMAT_VERSION}"
        )
    if check_files:
        missing = [f for f in REQUIRED_FILES if not (root / f).is_file()]
        if missing:
            raise DatasetError(f"{what} {root} is missing {', '.join(missing)}")
    return meta


# --------------------------------------------------------------------------- reading the arrays
# A damaged file (cut short, overwritten, not an .npz) is a one-line DatasetError naming it,
# never a traceback from zipfile or numpy.

_DAMAGE = ("is damaged or unreadable", "re-run `talkgs prepare --force` (or import-tg) to rebuild the dataset")


def _damaged(path, e: BaseException) -> DatasetError:
    from talkgs.errors import short

    return DatasetError(f"{path} {_DAMAGE[0]} ({short(e, 80)}); {_DAMAGE[1]}")


def load_tracks(root: str | Path, keys=None, start: int = 0, stop: int | None = None) -> dict:
    """Arrays of ``tracks.npz`` (all, or ``keys``), rows ``[start:stop]``."""
    import zipfile

    import numpy as np

    path = Path(root) / TRACKS
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in (keys or ()) if k not in z.files]
            if missing:
                raise DatasetError(f"{path} lacks {', '.join(missing)}")
            return {k: z[k][start:stop] for k in (keys or z.files)}
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise _damaged(path, e) from None


def _npy_header(f) -> tuple[tuple[int, ...], str]:
    """(shape, dtype string) from the header of an open .npy stream, without reading the data."""
    import numpy as np

    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(f)
    return tuple(shape), dtype.str


def check_npz(path: str | Path, keys=(), rows: int | None = None) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of the arrays in an .npz, from its zip directory and the array headers
    only (nothing is decompressed beyond them). One-line DatasetError naming the file when it is
    missing, not a complete zip archive (e.g. cut short), lacks one of ``keys``, or when an
    array of ``keys`` does not have ``rows`` rows."""
    import zipfile
    import zlib

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path} does not exist")
    try:
        with zipfile.ZipFile(path) as z:
            shapes = {}
            for name in z.namelist():
                if name.endswith(".npy"):
                    with z.open(name) as f:
                        shapes[name[:-4]] = _npy_header(f)[0]
    except (OSError, ValueError, EOFError, zlib.error, zipfile.BadZipFile, zipfile.LargeZipFile) as e:
        raise _damaged(path, e) from None
    missing = [k for k in keys if k not in shapes]
    if missing:
        raise DatasetError(f"{path} lacks {', '.join(missing)}; {_DAMAGE[1]}")
    if rows is not None:
        for k in keys:
            if not shapes[k] or shapes[k][0] != rows:
                raise DatasetError(f"{path}: {k} has shape {shapes[k]}, not {rows} rows (the dataset's frames); {_DAMAGE[1]}")
    return shapes


def check_npy(path: str | Path, rows: int | None = None) -> tuple[int, ...]:
    """Shape of a stored .npy array from its header (the data is not read); one-line
    DatasetError when it is missing, damaged, shorter than its header says or not ``rows`` long."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path} does not exist")
    try:
        with open(path, "rb") as f:
            shape, dtype = _npy_header(f)
            size = f.tell() + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    except (OSError, ValueError, EOFError, TypeError) as e:
        raise _damaged(path, e) from None
    if path.stat().st_size < size:
        raise _damaged(path, ValueError(f"{path.stat().st_size} bytes where its header needs {size}"))
    if rows is not None and (not shape or shape[0] != rows):
        raise DatasetError(f"{path} has shape {shape}, not {rows} rows (the dataset's frames); {_DAMAGE[1]}")
    return shape


def check_arrays(root: str | Path, meta: dict, audio_kinds=(), labels: bool = True, what: str = "dataset") -> None:
    """The arrays a command will read from dataset ``root``, checked without loading them:
    tracks.npz (zip directory, a row per frame in its landmarks and cameras), labels.npz (zip
    directory) and the ``audio_<kind>.npy`` files of ``audio_kinds`` (header, length). One line
    on damage."""
    n = int(meta["n_frames"])
    root = Path(root)
    if not (root / TRACKS).is_file():
        raise DatasetError(f"{what} {root} has no {TRACKS}")
    check_npz(root / TRACKS, ("landmarks", "w2c"), rows=n)
    if labels:
        check_npz(root / LABELS, (LABELS_KEY,))
    listed = (meta.get("audio") or {}).get("features") or {}
    for kind in audio_kinds:
        name = (listed.get(kind) or {}).get("file") or audio_feature_file(kind)
        check_npy(root / name, rows=n)


def load_features(path: str | Path):
    """A stored ``audio_<kind>.npy``, memory-mapped."""
    import numpy as np

    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise _damaged(path, e) from None


def load_plate(root: str | Path):
    """``background.png`` as RGB uint8 ``[H, W, 3]``."""
    import cv2

    path = Path(root) / BACKGROUND
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetError(f"{path} {_DAMAGE[0]} (not a readable image); {_DAMAGE[1]}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------- label maps on disk
# Label values fit in 4 bits, so two pixels share a byte ("nibbles"); with zlib level 3 this
# is ~4x faster to write than plain np.savez_compressed and smaller (4.7 vs 4.3-8.3 MB on the
# 71 s anchor clip), which matters for the 64 MiB that can travel to a GPU machine.
LABELS_KEY = "labels_nibbles"
LABELS_ZLIB_LEVEL = 3


def save_labels(path: str | Path, labels) -> None:
    """Write uint8 label maps ``[N, H, W]`` (values < 16) to an .npz at ``path`` (not atomic:
    callers pass a temporary path)."""
    import numpy as np

    labels = np.asarray(labels, dtype=np.uint8)
    if labels.ndim != 3:
        raise DatasetError("label maps must be uint8 [N, H, W] with values below 16")
    write_labels(path, [labels], labels.shape[0])


def write_labels(path: str | Path, chunks, n_frames: int) -> None:
    """Write the label maps of ``n_frames`` frames, given as uint8 chunks ``[k, H, W]`` (values
    < 16) in frame order, to an .npz at ``path`` as :func:`save_labels` does, packing and
    compressing a chunk at a time (a long clip's maps never sit in memory whole; not atomic)."""
    import zipfile

    import numpy as np

    chunks = iter(chunks)
    first = next(chunks, None)
    if first is None or np.asarray(first).ndim != 3:
        raise DatasetError("label maps must be uint8 [N, H, W] with values below 16")
    _, h, w = np.asarray(first).shape
    half = (w + 1) // 2
    done = 0
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=LABELS_ZLIB_LEVEL) as z:
        with z.open(f"{LABELS_KEY}.npy", "w", force_zip64=True) as f:
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                      "shape": (int(n_frames), h, half)}
            np.lib.format.write_array_header_1_0(f, header)
            for part in itertools.chain([first], chunks):
                part = np.asarray(part, dtype=np.uint8)
                if part.ndim != 3 or part.shape[1:] != (h, w) or (part.size and part.max() > 15):
                    raise DatasetError("label maps must be uint8 [N, H, W] with values below 16")
                if w % 2:
                    part = np.concatenate([part, np.zeros((part.shape[0], h, 1), np.uint8)], axis=2)
                f.write(np.ascontiguousarray((part[..., 0::2] << 4) | part[..., 1::2]).tobytes())
                done += part.shape[0]
        if done != n_frames:
            raise DatasetError(f"label maps of {done} frames were written where {n_frames} were announced")
        with z.open("width.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, np.ascontiguousarray(np.array(w, np.int64)))  # [1], as written before


def iter_labels(path: str | Path, start: int = 0, stop: int | None = None, chunk: int = 256):
    """uint8 label maps ``[k, H, W]`` of frames ``[start, stop)`` from :func:`save_labels`'
    file, ``chunk`` frames at a time, decompressed as they are read (a long clip's maps never
    sit in memory whole)."""
    import zipfile

    import numpy as np

    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if f"{LABELS_KEY}.npy" not in names or "width.npy" not in names:
                raise DatasetError(f"{path} holds no label maps ({LABELS_KEY})")
            with z.open("width.npy") as f:
                w = int(np.lib.format.read_array(f).reshape(-1)[0])
            with z.open(f"{LABELS_KEY}.npy") as f:
                major, _ = np.lib.format.read_magic(f)
                header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = header(f)
                if fortran or dtype != np.uint8 or len(shape) != 3:
                    raise DatasetError(f"{path}: {LABELS_KEY} is not uint8 [N, H, W/2]")
                n, h, half = shape
                stop = n if stop is None else min(stop, n)
                row = h * half
                f.seek(start * row, 1) if f.seekable() else f.read(start * row)
                for a in range(start, stop, chunk):
                    k = min(chunk, stop - a)
                    buf = f.read(k * row)
                    if len(buf) != k * row:
                        raise DatasetError(f"{path}: label maps end before frame {stop}")
                    packed = np.frombuffer(buf, np.uint8).reshape(k, h, half)
                    out = np.empty((k, h, half * 2), np.uint8)
                    out[..., 0::2] = packed >> 4
                    out[..., 1::2] = packed & 15
                    yield out[..., :w]
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError, KeyError, IndexError, zipfile.BadZipFile) as e:
        raise _damaged(path, e) from None


def load_labels(path: str | Path, start: int = 0, stop: int | None = None):
    """uint8 label maps ``[stop - start, H, W]`` from :func:`save_labels`' file."""
    import numpy as np

    return np.concatenate(list(iter_labels(path, start, stop, chunk=1 << 30)))
