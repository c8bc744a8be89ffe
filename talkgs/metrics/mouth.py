"""Mouth metrics: a fixed-size crop around the tracked lips, and the inside-mouth area and teeth
of an image measured from its own landmarks.

Mouth crop
    A square of side :func:`mouth_crop_side` = ``MOUTH_CROP_FRACTION`` x the dataset's median
    face height (landmarks 10 to 152), rounded to an even number of pixels (at least
    ``MOUTH_CROP_MIN_PX``), one size per dataset and image scale. Each frame's crop is centred on
    the centre of the box around its tracked 40 lip points (:func:`mouth_crop_boxes`), moved
    inside the image where it would leave it. The same boxes cut the render and the ground truth.

Inside-mouth area (:func:`inner_lip_area`)
    The area of the inner-lip contour (MediaPipe's LIPS_INNER, 20 points) of an image's own
    landmarks, by the shoelace formula, divided by the squared face height of the same
    landmarks: a dimensionless figure, the same for the same mouth at any image size. A closed
    mouth gives ~0. It is the area of the polygon that ``talkgs prepare`` rasterises into the
    mouth-interior label (4).

Teeth (:func:`teeth_fraction`)
    Of the pixels at least half inside the inner-lip contour, the fraction that is teeth: luma
    (Rec. 601) at least ``TEETH_LUMA`` x the median luma of the image's lips (the pixels inside
    its outer-lip contour and outside its inner one) and saturation ((max - min) / max of RGB) at
    most ``TEETH_SATURATION`` x the lips' median saturation: brighter and paler than the lips of
    the same image. A frame shows teeth when that fraction is at least ``TEETH_MIN_FRACTION``
    (:func:`shows_teeth`).

Every function takes numpy arrays and works on one image or landmark set per row.
"""

from __future__ import annotations

import numpy as np

from talkgs.errors import TalkgsError
from talkgs.landmarks import CHIN, FOREHEAD_TOP, LIP_LANDMARKS_40, LIPS_INNER_IDX, LIPS_OUTER_IDX

MOUTH_CROP_FRACTION = 0.45  # crop side / face height: the lips (~0.3 face heights wide) and a margin
MOUTH_CROP_MIN_PX = 16
MOUTH_LPIPS_SIZE = 128  # ST-LPIPS sees each mouth crop resized to this square (AlexNet needs >= 21 px)
OPEN_THRESHOLD = 0.02  # a ground-truth frame is open when its mouth_open (inner-lip gap / face height) >= this
TEETH_LUMA = 1.0  # teeth: at least as bright as the lips' median ...
TEETH_SATURATION = 0.75  # ... and at most this x their saturation (90 % of lip pixels are above 0.85 x)
TEETH_MIN_FRACTION = 0.1  # a frame shows teeth when >= this share of its inside-mouth pixels are teeth

_INNER = np.asarray(LIPS_INNER_IDX)
_OUTER = np.asarray(LIPS_OUTER_IDX)
_LIPS = np.asarray(LIP_LANDMARKS_40)


def _landmarks(lm) -> np.ndarray:
    lm = np.asarray(lm, np.float64)
    if lm.ndim == 2:
        lm = lm[None]
    if lm.ndim != 3 or lm.shape[1] < 468 or lm.shape[2] != 2:
        raise TalkgsError(f"landmarks must be [N, 478, 2] MediaPipe points, got shape {lm.shape}")
    return lm


def face_height(landmarks) -> np.ndarray:
    """``[N]`` forehead-top (10) to chin (152) distance of landmarks ``[N, 478, 2]``, in their pixels."""
    lm = _landmarks(landmarks)
    return np.linalg.norm(lm[:, CHIN] - lm[:, FOREHEAD_TOP], axis=-1)


def mouth_crop_side(landmarks, scale: float = 1.0) -> int:
    """Side (pixels of an image ``scale`` x the landmarks' size) of a dataset's mouth crops:
    ``MOUTH_CROP_FRACTION`` x the median face height of ``landmarks [N, 478, 2]``, even, at
    least ``MOUTH_CROP_MIN_PX``."""
    side = MOUTH_CROP_FRACTION * float(np.median(face_height(landmarks))) * scale
    return max(MOUTH_CROP_MIN_PX, 2 * int(round(side / 2)))


def lip_centres(landmarks) -> np.ndarray:
    """``[N, 2]`` centre of the box around the 40 lip points of each landmark set."""
    lips = _landmarks(landmarks)[:, _LIPS]
    return (lips.min(1) + lips.max(1)) / 2


def mouth_crop_boxes(centres, side: int, width: int, height: int) -> np.ndarray:
    """``[N, 4]`` int boxes ``x0, y0, x1, y1`` of side ``side`` centred on ``centres [N, 2]``
    (pixels), moved inside a ``width`` x ``height`` image (the side shrinks only for an image
    smaller than it)."""
    c = np.asarray(centres, np.float64).reshape(-1, 2)
    side = int(min(side, width, height))
    x0 = np.clip(np.round(c[:, 0] - side / 2), 0, width - side).astype(np.int64)
    y0 = np.clip(np.round(c[:, 1] - side / 2), 0, height - side).astype(np.int64)
    return np.stack([x0, y0, x0 + side, y0 + side], 1)


