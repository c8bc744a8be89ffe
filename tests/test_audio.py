"""talkgs.audio: the feature registry and the log-mel windows."""

from __future__ import annotations

import numpy as np
import pytest

from talkgs.audio import REGISTRY, MelStream, available_kinds, extract, get_kind, mel_windows, register
from talkgs.audio import mel as M
from talkgs.errors import AudioFeatureError

SR = 16_000


def speechlike(n_samples: int, seed: int = 0) -> np.ndarray:
    """Noise with a slowly varying envelope and a few tones: non-stationary, non-silent."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / SR
    env = 0.3 + 0.25 * np.sin(2 * np.pi * 3.0 * t)
    x = env * (0.2 * rng.standard_normal(n_samples) + 0.3 * np.sin(2 * np.pi * (200 + 50 * t) * t))
    return x.astype(np.float32)


# -- registry ---------------------------------------------------------------------------------


def test_mel_is_registered_and_available():
    assert "mel" in available_kinds()
    kind = get_kind("mel")
    assert kind.shape == (16, 80) and kind.name == "mel"


def test_unknown_kind_lists_the_known_ones():
    with pytest.raises(AudioFeatureError, match=r"'hubertz'.*mel"):
        extract("hubertz", np.zeros(640, np.float32), 1)


def test_a_kind_with_missing_requirements_is_listed_but_unavailable(monkeypatch):
    monkeypatch.setattr("talkgs.audio.registry.REGISTRY", dict(REGISTRY))

    @register("needs_missing", window=2, channels=3, requires=("talkgs_no_such_module",))
    def _fake(wav, n_frames):
        return np.zeros((n_frames, 2, 3), np.float32)

    assert "needs_missing" not in available_kinds()
    with pytest.raises(AudioFeatureError, match="talkgs_no_such_module"):
        extract("needs_missing", np.zeros(640, np.float32), 1)
    with pytest.raises(ValueError, match="twice"):
        register("mel", window=1, channels=1)(_fake)


def test_a_new_kind_slots_in_and_its_shape_is_checked(monkeypatch):
    monkeypatch.setattr("talkgs.audio.registry.REGISTRY", dict(REGISTRY))

    @register("energy", window=1, channels=1)
    def _energy(wav, n_frames):
        w = np.zeros(n_frames * 640, np.float32)
        w[: min(len(wav), len(w))] = wav[: len(w)]
        return (w.reshape(n_frames, 1, 1, 640) ** 2).mean(-1)

    @register("wrong_shape", window=2, channels=2)
    def _wrong(wav, n_frames):
        return np.zeros((n_frames, 2, 3), np.float32)

    out = extract("energy", np.ones(1000, np.float32), 3)
    np.testing.assert_allclose(out[:, 0, 0], [1.0, 360 / 640, 0.0])
    with pytest.raises(AudioFeatureError, match="expected"):
        extract("wrong_shape", np.zeros(640, np.float32), 1)


def test_extract_rejects_bad_input():
    with pytest.raises(AudioFeatureError, match="mono"):
        extract("mel", np.zeros((2, 640), np.float32), 1)
    with pytest.raises(AudioFeatureError, match="16000 Hz"):
        extract("mel", np.zeros(640, np.float32), 1, sample_rate=44100)
    with pytest.raises(AudioFeatureError, match="float"):
        extract("mel", np.zeros(640, np.int16), 1)


# -- mel --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_frames,n_samples", [(1, 640), (7, 4480), (25, 10_000), (25, 30_000), (3, 0)])
def test_mel_shape_is_one_window_per_frame_whatever_the_length(n_frames, n_samples):
    out = extract("mel", speechlike(n_samples), n_frames)
    assert out.shape == (n_frames, 16, 80) and out.dtype == np.float32
    assert np.isfinite(out).all()


def test_mel_trims_and_pads_to_the_video_length():
    wav = speechlike(50 * 640)
    # Audio past frame 20's span is ignored; frames whose windows stay inside agree.
    short = extract("mel", wav, 20)
    long = extract("mel", wav, 50)
    np.testing.assert_allclose(short[:17], long[:17], atol=1e-6)
    # Frame 19's last mel frames (k >= 80) lie past the clip's end: silence.
    assert np.all(short[19, 14:] == M.SILENCE)
    assert not np.all(long[19, 14:] == M.SILENCE)


def test_silence_gives_a_constant_feature():
    out = extract("mel", np.zeros(10 * 640, np.float32), 10)
    assert np.all(out == np.float32(M.SILENCE))
    assert M.SILENCE == pytest.approx((np.log(1e-6) + 4.5) / 3.5)


@pytest.mark.parametrize("i", [0, 5, 11])
def test_click_at_frame_centre_peaks_at_window_centre(i):
    n = 12
    wav = np.zeros(n * 640, np.float32)
    wav[640 * i + 320] = 1.0  # the centre sample of video frame i
    out = extract("mel", wav, n)
    energy = out.mean(axis=2)  # [N, 16]
    assert int(np.argmax(energy[i])) == 8  # mel frame 4 i + 2 is window position 8
    assert energy[i, 8] > energy[i, 7] and energy[i, 8] > energy[i, 9]
    # The same mel frame is 4 positions earlier in the next frame's window.
    if i + 1 < n:
        assert int(np.argmax(energy[i + 1])) == 4


def test_tone_peaks_in_the_mel_band_of_its_frequency():
    t = np.arange(20 * 640) / SR
    centres = M.mel_to_hz(np.linspace(M.hz_to_mel(M.F_MIN), M.hz_to_mel(M.F_MAX), M.N_MELS + 2))[1:-1]
    for f in (300.0, 1000.0, 3000.0):
        out = extract("mel", (0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32), 20)
        band = int(np.argmax(out[10].mean(axis=0)))
        assert abs(centres[band] - f) <= 0.06 * f, (f, centres[band])


def test_normalisation_is_fixed_not_per_file():
    wav = speechlike(20 * 640, seed=3)
    a = extract("mel", wav, 20)
    b = extract("mel", 0.5 * wav, 20)
    loud = a[5:15] > 0.0  # well above the 1e-6 floor
    diff = (b - a)[5:15][loud]
    np.testing.assert_allclose(diff, np.log(0.25) / M.LOG_MEL_STD, atol=1e-3)


def test_mel_filterbank_has_no_empty_band():
    fb = M.mel_filterbank()
    assert fb.shape == (80, 201)
    assert (fb.sum(axis=1) > 0).all() and fb.max() <= 1.0


def test_range_and_stream_equal_batch():
    rng = np.random.default_rng(7)
    n_samples = 61 * 640 + 123
    wav = speechlike(n_samples, seed=1)
    n_frames = -(-n_samples // 640)
    batch = extract("mel", wav, n_frames)

    a, b = sorted(rng.choice(np.arange(1, n_frames), size=2, replace=False))
    np.testing.assert_allclose(mel_windows(wav, n_frames, a, b), batch[a:b], atol=1e-6, rtol=0)

    stream = MelStream()
    parts = []
    pos = 0
    while pos < n_samples:
        step = int(rng.integers(1, 3000))
        parts.append(stream.push(wav[pos : pos + step]))
        pos += step
    parts.append(stream.flush())
    streamed = np.concatenate(parts)
    assert streamed.shape == batch.shape
    np.testing.assert_allclose(streamed, batch, atol=1e-6, rtol=0)
    # Windows came out while audio was still arriving, not only at the end.
    assert sum(p.shape[0] for p in parts[:-1]) >= n_frames - 3


def test_stream_flush_rejects_too_few_frames():
    s = MelStream()
    s.push(np.zeros(5 * 640, np.float32))
    with pytest.raises(AudioFeatureError, match="n_frames"):
        s.flush(3)


def test_stream_lookahead_is_when_a_frame_comes_out():
    s = MelStream()
    ahead = int(round(s.lookahead_ms * SR / 1000))
    assert ahead == 1000  # 62.5 ms
    got = s.push(np.zeros(640 * 3 + ahead - 1, np.float32))
    assert got.shape[0] == 2 and s.frames_emitted == 2  # frame 2 still waits for one sample
    assert s.push(np.zeros(1, np.float32)).shape[0] == 1 and s.frames_emitted == 3
