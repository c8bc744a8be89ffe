"""Log-mel spectrogram windows, one per video frame (kind ``mel``), in numpy only.

Spectrogram
    16 kHz mono. Frames of N_FFT = 400 samples (25 ms) every HOP = 160 samples (10 ms);
    mel frame k is centred on sample 160 k (its window spans [160 k - 200, 160 k + 200),
    the signal being zero outside the clip). A periodic Hann window is used because its
    peak sits exactly on sample 200 of the 400, i.e. on the frame centre. Power spectrum
    -> 80 triangular mel filters (Slaney mel scale: linear below 1 kHz, logarithmic above;
    peak 1, no area normalisation) spanning 55..7600 Hz -> log(mel + 1e-6).

Normalisation (fixed, never per file, so training and rendering see one scale)
    x = (log(mel + 1e-6) - LOG_MEL_MEAN) / LOG_MEL_STD with LOG_MEL_MEAN = -4.5 and
    LOG_MEL_STD = 3.5: the mean and standard deviation of the anchor clip's log-mel
    (a studio news voice; -4.65 and 3.35 measured), rounded. Its loudest bins reach about
    +3; digital silence maps to SILENCE = (log(1e-6) + 4.5) / 3.5 ~ -2.66.

Windows
    There are 4 mel frames per 25 fps video frame. Video frame i is centred on sample
    640 i + 320 = the centre of mel frame 4 i + 2; its window is the W = 16 mel frames
    [4 i - 6, 4 i + 10), so mel frame 4 i + 2 sits at window position 8 (the centre, with 8
    frames before it and 7 after). The audio is first fitted to n_frames * 640 samples
    (trimmed or zero-padded); mel frames outside [0, 4 n_frames) take the SILENCE value.
"""

from __future__ import annotations

import functools

import numpy as np

from talkgs.conventions import SAMPLE_RATE, SAMPLES_PER_FRAME
from talkgs.errors import AudioFeatureError
from talkgs.audio.registry import register
from talkgs.audio.stream import checked_chunk, register_stream

N_FFT = 400
HOP = 160
N_MELS = 80
F_MIN = 55.0
F_MAX = 7600.0
LOG_FLOOR = 1e-6
LOG_MEL_MEAN = -4.5
LOG_MEL_STD = 3.5
WINDOW = 16
MEL_PER_FRAME = SAMPLES_PER_FRAME // HOP  # 4
WINDOW_START = -6  # first mel frame of video frame i's window is 4 i - 6
SILENCE = float((np.log(LOG_FLOOR) - LOG_MEL_MEAN) / LOG_MEL_STD)

# Samples a window of video frame i reaches past the frame's end (640 (i + 1)): the last
# mel frame 4 i + 9 ends at 160 (4 i + 9) + 200 = 640 i + 1640.
_LOOKAHEAD = HOP * (WINDOW_START + WINDOW - 1) + N_FFT // 2 - SAMPLES_PER_FRAME  # 1000


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """Slaney mel scale: 3 mel per 200 Hz below 1 kHz, logarithmic (27 mel per factor 6.4) above."""
    f = np.asarray(f, dtype=np.float64)
    lin = 3.0 * f / 200.0
    log = 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f < 1000.0, lin, log)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(m, dtype=np.float64)
    lin = 200.0 * m / 3.0
    log = 1000.0 * np.exp((m - 15.0) * (np.log(6.4) / 27.0))
    return np.where(m < 15.0, lin, log)


@functools.lru_cache(maxsize=None)
def mel_filterbank() -> np.ndarray:
    """Triangular filters ``float64 [80, 201]`` over the rfft bins of a 400-point FFT."""
    edges = mel_to_hz(np.linspace(hz_to_mel(F_MIN), hz_to_mel(F_MAX), N_MELS + 2))
    bins = np.fft.rfftfreq(N_FFT, d=1.0 / SAMPLE_RATE)  # [201], 40 Hz apart
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (bins[None, :] - lo) / (mid - lo)
    down = (hi - bins[None, :]) / (hi - mid)
    fb = np.maximum(0.0, np.minimum(up, down))
    # Every filter is wider than the 40 Hz bin spacing, so none can be empty.
    assert np.all(fb.sum(axis=1) > 0)
    fb.setflags(write=False)
    return fb


@functools.lru_cache(maxsize=None)
def hann_window() -> np.ndarray:
    """Periodic Hann window ``float64 [400]`` (peak at index 200)."""
    n = np.arange(N_FFT)
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)
    w.setflags(write=False)
    return w


def log_mel_frames(x: np.ndarray, k0: int, k1: int, x_offset: int = 0) -> np.ndarray:
    """Normalised log-mel frames k in [k0, k1): ``float32 [k1 - k0, 80]``.

    ``x [L]`` holds samples [x_offset, x_offset + L) of the signal, which is zero elsewhere;
    frame k is centred on sample 160 k.
    """
    n = max(k1 - k0, 0)
    if n == 0:
        return np.zeros((0, N_MELS), np.float32)
    seg_start = HOP * k0 - N_FFT // 2
    seg = np.zeros(HOP * (n - 1) + N_FFT, np.float64)
    a = max(seg_start, x_offset)
    b = min(seg_start + seg.shape[0], x_offset + x.shape[0])
    if b > a:
        seg[a - seg_start : b - seg_start] = x[a - x_offset : b - x_offset]
    frames = np.lib.stride_tricks.sliding_window_view(seg, N_FFT)[::HOP]  # [n, 400]
    spec = np.fft.rfft(frames * hann_window(), axis=-1)  # [n, 201]
    power = spec.real**2 + spec.imag**2
    mel = power @ mel_filterbank().T  # [n, 80]
    return ((np.log(mel + LOG_FLOOR) - LOG_MEL_MEAN) / LOG_MEL_STD).astype(np.float32)


