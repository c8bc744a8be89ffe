"""The explicit mouth state: voice augmentation, lifting landmarks into the head frame, the PCA
basis, the landmark loss and the audio -> state predictor (real anchor-clip data where it is)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from talkgs import landmarks as L
from talkgs.audio import augment as A
from talkgs.conventions import project
from talkgs.errors import AudioFeatureError, TalkgsError
from talkgs.landmarks import measure_offsets
from talkgs.model.mouth import MOUTH_REGION_IDX, MouthBasis, MouthPredictor, landmark_weights
from talkgs.train.losses import landmark_loss

SR = 16_000


def _tone(freq: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / SR)[spec.argmax()])


# ----------------------------------------------------------------------------------- augment


def test_speed_changes_length_and_pitch_together():
    y = A.change_speed(_tone(200.0), 1.25)
    assert abs(len(y) - SR / 1.25) <= 1
    assert abs(_peak_hz(y) - 250.0) < 3.0


def test_pitch_shift_keeps_length_and_moves_pitch():
    for semis, expect in ((12.0, 400.0), (-12.0, 100.0), (3.0, 200.0 * 2 ** 0.25)):
        y = A.shift_pitch(_tone(200.0, 1.5), semis)
        assert len(y) == int(1.5 * SR)
        assert abs(_peak_hz(y[2000:-2000]) - expect) < 0.03 * expect, (semis, _peak_hz(y))


def test_noise_is_added_at_the_requested_snr():
    x = _tone(300.0, 2.0)
    for colour in ("white", "pink"):
        y = A.add_noise(x, 10.0, np.random.default_rng(0), colour)
        snr = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((y - x).astype(np.float64) ** 2))
        assert abs(snr - 10.0) < 0.5, (colour, snr)
    with pytest.raises(AudioFeatureError):
        A.add_noise(x, 10.0, np.random.default_rng(0), "blue")


def test_room_tone_has_the_requested_level_and_colour():
    """Noise alone at an RMS of ``dbfs``; pink puts more of its power below 1 kHz than white."""
    n = 4 * SR
    low = {}
    for colour in ("white", "pink"):
        y = A.room_tone(n, -50.0, np.random.default_rng(1), colour)
        assert y.dtype == np.float32 and y.shape == (n,)
        rms_db = 20 * np.log10(np.sqrt(np.mean(y.astype(np.float64) ** 2)))
        assert abs(rms_db + 50.0) < 0.1, (colour, rms_db)
        p = np.abs(np.fft.rfft(y)) ** 2
        f = np.fft.rfftfreq(n, 1.0 / SR)
        low[colour] = p[f < 1000].sum() / p.sum()
    assert low["white"] < 0.2 and low["pink"] > 0.5, low
    with pytest.raises(AudioFeatureError):
        A.room_tone(n, 0.0, np.random.default_rng(0))
    with pytest.raises(AudioFeatureError):
        A.room_tone(n, -40.0, np.random.default_rng(0), "blue")


def test_gain_in_decibels():
    y = A.change_gain(_tone(300.0) * 0.1, 6.0)
    assert np.isclose(np.abs(y).max() / (0.05), 10 ** (6 / 20), rtol=1e-3)


def test_inserted_silences_are_digital_zero_and_sources_map_back():
    n = 50
    wav = np.random.default_rng(1).uniform(-0.5, 0.5, n * 640).astype(np.float32)
    out, src = A.insert_silences(wav, n, np.random.default_rng(2), n_gaps=3, min_frames=4, max_frames=6)
    assert len(out) == len(src) * 640
    assert (src == -1).sum() >= 12 and sorted(src[src >= 0]) == list(range(n))
    for j, s in enumerate(src):
        frame = out[j * 640 : (j + 1) * 640]
        if s < 0:
            assert not frame.any()
        else:
            assert np.array_equal(frame, wav[s * 640 : (s + 1) * 640])


def test_predictor_clips_include_a_silent_clip_labelled_closed():
    """The predictor's training pairs: the clip, its augmented copies, and (silent_clip_s) a
    clip of digital silence alone whose every target is the closed mouth."""
    from talkgs.train.config import PredictorConfig
    from talkgs.train.mouth_predictor import augmented_clips

    n, m = 60, 4
    wav = np.random.default_rng(3).uniform(-0.5, 0.5, n * 640).astype(np.float32)
    states = np.random.default_rng(4).normal(size=(n, m)).astype(np.float32)
    closed = np.full(m, -1.5, np.float32)
    cfg = PredictorConfig(speeds=(), semitones=(), gains_db=(), noise_snr_db=(), silence_gaps=0, silent_clip_s=2.0)
    clips = augmented_clips(wav, states, closed, cfg)
    assert [c[0] for c in clips] == ["clean", "silent"]
    _, w, t = clips[1]
    assert w.shape == (50 * 640,) and not w.any() and t.shape == (50, m) and (t == closed).all()
    none = augmented_clips(wav, states, closed, dataclasses.replace(cfg, silent_clip_s=0.0))
    assert [c[0] for c in none] == ["clean"]


def test_other_speakers_are_scaled_to_this_persons_range_and_keep_no_silent_clip():
    """Other people's clips: each named after its speaker, voice-augmented like the person's own
    (none without augmentation), without the silent clip, their states given the total variance
    of this person's."""
    from talkgs.train.config import PredictorConfig
    from talkgs.train.mouth_predictor import other_speaker_clips, scale_to_reference

    rng = np.random.default_rng(5)
    n, m = 60, 4
    ref = rng.normal(size=(200, m)).astype(np.float32) * np.array([1.0, 0.5, 0.3, 0.1], np.float32)
    st = rng.normal(size=(n, m)).astype(np.float32) * 3.0
    scaled = scale_to_reference(st, ref)
    assert np.isclose(scaled.var(0).sum(), ref.var(0).sum(), rtol=1e-5)
    assert np.allclose(scaled / st, (scaled / st)[0, 0], rtol=1e-5)  # one factor, shape kept
    assert scale_to_reference(np.zeros((n, m), np.float32), ref).std() == 0  # no motion stays none
    wav = rng.uniform(-0.5, 0.5, n * 640).astype(np.float32)
    mo = rng.uniform(0, 1, n)
    cfg = PredictorConfig(speeds=(1.1,), semitones=(), gains_db=(6.0,), noise_snr_db=(), silence_gaps=0,
                          silent_clip_s=2.0)
    clips, note = other_speaker_clips([("pat", wav, st, mo)], "mel", ref, cfg)
    assert note is None and [c[0] for c in clips] == ["pat/clean", "pat/speed1.1", "pat/gain+6dB"]
    assert clips[0][1].shape == (n, 16, 80) and np.allclose(clips[0][2], scaled)
    plain, _ = other_speaker_clips([("pat", wav, st, mo)], "mel", ref, dataclasses.replace(cfg, augment=False))
    assert [c[0] for c in plain] == ["pat/clean"] and np.allclose(plain[0][2], scaled)


