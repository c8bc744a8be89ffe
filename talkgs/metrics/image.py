"""Full-reference image metrics: PSNR and SSIM, in pure torch (CPU and CUDA).

Layout: images are channels-last ``[B, H, W, C]`` floats in [0, 1] (C is 3 for RGB), the
layout the renderer and the dataset produce; a single ``[H, W, C]`` image is treated as
``B = 1``. Masks are ``[B, H, W]`` or ``[B, H, W, 1]``, bool or float weights.

There is one SSIM in the project: the training loss (``talkgs.train.losses.dssim``) calls
:func:`ssim_map` from here, so the number logged as a metric and the one optimised agree.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from talkgs.errors import TalkgsError

PSNR_MAX_DB = 100.0  # identical images would give +inf; 100 dB keeps means and logs finite
SSIM_C1 = 0.01**2  # (K1 L)^2 with K1 = 0.01, data range L = 1
SSIM_C2 = 0.03**2  # (K2 L)^2 with K2 = 0.03


def _as_batch(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise TalkgsError(f"{name} must be [B, H, W, C] (or [H, W, C]), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TalkgsError(f"{name} must be a float tensor in [0, 1], got dtype {x.dtype}")
    return x


def _pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = _as_batch(a, "a")
    b = _as_batch(b, "b")
    if a.shape != b.shape:
        raise TalkgsError(f"image shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return a, b


def _mask_weights(mask: torch.Tensor, shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """Mask ``[B, H, W]`` / ``[B, H, W, 1]`` (or unbatched) as float weights ``[B, H, W, 1]``."""
    B, H, W, _ = shape
    m = mask
    if m.ndim == 4 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.ndim == 2:
        m = m[None]
    if tuple(m.shape) != (B, H, W):
        raise TalkgsError(f"mask must be [B, H, W] = {(B, H, W)} (or [B, H, W, 1]), got {tuple(mask.shape)}")
    return m.to(device=like.device, dtype=like.dtype)[..., None]


def psnr(
    a: torch.Tensor,
    b: torch.Tensor,
    mask: torch.Tensor | None = None,
    data_range: float = 1.0,
    max_db: float = PSNR_MAX_DB,
) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, in dB.

    a, b: ``[B, H, W, C]`` in [0, data_range]. mask: optional ``[B, H, W]`` weights; the
    MSE is then the weighted mean over the masked pixels (and all channels).
    Returns ``[B]``. Identical images give ``max_db`` (100 dB) instead of +inf; an image
    whose mask is empty gives NaN (there is nothing to measure).
    """
    a, b = _pair(a, b)
    sq = (a - b).square()
    if mask is None:
        mse = sq.mean(dim=(1, 2, 3))
    else:
        w = _mask_weights(mask, a.shape, a)
        total = w.sum(dim=(1, 2, 3)) * a.shape[-1]
        mse = (sq * w).sum(dim=(1, 2, 3)) / total  # 0/0 -> NaN for an empty mask, as documented
    floor = data_range**2 * 10.0 ** (-max_db / 10.0)
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(floor))


