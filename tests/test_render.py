"""CPU tests of talkgs.raster: the tiled torch backend against a brute-force per-pixel
reference, and the properties the issue lists (alpha range, empty scene, culling behind the
camera, batching, SH, extras, pixel-centre convention)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from talkgs.conventions import camera_centres, intrinsics, project, rigid
from talkgs.errors import TalkgsError
from talkgs.raster import RenderError, rasterize
from talkgs.raster import _api, _torch
from talkgs.raster.sh import SH_C0, SH_C1, SH_C2
from talkgs.raster.testing import (
    clone_scene,
    cosine,
    head_scene,
    params_of,
    random_scene,
)


def _render(scene, impl=None, **kw):
    """rasterize() on a fresh copy of ``scene`` with the torch backend, optionally swapping
    in another torch implementation (the brute-force reference); returns (out, grads) for a
    fixed random linear loss over every output."""
    sc = clone_scene(scene)
    orig = _api.rasterize_torch
    if impl is not None:
        _api.rasterize_torch = impl
    try:
        out = rasterize(**sc, backend="torch", **kw)
    finally:
        _api.rasterize_torch = orig
    g = torch.Generator().manual_seed(123)

    def w(t):
        return torch.rand(t.shape, generator=g, dtype=t.dtype)

    loss = (out.colors * w(out.colors)).sum() + (out.alphas * w(out.alphas)).sum()
    if out.depths is not None:
        loss = loss + (out.depths * out.alphas * w(out.depths)).sum()
    if out.extras is not None:
        loss = loss + (out.extras * w(out.extras)).sum()
    loss.backward()
    return out, {k: v.grad for k, v in params_of(sc).items()}


SCENES = {
    # name: (builder, kwargs for rasterize)
    "aniso_offscreen_2cams": (
        lambda: random_scene(90, 50, 37, n_cameras=2, anisotropy=12.0, seed=3),
        dict(backgrounds=torch.tensor([0.2, 0.5, 0.9]), render_depth=True),
    ),
    "dense_opaque": (
        lambda: _dense_scene(),
        dict(render_depth=True),
    ),
    "head_small": (
        lambda: head_scene(70, 48, 40, n_cameras=1, seed=5),
        dict(backgrounds=torch.tensor([1.0, 1.0, 1.0])),
    ),
    "sh2_extras": (
        lambda: random_scene(60, 35, 29, seed=6, sh_degree=2),
        dict(extras_dim=2),
    ),
}


@pytest.mark.parametrize("name", list(SCENES))
def test_tiled_matches_bruteforce(name):
    build, kw = SCENES[name]
    scene = build()
    kw = dict(kw)
    if kw.pop("extras_dim", 0):
        scene["extras"] = torch.rand(scene["means"].shape[:-1] + (2,)).requires_grad_(True)
    a, ga = _render(scene, **kw)
    b, gb = _render(scene, impl=_torch._rasterize_bruteforce, **kw)
    assert a.visible.any()
    if name != "head_small":  # random scenes put some Gaussians behind the camera
        assert not a.visible.all()
    torch.testing.assert_close(a.colors, b.colors, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.alphas, b.alphas, atol=1e-5, rtol=0)
    if a.depths is not None:
        torch.testing.assert_close(a.depths * a.alphas, b.depths * b.alphas, atol=1e-5, rtol=1e-5)
    if a.extras is not None:
        torch.testing.assert_close(a.extras, b.extras, atol=1e-5, rtol=0)
    assert torch.equal(a.radii, b.radii)
    for k in ga:
        assert ga[k].abs().sum() > 0, k
        assert cosine(ga[k], gb[k]) > 0.9999, (k, cosine(ga[k], gb[k]))


def _dense_scene():
    """Large, nearly opaque Gaussians: the 0.999 clamp and the 1e-4 transmittance stop act."""
    scene = random_scene(90, 40, 40, anisotropy=3.0, offscreen=0.0, scale_px=4.0, seed=4)
    g = torch.Generator().manual_seed(4)
    # Half of them fully opaque, so that alpha reaches the 0.999 clamp at their centres.
    opacities = (0.95 + 0.1 * torch.rand(90, generator=g)).clamp_max(1.0)
    scene["opacities"] = opacities.requires_grad_()
    return scene


def test_transmittance_stop_and_clamp_are_active_in_dense_scene(monkeypatch):
    scene = _dense_scene()
    out = rasterize(**scene)
    assert out.alphas.max() > 1 - 1e-3
    monkeypatch.setattr(_torch, "T_MIN", 1e-30)  # no early stop
    no_stop = rasterize(**scene)
    assert (no_stop.colors - out.colors).abs().max() > 1e-5
    monkeypatch.setattr(_torch, "ALPHA_MAX", 1.0 - 1e-7)  # (almost) no clamp
    no_clamp = rasterize(**scene)
    assert (no_clamp.colors - no_stop.colors).abs().max() > 1e-4


def test_float64_matches_bruteforce_tightly():
    scene = random_scene(70, 33, 31, n_cameras=2, seed=8, dtype=torch.float64)
    a, ga = _render(scene, render_depth=True)
    b, gb = _render(scene, impl=_torch._rasterize_bruteforce, render_depth=True)
    torch.testing.assert_close(a.colors, b.colors, atol=1e-12, rtol=0)
    for k in ga:
        torch.testing.assert_close(ga[k], gb[k], atol=1e-9, rtol=1e-7)


def test_alpha_in_unit_interval_and_colour_bounded():
    scene = head_scene(400, 40, seed=1, opacity_range=(0.5, 1.0))
    bg = torch.tensor([0.3, 0.6, 0.9])
    out = rasterize(**scene, backgrounds=bg)
    assert out.alphas.min() >= 0 and out.alphas.max() <= 1
    assert out.alphas.max() > 0.99  # the head is opaque somewhere
    # Colours in [0, 1] composite to within the convex hull of colours and background.
    assert out.colors.min() >= -1e-6 and out.colors.max() <= 1 + 1e-6


def test_empty_scene_is_background():
    scene = head_scene(0, 24, 20, n_cameras=2)
    bg = torch.tensor([[0.1, 0.2, 0.3], [0.7, 0.8, 0.9]])
    out = rasterize(**scene, backgrounds=bg, render_depth=True)
    assert out.colors.shape == (2, 20, 24, 3)
    assert torch.equal(out.colors, bg[:, None, None, :].expand(2, 20, 24, 3))
    assert torch.equal(out.alphas, torch.zeros(2, 20, 24, 1))
    assert torch.equal(out.depths, torch.zeros(2, 20, 24, 1))
    assert out.means2d.shape == (2, 0, 2) and out.radii.shape == (2, 0)


def _one_gaussian(z_cam: float, scale: float = 0.3):
    """A single large opaque Gaussian on the optical axis at camera depth ``z_cam``."""
    K = torch.as_tensor(intrinsics(40.0, 40.0, 16.0, 16.0), dtype=torch.float32)
    return dict(
        means=torch.tensor([[0.0, 0.0, z_cam]]),
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
        scales=torch.full((1, 3), scale),
        opacities=torch.tensor([0.9]),
        colors=torch.tensor([[1.0, 0.0, 0.0]]),
        viewmats=torch.eye(4)[None],
        Ks=K[None],
        width=32,
        height=32,
    )


@pytest.mark.parametrize("z_cam", [-1.0, -0.005, 0.0, 0.005])
def test_gaussian_behind_camera_or_inside_near_plane_is_invisible(z_cam):
    bg = torch.tensor([0.0, 0.5, 1.0])
    out = rasterize(**_one_gaussian(z_cam), backgrounds=bg)
    assert not out.visible.any() and out.radii.sum() == 0
    assert torch.equal(out.alphas, torch.zeros_like(out.alphas))
    assert torch.equal(out.colors, bg.expand_as(out.colors))
    # The same Gaussian in front of the camera is drawn (the test can fail).
    front = rasterize(**_one_gaussian(1.0), backgrounds=bg)
    assert front.visible.all() and front.alphas.max() > 0.8


def test_camera_batch_equals_cameras_one_by_one():
    scene = head_scene(150, 40, 36, n_cameras=3, seed=2)
    bg = torch.tensor([0.2, 0.3, 0.4])
    allc = rasterize(**scene, backgrounds=bg, render_depth=True)
    for c in range(3):
        one = dict(scene, viewmats=scene["viewmats"][c : c + 1], Ks=scene["Ks"][c : c + 1])
        o = rasterize(**one, backgrounds=bg, render_depth=True)
        torch.testing.assert_close(allc.colors[c : c + 1], o.colors, atol=1e-5, rtol=0)
        torch.testing.assert_close(allc.alphas[c : c + 1], o.alphas, atol=1e-5, rtol=0)
        torch.testing.assert_close(allc.depths[c : c + 1], o.depths, atol=1e-5, rtol=0)
        assert torch.equal(allc.radii[c : c + 1], o.radii)
    # Different cameras really see different images.
    assert (allc.colors[0] - allc.colors[2]).abs().max() > 0.1


def test_batch_dims_equal_frames_one_by_one():
    """means [B, N, 3] with viewmats [B, C, 4, 4]: each frame its own Gaussians."""
    scene = head_scene(120, 32, 28, n_cameras=2, batch=(3,), seed=9)
    weights = torch.rand(2, 28, 32, 3, generator=torch.Generator().manual_seed(0))
    out = rasterize(**scene, render_depth=True)
    assert out.colors.shape == (3, 2, 28, 32, 3)
    assert out.means2d.shape == (3, 2, 120, 2) and out.radii.shape == (3, 2, 120)
    (out.colors * weights).sum().backward()
    for b in range(3):
        one = {k: (v[b].detach().requires_grad_() if torch.is_tensor(v) else v)
               for k, v in scene.items()}  # fmt: skip
        o = rasterize(**one, render_depth=True)
        (o.colors * weights).sum().backward()
        torch.testing.assert_close(out.colors[b], o.colors, atol=1e-5, rtol=0)
        torch.testing.assert_close(out.alphas[b], o.alphas, atol=1e-5, rtol=0)
        torch.testing.assert_close(out.depths[b], o.depths, atol=1e-5, rtol=0)
        for k, v in params_of(one).items():
            assert cosine(scene[k].grad[b], v.grad) > 0.99999, k
            torch.testing.assert_close(scene[k].grad[b], v.grad, atol=1e-4, rtol=1e-4)


def test_shared_cameras_broadcast_over_batch():
    scene = head_scene(60, 24, seed=4, batch=(2,))
    shared = dict(scene, viewmats=scene["viewmats"][0], Ks=scene["Ks"][0])  # [C, 4, 4]
    a = rasterize(**scene)
    b = rasterize(**shared)
    torch.testing.assert_close(a.colors, b.colors)


def _sh_numpy(sh: np.ndarray, dirs: np.ndarray, degree: int) -> np.ndarray:
    """3DGS's SH-to-RGB for unit directions [..., 3] and coefficients [..., K, 3]."""
    x, y, z = dirs[..., 0:1], dirs[..., 1:2], dirs[..., 2:3]
    res = SH_C0 * sh[..., 0, :]
    if degree > 0:
        res = res - SH_C1 * y * sh[..., 1, :] + SH_C1 * z * sh[..., 2, :]
        res = res - SH_C1 * x * sh[..., 3, :]
    if degree > 1:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        res = (
            res
            + SH_C2[0] * xy * sh[..., 4, :]
            + SH_C2[1] * yz * sh[..., 5, :]
            + SH_C2[2] * (2.0 * zz - xx - yy) * sh[..., 6, :]
            + SH_C2[3] * xz * sh[..., 7, :]
            + SH_C2[4] * (xx - yy) * sh[..., 8, :]
        )
    return np.maximum(res + 0.5, 0.0)


