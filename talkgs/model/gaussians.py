"""Canonical 3D Gaussians of one branch: parameters, activations, initialisation, optimisers.

Parameters live in one ``nn.ParameterDict`` (gsplat style) so that the densification strategy
(`talkgs.train.strategy`) can replace rows of every tensor and of its Adam state together:

===========  ================  ===============================================================
key          shape             stored as (activation)
===========  ================  ===============================================================
means        [N, 3]            metres, head frame (identity)
quats        [N, 4]            raw quaternion w, x, y, z (normalised on use)
scales       [N, 3]            log of the linear std-dev in metres (``exp``; see below)
opacities    [N]               logit (``sigmoid``)
sh0          [N, 1, 3]         SH DC coefficient (colour = ``SH_C0 * sh0 + 0.5``)
shN          [N, K - 1, 3]     higher SH bands, K = (sh_degree + 1) ** 2
===========  ================  ===============================================================

Scale activation is ``exp`` (gsplat's choice). The original used softplus, but at the scales
of a head (~1e-3 m, raw value ~ -7) softplus(x) and exp(x) agree to 0.1 %, and with ``exp`` the
deformation's additive raw-scale delta is a pure multiplicative factor at every size, and a split's
"divide by 1.6" is a constant subtraction.

Initialisers return points (``[N, 3]`` metres); :func:`init_from_points` turns points into
parameters. The face branch starts on the MediaPipe canonical face surface plus a shell over the
rest of the head, the mouth branch in a box behind the inner lips (see :func:`init_face_surface`,
:func:`init_mouth_cavity`); :func:`init_random_cube` is the original's initialisation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from talkgs import landmarks
from talkgs.errors import TalkgsError

GaussianParams = nn.ParameterDict
"""A branch's canonical Gaussians: ParameterDict with the keys in the module docstring."""

SH_C0 = 0.28209479177387814  # Y_0^0; colour = SH_C0 * sh0 + 0.5 (3DGS convention)

INNER_LIP_IDX = landmarks.LIPS_INNER_IDX  # bounds the mouth interior


# ----------------------------------------------------------------------------- activations
def scale_activation(raw: torch.Tensor) -> torch.Tensor:
    """Linear scales (metres) from stored log-scales, any shape."""
    return torch.exp(raw)


def scale_inverse(scales: torch.Tensor) -> torch.Tensor:
    """Stored log-scales from linear scales (metres, > 0)."""
    return torch.log(scales)


def opacity_activation(raw: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(raw)


def opacity_inverse(opacities: torch.Tensor) -> torch.Tensor:
    return torch.logit(opacities.clamp(1e-6, 1.0 - 1e-6))


def rgb_to_sh0(rgb: torch.Tensor) -> torch.Tensor:
    """SH DC coefficients ``[..., 3]`` that reproduce colour ``rgb [..., 3]`` in [0, 1]."""
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: torch.Tensor) -> torch.Tensor:
    return sh0 * SH_C0 + 0.5


def num_sh_bases(sh_degree: int) -> int:
    return (sh_degree + 1) ** 2


def sh_degree_of(params: GaussianParams) -> int:
    """SH degree stored in ``params`` (from the number of ``shN`` rows)."""
    k = params["shN"].shape[1] + 1
    d = int(round(math.sqrt(k))) - 1
    if (d + 1) ** 2 != k:
        raise TalkgsError(f"shN has {k - 1} bands, not (d+1)^2-1 for any SH degree d")
    return d


def num_gaussians(params: GaussianParams) -> int:
    return int(params["means"].shape[0])


