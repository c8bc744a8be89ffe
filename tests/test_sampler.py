"""Frame sampler and incremental-sampling curriculum: valid, windowed, never spinning."""

from __future__ import annotations

import numpy as np
import pytest

from talkgs.errors import TalkgsError
from talkgs.train.sampler import (
    FACE_EVERY,
    MIN_MOUTH_AREA_PX,
    MOUTH_EVERY,
    Curriculum,
    FrameSampler,
    Window,
    blink_curriculum,
    cap_signal,
    mouth_curriculum,
    uses_window,
)

N = 300


def _signals(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "mouth_open": rng.gamma(2.0, 0.02, N),
        "blink": rng.beta(0.5, 2.0, N),
        "mouth_area": rng.integers(0, 400, N).astype(np.float64),
    }


def _train_idx() -> np.ndarray:
    return np.arange(0, 240)  # the rest is the validation split


def test_uniform_returns_train_indices_only_and_covers_each_epoch_once():
    train = np.arange(10, 250, 2)  # 120 frames, not contiguous
    s = FrameSampler(train, _signals(), seed=3)
    allowed = set(train.tolist())
    for _ in range(5):  # 5 epochs of 30 batches of 4
        epoch = np.concatenate([s.uniform(4) for _ in range(30)])
        assert set(epoch.tolist()) <= allowed
        assert np.array_equal(np.sort(epoch), train)  # without replacement within an epoch
    assert s.last_fallback is None


