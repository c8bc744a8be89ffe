"""View-dependent colour from real spherical harmonics (degree <= 2), shared by both backends.

The SH colour is evaluated here, in torch, and the rasterizer only ever sees per-camera RGB,
so gsplat and the torch backend cannot disagree about it. Constants and sign conventions are
those of 3D Gaussian Splatting (and gsplat): basis functions of the unit direction from the
camera centre to the Gaussian mean, then ``rgb = max(sum_k c_k Y_k(d) + 0.5, 0)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from talkgs.conventions import camera_centres
from talkgs.raster._checks import RenderError

MAX_SH_DEGREE = 2
SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (
    1.0925484305920792,
    -1.0925484305920792,
    0.31539156525252005,
    -1.0925484305920792,
    0.5462742152960396,
)


def num_sh_bases(degree: int) -> int:
    """Number of SH coefficients per colour channel for ``degree``: ``(degree + 1) ** 2``."""
    return (degree + 1) ** 2


def sh_bases(degree: int, dirs: Tensor) -> Tensor:
    """SH basis values ``[..., (degree + 1) ** 2]`` at unit directions ``dirs [..., 3]``."""
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise RenderError(f"sh_degree must be in 0..{MAX_SH_DEGREE}, got {degree}")
    out = [torch.full_like(dirs[..., 0], SH_C0)]
    if degree >= 1:
        x, y, z = dirs.unbind(-1)
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            SH_C2[0] * x * y,
            SH_C2[1] * y * z,
            SH_C2[2] * (2.0 * zz - xx - yy),
            SH_C2[3] * x * z,
            SH_C2[4] * (xx - yy),
        ]
    return torch.stack(out, dim=-1)


def sh_to_rgb(sh_coeffs: Tensor, means: Tensor, viewmats: Tensor, degree: int) -> Tensor:
    """Per-camera colours ``[..., C, N, 3]`` from SH coefficients.

    sh_coeffs [..., N, K, 3] with K >= (degree + 1) ** 2 (extra bands are ignored, which is
    how progressive SH training uses it); means [..., N, 3] world positions; viewmats
    [..., C, 4, 4] world-to-camera. The view direction is camera centre -> mean, normalised.
    """
    k = num_sh_bases(degree)
    if sh_coeffs.shape[-2] < k:
        raise RenderError(
            f"sh_coeffs has {sh_coeffs.shape[-2]} bases per channel, degree {degree} needs {k}"
        )
    campos = camera_centres(viewmats)  # [..., C, 3]
    dirs = means[..., None, :, :] - campos[..., :, None, :]  # [..., C, N, 3]
    dirs = torch.nn.functional.normalize(dirs, dim=-1)
    basis = sh_bases(degree, dirs)  # [..., C, N, k]
    coeffs = sh_coeffs[..., :k, :]  # [..., N, k, 3]
    rgb = torch.einsum("...cnk,...nkd->...cnd", basis, coeffs)
    return torch.clamp_min(rgb + 0.5, 0.0)
