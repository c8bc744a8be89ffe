"""The one public rasterization entry point; backend dispatch and input checking."""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
from torch import Tensor

from talkgs.raster._checks import EPS2D, NEAR_PLANE, RenderError, check_shape
from talkgs.raster._gsplat import gsplat_available, rasterize_gsplat
from talkgs.raster._torch import RasterResult, rasterize_torch
from talkgs.raster.sh import MAX_SH_DEGREE, SH_C0, num_sh_bases, sh_to_rgb

BACKENDS = ("auto", "gsplat", "torch")


@dataclass
class RenderOutput:
    """Result of :func:`rasterize`. ``...`` are the batch dims of ``means``, C the cameras."""

    colors: Tensor  # [..., C, H, W, D] colour (D = 3 for SH), background composited
    alphas: Tensor  # [..., C, H, W, 1] accumulated opacity, 1 - final transmittance
    depths: Tensor | None  # [..., C, H, W, 1] expected camera z (sum w z / alpha), if asked
    extras: Tensor | None  # [..., C, H, W, E] extra channels composited over 0; None unless given
    means2d: Tensor  # [..., C, N, 2] projected means in px; call .retain_grad() before backward
    radii: Tensor  # [..., C, N] int32 screen half-size in px (max of x, y); 0 = not visible
    visible: Tensor  # [..., C, N] bool, radii > 0
    backend: str  # "gsplat" or "torch"


