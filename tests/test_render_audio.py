"""`talkgs render`: any audio length -> exactly round(duration x 25) frames with the audio muxed
in sync; pose/eye drive sequences that never jump; streaming equals batch; clear errors.

Long inputs (61 s, 10 min) render a minimally trained head at 32x32 with a few dozen
Gaussians: the properties tested here (frame counts, audio/video sync, encoding) do not
depend on picture quality, and the whole real pipeline (features, model, rasterizer,
compositing, H.264 + AAC) runs. Quality and mouth behaviour use the tiny trained head.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from talkgs.audio import extract
from talkgs.commands.render import RenderConfig
from talkgs.data import load_dataset
from talkgs.data import format as fmt
from talkgs.errors import AudioFeatureError, TalkgsError
from talkgs.media import probe, read_audio, write_wav
from talkgs.model.config import BranchInitConfig, HeadConfig
from talkgs.render.drive import DriveConfig, default_segment, drive_plan, pingpong, synth_blinks
from talkgs.render.renderer import HeadRenderer, render_audio, render_features
from talkgs.train.trainer import Trainer
from tests.media_utils import tone, write_audio, write_clip
from tests.train_utils import _tiny_cfg


# ----------------------------------------------------------------------------- drive (pure)


@pytest.mark.parametrize("length", [1, 2, 7, 300])
def test_pingpong_never_jumps_and_covers_the_segment(length):
    seq = pingpong(5000, length)
    assert seq.min() == 0 and seq.max() == length - 1
    steps = np.abs(np.diff(seq))
    assert steps.max() <= 1
    if length > 1:
        assert np.all(steps == 1)  # never holds, never jumps
        assert np.array_equal(np.unique(seq), np.arange(length))
    assert np.array_equal(pingpong(100, length, start=1234), seq[1234:1334])


def test_synthetic_blinks_have_a_natural_rate_and_spacing():
    n = 25 * 600
    b = synth_blinks(n, rate_per_min=15.0, seed=3)
    assert b.min() == 0.0 and b.max() == 1.0
    onsets = np.flatnonzero((b[1:] > 0) & (b[:-1] == 0)) + 1
    assert 0.6 * 150 <= len(onsets) <= 1.4 * 150, len(onsets)
    assert np.diff(onsets).min() >= 1.5 * 25 - 1
    assert (b > 0).mean() < 0.15  # eyes are open most of the time
    assert np.array_equal(synth_blinks(1000, 15.0, 3)[:990], b[:990])  # prefix-stable (streaming)
    assert not synth_blinks(n, 0.0).any()


def test_drive_plan_defaults_to_the_longest_training_shot():
    meta = {"n_frames": 1000, "split": {"train": [0, 900], "val": [900, 1000]},
            "shots": [[0, 100], [100, 450], [450, 950], [950, 1000]]}
    assert default_segment(meta) == (450, 900)  # the shot is cut at the split's end
    tracks = {"blink": np.linspace(0, 1, 1000).astype(np.float32),
              "eye_ratio": np.full((1000, 2), 0.3, np.float32)}
    plan = drive_plan(meta, tracks, 2000)
    assert plan.frames.min() == 450 and plan.frames.max() == 899
    assert np.array_equal(plan.blink, tracks["blink"][plan.frames])
    still = drive_plan(meta, tracks, 50, DriveConfig(pose="still", blinks="open"))
    assert np.all(still.frames == 675) and not still.blink.any()
    synth = drive_plan(meta, tracks, 3000, DriveConfig(blinks="synth", seed=1))
    assert synth.blink.max() == 1.0
    closed = synth.blink == 1.0
    assert np.all(synth.eye_ratio[closed] < synth.eye_ratio[~closed & (synth.blink == 0)].min())
    with pytest.raises(TalkgsError, match="outside"):
        drive_plan(meta, tracks, 10, DriveConfig(segment=(990, 1200)))


# ----------------------------------------------------------------------------- a minimal run


@pytest.fixture(scope="module")
def mini_run(anchor_dataset, tmp_path_factory):
    """A head trained for a handful of steps at 32x32 with ~100 Gaussians (fast to render)."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("mini") / "run"
    cfg = _tiny_cfg(anchor_dataset, out)
    cfg = dataclasses.replace(
        cfg,
        image_scale=1 / 16,
        model=HeadConfig(face_init=BranchInitConfig(n=64, kind="surface"), mouth_init=BranchInitConfig(n=16, kind="cavity")),
        mouth=dataclasses.replace(cfg.mouth, iterations=3, warmup_static=1, densify=None),
        face=dataclasses.replace(cfg.face, iterations=3, warmup_static=1, densify=None),
        fuse=dataclasses.replace(cfg.fuse, iterations=2),
    )
    Trainer(cfg).run()
    return out


