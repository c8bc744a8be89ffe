"""Test-only helpers that build small media files with PyAV directly (independent of talkgs.media,
so the library's reader is tested against files it did not write)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def _decode_segment(src: Path, start: float, duration: float):
    import av

    frames, times = [], []
    with av.open(str(src)) as c:
        vs = c.streams.video[0]
        t0 = None
        for f in c.decode(vs):
            t = float(f.pts * vs.time_base)
            t0 = t if t0 is None else t0
            t -= t0
            if t < start - 1e-6:
                continue
            if t >= start + duration - 1e-6:
                break
            frames.append(f.to_ndarray(format="rgb24"))
            times.append(t - start)
    pcm = []
    with av.open(str(src)) as c:
        if c.streams.audio:
            rs = av.AudioResampler(format="s16", layout="mono", rate=16000)
            for f in c.decode(c.streams.audio[0]):
                for g in rs.resample(f):
                    pcm.append(g.to_ndarray().reshape(-1))
    audio = np.concatenate(pcm)[int(start * 16000) : int((start + duration) * 16000)] if pcm else None
    return frames, np.asarray(times), audio


def write_clip(path: Path, frames, fps: int, audio: np.ndarray | None = None, sample_rate: int = 16000) -> Path:
    """Encode RGB uint8 frames (and optional int16 mono audio) as H.264/AAC mp4."""
    import av

    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height = frames[0].shape[1], frames[0].shape[0]
        vs.pix_fmt = "yuv420p"
        vs.options = {"crf": "16"}
        as_ = None
        if audio is not None:
            as_ = c.add_stream("aac", rate=sample_rate)
            as_.layout = "mono"
        for fr in frames:
            for p in vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(fr), format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if as_ is not None:
            pcm = np.asarray(audio, dtype=np.int16)
            step = 1024
            for i in range(0, len(pcm), step):
                chunk = pcm[i : i + step]
                af = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
                af.sample_rate = sample_rate
                af.pts = i
                af.time_base = Fraction(1, sample_rate)
                for p in as_.encode(af):
                    c.mux(p)
            for p in as_.encode():
                c.mux(p)
    return path


def write_excerpt(src: Path, out: Path, start: float, duration: float, fps: int = 25, audio: bool = True) -> Path:
    """An excerpt of ``src`` re-encoded at ``fps`` (nearest-in-time source frames)."""
    frames, times, pcm = _decode_segment(src, start, duration)
    n_out = int(round(duration * fps))
    idx = np.clip(np.searchsorted(times, np.arange(n_out) / fps, side="right") - 1, 0, len(frames) - 1)
    return write_clip(out, [frames[i] for i in idx], fps, pcm if audio else None)


def tone(duration: float, freq: float = 440.0, sample_rate: int = 16000) -> np.ndarray:
    t = np.arange(int(duration * sample_rate)) / sample_rate
    return (0.3 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def write_audio(path: Path, wav: np.ndarray, sample_rate: int = 16000) -> Path:
    """Encode mono float ``wav`` to an audio-only file; codec from the suffix (.mp3, .m4a, .flac, .ogg)."""
    import av

    codec = {".mp3": "libmp3lame", ".m4a": "aac", ".flac": "flac", ".ogg": "libopus"}[path.suffix]
    rate = 48000 if codec == "libopus" else sample_rate
    if rate != sample_rate:
        t = np.arange(int(len(wav) * rate / sample_rate)) * (sample_rate / rate)
        wav = np.interp(t, np.arange(len(wav)), wav)
    wav = np.asarray(wav, np.float32)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate)
        s.layout = "mono"
        fmt = s.codec_context.codec.audio_formats[0].name
        step = 1152 if codec == "libmp3lame" else 1024
        for i in range(0, len(wav), step):
            chunk = wav[i : i + step]
            if fmt.startswith("s16"):
                arr = (np.clip(chunk, -1, 1) * 32767).astype(np.int16)[None]
            elif fmt.startswith("s32"):
                arr = (np.clip(chunk, -1, 1) * 2147483000).astype(np.int32)[None]
            else:
                arr = chunk[None].copy()
            frame = av.AudioFrame.from_ndarray(arr, format=fmt, layout="mono")
            frame.sample_rate = rate
            frame.pts = i
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path