def test_uniform_is_statistically_uniform_across_epochs():
    train = _train_idx()
    s = FrameSampler(train, seed=11)
    draws = np.concatenate([s.uniform(7) for _ in range(240 * 10 // 7)])
    counts = np.bincount(draws, minlength=240)
    assert counts.min() >= 9 and counts.max() <= 11  # ~10 epochs: every frame 9-11 times
    first = np.concatenate([FrameSampler(train, seed=k).uniform(1) for k in range(2000)])
    # first draw over seeds: chi-square against uniform on 240 cells (df 239; p ~ 1e-4 at 320)
    chi2 = ((np.bincount(first, minlength=240) - 2000 / 240) ** 2 / (2000 / 240)).sum()
    assert chi2 < 320


def test_windowed_respects_window_when_enough_frames():
    sig = _signals()
    train = _train_idx()
    s = FrameSampler(train, sig, seed=0)
    lo, hi = 0.2, 0.5
    inside = {i for i in train.tolist() if lo <= sig["blink"][i] <= hi}
    assert len(inside) >= 8
    for _ in range(50):
        b = s.windowed(8, "blink", lo, hi)
        assert len(b) == 8 and len(set(b.tolist())) == 8  # without replacement
        assert set(b.tolist()) <= inside
        assert s.last_fallback is None
    seen = set(np.concatenate([s.windowed(1, "blink", lo, hi) for _ in range(400)]).tolist())
    assert seen == inside  # every in-window frame gets drawn


def test_empty_window_returns_nearest_frames_immediately():
    sig = _signals()
    train = _train_idx()
    s = FrameSampler(train, sig, seed=0)
    b = s.windowed(5, "blink", 5.0, 6.0)  # blink is in [0, 1]: no frame qualifies
    assert s.last_fallback == "widened"
    top5 = train[np.argsort(-sig["blink"][train], kind="stable")[:5]]
    assert set(b.tolist()) == set(top5.tolist())
    b = s.windowed(3, "blink", -9.0, -8.0)
    bottom3 = train[np.argsort(sig["blink"][train], kind="stable")[:3]]
    assert set(b.tolist()) == set(bottom3.tolist())
    # a window holding 2 frames with batch 4: those 2 plus the 2 nearest outside it
    v = sig["blink"][train]
    order = np.argsort(v)
    lo = hi = v[order[100]]
    b = s.windowed(1, "blink", lo, hi)
    assert b.tolist() == [train[order[100]]] and s.last_fallback is None
    b = s.windowed(4, "blink", v[order[100]], v[order[101]])
    assert s.last_fallback == "widened"
    assert {train[order[100]], train[order[101]]} <= set(b.tolist())
    dist = np.maximum(v[order[100]] - v, 0) + np.maximum(v - v[order[101]], 0)
    assert set(b.tolist()) == set(train[np.argsort(dist, kind="stable")[:4]].tolist())


def test_all_equal_signals_and_single_train_frame():
    train = _train_idx()
    s = FrameSampler(train, {"blink": np.full(N, 0.4)}, seed=1)
    b = s.windowed(6, "blink", 0.9, 1.0)  # nobody inside; all tie -> lowest frame indices
    assert sorted(b.tolist()) == train[:6].tolist()
    b = s.windowed(6, "blink", 0.0, 1.0)  # everybody inside: random, valid
    assert set(b.tolist()) <= set(train.tolist()) and s.last_fallback is None

    one = FrameSampler(np.array([42]), {"blink": np.linspace(0, 1, N)}, seed=0)
    assert one.uniform(3).tolist() == [42, 42, 42]
    assert one.windowed(1, "blink", 0.9, 1.0).tolist() == [42]
    assert one.windowed(4, "blink", 0.0, 0.01).tolist() == [42] * 4


def test_eligibility_mask_excludes_small_mouths_without_looping():
    sig = _signals()
    train = _train_idx()
    visible = sig["mouth_area"] >= MIN_MOUTH_AREA_PX
    s = FrameSampler(train, sig, seed=2, masks={"mouth_visible": visible})
    for _ in range(100):
        b = s.windowed(4, "mouth_open", 0.0, 1.0, only="mouth_visible")
        assert visible[b].all()
    # the window's nearest-frame fallback also stays within the mask
    b = s.windowed(10, "mouth_open", 10.0, 11.0, only="mouth_visible")
    assert visible[b].all() and s.last_fallback == "widened"
    # a mask that leaves no train frame is ignored rather than spinning
    none = FrameSampler(train, sig, seed=2, masks={"mouth_visible": np.zeros(N, bool)})
    b = none.windowed(2, "mouth_open", 0.0, 1.0, only="mouth_visible")
    assert set(b.tolist()) <= set(train.tolist()) and none.last_fallback == "mask_empty"


def test_non_finite_signals_never_count_as_inside():
    sig = np.linspace(0, 1, N)
    sig[:50] = np.nan
    s = FrameSampler(_train_idx(), {"m": sig}, seed=0)
    for _ in range(20):
        assert (s.windowed(3, "m", -1.0, 2.0) >= 50).all()
    all_nan = FrameSampler(_train_idx(), {"m": np.full(N, np.nan)}, seed=0)
    assert len(all_nan.windowed(3, "m", 0.0, 1.0)) == 3 and all_nan.last_fallback == "no_finite"


def test_curriculum_windows_move_as_specified():
    assert blink_curriculum(0.0) == pytest.approx((-0.15, 0.3))
    assert blink_curriculum(0.5) == pytest.approx((0.35, 0.8))
    assert blink_curriculum(1.0) == pytest.approx((0.85, 1.3))
    assert blink_curriculum(2.0) == blink_curriculum(1.0)  # progress is clipped
    lows = [blink_curriculum(p)[0] for p in np.linspace(0, 1, 11)]
    assert np.all(np.diff(lows) > 0)
    p25, ub = 0.02, 0.1
    assert mouth_curriculum(0.0, p25, ub) == pytest.approx((ub, ub))  # widest mouths only
    assert mouth_curriculum(0.5, p25, ub) == pytest.approx((0.06, ub))
    assert mouth_curriculum(1.0, p25, ub) == pytest.approx((p25, ub))
    lows = [mouth_curriculum(p, p25, ub)[0] for p in np.linspace(0, 1, 11)]
    assert np.all(np.diff(lows) < 0)
    with pytest.raises(TalkgsError, match="progress"):
        blink_curriculum(float("nan"))


def test_mouth_cap_puts_widest_mouths_in_the_first_window():
    sig = _signals()
    train = _train_idx()
    capped, p25, ub = cap_signal(sig["mouth_open"], train)
    assert ub == pytest.approx(np.percentile(sig["mouth_open"][train], 95))
    assert p25 == pytest.approx(np.percentile(sig["mouth_open"][train], 25))
    s = FrameSampler(train, {"mouth_open": capped}, seed=0)
    lo, hi = mouth_curriculum(0.0, p25, ub)
    b = s.windowed(4, "mouth_open", lo, hi)
    assert s.last_fallback is None
    assert (sig["mouth_open"][b] >= ub).all()


def test_draw_windows_every_kth_step_only():
    sig = _signals()
    train = _train_idx()
    s = FrameSampler(train, sig, seed=0)
    assert [uses_window(k, MOUTH_EVERY) for k in range(8)] == [True] + [False] * 6 + [True]
    assert uses_window(FACE_EVERY * 3, FACE_EVERY) and not uses_window(4, 0)
    q95 = float(np.percentile(sig["blink"][train], 95))
    w = Window("blink", q95, 1.0)
    inside = sig["blink"] >= q95
    windowed_steps = [k for k in range(60) if inside[s.draw(1, k, w, FACE_EVERY)].all()]
    assert {0, 15, 30, 45} <= set(windowed_steps)
    # uniform steps come from the epoch queue: few land in the narrow window by chance
    assert len(windowed_steps) < 20


def test_deterministic_given_seed_and_resumable():
    sig = _signals()
    train = _train_idx()

    def run(sampler, steps):
        return [sampler.draw(2, k, Window("blink", 0.1, 0.6), 3).tolist() for k in steps]

    a = run(FrameSampler(train, sig, seed=5), range(40))
    assert a == run(FrameSampler(train, sig, seed=5), range(40))
    assert a != run(FrameSampler(train, sig, seed=6), range(40))
    s = FrameSampler(train, sig, seed=5)
    first = run(s, range(17))
    state = s.state_dict()
    rest = run(s, range(17, 40))
    resumed = FrameSampler(train, sig, seed=999)
    resumed.load_state_dict(state)
    assert first + run(resumed, range(17, 40)) == a and first + rest == a


def test_curriculum_windows_of_each_stage():
    c = Curriculum(mouth_p25=0.02, mouth_ub=0.1)
    assert c.window("mouth", 0.8, 0.0) == (Window("mouth_open", 0.1, 0.1, only="mouth_visible"), MOUTH_EVERY)
    w, every = c.window("mouth", 0.8, 0.4)  # half-way through the curriculum
    assert (w.lo, w.hi, every) == (pytest.approx(0.06), 0.1, MOUTH_EVERY)
    w, every = c.window("face", 0.8, 0.4)
    assert (w.key, (w.lo, w.hi), every) == ("blink", pytest.approx(blink_curriculum(0.5)), FACE_EVERY)
    assert c.window("face", 0.8, 0.8) == (None, 1) and c.window("fuse", 0.8, 0.1) == (None, 1)
    assert c.window("mouth", 0.0, 0.0) == (None, 1)  # no curriculum: uniform from the start


def test_processes_share_each_draw_without_overlap():
    """Two processes (ranks 0 and 1) draw disjoint halves of what one process draws with twice the
    batch, uniform and windowed alike; one process of one gets the whole draw."""
    sig = _signals()
    train = _train_idx()
    w = Window("blink", 0.1, 0.6)
    ranks = [FrameSampler(train, sig, seed=5, rank=r, world_size=2) for r in range(2)]
    whole = FrameSampler(train, sig, seed=5)
    for k in range(40):
        both = whole.draw(6, k, w, 3)
        parts = [s.draw(3, k, w, 3) for s in ranks]
        assert np.array_equal(np.concatenate(parts), both), k
        if not uses_window(k, 3):  # uniform draws are without replacement
            assert not set(parts[0].tolist()) & set(parts[1].tolist())
    one = FrameSampler(train, sig, seed=5, rank=0, world_size=1)
    assert np.array_equal(one.draw(4, 1, None, 1), FrameSampler(train, sig, seed=5).draw(4, 1, None, 1))
    with pytest.raises(TalkgsError, match="rank 2"):
        FrameSampler(train, sig, rank=2, world_size=2)


def test_bad_inputs_raise_talkgs_errors():
    sig = _signals()
    with pytest.raises(TalkgsError, match="non-empty"):
        FrameSampler(np.array([], dtype=int), sig)
    with pytest.raises(TalkgsError, match="repeated"):
        FrameSampler(np.array([1, 1, 2]), sig)
    with pytest.raises(TalkgsError, match="300 frames"):
        FrameSampler(np.array([0, 300]), sig)
    with pytest.raises(TalkgsError, match="integers"):
        FrameSampler(np.array([0.0, 1.0]), sig)
    s = FrameSampler(_train_idx(), sig)
    with pytest.raises(TalkgsError, match="unknown sampling signal"):
        s.windowed(1, "au25", 0, 1)
    with pytest.raises(TalkgsError, match="unknown sampling mask"):
        s.windowed(1, "blink", 0, 1, only="nope")
    with pytest.raises(TalkgsError, match="lo"):
        s.windowed(1, "blink", 1, 0)
    with pytest.raises(TalkgsError, match="batch_size"):
        s.uniform(0)