def cut(images, boxes):
    """Crops ``[N, s, s, C]`` of ``images [N, H, W, C]`` (numpy or torch) at ``boxes [N, 4]``
    (all of one side ``s``)."""
    boxes = np.asarray(boxes)
    crops = [im[y0:y1, x0:x1] for im, (x0, y0, x1, y1) in zip(images, boxes.tolist())]
    if isinstance(images, np.ndarray):
        return np.stack(crops)
    import torch

    return torch.stack(crops)


def polygon_areas(poly) -> np.ndarray:
    """``[N]`` absolute shoelace areas of polygons ``[N, K, 2]``."""
    p = np.asarray(poly, np.float64)
    x, y = p[..., 0], p[..., 1]
    return 0.5 * np.abs((x * np.roll(y, -1, axis=-1) - np.roll(x, -1, axis=-1) * y).sum(-1))


def inner_lip_area(landmarks) -> np.ndarray:
    """``[N]`` inside-mouth area of each landmark set ``[N, 478, 2]``: the inner-lip contour's
    area over the squared face height (module docstring)."""
    lm = _landmarks(landmarks)
    return polygon_areas(lm[:, _INNER]) / np.maximum(face_height(lm), 1e-9) ** 2


def teeth_fraction(images_u8, landmarks) -> np.ndarray:
    """``[N]`` share of the inside-mouth pixels of ``images_u8 [N, H, W, 3]`` that are teeth
    (module docstring), with the lip contours of ``landmarks [N, 478, 2]`` (the image's own
    pixels); 0 where the inner-lip contour covers no pixel or no lip pixel is left around it."""
    from talkgs.prepare.labels import fill_polygon, fill_polygon_coverage

    lm = _landmarks(landmarks)
    ims = np.asarray(images_u8)
    if ims.ndim != 4 or ims.shape[-1] != 3 or ims.shape[0] != lm.shape[0]:
        raise TalkgsError(f"images must be [N, H, W, 3] with one landmark set each, got {ims.shape} and {lm.shape}")
    shape = ims.shape[1:3]
    out = np.zeros(lm.shape[0])
    for i, im in enumerate(ims):
        inside = fill_polygon_coverage(lm[i, _INNER], shape)
        lips = fill_polygon(lm[i, _OUTER], shape) & ~fill_polygon(lm[i, _INNER], shape)
        if not inside.any() or not lips.any():
            continue
        y_in, s_in = _luma_saturation(im[inside])
        y_lip, s_lip = _luma_saturation(im[lips])
        teeth = (y_in >= TEETH_LUMA * np.median(y_lip)) & (s_in <= TEETH_SATURATION * np.median(s_lip))
        out[i] = float(teeth.mean())
    return out


def _luma_saturation(rgb_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rec. 601 luma and HSV saturation ``[K]`` of pixels ``[K, 3]`` (uint8)."""
    rgb = rgb_u8.astype(np.float64) / 255.0
    hi, lo = rgb.max(-1), rgb.min(-1)
    return rgb @ np.array([0.299, 0.587, 0.114]), (hi - lo) / np.maximum(hi, 1e-6)


def shows_teeth(fraction) -> np.ndarray:
    """``[N]`` bool: the frame shows teeth (``teeth_fraction >= TEETH_MIN_FRACTION``)."""
    return np.asarray(fraction, np.float64) >= TEETH_MIN_FRACTION


def area_scores(render_area, gt_area, gt_open) -> dict:
    """The inside-mouth area of the render against the ground truth's, per frame ``[N]`` each
    (NaN where unknown): ``area_r`` (Pearson over frames), ``area_ratio_open`` (mean render area
    over mean ground-truth area, on the open frames: ``gt_open >= OPEN_THRESHOLD``) and
    ``n_open``."""
    from talkgs.metrics.lips import pearson

    a = np.asarray(render_area, np.float64)
    g = np.asarray(gt_area, np.float64)
    c = pearson(a, g)
    open_ = (np.asarray(gt_open, np.float64) >= OPEN_THRESHOLD) & np.isfinite(a) & np.isfinite(g)
    g_mean = float(g[open_].mean()) if open_.any() else 0.0
    return {
        "area_r": c.r if c.defined else float("nan"),
        "area_ratio_open": float(a[open_].mean() / g_mean) if g_mean > 0 else float("nan"),
        "n_open": int(open_.sum()),
    }


def teeth_score(render_teeth, gt_teeth, gt_open) -> dict:
    """``teeth``: of the open ground-truth frames that show teeth, the share whose render shows
    teeth too (NaN when none does; a frame the render's tracker missed counts as no teeth);
    ``n_teeth_gt``: how many such frames."""
    gt = shows_teeth(gt_teeth) & (np.asarray(gt_open, np.float64) >= OPEN_THRESHOLD)
    r = np.nan_to_num(np.asarray(render_teeth, np.float64), nan=0.0)
    n = int(gt.sum())
    return {"teeth": float(shows_teeth(r)[gt].mean()) if n else float("nan"), "n_teeth_gt": n}
