"""The data layout of TalkingGaussian / ER-NeRF / RAD-NeRF (``data/<ID>/``), in one place.

File names, the parsing colour code, the OpenFace AU columns, the landmark correspondence
and the camera conversion between that layout and talkgs' conventions
(:mod:`talkgs.conventions`). Written from the layout's description in the design notes;
nothing here is taken from the original code.

Cameras
    The original stores per frame a camera-to-world matrix in OpenGL/Blender camera axes
    (+y up, +z backward) and one ``focal_len`` (fx = fy). Its world is the centroid-centred
    BFM face of the tracker, in metres. talkgs stores world-to-camera matrices in OpenCV
    camera axes, in a world that is MediaPipe's canonical face in metres. The two worlds
    differ by a similarity ``M = tg_from_world`` (X_tg = M X_talkgs, ``M[:3, :3] = s R``):

        w2c_tg      = inverse(c2w_gl @ diag(1, -1, -1, 1))
        w2c_talkgs  = diag(1/s, 1/s, 1/s, 1) @ w2c_tg @ M          (rigid again)

    Scaling the camera frame by 1/s leaves every projection unchanged, so a point seen at a
    pixel in the original lands on the same pixel in talkgs.

Pixels
    The original's landmark files and ``cx``/``cy`` are pixel indices (pixel centres at
    integers); talkgs puts pixel centres at +0.5. So ``cx_talkgs = cx + 0.5`` and
    ``landmark_talkgs = landmark + 0.5``. (The original's renderer ignores cx/cy and puts the
    optical axis at the image centre, W/2 in talkgs' coordinates; its own files say
    W/2 + 0.5: a half-pixel inconsistency inside the original, which we do not copy.)
"""

from __future__ import annotations

import numpy as np

import talkgs.audio  # noqa: F401  (registers every feature kind)
from talkgs import conventions
from talkgs.audio.registry import REGISTRY
from talkgs.data import format as fmt

# --------------------------------------------------------------------------------- file names
TRANSFORMS_TRAIN = "transforms_train.json"
TRANSFORMS_VAL = "transforms_val.json"
ORI_IMGS = "ori_imgs"  # <i>.jpg original frames, <i>.lms 68 FAN landmarks
GT_IMGS = "gt_imgs"  # <i>.jpg frames with the background replaced by bc.jpg
PARSING = "parsing"  # <i>.png colour-coded semantics
TORSO_IMGS = "torso_imgs"  # <i>.png RGBA torso + neck
TEETH_MASK = "teeth_mask"  # <i>.npy bool HxW
BACKGROUND = "bc.jpg"
AU_CSV = "au.csv"
AUDIO_WAV = "aud.wav"

# Audio feature kinds and the files that hold them, in the order they are looked for: every
# registered kind that names its files in the original's layout (talkgs.audio, ``tg_files``).
FEATURE_FILES: dict[str, tuple[str, ...]] = {k: fk.tg_files for k, fk in sorted(REGISTRY.items()) if fk.tg_files}

# Top-level key that `talkgs export-tg` adds to the transforms files (the original reads only
# focal_len and frames): it records the world change, so import-tg undoes it exactly.
MARKER_KEY = "talkgs"

# --------------------------------------------------------------------------------- parsing colours
# RGB colours of parsing/<i>.png (TalkingGaussian's map; ER-NeRF has no gray and paints hair
# blue). Our labels: talkgs.data.format LABEL_*.
WHITE = (255, 255, 255)  # background
BLUE = (0, 0, 255)  # head: skin, brows, eyes, glasses, ears, nose, lips, hat
GRAY = (100, 100, 100)  # inner mouth
GREEN = (0, 255, 0)  # neck, necklace
RED = (255, 0, 0)  # cloth (torso)
BLACK = (0, 0, 0)  # hair

