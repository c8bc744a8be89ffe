"""Training losses of the face, mouth and fusion stages, as pure functions.

Images are channels-last ``[B, H, W, C]`` floats in [0, 1] (the renderer's layout); masks
are ``[B, H, W]`` bool or float weights (``[B, H, W, 1]`` is accepted too). Every
function returns a 0-dim tensor on the inputs' device unless its docstring says otherwise.

The stage weights of the original (TalkingGaussian) are the callers' business:
``L1 + 0.2 * dssim``, ``1e-5 * deformation_reg``, ``1e-3 * alpha_loss``,
``1e-4 * attention_reg``, ``0.01 * lips_lpips``, ``0.2 or 0.5 * patch_lpips``.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from talkgs.device import to_device_async
from talkgs.errors import TalkgsError
from talkgs.metrics.image import ssim_map
from talkgs.metrics.lpips import MIN_INPUT_SIZE, lpips


def _check_images(pred: torch.Tensor, gt: torch.Tensor) -> None:
    if pred.ndim != 4:
        raise TalkgsError(f"images must be [B, H, W, C], got shape {tuple(pred.shape)}")
    if pred.shape != gt.shape:
        raise TalkgsError(f"prediction and target shapes differ: {tuple(pred.shape)} vs {tuple(gt.shape)}")


def _plane(x: torch.Tensor, shape: tuple[int, int, int], name: str) -> torch.Tensor:
    """``x [B, H, W]`` or ``[B, H, W, 1]`` as ``[B, H, W]``; checks it against ``shape``."""
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if tuple(x.shape) != tuple(shape):
        raise TalkgsError(f"{name} must be [B, H, W] = {tuple(shape)} (or [B, H, W, 1]), got {tuple(x.shape)}")
    return x


def l1(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error of ``pred, gt [B, H, W, C]``.

    mask ``[B, H, W]``: weighted mean over the masked pixels (all channels); an all-zero
    mask gives 0 (with zero gradient) rather than NaN.
    """
    _check_images(pred, gt)
    d = (pred - gt).abs()
    if mask is None:
        return d.mean()
    w = _plane(mask, pred.shape[:3], "mask").to(pred.dtype)[..., None]
    return (d * w).sum() / (w.sum() * pred.shape[-1]).clamp_min(1e-12)


def dssim(
    pred: torch.Tensor,
    gt: torch.Tensor,
    mask: torch.Tensor | None = None,
    window: int = 11,
    sigma: float = 1.5,
    blur: str = "auto",
) -> torch.Tensor:
    """Structural dissimilarity ``1 - SSIM`` (in [0, 2]) of ``pred, gt [B, H, W, C]``.

    We use ``1 - SSIM`` rather than ``(1 - SSIM) / 2`` so that the original's weight
    (``L1 + 0.2 * (1 - SSIM)``) carries over unchanged. SSIM is the project's one SSIM
    (:func:`talkgs.metrics.image.ssim_map`, zero-padded Gaussian window); mask ``[B, H, W]``
    weights the mean of the SSIM map (all-zero mask -> 0); ``blur`` as in ``ssim_map``.
    """
    _check_images(pred, gt)
    m = ssim_map(pred, gt, window=window, sigma=sigma, blur=blur)
    if mask is None:
        return 1.0 - m.mean()
    w = _plane(mask, pred.shape[:3], "mask").to(m.dtype)[..., None]
    total = w.sum() * m.shape[-1]
    return ((1.0 - m) * w).sum() / total.clamp_min(1e-12)


def alpha_loss(alpha: torch.Tensor, inside_mask: torch.Tensor, outside_mask: torch.Tensor) -> torch.Tensor:
    """Push the rendered opacity to 1 inside a region and to 0 outside another.

    alpha ``[B, H, W, 1]`` (or ``[B, H, W]``) in [0, 1]; inside_mask, outside_mask
    ``[B, H, W]``. Returns ``mean((1 - alpha) * inside) + mean(alpha * outside)``, each
    mean over all ``B * H * W`` pixels (as the original).
    """
    a = alpha[..., 0] if alpha.ndim == 4 else alpha
    if a.ndim != 3:
        raise TalkgsError(f"alpha must be [B, H, W, 1], got shape {tuple(alpha.shape)}")
    inside = _plane(inside_mask, a.shape, "inside_mask").to(a.dtype)
    outside = _plane(outside_mask, a.shape, "outside_mask").to(a.dtype)
    return ((1.0 - a) * inside).mean() + (a * outside).mean()


