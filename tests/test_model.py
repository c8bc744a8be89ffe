"""talkgs.model: tri-plane, audio nets, motion fields, init, head deformation, compositing."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from talkgs.errors import TalkgsError
from talkgs.model import (
    AudioNet,
    BranchInitConfig,
    FaceMotion,
    FaceMotionConfig,
    HeadConfig,
    MouthMotion,
    MouthMotionConfig,
    TalkingHead,
    TriPlaneConfig,
    TriPlaneEncoder,
    composite,
    eye_code,
    gather_windows,
    init_face_surface,
    init_from_points,
    init_mouth_cavity,
    load_canonical_face,
    make_optimizers,
    torso_background,
)
from talkgs.model.gaussians import INNER_LIP_IDX, activate, knn_scale, mouth_cavity_box, sh0_to_rgb
from talkgs.model.triplane import level_resolutions, triplane_gather




@pytest.fixture(autouse=True)
def one_thread():
    """Tiny ops run faster (and far steadier on a loaded 2-core machine) single-threaded."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


SMALL_GRID = TriPlaneConfig(n_levels=4, base_res=8, max_res=32, n_features_per_level=2)


def small_head_config(n_face: int = 300, n_mouth: int = 150, face_kind: str = "surface") -> HeadConfig:
    return HeadConfig(
        face_init=BranchInitConfig(n=n_face, kind=face_kind),
        mouth_init=BranchInitConfig(n=n_mouth, kind="cavity"),
        face_motion=FaceMotionConfig(triplane=SMALL_GRID, hidden=32),
        mouth_motion=MouthMotionConfig(triplane=dataclasses.replace(SMALL_GRID, bound=0.06, centre=(0.0, -0.05, 0.03))),
    )


def front_cameras(b: int, size: int, focal_512: float = 1300.0, dist: float = 0.7):
    """Cameras ``[b, 1, 4, 4]`` / ``[b, 1, 3, 3]`` looking at the face from the front (+z)."""
    V = torch.eye(4).repeat(b, 1, 1, 1)
    V[..., 1, 1] = -1.0
    V[..., 2, 2] = -1.0
    V[..., 2, 3] = dist
    f = focal_512 * size / 512.0
    K = torch.tensor([[f, 0.0, size / 2], [0.0, f, size / 2], [0.0, 0.0, 1.0]]).repeat(b, 1, 1, 1)
    return V, K


# ----------------------------------------------------------------------------- tri-plane
def test_level_resolutions_geometric():
    r = level_resolutions(12, 16, 64)
    assert r[0] == 16 and r[-1] == 64 and all(a <= b for a, b in zip(r, r[1:]))
    with pytest.raises(TalkgsError):
        level_resolutions(4, 32, 16)


def test_triplane_matches_corner_gather_and_is_zero_outside():
    torch.manual_seed(0)
    enc = TriPlaneEncoder(bound=0.15, centre=(0.01, -0.02, 0.0), n_levels=4, base_res=5, max_res=23, n_features_per_level=2, init_scale=1.0)
    inside = (torch.rand(500, 3) * 2 - 1) * 0.149 + enc.centre
    feat = enc(inside)
    assert feat.shape == (500, enc.out_dim) == (500, 3 * 4 * 2)
    torch.testing.assert_close(feat, triplane_gather(enc, inside), atol=1e-5, rtol=1e-5)
    # Exactly on a plane vertex the feature is that vertex's value.
    lo = enc.centre - enc.bound
    corner = enc(lo[None])  # u = (0, 0, 0): vertex (0, 0) of every level of every plane
    expect = torch.stack([enc.level_planes(l)[:, :, 0, 0] for l in range(4)], dim=1).reshape(-1)
    torch.testing.assert_close(corner[0], expect)
    # Any coordinate outside the box -> all features zero.
    outside = inside[:6].clone()
    for i in range(3):
        outside[2 * i, i] = enc.centre[i] + 0.16
        outside[2 * i + 1, i] = enc.centre[i] - 0.2
    assert enc(outside).abs().max() == 0.0
    # Gradients reach the table.
    enc(inside).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.planes)


