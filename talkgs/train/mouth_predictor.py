"""Fit the audio -> mouth-state predictor (:class:`talkgs.model.mouth.MouthPredictor`).

Training pairs are (feature windows, measured mouth state) of the training frames, for the
clip's own audio and for augmented copies of it (:mod:`talkgs.audio.augment`: speed, pitch,
gain, noise, inserted silences whose target is the person's closed mouth). The last
``holdout`` fraction of every copy's frames is held out of the fit: the clean clip's calibrates
the output gain, all of them give the reported held-out error. The final weights are kept.
Seconds on a GPU, about a minute on a 2-core CPU for mel features.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np
import torch

from talkgs.audio import augment as A
from talkgs.train.config import PredictorConfig
from talkgs.conventions import FPS, SAMPLES_PER_FRAME
from talkgs.errors import AudioFeatureError
from talkgs.model.mouth import MouthPredictor


def closed_mouth_state(states: np.ndarray, mouth_open: np.ndarray, q: float = 10.0) -> np.ndarray:
    """``[m]`` the mean state of the frames whose mouth opening is at or below its ``q``-th
    percentile: the person's resting, closed mouth (the target of silence)."""
    thr = np.percentile(mouth_open, q)
    return states[mouth_open <= thr].mean(0).astype(np.float32)


def augmented_clips(
    wav: np.ndarray, states: np.ndarray, closed: np.ndarray, cfg: PredictorConfig, seed: int = 0
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``[(name, wav [n * 640], states [n, m])]``: the clip itself (``wav`` holds exactly
    ``len(states) * 640`` samples) and its augmented copies with their per-frame targets."""
    n = len(states)
    if len(wav) != n * SAMPLES_PER_FRAME:
        raise AudioFeatureError(f"predictor clip has {len(wav)} samples for {n} frames")
    rng = np.random.default_rng(seed)
    out = [("clean", wav, states)]
    if not cfg.augment:
        return out
    for s in cfg.speeds:
        w = A.change_speed(wav, s)
        m = int(len(w) // SAMPLES_PER_FRAME)
        out.append((f"speed{s:g}", w[: m * SAMPLES_PER_FRAME], A.warp_frames(states, s, m)))
    for st in cfg.semitones:
        out.append((f"pitch{st:+g}", A.shift_pitch(wav, st), states))
    for g in cfg.gains_db:
        out.append((f"gain{g:+g}dB", A.change_gain(wav, g), states))
    for i, snr in enumerate(cfg.noise_snr_db):
        colour = "white" if i % 2 == 0 else "pink"
        out.append((f"{colour}{snr:g}dB", A.add_noise(wav, snr, rng, colour), states))
    if cfg.silence_gaps > 0:
        w, src = A.insert_silences(wav, n, rng, cfg.silence_gaps)
        tgt = np.where((src >= 0)[:, None], states[np.maximum(src, 0)], closed[None])
        out.append(("silences", w, tgt.astype(np.float32)))
    n_silent = int(round(cfg.silent_clip_s * FPS))
    if n_silent > 0:
        # Silence with no speech anywhere in reach (what a silent render, or a long pause,
        # feeds the features): the inserted gaps above always have speech around them.
        out.append(("silent", np.zeros(n_silent * SAMPLES_PER_FRAME, np.float32), np.tile(closed, (n_silent, 1))))
    return out


def feature_clips(
    kind: str, wav: np.ndarray, states: np.ndarray, mouth_open: np.ndarray, clean_features: np.ndarray,
    cfg: PredictorConfig, seed: int = 0, stop: Callable[[], bool] | None = None, options: dict | None = None,
) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], str | None]:
    """``([(name, features [n, W, C], states [n, m])], note)`` for the clean clip
    (``clean_features``, the dataset's own) and the augmented copies of ``wav`` (features
    extracted with ``kind``'s extractor and ``options``, those of the clean features). A kind that cannot be computed here (e.g. imported
    ``deepspeech``, or ``hubert`` without its weights) gives the clean clip alone, and ``note``
    says why. ``stop()`` true ends early (Ctrl-C while a slow extractor runs)."""
    from talkgs.audio import extract

    clips = [("clean", clean_features, states)]
    if not cfg.augment:
        return clips, None
    closed = closed_mouth_state(states, mouth_open)
    for name, w, s in augmented_clips(wav, states, closed, cfg, seed)[1:]:
        if stop is not None and stop():
            break
        try:
            clips.append((name, extract(kind, w, len(s), **(options or {})), s))
        except AudioFeatureError as e:
            return clips[:1], f"no voice augmentation: {e}"
    return clips, None


def scale_to_reference(states: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``states [n, m]`` times one factor so that their total variance (summed over components)
    equals ``reference``'s ``[k, m]``: another speaker's motion in this person's range."""
    s = float(states.var(0).sum())
    return (states * np.sqrt(float(reference.var(0).sum()) / s)).astype(np.float32) if s > 0 else states


def other_speaker_clips(
    speakers: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], kind: str, reference_states: np.ndarray,
    cfg: PredictorConfig, seed: int = 0, stop: Callable[[], bool] | None = None, options: dict | None = None,
) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], str | None]:
    """Training pairs from other people: ``speakers = [(name, wav [n * 640], states [n, m],
    mouth_open [n])]`` with their motion already transferred into this person's states.
    Returns ``([(name/copy, features [n, W, C], states [n, m])], note)``, every clip and its
    voice-augmented copies, without the silent clip (the person's own clips hold it). Each
    speaker's states are rescaled to ``reference_states``' total variance
    (:func:`scale_to_reference`): people open their mouths more or less when they speak, and the
    target is this person's range."""
    from talkgs.audio import extract

    sub = dataclasses.replace(cfg, silent_clip_s=0.0)
    out, notes = [], []
    for name, wav, st, mouth_open in speakers:
        if stop is not None and stop():
            break
        st = scale_to_reference(st, reference_states)
        clips, note = feature_clips(kind, wav, st, mouth_open, extract(kind, wav, len(st), **(options or {})), sub, seed,
                                    stop, options)
        out += [(f"{name}/{c}", f, s) for c, f, s in clips]
        if note:
            notes.append(f"{name}: {note}")
    return out, "; ".join(notes) or None


