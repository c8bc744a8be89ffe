"""Features computed elsewhere, imported from ``.npy`` files (kinds ``deepspeech``, ``esperanto``,
``hubert``, ...).

``deepspeech`` ``[N, 16, 29]`` (the original TalkingGaussian's ``aud_ds.npy``: 16 windows of
29 character logits per video frame) and ``esperanto`` ``[N, 16, 44]`` (its ``aud_eo.npy``) can
only be imported: neither model runs here. Any registered kind can be imported the same way,
e.g. ``hubert`` from the original's ``aud_hu.npy`` ``[N, 2, 1024]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from talkgs.audio.registry import REGISTRY, get_kind, register
from talkgs.errors import AudioFeatureError, short

DEEPSPEECH_WINDOW = 16
DEEPSPEECH_CHANNELS = 29
ESPERANTO_WINDOW = 16
ESPERANTO_CHANNELS = 44


@register(
    "deepspeech",
    window=DEEPSPEECH_WINDOW,
    channels=DEEPSPEECH_CHANNELS,
    description="DeepSpeech logits, 16 x 29 per video frame (import only, e.g. the original's aud_ds.npy)",
    import_only=True,
    # The original's process.py writes aud.npy, its trainers read aud_ds.npy.
    tg_files=("aud_ds.npy", "aud.npy"),
)
def extract_deepspeech(wav: np.ndarray, n_frames: int, **_opts) -> np.ndarray:
    """Never computes: DeepSpeech features can only be imported."""
    raise AudioFeatureError(
        "deepspeech features cannot be computed here; import them from a .npy "
        "(e.g. the original's aud_ds.npy): talkgs features DATASET --kind deepspeech --import aud_ds.npy"
    )


@register(
    "esperanto",
    window=ESPERANTO_WINDOW,
    channels=ESPERANTO_CHANNELS,
    description="Esperanto ASR logits, 16 x 44 per video frame (import only, the original's aud_eo.npy)",
    import_only=True,
    tg_files=("aud_eo.npy",),
)
def extract_esperanto(wav: np.ndarray, n_frames: int, **_opts) -> np.ndarray:
    """Never computes: Esperanto ASR features can only be imported."""
    raise AudioFeatureError(
        "esperanto features cannot be computed here; import them from a .npy "
        "(the original's aud_eo.npy): talkgs features DATASET --kind esperanto --import aud_eo.npy"
    )


def load_feature_file(path: str | os.PathLike, kind: str, n_frames: int | None = None) -> np.ndarray:
    """Features ``float32 [N, W, C]`` of ``kind`` from a ``.npy`` file, validated.

    - The file must be a plain ``.npy`` array (pickled objects are refused) of finite numbers
      with 3 dimensions.
    - Its per-frame shape must be the kind's ``(W, C)``; the transposed ``[N, C, W]`` layout is
      also accepted (the original TalkingGaussian loader permutes ``aud_ds.npy`` to [N, 29, 16]
      in memory, and such arrays get saved) and is transposed back.
    - ``n_frames`` (the video's frame count), when given: N equal is kept; N one larger is
      trimmed at the end; N one smaller is padded by repeating the last frame (speech features
      have no neutral "zero"); any other N is an AudioFeatureError naming both counts.
    - Only the kind's shape is needed: importing ``hubert`` works without ``transformers``.

    Every problem is a one-line AudioFeatureError naming the file.
    """
    if kind not in REGISTRY:
        get_kind(kind)  # raises the "unknown kind" error listing the known ones
    fk = REGISTRY[kind]  # importing needs only the shape, not the kind's requirements
    p = Path(path)
    if not p.is_file():
        raise AudioFeatureError(f"{p}: no such feature file")
    try:
        with open(p, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise AudioFeatureError(f"{p}: cannot read it ({short(e)})") from None
    # np.load takes anything without the .npy/.npz magic for a pickle, so a text or other file
    # would be reported as "pickled data": say what it really is.
    if not magic.startswith((b"\x93NUMPY", b"PK\x03\x04")):
        what = "it holds pickled Python objects, which talkgs does not load" if magic[:1] == b"\x80" else (
            "it is not a .npy file (no NumPy header)")
        raise AudioFeatureError(f"{p}: {what}; save a plain numeric array with numpy.save")
    try:
        arr = np.load(p, allow_pickle=False)
    except ValueError as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "pickle" in msg:
            msg = "it holds pickled Python objects, which talkgs does not load; save a plain numeric array"
        raise AudioFeatureError(f"{p}: not a readable .npy feature array ({msg})") from None
    except (OSError, EOFError) as e:
        raise AudioFeatureError(f"{p}: cannot read it as a .npy file ({str(e).splitlines()[0] or type(e).__name__})") from None
    if not isinstance(arr, np.ndarray):  # np.load of an .npz gives an NpzFile
        if hasattr(arr, "close"):
            arr.close()
        raise AudioFeatureError(f"{p}: is an .npz archive; save the features as a single .npy array")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise AudioFeatureError(f"{p}: holds {arr.dtype} values; features must be numbers")
    if arr.ndim != 3:
        raise AudioFeatureError(f"{p}: shape {tuple(arr.shape)} is not [N, {fk.window}, {fk.channels}] ({kind})")
    w, c = fk.window, fk.channels
    if arr.shape[1:] == (w, c):
        out = np.array(arr, dtype=np.float32)
    elif arr.shape[1:] == (c, w):
        out = np.ascontiguousarray(np.swapaxes(np.asarray(arr, dtype=np.float32), 1, 2))
    else:
        raise AudioFeatureError(
            f"{p}: per-frame shape {tuple(arr.shape[1:])} does not match {kind}'s ({w}, {c}) "
            f"(or the transposed ({c}, {w}))"
        )
    if not np.isfinite(out).all():
        raise AudioFeatureError(f"{p}: holds NaN or infinite values")
    if n_frames is not None:
        n = int(n_frames)
        have = out.shape[0]
        if have == n + 1:
            out = out[:n]
        elif have == n - 1 and have > 0:
            out = np.concatenate([out, out[-1:]], axis=0)
        elif have != n:
            raise AudioFeatureError(
                f"{p}: has {have} frames of features but the video has {n} frames "
                f"(only a difference of one frame is fitted)"
            )
    return out