def test_warp_frames_follows_the_faster_clock():
    ramp = np.arange(100, dtype=np.float32)[:, None]  # value = frame index
    w = A.warp_frames(ramp, 2.0, 50)
    # Output frame j's centre (j + 0.5) / 25 s plays input time 2 (j + 0.5) / 25 s = input frame 2 j + 0.5.
    assert np.allclose(w[:-1, 0], 2 * np.arange(49) + 0.5)


# ----------------------------------------------------------------------------------- lifting


def _camera(yaw_deg: float, dist: float = 0.6, f: float = 1000.0):
    a = np.radians(yaw_deg)
    R = np.diag([1.0, -1.0, -1.0]) @ np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    w2c = np.eye(4)
    w2c[:3, :3] = R
    w2c[:3, 3] = [0.0, 0.0, dist]
    K = np.array([[f, 0, 256.0], [0, f, 256.0], [0, 0, 1]])
    return w2c, K


def test_lifted_offsets_recover_motion_in_the_image_plane():
    c = L.load_canonical_face()
    w2c, K = _camera(0.0)
    moved = c.copy()
    moved[14, 1] -= 0.006  # lower inner lip 6 mm down (in the image plane of a frontal camera)
    moved[17, 1] -= 0.004
    uv, _ = project(moved[None], w2c[None], K)
    off = measure_offsets(uv, w2c[None], K)
    assert abs(off[0, 14, 1] + 0.006) < 2e-4 and abs(off[0, 17, 1] + 0.004) < 2e-4
    still = np.setdiff1d(np.arange(468), [14, 17])
    assert np.abs(off[0, still]).max() < 1e-6
    # Head pose is removed: the same face seen from a turned head lifts to the same offsets.
    w2c2, _ = _camera(15.0)
    uv2, _ = project(moved[None], w2c2[None], K)
    off2 = measure_offsets(uv2, w2c2[None], K)
    assert abs(off2[0, 14, 1] + 0.006) < 3e-4
    with pytest.raises(TalkgsError):
        measure_offsets(uv[:, :100], w2c[None], K)


