"""Per-frame semantic label maps from the selfie mask and the face-mesh polygons.

No face-parsing network can be had offline (docs: offline_components.md), so the labels are
built from two things MediaPipe gives us: a soft person mask (selfie segmentation) and the
478 face-mesh points. Label values:

    0 background, 1 torso + neck, 2 hair (head but not face), 3 face, 4 mouth interior
    (the values live in talkgs.data.format)

The rules, in the order they are applied (each is one function below):

1. Person (:func:`person_mask`): selfie mask > 0.5, opened with a 3x3 kernel to drop
   speckle, then only the connected component that holds the face is kept (a second
   person or a detached blob of graphics is background), and holes inside it smaller than
   1% of its area (segmentation misses) are filled.
2. Face (:func:`face_polygon`): the filled FACE_OVAL contour, with its upper half pushed
   up by ``forehead_extend`` (default 8%) of the face height. MediaPipe's oval stops on the
   mid-forehead (point 10); on the anchor clip bare forehead skin continues ~12% of the
   face height above it. Left alone, that skin would be "hair", and hair is dropped from
   the face loss most of the time in TalkingGaussian's training, so the forehead would be
   under-trained. 8% takes most of the skin while staying below typical hairlines (hair
   over the forehead, e.g. a fringe, is then labelled face; that is the lesser error, as
   the fringe moves rigidly with the head). The face is intersected with the person.
3. Head zone (:func:`head_zone`): the part of the image above the jaw line, within a band
   around the face. The jaw line is the lower face oval from one jaw corner via the chin
   to the other (points 132 ... 152 ... 361, at mouth level), continued sideways there
   ("wings") along the eye line, i.e. perpendicular to the head's up axis, so the cut
   follows head roll. Above the wings, everything up to the top of the image within
   ``head_half_width`` (1.6) face half-widths of the face centre counts: ears and hair on
   the sides and on top. Below the jaw line is neck and torso. Limitation (geometry only,
   no colour): long hair hanging below the jaw corners is labelled torso.
4. Head = person inside the head zone; hair = head minus face; torso + neck = person
   outside the head zone.
5. Mouth interior (:func:`mouth_interior`): the inner-lip polygon (LIPS_INNER contour)
   rasterised with 4x4 supersampling and kept where it covers at least half of a pixel.
   A closed mouth makes a polygon of (near) zero area, which then covers no pixel (a
   plain ``cv2.fillPoly`` would draw its outline, ~50 px for a closed mouth); slivers
   thinner than 2 px (lips almost touching) are removed by a 2x2 opening. It is
   intersected with the face, so it is never outside the head.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import cv2
import numpy as np

from talkgs.data.format import LABEL_BACKGROUND, LABEL_FACE, LABEL_HAIR, LABEL_MOUTH, LABEL_TORSO
from talkgs.errors import PrepareError
from talkgs.landmarks import CHIN, FACE_OVAL_IDX, LEFT_EYE_IDX, LIPS_INNER_IDX, RIGHT_EYE_IDX

BACKGROUND, TORSO, HAIR, FACE, MOUTH = LABEL_BACKGROUND, LABEL_TORSO, LABEL_HAIR, LABEL_FACE, LABEL_MOUTH
# label_frame paints regions in this order, and builds labels as person (0/1) x region.
assert BACKGROUND == 0 < TORSO < HAIR < FACE < MOUTH

PERSON_THRESHOLD = 128  # selfie mask is 0..255; > 0.5 probability
_MOUTH_SUPERSAMPLE = 4
# A closed mouth leaves a sliver of half-covered pixels along the lip line (on the anchor
# clip up to ~45 px, 1 px thick, on frames whose inner-lip gap is < 0.1 px); an interior
# thinner than 2 px shows no teeth or tongue, so such slivers are opened away. Open
# mouths lose < 0.2% of their area to this.
_MOUTH_MIN_THICKNESS = 2
_HOLE_MAX_FRACTION = 0.01  # holes up to 1% of the person's area are segmentation misses


def _chain_from_oval(start: int, stop: int) -> list[int]:
    """Indices of FACE_OVAL_IDX from ``start`` to ``stop`` (inclusive) in contour order,
    taking the way that passes through the chin."""
    oval = list(FACE_OVAL_IDX)
    n = len(oval)
    i, j = oval.index(start), oval.index(stop)
    fwd = [oval[(i + k) % n] for k in range(((j - i) % n) + 1)]
    bwd = [oval[(i - k) % n] for k in range(((i - j) % n) + 1)]
    return fwd if CHIN in fwd else bwd


# Lower face oval from the jaw corner on one side, through the chin, to the other.
# 132 and 361 sit on the sides of the jaw at about mouth level, below the ears: the wings
# start there.
JAW_IDX = _chain_from_oval(132, 361)
_OVAL = np.asarray(FACE_OVAL_IDX)
_JAW = np.asarray(JAW_IDX)
_LIPS_INNER = np.asarray(LIPS_INNER_IDX)
_RIGHT_EYE = np.asarray(RIGHT_EYE_IDX)
_LEFT_EYE = np.asarray(LEFT_EYE_IDX)


def _check_inputs(landmarks: np.ndarray, person: np.ndarray) -> None:
    if landmarks.ndim != 2 or landmarks.shape[0] < 468 or landmarks.shape[1] != 2:
        raise PrepareError(f"landmarks must be [478, 2] pixels, got shape {landmarks.shape}")
    if not np.all(np.isfinite(landmarks)):
        raise PrepareError("landmarks contain NaN/inf; interpolate missed detections before labelling")
    if person.ndim != 2 or person.dtype != np.uint8:
        raise PrepareError(f"person mask must be uint8 [H, W], got {person.dtype} {person.shape}")


def _to_fixed(poly: np.ndarray, shift: int = 4) -> np.ndarray:
    """Continuous pixel coords (centres at +0.5, talkgs.conventions) -> cv2 fixed-point
    vertices, where integer x means the centre of pixel x."""
    return np.round((poly - 0.5) * (1 << shift)).astype(np.int32)


def fill_polygon(poly: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """bool ``[H, W]``: pixels inside polygon ``poly [K, 2]`` (continuous pixel coords).

    Subpixel vertex precision via cv2's fixed point; cv2 includes boundary pixels, which is
    a half-pixel bias that does not matter for the large polygons this is used for.
    """
    out = np.zeros(shape, dtype=np.uint8)
    _paint(out, poly, 1)
    return out.view(bool)


def _paint(canvas: np.ndarray, poly: np.ndarray, value: int) -> None:
    """Fill polygon ``poly [K, 2]`` (continuous pixel coords) with ``value``, in place."""
    cv2.fillPoly(canvas, [_to_fixed(poly)], int(value), lineType=cv2.LINE_8, shift=4)


def fill_polygon_coverage(
    poly: np.ndarray, shape: tuple[int, int], supersample: int = _MOUTH_SUPERSAMPLE, min_thickness: int = 1
) -> np.ndarray:
    """bool ``[H, W]``: pixels at least half covered by polygon ``poly [K, 2]``.

    Rasterises only the polygon's bounding box at ``supersample`` x resolution and
    area-averages, so a degenerate (zero-area) polygon covers no pixel. With
    ``min_thickness`` 2, parts thinner than 2 pixels in any direction are opened away.
    """
    H, W = shape
    out = np.zeros(shape, dtype=bool)
    x0 = int(max(np.floor(poly[:, 0].min()) - 1, 0))
    y0 = int(max(np.floor(poly[:, 1].min()) - 1, 0))
    x1 = int(min(np.ceil(poly[:, 0].max()) + 1, W))
    y1 = int(min(np.ceil(poly[:, 1].max()) + 1, H))
    if x1 <= x0 or y1 <= y0:
        return out
    s = supersample
    canvas = np.zeros(((y1 - y0) * s, (x1 - x0) * s), dtype=np.uint8)
    # Sub-pixel k of the fine grid covers [k/s, (k+1)/s) in continuous coords, so a
    # continuous coordinate u lands at u * s in fine continuous coords.
    fine = (poly - np.array([x0, y0], dtype=np.float64)) * s
    cv2.fillPoly(canvas, [_to_fixed(fine)], 255, lineType=cv2.LINE_8, shift=4)
    cov = (cv2.resize(canvas, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA) >= 128).view(np.uint8)
    if min_thickness > 1:
        k = np.ones((min_thickness, min_thickness), np.uint8)
        cov = cv2.morphologyEx(cov, cv2.MORPH_OPEN, k, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    out[y0:y1, x0:x1] = cov.view(bool)
    return out


def polygon_area(poly: np.ndarray) -> float:
    """Absolute shoelace area (px^2) of polygon ``poly [K, 2]``."""
    x, y = poly[:, 0].astype(np.float64), poly[:, 1].astype(np.float64)
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def head_axes(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit image vectors ``(right, up)`` of the head: right along the eye line (image
    left eye to image right eye), up perpendicular to it (towards smaller y when upright)."""
    right_eye = landmarks[_RIGHT_EYE].mean(0)  # person's right = image left
    left_eye = landmarks[_LEFT_EYE].mean(0)
    r = (left_eye - right_eye).astype(np.float64)
    norm = np.linalg.norm(r)
    if norm < 1e-6:
        raise PrepareError("degenerate landmarks: both eyes at the same pixel")
    r /= norm
    return r, np.array([r[1], -r[0]])