# colour -> our label; teeth_mask pixels become LABEL_MOUTH whatever their colour.
PALETTE: tuple[tuple[tuple[int, int, int], int], ...] = (
    (WHITE, fmt.LABEL_BACKGROUND),
    (BLUE, fmt.LABEL_FACE),
    (GRAY, fmt.LABEL_MOUTH),
    (GREEN, fmt.LABEL_TORSO),
    (RED, fmt.LABEL_TORSO),
    (BLACK, fmt.LABEL_HAIR),
)
# our label -> colour written by export-tg. The mouth interior is painted head-blue and marked in
# teeth_mask: the original reads face = blue XOR teeth and mouth = gray OR teeth, so this gives
# exactly our face and mouth regions (gray + teeth would put the mouth into its face mask).
EXPORT_COLOURS: dict[int, tuple[int, int, int]] = {
    fmt.LABEL_BACKGROUND: WHITE,
    fmt.LABEL_TORSO: RED,
    fmt.LABEL_HAIR: BLACK,
    fmt.LABEL_FACE: BLUE,
    fmt.LABEL_MOUTH: BLUE,
}


def labels_from_parsing(parsing_rgb: np.ndarray, teeth: np.ndarray | None = None) -> np.ndarray:
    """uint8 labels ``[H, W]`` from a parsing image ``uint8 [H, W, 3]`` RGB.

    Each pixel takes the label of the nearest palette colour (exact colours for the original's
    PNGs; nearest also copes with a resaved/compressed map); ``teeth [H, W]`` bool pixels
    become mouth interior, as the original's mouth mask is gray OR teeth.
    """
    img = np.asarray(parsing_rgb)
    key = (img[..., 0].astype(np.int32) << 16) | (img[..., 1].astype(np.int32) << 8) | img[..., 2]
    out = np.zeros(img.shape[:2], np.uint8)
    matched = np.zeros(img.shape[:2], bool)
    for (r, g, b), lab in PALETTE:
        m = key == ((r << 16) | (g << 8) | b)
        out[m] = lab
        matched |= m
    if not matched.all():  # off-palette pixels: nearest palette colour
        cols = np.array([c for c, _ in PALETTE], np.int32)
        labs = np.array([lab for _, lab in PALETTE], np.uint8)
        px = img[~matched].astype(np.int32)
        out[~matched] = labs[np.argmin(((px[:, None, :] - cols[None]) ** 2).sum(-1), axis=-1)]
    if teeth is not None:
        out[np.asarray(teeth, bool)] = fmt.LABEL_MOUTH
    return out


