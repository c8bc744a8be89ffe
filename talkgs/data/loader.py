"""Load a whole prepared dataset onto one device in one call.

Frames, label maps and the plate stay uint8 on the device (the trainer converts per batch), so
a GPU holds a long clip (10 min of 512x512: 15,000 frames, 15.7 GB) with no per-iteration disk
I/O. Frames and maps are decoded a chunk at a time straight into their device tensors, so host
memory holds one chunk, not the clip.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from talkgs import conventions
from talkgs.data import format as fmt
from talkgs.errors import DatasetError
from talkgs.landmarks import measure_offsets


@dataclasses.dataclass
class Dataset:
    """A prepared clip resident on ``device``. N frames of H x W.

    frames      uint8 [N, H, W, 3] RGB
    labels      uint8 [N, H, W] (talkgs.data.format LABEL_*)
    background  uint8 [H, W, 3]
    w2c         float32 [N, 4, 4] world-to-camera (talkgs.conventions)
    K           float32 [3, 3] intrinsics for this (possibly rescaled) size
    tracks      every array of tracks.npz as a tensor (pixels rescaled with the frames)
    audio       float32 [N, W, C] features of ``audio_kind`` (None if not loaded)
    train_idx / val_idx  int64 frame indices (relative to the loaded range)
    """

    root: Path
    meta: dict
    frames: torch.Tensor | None
    labels: torch.Tensor | None
    background: torch.Tensor
    w2c: torch.Tensor
    K: torch.Tensor
    tracks: dict[str, torch.Tensor]
    audio: torch.Tensor | None
    audio_kind: str | None
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    width: int
    height: int
    frame_offset: int = 0

    @property
    def n_frames(self) -> int:
        return int(self.w2c.shape[0])

    @property
    def device(self) -> torch.device:
        return self.w2c.device

    @property
    def nbytes(self) -> int:
        """Bytes the clip holds on its device (frames, maps, plate, tracks, features)."""
        held = [self.frames, self.labels, self.background, self.w2c, self.audio, *self.tracks.values()]
        return sum(t.numel() * t.element_size() for t in held if t is not None)


def label_area(labels: torch.Tensor, label: int, chunk: int = 256) -> torch.Tensor:
    """``int64 [N]`` pixels of each map in ``labels [N, H, W]`` equal to ``label``, on their
    device, ``chunk`` maps at a time (summing a whole clip's mask at once widens it to int64
    first: 8 bytes a pixel, 29 GiB for 10 min of 512x512)."""
    out = torch.empty(labels.shape[0], dtype=torch.int64, device=labels.device)
    for a in range(0, labels.shape[0], chunk):
        out[a : a + chunk] = (labels[a : a + chunk] == label).flatten(1).sum(1)
    return out


_PIXEL_TRACKS = ("landmarks", "lips_box", "face_box", "mouth_gap_px", "reproj_error_px", "landmarks_fan68")


def _resize(images: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    import cv2

    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    return np.stack([cv2.resize(im, size, interpolation=interp) for im in images])


def _load_images(root: Path, start: int, stop: int, size: tuple[int, int], device, chunk: int):
    """``(frames uint8 [n, H, W, 3], labels uint8 [n, H, W])`` of frames ``[start, stop)`` at
    ``size`` (W, H) on ``device``, decoded ``chunk`` frames at a time."""
    from talkgs.media import iter_frames

    n, (w, h) = stop - start, size
    frames = torch.empty((n, h, w, 3), dtype=torch.uint8, device=device)
    labels = torch.empty((n, h, w), dtype=torch.uint8, device=device)
    it, i, part = iter_frames(root / fmt.FRAMES, start=start, stop=stop), 0, []
    for frame in it:
        part.append(frame)
        if len(part) == chunk:
            i = _put(frames, i, np.stack(part), size, nearest=False)
            part = []
    if part:
        i = _put(frames, i, np.stack(part), size, nearest=False)
    if i != n:
        raise DatasetError(f"{root / fmt.FRAMES} decoded to {i} frames, expected {n}")
    j = 0
    for maps in fmt.iter_labels(root / fmt.LABELS, start, stop, chunk):
        j = _put(labels, j, maps, size, nearest=True)
    if j != n:
        raise DatasetError(f"{root / fmt.LABELS} holds {j} label maps of frames {start}:{stop}, expected {n}")
    return frames, labels


def _put(dst: torch.Tensor, i: int, images: np.ndarray, size: tuple[int, int], nearest: bool) -> int:
    """Copy ``images [k, ...]`` (resized to ``size`` when it differs) into ``dst[i:i + k]``;
    returns ``i + k``."""
    if images.shape[2] != size[0] or images.shape[1] != size[1]:
        images = _resize(images, size, nearest)
    k = images.shape[0]
    if i + k > dst.shape[0]:
        raise DatasetError(f"more frames than the {dst.shape[0]} expected")
    dst[i : i + k].copy_(torch.from_numpy(np.ascontiguousarray(images)))
    return i + k


def load_dataset(
    root: str | Path,
    device: str | torch.device = "cpu",
    audio_kind: str | None = "mel",
    frame_range: tuple[int, int] | None = None,
    scale: float = 1.0,
    load_images: bool = True,
    chunk: int = 128,
) -> Dataset:
    """Load ``root`` onto ``device``.

    ``frame_range`` (start, stop) loads a contiguous part (the split is intersected with it);
    ``scale`` resizes frames (area), labels (nearest) and the plate, and rescales the
    intrinsics and pixel-valued tracks consistently (talkgs.conventions.scale_intrinsics).
    ``load_images=False`` skips frames and labels (for rendering new audio). Frames and maps
    are decoded ``chunk`` at a time (host memory holds one chunk).
    """
    root = Path(root)
    meta = fmt.read_meta(root)
    n = int(meta["n_frames"])
    start, stop = frame_range if frame_range is not None else (0, n)
    if not (0 <= start < stop <= n):
        raise DatasetError(f"frame range {start}:{stop} is outside the dataset's {n} frames")
    width = int(round(meta["width"] * scale))
    height = int(round(meta["height"] * scale))

    frames = labels = None
    if load_images:
        frames, labels = _load_images(root, start, stop, (width, height), device, chunk)

    import cv2

    plate = fmt.load_plate(root)
    if scale != 1.0:
        plate = cv2.resize(plate, (width, height), interpolation=cv2.INTER_AREA)

    tracks: dict[str, torch.Tensor] = {}
    for key, arr in fmt.load_tracks(root, start=start, stop=stop).items():
        if arr.shape[0] != stop - start:
            raise DatasetError(f"{root / fmt.TRACKS}: {key} has too few rows for frames {start}:{stop}")
        if key in _PIXEL_TRACKS and scale != 1.0:
            arr = arr * scale
        tracks[key] = torch.from_numpy(np.ascontiguousarray(arr)).to(device)
    if "w2c" not in tracks:
        raise DatasetError(f"{root / fmt.TRACKS} lacks w2c")

    intr = meta["intrinsics"]
    K = conventions.intrinsics(intr["fx"], intr["fy"], intr["cx"], intr["cy"])
    K = conventions.scale_intrinsics(K, scale)

    audio = None
    if audio_kind is not None:
        path = root / fmt.audio_feature_file(audio_kind)
        if not path.is_file():
            kinds = sorted(meta.get("audio", {}).get("features", {}))
            raise DatasetError(
                f"dataset {root} has no '{audio_kind}' audio features (has: {', '.join(kinds) or 'none'})"
            )
        feats = fmt.load_features(path)
        if feats.ndim != 3 or feats.shape[0] != n:
            raise DatasetError(f"{path} has {feats.shape[0]} frames of features, the video has {n}")
        audio = torch.from_numpy(np.array(feats[start:stop], dtype=np.float32)).to(device)

    train_lo, train_hi = meta["split"]["train"]
    val_lo, val_hi = meta["split"]["val"]
    idx = torch.arange(start, stop)
    train_idx = idx[(idx >= train_lo) & (idx < train_hi)] - start
    val_idx = idx[(idx >= val_lo) & (idx < val_hi)] - start

    return Dataset(
        root=root,
        meta=meta,
        frames=frames,
        labels=labels,
        background=torch.from_numpy(np.ascontiguousarray(plate)).to(device),
        w2c=tracks["w2c"].float(),
        K=torch.as_tensor(K, dtype=torch.float32, device=device),
        tracks=tracks,
        audio=audio,
        audio_kind=audio_kind,
        train_idx=train_idx.to(device),
        val_idx=val_idx.to(device),
        width=width,
        height=height,
        frame_offset=start,
    )


def lifted_offsets(root: str | Path, meta: dict, start: int = 0, stop: int | None = None) -> np.ndarray:
    """``[N, 468, 3]`` a prepared clip's tracked landmarks of frames ``[start, stop)`` lifted into
    the head frame (:func:`talkgs.landmarks.measure_offsets`; ``meta`` its meta.json). Reads
    only tracks.npz: a clip carried without frames, labels or plate works."""
    tr = fmt.load_tracks(root, ("landmarks", "w2c"), start, stop)
    intr = meta["intrinsics"]
    K = conventions.intrinsics(intr["fx"], intr["fy"], intr["cx"], intr["cy"])
    return measure_offsets(tr["landmarks"], tr["w2c"], K)
