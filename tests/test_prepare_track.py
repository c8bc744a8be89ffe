"""Landmark tracking, cuts, head pose and face signals (talkgs.prepare.{canonical, landmarks,
pose, signals}): synthetic checks with known answers, then the real anchor clip."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from talkgs import conventions
from talkgs.errors import PrepareError
from talkgs import landmarks as C
from talkgs.prepare.track import fill_missing
from talkgs.prepare.pose import detect_cuts, fit_head_pose, pose_jitter, smooth_poses
from talkgs.prepare.signals import compute_signals

W = H = 512

# Anchor clip facts (notes.md): hard cuts start these shots.
ANCHOR_CUTS = (176, 702, 953, 1429)
# Mean rigid-point reprojection error of the smoothed pose on the anchor clip: measured
# 2.05 px (raw per-frame PnP 2.00 px, per-frame max 3.4 px). 89 % of the squared error is
# a per-shot constant pattern: the generic canonical face is not this person's face (the
# forehead points alone sit 3-4.5 px off); the time-varying part (landmark noise,
# expression) is 0.6 px. 3 px leaves ~50 % margin over the measurement, while a wrong
# focal (500 px: 4.2 px), a flipped axis or smoothing across a cut (> 10 px) fails it.
REPROJ_MEAN_BOUND_PX = 3.0
REPROJ_MAX_BOUND_PX = 5.0


# ---------------------------------------------------------------------------------------
# Synthetic helpers


def _w2c(yaw_deg=0.0, pitch_deg=0.0, roll_deg=0.0, t=(0.0, 0.0, 0.8)) -> np.ndarray:
    """Camera looking at the face from +z (frontal = diag(1, -1, -1)), head turned by
    yaw/pitch/roll (degrees, world y / x / z axes)."""
    frontal = np.diag([1.0, -1.0, -1.0])
    R_head = Rotation.from_euler("yxz", [yaw_deg, pitch_deg, roll_deg], degrees=True).as_matrix()
    return conventions.rigid(frontal @ R_head, np.asarray(t, np.float64))


def _project_face(w2c: np.ndarray, f: float, noise_px: float = 0.0, seed: int = 0) -> np.ndarray:
    """``[N, 478, 2]`` landmarks: the canonical face projected with ``w2c [N, 4, 4]``;
    iris points copied from the eye centres."""
    K = conventions.intrinsics(f, f, W / 2, H / 2)
    uv, _ = conventions.project(C.load_canonical_face()[None], np.asarray(w2c, np.float64), K[None])
    iris = uv[:, [159] * 5 + [386] * 5]
    lm = np.concatenate([uv, iris], 1)
    if noise_px:
        lm = lm + np.random.default_rng(seed).normal(0.0, noise_px, lm.shape)
    return lm


def _rot_deg(Ra: np.ndarray, Rb: np.ndarray) -> np.ndarray:
    return np.degrees(Rotation.from_matrix(np.swapaxes(Ra, -1, -2) @ Rb).magnitude())


def _cycle_edges(seq) -> set[frozenset]:
    return {frozenset((a, b)) for a, b in zip(seq, seq[1:] + seq[:1])}


# ---------------------------------------------------------------------------------------
# canonical


def test_canonical_face_is_metric_in_world_frame():
    V = C.load_canonical_face()
    assert V.shape == (468, 3)
    assert 0.13 < V[:, 0].ptp() < 0.18  # face ~15 cm wide
    assert V[C.FOREHEAD_TOP, 1] > V[4, 1] > V[C.CHIN, 1]  # +y up
    assert V[4, 2] == V[:, 2].max()  # nose tip nearest the viewer (+z)
    assert V[263, 0] > 0 > V[33, 0]  # person's left eye at +x


def test_index_sets_match_mediapipe_connections():
    fmc = pytest.importorskip("mediapipe.python.solutions.face_mesh_connections")
    edges = lambda s: {frozenset(e) for e in s}  # noqa: E731
    assert _cycle_edges(list(C.LIPS_OUTER_IDX)) | _cycle_edges(list(C.LIPS_INNER_IDX)) == edges(
        fmc.FACEMESH_LIPS
    )
    assert _cycle_edges(list(C.FACE_OVAL_IDX)) == edges(fmc.FACEMESH_FACE_OVAL)
    assert _cycle_edges(list(C.LEFT_EYE_IDX)) == edges(fmc.FACEMESH_LEFT_EYE)
    assert _cycle_edges(list(C.RIGHT_EYE_IDX)) == edges(fmc.FACEMESH_RIGHT_EYE)
    assert _cycle_edges(list(C.LEFT_IRIS_IDX)) == edges(fmc.FACEMESH_LEFT_IRIS)
    assert _cycle_edges(list(C.RIGHT_IRIS_IDX)) == edges(fmc.FACEMESH_RIGHT_IRIS)
    lips = {i for e in fmc.FACEMESH_LIPS for i in e}
    assert len(C.LIP_LANDMARKS_40) == 40 and set(C.LIP_LANDMARKS_40) == lips

    # Rigid points: no lips, eyelids, brows, irises or jaw (oval below the nose base).
    V = C.load_canonical_face()
    moving = lips | {i for s in (fmc.FACEMESH_LEFT_EYEBROW, fmc.FACEMESH_RIGHT_EYEBROW) for e in s for i in e}
    lids = (set(C.LEFT_EYE_IDX) | set(C.RIGHT_EYE_IDX)) - {33, 133, 362, 263}  # corners are rigid
    jaw = {i for i in C.FACE_OVAL_IDX if V[i, 1] < V[2, 1]}
    rigid = set(C.RIGID_IDX)
    assert len(rigid) == len(C.RIGID_IDX) >= 40
    assert not rigid & (moving | lids | jaw | set(range(468, 478)))
    assert all(V[i, 1] > V[2, 1] for i in rigid)  # nothing below the nose base


def test_contours_are_clockwise_on_screen_and_ear_points_sensible():
    lm = _project_face(_w2c()[None], 1200.0)[0]

    def signed_area(idx):  # > 0: clockwise on screen (image y points down)
        p = lm[list(idx)]
        x, y = p[:, 0], p[:, 1]
        return 0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)

    for idx in (C.LIPS_OUTER_IDX, C.LIPS_INNER_IDX, C.FACE_OVAL_IDX, C.LEFT_EYE_IDX, C.RIGHT_EYE_IDX):
        assert signed_area(idx) > 0
    assert lm[C.RIGHT_EYE_IDX[0], 0] < lm[C.LEFT_EYE_IDX[0], 0]  # the person's right eye is image-left
    for eye, corners, pairs in (
        (C.RIGHT_EYE_IDX, C.RIGHT_EYE_CORNERS, C.RIGHT_EYE_LID_PAIRS),
        (C.LEFT_EYE_IDX, C.LEFT_EYE_CORNERS, C.LEFT_EYE_LID_PAIRS),
    ):
        xs = lm[list(eye), 0]
        assert {lm[corners[0], 0], lm[corners[1], 0]} == {xs.min(), xs.max()}
        for up, lo in pairs:
            assert up in eye and lo in eye
            assert lm[up, 1] < lm[lo, 1]  # upper lid above the lower one
            assert abs(lm[up, 0] - lm[lo, 0]) < 2.0  # a vertical pair
    for up, lo in C.INNER_LIP_PAIRS:
        assert up in C.LIPS_INNER_IDX and lo in C.LIPS_INNER_IDX and lm[up, 1] < lm[lo, 1]


# ---------------------------------------------------------------------------------------
# fill_missing


def test_fill_missing_interpolates_isolated_gaps_and_holds_ends():
    n = 300
    x = np.arange(n, dtype=np.float32)
    lm = np.stack([x, -2 * x], -1)[:, None, :].repeat(3, 1)  # [N, 3, 2], linear in time
    detected = np.ones(n, bool)
    detected[[0, 1, 50, 51, 52, 200, n - 1]] = False
    garbage = lm.copy()
    garbage[~detected] = 1e6
    out, interp = fill_missing(garbage, detected, max_gap=3, max_missing_fraction=0.05)
    assert out.dtype == np.float32 and out.shape == lm.shape
    np.testing.assert_array_equal(interp, ~detected)
    np.testing.assert_allclose(out[2:-1], lm[2:-1], atol=1e-4)  # interior gaps: exact on a line
    np.testing.assert_array_equal(out[0], lm[2])  # leading miss: first detection held
    np.testing.assert_array_equal(out[n - 1], lm[n - 2])  # trailing miss: last detection held


def test_fill_missing_raises_naming_first_bad_frames():
    detected = np.ones(120, bool)
    missed = [3, 4, 9, 20, 21, 40, 41, 60, 61, 80, 100]
    detected[missed] = False
    first = r"no face found in 11 of 120 frames \(first: 3, 4, 9, 20, 21, 40, 41, 60, \.\.\.\)"
    with pytest.raises(PrepareError, match=first):
        fill_missing(np.zeros((120, 478, 2)), detected, max_missing_fraction=0.01)
    detected = np.ones(1000, bool)
    detected[500:509] = False
    with pytest.raises(PrepareError, match=r"9 consecutive frames 500-508"):
        fill_missing(np.zeros((1000, 478, 2)), detected, max_gap=5)
    with pytest.raises(PrepareError, match="no face found in any of the 10 frames"):
        fill_missing(np.zeros((10, 478, 2)), np.zeros(10, bool))


# ---------------------------------------------------------------------------------------
# pose on synthetic projections of the canonical face


def _head_motion(n: int, seed: int = 1) -> np.ndarray:
    """``[n, 4, 4]`` a smoothly nodding and turning head (+-20 deg yaw, +-10 pitch)."""
    t = np.arange(n)
    yaw = 20 * np.sin(t / 17.0)
    pitch = 10 * np.sin(t / 11.0 + 1.0)
    roll = 5 * np.sin(t / 23.0)
    tx = 0.03 * np.sin(t / 29.0)
    tz = 0.75 + 0.05 * np.sin(t / 31.0)
    return np.stack([_w2c(y, p, r, (x, 0.01, z)) for y, p, r, x, z in zip(yaw, pitch, roll, tx, tz)])


def test_fit_head_pose_recovers_known_camera_and_focal():
    f_true = 1100.0
    gt = _head_motion(120)
    lm = _project_face(gt, f_true, noise_px=0.3)
    res = fit_head_pose(lm, W, H, [(0, 120)], smooth_sigma=0.0)
    assert abs(res.focal_px - f_true) / f_true < 0.05
    assert res.focal_range_px[0] <= res.focal_px <= res.focal_range_px[1]
    np.testing.assert_allclose(res.K, conventions.intrinsics(res.focal_px, res.focal_px, W / 2, H / 2))
    assert res.w2c.shape == res.w2c_raw.shape == (120, 4, 4) and res.w2c.dtype == np.float32
    rot_err = _rot_deg(gt[:, :3, :3], res.w2c_raw[:, :3, :3].astype(np.float64))
    assert rot_err.max() < 1.0
    # Depth scales with the focal estimate; the direction to the head does not.
    t_est, t_gt = res.w2c_raw[:, :3, 3], gt[:, :3, 3]
    assert np.abs(t_est[:, 2] / t_gt[:, 2] - res.focal_px / f_true).max() < 0.02
    np.testing.assert_allclose(t_est[:, :2] / t_est[:, 2:], t_gt[:, :2] / t_gt[:, 2:], atol=2e-3)
    assert res.reproj_error_raw_px.mean() < 0.5  # exact shape + 0.3 px noise


def test_fixed_focal_and_frontal_camera_conventions():
    gt = np.repeat(_w2c(t=(0.0, 0.0, 0.7))[None], 5, 0)
    res = fit_head_pose(_project_face(gt, 1300.0), W, H, focal_px=1300.0)
    np.testing.assert_allclose(res.w2c_raw, gt, atol=1e-4)
    np.testing.assert_allclose(res.w2c[0, :3, :3], np.diag([1.0, -1.0, -1.0]), atol=1e-4)
    centre = conventions.camera_centres(res.w2c.astype(np.float64))
    np.testing.assert_allclose(centre, [[0.0, 0.0, 0.7]] * 5, atol=1e-4)  # in front of the face (+z)
    assert res.reproj_error_px.max() < 1e-2


def test_smoothing_cuts_jitter_without_bias_and_keeps_linear_motion():
    rng = np.random.default_rng(0)
    n = 200
    base = _w2c(10, -5, 2, (0.02, 0.0, 0.8))
    noisy = np.repeat(base[None], n, 0)
    noise_R = Rotation.from_rotvec(rng.normal(0, np.radians(0.5), (n, 3))).as_matrix()
    noisy[:, :3, :3] = noisy[:, :3, :3] @ noise_R
    noisy[:, :3, 3] += rng.normal(0, 0.002, (n, 3))
    sm = smooth_poses(noisy, [(0, n)], sigma=1.0)
    rot_raw, tr_raw = pose_jitter(noisy, [(0, n)])
    rot_s, tr_s = pose_jitter(sm, [(0, n)])
    assert rot_s < rot_raw / 3 and tr_s < tr_raw / 3
    assert _rot_deg(base[:3, :3], sm[:, :3, :3]).mean() < _rot_deg(base[:3, :3], noisy[:, :3, :3]).mean()

    # Constant-velocity motion (rotation about a fixed axis, translation along a line)
    # passes through unchanged, up to the shot ends: no lag, zero phase.
    t = np.arange(60)
    lin = np.stack([_w2c(0.5 * k, 0.0, 0.0, (0.001 * k, 0.0, 0.8 + 0.002 * k)) for k in t])
    np.testing.assert_allclose(smooth_poses(lin, [(0, 60)], sigma=2.0), lin, atol=1e-9)


def test_smoothing_never_crosses_a_cut():
    a = np.repeat(_w2c(-15, 5, 0, (0.05, 0.0, 0.7))[None], 40, 0)
    b = np.repeat(_w2c(20, -5, 3, (-0.05, 0.02, 0.9))[None], 30, 0)
    both = np.concatenate([a, b])
    sm = smooth_poses(both, [(0, 40), (40, 70)], sigma=3.0)
    np.testing.assert_allclose(sm, both, atol=1e-9)  # one smoothed shot would blend 39/40
    sm_one = smooth_poses(both, [(0, 70)], sigma=3.0)
    assert np.abs(sm_one[39] - both[39]).max() > 1e-2  # (the check above can fail)


def test_detect_cuts_on_synthetic_motion():
    gt = _head_motion(120)
    lm = _project_face(gt, 1100.0, noise_px=0.3)
    assert detect_cuts(lm) == [(0, 120)]  # +-20 deg turns and nods are not cuts
    gt2 = gt.copy()
    gt2[60:, :3, 3] += [0.05, -0.02, -0.15]  # the camera jumps closer and sideways at frame 60
    assert detect_cuts(_project_face(gt2, 1100.0, noise_px=0.3)) == [(0, 60), (60, 120)]


def test_detect_cuts_uses_picture_changes_for_moderate_jumps():
    gt = _head_motion(60)
    gt[30:, :3, 3] += [0.004, 0.0, 0.0]  # a small sideways jump (~0.06 face sizes) at frame 30
    lm = _project_face(gt, 1100.0, noise_px=0.1)
    rng = np.random.default_rng(0)
    still = np.repeat(rng.integers(0, 255, (1, 64, 64, 3), dtype=np.uint8), 60, 0)
    changed = still.copy()
    changed[30:] = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)  # another camera from 30 on
    assert detect_cuts(lm) == [(0, 60)]  # too small for the landmarks alone
    assert detect_cuts(lm, still) == [(0, 60)]
    assert detect_cuts(lm, changed) == [(0, 30), (30, 60)]


# ---------------------------------------------------------------------------------------
# signals


def _signal_landmarks(n: int, gaps: np.ndarray, lid: np.ndarray, roll_deg: float = 0.0) -> np.ndarray:
    """Frontal projected faces with the inner lips opened by ``gaps [n]`` px and both
    eyes' lid pairs ``lid [n]`` px apart, rotated by ``roll_deg`` in the image plane."""
    lm = np.repeat(_project_face(_w2c(t=(0, 0, 0.7))[None], 1200.0), n, 0)
    for u, lo in C.INNER_LIP_PAIRS:
        lm[:, lo] = lm[:, u] + np.stack([np.zeros(n), gaps], -1)
    for pairs in (C.RIGHT_EYE_LID_PAIRS, C.LEFT_EYE_LID_PAIRS):
        for u, lo in pairs:
            mid = 0.5 * (lm[:, u] + lm[:, lo])
            lm[:, u] = mid - np.stack([np.zeros(n), lid / 2], -1)
            lm[:, lo] = mid + np.stack([np.zeros(n), lid / 2], -1)
    c, s = np.cos(np.radians(roll_deg)), np.sin(np.radians(roll_deg))
    centre = np.array([W / 2, H / 2])
    return (lm - centre) @ np.array([[c, s], [-s, c]]) + centre