def person_mask(person: np.ndarray, face_poly: np.ndarray, threshold: int = PERSON_THRESHOLD) -> np.ndarray:
    """bool ``[H, W]``: the cleaned person mask (rule 1).

    ``person [H, W]`` uint8 selfie mask 0..255; ``face_poly [K, 2]`` the face contour
    (pixels), used to pick the component that is this person. Components and holes come
    from one ``cv2.findContours`` pass (outer contours = components, their children =
    holes), several times faster than labelling components and holes separately.
    """
    m = (person >= threshold).astype(np.uint8)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    contours, hierarchy = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    out = np.zeros(person.shape, dtype=np.uint8)
    if not contours:
        return out.view(bool)
    hierarchy = hierarchy[0]
    outer = [k for k in range(len(contours)) if hierarchy[k, 3] < 0]
    keep = outer[0]
    if len(outer) > 1:
        # The component with most face pixels; with no overlap (the mask missed the
        # face), the largest one.
        face = fill_polygon(face_poly, person.shape)
        votes, areas = [], []
        for k in outer:
            comp = np.zeros_like(out)
            cv2.drawContours(comp, contours, k, 1, thickness=-1)
            votes.append(int(np.count_nonzero(comp.view(bool) & face)))
            areas.append(cv2.contourArea(contours[k]))
        keep = outer[int(np.argmax(votes))] if max(votes) > 0 else outer[int(np.argmax(areas))]
    cv2.drawContours(out, contours, keep, 1, thickness=-1)
    # Re-open the holes of that component that are too big to be segmentation misses
    # (e.g. background seen between an arm and the body). A hole's contour runs along
    # the person's own boundary pixels, so those are drawn back after clearing.
    max_hole = _HOLE_MAX_FRACTION * np.count_nonzero(out)
    child = hierarchy[keep, 2]
    while child >= 0:
        if cv2.contourArea(contours[child]) > max_hole:
            cv2.drawContours(out, contours, child, 0, thickness=-1)
            cv2.drawContours(out, contours, child, 1, thickness=1)
        child = hierarchy[child, 0]
    return out.view(bool)