@pytest.mark.parametrize("degree", [0, 1, 2])
def test_sh_colour_matches_3dgs_formula(degree):
    scene = head_scene(80, 32, n_cameras=2, sh_degree=2, seed=degree)
    out = rasterize(**scene, sh_degree=degree)
    # Reference: per-camera RGB from the 3DGS formula in float64 numpy, rendered as colours.
    sh = scene["sh_coeffs"].detach().double().numpy()
    means = scene["means"].detach().double().numpy()
    campos = camera_centres(scene["viewmats"].double().numpy())  # [C, 3]
    d = means[None] - campos[:, None]
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    rgb = np.broadcast_to(_sh_numpy(sh[None], d, degree), d.shape)  # [C, N, 3]
    colors = torch.tensor(rgb, dtype=torch.float32)
    ref_scene = {k: v for k, v in scene.items() if k != "sh_coeffs"}
    ref = rasterize(**ref_scene | {"colors": colors})
    torch.testing.assert_close(out.colors, ref.colors, atol=2e-6, rtol=0)
    view_dependent = (out.colors[0] - out.colors[1]).abs().max()
    assert view_dependent > 0.05
    if degree == 0:  # degree 0 is view independent: both cameras get the same colours
        assert np.abs(rgb[0] - rgb[1]).max() == 0