def test_signals_measure_known_openings():
    n = 100
    gaps = np.linspace(0.0, 20.0, n)
    lid = np.full(n, 8.0)
    lid[[10, 11, 50]] = 0.5  # three closed-eye frames
    for roll in (0.0, 25.0):
        sig = compute_signals(_signal_landmarks(n, gaps, lid, roll), W, H)
        np.testing.assert_allclose(sig["mouth_gap_px"], gaps, atol=1e-3)
        lm = _signal_landmarks(n, gaps, lid, roll)
        height = np.linalg.norm(lm[:, C.CHIN] - lm[:, C.FOREHEAD_TOP], axis=-1)
        np.testing.assert_allclose(sig["mouth_open"], gaps / height, rtol=1e-4, atol=1e-6)
        corner = np.linalg.norm(lm[:, 33] - lm[:, 133], axis=-1)
        np.testing.assert_allclose(sig["eye_ratio"][:, 0], lid / corner, rtol=1e-4)
        assert sig["eye_ratio"].shape == (n, 2) and sig["blink"].shape == (n,)
        closed = np.zeros(n, bool)
        closed[[10, 11, 50]] = True
        assert sig["blink"][closed].min() > 0.95 and sig["blink"][~closed].max() < 0.05
    # Pressed lips (lower inner lip above the upper one) read as a zero gap.
    sig = compute_signals(_signal_landmarks(4, np.array([-3.0, 0.0, 1.0, 2.0]), np.full(4, 8.0)), W, H)
    np.testing.assert_allclose(sig["mouth_gap_px"], [0.0, 0.0, 1.0, 2.0], atol=1e-4)


