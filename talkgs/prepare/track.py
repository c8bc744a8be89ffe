"""Face landmarks and person masks for every frame: MediaPipe FaceMesh + SelfieSegmentation.

One pass over the frames. FaceMesh runs in tracking mode (``static_image_mode=False``):
after the first detection it follows the face from the previous frame's landmarks, which
is both faster and steadier than detecting on every frame. Selfie segmentation runs in a
second thread: MediaPipe releases the GIL while its graph runs, so on 2 cores the two
models overlap (measured on the anchor clip: 13.6 ms/frame in sequence, 8.5 ms threaded).

Selfie model: ``model_selection=1`` (the "landscape" model). On the anchor clip's
head-and-shoulders frames both models give the same silhouette, but the general model (0)
leaves a 2-3 px halo of "person" on the background all around the head and shoulders
(~2800 px per 512x512 frame more than model 1, 1.9 % vs 0.5 % of clearly-background pixels
above 0.5) and is ~1.4x slower.

mediapipe is imported inside the functions so that importing talkgs.prepare stays cheap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import queue
import sys
import tempfile
import threading
from typing import Iterable, Iterator

import numpy as np

from talkgs.errors import PrepareError
from talkgs.landmarks import N_LANDMARKS

SELFIE_MODEL = 1


@dataclasses.dataclass
class TrackResult:
    """Per-frame tracking output (N frames of H x W pixels).

    landmarks    float32 [N, 478, 2]  FaceMesh points in pixels (talkgs continuous
                 coordinates: normalised x, y times W, H); zeros where not detected
    landmarks_z  float32 [N, 478]     MediaPipe relative depth times W (weak, not metric)
    detected     bool    [N]          a face was found on the frame
    person       uint8   [N, H, W]    selfie-segmentation person probability times 255
    """

    landmarks: np.ndarray
    landmarks_z: np.ndarray
    detected: np.ndarray
    person: np.ndarray

    @property
    def n_frames(self) -> int:
        return len(self.detected)


def mediapipe_missing() -> str | None:
    """None where MediaPipe imports here; else why not, in one line (callers outside
    ``talkgs.prepare`` ask this instead of importing mediapipe themselves)."""
    try:
        import mediapipe  # noqa: F401
    except ImportError as e:
        return f"mediapipe is not installed here ({e}; pip install talkgs[prepare])"
    return None


def _check_frame(frame: np.ndarray, index: int, shape: tuple[int, ...] | None) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        desc = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise PrepareError(f"frame {index} must be RGB uint8 [H, W, 3], got {desc}")
    if shape is not None and frame.shape != shape:
        raise PrepareError(f"frame {index} has shape {frame.shape}, earlier frames {shape}")
    # MediaPipe needs C-contiguous memory; decoded frames usually are already.
    return np.ascontiguousarray(frame)


def _mesh_points(result, width: int, height: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(xy [478, 2] pixels, z [478])`` of the first face, or None."""
    if not result.multi_face_landmarks:
        return None
    lm = result.multi_face_landmarks[0].landmark
    arr = np.array([(p.x, p.y, p.z) for p in lm], dtype=np.float32)
    if arr.shape[0] != N_LANDMARKS:
        raise PrepareError(
            f"FaceMesh returned {arr.shape[0]} landmarks, expected {N_LANDMARKS} (refine_landmarks=True)"
        )
    xy = arr[:, :2] * np.array([width, height], np.float32)
    return xy, arr[:, 2] * np.float32(width)


class _Masks:
    """Person masks ``uint8 [H, W]`` in frame order: appended to a ``spool`` file as they come
    (``track_video(person_to=)``: memory stays flat), else written into one preallocated
    ``[n, H, W]`` array when the frame count is known (a list stacked at the end held every mask
    twice)."""

    def __init__(self, n_hint: int | None, spool=None) -> None:
        self.n_hint = n_hint
        self.spool = spool
        self.shape: tuple[int, ...] | None = None
        self.array: np.ndarray | None = None
        self.extra: list[np.ndarray] = []  # masks past the hint, or all of them without one
        self.count = 0

    def append(self, mask: np.ndarray) -> None:
        self.shape = mask.shape
        if self.spool is not None:
            self.spool.write(np.ascontiguousarray(mask, np.uint8).tobytes())
            self.count += 1
            return
        if self.array is None and self.n_hint:
            self.array = np.empty((self.n_hint, *mask.shape), np.uint8)
        if self.array is not None and self.count < len(self.array):
            self.array[self.count] = mask
        else:
            self.extra.append(mask)
        self.count += 1

    def __len__(self) -> int:
        return self.count

    def save_spooled(self, path) -> None:
        """Write the spooled masks to ``path`` as a ``uint8 [count, H, W]`` .npy, a block at a time."""
        import shutil

        self.spool.flush()
        self.spool.seek(0)
        with open(path, "wb") as f:
            header = {"descr": "|u1", "fortran_order": False, "shape": (self.count, *(self.shape or (0, 0)))}
            np.lib.format.write_array_header_1_0(f, header)
            shutil.copyfileobj(self.spool, f, 1 << 24)

    def stacked(self) -> np.ndarray:
        """``uint8 [count, H, W]`` (the preallocated array itself when it was filled exactly)."""
        if self.array is None:
            return np.stack(self.extra)
        if self.count == len(self.array):
            return self.array
        head = self.array[: min(self.count, len(self.array))]
        return np.concatenate([head, np.stack(self.extra)]) if self.extra else head