# ----------------------------------------------------------------------------- audio
def test_gather_windows_zero_pads_at_the_ends():
    n, w, c = 10, 4, 3
    feats = torch.arange(n, dtype=torch.float32)[:, None, None].expand(n, w, c) + 1.0  # frame i holds i + 1
    idx = torch.tensor([0, 5, 9])
    win = gather_windows(feats, idx, size=8)
    assert win.shape == (3, 8, w, c)
    for b, i in enumerate(idx.tolist()):
        for k in range(8):
            j = i - 4 + k
            expect = float(j + 1) if 0 <= j < n else 0.0
            assert torch.all(win[b, k] == expect), (i, k)


@pytest.mark.parametrize("w,c", [(16, 80), (2, 64), (5, 29)])
def test_audio_net_shapes_and_attention_weights(w, c):
    torch.manual_seed(0)
    net = AudioNet(w, c, code_dim=32, window=8)
    x = torch.randn(3, 8, w, c)
    code = net.encode(x)
    assert code.shape == (3, 32) and torch.isfinite(code).all()
    codes = torch.randn(3, 8, 32)
    wts = net.attention.weights(codes)
    torch.testing.assert_close(wts.sum(-1), torch.ones(3))
    # The smoothed code is a convex combination of the window's codes.
    torch.testing.assert_close(net.attention(codes), (wts[..., None] * codes).sum(1))
    with pytest.raises(TalkgsError):
        net.encode(torch.randn(3, 8, w + 1, c))


def test_audio_input_stats_normalise():
    net = AudioNet(16, 8)
    feats = torch.randn(50, 16, 8) * 7.0 + 3.0
    net.encoder.set_input_stats(feats)
    torch.testing.assert_close(net.encoder.in_mean, feats.reshape(-1, 8).mean(0))
    assert "encoder.in_std" in net.state_dict()