def test_lips_box_is_a_padded_square_inside_the_image():
    lm = np.repeat(_project_face(_w2c(t=(0, 0, 0.7))[None], 1200.0), 3, 0)
    lm[1] += [-230.0, 150.0]  # lips near the bottom-left corner (partly outside)
    lm[2] = (lm[2] - lm[2, 13]) * 0.1 + lm[2, 13]  # a tiny face: lips a few px wide
    sig = compute_signals(lm, W, H)
    box = sig["lips_box"]
    side = box[:, 2] - box[:, 0]
    np.testing.assert_array_equal(side, box[:, 3] - box[:, 1])
    assert (side >= 32).all() and (box[:, :2] >= 0).all() and (box[:, 2:] <= [W, H]).all()
    np.testing.assert_array_equal(box, np.round(box))
    lips = lm[0, list(C.LIPS_OUTER_IDX)]
    assert (box[0, :2] <= lips.min(0)).all() and (box[0, 2:] >= lips.max(0)).all()
    assert side[0] >= 1.5 * (lips.max(0) - lips.min(0)).max() - 1
    assert side[2] == 32
    oval = lm[0, list(C.FACE_OVAL_IDX)]
    np.testing.assert_allclose(sig["face_box"][0], np.r_[oval.min(0), oval.max(0)], atol=1e-3)