def rasterize(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    *,
    colors: Tensor | None = None,
    sh_coeffs: Tensor | None = None,
    sh_degree: int | None = None,
    extras: Tensor | None = None,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    backgrounds: Tensor | None = None,
    render_depth: bool = False,
    backend: str = "auto",
    absgrad: bool = False,
    tile_size: int = 16,
    near_plane: float = NEAR_PLANE,
) -> RenderOutput:
    """Render B batches of N 3D Gaussians into C cameras each, differentiably.

    Shapes (``...`` = batch dims of ``means``, e.g. ``[B]`` for B frames that each have their
    own deformed Gaussians, or none; N Gaussians; C cameras per batch element):

    - means ``[..., N, 3]`` world positions (metres, talkgs.conventions world frame).
    - quats ``[..., N, 4]`` rotations as (w, x, y, z); need not be normalised.
    - scales ``[..., N, 3]`` standard deviations along the rotated axes, linear (not log).
    - opacities ``[..., N]`` in [0, 1] (not checked; pass sigmoid(logit)).
    - exactly one of: colors ``[..., N, D]`` or ``[..., C, N, D]`` (any D >= 1, RGB or
      features), or sh_coeffs ``[..., N, K, 3]`` with ``sh_degree`` in 0..2 (default: the
      largest degree K allows). SH colour is evaluated here for both backends, with the view
      direction from the camera centre to the mean: ``max(sum_k c_k Y_k + 0.5, 0)`` (3DGS).
    - extras ``[..., N, E]`` optional per-Gaussian channels (e.g. attention values) rendered
      with the same weights as the colour and returned in ``RenderOutput.extras``.
    - viewmats ``[..., C, 4, 4]`` world-to-camera, OpenCV camera axes (+x right, +y down,
      +z forward), exactly talkgs.conventions' ``w2c``. Leading dims broadcast to ``...``.
    - Ks ``[..., C, 3, 3]`` pinhole intrinsics in pixels (broadcast like viewmats).
    - width, height: image size in pixels.
    - backgrounds ``[..., C, D]`` (broadcastable, e.g. ``[D]``) colour behind the Gaussians,
      applied to the colour channels only; None = black.

    Conventions (gsplat 1.5.3, "classic" mode): pixel (row i, column j) has its centre at
    continuous coordinate (j + 0.5, i + 0.5), so a Gaussian whose mean projects (by
    talkgs.conventions.project) to u = j + 0.5 peaks on that pixel. Gaussians whose camera
    depth is below ``near_plane`` (0.01 m) are culled (so anything behind the camera is
    invisible). The 2D covariance gets +0.3 px^2 (low-pass dilation); per pixel
    ``alpha = min(0.999, opacity * exp(-0.5 d^T Sigma2d^-1 d))``, skipped below 1/255;
    compositing is front to back by camera depth of the means and stops before the Gaussian
    that would bring the transmittance to <= 1e-4. Note: gsplat 1.5.3 clamps alpha at 0.999
    (not the 0.99 of the original 3DGS kernels); both backends use 0.999.

    Outputs (``RenderOutput``): ``colors [..., C, H, W, D]`` = sum of weights * colour + (1 -
    alpha) * background; ``alphas [..., C, H, W, 1]`` = 1 - final transmittance, in [0, 1];
    ``depths [..., C, H, W, 1]`` (only with ``render_depth``) = expected camera z of the
    visible surface, i.e. alpha-weighted z divided by alpha (0 where alpha is 0);
    ``extras [..., C, H, W, E]``; and, for densification, ``means2d [..., C, N, 2]`` (the
    projected means as used by the compositing: call ``out.means2d.retain_grad()`` before
    backward and read ``out.means2d.grad``, identical on both backends), ``radii [..., C, N]``
    int32 (screen box half-size in px; 0 = culled) and ``visible = radii > 0``.

    Backends: ``"auto"`` uses gsplat when the tensors are on CUDA and gsplat imports, else
    the pure-torch one (any device, differentiable by autograd, same maths). ``"gsplat"`` or
    ``"torch"`` force one. ``absgrad=True`` (gsplat only) additionally fills
    ``out.means2d.absgrad`` after backward (sum of per-pixel absolute gradients).
    """
    if backend not in BACKENDS:
        raise RenderError(f"backend must be one of {BACKENDS}, got {backend!r}")
    batch, N = _check_gaussians(means, quats, scales, opacities)
    width = _positive_int("width", width)
    height = _positive_int("height", height)
    tile_size = _positive_int("tile_size", tile_size)
    if viewmats.dim() < 3:
        raise RenderError(f"viewmats has shape {list(viewmats.shape)}, expected [..., C, 4, 4]")
    C = viewmats.shape[-3]
    viewmats = _broadcast("viewmats", viewmats, batch + (C, 4, 4))
    Ks = _broadcast("Ks", Ks, batch + (C, 3, 3))
    for name, t in (("viewmats", viewmats), ("Ks", Ks)):
        _check_like(name, t, means)

    chosen = _choose_backend(backend, means)
    if (colors is None) == (sh_coeffs is None):
        raise RenderError("pass exactly one of colors and sh_coeffs")
    if sh_coeffs is not None:
        sh_degree = _check_sh(means, sh_coeffs, sh_degree, batch, N)
    # gsplat evaluates SH in its fused projection kernels: evaluating it in torch for B frames x
    # N Gaussians made a talking-head render of 32 frames 23.7 instead of 17.3 ms
    # (bench/render_profile.py, variant torch_sh, H200).
    sh_in_gsplat = chosen == "gsplat" and sh_coeffs is not None and extras is None
    if sh_in_gsplat:
        feats, n_colour = sh_coeffs, 3
    else:
        feats = _colour_features(means, viewmats, colors, sh_coeffs, sh_degree, batch, N, C)
        n_colour = feats.shape[-1]
    n_extra = 0
    if extras is not None:
        _check_like("extras", extras, means)
        if extras.dim() != len(batch) + 2 or tuple(extras.shape[:-1]) != batch + (N,):
            raise RenderError(
                f"extras has shape {list(extras.shape)}, expected {list(batch) + [N]} + [E]"
            )
        n_extra = extras.shape[-1]
        if feats.dim() == extras.dim() + 1:  # per-camera colour: give extras the camera dim
            extras = torch.broadcast_to(extras[..., None, :, :], batch + (C, N, n_extra))
        feats = torch.cat([feats, extras], dim=-1)
    if backgrounds is not None:
        _check_like("backgrounds", backgrounds, means)
        backgrounds = _broadcast("backgrounds", backgrounds, batch + (C, n_colour))

    if absgrad and chosen != "gsplat":
        raise RenderError("absgrad=True needs the gsplat backend (CUDA), not the torch one")
    args = (means, quats, scales, opacities, feats, viewmats, Ks, width, height)
    kwargs = dict(
        backgrounds=backgrounds,
        render_depth=render_depth,
        tile_size=tile_size,
        near_plane=near_plane,
        eps2d=EPS2D,
    )
    if chosen == "gsplat":
        res: RasterResult = rasterize_gsplat(*args, **kwargs, absgrad=absgrad,
                                             sh_degree=sh_degree if sh_in_gsplat else None)
    else:
        res = rasterize_torch(*args, **kwargs)
    out = res.render
    return RenderOutput(
        colors=out[..., :n_colour],
        alphas=res.alphas,
        depths=out[..., -1:] if render_depth else None,
        extras=out[..., n_colour : n_colour + n_extra] if n_extra else None,
        means2d=res.means2d,
        radii=res.radii,
        visible=res.radii > 0,
        backend=chosen,
    )