def test_sh_degree_inferred_and_gradients_flow():
    scene = head_scene(50, 24, sh_degree=1, seed=3)
    out = rasterize(**scene)  # K = 4 -> degree 1
    out.colors.sum().backward()
    assert scene["sh_coeffs"].grad[:, :4].abs().sum() > 0


def test_extras_equal_a_render_with_them_as_colours():
    scene = head_scene(120, 40, 32, n_cameras=2, seed=11)
    extras = torch.rand(120, 2)
    bg = torch.tensor([0.5, 0.5, 0.5])
    out = rasterize(**scene, extras=extras, backgrounds=bg, render_depth=True)
    alone = rasterize(**scene, backgrounds=bg, render_depth=True)
    as_colours = rasterize(**dict(scene, colors=extras))  # no background: extras over 0
    assert out.extras.shape == (2, 32, 40, 2)
    torch.testing.assert_close(out.extras, as_colours.colors, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.colors, alone.colors, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.depths, alone.depths, atol=1e-6, rtol=0)
    assert out.extras.max() > 0.1


def test_tiny_gaussian_lands_on_the_pixel_given_by_conventions_project():
    rng = np.random.default_rng(0)
    K = intrinsics(300.0, 280.0, 31.7, 24.2)
    R = np.diag([1.0, -1.0, -1.0])
    w2c = rigid(R, np.array([0.01, -0.02, 0.8]))
    W, H = 64, 48
    for _ in range(8):
        # Pick a pixel and an offset inside it away from its border, then lift it to 3D.
        j, i = rng.integers(2, W - 2), rng.integers(2, H - 2)
        u, v = j + rng.uniform(0.2, 0.8), i + rng.uniform(0.2, 0.8)
        z = rng.uniform(0.5, 1.2)
        pc = np.array([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z])
        pw = R.T @ (pc - w2c[:3, 3])
        uv, depth = project(pw[None], w2c, K)
        assert np.allclose(uv[0], [u, v]) and np.isclose(depth[0], z)
        out = rasterize(
            torch.tensor(pw[None], dtype=torch.float32),
            torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
            torch.full((1, 3), 1e-5),
            torch.tensor([1.0]),
            colors=torch.ones(1, 1),
            viewmats=torch.tensor(w2c[None], dtype=torch.float32),
            Ks=torch.tensor(K[None], dtype=torch.float32),
            width=W,
            height=H,
        )
        torch.testing.assert_close(
            out.means2d[0, 0], torch.tensor(uv[0], dtype=torch.float32), atol=1e-4, rtol=0
        )
        peak = int(out.alphas[0, ..., 0].argmax())
        assert (peak // W, peak % W) == (int(math.floor(v)), int(math.floor(u)))


def test_projected_covariance_is_ewa_of_conventions_project():
    """2D covariance = J Sigma J^T + 0.3 I with J the Jacobian of conventions.project."""
    scene = head_scene(20, 64, seed=12, dtype=torch.float64)
    proj = _torch.project_gaussians(
        scene["means"], scene["quats"], scene["scales"], scene["opacities"],
        scene["viewmats"], scene["Ks"], 64, 64,
    )  # fmt: skip
    R = _torch.quat_to_rotmat(scene["quats"])
    S = torch.diag_embed(scene["scales"])
    sigma = R @ S @ S @ R.transpose(-1, -2)
    for n in range(20):
        J = torch.autograd.functional.jacobian(
            lambda p: project(p[None], scene["viewmats"][0], scene["Ks"][0])[0][0],
            scene["means"][n].detach(),
        )  # [2, 3]
        cov = J @ sigma[n] @ J.T + 0.3 * torch.eye(2, dtype=torch.float64)
        a, b, c = proj.conics[0, n]
        conic = torch.stack([torch.stack([a, b]), torch.stack([b, c])])
        torch.testing.assert_close(conic, torch.linalg.inv(cov), rtol=1e-9, atol=1e-9)
    # Rotations are proper and quaternions need not be normalised.
    R2 = _torch.quat_to_rotmat(3.0 * scene["quats"])
    torch.testing.assert_close(R2, R)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(20, dtype=torch.float64))