def test_track_video_flags_frames_without_a_face_and_rejects_bad_frames():
    pytest.importorskip("mediapipe")
    from talkgs.prepare.track import track_video

    blank = np.zeros((3, 96, 128, 3), np.uint8)
    tr = track_video(iter(blank), progress=False)
    assert not tr.detected.any() and tr.landmarks.shape == (3, 478, 2) and not tr.landmarks.any()
    assert tr.person.shape == (3, 96, 128) and tr.person.dtype == np.uint8
    with pytest.raises(PrepareError, match="frame 0 must be RGB uint8"):
        track_video([np.zeros((96, 128, 3), np.float32)], progress=False)
    with pytest.raises(PrepareError, match=r"frame 1 has shape \(64, 128, 3\)"):
        track_video([blank[0], blank[0, :64]], progress=False)


# ---------------------------------------------------------------------------------------
# The real anchor clip: decoded and tracked once for the module.


@pytest.fixture(scope="module")
def anchor_track(anchor_path):
    from talkgs.media import read_frames
    from talkgs.prepare.track import track_video

    frames = read_frames(anchor_path)
    track = track_video(frames, progress=False)
    return frames, track


@pytest.fixture(scope="module")
def anchor_pose(anchor_track):
    frames, track = anchor_track
    lm, interp = fill_missing(track.landmarks, track.detected)
    shots = detect_cuts(lm, frames)
    return lm, shots, fit_head_pose(lm, W, H, shots, interpolated=interp)