def _windows(x: np.ndarray, x_offset: int, start: int, stop: int, n_valid_mel: int | None) -> np.ndarray:
    """Windows ``[stop - start, 16, 80]`` of video frames [start, stop).

    Mel frames k < 0, or k >= ``n_valid_mel`` when given, are SILENCE (the ends of the clip).
    """
    n = stop - start
    if n <= 0:
        return np.zeros((0, WINDOW, N_MELS), np.float32)
    k_lo = MEL_PER_FRAME * start + WINDOW_START
    k_hi = MEL_PER_FRAME * (stop - 1) + WINDOW_START + WINDOW  # exclusive
    c_lo = max(k_lo, 0)
    c_hi = k_hi if n_valid_mel is None else min(k_hi, n_valid_mel)
    mel = np.full((k_hi - k_lo, N_MELS), SILENCE, np.float32)
    if c_hi > c_lo:
        mel[c_lo - k_lo : c_hi - k_lo] = log_mel_frames(x, c_lo, c_hi, x_offset)
    # Window of frame start + j = mel rows [4 j, 4 j + 16).
    win = np.lib.stride_tricks.sliding_window_view(mel, (WINDOW, N_MELS))[::MEL_PER_FRAME, 0]
    return np.ascontiguousarray(win)


def mel_windows(wav: np.ndarray, n_frames: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Mel windows ``float32 [stop - start, 16, 80]`` for video frames [start, stop) of a clip
    of ``n_frames`` frames; equal to ``extract_mel(wav, n_frames)[start:stop]``, computing
    only the spectrogram frames those windows need."""
    stop = n_frames if stop is None else stop
    if not 0 <= start <= stop <= n_frames:
        raise AudioFeatureError(f"mel: frame range [{start}, {stop}) is outside [0, {n_frames})")
    wav = np.asarray(wav, dtype=np.float32)
    # Fitting to n_frames * 640 samples: trimming is a slice, padding is implicit zeros.
    x = wav[: n_frames * SAMPLES_PER_FRAME]
    return _windows(x, 0, start, stop, MEL_PER_FRAME * n_frames)


@register("mel", window=WINDOW, channels=N_MELS, description="80-band log-mel, 16 frames (160 ms) per video frame")
def extract_mel(wav: np.ndarray, n_frames: int) -> np.ndarray:
    """80-band log-mel windows ``float32 [N, 16, 80]`` (see :mod:`talkgs.audio.mel`)."""
    return mel_windows(wav, n_frames)


@register_stream("mel")
class MelStream:
    """Mel windows for audio arriving in chunks (live input), equal to the batch result
    (a :class:`talkgs.audio.stream.FeatureStream`).

    ``push(chunk)`` returns the windows ``[n, 16, 80]`` of the video frames that became
    complete: frame i needs samples up to 640 i + 1640, i.e. 62.5 ms past its own end
    (``lookahead_ms``).
    ``flush(n_frames=None)`` ends the stream and returns the remaining windows of a clip of
    ``n_frames`` frames (default: ceil(samples / 640)). Concatenated, the outputs equal
    ``extract_mel(all_samples, n_frames)``. Memory stays bounded (about 1.2k samples kept).
    """

    kind = "mel"
    window = WINDOW
    channels = N_MELS
    lookahead_ms = 1000.0 * _LOOKAHEAD / SAMPLE_RATE  # 62.5

    def __init__(self) -> None:
        self._buf = np.zeros(0, np.float32)
        self._buf_start = 0  # absolute index of _buf[0]
        self._received = 0
        self._next = 0  # next video frame to emit
        self._closed = False

    @property
    def frames_emitted(self) -> int:
        return self._next

    @property
    def samples_received(self) -> int:
        return self._received

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Add mono float samples ``[S]``; returns the newly complete windows ``[n, 16, 80]``."""
        chunk = checked_chunk("mel", self._closed, chunk)
        self._buf = np.concatenate([self._buf, chunk])
        self._received += chunk.shape[0]
        # Frame i is complete once 640 i + 1640 samples have arrived.
        ready = (self._received - _LOOKAHEAD) // SAMPLES_PER_FRAME
        return self._emit(max(ready, self._next), None)

    def flush(self, n_frames: int | None = None) -> np.ndarray:
        """Remaining windows of a clip of ``n_frames`` frames (>= ceil(samples / 640))."""
        need = -(-self._received // SAMPLES_PER_FRAME)
        n = need if n_frames is None else int(n_frames)
        if n < need or n < self._next:
            raise AudioFeatureError(
                f"mel stream: n_frames={n} is shorter than the {self._received} samples received ({need} frames)"
            )
        out = self._emit(n, MEL_PER_FRAME * n)
        self._closed = True
        return out

    def _emit(self, stop: int, n_valid_mel: int | None) -> np.ndarray:
        out = _windows(self._buf, self._buf_start, self._next, stop, n_valid_mel)
        self._next = max(stop, self._next)
        # Keep only what the next window can reach: from sample 160 (4 next - 6) - 200.
        keep_from = max(HOP * (MEL_PER_FRAME * self._next + WINDOW_START) - N_FFT // 2, 0)
        if keep_from > self._buf_start:
            self._buf = self._buf[keep_from - self._buf_start :]
            self._buf_start = keep_from
        return out