def face_polygon(landmarks: np.ndarray, forehead_extend: float = 0.08) -> np.ndarray:
    """``[K, 2]`` face-oval contour with its upper half raised by ``forehead_extend`` face
    heights along the head's up axis (rule 2); the raise tapers to zero at the oval's
    horizontal mid-line so the sides do not move."""
    oval = landmarks[_OVAL].astype(np.float64)
    _, up = head_axes(landmarks)
    centre = oval.mean(0)
    h = (oval - centre) @ up  # height of each contour point above the centre
    height = h.max() - h.min()
    w = np.clip(h / max(h.max(), 1e-6), 0.0, 1.0)
    return oval + (forehead_extend * height * w)[:, None] * up[None, :]


def head_zone_polygon(landmarks: np.ndarray, shape: tuple[int, int], head_half_width: float = 1.6) -> np.ndarray:
    """``[K, 2]`` polygon of the head zone (rule 3): the jaw line, its wings out to
    ``head_half_width`` face half-widths from the face centre, and from their ends straight
    up (along the head's up axis) to beyond the image."""
    H, W = shape
    right, up = head_axes(landmarks)
    oval = landmarks[_OVAL].astype(np.float64)
    centre = oval.mean(0)
    lateral = (oval - centre) @ right
    half_w = 0.5 * (lateral.max() - lateral.min())
    jaw = landmarks[_JAW].astype(np.float64)
    # Make the jaw run from image-left to image-right along the head's right axis.
    if (jaw[-1] - jaw[0]) @ right < 0:
        jaw = jaw[::-1]
    reach = head_half_width * half_w
    left_end = jaw[0] - right * (reach + (jaw[0] - centre) @ right)
    right_end = jaw[-1] + right * (reach - (jaw[-1] - centre) @ right)
    # Rays up from the wing ends: stop them just above the image top when the head is
    # upright enough (keeps the polygon's bounding box tight), else go far out.
    far = 2.0 * (H + W)
    if up[1] < -0.2:
        t_left, t_right = (left_end[1] + 1.0) / -up[1], (right_end[1] + 1.0) / -up[1]
    else:
        t_left = t_right = far
    top_left, top_right = left_end + up * max(t_left, 0.0), right_end + up * max(t_right, 0.0)
    return np.concatenate([[top_left], [left_end], jaw, [right_end], [top_right]], axis=0)


def head_zone(landmarks: np.ndarray, shape: tuple[int, int], head_half_width: float = 1.6) -> np.ndarray:
    """bool ``[H, W]``: where the head may be (rule 3): above the jaw line and its wings,
    within ``head_half_width`` face half-widths of the face centre."""
    return fill_polygon(head_zone_polygon(landmarks, shape, head_half_width), shape)


