"""Tri-plane spatial features: three axis-aligned, multi-resolution 2D feature planes.

A point p in the box ``centre +- bound`` (metres) is mapped to u = (p - centre + bound) / (2 bound)
in [0, 1]^3 and looked up bilinearly on the planes xy, yz and xz at every level. Level l has
``res_l x res_l`` vertices spanning [0, 1] (vertex at both ends, i.e. ``align_corners=True``),
with res_l growing geometrically from ``base_res`` to ``max_res``. The output concatenates
plane-major, then level, then feature: ``[xy_l0, .., xy_lL-1, yz_l0, .., xz_lL-1]``.

This plays the role of the original's three 2D hash grids (whose table was large enough to be
dense, so no hashing is lost). Points outside the box get all-zero features, as in the original.

Each level is one parameter ``[3, F, res, res]`` (the three planes as a batch), sampled with one
``grid_sample`` call per level (``align_corners=True``, bilinear): L calls for all planes, faster
than one flat-table gather of the 4 bilinear corners (:func:`triplane_gather`, kept as the
independent formulation the tests compare against). On CUDA the lookups can also run on
PyTorch's own sampler and, in training, over the points in a fixed shuffled order, so the
backward's scatter into the planes does not serialise on the few cells a warp of neighbouring
Gaussians shares (``NATIVE_SAMPLER_ON_CUDA``, ``SPREAD_MIN_POINTS``; off until measured).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from talkgs.errors import TalkgsError

PLANE_AXES = ((0, 1), (1, 2), (0, 2))  # xy, yz, xz: (column axis, row axis)
# How a training step's lookups run on CUDA. The defaults are what has been measured in training;
# bench/speed.py and bench/train_profile.py --triplane time the alternative (PyTorch's own
# sampler, which computes only the planes' gradient, over points in a spread order).
NATIVE_SAMPLER_ON_CUDA = False  # PyTorch's grid sampler instead of cuDNN's
SPREAD_MIN_POINTS: int | None = None  # from this many points a lookup spreads its order (TriPlaneEncoder._spread_order)
SPREAD_VARIANT = (True, 4096)  # (NATIVE_SAMPLER_ON_CUDA, SPREAD_MIN_POINTS) of the benches' spread variant


def level_resolutions(n_levels: int, base_res: int, max_res: int) -> list[int]:
    """Vertices per side at each level: geometric from ``base_res`` to ``max_res`` (both included)."""
    if n_levels < 1 or base_res < 2 or max_res < base_res:
        raise TalkgsError(
            f"tri-plane needs n_levels >= 1 and 2 <= base_res <= max_res, got {n_levels}, {base_res}, {max_res}"
        )
    if n_levels == 1:
        return [base_res]
    g = (max_res / base_res) ** (1.0 / (n_levels - 1))
    return [int(round(base_res * g**i)) for i in range(n_levels)]


class TriPlaneEncoder(nn.Module):
    """``forward(points [N, 3]) -> [N, 3 * n_levels * n_features_per_level]``."""

    def __init__(
        self,
        bound: float = 0.15,
        centre: tuple[float, float, float] = (0.0, 0.0, 0.0),
        n_levels: int = 12,
        base_res: int = 16,
        max_res: int = 64,
        n_features_per_level: int = 1,
        init_scale: float = 1e-4,
    ) -> None:
        super().__init__()
        if bound <= 0:
            raise TalkgsError(f"tri-plane bound must be > 0 metres, got {bound}")
        self.bound = float(bound)
        self.n_levels = n_levels
        self.n_features = n_features_per_level
        self.resolutions = level_resolutions(n_levels, base_res, max_res)
        self.register_buffer("centre", torch.tensor(centre, dtype=torch.float32), persistent=False)
        self.register_buffer("plane_axes", torch.tensor(PLANE_AXES, dtype=torch.long), persistent=False)
        # Level l: planes xy, yz, xz as a batch [3, F, res_l, res_l]; row index = the plane's second axis.
        self._order_key: tuple | None = None  # (n, device) of the cached spread order
        self._order: tuple[torch.Tensor, torch.Tensor] | None = None
        self.planes = nn.ParameterList(
            nn.Parameter(torch.empty(3, n_features_per_level, r, r).uniform_(-init_scale, init_scale))
            for r in self.resolutions
        )

    @property
    def out_dim(self) -> int:
        return 3 * self.n_levels * self.n_features

    def normalise(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Box coordinates ``u [N, 3]`` in [0, 1] (clamped) and the inside mask ``[N]``."""
        u = (points - self.centre + self.bound) / (2.0 * self.bound)
        inside = ((u >= 0.0) & (u <= 1.0)).all(dim=-1)
        return u.clamp(0.0, 1.0), inside

    def level_planes(self, level: int) -> torch.Tensor:
        """The three planes of one level, ``[3, F, res, res]``."""
        return self.planes[level]

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        if points.ndim != 2 or points.shape[-1] != 3:
            raise TalkgsError(f"tri-plane points must be [N, 3], got {tuple(points.shape)}")
        n = points.shape[0]
        u, inside = self.normalise(points.to(self.planes[0].dtype))
        spread = points.is_cuda and SPREAD_MIN_POINTS is not None and n >= SPREAD_MIN_POINTS \
            and torch.is_grad_enabled() and self.planes[0].requires_grad
        if spread:
            perm, inv = self._spread_order(n, points.device)
            u = u.index_select(0, perm)
        grid = (u[:, self.plane_axes] * 2.0 - 1.0).permute(1, 0, 2)[:, None]  # [3, 1, N, 2]
        native = points.is_cuda and NATIVE_SAMPLER_ON_CUDA
        with torch.backends.cudnn.flags(enabled=False) if native else contextlib.nullcontext():
            per_level = [
                F.grid_sample(p, grid, mode="bilinear", align_corners=True)[:, :, 0, :]  # [3, F, N]
                for p in self.planes
            ]
        feat = torch.stack(per_level, dim=1).permute(3, 0, 1, 2).reshape(n, -1)  # [N, 3 * L * F]
        if spread:
            feat = feat.index_select(0, inv)
        return feat * inside[:, None].to(feat.dtype)

    def _spread_order(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed pseudo-random order of ``n`` points and its inverse, on ``device``: neighbouring
        points (Gaussians made by the same split sit side by side) go to different threads, so
        the gradient scatter into the planes' cells does not serialise on one cell per warp."""
        key = (n, str(device))
        if self._order_key != key:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(n))
            self._order = (perm.to(device), torch.argsort(perm).to(device))
            self._order_key = key
        return self._order