def gaussian_kernel_1d(window: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Normalised 1-D Gaussian ``[window]`` centred on the middle tap."""
    if window < 1 or window % 2 == 0:
        raise TalkgsError(f"SSIM window must be a positive odd number of pixels, got {window}")
    if not sigma > 0:
        raise TalkgsError(f"SSIM sigma must be positive, got {sigma}")
    x = torch.arange(window, dtype=torch.float64) - (window - 1) / 2.0
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return (g / g.sum()).to(device=device, dtype=dtype)


def filter_matrix(kernel: torch.Tensor, size: int, valid: bool) -> torch.Tensor:
    """The 1-D filter ``kernel [n]`` along an axis of ``size`` samples as a banded matrix
    ``M [size, size']``: ``x @ M`` is ``x`` correlated with the kernel, zero-padded to keep the
    size (``valid=False``) or only where the kernel fits (``valid=True``, ``size' = size - n + 1``)."""
    n = kernel.numel()
    out = size - n + 1 if valid else size
    tap = (torch.arange(size, device=kernel.device)[:, None] - torch.arange(out, device=kernel.device)[None, :]
           + (0 if valid else n // 2))  # [size, out]: which tap joins input i to output j
    inside = (tap >= 0) & (tap < n)
    return torch.where(inside, kernel[tap.clamp(0, n - 1)], kernel.new_zeros(()))


def _gaussian_blur(x: torch.Tensor, kernel: torch.Tensor, valid: bool, method: str = "conv") -> torch.Tensor:
    """Separable Gaussian filter of ``x [B, K, H, W]`` (each channel on its own).

    ``valid=False`` zero-pads to keep ``[H, W]`` (the 3DGS / TalkingGaussian convention);
    ``valid=True`` keeps only the positions where the window fits (Wang et al.'s 'valid').
    ``method`` (the same sums, different kernels): ``conv``, two depthwise 2-D convolutions;
    ``rows``, two single-channel 1-D convolutions over every row, then every column (one
    transpose between); ``matmul``, two products with banded matrices (:func:`filter_matrix`);
    ``auto``, ``rows`` on CUDA (fewer, larger kernels there) and ``conv`` elsewhere.
    """
    if method == "auto":
        method = "rows" if x.is_cuda else "conv"
    if method == "matmul":
        h, w = x.shape[-2:]
        x = x @ filter_matrix(kernel, w, valid)
        return filter_matrix(kernel, h, valid).T @ x
    n = kernel.numel()
    pad = 0 if valid else n // 2
    if method == "rows":
        b, k, h, w = x.shape
        taps = kernel.view(1, 1, n)
        y = F.conv1d(x.reshape(-1, 1, w), taps, padding=pad)  # [B K H, 1, W']
        w2 = y.shape[-1]
        y = y.view(b, k, h, w2).transpose(2, 3).reshape(-1, 1, h)
        y = F.conv1d(y, taps, padding=pad)  # [B K W', 1, H']
        return y.view(b, k, w2, -1).transpose(2, 3)
    if method != "conv":
        raise TalkgsError(f"blur method must be auto, conv, rows or matmul, got {method!r}")
    K = x.shape[1]
    kv = kernel.view(1, 1, n, 1).expand(K, 1, n, 1)
    kh = kernel.view(1, 1, 1, n).expand(K, 1, 1, n)
    x = F.conv2d(x, kv, padding=(pad, 0), groups=K)
    return F.conv2d(x, kh, padding=(0, pad), groups=K)


def ssim_map(
    a: torch.Tensor,
    b: torch.Tensor,
    window: int = 11,
    sigma: float = 1.5,
    valid: bool = False,
    data_range: float = 1.0,
    blur: str = "conv",
) -> torch.Tensor:
    """Per-pixel, per-channel SSIM ``[B, H', W', C]`` of ``a, b [B, H, W, C]``.

    Local statistics come from a Gaussian window (``window`` taps, ``sigma`` px) applied
    as two 1-D convolutions. ``valid=False`` (default) zero-pads so ``H', W' = H, W``,
    matching the SSIM that 3DGS and TalkingGaussian train and report with;
    ``valid=True`` crops to ``H - window + 1, W - window + 1`` (no border effects).
    Differentiable in both inputs. ``blur``: how the window is applied (``auto``, ``conv``, ``rows``
    or ``matmul``, :func:`_gaussian_blur`; the same sums).
    """
    a, b = _pair(a, b)
    B, H, W, C = a.shape
    if valid and (H < window or W < window):
        raise TalkgsError(f"SSIM with valid=True needs images of at least {window} px, got {H}x{W}")
    k = gaussian_kernel_1d(window, sigma, a.dtype, a.device)
    x = a.permute(0, 3, 1, 2)
    y = b.permute(0, 3, 1, 2)
    # One filtering pass over the five moment images instead of five passes.
    stats = _gaussian_blur(torch.cat([x, y, x * x, y * y, x * y], dim=1), k, valid, blur)
    mu_x, mu_y, e_xx, e_yy, e_xy = stats.split(C, dim=1)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_x = e_xx - mu_xx
    var_y = e_yy - mu_yy
    cov = e_xy - mu_xy
    c1 = SSIM_C1 * data_range**2
    c2 = SSIM_C2 * data_range**2
    num = (2.0 * mu_xy + c1) * (2.0 * cov + c2)
    den = (mu_xx + mu_yy + c1) * (var_x + var_y + c2)
    return (num / den).permute(0, 2, 3, 1)


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    window: int = 11,
    sigma: float = 1.5,
    mask: torch.Tensor | None = None,
    valid: bool = False,
    data_range: float = 1.0,
) -> torch.Tensor:
    """Mean SSIM per image ``[B]`` of ``a, b [B, H, W, C]`` in [0, data_range].

    Standard constants C1 = (0.01 L)^2, C2 = (0.03 L)^2, Gaussian window 11 / sigma 1.5.
    mask: optional ``[B, H, W]`` weights for the mean of the SSIM map (cropped like the map
    when ``valid=True``); an empty mask gives NaN.
    """
    a, b = _pair(a, b)
    m = ssim_map(a, b, window=window, sigma=sigma, valid=valid, data_range=data_range)
    if mask is None:
        return m.mean(dim=(1, 2, 3))
    w = _mask_weights(mask, a.shape, m)
    if valid:
        r = window // 2
        w = w[:, r : a.shape[1] - r, r : a.shape[2] - r]
    return (m * w).sum(dim=(1, 2, 3)) / (w.sum(dim=(1, 2, 3)) * m.shape[-1])


def mse_to_psnr(mse: float, data_range: float = 1.0, max_db: float = PSNR_MAX_DB) -> float:
    """Scalar PSNR (dB) of a mean squared error, capped at ``max_db`` like :func:`psnr`."""
    if mse <= 0:
        return max_db
    return min(max_db, 10.0 * math.log10(data_range**2 / mse))