def _render(run, audio, out, **kw):
    cfg = RenderConfig(run=run, audio=audio, output=out, device="cpu", progress=False, **kw)
    return render_audio(cfg)


def _check_av(out, n_expected):
    info = probe(out)
    assert info.n_frames == n_expected
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert abs(info.audio_duration_s - n_expected / 25) <= 1 / 25, (info.audio_duration_s, n_expected / 25)
    return info


def _speech(anchor_dataset, seconds: float, start_s: float = 5.0) -> np.ndarray:
    wav = read_audio(anchor_dataset / fmt.AUDIO, 16000)
    a = int(start_s * 16000)
    return wav[a : a + int(seconds * 16000)]


def test_three_seconds_of_wav(mini_run, anchor_dataset, tmp_path):
    wav = _speech(anchor_dataset, 3.013)
    src = tmp_path / "three.wav"
    write_wav(src, wav)
    summary = _render(mini_run, src, tmp_path / "three.mp4")
    n = round(3.013 * 25)
    assert summary["frames"] == n
    _check_av(tmp_path / "three.mp4", n)
    # The muxed audio is the input audio (AAC is lossy: compare envelopes).
    back = read_audio(tmp_path / "three.mp4", 16000)[: len(wav)]
    env = lambda x: np.sqrt(np.convolve(x**2, np.ones(800) / 800, "valid"))[::400]  # noqa: E731
    assert np.corrcoef(env(back), env(wav[: len(back)]))[0, 1] > 0.95


def test_sixty_one_seconds_of_mp3_at_44k(mini_run, anchor_dataset, tmp_path):
    wav16 = np.tile(_speech(anchor_dataset, 20.0), 4)[: int(61.0 * 16000)]
    t = np.arange(int(61.0 * 44100)) / 44100
    wav44 = np.interp(t, np.arange(len(wav16)) / 16000, wav16).astype(np.float32)
    src = write_audio(tmp_path / "speech.mp3", wav44, 44100)
    dur = probe(src, require_video=False).audio_duration_s
    out = tmp_path / "speech.mp4"
    summary = _render(mini_run, src, out, batch_size=64)
    n = summary["frames"]
    assert abs(n - 61.0 * 25) <= 2 and n == round(len(read_audio(src, 16000)) / 640)
    info = _check_av(out, n)
    assert info.audio_sample_rate == 44100  # muxed at the source's rate, not 16 kHz
    assert abs(dur - n / 25) < 0.1


def test_ten_minutes_stay_in_sync(mini_run, tmp_path):
    """A 10-minute m4a with beeps at known times: exact frame count, and the beeps sit at the
    same times in the output's audio at the start and at the end (no drift)."""
    sr = 16000
    dur = 600.28
    rng = np.random.default_rng(0)
    wav = (0.01 * rng.standard_normal(int(dur * sr))).astype(np.float32)
    beeps = [10.0, 300.0, 590.0]
    for b in beeps:
        a = int(b * sr)
        wav[a : a + 3200] += tone(0.2, 1000.0).astype(np.float32) / 32767
    src = write_audio(tmp_path / "long.m4a", wav, sr)
    out = tmp_path / "long.mp4"
    summary = _render(mini_run, src, out, batch_size=256)
    n = round(len(read_audio(src, sr)) / 640)
    assert summary["frames"] == n and abs(n - dur * 25) <= 1
    _check_av(out, n)
    back = read_audio(out, sr)
    for b in beeps:
        seg = back[int((b - 1) * sr) : int((b + 1) * sr)] ** 2
        energy = np.convolve(seg, np.ones(160), "valid")
        onset = (b - 1) + np.flatnonzero(energy > 0.25 * energy.max())[0] / sr
        assert abs(onset - b) < 1 / 25, (b, onset)