def test_landmark_loss_is_robust_weighted_and_differentiable():
    target = torch.zeros(2, 3, 2)
    pts = torch.tensor([[[0.5, 0.0], [3.0, 4.0], [0.0, 0.0]]] * 2, requires_grad=True)
    w = torch.tensor([1.0, 1.0, 2.0])
    loss = landmark_loss(pts, target, w)
    # smooth L1 (beta 1): 0.5 * 0.25 for d = 0.5, 5 - 0.5 for d = 5, 0 for d = 0; weighted mean.
    assert torch.isclose(loss, torch.tensor((0.125 + 4.5) / 4.0))
    loss.backward()
    assert pts.grad[:, 2].abs().sum() == 0 and pts.grad[:, 1].abs().sum() > 0
    assert landmark_loss(target, target, w) == 0
    with pytest.raises(TalkgsError):
        landmark_loss(pts[:, :2], target, w)


def test_landmark_weights_put_the_lips_first():
    w = landmark_weights()
    assert w.shape == (468,)
    assert w[list(L.LIP_LANDMARKS_40)].min() > w[[1, 10, 151]].max()
    assert set(L.LIP_LANDMARKS_40) <= set(MOUTH_REGION_IDX)


# ----------------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def anchor_states(anchor_dataset):
    z = np.load(anchor_dataset / "tracks.npz")
    meta = json.loads((anchor_dataset / "meta.json").read_text())
    i = meta["intrinsics"]
    K = np.array([[i["fx"], 0, i["cx"]], [0, i["fy"], i["cy"]], [0, 0, 1]])
    off = measure_offsets(z["landmarks"], z["w2c"], K)
    (a, b), (va, vb) = meta["split"]["train"], meta["split"]["val"]
    basis = MouthBasis(8)
    explained = basis.fit(off[a:b])
    states = basis.encode(torch.as_tensor(off)).numpy()
    return dict(z=dict(z), off=off, basis=basis, explained=explained, states=states, train=(a, b), val=(va, vb))


def _decoded_gap(basis: MouthBasis, states: np.ndarray) -> np.ndarray:
    pts = L.load_canonical_face()[list(MOUTH_REGION_IDX)][None] + basis.decode(torch.as_tensor(states)).numpy()
    idx = list(MOUTH_REGION_IDX)
    up = [idx.index(u) for u, _ in L.INNER_LIP_PAIRS]
    lo = [idx.index(v) for _, v in L.INNER_LIP_PAIRS]
    return (pts[:, up, 1] - pts[:, lo, 1]).mean(1)