def mouth_interior(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """bool ``[H, W]``: pixels inside the inner-lip contour (rule 5); empty for a closed mouth."""
    return fill_polygon_coverage(
        landmarks[_LIPS_INNER].astype(np.float64), shape, min_thickness=_MOUTH_MIN_THICKNESS
    )


def label_frame(
    landmarks: np.ndarray,
    person: np.ndarray,
    forehead_extend: float = 0.08,
    head_half_width: float = 1.6,
) -> np.ndarray:
    """uint8 ``[H, W]`` label map (values 0..4) of one frame.

    ``landmarks [478, 2]`` (or [468, 2]) face-mesh points in pixels (continuous coords,
    talkgs.conventions); ``person [H, W]`` uint8 selfie mask 0..255.
    """
    landmarks = np.asarray(landmarks)
    person = np.asarray(person)
    _check_inputs(landmarks, person)
    H, W = shape = person.shape
    face_pts = face_polygon(landmarks, forehead_extend)
    zone_pts = head_zone_polygon(landmarks, shape, head_half_width)
    body = person_mask(person, face_pts).view(np.uint8)
    # Head, face and mouth only matter inside the head zone's bounding box, so they are
    # rasterised there only. Painting order gives the precedence: hair (head zone), then
    # face over it, then mouth interior over the face only.
    pts = np.concatenate([face_pts, zone_pts])
    x0, y0 = np.clip(np.floor(pts.min(0)).astype(int) - 1, 0, [W, H])
    x1, y1 = np.clip(np.ceil(pts.max(0)).astype(int) + 1, 0, [W, H])
    if x1 <= x0 or y1 <= y0:
        return body * np.uint8(TORSO)
    off = np.array([x0, y0], dtype=np.float64)
    head = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    _paint(head, zone_pts - off, HAIR)
    _paint(head, face_pts - off, FACE)
    inner = landmarks[_LIPS_INNER].astype(np.float64) - off
    mouth = fill_polygon_coverage(inner, head.shape, min_thickness=_MOUTH_MIN_THICKNESS)
    head[mouth & (head == FACE)] = MOUTH
    # Person pixels outside the head are torso; everything off the person is background.
    out = np.full(shape, TORSO, dtype=np.uint8)
    out[y0:y1, x0:x1] = cv2.max(head, TORSO)
    return cv2.multiply(out, body)


def label_video(
    landmarks: np.ndarray,
    person: np.ndarray,
    progress: bool = True,
    forehead_extend: float = 0.08,
    head_half_width: float = 1.6,
) -> np.ndarray:
    """uint8 ``[N, H, W]`` label maps for ``landmarks [N, 478, 2]`` and ``person [N, H, W]``.

    Frames are independent; they are labelled on two threads (cv2 releases the GIL).
    """
    landmarks = np.asarray(landmarks)
    if landmarks.ndim != 3 or person.ndim != 3 or len(landmarks) != len(person):
        raise PrepareError(
            f"label_video needs landmarks [N, 478, 2] and person [N, H, W] with equal N, "
            f"got {landmarks.shape} and {person.shape}"
        )
    if len(landmarks) == 0:
        return np.empty(person.shape, dtype=np.uint8)
    return np.concatenate(list(label_chunks(landmarks, person, len(landmarks), progress, forehead_extend, head_half_width)))


def label_chunks(
    landmarks: np.ndarray,
    person,
    chunk: int = 256,
    progress: bool = True,
    forehead_extend: float = 0.08,
    head_half_width: float = 1.6,
) -> Iterator[np.ndarray]:
    """:func:`label_video`'s maps ``uint8 [k, H, W]``, ``chunk`` frames at a time; ``person`` is
    anything that gives ``person[a:b] -> [k, H, W]`` (an array, or masks read from a file), so
    a long clip's masks and maps are never in memory whole."""
    from talkgs.console import ProgressBar

    n = len(landmarks)
    if len(person) != n:
        raise PrepareError(f"label_chunks needs one person mask per landmark frame, got {len(person)} for {n}")
    with ProgressBar(total=n, desc="labels", unit="frame", disable=not progress) as bar:
        for a in range(0, n, chunk):
            masks = np.asarray(person[a : a + chunk])
            out = np.empty(masks.shape, dtype=np.uint8)

            def work(i: int, a=a, masks=masks, out=out) -> None:
                out[i] = label_frame(landmarks[a + i], masks[i], forehead_extend, head_half_width)

            _run_parallel(work, range(len(masks)))
            bar.update(len(masks))
            yield out


def _run_parallel(fn, items: Iterable[int]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        for _ in pool.map(fn, items):
            pass
