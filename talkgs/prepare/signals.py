"""Per-frame face signals from landmarks; they replace OpenFace action units.

mouth_open   AU25 (lips part): inner-lip gap over face height, scale invariant.
eye_ratio    eye aspect ratio (EAR) per eye: mean lid distance over corner distance.
blink        AU45 (blink): EAR mapped to [0, 1] with this clip's own statistics.
lips_box     square crop around the lips (lip-region losses, LPIPS).
face_box     bounding box of the face oval.

All take ``landmarks [N, 478, 2]`` (or 468) pixels in talkgs coordinates, gaps filled.
"""

from __future__ import annotations

import numpy as np

from talkgs.errors import PrepareError
from talkgs.landmarks import (
    CHIN,
    FACE_OVAL_IDX,
    FOREHEAD_TOP,
    INNER_LIP_PAIRS,
    LEFT_EYE_CORNERS,
    LEFT_EYE_LID_PAIRS,
    LIPS_OUTER_IDX,
    RIGHT_EYE_CORNERS,
    RIGHT_EYE_LID_PAIRS,
)

# blink: EAR at or above OPEN_PERCENTILE of the clip reads as open (0); at or below
# CLOSED_FRACTION of that value as closed (1). MediaPipe's lids rarely meet on a blink, so
# "closed" is a fraction of the open EAR rather than zero.
OPEN_PERCENTILE = 90.0
CLOSED_FRACTION = 0.4
LIPS_BOX_PAD = 0.25
LIPS_BOX_MIN_PX = 32


def _check(landmarks: np.ndarray) -> np.ndarray:
    landmarks = np.asarray(landmarks, np.float64)
    if landmarks.ndim != 3 or landmarks.shape[1] < 468 or landmarks.shape[2] != 2:
        raise PrepareError(f"landmarks must be [N, 478, 2] pixels, got shape {landmarks.shape}")
    if not np.all(np.isfinite(landmarks)):
        raise PrepareError("landmarks contain NaN/inf; fill missed frames before computing signals")
    return landmarks


def face_height(landmarks: np.ndarray) -> np.ndarray:
    """``[N]`` forehead-top to chin distance in pixels (landmarks 10 and 152)."""
    return np.linalg.norm(landmarks[:, CHIN] - landmarks[:, FOREHEAD_TOP], axis=-1)


def mouth_gap(landmarks: np.ndarray) -> np.ndarray:
    """``[N]`` inner-lip gap in pixels: the mean over the three central inner-lip pairs
    (82/87, 13/14, 312/317) of the lower-minus-upper distance along the face's down axis
    (forehead to chin), clipped at 0. Measuring along the face axis keeps head roll and
    sideways lip offsets out of the gap; the clip makes a closed (pressed) mouth read 0."""
    down = landmarks[:, CHIN] - landmarks[:, FOREHEAD_TOP]
    down = down / np.maximum(np.linalg.norm(down, axis=-1, keepdims=True), 1e-9)
    up_idx = [u for u, _ in INNER_LIP_PAIRS]
    lo_idx = [lo for _, lo in INNER_LIP_PAIRS]
    gaps = ((landmarks[:, lo_idx] - landmarks[:, up_idx]) * down[:, None]).sum(-1)
    return np.clip(gaps, 0.0, None).mean(-1)


def eye_aspect_ratio(landmarks: np.ndarray, corners, lid_pairs) -> np.ndarray:
    """``[N]`` mean distance of the (upper, lower) lid pairs over the corner distance."""
    width = np.linalg.norm(landmarks[:, corners[0]] - landmarks[:, corners[1]], axis=-1)
    lids = np.stack([np.linalg.norm(landmarks[:, u] - landmarks[:, lo], axis=-1) for u, lo in lid_pairs], -1)
    return lids.mean(-1) / np.maximum(width, 1e-9)


def blink_from_ear(eye_ratio: np.ndarray) -> np.ndarray:
    """``[N]`` eye closure in [0, 1] from ``eye_ratio [N, 2]``.

    Each eye's EAR is divided by its own OPEN_PERCENTILE over the clip (so a person with
    narrow eyes, or an eye foreshortened by head turn, reads open at 1), the two are
    averaged, and the result is mapped linearly: >= 1 -> 0 (open), <= CLOSED_FRACTION ->
    1 (closed).
    """
    open_ear = np.percentile(eye_ratio, OPEN_PERCENTILE, axis=0)
    rel = (eye_ratio / np.maximum(open_ear, 1e-9)).mean(-1)
    return np.clip((1.0 - rel) / (1.0 - CLOSED_FRACTION), 0.0, 1.0)


def square_box(
    points: np.ndarray, width: int, height: int, pad: float = LIPS_BOX_PAD, min_size: int = LIPS_BOX_MIN_PX
) -> np.ndarray:
    """``[N, 4]`` integer-valued squares ``x0, y0, x1, y1`` around ``points [N, P, 2]``.

    Side: the larger extent of the points times ``1 + 2 * pad`` (pad on each side), at
    least ``min_size`` and at most the image's shorter side; centred on the points' box,
    then shifted to lie inside the image, so ``frame[y0:y1, x0:x1]`` is always a full
    square crop.
    """
    lo = points.min(1)
    hi = points.max(1)
    side = np.ceil((hi - lo).max(-1) * (1.0 + 2.0 * pad))
    side = np.clip(side, min_size, min(width, height))
    centre = 0.5 * (lo + hi)
    x0 = np.clip(np.round(centre[:, 0] - side / 2), 0, width - side)
    y0 = np.clip(np.round(centre[:, 1] - side / 2), 0, height - side)
    return np.stack([x0, y0, x0 + side, y0 + side], -1)


def compute_signals(landmarks: np.ndarray, width: int, height: int) -> dict[str, np.ndarray]:
    """Per-frame signals from ``landmarks [N, 478, 2]`` pixels of ``width`` x ``height`` frames.

    Returns float32 arrays:
      mouth_open    [N]     inner-lip gap / face height (AU25 substitute)
      mouth_gap_px  [N]     inner-lip gap in pixels (see :func:`mouth_gap`)
      eye_ratio     [N, 2]  EAR of the eye on the image left (person's right), then right
      blink         [N]     eye closure in [0, 1], 1 = closed (see :func:`blink_from_ear`)
      lips_box      [N, 4]  square x0, y0, x1, y1 around the outer lips, 25 % padding on
                            each side, >= 32 px (see :func:`square_box`)
      face_box      [N, 4]  x0, y0, x1, y1 of the face oval, clipped to the image
    """
    lm = _check(landmarks)
    gap = mouth_gap(lm)
    eye_ratio = np.stack(
        [
            eye_aspect_ratio(lm, RIGHT_EYE_CORNERS, RIGHT_EYE_LID_PAIRS),
            eye_aspect_ratio(lm, LEFT_EYE_CORNERS, LEFT_EYE_LID_PAIRS),
        ],
        -1,
    )
    oval = lm[:, list(FACE_OVAL_IDX)]
    face_box = np.concatenate([oval.min(1), oval.max(1)], -1)
    face_box = np.clip(face_box, 0.0, [width, height, width, height])
    out = {
        "mouth_open": gap / np.maximum(face_height(lm), 1e-9),
        "mouth_gap_px": gap,
        "eye_ratio": eye_ratio,
        "blink": blink_from_ear(eye_ratio),
        "lips_box": square_box(lm[:, list(LIPS_OUTER_IDX)], width, height),
        "face_box": face_box,
    }
    return {k: v.astype(np.float32) for k, v in out.items()}
