"""Writing H.264 mp4 files (optionally with an AAC audio track) atomically.

Frames are RGB ``uint8 [H, W, 3]``, encoded with libx264 as yuv420p, which needs even
sizes: an odd width or height is padded by one pixel (a copy of the last column/row), so
the file is (H + H % 2) x (W + W % 2). Audio (mono float32) is muxed as AAC, trimmed or
zero-padded to exactly the video's duration, and interleaved with the video as frames
arrive. The file appears at ``path`` only when the writer closes without an exception.
"""

from __future__ import annotations

import contextlib
import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from talkgs.conventions import FPS, SAMPLE_RATE
from talkgs.errors import MediaError
from talkgs.fsutil import atomic_path
from talkgs.media._backend import one_line, require_av

_AUDIO_CHUNK = 1024  # AAC frame size


def _rate(fps: float) -> Fraction:
    """``fps`` as an exact fraction (29.97... -> 30000/1001)."""
    return Fraction(fps).limit_denominator(100_000)


def pad_to_even(frame: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` padded by one edge pixel on the bottom/right where H/W is odd."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


class VideoWriter:
    """Context manager writing frames to an H.264 (yuv420p) mp4.

    >>> with VideoWriter("out.mp4", fps=25, audio=wav) as w:
    ...     w.write(frame)          # uint8 [H, W, 3] RGB
    ...     w.write_batch(frames)   # uint8 [B, H, W, 3]

    ``crf`` is x264's constant rate factor (0 lossless .. 51; 18 is visually lossless);
    ``preset`` trades encoding speed for size. ``audio``: mono float32 [S] at
    ``sample_rate``, muxed as AAC and fitted to the number of frames written. ``comment``: the
    container's comment tag.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float = FPS,
        crf: float = 18,
        audio: np.ndarray | None = None,
        sample_rate: int = SAMPLE_RATE,
        preset: str = "medium",
        comment: str | None = None,
    ):
        self.path = Path(path)
        self.comment = comment  # the mp4 ``comment`` tag (talkgs marks its own videos, talkgs.provenance)
        self.fps = _rate(fps)
        self.crf = crf
        self.preset = preset
        self.sample_rate = int(sample_rate)
        if audio is not None:
            audio = np.asarray(audio, dtype=np.float32)
            if audio.ndim != 1:
                raise MediaError(f"{self.path}: audio must be mono [S], got shape {tuple(audio.shape)}")
            audio = np.clip(audio, -1.0, 1.0)
        self.audio = audio
        self.n_frames = 0
        self._size: tuple[int, int] | None = None  # (H, W) of the frames given
        self._stack: contextlib.ExitStack | None = None
        self._container: Any = None
        self._video: Any = None
        self._audio_stream: Any = None
        self._audio_done = 0

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> "VideoWriter":
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort(exc_type, exc, tb)

    def open(self) -> None:
        av = require_av(f"writing {self.path}")
        if self._stack is not None:
            raise MediaError(f"{self.path}: writer is already open")
        stack = contextlib.ExitStack()
        tmp = stack.enter_context(atomic_path(self.path, suffix=".mp4"))
        try:
            # faststart: the index goes to the front so players can start before the end.
            self._container = av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"})
            if self.comment:
                self._container.metadata["comment"] = self.comment
        except av.FFmpegError as e:
            stack.__exit__(MediaError, None, None)
            raise MediaError(f"{self.path}: cannot create video file ({one_line(e)})") from None
        self._stack = stack

    def close(self) -> None:
        """Flush the encoders and move the file into place."""
        if self._stack is None:
            return
        try:
            if self.n_frames == 0:
                raise MediaError(f"{self.path}: no frames were written")
            self._finish()
        except BaseException as e:
            self.abort(type(e), e, e.__traceback__)
            raise
        stack, self._stack = self._stack, None
        stack.close()

    def abort(self, exc_type=None, exc=None, tb=None) -> None:
        """Drop everything written so far; nothing is left at ``path`` or beside it."""
        if self._stack is None:
            return
        stack, self._stack = self._stack, None
        try:
            if self._container is not None:
                self._container.close()
        except Exception:
            pass  # the file is being discarded anyway
        finally:
            self._container = None
            stack.__exit__(exc_type or MediaError, exc, tb)

    # -- frames ----------------------------------------------------------------------

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB frame ``uint8 [H, W, 3]``."""
        av = require_av(f"writing {self.path}")
        if self._stack is None:
            raise MediaError(f"{self.path}: writer is not open (use it in a `with` block)")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise MediaError(
                f"{self.path}: frame {self.n_frames} must be uint8 [H, W, 3], got {frame.dtype} {tuple(frame.shape)}"
            )
        if self._size is None:
            self._start_streams(frame.shape[0], frame.shape[1])
        elif frame.shape[:2] != self._size:
            raise MediaError(f"{self.path}: frame {self.n_frames} is {frame.shape[:2]}, earlier frames {self._size}")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(pad_to_even(frame)), format="rgb24")
        vf.pts = self.n_frames
        vf.time_base = 1 / self.fps
        try:
            for packet in self._video.encode(vf):
                self._container.mux(packet)
        except av.FFmpegError as e:
            raise MediaError(f"{self.path}: encoding frame {self.n_frames} failed ({one_line(e)})") from None
        self.n_frames += 1
        self._write_audio(final=False)

    def write_batch(self, frames: np.ndarray | Iterable[np.ndarray]) -> None:
        """Append frames ``uint8 [B, H, W, 3]``."""
        for frame in frames:
            self.write(frame)

    def _start_streams(self, h: int, w: int) -> None:
        self._size = (h, w)
        v = self._container.add_stream("libx264", rate=self.fps)
        v.width, v.height = w + w % 2, h + h % 2
        v.pix_fmt = "yuv420p"
        v.options = {"crf": str(self.crf), "preset": self.preset}
        self._video = v
        if self.audio is not None:
            a = self._container.add_stream("aac", rate=self.sample_rate)
            a.layout = "mono"
            self._audio_stream = a

    def _audio_target(self) -> int:
        """Audio samples spanned by the frames written so far."""
        return int(round(self.n_frames * self.sample_rate / self.fps))

    def _write_audio(self, final: bool) -> None:
        """Encode audio up to the video written so far (whole AAC frames until ``final``)."""
        if self._audio_stream is None:
            return
        av = require_av(f"writing {self.path}")
        target = self._audio_target()
        while self._audio_done < target:
            n = min(_AUDIO_CHUNK, target - self._audio_done)
            if n < _AUDIO_CHUNK and not final:
                break
            chunk = self.audio[self._audio_done : self._audio_done + n]
            if chunk.shape[0] < n:  # audio shorter than the video: pad with silence
                chunk = np.concatenate([chunk, np.zeros(n - chunk.shape[0], np.float32)])
            af = av.AudioFrame.from_ndarray(chunk[None, :].copy(), format="flt", layout="mono")
            af.sample_rate = self.sample_rate
            af.pts = self._audio_done
            af.time_base = Fraction(1, self.sample_rate)
            for packet in self._audio_stream.encode(af):
                self._container.mux(packet)
            self._audio_done += n

    def _finish(self) -> None:
        av = require_av(f"writing {self.path}")
        try:
            for packet in self._video.encode(None):
                self._container.mux(packet)
            if self._audio_stream is not None:
                self._write_audio(final=True)
                for packet in self._audio_stream.encode(None):
                    self._container.mux(packet)
            self._container.close()
        except av.FFmpegError as e:
            raise MediaError(f"{self.path}: finishing the video failed ({one_line(e)})") from None
        finally:
            self._container = None


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray | Iterable[np.ndarray],
    fps: float = FPS,
    audio: np.ndarray | None = None,
    sample_rate: int = SAMPLE_RATE,
    crf: float = 18,
    preset: str = "medium",
) -> int:
    """Write ``frames`` (``uint8 [N, H, W, 3]`` or an iterable of ``[H, W, 3]``) to an mp4,
    with ``audio`` fitted to the video's duration. Returns the number of frames."""
    with VideoWriter(path, fps=fps, crf=crf, audio=audio, sample_rate=sample_rate, preset=preset) as w:
        w.write_batch(frames)
    return w.n_frames


def write_video_silent_cv2(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 25) -> int:
    """Video-only mp4 (MPEG-4 Part 2) through OpenCV, for machines without PyAV (the GPU
    machine). No audio; a later step on a machine with PyAV can re-encode and mux it.
    Atomic like :class:`VideoWriter`. Returns the number of frames written."""
    import cv2

    n = 0
    with atomic_path(path, suffix=".mp4") as tmp:
        writer = None
        try:
            for frame in frames:
                frame = pad_to_even(np.asarray(frame, dtype=np.uint8))
                if writer is None:
                    h, w = frame.shape[:2]
                    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
                    if not writer.isOpened():
                        raise MediaError(f"{path}: OpenCV cannot write mp4 here")
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
                n += 1
        finally:
            if writer is not None:
                writer.release()
        if n == 0:
            raise MediaError(f"{path}: no frames were written")
    return n
