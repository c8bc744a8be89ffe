"""Hard cuts, head pose and focal length from FaceMesh landmarks.

Model. The head is fixed in the world (the canonical face frame, metres) and a pinhole
camera moves: ``w2c`` per frame, conventions from talkgs.conventions. The camera has one
focal length for the whole clip, ``fx = fy = f`` (square pixels), and its principal point
is the image centre ``(W / 2, H / 2)`` in talkgs pixel coordinates (pixel centres at
+0.5); with one generic face shape the principal point is not observable separately from
the pose, so it is stated, not estimated.

Method.
1. Focal length: for a candidate f, solve PnP (SQPnP) of the canonical rigid points
   (canonical.RIGID_IDX) against the landmarks on a sample of frames, and take the median
   over frames of the per-frame RMS error. f minimises that by a coarse geometric grid
   then a golden-section search. On real faces the curve is flat near its minimum (the
   generic canonical face does not match the person exactly, and depth trades against
   focal), so the result also carries the range of f whose error is within 1 % of the
   best.
2. Pose per frame at that f: SQPnP, a global solver, so frames are independent (see
   :func:`solve_pnp` for why no previous-frame guess or extra refinement).
3. Zero-phase smoothing inside each shot, never across a cut: rotations as rotation
   vectors relative to the shot's mean rotation, and translations, each filtered with a
   symmetric Gaussian (sigma in frames). Shot ends are padded by odd reflection, which
   keeps linear motion at the ends unbiased.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np

from talkgs import conventions
from talkgs.errors import PrepareError
from talkgs.landmarks import RIGID_IDX, load_canonical_face

# Cut detection thresholds, set on the anchor clip (see detect_cuts).
CUT_MIN_JUMP = 0.15
CUT_MIN_RATIO = 5.0
THUMB_SIZE = 32
FOCAL_TOLERANCE = 0.01  # focal range: median error within +1 % of the best


@dataclasses.dataclass
class PoseResult:
    """Camera per frame (N frames) and the clip's intrinsics.

    w2c                   float32 [N, 4, 4]  smoothed world-to-camera (OpenCV camera)
    w2c_raw               float32 [N, 4, 4]  per-frame PnP before smoothing
    K                     float64 [3, 3]     intrinsics (conventions.intrinsics)
    focal_px              float              f = fx = fy
    focal_range_px        (lo, hi)           f whose median error is within +1 % of the best
    focal_uncertainty_px  float              half the width of focal_range_px
    focal_curve           float64 [M, 2]     (f, median rigid RMS px) evaluated in the search
    reproj_error_px       float32 [N]        mean over RIGID_IDX of |projection - landmark|
                                             under w2c (pixels)
    reproj_error_raw_px   float32 [N]        the same under w2c_raw
    jitter                dict               RMS second difference inside shots of rotation
                                             (deg) and translation (mm), raw and smoothed
    """

    w2c: np.ndarray
    w2c_raw: np.ndarray
    K: np.ndarray
    focal_px: float
    focal_range_px: tuple[float, float]
    focal_uncertainty_px: float
    focal_curve: np.ndarray
    reproj_error_px: np.ndarray
    reproj_error_raw_px: np.ndarray
    jitter: dict


# ---------------------------------------------------------------------------------------
# Cuts


def _thumbnails(frames: Iterable[np.ndarray]) -> np.ndarray:
    """Grey ``[N, 32, 32]`` float32 thumbnails (area-averaged) of RGB uint8 frames."""
    import cv2

    out = []
    for f in frames:
        g = cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY)
        out.append(cv2.resize(g, (THUMB_SIZE, THUMB_SIZE), interpolation=cv2.INTER_AREA))
    return np.asarray(out, np.float32)


def _spike_ratio(x: np.ndarray, window: int = 5, floor: float = 1e-3) -> np.ndarray:
    """``x[i]`` over the larger of the medians of the ``window`` values before and after it."""
    n = len(x)
    out = np.zeros(n)
    for i in range(1, n):
        before = np.median(x[max(1, i - window) : i]) if i > 1 else 0.0
        after = np.median(x[i + 1 : i + 1 + window]) if i < n - 1 else 0.0
        out[i] = x[i] / max(before, after, floor)
    return out


def landmark_jumps(landmarks: np.ndarray) -> np.ndarray:
    """``[N]`` mean displacement of the rigid points from frame i-1 to i, in units of the
    face size (RMS distance of the rigid points from their centroid); 0 for frame 0."""
    x = np.asarray(landmarks, np.float64)[:, list(RIGID_IDX)]
    size = np.sqrt(((x - x.mean(1, keepdims=True)) ** 2).sum(-1).mean(-1))
    d = np.linalg.norm(x[1:] - x[:-1], axis=-1).mean(-1) / np.maximum(np.minimum(size[1:], size[:-1]), 1e-6)
    return np.concatenate([[0.0], d])


def detect_cuts(
    landmarks: np.ndarray,
    frames: Iterable[np.ndarray] | None = None,
    min_jump: float = CUT_MIN_JUMP,
    min_ratio: float = CUT_MIN_RATIO,
) -> list[tuple[int, int]]:
    """Shots ``[(start, stop), ...]`` (half-open, covering all N frames) split at hard cuts.

    ``landmarks [N, 478, 2]`` pixels (gaps filled). A cut at frame i is a jump of the rigid
    points from i-1 to i that is both large (``>= min_jump`` face sizes) and isolated
    (``>= min_ratio`` times the typical jump in the 5 frames on either side): a fast nod
    moves the face a lot for several frames, a cut in one. On the anchor clip the four
    cuts jump 0.22-0.37 face sizes with ratios 13-58, while the largest motion elsewhere
    jumps 0.12 with ratio < 8.

    ``frames`` (optional, RGB uint8 ``[H, W, 3]``): also accept a moderate landmark jump
    (``>= min_jump / 3``, ratio ``>= min_ratio``) when the whole picture changes at the
    same frame (grey-thumbnail difference ``>= min_ratio`` times its neighbours and >= 4
    grey levels), for cuts between similar framings.
    """
    landmarks = np.asarray(landmarks)
    n = len(landmarks)
    if n == 0:
        raise PrepareError("no frames to split into shots")
    jump = landmark_jumps(landmarks)
    ratio = _spike_ratio(jump)
    is_cut = (jump >= min_jump) & (ratio >= min_ratio)
    if frames is not None:
        th = _thumbnails(frames)
        if len(th) != n:
            raise PrepareError(f"detect_cuts got {len(th)} frames for {n} landmark frames")
        td = np.concatenate([[0.0], np.abs(th[1:] - th[:-1]).mean((1, 2))])
        picture_cut = (td >= 4.0) & (_spike_ratio(td, floor=0.25) >= min_ratio)
        is_cut |= picture_cut & (jump >= min_jump / 3) & (ratio >= min_ratio)
    is_cut[0] = False
    starts = [0] + np.flatnonzero(is_cut).tolist() + [n]
    return [(a, b) for a, b in zip(starts[:-1], starts[1:])]


# ---------------------------------------------------------------------------------------
# PnP


def solve_pnp(obj: np.ndarray, img: np.ndarray, K: np.ndarray) -> np.ndarray:
    """``w2c [S, 4, 4]`` (float64) fitting ``obj [P, 3]`` (world) to ``img [S, P, 2]`` pixels.

    SQPnP finds the global minimum of its error, so it needs no initial guess and a cut
    cannot derail the next frame. Measured on the anchor clip: starting from the previous
    frame's pose never found a better fit, and a Levenberg-Marquardt polish of the image
    error changed poses by <= 0.16 deg / 2.6 mm and the mean reprojection error by
    +0.002 px (it minimises the RMS, not the mean) at 7x the cost, so neither is done.
    """
    import cv2
    from scipy.spatial.transform import Rotation

    rvecs = np.zeros((len(img), 3))
    tvecs = np.zeros((len(img), 3))
    for i, x in enumerate(img):
        ok, r, t = cv2.solvePnP(obj, x, K, None, flags=cv2.SOLVEPNP_SQPNP)
        if not ok:
            raise PrepareError(f"PnP failed on frame {i}: landmarks are degenerate")
        rvecs[i], tvecs[i] = r.ravel(), t.ravel()
    return conventions.rigid(Rotation.from_rotvec(rvecs).as_matrix(), tvecs)


def _rms(obj: np.ndarray, img: np.ndarray, w2c: np.ndarray, K: np.ndarray) -> np.ndarray:
    """``[S]`` RMS pixel error of ``obj [P, 3]`` projected with ``w2c [S, 4, 4]`` vs ``img [S, P, 2]``."""
    uv, _ = conventions.project(obj[None], w2c, K[None])
    return np.sqrt(((uv - img) ** 2).sum(-1).mean(-1))


def _median_rms(obj: np.ndarray, img: np.ndarray, f: float, cx: float, cy: float) -> float:
    """Median over frames of the per-frame rigid RMS error at focal ``f``; ``img [S, P, 2]``."""
    K = conventions.intrinsics(f, f, cx, cy)
    return float(np.median(_rms(obj, img, solve_pnp(obj, img, K), K)))


def estimate_focal(
    obj: np.ndarray,
    img: np.ndarray,
    width: int,
    height: int,
    tolerance: float = FOCAL_TOLERANCE,
) -> tuple[float, tuple[float, float], np.ndarray]:
    """``(f, (f_lo, f_hi), curve [M, 2])`` for rigid points ``obj [P, 3]`` (metres) seen
    at ``img [S, P, 2]`` pixels on S sample frames.

    Grid: 17 focal lengths, geometric from 1x to 5x the image size (a 53 deg to 11 deg
    field of view), then a golden-section search (in log f) between the best grid point's
    neighbours. The range is where the median error stays within ``1 + tolerance`` of the
    best, found by bisection on each side (clamped to the grid ends). Both searches stop
    at 0.5 % of f, far below the range on real faces (+-15 % on the anchor clip).
    """
    cx, cy = width / 2.0, height / 2.0
    size = float(max(width, height))
    curve: dict[float, float] = {}
    rel_tol = np.log(1.005)

    def err(log_f: float) -> float:
        f = float(np.exp(log_f))
        if f not in curve:
            curve[f] = _median_rms(obj, img, f, cx, cy)
        return curve[f]

    grid = np.log(size * np.geomspace(1.0, 5.0, 17))
    errs = [err(g) for g in grid]
    k = int(np.argmin(errs))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    best = grid[k]
    golden = (np.sqrt(5.0) - 1.0) / 2.0
    x1, x2 = hi - golden * (hi - lo), lo + golden * (hi - lo)
    while hi - lo > rel_tol:
        if err(x1) <= err(x2):  # the minimum lies in [lo, x2]
            hi, x2 = x2, x1
            x1 = hi - golden * (hi - lo)
        else:  # in [x1, hi]
            lo, x1 = x1, x2
            x2 = lo + golden * (hi - lo)
        best = min((best, x1, x2), key=err)
    level = err(best) * (1.0 + tolerance)

    def crossing(inside: float, outside: float) -> float:
        if err(outside) <= level:
            return outside
        while abs(outside - inside) > rel_tol:
            mid = 0.5 * (inside + outside)
            inside, outside = (mid, outside) if err(mid) <= level else (inside, mid)
        return 0.5 * (inside + outside)

    f_lo = float(np.exp(crossing(best, grid[0])))
    f_hi = float(np.exp(crossing(best, grid[-1])))
    pts = np.array(sorted(curve.items()), dtype=np.float64)
    return float(np.exp(best)), (f_lo, f_hi), pts


def _sample_frames(usable: np.ndarray, count: int) -> np.ndarray:
    idx = np.flatnonzero(usable)
    if len(idx) <= count:
        return idx
    return idx[np.linspace(0, len(idx) - 1, count).round().astype(int)]


# ---------------------------------------------------------------------------------------
# Smoothing


def _gaussian_smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Zero-phase Gaussian filter along axis 0 of ``x [T, D]``, ends padded by odd
    reflection (2 x[0] - x[k]) so that a linear trend passes unchanged."""
    from scipy.ndimage import gaussian_filter1d

    T = len(x)
    if sigma <= 0 or T < 2:
        return x.copy()
    pad = min(T - 1, int(np.ceil(4 * sigma)))
    head = 2 * x[:1] - x[1 : pad + 1][::-1]
    tail = 2 * x[-1:] - x[-pad - 1 : -1][::-1]
    y = gaussian_filter1d(np.concatenate([head, x, tail]), sigma, axis=0, mode="nearest", truncate=4.0)
    return y[pad : pad + T]