def test_means2d_grad_for_densification():
    scene = head_scene(200, 32, seed=13)
    scene["means"].data[:20, 2] = 5.0  # world z = 5 -> camera z = -4.3: behind the camera
    out = rasterize(**scene)
    out.means2d.retain_grad()
    (out.colors * torch.rand_like(out.colors)).sum().backward()
    g = out.means2d.grad
    assert g is not None and g.shape == (1, 200, 2) and torch.isfinite(g).all()
    assert torch.equal(g[0, :20], torch.zeros(20, 2))
    assert not out.visible[0, :20].any()
    assert (g[0, out.visible[0]].norm(dim=-1) > 0).float().mean() > 0.5
    assert torch.isfinite(scene["means"].grad).all()


def test_checkpointed_groups_match_plain_autograd(monkeypatch):
    scene = random_scene(120, 48, 40, n_cameras=2, seed=14)
    a, ga = _render(scene, render_depth=True)
    monkeypatch.setattr(_torch, "_GROUP_ELEMENTS", 4096)
    monkeypatch.setattr(_torch, "_CHECKPOINT_ELEMENTS", 0)
    b, gb = _render(scene, render_depth=True)
    torch.testing.assert_close(a.colors, b.colors, atol=1e-6, rtol=0)
    for k in ga:
        torch.testing.assert_close(ga[k], gb[k], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("tile_size", [8, 32])
def test_tile_size_does_not_change_the_image(tile_size):
    scene = random_scene(100, 45, 39, seed=15)
    a = rasterize(**scene)
    b = rasterize(**scene, tile_size=tile_size)
    torch.testing.assert_close(a.colors, b.colors, atol=1e-6, rtol=0)


def test_fits_a_tiny_head_on_cpu():
    """Gradients are useful: Adam recovers a target image rendered from other Gaussians."""
    torch.manual_seed(0)
    target_scene = head_scene(150, 32, n_cameras=2, seed=20, opacity_range=(0.6, 0.95))
    with torch.no_grad():
        target = rasterize(**target_scene).colors
    scene = head_scene(150, 32, n_cameras=2, seed=21, opacity_range=(0.6, 0.95))
    logit = torch.logit(scene["opacities"].detach()).requires_grad_()
    log_s = torch.log(scene["scales"].detach()).requires_grad_()
    opt = torch.optim.Adam(
        [
            {"params": [scene["colors"], logit, log_s, scene["quats"]], "lr": 0.02},
            {"params": [scene["means"]], "lr": 0.002},
        ]
    )
    losses = []
    for _ in range(30):
        kw = dict(scene, opacities=torch.sigmoid(logit), scales=torch.exp(log_s))
        loss = (rasterize(**kw).colors - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_bad_input_raises_talkgs_errors():
    scene = head_scene(10, 16)
    with pytest.raises(RenderError, match="CUDA"):
        rasterize(**scene, backend="gsplat")
    with pytest.raises(RenderError, match="absgrad"):
        rasterize(**scene, absgrad=True)
    with pytest.raises(RenderError, match="backend"):
        rasterize(**scene, backend="opengl")
    with pytest.raises(RenderError, match="quats"):
        rasterize(**dict(scene, quats=scene["quats"][:5]))
    with pytest.raises(RenderError, match="exactly one"):
        rasterize(**scene, sh_coeffs=torch.zeros(10, 1, 3))
    with pytest.raises(RenderError, match="viewmats"):
        rasterize(**dict(scene, viewmats=torch.eye(4)[None].expand(2, 3, 4, 4)))
    with pytest.raises(RenderError, match="colors"):
        rasterize(**dict(scene, colors=torch.rand(9, 3)))
    with pytest.raises(RenderError, match="float64"):
        rasterize(**dict(scene, scales=scene["scales"].double()))
    with pytest.raises(RenderError, match="sh_degree"):
        rasterize(**{k: v for k, v in scene.items() if k != "colors"},
                  sh_coeffs=torch.zeros(10, 16, 3), sh_degree=3)  # fmt: skip
    assert issubclass(RenderError, TalkgsError)


def test_no_grad_render_equals_grad_render_and_sizes_accept_numpy_ints():
    scene = head_scene(200, 40, 30, seed=22)
    with torch.no_grad():
        a = rasterize(**dict(scene, width=np.int64(40), height=np.int32(30)))
    b = rasterize(**scene)
    assert not a.colors.requires_grad and b.colors.requires_grad
    torch.testing.assert_close(a.colors, b.colors.detach(), atol=0, rtol=0)
    with pytest.raises(RenderError, match="width"):
        rasterize(**dict(scene, width=40.0))
    with pytest.raises(RenderError, match="tile_size"):
        rasterize(**scene, tile_size=0)
