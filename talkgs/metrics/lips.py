"""Landmark-based lip metrics: LMD, and the sync of two per-frame mouth signals.

No SyncNet with usable weights exists offline, so lip sync is judged from landmarks:
LMD compares the lip shape of a rendered frame with the ground-truth frame; for two mouth
signals over time (e.g. the render's mouth opening and the ground truth's),
:func:`sync_scores` gives their correlation, amplitude (std ratio) and audio-video offset
(the lag that maximises their correlation; positive = the prediction moves later).
All take numpy arrays or torch tensors (detached, on any device) and return numpy/floats.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from talkgs.errors import TalkgsError

# The 40 MediaPipe FaceMesh vertices of FACEMESH_LIPS (outer and inner lip contours),
# sorted: the lip set LMD is computed on (the original uses FAN points 48-67 instead).
MEDIAPIPE_LIPS_40 = (
    0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181,
    185, 191, 267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402,
    405, 409, 415,
)  # fmt: skip


def _numpy(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def lips_landmarks(landmarks) -> np.ndarray:
    """The 40 lip points ``[N, 40, 2]`` of MediaPipe landmarks ``[N, 478, 2]`` (or 468)."""
    lm = _numpy(landmarks, "landmarks")
    if lm.ndim != 3 or lm.shape[1] < 468 or lm.shape[2] != 2:
        raise TalkgsError(f"landmarks must be [N, 478, 2] MediaPipe points, got shape {lm.shape}")
    return lm[:, MEDIAPIPE_LIPS_40]


def lmd(pred_lips, gt_lips) -> np.ndarray:
    """Landmark distance per frame ``[N]`` (pixels).

    pred_lips, gt_lips: ``[N, K, 2]`` lip points (K = 40 for :data:`MEDIAPIPE_LIPS_40`).
    Each set is centred on its own centroid first, so a translated mouth scores 0 and
    only shape (opening, width, asymmetry) counts; the result is the mean Euclidean
    distance between corresponding centred points.
    """
    p = _numpy(pred_lips, "pred_lips")
    g = _numpy(gt_lips, "gt_lips")
    if p.ndim != 3 or p.shape[-1] != 2 or p.shape[1] < 1:
        raise TalkgsError(f"pred_lips must be [N, K, 2] points, got shape {p.shape}")
    if p.shape != g.shape:
        raise TalkgsError(f"lip landmark shapes differ: pred {p.shape} vs gt {g.shape}")
    p = p - p.mean(axis=1, keepdims=True)
    g = g - g.mean(axis=1, keepdims=True)
    return np.linalg.norm(p - g, axis=-1).mean(axis=1)


class Correlation(NamedTuple):
    r: float  # Pearson correlation, 0.0 where undefined
    defined: bool  # False when fewer than 2 finite pairs or either series is constant
    n: int  # number of finite pairs used


def pearson(x, y, rel_eps: float = 1e-12) -> Correlation:
    """NaN-safe Pearson correlation of two series ``[N]``.

    Pairs where either value is non-finite are dropped. A series with (numerically) zero
    variance has no correlation: the result is ``r = 0.0`` with ``defined = False``.
    """
    a = _numpy(x, "x").reshape(-1)
    b = _numpy(y, "y").reshape(-1)
    if a.shape != b.shape:
        raise TalkgsError(f"correlation inputs differ in length: {a.shape[0]} vs {b.shape[0]}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    n = int(a.size)
    if n < 2:
        return Correlation(0.0, False, n)
    # Rounding leaves a constant series with a tiny nonzero spread relative to its size.
    tol_a = rel_eps * max(np.abs(a).max(), 1e-300) * np.sqrt(n)
    tol_b = rel_eps * max(np.abs(b).max(), 1e-300) * np.sqrt(n)
    a = a - a.mean()
    b = b - b.mean()
    sa = np.sqrt((a * a).sum())
    sb = np.sqrt((b * b).sum())
    if sa <= tol_a or sb <= tol_b:
        return Correlation(0.0, False, n)
    r = float(np.clip((a * b).sum() / (sa * sb), -1.0, 1.0))
    return Correlation(r, True, n)


def mouth_opening_correlation(pred, gt) -> float:
    """Pearson correlation of predicted vs ground-truth mouth opening over frames ``[N]``.

    Returns 0.0 when it is undefined (a constant series, or fewer than 2 finite frames);
    use :func:`pearson` to get the ``defined`` flag as well.
    """
    return pearson(pred, gt).r


MAX_LAG = 8  # frames searched either side for the audio-video offset (+-320 ms at 25 fps)


def amplitude_ratio(pred, gt) -> float:
    """How far the predicted series swings relative to the ground truth: ``std(pred) / std(gt)``
    over the frames where both are finite (1 = the same amplitude; NaN when ``gt`` is constant
    or fewer than 2 frames are finite)."""
    a = _numpy(pred, "pred").reshape(-1)
    b = _numpy(gt, "gt").reshape(-1)
    if a.shape != b.shape:
        raise TalkgsError(f"amplitude inputs differ in length: {a.shape[0]} vs {b.shape[0]}")
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 2 or float(b[keep].std()) == 0.0:
        return float("nan")
    return float(a[keep].std() / b[keep].std())


def lagged_correlations(pred, gt, max_lag: int = MAX_LAG) -> np.ndarray:
    """``[2 max_lag + 1]`` Pearson r of ``pred[t]`` against ``gt[t - k]`` for k = -max_lag .. max_lag
    (only the overlapping frames; 0.0 where undefined). Positive k pairs each predicted frame
    with an earlier ground-truth frame: the prediction moves k frames *later*."""
    a = _numpy(pred, "pred").reshape(-1)
    b = _numpy(gt, "gt").reshape(-1)
    if a.shape != b.shape:
        raise TalkgsError(f"lagged correlation inputs differ in length: {a.shape[0]} vs {b.shape[0]}")
    n = a.shape[0]
    out = np.zeros(2 * max_lag + 1)
    for i, k in enumerate(range(-max_lag, max_lag + 1)):
        if abs(k) >= n - 1:
            continue
        out[i] = pearson(a[k:], b[: n - k]).r if k >= 0 else pearson(a[: n + k], b[-k:]).r
    return out


def best_lag(pred, gt, max_lag: int = MAX_LAG) -> tuple[int, float]:
    """``(offset, r)``: the lag k in [-max_lag, max_lag] that maximises the correlation of
    ``pred[t]`` with ``gt[t - k]`` (see :func:`lagged_correlations`), and that correlation.
    Sign: positive = the prediction moves later than the ground truth. Ties go to the smaller |k|."""
    rs = lagged_correlations(pred, gt, max_lag)
    lags = np.arange(-max_lag, max_lag + 1)
    order = np.lexsort((np.abs(lags), -rs))  # highest r first, then the smallest |lag|
    return int(lags[order[0]]), float(rs[order[0]])


def sync_scores(pred, gt, max_lag: int = MAX_LAG) -> dict:
    """The lip-sync figures of a predicted per-frame mouth signal against the ground truth
    (both ``[N]``, NaN where unknown): ``r`` (Pearson, same frame), ``amplitude`` (std ratio,
    pred / gt), ``offset`` (frames, positive = pred later; see :func:`best_lag`),
    ``r_at_offset`` and ``n`` (frames with both values)."""
    c = pearson(pred, gt)
    offset, r_off = best_lag(pred, gt, max_lag)
    return {
        "r": c.r if c.defined else float("nan"),
        "amplitude": amplitude_ratio(pred, gt),
        "offset": offset,
        "r_at_offset": r_off,
        "n": c.n,
    }