def test_feature_kind_mismatch_is_refused(mini_run, anchor_dataset, tmp_path):
    src = tmp_path / "a.wav"
    write_wav(src, _speech(anchor_dataset, 1.0))
    with pytest.raises(AudioFeatureError, match="trained with 'mel'"):
        _render(mini_run, src, tmp_path / "x.mp4", audio_kind="phones")
    bad = tmp_path / "ds.npy"
    np.save(bad, np.zeros((25, 16, 29), np.float32))  # DeepSpeech-shaped, for a mel run
    with pytest.raises(AudioFeatureError):
        _render(mini_run, src, tmp_path / "x.mp4", features=bad)
    assert not (tmp_path / "x.mp4").exists()
    r = subprocess.run(
        [sys.executable, "-m", "talkgs", "render", str(mini_run), "--audio", str(src), "-o", str(tmp_path / "x.mp4"),
         "--audio-kind", "hubert", "--device", "cpu"],
        capture_output=True, text=True,
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("talkgs:") and "'mel'" in lines[0], r.stderr


def test_bad_audio_fails_in_one_line_and_keeps_existing_output(mini_run, tmp_path):
    from talkgs.media.writer import VideoWriter
    from talkgs.provenance import made_by

    out = tmp_path / "keep.mp4"  # an earlier render: --force may replace it, bad audio must not
    with VideoWriter(out, comment=made_by("render")) as w:
        w.write_batch(np.zeros((3, 32, 32, 3), np.uint8))
    earlier = out.read_bytes()
    corrupt = tmp_path / "corrupt.mp3"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    silent_video = write_clip(tmp_path / "noaudio.mp4", [np.zeros((32, 32, 3), np.uint8)] * 10, fps=25)
    short = tmp_path / "short.wav"
    write_wav(short, np.zeros(100, np.float32))
    cases = {
        "missing": (tmp_path / "nope.wav", "does not exist"),
        "corrupt": (corrupt, ""),
        "no audio": (silent_video, "no audio"),
        "too short": (short, "at least one frame"),
    }
    for name, (src, needle) in cases.items():
        r = subprocess.run(
            [sys.executable, "-m", "talkgs", "render", str(mini_run), "--audio", str(src), "-o", str(out),
             "--device", "cpu", "--no-progress", "--force"],
            capture_output=True, text=True,
        )
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2, (name, r.stderr)
        assert len(lines) == 1 and lines[0].startswith("talkgs:") and needle in lines[0], (name, r.stderr)
        assert out.read_bytes() == earlier, name
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("keep")) == ["keep.mp4"]


def test_silence_keeps_the_mouth_closed(trained, anchor_dataset):
    """Digital silence renders a mouth as closed as the training data's closed mouths: the
    visible inside-mouth area stays at the closed level."""
    _, _, _, run = trained
    r = HeadRenderer(run, "cpu")
    cfg = r.state["config"]
    ds = load_dataset(anchor_dataset, "cpu", audio_kind=None, frame_range=tuple(cfg["frame_range"]),
                      scale=r.scale)
    gt_area = (ds.labels[ds.train_idx] == fmt.LABEL_MOUTH).sum(dim=(1, 2)).float().numpy()
    closed, typical = np.percentile(gt_area, 10), np.percentile(gt_area, 75)

    def visible_area(wav):
        n = len(wav) // 640
        feats = torch.as_tensor(extract("mel", wav, n))
        from talkgs.model.audio_encoder import gather_windows

        _, area = r.render_batch(gather_windows(feats, torch.arange(n), 8), r.plan(n), with_mouth=True)
        return area.numpy()

    silent = visible_area(np.zeros(16000 * 2, np.float32))
    assert np.median(silent) <= closed + 0.25 * (typical - closed) + 0.5, (silent.mean(), closed, typical)
    # Digital silence is quieter than any real audio the mouth predictor saw (its stats leave out
    # the padded windows at the clip's ends), so it is clamped to the per-channel training minimum,
    # the quietest pause, rather than extrapolated; the same holds for a louder voice.
    pred = r.model.mouth_predictor
    assert pred is not None  # the default head is driven by a mouth state predicted from audio
    assert torch.isfinite(pred.in_lo).all() and torch.all(pred.in_lo <= pred.in_hi)
    silence = torch.as_tensor(extract("mel", np.zeros(16000, np.float32), 25))[10:11]
    assert torch.all(silence < pred.in_lo)

    def windows(x):  # one frame's [W, C] features as the 8-frame windows of a steady sound
        return x.expand(8, *x.shape[-2:])[None].clone()

    loud = pred.in_hi.expand_as(silence) + 5.0
    with torch.no_grad():
        assert torch.equal(pred(windows(silence)), pred(windows(pred.in_lo.expand_as(silence))))
        assert torch.equal(pred(windows(loud)), pred(windows(pred.in_hi.expand_as(silence))))


# ----------------------------------------------------------------------------- --drive-video


