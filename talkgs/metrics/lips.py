"""Landmark-based lip metrics: LMD and mouth-opening correlation.

No SyncNet with usable weights exists offline, so lip sync is judged from landmarks:
LMD compares the lip shape of a rendered frame with the ground-truth frame, and the
mouth-opening correlation compares how the mouth opens and closes over time.
Both take numpy arrays or torch tensors (detached, on any device) and return numpy/floats.
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
