"""Frame sampling for training, including the incremental-sampling curriculum.

TalkingGaussian now and then draws a training frame whose per-frame signal (mouth
opening, blink) lies in a window that slides with training progress, and otherwise draws
frames uniformly without replacement. The original re-draws in a while-loop until a frame
lands in the window, which hangs when none does (upstream issue #26). Here a windowed
draw never loops: when fewer than ``batch_size`` eligible frames fall in the window, the
window is widened to the ``batch_size`` eligible frames nearest to it by signal value
(ties broken by frame index), a deterministic fallback that returns at once.

Frame indices are global (rows of ``tracks.npz``); signals are ``[N]`` arrays over all
frames; only indices from ``train_idx`` are ever returned.

Several processes (``world_size``) share one sequence of draws: every process draws the batch of
all of them from the same seed and keeps its own ``rank``'s slice, so within an epoch no two
processes get the same frame. With one process (the default) a draw is the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from talkgs.errors import TalkgsError

MOUTH_CAP_PERCENTILE = 95.0  # the original clips AU25 at its 95th percentile
MIN_MOUTH_AREA_PX = 20  # the mouth stage skips frames with fewer inner-mouth pixels
MOUTH_EVERY = 7  # mouth stage: windowed draw every 7th iteration
FACE_EVERY = 15  # face stage: windowed draw every 15th iteration


@dataclass(frozen=True)
class Window:
    """A windowed draw: frames whose ``signals[key]`` lies in ``[lo, hi]``, restricted to
    the frames of the named eligibility mask ``only`` (None: all train frames)."""

    key: str
    lo: float
    hi: float
    only: str | None = None


def _progress(p: float) -> float:
    p = float(p)
    if not np.isfinite(p):
        raise TalkgsError(f"curriculum progress must be a finite number in [0, 1], got {p}")
    return min(max(p, 0.0), 1.0)


def mouth_curriculum(p: float, p25: float, ub: float) -> tuple[float, float]:
    """Mouth-stage window ``[ub - p (ub - p25), ub]`` over the (capped) mouth opening.

    p: progress in [0, 1] (clipped); ``ub`` is the cap of the mouth signal (its 95th
    percentile, see :func:`cap_signal`), ``p25`` its 25th percentile. At p = 0 only the
    widest mouths qualify; the window then grows down to the 25th percentile.
    """
    p = _progress(p)
    return float(ub - p * (ub - p25)), float(ub)


def blink_curriculum(p: float) -> tuple[float, float]:
    """Face-stage window ``[p - 0.15, p + 0.3]`` over blink in [0, 1] (1 = closed):
    eyes open at the start of training, closed by the end. p is clipped to [0, 1]."""
    p = _progress(p)
    return p - 0.15, p + 0.3


def cap_signal(values: np.ndarray, train_idx: np.ndarray, q: float = MOUTH_CAP_PERCENTILE) -> tuple[np.ndarray, float, float]:
    """Clip a signal ``[N]`` at its ``q``-th percentile over the train frames.

    Returns ``(capped [N], p25, ub)`` with ``ub`` the cap: with the cap applied, the widest
    mouths all equal ``ub`` and so fall inside :func:`mouth_curriculum`'s window at p = 0.
    """
    v = np.asarray(values, dtype=np.float64)
    t = v[np.asarray(train_idx, dtype=np.int64)]
    t = t[np.isfinite(t)]
    if t.size == 0:
        raise TalkgsError("signal has no finite value on the train frames")
    ub = float(np.percentile(t, q))
    p25 = float(np.percentile(np.minimum(t, ub), 25.0))
    return np.minimum(v, ub), p25, ub


@dataclass(frozen=True)
class Curriculum:
    """The incremental-sampling windows of the mouth and face stages over their first
    ``until`` fraction: the mouth opening (``mouth_open``, capped at ``mouth_ub``, its 25th
    percentile ``mouth_p25``; see :func:`cap_signal`) and the blink."""

    mouth_p25: float
    mouth_ub: float

    def window(self, stage: str, until: float, p: float) -> tuple[Window | None, int]:
        """``(window, every)`` of stage ``stage`` at progress ``p`` in [0, 1] (None, 1: uniform)."""
        if p >= until:
            return None, 1
        q = p / max(until, 1e-9)
        if stage == "mouth":
            lo, hi = mouth_curriculum(q, self.mouth_p25, self.mouth_ub)
            return Window("mouth_open", lo, hi, only="mouth_visible"), MOUTH_EVERY
        if stage == "face":
            lo, hi = blink_curriculum(q)
            return Window("blink", lo, hi), FACE_EVERY
        return None, 1


def uses_window(step: int, every: int) -> bool:
    """Whether iteration ``step`` makes a windowed draw (every ``every``-th; 0 = never)."""
    return every > 0 and step % every == 0


class FrameSampler:
    """Draws batches of training frame indices; never spins.

    train_idx ``[M]``: global indices of the training frames (unique, sorted or not).
    signals: name -> ``[N]`` per-frame values (e.g. ``mouth_open``, ``blink``, ``mouth_area``).
    masks: name -> ``[N]`` bool eligibility masks for windowed draws, precomputed once
    (e.g. ``{"mouth_visible": mouth_area >= 20}``) instead of rejecting frames in a loop.
    seed: the only source of randomness; the same seed gives the same sequence of draws.
    rank, world_size: this process's share of each draw (see the module docstring).

    After each draw ``last_fallback`` says what happened: None (as asked), ``"widened"``
    (too few frames in the window), ``"mask_empty"`` (the mask left no train frame, so it
    was ignored), ``"no_finite"`` (no finite signal on the eligible frames: uniform draw).
    """

    def __init__(
        self,
        train_idx: np.ndarray,
        signals: Mapping[str, np.ndarray] | None = None,
        seed: int = 0,
        masks: Mapping[str, np.ndarray] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        if not 0 <= rank < world_size:
            raise TalkgsError(f"sampler rank {rank} is not in [0, world_size {world_size})")
        self.rank, self.world_size = rank, world_size
        idx = np.asarray(train_idx)
        if idx.ndim != 1 or idx.size == 0:
            raise TalkgsError(f"train_idx must be a non-empty [M] array of frame indices, got shape {idx.shape}")
        if not np.issubdtype(idx.dtype, np.integer):
            raise TalkgsError(f"train_idx must hold integers, got dtype {idx.dtype}")
        if np.unique(idx).size != idx.size:
            raise TalkgsError("train_idx contains repeated frame indices")
        if idx.min() < 0:
            raise TalkgsError(f"train_idx contains a negative frame index ({idx.min()})")
        self.train_idx = idx.astype(np.int64)
        self.signals: dict[str, np.ndarray] = {}
        for name, values in (signals or {}).items():
            self.signals[name] = self._per_frame(name, values, np.float64)
        self.masks: dict[str, np.ndarray] = {}
        for name, values in (masks or {}).items():
            self.masks[name] = self._per_frame(name, values, bool)
        self._rng = np.random.default_rng(seed)
        self._queue = np.empty(0, dtype=np.int64)  # rest of the current epoch's permutation
        self.last_fallback: str | None = None

    def _per_frame(self, name: str, values: np.ndarray, dtype) -> np.ndarray:
        v = np.asarray(values)
        if v.ndim != 1:
            raise TalkgsError(f"per-frame array {name!r} must be [N], got shape {v.shape}")
        if self.train_idx.max() >= v.shape[0]:
            raise TalkgsError(
                f"per-frame array {name!r} has {v.shape[0]} frames but train_idx reaches {self.train_idx.max()}"
            )
        return v.astype(dtype)[self.train_idx]  # stored per train frame, aligned with train_idx

    # ---- uniform -------------------------------------------------------------------

    def _share(self, draw: np.ndarray, batch_size: int) -> np.ndarray:
        """This process's ``batch_size`` frames of a draw for all processes."""
        return draw[self.rank * batch_size : (self.rank + 1) * batch_size]

    def uniform(self, batch_size: int = 1) -> np.ndarray:
        """``[batch_size]`` train frame indices, without replacement within an epoch.

        Each epoch is a fresh permutation of the train frames; a batch that crosses an
        epoch boundary takes the rest of one epoch and the start of the next.
        """
        self._check_batch(batch_size)
        self.last_fallback = None
        parts = []
        need = batch_size * self.world_size
        while need > 0:  # bounded: each pass takes >= 1 frame (M >= 1)
            if self._queue.size == 0:
                self._queue = self._rng.permutation(self.train_idx.size)
            take = self._queue[:need]
            self._queue = self._queue[need:]
            parts.append(take)
            need -= take.size
        return self._share(self.train_idx[np.concatenate(parts)], batch_size)

    # ---- windowed ------------------------------------------------------------------

    def windowed(self, batch_size: int, key: str, lo: float, hi: float, only: str | None = None) -> np.ndarray:
        """``[batch_size]`` train frame indices whose ``signals[key]`` lies in ``[lo, hi]``.

        With at least ``batch_size`` eligible frames in the window, draws uniformly from
        them without replacement. Otherwise widens to the ``batch_size`` eligible frames
        nearest to the window (distance of the signal to ``[lo, hi]``, ties by frame index)
        and returns them in random order; with fewer eligible frames than ``batch_size``
        the pool is drawn with replacement. Frames with a non-finite signal are never in
        the window (they sort last).
        """
        self._check_batch(batch_size)
        return self._share(self._windowed(batch_size * self.world_size, key, lo, hi, only), batch_size)

    def _windowed(self, batch_size: int, key: str, lo: float, hi: float, only: str | None) -> np.ndarray:
        if key not in self.signals:
            raise TalkgsError(f"unknown sampling signal {key!r}; have {sorted(self.signals)}")
        if not lo <= hi:
            raise TalkgsError(f"sampling window for {key!r} has lo {lo} > hi {hi}")
        self.last_fallback = None
        pool = np.arange(self.train_idx.size)
        if only is not None:
            if only not in self.masks:
                raise TalkgsError(f"unknown sampling mask {only!r}; have {sorted(self.masks)}")
            eligible = np.flatnonzero(self.masks[only])
            if eligible.size == 0:
                self.last_fallback = "mask_empty"
            else:
                pool = eligible
        v = self.signals[key][pool]
        finite = np.isfinite(v)
        if not finite.any():
            self.last_fallback = "no_finite"
            return self._draw(pool, batch_size)
        dist = np.where(finite, np.maximum(lo - v, 0.0) + np.maximum(v - hi, 0.0), np.inf)
        inside = pool[dist == 0.0]
        if inside.size >= batch_size:
            return self._draw(inside, batch_size)
        self.last_fallback = self.last_fallback or "widened"
        order = np.lexsort((self.train_idx[pool], dist))  # by distance, then frame index
        return self._draw(pool[order[:batch_size]], batch_size)

    def draw(self, batch_size: int, step: int, window: Window | None, every: int) -> np.ndarray:
        """The curriculum's draw at iteration ``step``: :meth:`windowed` with ``window``
        when :func:`uses_window` says so (every ``every``-th step), else :meth:`uniform`."""
        if window is not None and uses_window(step, every):
            return self.windowed(batch_size, window.key, window.lo, window.hi, window.only)
        return self.uniform(batch_size)

    def _draw(self, pool: np.ndarray, batch_size: int) -> np.ndarray:
        """``batch_size`` entries of ``pool`` (positions into train_idx), as frame indices."""
        replace = pool.size < batch_size
        pick = self._rng.choice(pool, size=batch_size, replace=replace)
        return self.train_idx[pick]

    @staticmethod
    def _check_batch(batch_size: int) -> None:
        if int(batch_size) != batch_size or batch_size < 1:
            raise TalkgsError(f"batch_size must be a positive integer, got {batch_size}")

    # ---- resume --------------------------------------------------------------------

    def state_dict(self) -> dict:
        """RNG state and the rest of the current epoch, for checkpoints."""
        return {"rng": self._rng.bit_generator.state, "queue": self._queue.copy()}

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where :meth:`state_dict` was taken (same train_idx required)."""
        queue = np.asarray(state["queue"], dtype=np.int64)
        if queue.size and (queue.min() < 0 or queue.max() >= self.train_idx.size):
            raise TalkgsError("sampler state does not match this sampler's train frames")
        self._rng.bit_generator.state = state["rng"]
        self._queue = queue
