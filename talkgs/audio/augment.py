"""Voice augmentation for learning audio -> mouth from one speaker (numpy only).

A talking head learns its mouth from one or two minutes of one voice. The audio -> mouth
predictor (:mod:`talkgs.model.mouth`) is trained on that voice *and* on altered copies of it, so
that another voice, pitch, pace, level or room does not read as a different mouth:

* :func:`change_speed`  tempo and pitch together (resampling, as Kaldi's speed perturbation);
  the per-frame targets are time-warped with :func:`warp_frames`.
* :func:`shift_pitch`   pitch alone (phase-vocoder time stretch, then resampling back).
* :func:`change_gain`   level.
* :func:`add_noise`     white/pink noise at a given SNR.
* :func:`room_tone`     white/pink noise alone at a given level (a pause in a real recording).
* :func:`insert_silences` digital silence gaps (the mouth must rest in them); the targets of the
  gaps are given by the caller (a closed mouth).

Every function takes mono 16 kHz ``float32 [S]`` in [-1, 1] and returns the same kind.
"""

from __future__ import annotations

import numpy as np

from talkgs.conventions import SAMPLES_PER_FRAME
from talkgs.errors import AudioFeatureError

QUIET_ROOM_DBFS = -50.0
"""RMS level (dBFS) of a quiet room's pause in a speech recording: what the benchmarks feed
as a pause that is not digital silence (bench/predictor.py ``room``, bench/render.py)."""


def _mono(wav: np.ndarray) -> np.ndarray:
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise AudioFeatureError(f"augmentation needs mono audio [S], got shape {wav.shape}")
    return wav


def _lowpass(x: np.ndarray, cutoff: float, taps: int = 63) -> np.ndarray:
    """Windowed-sinc low-pass at ``cutoff`` (fraction of Nyquist, 0 < cutoff <= 1)."""
    if cutoff >= 1.0:
        return x
    n = np.arange(taps) - (taps - 1) / 2
    h = cutoff * np.sinc(cutoff * n) * np.hamming(taps)
    h /= h.sum()
    return np.convolve(x, h, mode="same").astype(np.float32)


def resample_by(wav: np.ndarray, factor: float) -> np.ndarray:
    """``y[j] = wav(j * factor)``: ``len / factor`` samples (factor > 1 shortens and raises pitch).
    Low-passed first when it shortens, so nothing folds back."""
    wav = _mono(wav)
    if factor <= 0:
        raise AudioFeatureError(f"resampling factor must be > 0, got {factor}")
    src = _lowpass(wav, 1.0 / factor) if factor > 1.0 else wav
    n_out = max(int(round(len(wav) / factor)), 1)
    t = np.arange(n_out, dtype=np.float64) * factor
    return np.interp(t, np.arange(len(wav)), src, right=0.0).astype(np.float32)


def change_speed(wav: np.ndarray, speed: float) -> np.ndarray:
    """Play ``speed`` times faster (pitch rises with it)."""
    return resample_by(wav, speed)


def warp_frames(values: np.ndarray, speed: float, n_out: int) -> np.ndarray:
    """Per-frame ``values [N, ...]`` of a clip, time-warped to the clip played ``speed`` times
    faster: output frame j (centre at (j + 0.5) / 25 s) takes the value at input time
    ``speed * (j + 0.5) / 25`` s, linearly interpolated between frame centres."""
    values = np.asarray(values, dtype=np.float32)
    n = values.shape[0]
    t_in = np.clip(speed * (np.arange(n_out) + 0.5) - 0.5, 0.0, n - 1.0)
    lo = np.floor(t_in).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    w = (t_in - lo).reshape(-1, *([1] * (values.ndim - 1))).astype(np.float32)
    return (1.0 - w) * values[lo] + w * values[hi]