def _mean_rotation(R: np.ndarray) -> np.ndarray:
    """Chordal L2 mean of rotations ``[T, 3, 3]``: the rotation nearest their sum."""
    U, _, Vt = np.linalg.svd(R.sum(0))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def smooth_poses(
    w2c: np.ndarray, shots: Sequence[tuple[int, int]], sigma: float
) -> np.ndarray:
    """Zero-phase smoothed ``w2c [N, 4, 4]`` (float64), each shot filtered on its own."""
    from scipy.spatial.transform import Rotation

    w2c = np.asarray(w2c, np.float64)
    out = w2c.copy()
    for a, b in shots:
        R = w2c[a:b, :3, :3]
        Rm = _mean_rotation(R)
        # Rotation vectors of Rm^T R stay far from pi (a shot spans < 90 deg of head turn),
        # so they are continuous and filtering them is well defined.
        rv = Rotation.from_matrix(np.einsum("ji,tjk->tik", Rm, R)).as_rotvec()
        rv_s = _gaussian_smooth(rv, sigma)
        t_s = _gaussian_smooth(w2c[a:b, :3, 3], sigma)
        out[a:b, :3, :3] = Rm @ Rotation.from_rotvec(rv_s).as_matrix()
        out[a:b, :3, 3] = t_s
    return out