@pytest.mark.slow
def test_anchor_tracking(anchor_track):
    frames, track = anchor_track
    n = len(frames)
    assert track.landmarks.shape == (n, 478, 2) and track.landmarks.dtype == np.float32
    assert track.landmarks_z.shape == (n, 478) and track.person.shape == (n, H, W)
    assert track.person.dtype == np.uint8
    assert track.detected.mean() >= 0.99
    # The selfie mask covers the nose tip and misses the top corners (studio background).
    d = track.detected
    nose = np.round(track.landmarks[d, 4]).astype(int).clip(0, W - 1)
    assert (track.person[np.flatnonzero(d), nose[:, 1], nose[:, 0]] > 200).mean() > 0.99
    assert track.person[:, :40, :40].mean() < 10 and track.person[:, :40, -40:].mean() < 10
    # Landmarks land on the face: the nose tip sits inside the face oval's box.
    oval = track.landmarks[d][:, list(C.FACE_OVAL_IDX)]
    assert ((nose > oval.min(1)) & (nose < oval.max(1))).all()


@pytest.mark.slow
def test_anchor_cuts(anchor_track, anchor_pose):
    lm, shots, _ = anchor_pose
    starts = [a for a, _ in shots[1:]]
    assert len(starts) == len(ANCHOR_CUTS)
    assert all(abs(s - c) <= 2 for s, c in zip(starts, ANCHOR_CUTS))
    assert detect_cuts(lm) == shots  # the landmark jumps alone find the same cuts


