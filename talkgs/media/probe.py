"""What a media file holds: :func:`probe`, :func:`count_frames` and the packet index behind them.

With PyAV the video stream is demuxed once (no decoding, ~20 ms for a 71 s clip) so the
frame count and duration are exact, and a file whose container promises more frames than
its bytes hold (a truncated mp4 with the index at the front) is reported as truncated.
"""

from __future__ import annotations

import dataclasses
import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from talkgs.errors import MediaError
from talkgs.media._backend import (
    check_file,
    one_line,
    open_av_input,
    open_cv2_capture,
    require_av,
    resolve_backend,
)


@dataclasses.dataclass(frozen=True)
class MediaInfo:
    """Summary of a media file (video fields are 0 / "" where it has no video stream).

    ``fps`` is the video stream's average frame rate; ``n_frames`` the number of video
    frames (exact with PyAV, the container's estimate with the OpenCV fallback);
    ``duration_s`` the video duration: last frame's end minus first frame's start
    (with no video, the container duration). ``video_start_s`` is the first video frame's
    presentation time, the origin of talkgs' time grid for this file. ``has_audio`` is
    None (unknown) with the OpenCV fallback, which cannot see audio streams.
    """

    path: str
    width: int
    height: int
    fps: float
    n_frames: int
    duration_s: float
    has_video: bool
    has_audio: bool | None
    video_codec: str
    audio_sample_rate: int | None
    audio_channels: int | None
    video_start_s: float = 0.0
    audio_codec: str | None = None
    audio_duration_s: float | None = None
    backend: str = "av"


@dataclasses.dataclass(frozen=True)
class VideoIndex:
    """Per-packet timing of a video stream, from demuxing only.

    ``pts`` [M] int64: presentation timestamps in display order (sorted), in ``time_base``
    units; ``duration`` the stream duration in the same units (last end minus first start);
    ``keyframe`` [M] bool in display order; ``header_frames`` the frame count the container
    header claims (0 when unknown).
    """

    pts: np.ndarray
    keyframe: np.ndarray
    time_base: Fraction
    duration: int
    header_frames: int

    @property
    def n_frames(self) -> int:
        return int(self.pts.shape[0])

    @property
    def start_s(self) -> float:
        return float(self.pts[0] * self.time_base) if self.n_frames else 0.0

    @property
    def duration_s(self) -> float:
        return float(self.duration * self.time_base)

    def is_constant_rate(self, fps: float) -> bool:
        """True when every frame lasts exactly 1 / fps (to the timestamp resolution)."""
        if self.n_frames < 2:
            return False
        step = Fraction(1, 1) / (Fraction(fps).limit_denominator(1_000_000) * self.time_base)
        if step.denominator != 1:
            return False
        return bool(np.all(np.diff(self.pts) == int(step)))


def video_index(path: str | os.PathLike) -> VideoIndex:
    """Demux the first video stream of ``path`` (PyAV) into a :class:`VideoIndex`.

    Raises MediaError for an unreadable file, no video stream, or fewer packets than the
    container header lists (truncated file).
    """
    av = require_av(f"indexing {path}")
    p = check_file(path)
    with open_av_input(p) as container:
        if not container.streams.video:
            raise MediaError(f"{p}: no video stream")
        stream = container.streams.video[0]
        pts: list[int] = []
        ends: list[int] = []
        key: list[bool] = []
        try:
            for packet in container.demux(stream):
                # Empty packets flush the demuxer; discard-flagged ones are cut by an edit list.
                if packet.size == 0 or packet.is_discard or packet.pts is None:
                    continue
                pts.append(packet.pts)
                ends.append(packet.pts + (packet.duration or 0))
                key.append(bool(packet.is_keyframe))
        except av.FFmpegError as e:
            raise MediaError(f"{p}: corrupt video stream after {len(pts)} packets ({one_line(e)})") from None
        header = int(stream.frames or 0)
        time_base = stream.time_base
        rate = stream.average_rate or stream.guessed_rate
    if not pts:
        raise MediaError(f"{p}: video stream has no frames")
    if header and len(pts) < header:
        raise MediaError(f"{p}: truncated or corrupt: the container lists {header} frames but holds {len(pts)}")
    order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
    pts_a = np.asarray(pts, dtype=np.int64)[order]
    key_a = np.asarray(key, dtype=bool)[order]
    end = max(ends)
    if end <= pts_a[-1]:
        # Packets without durations: the last frame lasts one nominal frame interval.
        end = pts_a[-1] + (int(round(1 / (rate * time_base))) if rate else 1)
    return VideoIndex(pts_a, key_a, Fraction(time_base), int(end - pts_a[0]), header)


