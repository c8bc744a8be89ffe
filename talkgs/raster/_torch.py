"""Pure-PyTorch rasterizer with gsplat 1.5.3's semantics ("classic" mode, packed=False).

Differentiable by autograd; runs on any device (it is the CPU path, and it runs on CUDA for
the parity check). The maths, step by step, as in gsplat:

1. Projection (EWA): camera-frame covariance ``Rc R S S R^T Rc^T``, the perspective Jacobian
   evaluated at the mean with its x/y clamped to 1.3x the field of view (so Gaussians far
   outside the image do not explode), 2D covariance ``J cov J^T + eps2d I`` (the low-pass
   filter), conic = its inverse. Culled (radius 0): depth outside [near, far], singular 2D
   covariance, opacity < 1/255, or a screen box fully outside the image.
2. Screen box: half-size ``ceil(e * sqrt(cov2d_xx))`` by ``ceil(e * sqrt(cov2d_yy))`` with
   ``e = min(3.33, sqrt(2 log(255 opacity)))``, i.e. the region where alpha can reach 1/255.
3. Tiles of ``tile_size`` px; each Gaussian is listed in every tile its box touches, and each
   tile's list is sorted front to back by camera depth of the mean.
4. Per pixel (centre at +0.5): ``sigma = 0.5 d^T conic d``, ``alpha = min(0.999, o exp(-sigma))``,
   skipped where ``alpha < 1/255``; front-to-back ``T_k = prod_{j<k} (1 - alpha_j)``, and the
   pixel stops *before* the Gaussian that would take T to <= 1e-4. Colour = sum alpha_k T_k c_k
   + T_final * background; alpha = 1 - T_final.

Instead of gsplat's per-pixel loop, each tile's Gaussians form one row of a padded tensor
``[tiles, K, pixels]`` and the transmittance is ``exp`` of an exclusive cumulative sum of
``log(1 - alpha)`` along K. Tiles are grouped by list length so that padding stays small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from talkgs.raster._checks import (
    ALPHA_MAX,
    ALPHA_MIN,
    EPS2D,
    FAR_PLANE,
    NEAR_PLANE,
    RADIUS_SIGMAS,
    T_MIN,
)

# Work per group of tiles, in (tile, Gaussian, pixel) elements: bounds peak memory.
_GROUP_ELEMENTS = 1 << 22
# Above this many elements in total, groups are recomputed in backward instead of keeping
# their intermediates (trades ~1.3x time for memory that stays ~one group).
_CHECKPOINT_ELEMENTS = 1 << 25
# A group holds tiles whose list lengths are within this factor (bounds padding waste)...
_GROUP_LENGTH_RATIO = 0.5
# ...unless the group is this small anyway: then fewer, padded groups beat more op calls.
_SMALL_GROUP_ELEMENTS = 1 << 18


@dataclass
class Projection:
    """Screen-space Gaussians for every (batch, camera) pair."""

    means2d: Tensor  # [..., C, N, 2] pixels, continuous (centres at +0.5)
    conics: Tensor  # [..., C, N, 3] (a, b, c) of the inverse 2D covariance [[a, b], [b, c]]
    depths: Tensor  # [..., C, N] camera z of the means
    radii: Tensor  # [..., C, N, 2] int32 box half-sizes (x, y) in px; 0 = culled


@dataclass
class RasterResult:
    """What a backend returns; :func:`talkgs.render.rasterize` splits the channels."""

    render: Tensor  # [..., C, H, W, D] (+1 expected-depth channel when asked)
    alphas: Tensor  # [..., C, H, W, 1]
    means2d: Tensor  # [..., C, N, 2], the very tensor the compositing consumed
    radii: Tensor  # [..., C, N] int32, max over x/y; 0 = not visible
    depths: Tensor  # [..., C, N]


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices ``[..., 3, 3]`` from quaternions ``[..., 4]`` (w, x, y, z), any norm."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(quats.shape[:-1] + (3, 3))


def project_gaussians(
    means: Tensor,  # [..., N, 3]
    quats: Tensor,  # [..., N, 4]
    scales: Tensor,  # [..., N, 3]
    opacities: Tensor,  # [..., N]
    viewmats: Tensor,  # [..., C, 4, 4]
    Ks: Tensor,  # [..., C, 3, 3]
    width: int,
    height: int,
    near_plane: float = NEAR_PLANE,
    far_plane: float = FAR_PLANE,
    eps2d: float = EPS2D,
) -> Projection:
    """EWA projection of 3D Gaussians into every camera (gsplat's ``fully_fused_projection``)."""
    M = quat_to_rotmat(quats) * scales[..., None, :]  # [..., N, 3, 3] = R S
    Rc = viewmats[..., :3, :3]  # [..., C, 3, 3]
    tc = viewmats[..., :3, 3]  # [..., C, 3]
    mean_c = torch.einsum("...cij,...nj->...cni", Rc, means) + tc[..., :, None, :]
    Mc = torch.einsum("...cij,...njk->...cnik", Rc, M)  # [..., C, N, 3, 3]
    x, y, z = mean_c.unbind(-1)  # [..., C, N]
    in_range = (z >= near_plane) & (z <= far_plane)
    # Culled Gaussians still flow through the maths below; a safe depth keeps their (unused)
    # values finite, because 0 * inf in backward would poison the gradients with NaN.
    z = torch.where(in_range, z, torch.ones_like(z))
    fx, fy = Ks[..., 0, 0, None], Ks[..., 1, 1, None]  # [..., C, 1]
    cx, cy = Ks[..., 0, 2, None], Ks[..., 1, 2, None]
    rz = 1.0 / z
    u, v = x * rz, y * rz
    # Jacobian evaluated with the direction clamped to 1.3x the half field of view (gsplat).
    lim_x_pos = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lim_x_neg = cx / fx + 0.3 * (0.5 * width / fx)
    lim_y_pos = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lim_y_neg = cy / fy + 0.3 * (0.5 * height / fy)
    tx = z * torch.minimum(torch.maximum(u, -lim_x_neg), lim_x_pos)
    ty = z * torch.minimum(torch.maximum(v, -lim_y_neg), lim_y_pos)
    rz2 = rz * rz
    # Rows of A = J Rc R S, so that the 2D covariance is A A^T.
    a0 = (fx * rz)[..., None] * Mc[..., 0, :] - (fx * tx * rz2)[..., None] * Mc[..., 2, :]
    a1 = (fy * rz)[..., None] * Mc[..., 1, :] - (fy * ty * rz2)[..., None] * Mc[..., 2, :]
    cov_xx = (a0 * a0).sum(-1) + eps2d
    cov_xy = (a0 * a1).sum(-1)
    cov_yy = (a1 * a1).sum(-1) + eps2d
    det = cov_xx * cov_yy - cov_xy * cov_xy
    valid = in_range & (det > 0)
    det = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([cov_yy / det, -cov_xy / det, cov_xx / det], dim=-1)
    means2d = torch.stack([fx * u + cx, fy * v + cy], dim=-1)

    with torch.no_grad():
        opac = torch.broadcast_to(opacities[..., None, :], z.shape)
        valid = valid & (opac >= ALPHA_MIN)  # not in place: autograd saved the old mask
        # Opacity-aware box: beyond it alpha < 1/255, so the Gaussian is skipped there anyway.
        extend = torch.sqrt(2.0 * torch.log(opac.clamp_min(ALPHA_MIN) / ALPHA_MIN))
        extend = extend.clamp_max(RADIUS_SIGMAS)
        rx = torch.ceil(extend * torch.sqrt(cov_xx.clamp_min(0)))
        ry = torch.ceil(extend * torch.sqrt(cov_yy.clamp_min(0)))
        valid = valid & ((rx > 0) | (ry > 0))
        mx, my = means2d.unbind(-1)
        valid = valid & (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        radii = torch.stack([rx, ry], dim=-1) * valid[..., None]
        radii = radii.to(torch.int32)
    return Projection(means2d=means2d, conics=conics, depths=mean_c[..., 2], radii=radii)


def _tile_lists(
    means2d: Tensor,  # [M, 2] flat over (image, Gaussian), no grad needed
    radii: Tensor,  # [M, 2] int32
    depths: Tensor,  # [M]
    n_per_image: int,
    tile_size: int,
    tiles_x: int,
    tiles_y: int,
) -> tuple[Tensor, Tensor]:
    """(Gaussian, tile) intersections sorted by tile then depth (gsplat's ``isect_tiles``).

    Returns ``gauss [P]`` (flat index into M) and ``tile_key [P]`` = image * n_tiles + tile.
    """
    ids = torch.nonzero((radii > 0).all(-1)).squeeze(1)
    # Depth order first; the stable sort by tile below keeps it within each tile (ties keep
    # the Gaussian index order, as gsplat's radix sort does).
    ids = ids[torch.sort(depths[ids], stable=True).indices]
    m = means2d[ids]
    r = radii[ids].to(m.dtype)
    ts = float(tile_size)
    x0 = torch.floor(m[:, 0] / ts - r[:, 0] / ts).clamp(0, tiles_x).long()
    y0 = torch.floor(m[:, 1] / ts - r[:, 1] / ts).clamp(0, tiles_y).long()
    x1 = torch.ceil(m[:, 0] / ts + r[:, 0] / ts).clamp(0, tiles_x).long()
    y1 = torch.ceil(m[:, 1] / ts + r[:, 1] / ts).clamp(0, tiles_y).long()
    counts = (x1 - x0) * (y1 - y0)
    rep = torch.repeat_interleave(torch.arange(ids.numel(), device=ids.device), counts)
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(rep.numel(), device=ids.device) - first[rep]
    span = (x1 - x0)[rep]
    tile_y = y0[rep] + torch.div(local, span, rounding_mode="floor")
    tile_x = x0[rep] + local % span
    key = (ids[rep] // n_per_image) * (tiles_x * tiles_y) + tile_y * tiles_x + tile_x
    order = torch.sort(key, stable=True).indices
    return ids[rep][order], key[order]


def _group_tiles(lengths: list[int], pixels: int) -> list[list[int]]:
    """Indices of non-empty tiles in groups of similar list length, longest first."""
    order = sorted(range(len(lengths)), key=lambda s: -lengths[s])
    groups: list[list[int]] = []
    cur: list[int] = []
    k_max = 0
    for s in order:
        n = lengths[s]
        size = (len(cur) + 1) * k_max * pixels
        uneven = n < _GROUP_LENGTH_RATIO * k_max and size > _SMALL_GROUP_ELEMENTS
        if cur and (uneven or size > _GROUP_ELEMENTS):
            groups.append(cur)
            cur = []
        if not cur:
            k_max = n
        cur.append(s)
    if cur:
        groups.append(cur)
    return groups


def _composite_group(
    means2d: Tensor,  # [S, K, 2] relative to each tile's top-left corner
    conics: Tensor,  # [S, K, 3]
    opacities: Tensor,  # [S, K], 0 on padding
    feats: Tensor,  # [S, K, D]
    tile_size: int,
) -> tuple[Tensor, Tensor]:
    """Front-to-back compositing of S tiles, each with K depth-sorted Gaussians.

    Returns the accumulated features ``[S, P, D]`` and alpha ``[S, P]``, P = tile_size^2
    pixels in row-major order.
    """
    S, K = opacities.shape
    centres = torch.arange(tile_size, dtype=means2d.dtype, device=means2d.device) + 0.5
    dx = means2d[..., 0, None] - centres  # [S, K, ts] along a row (pixel columns)
    dy = means2d[..., 1, None] - centres  # [S, K, ts] along a column (pixel rows)
    a, b, c = conics.unbind(-1)
    # log(alpha) before clamping = log(o) - 0.5 (a dx^2 + c dy^2) - b dx dy, assembled from
    # per-row and per-column terms so that only two ops touch the [S, K, ts, ts] tensor.
    # Padding (opacity 0) gets a huge negative log instead of log(0), keeping backward finite.
    has = opacities > 0
    log_o = torch.where(has, torch.log(torch.where(has, opacities, 1.0)), -1e4)
    row = log_o[..., None] - 0.5 * c[..., None] * dy * dy  # [S, K, ts]
    col = -0.5 * a[..., None] * dx * dx
    log_alpha = torch.addcmul(
        row[..., :, None] + col[..., None, :], (-b[..., None] * dy)[..., :, None], dx[..., None, :]
    )  # [S, K, ts, ts]
    # sigma >= 0 holds for a positive-definite conic (gsplat also tests it, which can only
    # matter through rounding at the exact mean), so it is not re-checked here.
    alpha = torch.clamp_max(torch.exp(log_alpha), ALPHA_MAX).reshape(S, K, -1)
    alpha = torch.where(alpha >= ALPHA_MIN, alpha, 0.0)
    log_1m = torch.log1p(-alpha)
    log_t_after = torch.cumsum(log_1m, dim=1)  # log transmittance after each Gaussian
    trans = torch.exp(log_t_after - log_1m)  # exclusive: transmittance in front of it
    # A pixel stops before the Gaussian that would take T to <= T_MIN; T only decreases,
    # so this mask is exactly "every Gaussian before the stop".
    weights = torch.where(log_t_after > math.log(T_MIN), alpha * trans, 0.0)  # [S, K, P]
    acc_alpha = weights.sum(1)
    acc_feats = torch.bmm(weights.transpose(1, 2), feats)
    return acc_feats, acc_alpha


def _composite(
    means2d: Tensor,  # [I, N, 2]
    conics: Tensor,  # [I, N, 3]
    opacities: Tensor,  # [I, N]
    feats: Tensor,  # [I, N, D]
    depths: Tensor,  # [I, N]
    radii: Tensor,  # [I, N, 2] int32
    width: int,
    height: int,
    tile_size: int,
) -> tuple[Tensor, Tensor]:
    """Tile-based compositing over I images: ``(render [I, H, W, D], alpha [I, H, W, 1])``,
    without background."""
    I, N, D = feats.shape
    dtype, device = feats.dtype, feats.device
    tiles_x = math.ceil(width / tile_size)
    tiles_y = math.ceil(height / tile_size)
    n_tiles = I * tiles_x * tiles_y
    pix = tile_size * tile_size
    flat_m2 = means2d.reshape(I * N, 2)
    with torch.no_grad():
        gauss, key = _tile_lists(
            flat_m2.detach(), radii.reshape(I * N, 2), depths.detach().reshape(I * N),
            N, tile_size, tiles_x, tiles_y,
        )  # fmt: skip
        tile_keys, lengths = torch.unique_consecutive(key, return_counts=True)
        starts = torch.cumsum(lengths, 0) - lengths
        lengths_list = lengths.tolist()
        groups = _group_tiles(lengths_list, pix)
        total = sum(len(g) * lengths_list[g[0]] for g in groups) * pix
    flat_conics = conics.reshape(I * N, 3)
    flat_opac = opacities.reshape(I * N)
    flat_feats = feats.reshape(I * N, D)
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (means2d, conics, opacities, feats)
    )
    use_ckpt = needs_grad and total > _CHECKPOINT_ELEMENTS and len(groups) > 1

    out_keys, out_feats, out_alpha = [], [], []
    for g in groups:
        with torch.no_grad():
            g_idx = torch.as_tensor(g, device=device)
            k_max = lengths_list[g[0]]
            ar = torch.arange(k_max, device=device)
            valid = ar[None, :] < lengths[g_idx][:, None]  # [S, K]
            pos = torch.where(valid, starts[g_idx][:, None] + ar[None, :], 0)
            gid = gauss[pos]  # [S, K]
            tk = tile_keys[g_idx] % (tiles_x * tiles_y)
            origin = torch.stack([tk % tiles_x, tk // tiles_x], -1).to(dtype) * tile_size
        m2 = flat_m2[gid] - origin[:, None, :]
        op = torch.where(valid, flat_opac[gid], torch.zeros((), dtype=dtype, device=device))
        args = (m2, flat_conics[gid], op, flat_feats[gid])
        if use_ckpt:
            f, a = checkpoint(_composite_group, *args, tile_size, use_reentrant=False)
        else:
            f, a = _composite_group(*args, tile_size)
        out_keys.append(tile_keys[g_idx])
        out_feats.append(f)
        out_alpha.append(a)

    grid_feats = torch.zeros((n_tiles, pix, D), dtype=dtype, device=device)
    grid_alpha = torch.zeros((n_tiles, pix), dtype=dtype, device=device)
    if out_keys:
        keys = torch.cat(out_keys)
        grid_feats = grid_feats.index_copy(0, keys, torch.cat(out_feats))
        grid_alpha = grid_alpha.index_copy(0, keys, torch.cat(out_alpha))
    grid = torch.cat([grid_feats, grid_alpha[..., None]], dim=-1)
    grid = grid.reshape(I, tiles_y, tiles_x, tile_size, tile_size, D + 1)
    img = grid.permute(0, 1, 3, 2, 4, 5).reshape(I, tiles_y * tile_size, tiles_x * tile_size, D + 1)
    img = img[:, :height, :width]
    return img[..., :D], img[..., D:]


def _finish(
    render: Tensor,  # [I, H, W, D] without background
    alpha: Tensor,  # [I, H, W, 1]
    backgrounds: Tensor | None,  # [I, D_bg], D_bg <= D (leading channels)
    render_depth: bool,
) -> Tensor:
    """Background over the leading channels, then expected depth = accumulated z / alpha."""
    if backgrounds is not None:
        d_bg = backgrounds.shape[-1]
        bg = (1.0 - alpha) * backgrounds[:, None, None, :]
        render = torch.cat([render[..., :d_bg] + bg, render[..., d_bg:]], dim=-1)
    if render_depth:
        render = torch.cat([render[..., :-1], render[..., -1:] / alpha.clamp(min=1e-10)], dim=-1)
    return render


def _prepare(
    means, quats, scales, opacities, feats, viewmats, Ks, width, height, render_depth,
    near_plane, eps2d,
):  # fmt: skip
    """Projection plus everything flattened to I = prod(batch) * C images."""
    proj = project_gaussians(
        means, quats, scales, opacities, viewmats, Ks, width, height, near_plane, eps2d=eps2d
    )
    batch = tuple(means.shape[:-2])
    C, N = viewmats.shape[-3], means.shape[-2]
    I = math.prod(batch) * C
    feats_c = torch.broadcast_to(
        feats if feats.dim() == len(batch) + 3 else feats[..., None, :, :],
        batch + (C, N, feats.shape[-1]),
    )
    if render_depth:
        feats_c = torch.cat([feats_c, proj.depths[..., None]], dim=-1)
    opac = torch.broadcast_to(opacities[..., None, :], batch + (C, N))
    flat = dict(
        means2d=proj.means2d.reshape(I, N, 2),
        conics=proj.conics.reshape(I, N, 3),
        opacities=opac.reshape(I, N),
        feats=feats_c.reshape(I, N, feats_c.shape[-1]),
        depths=proj.depths.reshape(I, N),
        radii=proj.radii.reshape(I, N, 2),
    )
    return proj, batch, C, I, flat


def rasterize_torch(
    means: Tensor,  # [..., N, 3]
    quats: Tensor,  # [..., N, 4]
    scales: Tensor,  # [..., N, 3]
    opacities: Tensor,  # [..., N]
    feats: Tensor,  # [..., N, D] or [..., C, N, D]
    viewmats: Tensor,  # [..., C, 4, 4]
    Ks: Tensor,  # [..., C, 3, 3]
    width: int,
    height: int,
    backgrounds: Tensor | None = None,  # [..., C, D_bg], applied to the first D_bg channels
    render_depth: bool = False,
    tile_size: int = 16,
    near_plane: float = NEAR_PLANE,
    eps2d: float = EPS2D,
) -> RasterResult:
    """Tile-based torch rasterization; see the module docstring for the maths."""
    proj, batch, C, I, flat = _prepare(
        means, quats, scales, opacities, feats, viewmats, Ks, width, height, render_depth,
        near_plane, eps2d,
    )  # fmt: skip
    render, alpha = _composite(**flat, width=width, height=height, tile_size=tile_size)
    bg = None if backgrounds is None else backgrounds.reshape(I, -1)
    render = _finish(render, alpha, bg, render_depth)
    return RasterResult(
        render=render.reshape(batch + (C, height, width, -1)),
        alphas=alpha.reshape(batch + (C, height, width, 1)),
        means2d=proj.means2d,
        radii=proj.radii.amax(-1),
        depths=proj.depths,
    )


def _rasterize_bruteforce(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    feats: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    backgrounds: Tensor | None = None,
    render_depth: bool = False,
    tile_size: int = 16,
    near_plane: float = NEAR_PLANE,
    eps2d: float = EPS2D,
) -> RasterResult:
    """Reference: every visible Gaussian against every pixel, one Gaussian at a time in depth
    order, with gsplat's per-pixel loop written out (running product for T, explicit stop).

    Same arguments and result as :func:`rasterize_torch` (``tile_size`` is ignored). Slow:
    for tests on small scenes only.
    """
    proj, batch, C, I, flat = _prepare(
        means, quats, scales, opacities, feats, viewmats, Ks, width, height, render_depth,
        near_plane, eps2d,
    )  # fmt: skip
    m2, con, opac, fts = flat["means2d"], flat["conics"], flat["opacities"], flat["feats"]
    visible = (flat["radii"] > 0).all(-1)  # [I, N]
    dtype, device = fts.dtype, fts.device
    rows = torch.arange(height, dtype=dtype, device=device) + 0.5
    cols = torch.arange(width, dtype=dtype, device=device) + 0.5
    py, px = torch.meshgrid(rows, cols, indexing="ij")
    px, py = px.reshape(-1), py.reshape(-1)  # [HW]
    order = torch.sort(flat["depths"].detach(), dim=-1, stable=True).indices  # [I, N]
    img_ids = torch.arange(I, device=device)
    T = torch.ones((I, px.numel()), dtype=dtype, device=device)
    acc = torch.zeros((I, px.numel(), fts.shape[-1]), dtype=dtype, device=device)
    done = torch.zeros((I, px.numel()), dtype=torch.bool, device=device)
    for k in range(order.shape[1]):
        g = order[:, k]
        mu, q, o = m2[img_ids, g], con[img_ids, g], opac[img_ids, g]  # [I, 2], [I, 3], [I]
        dx = mu[:, 0, None] - px
        dy = mu[:, 1, None] - py
        sigma = 0.5 * (q[:, 0, None] * dx * dx + q[:, 2, None] * dy * dy) + q[:, 1, None] * dx * dy
        alpha = torch.clamp_max(o[:, None] * torch.exp(-sigma), ALPHA_MAX)
        use = visible[img_ids, g][:, None] & (sigma >= 0) & (alpha >= ALPHA_MIN) & ~done
        next_T = T * (1.0 - alpha)
        stop = use & (next_T <= T_MIN)
        done = done | stop
        use = use & ~stop
        w = torch.where(use, alpha * T, torch.zeros_like(alpha))
        acc = acc + w[..., None] * fts[img_ids, g][:, None, :]
        T = torch.where(use, next_T, T)
    render = acc.reshape(I, height, width, -1)
    alpha_img = (1.0 - T).reshape(I, height, width, 1)
    bg = None if backgrounds is None else backgrounds.reshape(I, -1)
    render = _finish(render, alpha_img, bg, render_depth)
    return RasterResult(
        render=render.reshape(batch + (C, height, width, -1)),
        alphas=alpha_img.reshape(batch + (C, height, width, 1)),
        means2d=proj.means2d,
        radii=proj.radii.amax(-1),
        depths=proj.depths,
    )