@pytest.mark.slow
def test_anchor_pose(anchor_pose):
    lm, shots, res = anchor_pose
    assert 1000 < res.focal_px < 1800  # notes.md: flat error curve 1200-1400 px
    lo, hi = res.focal_range_px
    assert lo <= res.focal_px <= hi and res.focal_uncertainty_px == pytest.approx((hi - lo) / 2)
    np.testing.assert_allclose(res.K[:2, 2], [W / 2, H / 2])
    assert res.reproj_error_px.mean() < REPROJ_MEAN_BOUND_PX
    assert res.reproj_error_px.max() < REPROJ_MAX_BOUND_PX
    # Smoothing removes jitter, not fit: at most 0.2 px worse on average.
    assert res.reproj_error_px.mean() < res.reproj_error_raw_px.mean() + 0.2
    # The camera sits 0.5-1.2 m in front of the face and looks at it roughly frontally.
    centres = conventions.camera_centres(res.w2c.astype(np.float64))
    assert (centres[:, 2] > 0.5).all() and (centres[:, 2] < 1.2).all()
    assert np.median(_rot_deg(res.w2c[:, :3, :3].astype(np.float64), np.diag([1.0, -1.0, -1.0]))) < 20
    assert res.jitter["rot_deg"] < res.jitter["rot_deg_raw"] / 2