def _pearson_cols(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(0)
    b = b - b.mean(0)
    return (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0) + 1e-12)


@torch.no_grad()
def calibrate_gain(
    predictor: MouthPredictor, clips: list[tuple[str, np.ndarray, np.ndarray]], cfg: PredictorConfig,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """Set ``predictor.out_gain`` from the clean clip's held-out frames (its last
    ``cfg.holdout``; ``clips`` as in :func:`fit_mouth_predictor`): a regression shrinks towards
    the mean, the gain makes each predicted state component vary as much as the measured one
    (clipped to ``[1, max_gain]``), times ``cfg.amplitude``. Returns those frames' uncalibrated
    predictions and targets ``([n, m], [n, m])``."""
    from talkgs.model.audio_encoder import gather_windows

    predictor.eval()
    _, f, s = clips[0]
    f = torch.as_tensor(f, dtype=torch.float16).to(device)  # the precision the fit trains on
    rows = torch.arange(int(round(len(f) * (1.0 - cfg.holdout))), len(f), device=device)
    p = torch.cat([predictor.raw(gather_windows(f, i, predictor.frames).float()) for i in rows.split(4096)]).cpu().numpy()
    t = np.asarray(s, np.float32)[rows.cpu().numpy()]
    ratio = t.std(0) / np.maximum(p.std(0), 1e-9)
    gain = np.clip(ratio, 1.0, cfg.max_gain) * cfg.amplitude
    predictor.out_gain.copy_(torch.as_tensor(gain, dtype=torch.float32))
    return p, t


def fit_mouth_predictor(
    predictor: MouthPredictor,
    clips: list[tuple[str, np.ndarray, np.ndarray]],
    cfg: PredictorConfig,
    device: torch.device,
    seed: int = 0,
    progress: bool = False,
    stop: Callable[[], bool] | None = None,
) -> dict:
    """Train ``predictor`` in place on ``clips = [(name, features [n, W, C], states [n, m])]``
    (the first clip is the clean one: its training part sets the input statistics, its held-out
    part the output gain). Returns a report (steps run, held-out error of the kept final weights,
    held-out r per state component, gain, seconds)."""
    t0 = time.perf_counter()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    feats, targets, train_rows, hold_rows = [], [], [], []
    offset = 0
    for _, f, s in clips:
        n = len(f)
        if len(s) != n:
            raise AudioFeatureError(f"predictor clip has {n} feature frames but {len(s)} states")
        cut = int(round(n * (1.0 - cfg.holdout)))
        feats.append(torch.as_tensor(f, dtype=torch.float16))
        targets.append(torch.as_tensor(s, dtype=torch.float32))
        train_rows.append(torch.arange(offset, offset + cut))
        hold_rows.append(torch.arange(offset + cut, offset + n))
        offset += n
    # Window rows never reach across clips: per frame, the flat indices of its F neighbours
    # within its own clip (zero outside it, as gather_windows pads a clip's ends).
    flat = torch.cat(feats)
    win_idx, win_ok = [], []
    start = 0
    for f in feats:
        n = len(f)
        j = torch.arange(n)[:, None] + torch.arange(predictor.frames)[None, :] - predictor.frames // 2
        win_ok.append((j >= 0) & (j < n))
        win_idx.append(start + j.clamp(0, n - 1))
        start += n
    win_idx, win_ok = torch.cat(win_idx), torch.cat(win_ok)
    y = torch.cat(targets)
    train_idx = torch.cat(train_rows)
    all_hold = torch.cat(hold_rows)
    predictor.to(device)
    n_clean_train = len(train_rows[0])
    predictor.set_input_stats(feats[0][:n_clean_train].float().to(device))
    predictor.out_mean.copy_(targets[0][:n_clean_train].mean(0).to(device))
    predictor.out_gain.fill_(1.0)
    flat, y, win_idx, win_ok = flat.to(device), y.to(device), win_idx.to(device), win_ok.to(device)

    def windows(rows: torch.Tensor) -> torch.Tensor:
        """``[B, F, W, C]`` float windows of flat frame rows ``[B]``."""
        return flat[win_idx[rows]].float() * win_ok[rows][:, :, None, None]

    opt = torch.optim.AdamW(predictor.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: 0.05 + 0.95 * 0.5 * (1.0 + np.cos(np.pi * min(k / max(cfg.steps, 1), 1.0)))
    )

    bar = None
    if progress:
        from talkgs.console import ProgressBar

        bar = ProgressBar(total=cfg.steps, desc="predictor", leave=False)
    predictor.train()
    steps = 0
    for step in range(1, cfg.steps + 1):
        if stop is not None and stop():
            break
        steps = step
        rows = train_idx[torch.randint(len(train_idx), (cfg.batch_size,), generator=gen)].to(device)
        # Each member fits the targets on its own (not their mean: members stay independent).
        loss = ((predictor.raw_members(windows(rows)) - y[rows][:, None]) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    predictor.eval()
    with torch.no_grad():
        hold = all_hold.to(device)
        p = torch.cat([predictor.raw(windows(i)) for i in hold.split(4096)])
        held_out_mse = float(((p - y[hold]) ** 2).mean())
    p, t = calibrate_gain(predictor, clips, cfg, device)
    r = _pearson_cols(p, t)
    return {
        "clips": [name for name, _, _ in clips],
        "frames": int(len(y)),
        "steps": steps,
        "held_out_mse": held_out_mse,
        "held_out_r": [float(v) for v in r],
        "gain": [float(v) for v in predictor.out_gain.cpu()],
        "seconds": round(time.perf_counter() - t0, 2),
    }