# ----------------------------------------------------------------------------- motion
def test_face_motion_equals_the_mlp_on_the_concatenated_attended_codes():
    """The face field's one-matmul first layer is the region-attention MLP of the paper: the
    deformation MLP applied to [feature, a_aud * audio, a_eye * eye] per Gaussian and frame."""
    torch.manual_seed(0)
    mot = FaceMotion(FaceMotionConfig(triplane=SMALL_GRID), audio_dim=32, eye_dim=3)
    with torch.no_grad():
        for p in mot.parameters():
            p.normal_(0.0, 0.3)
    means = (torch.rand(300, 3) - 0.5) * 0.2
    audio, eye = torch.randn(5, 32), torch.rand(5, 3)
    d = mot(means, audio, eye)
    feat = mot.features(means)
    x = torch.cat([feat[None].expand(5, -1, -1), mot.aud_att(feat)[None] * audio[:, None], mot.eye_att(feat)[None] * eye[:, None]], -1)
    ref = mot.deform(x)  # [B, N, 10]
    assert ref.abs().max() > 1e-2  # a non-trivial field
    torch.testing.assert_close(d.d_xyz, ref[..., :3] * mot.cfg.xyz_scale, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(d.d_rot, ref[..., 3:7], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(d.d_scale, ref[..., 7:], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(d.audio_att, x[..., feat.shape[1] : feat.shape[1] + 32])


def test_face_motion_shapes_zero_codes_and_batch_independence():
    torch.manual_seed(0)
    mot = FaceMotion(FaceMotionConfig(triplane=SMALL_GRID), audio_dim=32, eye_dim=3)
    means = (torch.rand(200, 3) - 0.5) * 0.2
    zero = mot(means, torch.zeros(2, 32), torch.zeros(2, 3))
    # Zero codes: only the (tiny at init) spatial feature drives motion: sub-micrometre, deterministic.
    assert zero.d_xyz.abs().max() < 1e-5
    again = mot(means, torch.zeros(2, 32), torch.zeros(2, 3))
    assert torch.equal(zero.d_xyz, again.d_xyz)
    audio, eye = torch.randn(3, 32), torch.rand(3, 3)
    d = mot(means, audio, eye)
    assert d.d_xyz.shape == (3, 200, 3) and d.d_rot.shape == (3, 200, 4) and d.d_scale.shape == (3, 200, 3)
    assert d.audio_att.shape == (3, 200, 32) and d.eye_att.shape == (3, 200, 3)
    assert (d.eye_att >= 0).all() or (eye < 0).any()
    single = mot(means, audio[1:2], eye[1:2])
    torch.testing.assert_close(d.d_xyz[1:2], single.d_xyz)
    assert not torch.allclose(d.d_xyz[0], d.d_xyz[1])
    # Points outside the box have zero features and zero gates: zero motion whatever the codes.
    far = torch.full((4, 3), 0.5)
    assert mot(far, audio, eye).d_xyz.abs().max() == 0.0


def test_mouth_motion_xz_damping():
    torch.manual_seed(0)
    a = MouthMotion(MouthMotionConfig(triplane=SMALL_GRID, xz_damping=1.0))
    b = MouthMotion(MouthMotionConfig(triplane=SMALL_GRID, xz_damping=0.2))
    b.load_state_dict(a.state_dict())
    means = (torch.rand(50, 3) - 0.5) * 0.1
    audio = torch.randn(2, 32) * 100
    da, db = a(means, audio), b(means, audio)
    assert db.shape == (2, 50, 3)
    torch.testing.assert_close(db[..., 1], da[..., 1])
    torch.testing.assert_close(db[..., [0, 2]], 0.2 * da[..., [0, 2]])


def test_eye_code_normalises():
    code = eye_code(torch.tensor([0.0, 1.0]), torch.tensor([[0.3, 0.15], [0.0, 0.0]]), ratio_ref=torch.tensor([0.3, 0.3]))
    torch.testing.assert_close(code, torch.tensor([[0.0, 1.0, 0.5], [1.0, 0.0, 0.0]]))
    with pytest.raises(TalkgsError):
        eye_code(torch.zeros(2), torch.zeros(3, 2))


# ----------------------------------------------------------------------------- init
def test_init_face_surface_lies_on_the_face_and_head_shell():
    g = torch.Generator().manual_seed(0)
    can = load_canonical_face()
    assert can.shape == (468, 3) and 0.12 < float(can[:, 0].max() - can[:, 0].min()) < 0.2
    pts = init_face_surface(can, 1000, jitter=0.001, head_fraction=0.3, generator=g)
    assert pts.shape == (1000, 3)
    face, head = pts[:700], pts[700:]
    d_face = torch.cdist(face, can).min(dim=1).values
    assert d_face.median() < 0.006 and d_face.max() < 0.03  # on the mesh (vertex spacing ~ 1 cm)
    assert (head[:, 2] < can[:, 2].median() + 0.005).all()  # the shell is behind the face
    assert torch.cdist(head, can).min(dim=1).values.median() > 0.01


def test_init_mouth_cavity_is_behind_the_inner_lips():
    can = load_canonical_face()
    pts = init_mouth_cavity(can, 500, generator=torch.Generator().manual_seed(0))
    lips = can[list(INNER_LIP_IDX)]
    lo, hi = mouth_cavity_box(can)
    assert ((pts >= lo) & (pts <= hi)).all()
    assert pts[:, 2].max() <= lips[:, 2].max() and pts[:, 2].min() >= lips[:, 2].min() - 0.02 - 1e-6
    assert pts[:, 0].abs().max() < lips[:, 0].abs().max() + 0.004


def test_init_from_points_knn_scale_opacity_colour():
    xs = torch.arange(10, dtype=torch.float32) * 0.001  # 1 mm lattice
    pts = torch.stack(torch.meshgrid(xs, xs, xs, indexing="ij"), -1).reshape(-1, 3)
    s = knn_scale(pts, chunk=100)
    assert torch.allclose(s[555], torch.tensor(0.001), rtol=1e-4)  # interior point: 3 NN at 1 mm
    cols = torch.rand(pts.shape[0], 3)
    gs = init_from_points(pts, cols, init_opacity=0.1, sh_degree=2)
    means, quats, scales, opac, sh = activate(gs)
    assert sh.shape == (1000, 9, 3) and gs["shN"].abs().max() == 0
    torch.testing.assert_close(opac, torch.full((1000,), 0.1))
    torch.testing.assert_close(sh0_to_rgb(gs["sh0"][:, 0]), cols)
    torch.testing.assert_close(scales[555], torch.full((3,), 0.001), rtol=1e-4, atol=0)
    torch.testing.assert_close(quats, torch.tensor([1.0, 0, 0, 0]).expand(1000, 4))
    opts = make_optimizers(gs, {k: 1e-3 for k in gs.keys()})
    assert set(opts) == set(gs.keys()) and opts["means"].defaults["eps"] == 1e-15
    with pytest.raises(TalkgsError):
        make_optimizers(gs, {"means": 1e-3})


# ----------------------------------------------------------------------------- head
def test_deform_render_composite_gradients_reach_every_network():
    torch.manual_seed(0)
    head = TalkingHead(small_head_config(), audio_window=16, audio_channels=20, generator=torch.Generator().manual_seed(0))
    b, size = 2, 32
    windows = gather_windows(torch.randn(30, 16, 20), torch.tensor([3, 20]))
    eye = eye_code(torch.tensor([0.0, 0.8]), torch.tensor([[0.3, 0.3], [0.05, 0.06]]))
    V, K = front_cameras(b, size)
    face = head.deform("face", windows, eye)
    mouth = head.deform("mouth", windows)
    assert face.means.shape == (b, 300, 3) and face.sh.shape == (b, 300, 9, 3) and face.opacities.shape == (b, 300)
    assert mouth.d_rot is None and mouth.d_xyz.shape == (b, 150, 3)
    fo = head.render_branch(face, V, K, size, size, with_attention=True)
    mo = head.render_branch(mouth, V, K, size, size)
    assert fo.colors.shape == (b, 1, size, size, 3) and fo.extras.shape == (b, 1, size, size, 2)
    assert fo.alphas.max() > 0.5 and mo.alphas.max() > 0.1  # both branches are in view
    bg = torch.rand(b, 1, size, size, 3)
    img = composite(fo.colors, fo.alphas, mo.colors, mo.alphas, bg)
    loss = (img - torch.rand_like(img)).abs().mean()
    loss.backward()
    for br in ("face", "mouth"):
        for name, p in head.branch(br).named_parameters():
            if name.startswith("gaussians.shN"):
                continue  # only degree>0 SH; covered through the render anyway
            assert p.grad is not None and torch.isfinite(p.grad).all(), (br, name)
            assert p.grad.abs().sum() > 0, (br, name)


def test_both_branches_in_one_pass_render_the_frames_of_two_passes():
    """stack_branches pads the smaller branch with zero-opacity Gaussians: one rasterizer call of
    2B images gives each branch's own render, so the composite equals two calls' (torch rasterizer,
    the reference of the gsplat path tests/gpu/test_cuda_graphs.py checks)."""
    from talkgs.model.head import stack_branches

    torch.manual_seed(0)
    head = TalkingHead(small_head_config(), audio_window=16, audio_channels=20, generator=torch.Generator().manual_seed(0))
    b, size = 3, 32
    windows = gather_windows(torch.randn(30, 16, 20), torch.tensor([3, 11, 20]))
    eye = eye_code(torch.tensor([0.0, 0.4, 0.8]), torch.tensor([[0.3, 0.3], [0.1, 0.2], [0.05, 0.06]]))
    V, K = front_cameras(b, size)
    bg = torch.rand(b, size, size, 3)
    with torch.no_grad():
        deformed = head.deform_frames(windows, eye)
        stacked = stack_branches(deformed["face"], deformed["mouth"])
        two = head.render_deformed(deformed, V, K, size, size, bg)
        one = head.render_deformed(deformed, V, K, size, size, bg, one_pass=True)
    assert stacked.means.shape == (2 * b, 300, 3) and stacked.sh.shape == (2 * b, 300, 9, 3)
    assert torch.equal(stacked.means[b:, :150], deformed["mouth"].means) and (stacked.opacities[b:, 150:] == 0).all()
    assert two.mouth_alpha.max() > 0.1 and two.face_alpha.max() > 0.5  # both branches are in view
    for field in ("image", "face_alpha", "mouth_alpha"):
        torch.testing.assert_close(getattr(one, field), getattr(two, field), atol=1e-6, rtol=0, msg=field)
    other_bands = dataclasses.replace(deformed["mouth"], sh=deformed["mouth"].sh[..., :4, :], sh_degree=1)
    assert stack_branches(deformed["face"], other_bands) is None  # then two passes


def test_attention_maps_single_pass_equals_detached_pass():
    torch.manual_seed(0)
    windows = torch.randn(1, 8, 16, 20)
    eye = torch.rand(1, 3)
    V, K = front_cameras(1, 24)
    maps = {}
    for detach in (False, True):
        cfg = dataclasses.replace(small_head_config(), attention_detach_geometry=detach)
        torch.manual_seed(0)
        head = TalkingHead(cfg, 16, 20, generator=torch.Generator().manual_seed(1))
        out = head.render_branch(head.deform("face", windows, eye), V, K, 24, 24, with_attention=True)
        assert out.extras.shape == (1, 1, 24, 24, 2) and out.extras.abs().sum() > 0
        out.extras.sum().backward()
        gs = head.gaussians("face")
        moved = gs["means"].grad is not None and gs["means"].grad.abs().max() > 0
        assert moved != detach  # detached pass: attention losses only reach the gates
        assert head.branch("face").motion.aud_att[0].weight.grad.abs().sum() > 0
        maps[detach] = out.extras.detach()
        with pytest.raises(TalkgsError):
            head.render_branch(head.deform("mouth", windows), V, K, 24, 24, with_attention=True)
    # Same splatting weights either way: the maps agree.
    torch.testing.assert_close(maps[False], maps[True], atol=1e-5, rtol=1e-4)


def test_static_deform_is_the_canonical_gaussians():
    head = TalkingHead(small_head_config(), 16, 20)
    d = head.deform("face", None, static=True, batch_size=3)
    means, quats, scales, opac, sh = activate(head.gaussians("face"))
    assert d.means.shape == (3, 300, 3) and d.d_xyz is None
    torch.testing.assert_close(d.means[2], means)
    torch.testing.assert_close(d.scales[0], scales)
    with pytest.raises(TalkgsError):
        head.deform("face", None)
    with pytest.raises(TalkgsError):
        head.deform("torso", None, static=True, batch_size=1)


def test_param_groups_cover_networks_once_and_state_dict_resizes():
    head = TalkingHead(small_head_config(), 16, 20)
    for br in ("face", "mouth"):
        groups = head.network_param_groups(br)
        ids = [id(p) for g in groups for p in g["params"]]
        nets = [p for n, p in head.branch(br).named_parameters() if not n.startswith("gaussians.")]
        assert len(ids) == len(set(ids)) == len(nets)
    sd = {k: v.clone() for k, v in head.state_dict().items()}
    sd["branches.face.gaussians.means"] = sd["branches.face.gaussians.means"][:100]
    for k in ("quats", "scales", "opacities", "sh0", "shN"):
        sd[f"branches.face.gaussians.{k}"] = sd[f"branches.face.gaussians.{k}"][:100]
    other = TalkingHead(small_head_config(), 16, 20)
    other.load_state_dict(sd)
    assert other.num_gaussians() == {"face": 100, "mouth": 150}
    torch.testing.assert_close(other.gaussians("face")["means"], sd["branches.face.gaussians.means"])


def test_composite_premultiplied_order():
    bg = torch.tensor([0.2, 0.4, 0.6]).expand(2, 2, 3)
    zero = torch.zeros(2, 2, 1)
    # alpha 0 everywhere -> background
    torch.testing.assert_close(composite(torch.zeros(2, 2, 3), zero, torch.zeros(2, 2, 3), zero, bg), bg)
    # opaque face -> its colour, whatever is behind
    face = torch.tensor([0.9, 0.1, 0.3]).expand(2, 2, 3)
    torch.testing.assert_close(composite(face, zero + 1, torch.rand(2, 2, 3), torch.rand(2, 2, 1), bg), face)
    # half-transparent face over half-transparent mouth (premultiplied colours)
    cf, af = torch.full((1, 1, 3), 0.25), torch.full((1, 1, 1), 0.5)  # colour 0.5 at alpha 0.5
    cm, am = torch.full((1, 1, 3), 0.1), torch.full((1, 1, 1), 0.5)  # colour 0.2 at alpha 0.5
    b = torch.ones(1, 1, 3)
    # mouth over bg: 0.1 + 0.5 * 1 = 0.6; face over that: 0.25 + 0.5 * 0.6 = 0.55
    torch.testing.assert_close(composite(cf, af, cm, am, b), torch.full((1, 1, 3), 0.55))
    # the order matters: swapping branches gives 0.1 + 0.5 * (0.25 + 0.5) = 0.475
    torch.testing.assert_close(composite(cm, am, cf, af, b), torch.full((1, 1, 3), 0.475))


def test_torso_background_uses_only_torso_pixels():
    from talkgs.data import LABEL_TORSO
    from talkgs.model.head import TORSO_LABEL

    assert TORSO_LABEL == LABEL_TORSO
    frames = torch.full((2, 4, 4, 3), 200, dtype=torch.uint8)
    frames[1] = 100
    labels = torch.zeros(2, 4, 4, dtype=torch.uint8)
    labels[0, 2:, :] = LABEL_TORSO
    labels[0, 0, 0] = 3  # face: must not be copied
    labels[1, 3, 3] = LABEL_TORSO
    plate = torch.full((4, 4, 3), 51, dtype=torch.uint8)
    bg = torso_background(frames, labels, plate)
    assert bg.dtype == torch.float32 and bg.shape == (2, 4, 4, 3)
    torso = (labels == LABEL_TORSO)[..., None].expand_as(bg)
    torch.testing.assert_close(bg[torso], frames.float()[torso] / 255)
    torch.testing.assert_close(bg[~torso], torch.full_like(bg[~torso], 0.2))
    with pytest.raises(TalkgsError):
        torso_background(frames, labels[:, :3], plate)


def test_tiny_end_to_end_overfit():
    """Face + mouth branches, deformation and audio nets on, fit two synthetic frames."""
    torch.manual_seed(0)
    size, steps = 48, 100
    cfg = small_head_config(n_face=250, n_mouth=100)
    head = TalkingHead(cfg, 16, 20, generator=torch.Generator().manual_seed(0))
    feats = torch.randn(40, 16, 20)
    windows = gather_windows(feats, torch.tensor([5, 30]))
    eye = torch.tensor([[0.0, 1.0, 1.0], [0.5, 0.5, 0.5]])
    V, K = front_cameras(2, size)
    # Target: a skin-coloured face disc with a dark mouth band that moves down in frame 2.
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    disc = ((xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (size * 0.35) ** 2).float()
    target = torch.zeros(2, 1, size, size, 3)
    for i, shift in enumerate((0, 3)):
        band = ((yy - (size * 0.68 + shift)).abs() < 2) & ((xx - size / 2).abs() < 7)
        col = torch.tensor([0.85, 0.6, 0.5]) * disc[..., None]
        col = torch.where(band[..., None], torch.tensor([0.3, 0.05, 0.05]), col)
        target[i, 0] = col
    bg = torch.zeros(2, 1, size, size, 3)
    optims = []
    for br in ("face", "mouth"):
        lrs = dataclasses.replace(cfg.gaussian_lrs, means=2e-4)
        optims += list(make_optimizers(head.gaussians(br), lrs.as_dict()).values())
        optims.append(torch.optim.Adam(head.network_param_groups(br)))
    losses = []
    for _ in range(steps):
        fo = head.render_branch(head.deform("face", windows, eye), V, K, size, size)
        mo = head.render_branch(head.deform("mouth", windows), V, K, size, size)
        img = composite(fo.colors, fo.alphas, mo.colors, mo.alphas, bg)
        loss = (img - target).square().mean()
        for o in optims:
            o.zero_grad(set_to_none=True)
        loss.backward()
        for o in optims:
            o.step()
        losses.append(loss.item())
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first / 4, (first, last)


def test_torso_background_extends_the_neck_under_the_head_only():
    from talkgs.model.head import torso_background

    h, w = 40, 8
    labels = torch.zeros(1, h, w, dtype=torch.uint8)
    labels[0, 10:30, 2:6] = 3  # head (face)
    labels[0, 30:, 1:7] = 1  # torso below it
    frame = torch.zeros(1, h, w, 3, dtype=torch.uint8)
    frame[0, 30:, :, 0] = 200  # torso is red
    frame[0, 10:30, :, 1] = 200  # head is green (must never leak into the background)
    plate = torch.zeros(h, w, 3, dtype=torch.uint8)
    plate[..., 2] = 255  # plate is blue
    bg = torso_background(frame, labels, plate, extend_up=0.1)  # 4 px at H = 40
    red = torch.tensor([200 / 255, 0, 0])
    blue = torch.tensor([0, 0, 1.0])
    assert torch.allclose(bg[0, 26:30, 2:6], red.expand(4, 4, 3))  # neck extended 4 px up
    assert torch.allclose(bg[0, 10:26, 2:6], blue.expand(16, 4, 3))  # higher up: plate
    assert torch.allclose(bg[0, 0:10], blue.expand(10, w, 3))  # background: plate
    assert torch.allclose(bg[0, 26:30, 0], blue.expand(4, 3))  # not beside the head
    assert bg[..., 1].max() == 0  # no ground-truth head pixel in the background


def test_deform_with_landmarks_is_one_pass_of_the_same_field():
    """The training step moves the neutral landmarks in the Gaussians' field evaluation: the
    same Gaussians, and the same landmarks as a separate evaluation of the face field."""
    torch.manual_seed(0)
    head = TalkingHead(small_head_config(), audio_window=16, audio_channels=20, generator=torch.Generator().manual_seed(0))
    head.eval()  # no dropout in the state predictor: both calls see the same codes
    with torch.no_grad():  # a non-trivial field (the planes start at ~1e-4)
        for p in head.branch("face").motion.parameters():
            p.normal_(0.0, 0.3)
    windows = gather_windows(torch.randn(30, 16, 20), torch.tensor([3, 20]))
    eye = eye_code(torch.tensor([0.0, 0.8]), torch.tensor([[0.3, 0.3], [0.05, 0.06]]))
    plain = head.deform("face", windows, eye)
    both = head.deform("face", windows, eye, with_landmarks=True)
    assert plain.landmarks is None and both.landmarks.shape == (2, 468, 3)
    for name in ("means", "quats", "scales", "d_xyz", "audio_att", "eye_att"):
        torch.testing.assert_close(getattr(both, name), getattr(plain, name), rtol=1e-5, atol=1e-6)
    separate = head.face_landmarks(both.code, both.eye)
    torch.testing.assert_close(both.landmarks, separate, rtol=1e-5, atol=1e-6)
    assert (both.landmarks - head.neutral_landmarks).abs().max() > 1e-4  # the field moved them


def test_fixed_fields_deform_exactly_as_the_full_field_until_the_model_trains_again():
    """A renderer's model computes its fields' spatial part once (fix_fields): the same Gaussians
    as evaluating the whole field per call; train() and load_state_dict drop the fixed part."""
    torch.manual_seed(0)
    head = TalkingHead(small_head_config(), audio_window=16, audio_channels=20, generator=torch.Generator().manual_seed(0))
    head.eval()
    with torch.no_grad():  # a non-trivial field (the planes start at ~1e-4)
        for br in ("face", "mouth"):
            for p in head.branch(br).motion.parameters():
                p.normal_(0.0, 0.3)
    windows = gather_windows(torch.randn(30, 16, 20), torch.tensor([3, 20, 7]))
    eye = eye_code(torch.tensor([0.0, 0.8, 0.1]), torch.tensor([[0.3, 0.3], [0.05, 0.06], [0.2, 0.25]]))
    with torch.no_grad():
        full = {"face": head.deform("face", windows, eye), "mouth": head.deform("mouth", windows)}
        head.fix_fields()
        fixed = {"face": head.deform("face", windows, eye), "mouth": head.deform("mouth", windows)}
    assert set(head._fixed_fields) == {"face", "mouth"}
    for br, names in (("face", ("means", "quats", "scales", "d_xyz", "audio_att", "eye_att")), ("mouth", ("means", "d_xyz"))):
        for name in names:
            torch.testing.assert_close(getattr(fixed[br], name), getattr(full[br], name), rtol=1e-5, atol=1e-7)
    assert (full["face"].d_xyz.abs().max() > 1e-4) and (full["mouth"].d_xyz.abs().max() > 1e-4)
    head.eval()
    assert head._fixed_fields, "eval() changes no parameter: the fixed part stays"
    head.load_state_dict(head.state_dict())
    assert not head._fixed_fields
    head.fix_fields()
    head.train()
    assert not head._fixed_fields


def test_frame_inputs_of_a_batch():
    """frame_inputs: float32 windows, eye codes from blink and the open-eye reference, one
    camera per frame, the background as given; refuses mismatched frame counts."""
    from talkgs.model.inputs import frame_inputs

    w2c = torch.eye(4).repeat(3, 1, 1)
    w2c[:, 2, 3] = torch.tensor([0.5, 0.6, 0.7])
    K = torch.tensor([[60.0, 0, 16], [0, 60.0, 16], [0, 0, 1]])
    windows = torch.randn(3, 8, 16, 20).half()
    blink = torch.tensor([0.0, 0.5, 1.0])
    ratio = torch.tensor([[0.3, 0.3], [0.15, 0.2], [0.0, 0.6]])
    bg = torch.rand(3, 4, 5, 3)
    x = frame_inputs(windows, blink, ratio, torch.tensor([0.3, 0.3]), w2c, K, bg)
    assert x.audio.dtype == torch.float32 and torch.equal(x.audio, windows.float())
    torch.testing.assert_close(x.eye, torch.tensor([[0.0, 1.0, 1.0], [0.5, 0.5, 2 / 3], [1.0, 0.0, 1.5]]))
    assert x.viewmats.shape == (3, 1, 4, 4) and torch.equal(x.viewmats[:, 0], w2c)
    assert x.Ks.shape == (3, 1, 3, 3) and torch.equal(x.Ks[2, 0], K)
    assert x.background is bg
    audio, eye, viewmats, Ks, background = x  # unpacks in render_frames' order
    assert eye is x.eye and background is bg
    with pytest.raises(TalkgsError, match="3 audio windows"):
        frame_inputs(windows, blink, ratio, torch.tensor([0.3, 0.3]), w2c[:2], K)