def parsing_from_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(parsing uint8 [H, W, 3] RGB, teeth bool [H, W])`` for our labels ``[H, W]``."""
    lut = np.zeros((256, 3), np.uint8)
    for lab, col in EXPORT_COLOURS.items():
        lut[lab] = col
    labels = np.asarray(labels, np.uint8)
    return lut[labels], labels == fmt.LABEL_MOUTH


# --------------------------------------------------------------------------------- OpenFace AUs
# The AU intensity columns the original reads (expression code AU01..AU07, blink AU45, mouth
# curriculum AU25). OpenFace writes ", "-separated headers, so names start with a space.
TG_AU_COLUMNS = ("AU01_r", "AU04_r", "AU05_r", "AU06_r", "AU07_r", "AU25_r", "AU45_r")
# export-tg writes AU25_r = clip(AU25_PER_MOUTH_OPEN * mouth_open, 0, 5): mouth_open (inner-lip
# gap / face height) is ~0.1 for a wide-open mouth, OpenFace AU25 peaks near 5. The original uses
# AU25 only through its percentiles, so the factor matters little.
AU25_PER_MOUTH_OPEN = 40.0

# --------------------------------------------------------------------------------- landmarks
PIXEL_OFFSET = 0.5  # talkgs pixel coordinate = original pixel index + 0.5

# The 68 FAN (iBUG 300-W) points as MediaPipe FaceMesh vertices, chosen on the canonical mesh
# (talkgs.landmarks) by position: jaw 0-16 along the face oval from the image-left
# temple to the chin and up again, brows 17-26 on the upper brow contour, nose 27-35, eyes 36-47
# (corners and lid thirds), outer lips 48-59 (corners, Cupid's bow peaks, centres), inner lips
# 60-67. Rigid points (eye corners, nose) match well; the jaw is a silhouette in FAN and a fixed
# vertex here, so it agrees only roughly.
FAN68_TO_MEDIAPIPE: tuple[int, ...] = (
    127, 234, 93, 132, 58, 136, 150, 176, 152, 400, 379, 365, 288, 361, 323, 454, 356,  # jaw
    70, 63, 105, 66, 107,  # brow, image left (outer -> inner)
    336, 296, 334, 293, 300,  # brow, image right (inner -> outer)
    168, 197, 5, 1,  # nose bridge -> tip
    98, 97, 2, 326, 327,  # nostril base, image left -> right
    33, 160, 158, 133, 153, 144,  # eye, image left: outer corner, upper lid, inner corner, lower lid
    362, 385, 387, 263, 373, 380,  # eye, image right: inner corner, upper lid, outer corner, lower lid
    61, 40, 37, 0, 267, 270, 291, 321, 405, 17, 181, 91,  # outer lips from the image-left corner
    78, 81, 13, 311, 308, 402, 14, 178,  # inner lips from the image-left corner
)  # fmt: skip
# FAN points that move with the skull: nose and eye corners (used to align the worlds).
FAN_RIGID = (27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45)
FAN_LIPS_OUTER = tuple(range(48, 60))
FAN_INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))  # (upper, lower)
FAN_RIGHT_EYE = (36, 37, 38, 39, 40, 41)  # image-left eye: corners 36/39, lids (37, 41), (38, 40)
FAN_LEFT_EYE = (42, 43, 44, 45, 46, 47)  # image-right eye: corners 42/45, lids (43, 47), (44, 46)
FAN_NASION, FAN_CHIN = 27, 8


def read_lms(path) -> np.ndarray:
    """``float64 [68, 2]`` from an ``.lms`` file (one "x y" row per point, pixel indices)."""
    arr = np.loadtxt(path, dtype=np.float64, ndmin=2)
    if arr.shape != (68, 2):
        raise ValueError(f"expected 68 rows of 'x y', got shape {arr.shape}")
    return arr


def format_lms(points_idx: np.ndarray) -> str:
    """Text of an ``.lms`` file for ``[68, 2]`` pixel-index coordinates."""
    return "".join(f"{x:.4f} {y:.4f}\n" for x, y in np.asarray(points_idx, np.float64))


# --------------------------------------------------------------------------------- cameras
def similarity_scale(M: np.ndarray) -> float:
    """Uniform scale ``s`` of a similarity ``[4, 4]`` (``M[:3, :3] = s R``)."""
    return float(np.cbrt(np.linalg.det(np.asarray(M, np.float64)[:3, :3])))


def tg_to_w2c(c2w_gl: np.ndarray, tg_from_world: np.ndarray | None = None) -> np.ndarray:
    """talkgs ``w2c [N, 4, 4]`` (float64) from the original's OpenGL ``c2w [N, 4, 4]``.

    ``tg_from_world`` is the similarity taking talkgs world points to the original's world
    (identity when None).
    """
    c2w_cv = conventions.opengl_c2w_to_opencv(np.asarray(c2w_gl, np.float64))
    w2c_tg = conventions.invert_rigid(_orthonormalise(c2w_cv))
    if tg_from_world is None:
        return w2c_tg
    M = np.asarray(tg_from_world, np.float64)
    s = similarity_scale(M)
    w2c = w2c_tg @ M
    w2c[..., :3, :] /= s
    return w2c


def w2c_to_tg(w2c: np.ndarray, tg_from_world: np.ndarray | None = None) -> np.ndarray:
    """The original's OpenGL ``c2w [N, 4, 4]`` (float64) from talkgs ``w2c [N, 4, 4]``; inverse of
    :func:`tg_to_w2c`."""
    w2c = np.asarray(w2c, np.float64)
    if tg_from_world is not None:
        M = np.asarray(tg_from_world, np.float64)
        s = similarity_scale(M)
        w2c = w2c @ np.linalg.inv(M)
        w2c[..., :3, :] *= s
    return conventions.opencv_c2w_to_opengl(conventions.invert_rigid(_orthonormalise(w2c)))


def _orthonormalise(T: np.ndarray) -> np.ndarray:
    """``T`` with its rotation block projected onto the nearest rotation (JSON rounding, float32)."""
    T = np.array(T, np.float64)
    u, _, vt = np.linalg.svd(T[..., :3, :3])
    d = np.sign(np.linalg.det(u @ vt))
    u[..., :, 2] *= d[..., None]
    T[..., :3, :3] = u @ vt
    return T


def translation(t) -> np.ndarray:
    """``[4, 4]`` pure translation."""
    M = np.eye(4)
    M[:3, 3] = t
    return M


def centroid_alignment(canonical: np.ndarray) -> np.ndarray:
    """``tg_from_world`` assuming the original's world origin is the centroid of the face mesh
    (its tracker centres the BFM face on its vertex centroid) and axes and scale agree."""
    return translation(-np.asarray(canonical, np.float64).mean(0))


def _rotvec(r: np.ndarray) -> np.ndarray:
    """Rotation matrix of a rotation vector (Rodrigues)."""
    th = float(np.linalg.norm(r))
    if th < 1e-12:
        return np.eye(3)
    k = r / th
    Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(th) * Kx + (1 - np.cos(th)) * Kx @ Kx


def _similarity(p: np.ndarray) -> np.ndarray:
    M = np.eye(4)
    M[:3, :3] = np.exp(p[6]) * _rotvec(p[:3])
    M[:3, 3] = p[3:6]
    return M


def fit_landmark_alignment(
    w2c_tg: np.ndarray,
    K: np.ndarray,
    landmarks: np.ndarray,
    canonical: np.ndarray,
    init: np.ndarray,
    iterations: int = 40,
    huber_px: float = 2.0,
) -> tuple[np.ndarray, float]:
    """Similarity ``tg_from_world`` that best projects canonical points onto 2D landmarks.

    ``w2c_tg [N, 4, 4]`` cameras in the original's world (OpenCV axes), ``K [3, 3]`` talkgs
    intrinsics, ``landmarks [N, P, 2]`` talkgs pixel coordinates of the canonical points
    ``canonical [P, 3]`` (metres). Levenberg-Marquardt with Huber weights over rotation, translation
    and log-scale, started at ``init`` (the centroid alignment). Scale and depth are nearly
    interchangeable under a distant camera, so a weak prior keeps the depth of the face at
    ``init``'s (the original's world origin is the face centroid). Returns the similarity and
    the RMS reprojection error in pixels.
    """
    w2c_tg = np.asarray(w2c_tg, np.float64)
    lm = np.asarray(landmarks, np.float64)
    P = np.asarray(canonical, np.float64)
    t0 = np.asarray(init, np.float64)[:3, 3]
    prior_sigma = np.array([0.3, 0.3, 0.3, 0.05, 0.05, 0.005, 0.3])  # rad, m, m, m(depth), log s

    def residuals(p: np.ndarray) -> np.ndarray:
        X = P @ _similarity(p)[:3, :3].T + p[3:6]
        uv, z = conventions.project(X[None], w2c_tg, K[None])
        r = (uv - lm).reshape(-1)
        bad = np.repeat((z <= 1e-6).reshape(-1), 2)
        r[bad] = 1e3
        return r

    p = np.zeros(7)
    p[3:6] = t0
    ref = np.concatenate([np.zeros(3), t0, [0.0]])
    lam = 1e-3
    rms = float("inf")
    for _ in range(iterations):
        r = residuals(p)
        w = np.minimum(1.0, huber_px / np.maximum(np.abs(r), 1e-12))
        J = np.empty((r.size, 7))
        for j in range(7):
            dp = np.zeros(7)
            dp[j] = 1e-6
            J[:, j] = (residuals(p + dp) - r) / 1e-6
        A = (J * w[:, None]).T @ J + np.diag(1.0 / prior_sigma**2)
        g = (J * w[:, None]).T @ r + (p - ref) / prior_sigma**2
        cost = float((w * r * r).sum() + (((p - ref) / prior_sigma) ** 2).sum())
        while True:
            step = np.linalg.solve(A + lam * np.diag(np.diag(A)), -g)
            pn = p + step
            rn = residuals(pn)
            wn = np.minimum(1.0, huber_px / np.maximum(np.abs(rn), 1e-12))
            cn = float((wn * rn * rn).sum() + (((pn - ref) / prior_sigma) ** 2).sum())
            if cn <= cost or lam > 1e8:
                break
            lam *= 10.0
        if cn > cost:
            break
        p, lam = pn, max(lam / 10.0, 1e-9)
        rms = float(np.sqrt(np.mean(rn**2)))
        if np.abs(step).max() < 1e-9:
            break
    if not np.isfinite(rms):
        rms = float(np.sqrt(np.mean(residuals(p) ** 2)))
    return _similarity(p), rms