def test_drive_video_states_follow_that_videos_lips(mini_run, anchor_dataset, excerpt_dataset):
    """The excerpt is anchor frames 250-400 prepared on its own (its own tracks and pose fit):
    the states transferred from its lips must follow the anchor's own states of those frames."""
    from talkgs.landmarks import measure_offsets

    r = HeadRenderer(mini_run, "cpu")
    n = int(fmt.read_meta(excerpt_dataset)["n_frames"])
    got = r.video_mouth_states(excerpt_dataset, n).numpy()
    meta = fmt.read_meta(anchor_dataset)
    tr = fmt.load_tracks(anchor_dataset, ("landmarks", "w2c"), 250, 250 + n)
    i = meta["intrinsics"]
    K = np.array([[i["fx"], 0, i["cx"]], [0, i["fy"], i["cy"]], [0, 0, 1.0]])
    own = r.model.mouth_basis.encode(torch.as_tensor(measure_offsets(tr["landmarks"], tr["w2c"], K))).numpy()
    assert got.shape == (n, r.model.mouth_basis.n_components)
    assert np.corrcoef(got[:, 0], own[:, 0])[0, 1] > 0.9
    assert abs(got[:, 0].mean()) < 1e-4  # centred on the other video's own mean face
    assert 0.5 < got[:, 0].std() / own[:, 0].std() < 2.0


def test_render_drive_video_and_its_refusals(mini_run, anchor_dataset, excerpt_dataset, tmp_path):
    out = tmp_path / "dv.mp4"
    s = _render(mini_run, excerpt_dataset / fmt.AUDIO, out, drive_video=excerpt_dataset)
    assert s["mouth"] == f"video {excerpt_dataset}"
    _check_av(out, int(fmt.read_meta(excerpt_dataset)["n_frames"]))

    def refusal(*args):
        r = subprocess.run([sys.executable, "-m", "talkgs", "render", str(mini_run), "--device", "cpu", *map(str, args)],
                           capture_output=True, text=True)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("talkgs:"), r.stderr
        return lines[0]

    video = excerpt_dataset / fmt.FRAMES
    assert "talkgs prepare" in refusal("--audio", video, "-o", tmp_path / "a.mp4", "--drive-video", video)
    msg = refusal("--audio", anchor_dataset / fmt.AUDIO, "-o", tmp_path / "b.mp4", "--drive-video", excerpt_dataset)
    assert "has 150 frames" in msg and "needs 1779" in msg
    assert not (tmp_path / "a.mp4").exists() and not (tmp_path / "b.mp4").exists()



# ----------------------------------------------------------------------------- mouth amplitude, measured states


