"""Decoding video frames onto talkgs' time grid.

Resampling rule (any source frame rate to ``fps``)
    Times are measured from the first video frame's presentation time. Source frame j is
    shown during [t_j, t_{j+1}) (the last one until the end of the video). Output frame i
    covers [i / fps, (i + 1) / fps), the interval whose audio it is paired with
    (``talkgs.conventions``), and is the source frame whose display interval contains the
    output frame's *centre* (i + 0.5) / fps, i.e. the last source frame with
    t_j <= (i + 0.5) / fps + 0.5 ms (the tolerance absorbs timestamps rounded to a
    millisecond). So an event that a source frame shows and the audio hears during that frame
    lands on the same output frame (or on none, when its source frame is dropped).
    The output has round(video duration * fps) frames. A source already at ``fps`` comes
    out frame for frame; 30 -> 25 fps drops every sixth frame (j = floor((6 i + 3) / 5)).

Backends: PyAV with threaded decoding; where PyAV is missing (the GPU machine),
``cv2.VideoCapture`` with the same rule on its frame timestamps.
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Iterator

import numpy as np

from talkgs.conventions import FPS
from talkgs.errors import MediaError
from talkgs.media._backend import (
    check_file,
    one_line,
    open_av_input,
    open_cv2_capture,
    require_av,
    resolve_backend,
)
from talkgs.media.probe import probe, probe_av

PTS_TOLERANCE_S = 5e-4


class _SeekMissed(Exception):
    """The seek landed after the wanted time; decode from the start instead."""


def grid_sources(
    timed: Iterator[tuple[float, Any]],
    fps: float,
    start: int,
    stop: int | None,
    last_duration_s: float = 0.0,
) -> Iterator[Any]:
    """Apply the resampling rule to ``(t, source)`` pairs in display order (``t`` in seconds
    from the first video frame) and yield the source of output frames start, start+1, ...

    Ends at ``stop`` (exclusive); with ``stop=None`` at round((t_last + last_duration_s) * fps),
    i.e. the video duration when the last source frame lasts ``last_duration_s``.
    Raises _SeekMissed when the first pair already starts after the centre of output ``start`` (> 0).
    """
    i = start
    prev = None
    t = 0.0
    for t, src in timed:
        if prev is None and i > 0 and t > (i + 0.5) / fps + PTS_TOLERANCE_S:
            raise _SeekMissed()
        if prev is not None:
            while (stop is None or i < stop) and (i + 0.5) / fps + PTS_TOLERANCE_S < t:
                yield prev
                i += 1
            if stop is not None and i >= stop:
                return
        prev = src
    if prev is None:
        return
    end = stop if stop is not None else int(round((t + last_duration_s) * fps))
    while i < end:  # outputs whose centre lies inside the last source frame's interval
        yield prev
        i += 1


def _to_rgb_cached(sources: Iterator[Any], convert) -> Iterator[np.ndarray]:
    """Convert each distinct source once; repeated sources yield a copy (callers may mutate)."""
    last_src = None
    last = None
    for src in sources:
        if src is last_src:
            yield last.copy()
        else:
            last_src, last = src, convert(src)
            yield last


def iter_frames(
    path: str | os.PathLike, fps: float = FPS, *, start: int = 0, stop: int | None = None, backend: str = "auto"
) -> Iterator[np.ndarray]:
    """Frames ``uint8 [H, W, 3]`` RGB of ``path`` on the ``fps`` grid (see the module docstring).

    ``start``/``stop`` select output frames [start, stop) (PyAV seeks to the keyframe before
    ``start``). Raises MediaError naming the file for an unreadable file and for a decode
    error or missing frames part-way (naming the source frame index).
    """
    p = check_file(path)
    if fps <= 0:
        raise MediaError(f"{p}: fps must be positive, got {fps}")
    if start < 0 or (stop is not None and stop < start):
        raise MediaError(f"{p}: bad frame range [{start}, {stop})")
    # Probe now, so that a bad file fails at the call rather than at the first frame.
    if resolve_backend(backend) == "av":
        info, index = probe_av(p)
        return _iter_av(p, info, index, fps, start, stop)
    probe(p, backend="cv2")
    return _iter_cv2(p, fps, start, stop)


def _iter_av(p, info, index, fps: float, start: int, stop: int | None) -> Iterator[np.ndarray]:
    n_out = int(round(info.duration_s * fps))
    stop = n_out if stop is None else min(stop, n_out)
    if start >= stop:
        return
    convert = lambda f: f.to_ndarray(format="rgb24")  # noqa: E731
    try:
        seek_s = start / fps if start > 0 else None
        yield from _to_rgb_cached(grid_sources(_decode_av(p, info, index, seek_s), fps, start, stop), convert)
    except _SeekMissed:
        yield from _to_rgb_cached(grid_sources(_decode_av(p, info, index, None), fps, start, stop), convert)


def _decode_av(p, info, index, seek_s: float | None) -> Iterator[tuple[float, Any]]:
    """(t, av.VideoFrame) in display order, t from the first video frame's pts; optionally
    starting from the keyframe at or before ``seek_s``."""
    av = require_av(f"decoding {p}")
    last_s = float((index.pts[-1] - index.pts[0]) * index.time_base)
    with open_av_input(p) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        t0 = None
        if seek_s is not None:
            t0 = info.video_start_s
            target = int(round((t0 + seek_s) / stream.time_base))
            container.seek(target, stream=stream, backward=True, any_frame=False)
        k = 0
        t = None
        try:
            for frame in container.decode(stream):
                ft = frame.time
                if ft is None:  # no timestamps: assume the nominal rate
                    ft = (t0 or 0.0) + k / info.fps
                if t0 is None:
                    t0 = ft
                t = ft - t0
                yield t, frame
                k += 1
        except av.FFmpegError as e:
            j = 0 if t is None else int(round(t * info.fps)) + 1
            raise MediaError(f"{p}: decode error at frame {j} ({one_line(e)})") from None
    # Every packet must come out as a frame; a short decode means lost data.
    if t is None or t < last_s - PTS_TOLERANCE_S or (seek_s is None and k < index.n_frames):
        got = 0 if t is None else int(round(t * info.fps)) + 1
        raise MediaError(f"{p}: truncated or corrupt: decoding stopped at frame {got} of {index.n_frames}")


def _iter_cv2(p, fps: float, start: int, stop: int | None) -> Iterator[np.ndarray]:
    import cv2

    with open_cv2_capture(p) as cap:
        src_fps = float(cap.get(cv2.CAP_PROP_FPS)) or fps
        n_hdr = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        n_read = 0

        def timed() -> Iterator[tuple[float, np.ndarray]]:
            nonlocal n_read
            t0 = None
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                t0 = t if t0 is None else t0
                n_read += 1
                yield t - t0, bgr
            if n_read == 0:
                raise MediaError(f"{p}: no decodable video frames")
            if 0 < n_hdr and n_read < n_hdr:
                raise MediaError(f"{p}: truncated or corrupt: decoded {n_read} of {n_hdr} frames")

        # OpenCV cannot seek exactly: decode from the start and skip.
        convert = lambda bgr: cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # noqa: E731
        sources = grid_sources(timed(), fps, 0, stop, last_duration_s=1.0 / src_fps)
        yield from _to_rgb_cached(itertools.islice(sources, start, None), convert)


def read_frames(
    path: str | os.PathLike,
    fps: float = FPS,
    start: int = 0,
    stop: int | None = None,
    scale: float = 1.0,
    *,
    backend: str = "auto",
) -> np.ndarray:
    """Output frames [start, stop) of :func:`iter_frames` stacked: ``uint8 [N, H', W', 3]``.

    ``scale != 1`` resizes each frame to (round(W * scale), round(H * scale)) with area
    interpolation (OpenCV ``INTER_AREA``).
    """
    p = check_file(path)
    if scale <= 0:
        raise MediaError(f"{p}: scale must be positive, got {scale}")
    frames = []
    for frame in iter_frames(p, fps, start=start, stop=stop, backend=backend):
        if scale != 1.0:
            frame = _resize_area(frame, scale)
        frames.append(frame)
    if not frames:
        raise MediaError(f"{p}: no frames in range [{start}, {stop})")
    return np.stack(frames)


def _resize_area(frame: np.ndarray, scale: float) -> np.ndarray:
    import cv2

    h, w = frame.shape[:2]
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
