"""gsplat 1.5.3 backend (CUDA). gsplat is imported lazily: CPU machines have neither it nor CUDA."""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from talkgs.raster._checks import EPS2D, FAR_PLANE, NEAR_PLANE, RenderError
from talkgs.raster._torch import RasterResult


@functools.lru_cache(maxsize=1)
def _load_rasterization():
    """gsplat's ``rasterization`` function, or the import error as a string."""
    try:
        from gsplat import rasterization
    except Exception as e:  # noqa: BLE001 - a broken CUDA build raises more than ImportError
        return f"{type(e).__name__}: {e}"
    return rasterization


def gsplat_available() -> bool:
    """True if CUDA is usable and gsplat imports."""
    return torch.cuda.is_available() and callable(_load_rasterization())


def gsplat_unavailable_reason() -> str | None:
    """Why the gsplat backend cannot run here (None if it can)."""
    if not torch.cuda.is_available():
        return "CUDA is not available"
    f = _load_rasterization()
    return None if callable(f) else f"gsplat does not import ({f})"


def rasterize_gsplat(
    means: Tensor,  # [..., N, 3]
    quats: Tensor,  # [..., N, 4]
    scales: Tensor,  # [..., N, 3]
    opacities: Tensor,  # [..., N]
    feats: Tensor,  # [..., N, D] or [..., C, N, D]; SH coefficients [..., N, K, 3] with sh_degree
    viewmats: Tensor,  # [..., C, 4, 4]
    Ks: Tensor,  # [..., C, 3, 3]
    width: int,
    height: int,
    backgrounds: Tensor | None = None,  # [..., C, D_bg], D_bg <= D
    render_depth: bool = False,
    tile_size: int = 16,
    near_plane: float = NEAR_PLANE,
    eps2d: float = EPS2D,
    absgrad: bool = False,
    sh_degree: int | None = None,
) -> RasterResult:
    """gsplat ``rasterization`` with packed=False and classic mode; ``feats`` are colours, or
    SH coefficients evaluated by gsplat up to ``sh_degree`` (view direction camera centre ->
    mean, ``max(sum + 0.5, 0)``: the torch backend's :func:`talkgs.raster.sh.sh_to_rgb`)."""
    reason = gsplat_unavailable_reason()
    if reason is not None:
        raise RenderError(f"backend 'gsplat' cannot run: {reason}")
    if means.device.type != "cuda":
        raise RenderError(f"backend 'gsplat' needs CUDA tensors, got device {means.device}")
    if means.dtype != torch.float32:
        raise RenderError(f"backend 'gsplat' needs float32 tensors, got {means.dtype}")
    rasterization = _load_rasterization()
    n_feat = 3 if sh_degree is not None else feats.shape[-1]
    if backgrounds is not None and backgrounds.shape[-1] < n_feat:
        # gsplat applies a background to every channel; extras composite over 0.
        pad = n_feat - backgrounds.shape[-1]
        backgrounds = torch.cat(
            [backgrounds, backgrounds.new_zeros(backgrounds.shape[:-1] + (pad,))], dim=-1
        )
    render, alphas, meta = rasterization(
        means,
        quats,
        scales,
        opacities,
        feats,
        viewmats,
        Ks,
        width,
        height,
        near_plane=near_plane,
        far_plane=FAR_PLANE,
        eps2d=eps2d,
        sh_degree=sh_degree,
        packed=False,
        tile_size=tile_size,
        backgrounds=backgrounds,
        render_mode="RGB+ED" if render_depth else "RGB",
        absgrad=absgrad,
        rasterize_mode="classic",
    )
    radii = meta["radii"]
    if radii.dim() == meta["means2d"].dim():  # gsplat >= 1.5: per-axis radii [..., C, N, 2]
        radii = radii.amax(-1)
    return RasterResult(
        render=render,
        alphas=alphas,
        means2d=meta["means2d"],
        radii=radii.to(torch.int32),
        depths=meta["depths"],
    )