def time_stretch(wav: np.ndarray, rate: float, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """Phase-vocoder time stretch: ``len / rate`` samples at the same pitch."""
    wav = _mono(wav)
    if rate <= 0:
        raise AudioFeatureError(f"time-stretch rate must be > 0, got {rate}")
    win = np.hanning(n_fft + 1)[:-1].astype(np.float64)
    x = np.pad(wav.astype(np.float64), (n_fft // 2, n_fft // 2 + n_fft))
    n_frames = 1 + (len(x) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
    spec = np.fft.rfft(x[idx] * win, axis=1)  # [T, F]
    steps = np.arange(0, n_frames - 1, rate)
    omega = 2 * np.pi * hop * np.arange(spec.shape[1]) / n_fft  # expected phase advance per hop
    phase = np.angle(spec[0])
    out = np.zeros((len(steps), spec.shape[1]), np.complex128)
    for k, s in enumerate(steps):
        i = int(s)
        frac = s - i
        a, b = spec[i], spec[i + 1]
        mag = (1 - frac) * np.abs(a) + frac * np.abs(b)
        out[k] = mag * np.exp(1j * phase)
        dphi = np.angle(b) - np.angle(a) - omega
        dphi -= 2 * np.pi * np.round(dphi / (2 * np.pi))
        phase = phase + omega + dphi
    frames = np.fft.irfft(out, n=n_fft, axis=1) * win
    y = np.zeros(hop * (len(steps) - 1) + n_fft)
    norm = np.zeros_like(y)
    for k in range(len(steps)):
        y[k * hop : k * hop + n_fft] += frames[k]
        norm[k * hop : k * hop + n_fft] += win**2
    y = y / np.maximum(norm, 1e-8)
    y = y[n_fft // 2 :]
    n_out = int(round(len(wav) / rate))
    y = np.pad(y, (0, max(0, n_out - len(y))))[:n_out]
    return y.astype(np.float32)


def shift_pitch(wav: np.ndarray, semitones: float) -> np.ndarray:
    """Pitch moved by ``semitones`` at the same tempo and length."""
    wav = _mono(wav)
    factor = 2.0 ** (semitones / 12.0)
    y = resample_by(time_stretch(wav, 1.0 / factor), factor)
    return np.pad(y, (0, max(0, len(wav) - len(y))))[: len(wav)].astype(np.float32)


def change_gain(wav: np.ndarray, db: float) -> np.ndarray:
    """Louder or quieter by ``db`` decibels, clipped to [-1, 1]."""
    return np.clip(_mono(wav) * (10.0 ** (db / 20.0)), -1.0, 1.0).astype(np.float32)


def _unit_noise(n: int, rng: np.random.Generator, colour: str) -> np.ndarray:
    """``[n]`` float64 noise of unit mean power, white or pink (1/f power)."""
    noise = rng.standard_normal(n)
    if colour == "pink":
        spec = np.fft.rfft(noise)
        spec /= np.sqrt(np.maximum(np.arange(len(spec)), 1.0))
        noise = np.fft.irfft(spec, n=n)
    elif colour != "white":
        raise AudioFeatureError(f"noise colour must be white or pink, got {colour!r}")
    return noise / np.sqrt(float(np.mean(noise**2)) + 1e-24)


def add_noise(wav: np.ndarray, snr_db: float, rng: np.random.Generator, colour: str = "white") -> np.ndarray:
    """Noise at ``snr_db`` relative to the signal's mean power (white, or pink: 1/f)."""
    wav = _mono(wav)
    p_sig = float(np.mean(wav.astype(np.float64) ** 2)) + 1e-12
    noise = _unit_noise(len(wav), rng, colour) * np.sqrt(p_sig / 10.0 ** (snr_db / 10.0))
    return np.clip(wav + noise, -1.0, 1.0).astype(np.float32)


def room_tone(n_samples: int, dbfs: float, rng: np.random.Generator, colour: str = "pink") -> np.ndarray:
    """``[n_samples]`` noise alone with an RMS of ``dbfs`` (dB re full scale, e.g. -50): what
    a pause sounds like in a real recording, where digital silence never occurs."""
    if dbfs >= 0:
        raise AudioFeatureError(f"room tone level must be below 0 dBFS, got {dbfs:g}")
    x = _unit_noise(int(n_samples), rng, colour) * 10.0 ** (dbfs / 20.0)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def insert_silences(
    wav: np.ndarray, n_frames: int, rng: np.random.Generator, n_gaps: int, min_frames: int = 12, max_frames: int = 50
) -> tuple[np.ndarray, np.ndarray]:
    """Insert ``n_gaps`` gaps of digital silence (whole video frames) at random frame
    boundaries of a clip of ``n_frames`` frames (``wav`` has ``n_frames * 640`` samples).

    Returns ``(wav_out, source [M])``: the new audio (``M * 640`` samples) and, per output frame,
    the input frame it plays (-1 inside a gap), to build the targets."""
    wav = _mono(wav)
    if len(wav) != n_frames * SAMPLES_PER_FRAME:
        raise AudioFeatureError(f"insert_silences needs {n_frames * SAMPLES_PER_FRAME} samples, got {len(wav)}")
    cuts = np.sort(rng.choice(np.arange(1, max(n_frames, 2)), size=min(n_gaps, max(n_frames - 1, 0)), replace=False))
    pieces, source, start = [], [], 0
    for c in list(cuts) + [n_frames]:
        pieces.append(wav[start * SAMPLES_PER_FRAME : c * SAMPLES_PER_FRAME])
        source.append(np.arange(start, c))
        if c < n_frames:
            g = int(rng.integers(min_frames, max_frames + 1))
            pieces.append(np.zeros(g * SAMPLES_PER_FRAME, np.float32))
            source.append(np.full(g, -1))
        start = c
    return np.concatenate(pieces).astype(np.float32), np.concatenate(source).astype(np.int64)