@pytest.mark.slow
def test_anchor_smoothing_on_a_still_segment(anchor_pose):
    """Jitter on the stillest 2 s of the clip (least smoothed motion) drops >= 2x."""
    lm, shots, res = anchor_pose
    win = 50
    rv = Rotation.from_matrix(res.w2c[:, :3, :3].astype(np.float64)).as_rotvec()
    best = None
    for a, b in shots:
        for s in range(a, b - win + 1, 5):
            motion = np.linalg.norm(np.diff(rv[s : s + win], axis=0), axis=-1).sum()
            if best is None or motion < best[0]:
                best = (motion, s)
    s = best[1]
    seg = [(0, win)]
    rot_raw, tr_raw = pose_jitter(res.w2c_raw[s : s + win], seg)
    rot_s, tr_s = pose_jitter(res.w2c[s : s + win], seg)
    assert rot_s < rot_raw / 2 and tr_s < tr_raw / 2


@pytest.mark.slow
def test_anchor_signals(anchor_pose):
    lm, _, _ = anchor_pose
    sig = compute_signals(lm, W, H)
    gap13 = np.abs(lm[:, 14, 1] - lm[:, 13, 1])
    assert np.corrcoef(sig["mouth_open"], gap13)[0, 1] > 0.95
    assert sig["mouth_gap_px"].max() > 15  # notes.md: the gap reaches ~25 px
    assert (sig["blink"] > 0.9).sum() >= 20  # the anchor blinks ~50 times
    assert np.median(sig["blink"]) < 0.5
    side = sig["lips_box"][:, 2] - sig["lips_box"][:, 0]
    assert (side >= 32).all()


@pytest.mark.parametrize("hint", [None, 5, 7, 9])
def test_person_masks_fill_one_array_when_the_count_is_known(hint):
    """The masks come back in order whatever the hint: fewer, as many or more frames than it
    said, or none (then they are stacked at the end)."""
    from talkgs.prepare.track import _Masks

    rng = np.random.default_rng(0)
    masks = [rng.integers(0, 256, (6, 4), dtype=np.uint8) for _ in range(7)]
    store = _Masks(hint)
    for m in masks:
        store.append(m)
    got = store.stacked()
    assert len(store) == 7 and got.dtype == np.uint8
    np.testing.assert_array_equal(got, np.stack(masks))
    if hint == 7:
        assert got is store.array  # filled exactly: no copy
    import tempfile

    with tempfile.TemporaryDirectory() as d, tempfile.TemporaryFile(dir=d) as spool:  # track_video(person_to=)
        store = _Masks(hint, spool)
        for m in masks:
            store.append(m)
        store.save_spooled(f"{d}/person.npy")
        np.testing.assert_array_equal(np.load(f"{d}/person.npy"), np.stack(masks))


def test_prepare_picks_sampled_items_from_a_stream_in_one_pass():
    """picked() yields the items at the given indices of a generator and stops taking items
    after the last one (a decoder is not run to the end for 48 samples)."""
    from talkgs.prepare.pipeline import picked

    taken = []

    def stream():
        for i in range(100):
            taken.append(i)
            yield np.full(2, i)

    got = [int(x[0]) for x in picked(stream(), np.array([0, 3, 4, 50]))]
    assert got == [0, 3, 4, 50] and taken[-1] == 50
    assert list(picked(stream(), np.array([], np.int64))) == []
