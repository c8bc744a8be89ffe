"""Audio in and out: decode any file's audio to 16 kHz mono, and 16-bit PCM WAV files.

Alignment rule (:func:`read_audio`)
    Sample 0 of the returned signal is at the presentation time of the file's first video
    frame (for a file without video, at the first audio sample). Audio that starts later
    is preceded by zeros, audio before that time is dropped, and decoder padding past the
    audio stream's declared end is cut. So at 25 fps and 16 kHz, samples
    [640 i, 640 (i + 1)) are heard during video frame i (``talkgs.conventions``).
"""

from __future__ import annotations

import os
import wave
from fractions import Fraction

import numpy as np

from talkgs.conventions import FPS, SAMPLE_RATE
from talkgs.errors import MediaError
from talkgs.fsutil import atomic_path
from talkgs.media._backend import check_file, import_av, one_line, open_av_input


def read_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono ``float32 [S]`` in [-1, 1] at ``sample_rate``, aligned as in the module docstring.

    Channels are averaged (not FFmpeg's downmix, which can exceed 1). Raises MediaError for
    an unreadable file or one without an audio stream. Without PyAV only .wav files at
    ``sample_rate`` can be read.
    """
    p = check_file(path)
    if import_av() is None:
        if p.suffix.lower() == ".wav":
            wav, sr = read_wav(p)
            if sr == sample_rate:
                return wav
        raise MediaError(f"{p}: reading this audio needs PyAV (pip install av), which is not installed here")
    return _read_audio_av(p, int(sample_rate))


def _read_audio_av(p, sample_rate: int) -> np.ndarray:
    import av

    with open_av_input(p) as container:
        if not container.streams.audio:
            raise MediaError(f"{p}: no audio stream")
        stream = container.streams.audio[0]
        origin = None  # without video: the first audio sample (an mp3's start time is its encoder delay)
        if container.streams.video:
            v = container.streams.video[0]
            origin = float(v.start_time * v.time_base) if v.start_time is not None else 0.0
        end_s = None
        if stream.duration:
            a_start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            end_s = a_start + float(stream.duration * stream.time_base)
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)
        chunks: list[np.ndarray] = []
        n_done = 0
        first_s = None
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    first_s = _first_time(first_s, out, sample_rate, n_done)
                    chunks.append(out.to_ndarray().mean(axis=0))
                    n_done += chunks[-1].shape[0]
            for out in resampler.resample(None):
                first_s = _first_time(first_s, out, sample_rate, n_done)
                chunks.append(out.to_ndarray().mean(axis=0))
                n_done += chunks[-1].shape[0]
        except av.FFmpegError as e:
            raise MediaError(f"{p}: audio decode error at {n_done / sample_rate:.2f} s ({one_line(e)})") from None
    if not chunks:
        raise MediaError(f"{p}: audio stream has no samples")
    wav = np.concatenate(chunks).astype(np.float32)
    if end_s is not None:
        keep = int(round((end_s - first_s) * sample_rate))
        # Decoders may differ from the declared length by a frame, never by much more.
        if wav.shape[0] < keep - max(0.1 * sample_rate, 0.01 * keep):
            got, want = first_s + wav.shape[0] / sample_rate, end_s
            raise MediaError(f"{p}: truncated or corrupt audio: it ends at {got:.2f} s, the container says {want:.2f} s")
        wav = wav[: max(keep, 0)]
    shift = int(round((first_s - (first_s if origin is None else origin)) * sample_rate))
    if shift > 0:
        wav = np.concatenate([np.zeros(shift, np.float32), wav])
    elif shift < 0:
        wav = wav[-shift:]
    return np.clip(wav, -1.0, 1.0)


def _first_time(first_s: float | None, frame, sample_rate: int, n_before: int) -> float:
    """Presentation time (s) of the first output sample, from the first timed frame."""
    if first_s is not None:
        return first_s
    if frame.pts is None:
        return 0.0
    return float(frame.pts * (frame.time_base or Fraction(1, sample_rate))) - n_before / sample_rate


def samples_for_frames(n_frames: int, sample_rate: int = SAMPLE_RATE, fps: float = FPS) -> int:
    """Number of audio samples spanned by ``n_frames`` video frames: round(n * sr / fps)."""
    return int(round(n_frames * sample_rate / fps))


def fit_audio_to_frames(wav: np.ndarray, n_frames: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``wav [S]`` trimmed or zero-padded at the end to exactly n_frames * sample_rate / 25
    samples (n_frames * 640 at 16 kHz)."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise MediaError(f"audio must be mono [S], got shape {tuple(wav.shape)}")
    if n_frames < 0:
        raise MediaError(f"n_frames must be >= 0, got {n_frames}")
    n = samples_for_frames(n_frames, sample_rate)
    if wav.shape[0] >= n:
        return wav[:n].copy()
    return np.concatenate([wav, np.zeros(n - wav.shape[0], np.float32)])


def write_wav(path: str | os.PathLike, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write mono ``float32 [S]`` (clipped to [-1, 1]) as 16-bit PCM WAV, atomically."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise MediaError(f"{path}: audio must be mono [S], got shape {tuple(wav.shape)}")
    pcm = np.round(np.clip(wav, -1.0, 1.0) * 32767.0).astype("<i2")
    with atomic_path(path) as tmp:
        with wave.open(str(tmp), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(int(sample_rate))
            w.writeframes(pcm.tobytes())


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """``(wav float32 [S] in [-1, 1], sample_rate)`` from an integer PCM WAV (8/16/24/32-bit);
    several channels are averaged. Needs only the standard library and numpy."""
    p = check_file(path)
    try:
        with wave.open(str(p), "rb") as w:
            n_ch, width, sr, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError) as e:
        raise MediaError(f"{p}: not a PCM WAV file ({one_line(e)})") from None
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    elif width == 4:
        x = (np.frombuffer(raw, "<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
    else:
        raise MediaError(f"{p}: unsupported WAV sample width {width} bytes")
    x = x[: (x.shape[0] // n_ch) * n_ch].reshape(-1, n_ch).mean(axis=1)
    return np.clip(x, -1.0, 1.0).astype(np.float32), int(sr)