def activate(
    params: GaussianParams,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Renderable canonical Gaussians.

    Returns ``means [N, 3]`` (m), ``quats [N, 4]`` (unit), ``scales [N, 3]`` (m, linear),
    ``opacities [N]`` in (0, 1), ``sh [N, K, 3]``.
    """
    means = params["means"]
    quats = F.normalize(params["quats"], dim=-1)
    scales = scale_activation(params["scales"])
    opacities = opacity_activation(params["opacities"])
    sh = torch.cat([params["sh0"], params["shN"]], dim=1)
    return means, quats, scales, opacities, sh


# ----------------------------------------------------------------------------- construction
def knn_scale(points: torch.Tensor, k: int = 3, chunk: int = 2048) -> torch.Tensor:
    """Per-point isotropic scale ``[N]``: RMS distance to the ``k`` nearest other points (3DGS init).

    Chunked brute force (``[chunk, N]`` distances at a time), fine up to ~1e5 points on CPU.
    """
    n = points.shape[0]
    if n < 2:
        return torch.full((n,), 1e-3, dtype=points.dtype, device=points.device)
    k = min(k, n - 1)
    out = []
    for s in range(0, n, chunk):
        d2 = torch.cdist(points[s : s + chunk], points).square()
        # The point itself is at distance 0: take k + 1 smallest and drop the first.
        nn_d2 = d2.topk(k + 1, dim=1, largest=False).values[:, 1:]
        out.append(nn_d2.mean(dim=1).sqrt())
    return torch.cat(out).clamp_min(1e-7)


def init_from_points(
    points: torch.Tensor,
    colors: torch.Tensor | None = None,
    init_opacity: float = 0.1,
    init_scale: float | None = None,
    sh_degree: int = 2,
    scale_cap: float = 0.01,
) -> GaussianParams:
    """Gaussians centred on ``points [N, 3]`` (metres).

    ``colors [N, 3]`` in [0, 1] (None: mid grey). ``init_scale`` in metres; None uses the RMS
    distance to the 3 nearest neighbours, capped at ``scale_cap`` metres so isolated points do not
    start as huge blobs. Rotations start at identity, higher SH bands at zero.
    """
    if points.ndim != 2 or points.shape[1] != 3:
        raise TalkgsError(f"init points must be [N, 3], got {tuple(points.shape)}")
    if not 0.0 < init_opacity < 1.0:
        raise TalkgsError(f"init_opacity must be in (0, 1), got {init_opacity}")
    n = points.shape[0]
    dev, dt = points.device, torch.float32
    points = points.to(dt)
    if init_scale is None:
        s = knn_scale(points).clamp_max(scale_cap)
    else:
        s = torch.full((n,), float(init_scale), dtype=dt, device=dev)
    if colors is None:
        colors = torch.full((n, 3), 0.5, dtype=dt, device=dev)
    elif colors.shape != (n, 3):
        raise TalkgsError(f"init colors must be [{n}, 3], got {tuple(colors.shape)}")
    quats = torch.zeros(n, 4, dtype=dt, device=dev)
    quats[:, 0] = 1.0
    return nn.ParameterDict(
        {
            "means": nn.Parameter(points.clone()),
            "quats": nn.Parameter(quats),
            "scales": nn.Parameter(scale_inverse(s)[:, None].repeat(1, 3)),
            "opacities": nn.Parameter(torch.full((n,), float(opacity_inverse(torch.tensor(init_opacity))), dtype=dt, device=dev)),
            "sh0": nn.Parameter(rgb_to_sh0(colors.to(dt))[:, None, :].clone()),
            "shN": nn.Parameter(torch.zeros(n, num_sh_bases(sh_degree) - 1, 3, dtype=dt, device=dev)),
        }
    )


# ----------------------------------------------------------------------------- init points
def load_canonical_face(device: torch.device | str = "cpu") -> torch.Tensor:
    """MediaPipe canonical face vertices ``[468, 3]`` in metres (head frame), float32
    (:func:`talkgs.landmarks.load_canonical_face` as a tensor)."""
    return torch.as_tensor(landmarks.load_canonical_face(), dtype=torch.float32, device=device)


def _check_canonical(canonical: torch.Tensor) -> None:
    if canonical.ndim != 2 or canonical.shape[1] != 3 or canonical.shape[0] < 468:
        raise TalkgsError(f"canonical face must be [468, 3] metres, got {tuple(canonical.shape)}")


def init_random_cube(
    n: int,
    bound: float = 0.1,
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0),
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``n`` points uniform in the cube ``centre +- bound`` metres ``[n, 3]`` (the original's init)."""
    u = torch.rand(n, 3, generator=generator)  # CPU generator, like the other initialisers
    return ((u * 2.0 - 1.0) * bound + torch.tensor(centre)).to(device)


def _surface_samples(
    vertices: torch.Tensor, n: int, k: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Points on the small triangles (vertex, 2 of its ``k`` nearest neighbours) ``[n, 3]`` and
    those triangles' unit normals ``[n, 3]``: an approximate mesh surface without the topology."""
    dev = vertices.device
    d2 = torch.cdist(vertices, vertices)
    nbr = d2.topk(k + 1, dim=1, largest=False).indices[:, 1:]  # [V, k]
    v = torch.randint(0, vertices.shape[0], (n,), generator=generator, device=dev)
    pick = torch.rand(n, k, generator=generator, device=dev).argsort(dim=1)[:, :2]
    j = nbr[v].gather(1, pick)  # [n, 2]
    a, b, c = vertices[v], vertices[j[:, 0]], vertices[j[:, 1]]
    # Uniform barycentric weights on the triangle (square-root trick).
    r1 = torch.rand(n, 1, generator=generator, device=dev).sqrt()
    r2 = torch.rand(n, 1, generator=generator, device=dev)
    p = (1 - r1) * a + r1 * (1 - r2) * b + r1 * r2 * c
    nrm = torch.linalg.cross(b - a, c - a)
    nrm = F.normalize(nrm, dim=-1)
    # Orient outwards: the canonical face looks along +z.
    nrm = torch.where(nrm[:, 2:3] < 0, -nrm, nrm)
    return p, nrm


def init_face_surface(
    canonical: torch.Tensor,
    n: int,
    jitter: float = 0.002,
    head_fraction: float = 0.3,
    head_top: float = 0.05,
    head_side: float = 0.01,
    head_depth: float = 0.2,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Initial face-branch points ``[n, 3]`` (metres) around the canonical face ``[468, 3]`` (m).

    ``(1 - head_fraction) n`` points lie on the face surface (random points on triangles spanned by
    each vertex and its nearest neighbours), moved along the local normal by N(0, ``jitter``) m.
    The other ``head_fraction n`` points lie on an ellipsoid shell for the rest of the head (hair,
    ears, cranium): from the chin to ``head_top`` above the mesh's top (the mesh stops at the
    forehead), ``head_side`` wider than the mesh on each side, ``head_depth`` deep from the nose
    tip back; only its part behind the face (z below the mesh's median) and above the mouth (no
    neck) is kept.
    """
    _check_canonical(canonical)
    if n < 1:
        raise TalkgsError(f"n must be >= 1, got {n}")
    out_dev = canonical.device
    dev = torch.device("cpu")  # sampled on the CPU (``generator`` is a CPU generator), then moved
    canonical = canonical[:468].float().cpu()
    n_head = int(round(n * head_fraction))
    n_face = n - n_head
    p, nrm = _surface_samples(canonical, n_face, k=6, generator=generator)
    p = p + nrm * torch.randn(n_face, 1, generator=generator, device=dev) * jitter

    lo, hi = canonical.min(0).values, canonical.max(0).values
    y0, y1 = float(lo[1]), float(hi[1]) + head_top
    centre = torch.tensor([float(lo[0] + hi[0]) / 2, (y0 + y1) / 2, float(hi[2]) - head_depth / 2])
    axes = torch.tensor([float(hi[0] - lo[0]) / 2 + head_side, (y1 - y0) / 2, head_depth / 2])
    z_cut = float(canonical[:, 2].median())
    y_cut = y0 + 0.06  # about the mouth's height: below it, behind the face, is neck
    shell = []
    have = 0
    while have < n_head:
        d = F.normalize(torch.randn(max(4 * n_head, 64), 3, generator=generator, device=dev), dim=-1)
        q = centre + d * axes
        q = q[(q[:, 2] < z_cut) & (q[:, 1] > y_cut)]
        shell.append(q)
        have += q.shape[0]
    q = torch.cat(shell)[:n_head] if n_head > 0 else torch.zeros(0, 3, device=dev)
    if n_head > 0:
        radial = F.normalize((q - centre) / axes.square(), dim=-1)  # ellipsoid normal
        q = q + radial * torch.randn(n_head, 1, generator=generator, device=dev) * jitter
    return torch.cat([p, q], dim=0).to(out_dev)


def mouth_cavity_box(
    canonical: torch.Tensor, depth: float = 0.02, drop: float = 0.015, margin: float = 0.003
) -> tuple[torch.Tensor, torch.Tensor]:
    """Box ``(lo [3], hi [3])`` (metres) behind the inner lips that the mouth interior occupies.

    x spans the inner-lip corners (+- ``margin``), y from ``drop`` below the lower inner lip (the jaw
    opens downwards) to ``margin`` above the upper one, z from the inner lips back by ``depth``.
    """
    _check_canonical(canonical)
    lips = canonical[list(INNER_LIP_IDX)].float()
    lo, hi = lips.min(0).values, lips.max(0).values
    box_lo = torch.stack([lo[0] - margin, lo[1] - drop, lo[2] - depth])
    box_hi = torch.stack([hi[0] + margin, hi[1] + margin, hi[2]])
    return box_lo, box_hi


def init_mouth_cavity(
    canonical: torch.Tensor,
    n: int,
    depth: float = 0.02,
    drop: float = 0.015,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Initial mouth-branch points ``[n, 3]`` uniform in :func:`mouth_cavity_box` (teeth, tongue,
    dark cavity all lie there; the face branch covers whatever is in front)."""
    lo, hi = mouth_cavity_box(canonical.cpu(), depth=depth, drop=drop)
    u = torch.rand(n, 3, generator=generator)  # CPU generator, like the other initialisers
    return (lo + u * (hi - lo)).to(canonical.device)


# ----------------------------------------------------------------------------- optimisers
def make_optimizers(params: GaussianParams, lrs: dict[str, float]) -> dict[str, torch.optim.Adam]:
    """One Adam per named parameter (so the strategy can edit each one's state rows).

    ``lrs`` maps every key of ``params`` to a learning rate. eps = 1e-15 (3DGS: raw gradients of
    tiny Gaussians are tiny), fused kernels on CUDA.
    """
    missing = [k for k in params.keys() if k not in lrs]
    if missing:
        raise TalkgsError(f"no learning rate for Gaussian parameter(s) {', '.join(missing)}")
    out = {}
    for name, p in params.items():
        fused = p.device.type == "cuda"
        out[name] = torch.optim.Adam([{"params": [p], "lr": float(lrs[name]), "name": name}], eps=1e-15, fused=fused)
    return out
