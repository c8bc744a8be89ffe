"""Copying a video stream into a new file without re-encoding (lossless and fast)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from talkgs.conventions import FPS
from talkgs.fsutil import atomic_path
from talkgs.media._backend import check_file, import_av, open_av_input
from talkgs.media.probe import VideoIndex, probe_av, video_index


class _NotCopyable(Exception):
    """The remuxed file failed verification; discard it."""


def copy_video_stream(src: str | os.PathLike, dst: str | os.PathLike) -> bool:
    """Remux ``src``'s video stream (no audio) into ``dst`` without re-encoding.

    Only done when ``src`` is at exactly 25 fps with a constant frame rate, and kept only
    when ``dst`` then holds the same number of frames with pixel-identical first and last
    frames. Returns False, leaving no ``dst``, when any of this fails (the caller
    re-encodes instead); also False without PyAV. An unreadable ``src`` raises MediaError.
    """
    av = import_av()
    if av is None:
        return False
    src = check_file(src)
    info, index = probe_av(src)
    if round(info.fps, 6) != FPS or not index.is_constant_rate(FPS):
        return False
    try:
        with atomic_path(dst, suffix=Path(dst).suffix or ".mp4") as tmp:
            _remux(src, tmp)
            if not _same_video(src, index, tmp):
                raise _NotCopyable()
    except (_NotCopyable, av.FFmpegError):
        return False
    return True


def _remux(src: Path, dst: Path) -> None:
    import av

    with open_av_input(src) as inp:
        v_in = inp.streams.video[0]
        with av.open(str(dst), mode="w") as out:
            v_out = out.add_stream_from_template(v_in)
            for packet in inp.demux(v_in):
                if packet.dts is None:  # flush packet
                    continue
                packet.stream = v_out
                out.mux(packet)


def _same_video(src: Path, src_index: VideoIndex, dst: Path) -> bool:
    """Same frame count, same timing and identical first/last frame pixels."""
    from talkgs.errors import MediaError

    try:
        dst_index = video_index(dst)
    except MediaError:
        return False
    if dst_index.n_frames != src_index.n_frames or not dst_index.is_constant_rate(FPS):
        return False
    a, b = _first_last(src, src_index), _first_last(dst, dst_index)
    if a is None or b is None:
        return False
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def _first_last(path: Path, index: VideoIndex) -> tuple[np.ndarray, np.ndarray] | None:
    """Decoded first and last frames (the last by seeking to its keyframe); None when the
    last frame does not come out where the index puts it."""
    with open_av_input(path) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        first = next(iter(c.decode(s))).to_ndarray(format="rgb24")
        c.seek(int(index.pts[-1]), stream=s, backward=True, any_frame=False)
        last = None
        for frame in c.decode(s):
            last = frame
        if last is None or last.pts != index.pts[-1]:
            return None
        return first, last.to_ndarray(format="rgb24")