def triplane_gather(enc: TriPlaneEncoder, points: torch.Tensor) -> torch.Tensor:
    """Same output as ``enc(points)`` from explicit bilinear weights on the 4 gathered corners of
    each cell (no ``grid_sample``): the test oracle for the encoder."""
    u, inside = enc.normalise(points.to(enc.planes[0].dtype))
    uv = u[:, enc.plane_axes]  # [N, 3, 2]
    plane = torch.arange(3, device=u.device)[None, :]  # [1, 3]
    out = []
    for level, r in enumerate(enc.resolutions):
        x = uv * (r - 1)  # [N, 3, 2]
        i0 = torch.minimum(x.detach().floor(), torch.tensor(r - 2.0, device=u.device))  # u == 1: last cell
        f = x - i0
        ix, iy = i0[..., 0].long(), i0[..., 1].long()  # [N, 3]
        p = enc.planes[level].permute(0, 2, 3, 1)  # [3, R, R, F]
        v00, v10 = p[plane, iy, ix], p[plane, iy, ix + 1]  # [N, 3, F]
        v01, v11 = p[plane, iy + 1, ix], p[plane, iy + 1, ix + 1]
        fx, fy = f[..., 0:1], f[..., 1:2]
        out.append((1 - fy) * ((1 - fx) * v00 + fx * v10) + fy * ((1 - fx) * v01 + fx * v11))
    feat = torch.stack(out, dim=2).reshape(points.shape[0], -1)  # [N, 3, L, F] flattened
    return feat * inside[:, None].to(feat.dtype)