def _positive_int(name: str, value) -> int:
    try:
        v = operator.index(value)  # ints, numpy ints; not floats
    except TypeError:
        raise RenderError(f"{name} must be an int, got {value!r}") from None
    if v <= 0:
        raise RenderError(f"{name} must be positive, got {v}")
    return v


def _choose_backend(backend: str, means: Tensor) -> str:
    if backend == "auto":
        return "gsplat" if means.device.type == "cuda" and gsplat_available() else "torch"
    return backend


def _check_gaussians(means, quats, scales, opacities) -> tuple[tuple, int]:
    if means.dim() < 2 or means.shape[-1] != 3:
        raise RenderError(f"means has shape {list(means.shape)}, expected [..., N, 3]")
    if not means.is_floating_point():
        raise RenderError(f"means must be floating point, got {means.dtype}")
    batch = tuple(means.shape[:-2])
    N = means.shape[-2]
    check_shape("quats", quats, batch + (N, 4))
    check_shape("scales", scales, batch + (N, 3))
    check_shape("opacities", opacities, batch + (N,))
    for name, t in (("quats", quats), ("scales", scales), ("opacities", opacities)):
        _check_like(name, t, means)
    return batch, N


def _check_like(name: str, t: Tensor, ref: Tensor) -> None:
    if t.dtype != ref.dtype or t.device != ref.device:
        raise RenderError(
            f"{name} is {t.dtype} on {t.device}, but means is {ref.dtype} on {ref.device}"
        )


def _broadcast(name: str, t: Tensor, shape: tuple) -> Tensor:
    """``t`` expanded to ``shape`` (a view), or RenderError naming the mismatch."""
    try:
        return torch.broadcast_to(t, shape)
    except RuntimeError:
        raise RenderError(
            f"{name} has shape {list(t.shape)}, which does not broadcast to {list(shape)}"
        ) from None


def _check_sh(means, sh_coeffs, sh_degree, batch, N) -> int:
    """The SH degree to evaluate (checked against ``sh_coeffs [..., N, K, 3]``)."""
    _check_like("sh_coeffs", sh_coeffs, means)
    if sh_coeffs.dim() != len(batch) + 3 or tuple(sh_coeffs.shape[:-2]) != batch + (N,) or (
        sh_coeffs.shape[-1] != 3
    ):
        raise RenderError(
            f"sh_coeffs has shape {list(sh_coeffs.shape)}, expected {list(batch)} + [N={N}, K, 3]"
        )
    K = sh_coeffs.shape[-2]
    if K < 1:
        raise RenderError("sh_coeffs has K=0 bases")
    if sh_degree is None:
        sh_degree = math.isqrt(K) - 1
        if num_sh_bases(sh_degree) != K:
            raise RenderError(f"sh_coeffs has K={K} bases, which is not (degree + 1)^2")
    if not 0 <= sh_degree <= MAX_SH_DEGREE:
        raise RenderError(f"sh_degree must be in 0..{MAX_SH_DEGREE}, got {sh_degree}")
    if K < num_sh_bases(sh_degree):
        raise RenderError(f"sh_coeffs has {K} bases per channel, degree {sh_degree} needs {num_sh_bases(sh_degree)}")
    return sh_degree


def _colour_features(means, viewmats, colors, sh_coeffs, sh_degree, batch, N, C) -> Tensor:
    """Colour channels ``[..., N, D]`` or ``[..., C, N, D]`` from colors, or from SH coefficients
    whose ``sh_degree`` was checked (:func:`_check_sh`)."""
    if colors is not None:
        _check_like("colors", colors, means)
        if sh_degree is not None:
            raise RenderError("sh_degree is only meaningful with sh_coeffs")
        ok = colors.dim() >= 1 and colors.shape[-1] >= 1 and (
            tuple(colors.shape[:-1]) in (batch + (N,), batch + (C, N))
        )
        if not ok:
            raise RenderError(
                f"colors has shape {list(colors.shape)}, expected {list(batch)} + [N={N}, D] "
                f"or {list(batch)} + [C={C}, N={N}, D]"
            )
        return colors
    if sh_degree == 0:  # view-independent: skip the per-camera tensor
        return torch.clamp_min(SH_C0 * sh_coeffs[..., 0, :] + 0.5, 0.0)
    return sh_to_rgb(sh_coeffs, means, viewmats, sh_degree)