def probe(path: str | os.PathLike, *, require_video: bool = True, backend: str = "auto") -> MediaInfo:
    """Describe a media file.

    Raises MediaError (one line, naming the path) for a missing path, a file that is not
    media or is truncated/corrupt, and, unless ``require_video=False``, a file without a
    video stream. ``backend``: "auto" (PyAV if installed, else OpenCV), "av" or "cv2".
    """
    p = check_file(path)
    if resolve_backend(backend) == "cv2":
        return _probe_cv2(p)
    return probe_av(p, require_video=require_video)[0]


def probe_av(p: Path, *, require_video: bool = True) -> tuple[MediaInfo, VideoIndex | None]:
    """:func:`probe` with PyAV, also returning the video packet index (None without video)."""
    with open_av_input(p) as container:
        v = container.streams.video[0] if container.streams.video else None
        a = container.streams.audio[0] if container.streams.audio else None
        audio = {}
        if a is not None:
            a_dur = float(a.duration * a.time_base) if a.duration else None
            audio = dict(
                audio_sample_rate=int(a.codec_context.sample_rate),
                audio_channels=int(a.codec_context.layout.nb_channels),
                audio_codec=a.codec_context.name,
                audio_duration_s=a_dur,
            )
        if v is None:
            if require_video:
                raise MediaError(f"{p}: no video stream")
            dur = container.duration / 1e6 if container.duration else (audio.get("audio_duration_s") or 0.0)
            info = MediaInfo(str(p), 0, 0, 0.0, 0, float(dur), False, a is not None, "",
                             audio.get("audio_sample_rate"), audio.get("audio_channels"),
                             audio_codec=audio.get("audio_codec"),
                             audio_duration_s=audio.get("audio_duration_s"))
            return info, None
        width, height = int(v.codec_context.width), int(v.codec_context.height)
        rate = v.average_rate or v.guessed_rate
        codec = v.codec_context.name
    index = video_index(p)
    fps = float(rate) if rate else index.n_frames / index.duration_s
    info = MediaInfo(
        path=str(p), width=width, height=height, fps=fps, n_frames=index.n_frames,
        duration_s=index.duration_s, has_video=True, has_audio=a is not None, video_codec=codec,
        audio_sample_rate=audio.get("audio_sample_rate"), audio_channels=audio.get("audio_channels"),
        video_start_s=index.start_s, audio_codec=audio.get("audio_codec"),
        audio_duration_s=audio.get("audio_duration_s"), backend="av",
    )
    return info, index


def _probe_cv2(p: Path) -> MediaInfo:
    import cv2

    with open_cv2_capture(p) as cap:
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC))
    if width <= 0 or height <= 0:
        raise MediaError(f"{p}: no video stream")
    codec = "".join(chr((fourcc >> (8 * k)) & 0xFF) for k in range(4)).strip("\x00 ").lower()
    duration = n / fps if fps > 0 else 0.0
    return MediaInfo(str(p), width, height, fps, n, duration, True, None, codec, None, None, backend="cv2")


def count_frames(path: str | os.PathLike, *, backend: str = "auto") -> int:
    """Exact number of video frames: PyAV demuxes packets (no decoding); the OpenCV
    fallback has to decode (grab) every frame."""
    p = check_file(path)
    if resolve_backend(backend) == "av":
        return video_index(p).n_frames
    n = 0
    with open_cv2_capture(p) as cap:
        while cap.grab():
            n += 1
    if n == 0:
        raise MediaError(f"{p}: no decodable video frames")
    return n
