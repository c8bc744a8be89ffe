"""MediaPipe's canonical face and the landmark index sets that prepare, train and render share
(numpy only, no mediapipe).

The index sets are literal lists so that code without mediapipe (train, render, metrics) can
use them. They were derived once from ``mediapipe.solutions.face_mesh_connections``
(mediapipe 0.10.21); ``tests/test_prepare_track.py`` checks them against it.

Naming follows MediaPipe: ``LEFT_*`` is the person's left (image right for a frontal face,
world +x); ``RIGHT_*`` is the person's right (image left, world -x).

Every ordered contour starts at its image-left point (the top point for the face oval) and
runs along the upper edge first, i.e. clockwise on screen for a frontal face.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from talkgs.conventions import CANONICAL_CM_TO_M
from talkgs.errors import TalkgsError

N_MESH = 468  # canonical mesh vertices; FaceMesh with refine_landmarks adds 10 iris points
N_LANDMARKS = 478

# Outer lip contour (FACEMESH_LIPS, outer cycle): from the image-left corner 61 over the upper lip.
LIPS_OUTER_IDX: tuple[int, ...] = (
    61, 185, 40, 39, 37, 0, 267, 269, 270, 409,
    291, 375, 321, 405, 314, 17, 84, 181, 91, 146,
)  # fmt: skip
# Inner lip contour (FACEMESH_LIPS, inner cycle): bounds the mouth interior. 13 / 14 are the
# upper / lower inner-lip centres, 78 / 308 the inner corners.
LIPS_INNER_IDX: tuple[int, ...] = (
    78, 191, 80, 81, 82, 13, 312, 311, 310, 415,
    308, 324, 318, 402, 317, 14, 87, 178, 88, 95,
)  # fmt: skip
# The 40 FACEMESH_LIPS points (outer then inner), for the lip landmark distance (LMD).
LIP_LANDMARKS_40: tuple[int, ...] = LIPS_OUTER_IDX + LIPS_INNER_IDX

# Face oval (FACEMESH_FACE_OVAL): from the forehead top 10 towards image right, chin at 152.
FACE_OVAL_IDX: tuple[int, ...] = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288,
    397, 365, 379, 378, 400, 377, 152, 148, 176, 149, 150, 136,
    172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip

# Eye contours (FACEMESH_RIGHT_EYE / FACEMESH_LEFT_EYE): image-left corner first, upper lid first.
RIGHT_EYE_IDX: tuple[int, ...] = (
    33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7,
)  # fmt: skip
LEFT_EYE_IDX: tuple[int, ...] = (
    362, 398, 384, 385, 386, 387, 388, 466, 263, 249, 390, 373, 374, 380, 381, 382,
)  # fmt: skip
# Iris rings (FACEMESH_RIGHT_IRIS / FACEMESH_LEFT_IRIS) and their centres (refine_landmarks only).
RIGHT_IRIS_IDX: tuple[int, ...] = (469, 470, 471, 472)
LEFT_IRIS_IDX: tuple[int, ...] = (474, 475, 476, 477)
RIGHT_IRIS_CENTRE = 468
LEFT_IRIS_CENTRE = 473

# Eye aspect ratio point sets: the two eye corners and three (upper lid, lower lid) pairs at
# matching canonical x (a quarter, half and three quarters of the way between the corners).
RIGHT_EYE_CORNERS: tuple[int, int] = (33, 133)
RIGHT_EYE_LID_PAIRS: tuple[tuple[int, int], ...] = ((160, 144), (159, 145), (158, 153))
LEFT_EYE_CORNERS: tuple[int, int] = (362, 263)
LEFT_EYE_LID_PAIRS: tuple[tuple[int, int], ...] = ((385, 380), (386, 374), (387, 373))

# Inner-lip (upper, lower) pairs around the centre line, for the mouth-opening gap.
INNER_LIP_PAIRS: tuple[tuple[int, int], ...] = ((82, 87), (13, 14), (312, 317))
FOREHEAD_TOP = 10
CHIN = 152

# Points that move with the skull, not with expression: forehead, nose bridge, nose tip and
# sides, eye corners, cheekbones and temples. No lips, jaw, eyelids or brows. Chosen from the
# canonical geometry and checked on the anchor clip: after a rigid fit their residual varies
# over time by ~0.3-1.2 px RMS, against 1.5-4 px for lips, lids and jaw.
RIGID_IDX: tuple[int, ...] = (
    # midline: nose tip .. nose bridge .. forehead top
    1, 4, 5, 195, 197, 6, 168, 8, 9, 151, 10,
    # forehead
    108, 337, 109, 338, 67, 297, 69, 299, 104, 333,
    # nose sides and alae
    3, 248, 236, 456, 198, 420, 217, 437, 47, 277, 126, 355, 209, 429, 48, 278, 129, 358,
    100, 329, 101, 330,
    # eye corners (outer, inner)
    33, 263, 133, 362,
    # cheekbones
    116, 345, 117, 346, 123, 352, 50, 280, 111, 340, 143, 372,
    # temples
    127, 356, 162, 389, 21, 251, 34, 264, 139, 368, 35, 265,
)  # fmt: skip


ASSET = "assets/canonical_face_468.txt"


def _asset_path():
    try:
        return resources.files("talkgs").joinpath(ASSET)
    except (NotADirectoryError, TypeError, ModuleNotFoundError):
        # An editable install can expose talkgs as a namespace package, which
        # importlib.resources cannot open; the file sits beside the sources anyway.
        return Path(__file__).resolve().parents[1] / ASSET


@lru_cache(maxsize=1)
def _canonical_cm() -> np.ndarray:
    path = _asset_path()
    try:
        with path.open("r") as f:
            pts = np.loadtxt(f, comments="#", dtype=np.float64)
    except (OSError, ValueError) as e:
        raise TalkgsError(f"cannot read the canonical face {path}: {e}") from e
    if pts.shape != (N_MESH, 3):
        raise TalkgsError(f"canonical face {path} has shape {pts.shape}, expected ({N_MESH}, 3)")
    pts.setflags(write=False)
    return pts


def load_canonical_face() -> np.ndarray:
    """Canonical face vertices ``[468, 3]`` (float64) in metres in the talkgs world frame.

    The file is in centimetres with +y up and +z towards the viewer, which is already the
    world frame's orientation (talkgs.conventions), so only the unit changes.
    """
    return _canonical_cm() * CANONICAL_CM_TO_M


def measure_offsets(landmarks: np.ndarray, w2c: np.ndarray, K: np.ndarray, points: np.ndarray | None = None) -> np.ndarray:
    """Tracked 2D landmarks lifted into the head frame: ``[N, 468, 3]`` offsets (metres) from
    ``points [468, 3]`` (default: the canonical face).

    Each 2D point ``landmarks [N, >=468, 2]`` (pixels) is moved along its camera ray to the depth
    that its reference point has in that frame's camera (``w2c [N, 4, 4]``, ``K [3, 3]``) and
    mapped back to the head frame. Head pose is thereby removed; what stays is the face's own
    motion in the image plane (depth is taken from the reference, which is all a single view
    gives)."""
    lm = np.asarray(landmarks, np.float64)
    lm = lm[:, : N_MESH] if lm.ndim == 3 and lm.shape[1] >= N_MESH else np.empty((0, 0, 0))
    w2c = np.asarray(w2c, np.float64)
    K = np.asarray(K, np.float64)
    ref = load_canonical_face() if points is None else np.asarray(points, np.float64)
    if lm.ndim != 3 or lm.shape[2] != 2 or w2c.shape != (lm.shape[0], 4, 4) or ref.shape != (N_MESH, 3):
        raise TalkgsError(
            f"measure_offsets needs landmarks [N, 468, 2], w2c [N, 4, 4], points [468, 3]; got "
            f"{lm.shape}, {w2c.shape}, {ref.shape}"
        )
    R, t = w2c[:, :3, :3], w2c[:, :3, 3]
    depth = (np.einsum("nij,kj->nki", R, ref) + t[:, None])[..., 2]  # [N, 468]
    rays = np.concatenate([lm, np.ones(lm.shape[:2] + (1,))], -1) @ np.linalg.inv(K).T
    cam = rays * depth[..., None]
    world = np.einsum("nji,nkj->nki", R, cam - t[:, None])  # R^T (X_c - t)
    return (world - ref[None]).astype(np.float32)