def pose_jitter(w2c: np.ndarray, shots: Sequence[tuple[int, int]]) -> tuple[float, float]:
    """RMS second difference inside shots of the rotation (degrees, from rotation vectors
    relative to the shot mean) and of the translation (mm): high-frequency pose noise."""
    from scipy.spatial.transform import Rotation

    w2c = np.asarray(w2c, np.float64)
    rot: list[np.ndarray] = []
    tr: list[np.ndarray] = []
    for a, b in shots:
        if b - a < 3:
            continue
        R = w2c[a:b, :3, :3]
        rv = Rotation.from_matrix(np.einsum("ji,tjk->tik", _mean_rotation(R), R)).as_rotvec()
        t = w2c[a:b, :3, 3]
        rot.append(np.linalg.norm(rv[2:] - 2 * rv[1:-1] + rv[:-2], axis=-1))
        tr.append(np.linalg.norm(t[2:] - 2 * t[1:-1] + t[:-2], axis=-1))
    if not rot:
        return 0.0, 0.0
    rot_all, tr_all = np.concatenate(rot), np.concatenate(tr)
    return float(np.degrees(np.sqrt((rot_all**2).mean()))), float(1e3 * np.sqrt((tr_all**2).mean()))


def reprojection_errors(
    landmarks: np.ndarray, w2c: np.ndarray, K: np.ndarray, idx: Sequence[int] = RIGID_IDX
) -> np.ndarray:
    """``[N]`` mean pixel distance between the canonical points ``idx`` projected with
    ``w2c [N, 4, 4]`` and ``K`` and the landmarks ``[N, 478, 2]``."""
    pts = load_canonical_face()[list(idx)]
    uv, _ = conventions.project(pts[None], np.asarray(w2c, np.float64), K[None])
    return np.linalg.norm(uv - np.asarray(landmarks, np.float64)[:, list(idx)], axis=-1).mean(-1)