def deformation_reg(deltas: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Sum over named offsets of their mean absolute value.

    deltas: e.g. ``{"xyz": [N, 3], "rotation": [N, 4], "scale": [N, 3], "opacity": [N, 1]}``
    predicted by a motion field; keeping them small keeps motion explained by the
    conditions rather than by arbitrary per-frame shifts. No offsets (static warm-up) -> 0.
    """
    if not deltas:
        return torch.zeros(())
    return sum(d.abs().mean() for d in deltas.values())  # type: ignore[return-value]


def attention_reg(att_map: torch.Tensor, region_mask: torch.Tensor) -> torch.Tensor:
    """Penalise attention where it should not be: ``mean(att * region)`` over all pixels.

    att_map ``[B, H, W]`` or ``[B, H, W, 1]``: one rendered attention channel (e.g. the eye
    attention, which should be zero inside the lips box); region_mask ``[B, H, W]``.
    """
    a = att_map[..., 0] if att_map.ndim == 4 else att_map
    if a.ndim != 3:
        raise TalkgsError(f"att_map must be [B, H, W] or [B, H, W, 1], got shape {tuple(att_map.shape)}")
    return (a * _plane(region_mask, a.shape, "region_mask").to(a.dtype)).mean()


def safe_square_boxes(boxes: torch.Tensor, height: int, width: int, min_size: int = 32) -> torch.Tensor:
    """Integer square crop boxes ``[B, 4]`` (x0, y0, x1, y1; x1/y1 exclusive) inside the image.

    boxes ``[B, 4]``: x0, y0, x1, y1 in pixels (continuous coordinates; may be empty,
    inverted or partly/fully outside the image). Each box keeps its centre, becomes a
    square of side ``max(w, h, min_size)`` capped at ``min(height, width)``, and is then
    slid (not shrunk) to lie inside the image. The side is below ``min_size`` only when
    the image itself is smaller; :func:`lips_crop` then upsamples.
    """
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise TalkgsError(f"boxes must be [B, 4] (x0, y0, x1, y1), got shape {tuple(boxes.shape)}")
    if min_size < 1:
        raise TalkgsError(f"min_size must be at least 1 px, got {min_size}")
    b = boxes.detach().to("cpu", torch.float64)
    if not torch.isfinite(b).all():
        raise TalkgsError("boxes contain NaN or infinite coordinates")
    x0 = torch.minimum(b[:, 0], b[:, 2])
    x1 = torch.maximum(b[:, 0], b[:, 2])
    y0 = torch.minimum(b[:, 1], b[:, 3])
    y1 = torch.maximum(b[:, 1], b[:, 3])
    limit = min(height, width)
    side = torch.maximum(x1 - x0, y1 - y0).clamp_min(min_size).ceil().clamp_max(limit)
    left = torch.round((x0 + x1) / 2 - side / 2)
    top = torch.round((y0 + y1) / 2 - side / 2)
    left = torch.minimum(left.clamp_min(0), width - side)
    top = torch.minimum(top.clamp_min(0), height - side)
    out = torch.stack([left, top, left + side, top + side], dim=-1).to(torch.int64)
    return out.to(boxes.device)


def _resize_square(crop: torch.Tensor, size: int) -> torch.Tensor:
    """``[s, s, C]`` -> ``[size, size, C]`` (bilinear, antialiased when shrinking)."""
    s = crop.shape[0]
    if s == size:
        return crop
    x = crop.permute(2, 0, 1)[None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < s)
    return x[0].permute(1, 2, 0)


def lips_crop(
    images: torch.Tensor, boxes: torch.Tensor, min_size: int = 32, out_size: int | None = None
) -> torch.Tensor:
    """Equal-size square crops ``[B, S, S, C]`` of ``images [B, H, W, C]`` around ``boxes [B, 4]``.

    The boxes go through :func:`safe_square_boxes`, so a degenerate (size-0) or
    out-of-image lips box still yields a valid crop of at least ``min_size`` px — the
    original passed such crops to LPIPS and crashed ("Output size is too small").
    ``S = out_size`` if given (must be >= min_size), else the largest crop side in the
    batch (at least ``min_size``); crops of another size are resized. Differentiable in
    ``images``.
    """
    if images.ndim != 4:
        raise TalkgsError(f"images must be [B, H, W, C], got shape {tuple(images.shape)}")
    B, H, W, _ = images.shape
    if boxes.shape[0] != B:
        raise TalkgsError(f"boxes must have one row per image: {boxes.shape[0]} boxes for {B} images")
    if out_size is not None and out_size < min_size:
        raise TalkgsError(f"lips crop out_size {out_size} is below min_size {min_size}")
    ib = safe_square_boxes(boxes, H, W, min_size).tolist()
    size = out_size if out_size is not None else max(min_size, max(x1 - x0 for x0, _, x1, _ in ib))
    crops = [_resize_square(images[i, y0:y1, x0:x1], size) for i, (x0, y0, x1, y1) in enumerate(ib)]
    return torch.stack(crops)


def fill_boxes(images: torch.Tensor, int_boxes: torch.Tensor, value: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Copy of ``images [B, H, W, C]`` with each integer box ``[B, 4]`` (from
    :func:`safe_square_boxes`) filled with ``value`` (a scalar or a ``[C]`` colour).

    Used to blank the lips region before patch-LPIPS on the rest of the face.
    """
    keep = torch.ones(images.shape[:3], dtype=torch.bool, device=images.device)
    for i, (x0, y0, x1, y1) in enumerate(int_boxes.tolist()):
        keep[i, y0:y1, x0:x1] = False
    fill = torch.as_tensor(value, dtype=images.dtype, device=images.device)
    return torch.where(keep[..., None], images, fill)


def random_patches(
    pred: torch.Tensor,
    gt: torch.Tensor,
    patch_size: tuple[int, int] = (64, 96),
    n: int = 8,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random square patches per image, at the same places in ``pred`` and ``gt``.

    pred, gt ``[B, H, W, C]``. The side S is drawn once per call, uniformly from the
    inclusive range ``patch_size = (lo, hi)`` (capped at ``min(H, W)``), so the patches
    stack; positions are uniform per patch. ``generator`` is a CPU torch.Generator (None:
    the global RNG). Returns ``(pred_patches, gt_patches)``, each ``[B * n, S, S, C]``
    ordered image-major. Differentiable in both inputs.
    """
    _check_images(pred, gt)
    lo, hi = int(patch_size[0]), int(patch_size[1])
    if not 1 <= lo <= hi:
        raise TalkgsError(f"patch_size must be (lo, hi) with 1 <= lo <= hi, got {patch_size}")
    if n < 1:
        raise TalkgsError(f"number of patches must be at least 1, got {n}")
    B, H, W, _ = pred.shape
    s = min(int(torch.randint(lo, hi + 1, (1,), generator=generator)), H, W)
    k = B * n
    top = torch.randint(0, H - s + 1, (k,), generator=generator)
    left = torch.randint(0, W - s + 1, (k,), generator=generator)
    ar = torch.arange(s)
    rows = to_device_async((top[:, None] + ar)[:, :, None], pred.device)  # [k, s, 1]
    cols = to_device_async((left[:, None] + ar)[:, None, :], pred.device)  # [k, 1, s]
    img = torch.arange(B, device=pred.device).repeat_interleave(n)[:, None, None]  # [k, 1, 1]
    return pred[img, rows, cols], gt[img, rows, cols]


def patch_lpips(
    pred: torch.Tensor,
    gt: torch.Tensor,
    patch_size: tuple[int, int] = (64, 96),
    n: int = 8,
    net: str = "alex",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean ST-LPIPS over :func:`random_patches` of ``pred, gt [B, H, W, 3]``.

    Patches must be at least the network's minimum input size (21 px for alex).
    """
    min_side = MIN_INPUT_SIZE.get(net, 1)
    if min(patch_size[0], pred.shape[1], pred.shape[2]) < min_side:
        raise TalkgsError(
            f"patch-LPIPS-{net} needs patches of at least {min_side} px; got patch_size {tuple(patch_size)} "
            f"on {pred.shape[1]}x{pred.shape[2]} images"
        )
    p, g = random_patches(pred, gt, patch_size, n, generator)
    return lpips(p, g, net=net).mean()


def lips_lpips(
    pred: torch.Tensor,
    gt: torch.Tensor,
    boxes: torch.Tensor,
    min_size: int = 32,
    out_size: int | None = None,
    net: str = "alex",
) -> torch.Tensor:
    """Mean ST-LPIPS between :func:`lips_crop` crops of ``pred, gt [B, H, W, 3]``
    around ``boxes [B, 4]``; ``min_size`` is raised to the network's minimum input size."""
    _check_images(pred, gt)
    min_size = max(min_size, MIN_INPUT_SIZE.get(net, 1))
    if out_size is not None:
        out_size = max(out_size, min_size)
    # Same boxes and image size -> both crops come out with the same side.
    p = lips_crop(pred, boxes, min_size, out_size)
    g = lips_crop(gt, boxes, min_size, out_size)
    return lpips(p, g, net=net).mean()



def landmark_loss(points_px: torch.Tensor, target_px: torch.Tensor, weights: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Weighted robust distance between projected model landmarks and tracked ones.

    points_px, target_px ``[B, K, 2]`` pixels; weights ``[K]`` (>= 0). Per point the Euclidean
    distance d goes through a smooth L1 (quadratic below ``beta`` pixels, so tracker jitter of a
    pixel is not chased; linear above, so a missed frame does not dominate); the result is the
    weighted mean over points, averaged over frames, in pixels.
    """
    if points_px.ndim != 3 or points_px.shape[-1] != 2 or points_px.shape != target_px.shape:
        raise TalkgsError(f"landmarks must be [B, K, 2] pixels, got {tuple(points_px.shape)} and {tuple(target_px.shape)}")
    if weights.shape != points_px.shape[1:2]:
        raise TalkgsError(f"landmark weights must be [K] = [{points_px.shape[1]}], got {tuple(weights.shape)}")
    d = (points_px - target_px).norm(dim=-1)  # [B, K]
    h = torch.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)
    w = weights.to(h.dtype)
    return ((h * w).sum(-1) / w.sum().clamp_min(1e-12)).mean()
