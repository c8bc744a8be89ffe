"""talkgs.media on synthetic clips written into tmp_path (and the anchor clip when present)."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from talkgs.errors import MediaError
from talkgs.media import (
    VideoWriter,
    copy_video_stream,
    count_frames,
    fit_audio_to_frames,
    iter_frames,
    probe,
    read_audio,
    read_frames,
    read_wav,
    write_video,
    write_wav,
)

av = pytest.importorskip("av")

SR = 16_000
ANCHOR = Path(__file__).resolve().parents[1].parent / "shared/data/anchor_cnn_512_25fps.mp4"
BACKENDS = ["av", "cv2"]


# -- synthetic media ---------------------------------------------------------------------


def pattern(i: int, h: int = 64, w: int = 64) -> np.ndarray:
    """A frame whose index is written in 8 black/white 8x16 blocks (bit b = block b),
    above a smooth colour ramp that moves with i."""
    img = np.zeros((h, w, 3), np.uint8)
    for b in range(8):
        img[:16, 8 * b : 8 * b + 8] = 255 if (i >> b) & 1 else 0
    yy, xx = np.mgrid[0 : h - 16, 0:w]
    img[16:, :, 0] = (xx * 2 + i * 3) % 256
    img[16:, :, 1] = yy * 3
    img[16:, :, 2] = 128
    return img


def decode_index(frame: np.ndarray) -> int:
    return sum(int(frame[8, 8 * b + 4].mean() > 127) << b for b in range(8))


def tone(seconds: float, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * SR))) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def make_clip(path: Path, n: int, fps: float, audio: np.ndarray | None = None, h: int = 64, w: int = 64) -> Path:
    write_video(path, [pattern(i, h, w) for i in range(n)], fps=fps, audio=audio, preset="ultrafast")
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {
        "30": make_clip(d / "c30.mp4", 61, 30, audio=tone(61 / 30)),
        "25": make_clip(d / "c25.mp4", 50, 25, audio=tone(2.0)),
        "25_silent": make_clip(d / "c25_noaudio.mp4", 40, 25),
    }


# -- decoding and resampling ------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_30fps_resampled_to_25fps_picks_source_frame_at_output_centre(clips, backend):
    frames = list(iter_frames(clips["30"], fps=25, backend=backend))
    duration = 61 / 30
    assert len(frames) == round(duration * 25) == 51
    got = [decode_index(f) for f in frames]
    # Output i is centred on (i + 0.5) / 25; source j is shown during [j / 30, (j + 1) / 30).
    expected = [(6 * i + 3) // 5 for i in range(51)]
    assert got == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_25fps_source_comes_out_frame_for_frame(clips, backend):
    frames = read_frames(clips["25"], fps=25, backend=backend)
    assert frames.shape == (50, 64, 64, 3) and frames.dtype == np.uint8
    assert [decode_index(f) for f in frames] == list(range(50))


def test_upsampling_25_to_50fps_repeats_each_frame(clips):
    frames = read_frames(clips["25"], fps=50)
    assert [decode_index(f) for f in frames] == [i // 2 for i in range(100)]


def test_read_frames_range_matches_full_decode_and_scale(clips):
    full = read_frames(clips["30"])
    part = read_frames(clips["30"], start=17, stop=44)
    np.testing.assert_array_equal(part, full[17:44])
    half = read_frames(clips["30"], start=0, stop=3, scale=0.5)
    assert half.shape == (3, 32, 32, 3)
    # Area interpolation of a 2x2 block average stays close to the mean of the block.
    ref = full[:3].reshape(3, 32, 2, 32, 2, 3).mean(axis=(2, 4))
    assert np.abs(half.astype(float) - ref).max() <= 1.0


def test_av_and_cv2_backends_decode_identical_pixels(clips):
    a = read_frames(clips["30"], backend="av")
    b = read_frames(clips["30"], backend="cv2")
    assert a.shape == b.shape
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


# -- writing ------------------------------------------------------------------------------


def test_round_trip_frames_and_audio(tmp_path):
    n, fps = 60, 25
    frames = np.stack([pattern(i, 96, 128) for i in range(n)])
    wav = tone(3.0, freq=440.0)  # longer than the video: must be trimmed to 2.4 s
    path = tmp_path / "rt.mp4"
    with VideoWriter(path, fps=fps, audio=wav) as w:
        w.write(frames[0])
        w.write_batch(frames[1:])
    info = probe(path)
    assert (info.width, info.height, info.n_frames, info.fps) == (128, 96, n, 25.0)
    assert info.has_audio and info.audio_sample_rate == SR and info.audio_channels == 1
    assert info.video_codec == "h264" and abs(info.duration_s - n / fps) < 1e-9
    assert count_frames(path) == n

    back = read_frames(path)
    assert back.shape == frames.shape
    err = np.abs(back.astype(np.int16) - frames.astype(np.int16))
    assert err.mean() < 2.0, err.mean()
    assert [decode_index(f) for f in back] == list(range(n))

    audio = read_audio(path)
    assert abs(audio.shape[0] / SR - n / fps) < 1 / fps
    spec = np.abs(np.fft.rfft(audio[SR // 10 : -SR // 10]))
    peak_hz = np.argmax(spec) * SR / (audio.shape[0] - SR // 5)
    assert abs(peak_hz - 440.0) < 3.0, peak_hz


def test_short_audio_is_padded_to_video_duration(tmp_path):
    path = make_clip(tmp_path / "pad.mp4", 50, 25, audio=tone(1.0))
    audio = read_audio(path)
    assert abs(audio.shape[0] / SR - 2.0) < 1 / 25
    assert np.abs(audio[int(1.2 * SR) :]).max() < 0.02  # the padding is silence
    assert np.abs(audio[int(0.2 * SR) : int(0.8 * SR)]).max() > 0.4


def test_audio_is_aligned_to_the_first_video_frame(tmp_path):
    # A click at the start of frame 20 (0.8 s) must come back at sample 640 * 20.
    wav = np.zeros(2 * SR, np.float32)
    click_at = 640 * 20
    wav[click_at : click_at + 16] = 0.9
    path = make_clip(tmp_path / "click.mp4", 50, 25, audio=wav)
    audio = read_audio(path)
    peak = int(np.argmax(np.abs(audio)))
    assert abs(peak - click_at) <= 32, peak  # within 2 ms (AAC smears the click)


def test_odd_frame_size_is_padded_by_one_pixel(tmp_path):
    path = tmp_path / "odd.mp4"
    frames = [pattern(i, 63, 65) for i in range(5)]
    write_video(path, frames, fps=25)
    info = probe(path)
    assert (info.height, info.width) == (64, 66)
    back = read_frames(path)
    assert np.abs(back[:, :63, :65].astype(int) - np.stack(frames)).mean() < 2.0
    # The added row/column copies the edge.
    assert np.abs(back[:, 63, :65].astype(int) - back[:, 62, :65]).mean() < 3.0


def test_writer_leaves_nothing_on_exception(tmp_path):
    path = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(path, audio=tone(1.0)) as w:
            for i in range(10):
                w.write(pattern(i))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_bad_frames_and_empty_video(tmp_path):
    path = tmp_path / "bad.mp4"
    with pytest.raises(MediaError, match="uint8"):
        with VideoWriter(path) as w:
            w.write(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(MediaError, match="earlier frames"):
        with VideoWriter(path) as w:
            w.write(pattern(0))
            w.write(pattern(1, 32, 32))
    with pytest.raises(MediaError, match="no frames"):
        with VideoWriter(path):
            pass
    assert list(tmp_path.iterdir()) == []


def test_wav_round_trip_and_fit(tmp_path):
    wav = tone(0.5, freq=1000.0, amp=0.8)
    write_wav(tmp_path / "a.wav", wav, SR)
    back, sr = read_wav(tmp_path / "a.wav")
    assert sr == SR and back.dtype == np.float32 and back.shape == wav.shape
    assert np.abs(back - wav).max() < 1.0 / 32767
    assert np.array_equal(read_audio(tmp_path / "a.wav"), back)  # no video: time 0 = first sample

    assert fit_audio_to_frames(wav, 10).shape == (6400,)
    padded = fit_audio_to_frames(wav, 20)
    assert padded.shape == (12800,) and np.all(padded[8000:] == 0) and np.array_equal(padded[:8000], wav)


# -- errors -------------------------------------------------------------------------------


def test_missing_path_names_the_file(tmp_path):
    missing = tmp_path / "nope.mp4"
    copy = lambda p: copy_video_stream(p, tmp_path / "out.mp4")  # noqa: E731
    # iter_frames checks at the call, before the first frame is asked for.
    for fn in (probe, count_frames, read_audio, iter_frames, read_frames, read_wav, copy):
        with pytest.raises(MediaError, match="nope.mp4"):
            fn(missing)
    assert list(tmp_path.iterdir()) == []


def test_text_file_renamed_mp4(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 50)
    for fn in (probe, read_audio, lambda p: list(iter_frames(p))):
        with pytest.raises(MediaError, match="notes.mp4") as e:
            fn(fake)
        assert "\n" not in str(e.value)


def test_truncated_file_with_index_in_front(clips, tmp_path):
    data = clips["25"].read_bytes()
    cut = tmp_path / "half.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match="half.mp4.*truncated"):
        probe(cut)
    with pytest.raises(MediaError, match="half.mp4"):
        list(iter_frames(cut))
    with pytest.raises(MediaError, match="half.mp4.*truncated"):
        list(iter_frames(cut, backend="cv2"))
    with pytest.raises(MediaError, match="half.mp4.*(truncated|decode error)"):
        read_audio(cut)


def test_truncated_file_with_index_at_the_end(tmp_path):
    # Written without faststart: the moov index is lost with the second half.
    path = tmp_path / "late_index.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        for i in range(50):
            f = av.VideoFrame.from_ndarray(pattern(i), format="rgb24")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    data = path.read_bytes()
    cut = tmp_path / "late_index_cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match="late_index_cut.mp4"):
        probe(cut)


def test_corrupt_bytes_mid_file_name_the_frame(clips, tmp_path):
    data = bytearray(clips["25"].read_bytes())
    mid = len(data) // 2
    data[mid : mid + 2000] = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(bytes(data))
    with pytest.raises(MediaError, match=r"corrupt.mp4.*frame \d+"):
        list(iter_frames(bad))


def test_no_audio_and_no_video_streams(clips, tmp_path):
    with pytest.raises(MediaError, match="c25_noaudio.mp4.*no audio stream"):
        read_audio(clips["25_silent"])
    assert probe(clips["25_silent"]).has_audio is False
    audio_only = tmp_path / "voice.m4a"
    with av.open(str(audio_only), "w") as c:
        s = c.add_stream("aac", rate=SR)
        s.layout = "mono"
        w = tone(1.0)
        for k in range(0, w.shape[0], 1024):
            f = av.AudioFrame.from_ndarray(w[None, k : k + 1024].copy(), format="flt", layout="mono")
            f.sample_rate, f.pts, f.time_base = SR, k, Fraction(1, SR)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    with pytest.raises(MediaError, match="voice.m4a.*no video stream"):
        probe(audio_only)
    info = probe(audio_only, require_video=False)
    assert not info.has_video and info.has_audio and info.audio_sample_rate == SR
    assert abs(read_audio(audio_only).shape[0] / SR - 1.0) < 0.04


# -- stream copy ----------------------------------------------------------------------------


def test_copy_video_stream_25fps_is_frame_exact(clips, tmp_path):
    dst = tmp_path / "copy.mp4"
    assert copy_video_stream(clips["25"], dst) is True
    info = probe(dst)
    assert info.n_frames == 50 and info.fps == 25.0 and info.has_audio is False
    np.testing.assert_array_equal(read_frames(dst), read_frames(clips["25"]))


def test_copy_video_stream_refuses_30fps(clips, tmp_path):
    dst = tmp_path / "copy30.mp4"
    assert copy_video_stream(clips["30"], dst) is False
    assert list(tmp_path.iterdir()) == []


def test_audio_time_zero_is_the_first_video_frame(tmp_path):
    # Video starts 0.4 s after the audio: the first 0.4 s of audio precede frame 0 and go.
    path = tmp_path / "late_video.mp4"
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 64, 64, "yuv420p"
        a = c.add_stream("aac", rate=SR)
        a.layout = "mono"
        for i in range(30):
            f = av.VideoFrame.from_ndarray(pattern(i), format="rgb24")
            f.pts = i + 10  # 10 frames = 0.4 s late
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
        wav = np.zeros(int(1.6 * SR), np.float32)
        wav[int(0.8 * SR) : int(0.8 * SR) + 16] = 0.9
        for k in range(0, wav.shape[0], 1024):
            f = av.AudioFrame.from_ndarray(wav[None, k : k + 1024].copy(), format="flt", layout="mono")
            f.sample_rate, f.pts, f.time_base = SR, k, Fraction(1, SR)
            for p in a.encode(f):
                c.mux(p)
        for p in a.encode(None):
            c.mux(p)
    info = probe(path)
    assert info.video_start_s == pytest.approx(0.4) and info.n_frames == 30
    assert [decode_index(f) for f in read_frames(path)] == list(range(30))
    audio = read_audio(path)
    assert abs(int(np.argmax(np.abs(audio))) - int(0.4 * SR)) <= 32
    assert audio.shape[0] == int(1.2 * SR)  # audio ends at 1.6 s = 1.2 s after frame 0


# -- without PyAV (the GPU machine) -------------------------------------------------------


def test_importing_media_and_audio_does_not_import_av():
    code = "import sys, talkgs.media, talkgs.audio; print('av' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_without_pyav_frames_come_from_opencv(clips, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now raises ImportError
    info = probe(clips["30"])
    assert info.backend == "cv2" and info.n_frames == 61 and info.fps == 30.0 and info.has_audio is None
    frames = read_frames(clips["30"], start=5, stop=20)
    assert [decode_index(f) for f in frames] == [(6 * i + 3) // 5 for i in range(5, 20)]
    assert count_frames(clips["25"]) == 50
    assert copy_video_stream(clips["25"], tmp_path / "x.mp4") is False
    with pytest.raises(MediaError, match="PyAV"):
        read_audio(clips["25"])
    with pytest.raises(MediaError, match="PyAV"):
        write_video(tmp_path / "y.mp4", [pattern(0)])
    assert list(tmp_path.iterdir()) == []


# -- the real anchor clip ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not ANCHOR.exists(), reason=f"anchor clip not found at {ANCHOR}")
def test_anchor_clip(tmp_path):
    info = probe(ANCHOR)
    assert (info.width, info.height, info.fps, info.n_frames) == (512, 512, 25.0, 1779)
    audio = read_audio(ANCHOR)
    assert abs(audio.shape[0] / SR - 71.2) < 0.1 and audio.dtype == np.float32
    assert np.abs(audio).max() <= 1.0
    dst = tmp_path / "anchor_video.mp4"
    assert copy_video_stream(ANCHOR, dst) is True
    assert count_frames(dst) == 1779
    frames = read_frames(ANCHOR, start=1000, stop=1004)
    np.testing.assert_array_equal(frames, read_frames(dst, start=1000, stop=1004))