# ---------------------------------------------------------------------------------------
# Whole clip


def _check_shots(shots: Sequence[tuple[int, int]], n: int) -> list[tuple[int, int]]:
    shots = [(int(a), int(b)) for a, b in shots]
    if not shots or shots[0][0] != 0 or shots[-1][1] != n:
        raise PrepareError(f"shots must cover frames 0..{n}, got {shots[:3]}...")
    for (a, b), (c, _) in zip(shots, shots[1:] + [(n, n)]):
        if not a < b or b != c:
            raise PrepareError(f"shots must be contiguous non-empty [start, stop) ranges, got ({a}, {b})")
    return shots


def fit_head_pose(
    landmarks: np.ndarray,
    width: int,
    height: int,
    shots: Sequence[tuple[int, int]] | None = None,
    interpolated: np.ndarray | None = None,
    smooth_sigma: float = 1.0,
    focal_px: float | None = None,
    n_focal_frames: int = 80,
) -> PoseResult:
    """Per-frame camera and one focal length for a clip (see the module docstring).

    ``landmarks [N, 478, 2]`` (or ``[N, 468, 2]``) pixels with misses already filled;
    ``shots`` from :func:`detect_cuts` (default: one shot); ``interpolated [N]`` bool marks
    filled frames, which are left out of the focal search; ``smooth_sigma`` in frames
    (0 = no smoothing); ``focal_px`` fixes f instead of searching it.
    """
    landmarks = np.asarray(landmarks, np.float64)
    if landmarks.ndim != 3 or landmarks.shape[1] < 468 or landmarks.shape[2] != 2:
        raise PrepareError(f"landmarks must be [N, 478, 2] pixels, got shape {landmarks.shape}")
    if not np.all(np.isfinite(landmarks)):
        raise PrepareError("landmarks contain NaN/inf; fill missed frames before fitting the pose")
    n = len(landmarks)
    shots = _check_shots(shots if shots is not None else [(0, n)], n)
    usable = np.ones(n, bool) if interpolated is None else ~np.asarray(interpolated, bool)
    if not usable.any():
        raise PrepareError("every frame is interpolated; no detected face to fit the pose to")

    obj = np.ascontiguousarray(load_canonical_face()[list(RIGID_IDX)])
    img = np.ascontiguousarray(landmarks[:, list(RIGID_IDX)])
    if focal_px is None:
        sample = _sample_frames(usable, n_focal_frames)
        f, f_range, curve = estimate_focal(obj, img[sample], width, height)
    else:
        f, f_range, curve = float(focal_px), (float(focal_px), float(focal_px)), np.zeros((0, 2))
    K = conventions.intrinsics(f, f, width / 2.0, height / 2.0)

    w2c_raw = solve_pnp(obj, img, K)
    w2c = smooth_poses(w2c_raw, shots, smooth_sigma).astype(np.float32)
    w2c_raw = w2c_raw.astype(np.float32)
    rot_raw, tr_raw = pose_jitter(w2c_raw, shots)
    rot_s, tr_s = pose_jitter(w2c, shots)
    return PoseResult(
        w2c=w2c,
        w2c_raw=w2c_raw,
        K=K,
        focal_px=f,
        focal_range_px=f_range,
        focal_uncertainty_px=0.5 * (f_range[1] - f_range[0]),
        focal_curve=curve,
        reproj_error_px=reprojection_errors(landmarks, w2c, K).astype(np.float32),
        reproj_error_raw_px=reprojection_errors(landmarks, w2c_raw, K).astype(np.float32),
        jitter={
            "rot_deg_raw": rot_raw,
            "rot_deg": rot_s,
            "trans_mm_raw": tr_raw,
            "trans_mm": tr_s,
        },
    )