def test_measured_mouth_states_and_mouth_amplitude(mini_run, anchor_dataset):
    """``measured_mouth_states(a, b)`` are the states training measured for dataset frames
    [a, b) (fit_face_model on the run's own frames, its basis refitted from scratch); a render
    with ``mouth_amplitude`` 2 is the render of the predicted states' deviation from the mean
    mouth doubled, and differs from the default only around the mouth; 1 is the default, bit for bit."""
    import copy

    from talkgs.metrics.lips import lips_landmarks
    from talkgs.model.audio_encoder import gather_windows
    from talkgs.train.state import fit_face_model

    n = 16
    seg = DriveConfig(segment=(1500, 1500 + n))  # the start of the run's frames (1500..1779)
    r = HeadRenderer(mini_run, "cpu", drive=seg)
    lo, hi = r.state["config"]["frame_range"]
    ds = load_dataset(anchor_dataset, "cpu", audio_kind=r.audio_kind, frame_range=(lo, hi), scale=r.scale,
                      load_images=False)
    refit = copy.deepcopy(r.model)
    refit.mouth_basis.components.zero_()  # fit_face_model must rebuild the basis itself
    trained_states = fit_face_model(refit, ds)
    assert trained_states.shape == (hi - lo, r.model.mouth_basis.n_components)
    a, b = 1605, 1630  # across the end of the training split (1617): val frames are measured alike
    got = r.measured_mouth_states(a, b)
    assert got.shape == (b - a, r.model.mouth_basis.n_components) and got.dtype == torch.float32
    assert got[:, 0].std() > 0.3  # the mouth moves in these frames: equality below is not trivial
    torch.testing.assert_close(got, trained_states[a - lo : b - lo], rtol=0, atol=1e-4)
    assert not torch.allclose(got, trained_states[a - lo + 1 : b - lo + 1], atol=1e-2)  # frame by frame
    for bad in ((-1, 5), (10, 10), (1770, r.n_dataset_frames + 1)):  # no silent wrap-around or short result
        with pytest.raises(TalkgsError, match="measured mouth states of frames"):
            r.measured_mouth_states(*bad)

    win = gather_windows(ds.audio, torch.arange(n) + (r.segment[0] - lo), r.audio_window)
    r1 = HeadRenderer(mini_run, "cpu", drive=seg, mouth_amplitude=1.0)
    r2 = HeadRenderer(mini_run, "cpu", drive=seg, mouth_amplitude=2.0)
    default, one, two = (x.render(win, x.plan(n)) for x in (r, r1, r2))
    for key in ("image", "face_alpha", "mouth_alpha"):
        assert torch.equal(getattr(one, key), getattr(default, key)), key
    pred = r.model.mouth_predictor
    with torch.no_grad():
        doubled = pred.out_mean + 2.0 * (r.model.predict_states(win) - pred.out_mean)
    explicit = r.render(win, r.plan(n), doubled)
    torch.testing.assert_close(two.image, explicit.image, rtol=0, atol=1e-5)
    diff = (two.image - one.image).abs().amax(-1)  # [n, H, W]
    assert diff.amax() > 1e-4, float(diff.amax())  # (the mini head's mouth moves little: float renders)
    assert not torch.allclose(two.visible_mouth_area(), one.visible_mouth_area(), rtol=0, atol=1e-4)
    # Only the mouth changes: every changed pixel is within 4 px of the frame's lips.
    lips = lips_landmarks(fmt.load_tracks(anchor_dataset, ("landmarks",), lo, hi)["landmarks"]) * r.scale
    lips = lips[r.plan(n).frames - lo]  # [n, 40, 2]
    ys, xs = np.mgrid[: r.height, : r.width]
    x0, y0 = lips.min(1).T[..., None, None] - 4
    x1, y1 = lips.max(1).T[..., None, None] + 4
    near = (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
    changed = diff.numpy() > 1e-6
    assert changed.any() and not (changed & ~near).any(), np.argwhere(changed & ~near)[:5]


def test_cuda_graphs_are_off_the_cpu(mini_run):
    """Off CUDA the option renders eagerly: no graph is built."""
    assert HeadRenderer(mini_run, "cpu", cuda_graphs=True).graphs is None


def test_a_padded_tail_batch_yields_its_own_frames(mini_run, anchor_dataset):
    """pad_tail renders the last, partial batch at the full size (its last frame repeated) and
    yields only its own frames: the frames of the unpadded render, with mouth states too."""
    from talkgs.data import format as fmt

    r = HeadRenderer(mini_run, "cpu")
    feats = np.array(fmt.load_features(Path(anchor_dataset) / fmt.audio_feature_file(r.audio_kind))[:21])
    states = r.measured_mouth_states(100, 121)
    for st in (None, states):
        plain = list(render_features(r, feats, batch_size=8, start=5, states=st, pad_tail=False))
        padded = list(render_features(r, feats, batch_size=8, start=5, states=st, pad_tail=True))
        assert [b.shape[0] for b in padded] == [8, 8, 5] == [b.shape[0] for b in plain]
        for a, b in zip(plain, padded):  # batched products may round differently by batch size
            assert np.abs(a.astype(np.int16) - b.astype(np.int16)).max() <= 1


def test_render_lanes_give_the_same_frames_in_order(mini_run, anchor_dataset):
    """render_features with 3 lanes (batches rendered by 3 threads at once) yields the frames of one
    lane, batch by batch in order, the last batch partial; with mouth states given too."""
    from talkgs.data import format as fmt

    r = HeadRenderer(mini_run, "cpu")
    feats = np.array(fmt.load_features(Path(anchor_dataset) / fmt.audio_feature_file(r.audio_kind))[:47])
    one = list(render_features(r, feats, batch_size=8, start=5))
    three = list(render_features(r, feats, batch_size=8, start=5, lanes=3))
    assert [b.shape[0] for b in three] == [8, 8, 8, 8, 8, 7] == [b.shape[0] for b in one]
    for a, b in zip(one, three):
        np.testing.assert_array_equal(a, b)
    assert np.abs(np.diff(np.concatenate(one).astype(np.int16), axis=0)).max() > 0, "frames that differ"
    states = r.measured_mouth_states(100, 147)
    one = np.concatenate(list(render_features(r, feats, batch_size=8, states=states)))
    two = np.concatenate(list(render_features(r, feats, batch_size=8, states=states, lanes=2)))
    np.testing.assert_array_equal(one, two)
    assert len(r.lanes(3)) == 3 and r.lanes(3)[0].stream is None  # kept; no streams off CUDA