def test_mouth_state_describes_the_real_mouth(anchor_states):
    s = anchor_states
    assert s["explained"].sum() > 0.9  # 8 components of the lower face
    a, b = s["train"]
    st = s["states"]
    assert np.isclose(st[a:b, 0].std(), 1.0, atol=1e-3) and np.all(st[a:b].std(0)[1:] <= 1.0 + 1e-3)
    # The mouth opening is in the state: the inner-lip gap decoded from the state follows the
    # measured opening on frames the basis never saw.
    va, vb = s["val"]
    r = np.corrcoef(_decoded_gap(s["basis"], st[va:vb]), s["z"]["mouth_open"][va:vb])[0, 1]
    assert r > 0.95, r


def test_predictor_ensemble_is_the_mean_of_independent_members():
    """An ensemble of K predictors is K networks side by side: member k alone (its slices of the
    wide layers) gives its column of raw_members, raw is their mean, and each member's output
    depends only on its own weights. K = 1 keeps the single network's parameter names."""
    torch.manual_seed(0)
    ens = MouthPredictor(4, 6, 3, frames=8, hidden=16, members=3).eval()
    single = MouthPredictor(4, 6, 3, frames=8, hidden=16).eval()
    assert set(single.state_dict()) == set(ens.state_dict())
    x = torch.randn(5, 8, 4, 6)
    each = ens.raw_members(x)
    assert each.shape == (5, 3, 3)
    torch.testing.assert_close(ens.raw(x), each.mean(1))
    for k in range(3):  # rebuild member k as a single network from its slices
        h = slice(16 * k, 16 * (k + 1))
        sd = single.state_dict()
        sd["embed.0.weight"], sd["embed.0.bias"] = ens.embed[0].weight[h], ens.embed[0].bias[h]
        for i in (0, 3):
            sd[f"temporal.{i}.weight"], sd[f"temporal.{i}.bias"] = ens.temporal[i].weight[h], ens.temporal[i].bias[h]
        sd["out.weight"], sd["out.bias"] = ens.out.weight[k], ens.out.bias[k]
        single.load_state_dict(sd)
        with torch.no_grad():
            torch.testing.assert_close(single.raw(x), each[:, k], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(each[:, 0], each[:, 1])  # different initialisations


def test_predictor_learns_the_mouth_from_mel(anchor_states, anchor_dataset):
    """A short fit of the audio -> state predictor on the anchor's own log-mel (no augmentation, to
    stay fast) predicts the opening of frames it never saw far better than chance."""
    from talkgs.train.config import PredictorConfig
    from talkgs.model.audio_encoder import gather_windows
    from talkgs.train.mouth_predictor import calibrate_gain, fit_mouth_predictor

    torch.manual_seed(0)
    s = anchor_states
    feats = np.load(anchor_dataset / "audio_mel.npy").astype(np.float32)
    a, b = s["train"]
    va, vb = s["val"]
    pred = MouthPredictor(16, 80, 8, hidden=64)
    cfg = PredictorConfig(steps=300, batch_size=128, augment=False)
    rep = fit_mouth_predictor(pred, [("clean", feats[a:b], s["states"][a:b])], cfg, torch.device("cpu"))
    assert rep["held_out_r"][0] > 0.5 and rep["steps"] == cfg.steps, rep
    # The calibrated gain in [1, max_gain], times the stored amplitude factor.
    assert all(cfg.amplitude <= g <= cfg.max_gain * cfg.amplitude + 1e-6 for g in rep["gain"]), rep["gain"]
    with torch.no_grad():
        p = pred(gather_windows(torch.as_tensor(feats), torch.arange(va, vb), 8)).numpy()
    r = np.corrcoef(_decoded_gap(s["basis"], p), s["z"]["mouth_open"][va:vb])[0, 1]
    assert r > 0.4, r

    # Each component's gain makes its held-out states vary as much as the measured ones (a
    # regression shrinks: some gain exceeds 1), within [1, max_gain].
    clip = [("clean", feats[a:b], s["states"][a:b])]
    unit = dataclasses.replace(cfg, max_gain=100.0, amplitude=1.0)
    raw, target = calibrate_gain(pred, clip, unit, torch.device("cpu"))
    g = pred.out_gain.numpy().copy()
    assert g.max() > 1.0 and g.min() >= 1.0, g
    shrunk = g > 1.0
    np.testing.assert_allclose((g * raw.std(0))[shrunk], target.std(0)[shrunk], rtol=1e-4)
    # The amplitude factor multiplies the calibrated gain (it is stored in the run).
    calibrate_gain(pred, clip, dataclasses.replace(unit, amplitude=1.3), torch.device("cpu"))
    np.testing.assert_allclose(pred.out_gain.numpy(), 1.3 * g, rtol=1e-6)


def test_another_clips_mouth_joins_the_predictor_pairs_in_this_persons_states(anchor_dataset, excerpt_dataset):
    """``--predictor.other-speakers``: another prepared clip (here 6 s of the anchor, 10-16 s,
    prepared on its own: its own tracks and poses) adds its audio with its lower-face motion
    transferred into this person's states. Being the same mouth, the transferred states follow
    the anchor's own measured states on those frames."""
    from types import SimpleNamespace

    from talkgs.audio import extract
    from talkgs.train.config import PredictorConfig
    from talkgs.data.loader import load_dataset
    from talkgs.media import read_wav
    from talkgs.train.mouth_predictor import scale_to_reference
    from talkgs.train.predictor_data import other_speaker, predictor_clips
    from talkgs.train.state import fit_face_model

    ds = load_dataset(anchor_dataset, "cpu", audio_kind="mel", load_images=False)
    face = SimpleNamespace(neutral_landmarks=torch.zeros(468, 3), mouth_basis=MouthBasis(8))
    states = fit_face_model(face, ds)
    cfg = PredictorConfig(augment=False, other_speakers=(excerpt_dataset,))
    clips, note = predictor_clips(ds, states, cfg, basis=face.mouth_basis)
    assert note is None and [c[0] for c in clips] == ["clean", f"{excerpt_dataset.name}/clean"]
    n = json.loads((excerpt_dataset / "meta.json").read_text())["n_frames"]
    _, f, s = clips[1]
    wav, _ = read_wav(excerpt_dataset / "audio.wav")
    assert f.shape == (n, 16, 80) and np.allclose(f, extract("mel", wav[: n * 640], n), atol=1e-5)
    train = states[ds.train_idx].numpy()
    assert np.isclose(s.var(0).sum(), train.var(0).sum(), rtol=1e-4)  # scaled to this person's range
    mine = states[250 : 250 + n, 0].numpy()
    r = np.corrcoef(s[:, 0], mine)[0, 1]
    assert r > 0.8, r
    transferred = other_speaker(excerpt_dataset, face.mouth_basis)[2]
    assert np.allclose(s, scale_to_reference(transferred, train), atol=1e-4)  # the same motion, one factor
    assert abs(transferred[:, 0].std() / mine.std() - 1.0) < 0.3  # same mouth, same range as transferred


def test_predictor_amplitude_scales_the_deviation_from_the_mean_mouth():
    """``forward(w, a)``: the calibrated state's deviation from ``out_mean`` scaled by ``a``
    (``--mouth-amplitude``); ``a = 1`` is the calibrated prediction itself, bit for bit."""
    torch.manual_seed(0)
    pred = MouthPredictor(4, 6, 3, frames=8, hidden=16, members=2).eval()
    pred.out_mean.copy_(torch.tensor([0.7, -1.3, 0.25]))
    pred.out_gain.copy_(torch.tensor([1.5, 2.5, 0.8]))
    x = torch.randn(5, 8, 4, 6)
    with torch.no_grad():
        base = pred(x)
        dev = base - pred.out_mean
        assert dev.abs().min() > 1e-3  # the prediction is not the mean mouth: scaling shows
        assert torch.equal(pred(x, 1.0), base)
        for a in (0.25, 2.0, 3.0):
            got = pred(x, a)
            torch.testing.assert_close(got - pred.out_mean, a * dev, rtol=1e-5, atol=1e-6)
            assert not torch.allclose(got, base)