def _selfie_worker(jobs: "queue.Queue", masks: _Masks, errors: list) -> None:
    """Consume frames from ``jobs`` (None ends) and append uint8 masks to ``masks``."""
    import mediapipe as mp

    try:
        with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=SELFIE_MODEL) as seg:
            while True:
                frame = jobs.get()
                if frame is None:
                    return
                m = seg.process(frame).segmentation_mask  # float32 [H, W] in [0, 1]
                masks.append((np.clip(m, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    except BaseException as e:  # surfaced by the main thread
        errors.append(e)
        # Keep draining so the producer never blocks on a full queue.
        while jobs.get() is not None:
            pass


@contextlib.contextmanager
def native_logs_hidden() -> Iterator[None]:
    """Hide what MediaPipe's C++ side (TensorFlow Lite, absl, glog) writes to stderr, unless the
    environment sets TALKGS_VERBOSE (``--verbose``). Those lines ("Created TensorFlow Lite
    XNNPACK delegate", "W0000 ... inference_feedback_manager.cc ...") come from native threads,
    so no logging setting reaches them: file descriptor 2 goes to a temporary file meanwhile,
    and Python's ``sys.stderr`` (progress bars, talkgs' own messages) to a copy of the real one.
    If tracking fails with something other than a talkgs error, the hidden lines are printed."""
    try:
        redirect = not os.environ.get("TALKGS_VERBOSE") and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        redirect = False  # sys.stderr is not the process's stderr (e.g. captured by a test runner)
    if not redirect:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    log = tempfile.TemporaryFile()
    old_stderr = sys.stderr
    sys.stderr = open(os.dup(saved), "w", buffering=1, encoding=old_stderr.encoding, errors="backslashreplace")
    os.dup2(log.fileno(), 2)
    failed = False
    try:
        yield
    except BaseException as e:
        failed = not isinstance(e, (PrepareError, KeyboardInterrupt))
        raise
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        sys.stderr.close()
        sys.stderr = old_stderr
        if failed:
            log.seek(0)
            sys.stderr.write(log.read().decode("utf-8", "replace"))
        log.close()


def track_video(
    frames: Iterable[np.ndarray],
    n_frames_hint: int | None = None,
    progress: bool = True,
    person_to: str | os.PathLike | None = None,
) -> TrackResult:
    """Track the face and segment the person on every frame, in one pass.

    ``frames``: RGB uint8 ``[H, W, 3]`` images, all the same size (an array ``[N, H, W, 3]``
    or any iterable, e.g. a decoder). ``n_frames_hint`` sizes the progress bar and the person
    masks' array when ``frames`` has no ``len``. ``person_to``: write the person masks to this
    .npy as they come instead of returning them (``person`` None). Frames without a face get zero
    landmarks and ``detected=False``; :func:`fill_missing` decides whether that is acceptable.
    """
    with native_logs_hidden():
        if person_to is None:
            return _track_video(frames, n_frames_hint, progress, _Masks(n_frames_hint))
        with tempfile.TemporaryFile(dir=os.path.dirname(os.fspath(person_to)) or None) as spool:
            masks = _Masks(n_frames_hint, spool)
            result = _track_video(frames, n_frames_hint, progress, masks)
            masks.save_spooled(person_to)
            return result


def _track_video(frames: Iterable[np.ndarray], n_frames_hint: int | None, progress: bool,
                 masks: _Masks) -> TrackResult:
    import mediapipe as mp
    from talkgs.console import ProgressBar

    if n_frames_hint is None and hasattr(frames, "__len__"):
        n_frames_hint = len(frames)  # type: ignore[arg-type]

    jobs: queue.Queue = queue.Queue(maxsize=8)
    errors: list[BaseException] = []
    worker = threading.Thread(target=_selfie_worker, args=(jobs, masks, errors), daemon=True)
    worker.start()

    xys: list[np.ndarray] = []
    zs: list[np.ndarray] = []
    detected: list[bool] = []
    shape = None
    missing_xy = missing_z = None
    try:
        with mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False, max_num_faces=1, refine_landmarks=True
        ) as mesh:
            for i, frame in enumerate(ProgressBar(frames, total=n_frames_hint, desc="track", disable=not progress)):
                frame = _check_frame(frame, i, shape)
                if shape is None:
                    shape = frame.shape
                    missing_xy = np.zeros((N_LANDMARKS, 2), np.float32)
                    missing_z = np.zeros((N_LANDMARKS,), np.float32)
                if errors:
                    break
                jobs.put(frame)
                pts = _mesh_points(mesh.process(frame), shape[1], shape[0])
                detected.append(pts is not None)
                xy, z = pts if pts is not None else (missing_xy, missing_z)
                xys.append(xy)
                zs.append(z)
    finally:
        jobs.put(None)
        worker.join()
    if errors:
        raise PrepareError(f"selfie segmentation failed: {errors[0]}") from errors[0]
    if shape is None:
        raise PrepareError("no frames to track")
    if len(masks) != len(detected):
        raise PrepareError(f"internal: {len(masks)} person masks for {len(detected)} frames")
    return TrackResult(
        landmarks=np.stack(xys),
        landmarks_z=np.stack(zs),
        detected=np.asarray(detected, bool),
        person=None if masks.spool is not None else masks.stacked(),
    )


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Half-open ``[start, stop)`` runs of True in a bool ``[N]`` array."""
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def _frame_list(idx: np.ndarray, limit: int = 8) -> str:
    head = ", ".join(str(int(i)) for i in idx[:limit])
    return head + (", ..." if len(idx) > limit else "")


def fill_missing(
    landmarks: np.ndarray,
    detected: np.ndarray,
    max_gap: int = 5,
    max_missing_fraction: float = 0.01,
) -> tuple[np.ndarray, np.ndarray]:
    """Linearly interpolate frames where the detector missed the face.

    ``landmarks [N, ...]`` (e.g. ``[N, 478, 2]``; any per-frame array works, so the same
    call fills ``landmarks_z``), ``detected [N]`` bool. Returns ``(filled [N, ...] float32,
    interpolated [N] bool)``. Misses at the start or end copy the nearest detected frame.

    Raises PrepareError when more than ``max_missing_fraction`` of the frames have no face
    or a run of misses is longer than ``max_gap`` frames (a stretch that long is not an
    isolated miss, and interpolating it would invent motion); the message names the
    first missed frames.
    """
    landmarks = np.asarray(landmarks)
    detected = np.asarray(detected, bool)
    n = len(detected)
    if landmarks.shape[0] != n:
        raise PrepareError(f"landmarks have {landmarks.shape[0]} frames but detected has {n}")
    missed = np.flatnonzero(~detected)
    if n == 0:
        raise PrepareError("no frames to fill")
    if len(missed) == n:
        raise PrepareError(f"no face found in any of the {n} frames")
    if len(missed) > max_missing_fraction * n:
        raise PrepareError(
            f"no face found in {len(missed)} of {n} frames (first: {_frame_list(missed)}); "
            f"at most {max_missing_fraction:.1%} may be missing"
        )
    runs = _runs(~detected)
    long_runs = [(a, b) for a, b in runs if b - a > max_gap]
    if long_runs:
        a, b = long_runs[0]
        raise PrepareError(
            f"no face found in {b - a} consecutive frames {a}-{b - 1} "
            f"(first misses: {_frame_list(missed)}); at most {max_gap} can be interpolated"
        )
    out = landmarks.astype(np.float32, copy=True)
    for a, b in runs:
        if a == 0:
            out[a:b] = out[b]
        elif b == n:
            out[a:b] = out[a - 1]
        else:
            # Weights of the next detected frame for each missed frame in (a-1, b).
            w = (np.arange(a, b) - (a - 1)) / (b - (a - 1))
            w = w.reshape((-1,) + (1,) * (out.ndim - 1)).astype(np.float32)
            out[a:b] = (1.0 - w) * out[a - 1] + w * out[b]
    return out, ~detected
