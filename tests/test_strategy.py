"""talkgs.train.strategy: clone / split / prune with the Adam state kept row-aligned."""

from __future__ import annotations

import math

import pytest
import torch

from talkgs.model.gaussians import init_from_points, make_optimizers
from talkgs.train.config import DensifyConfig
from talkgs.train.strategy import DensifyStrategy, RefineSchedule, duplicate, quat_to_rotmat, remove, render_info

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
W = H = 100  # a gradient g on means2d counts as |g| * 50 in half-image units


def strategy(start=0, stop=100, every=1, screen_prune_start=3000, **config) -> DensifyStrategy:
    """A strategy refining every ``every`` steps in ``(start, stop)`` with ``config``'s thresholds."""
    return DensifyStrategy(DensifyConfig(**config), RefineSchedule(start, stop, every, screen_prune_start))


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_gaussians(scales_m, opacities, device="cpu"):
    """Gaussians with given isotropic scales / opacities; row i is tagged i + 1 in sh0[:, 0, 0]
    and in every Adam state tensor (exp_avg = tag, exp_avg_sq = 2 tag), after one real step."""
    n = len(scales_m)
    pts = torch.zeros(n, 3, device=device)
    pts[:, 0] = torch.arange(n, device=device) * 0.01
    params = init_from_points(pts, init_scale=1e-3, init_opacity=0.5, sh_degree=1)
    opts = make_optimizers(params, {k: 1e-3 for k in params.keys()})
    for p in params.values():
        p.grad = torch.ones_like(p)
    for o in opts.values():
        o.step()
    tags = torch.arange(1, n + 1, dtype=torch.float32, device=device)
    with torch.no_grad():
        params["scales"].copy_(torch.log(torch.tensor(scales_m, device=device))[:, None].expand(n, 3))
        params["opacities"].copy_(torch.logit(torch.tensor(opacities, device=device)))
        params["sh0"][:, 0, 0] = tags
        params["quats"].copy_(torch.tensor([1.0, 0.0, 0.0, 0.0], device=device))
        for name, p in params.items():
            st = opts[name].state[p]
            shape = (n,) + (1,) * (p.ndim - 1)
            st["exp_avg"].copy_(tags.reshape(shape).expand_as(p))
            st["exp_avg_sq"].copy_(2 * tags.reshape(shape).expand_as(p))
    return params, opts


def fake_info(grad_px: torch.Tensor, radii: torch.Tensor) -> dict:
    """Render info whose means2d gradient has norm ``grad_px [V, N]`` half-image units along x."""
    v, n = grad_px.shape
    means2d = torch.zeros(v, 1, n, 2, device=grad_px.device, requires_grad=True)
    g = torch.zeros(v, 1, n, 2, device=grad_px.device)
    g[..., 0] = (grad_px / (W / 2))[:, None] / v  # / v: the loss is a mean over views
    means2d.grad = g
    return {"means2d": means2d, "radii": radii.reshape(v, 1, n), "width": W, "height": H}


def row_tags(params) -> torch.Tensor:
    return params["sh0"][:, 0, 0].detach().round().long().cpu()


def assert_adam_aligned(params, opts, new_tags: set[int]):
    """Each surviving original row carries its own tag in every Adam tensor; new rows carry zeros."""
    tags = row_tags(params)
    for name, p in params.items():
        opt = opts[name]
        assert opt.param_groups[0]["params"][0] is p, name
        st = opt.state[p]
        for key, mult in (("exp_avg", 1.0), ("exp_avg_sq", 2.0)):
            v = st[key]
            assert v.shape == p.shape, (name, key)
            rows = v.reshape(v.shape[0], -1).cpu()
            for i, t in enumerate(tags.tolist()):
                expect = 0.0 if i in new_tags else mult * t
                assert torch.all(rows[i] == expect), (name, key, i, t, rows[i])


@pytest.mark.parametrize("device", DEVICES)
def test_clone_split_prune_keep_adam_rows_aligned(device):
    # 0: small + high grad -> clone; 1: large + high grad -> split; 2: untouched; 3: low opacity -> pruned
    params, opts = make_gaussians([0.001, 0.01, 0.001, 0.001], [0.9, 0.9, 0.9, 0.01], device)
    parent_mean = params["means"][1].detach().clone()
    strat = strategy(grad_threshold=2e-4, grow_scale_m=0.002, prune_opacity=(0.05, 0.05))
    state = strat.initialize_state(params)
    info = fake_info(torch.tensor([[1e-3, 1e-3, 1e-6, 1e-6]], device=device), torch.ones(1, 4, device=device))
    strat.step_pre_backward(params, opts, state, 1, info)
    report = strat.step_post_backward(params, opts, state, 1, info)
    assert report == {"cloned": 1, "split": 1, "pruned": 1}
    # Rows: [0, 2] kept, then the clone of 0, then split children of 1.
    assert row_tags(params).tolist() == [1, 3, 1, 2, 2]
    assert_adam_aligned(params, opts, new_tags={2, 3, 4})
    scales = torch.exp(params["scales"]).detach()
    torch.testing.assert_close(scales[3:], torch.full((2, 3), 0.01 / 1.6, device=device))
    torch.testing.assert_close(scales[2], scales[0])
    torch.testing.assert_close(params["means"][2], params["means"][0])
    children = params["means"][3:].detach()
    assert not torch.equal(children[0], children[1])
    assert ((children - parent_mean).abs() < 0.05).all()  # within 5 sigma of the 0.01 m parent
    for v in state.values():
        assert v.shape == (5,) and v.abs().sum() == 0
    # The edited optimisers still step their new parameters.
    before = params["means"].detach().clone()
    for p in params.values():
        p.grad = torch.ones_like(p)
    for o in opts.values():
        o.step()
    assert (params["means"] != before).all()


def test_cap_on_the_number_of_gaussians_keeps_the_strongest():
    params, opts = make_gaussians([0.001] * 4, [0.9] * 4)
    strat = strategy(max_gaussians=6, prune_opacity=(0.0, 0.0))
    state = strat.initialize_state(params)
    info = fake_info(torch.tensor([[1e-3, 5e-3, 2e-3, 4e-3]]), torch.ones(1, 4))
    strat.step_post_backward(params, opts, state, 1, info)
    assert params["means"].shape[0] == 6
    assert row_tags(params).tolist() == [1, 2, 3, 4, 2, 4]  # the two highest gradients were cloned
    assert_adam_aligned(params, opts, new_tags={4, 5})
    # At the cap nothing grows any more.
    state = strat.initialize_state(params)
    strat.step_post_backward(params, opts, state, 2, fake_info(torch.full((1, 6), 1e-2), torch.ones(1, 6)))
    assert params["means"].shape[0] == 6


def test_batched_statistics_count_visible_views_only():
    params, opts = make_gaussians([0.001] * 3, [0.9] * 3)
    strat = strategy(start=1000, stop=2000, every=100)
    state = strat.initialize_state(params)
    grad = torch.tensor([[1e-3, 2e-3, 5e-3], [3e-3, 4e-3, 5e-3]])  # 2 views (frames)
    radii = torch.tensor([[2, 3, 0], [4, 0, 0]], dtype=torch.int32)
    strat.step_post_backward(params, opts, state, 10, fake_info(grad, radii))
    torch.testing.assert_close(state["grad2d"], torch.tensor([4e-3, 2e-3, 0.0]))
    torch.testing.assert_close(state["count"], torch.tensor([2.0, 1.0, 0.0]))
    torch.testing.assert_close(state["radii"], torch.tensor([4.0, 3.0, 0.0]))
    # Per-axis radii [..., N, 2] (gsplat >= 1.5) are reduced to their max.
    info = fake_info(grad, radii)
    info["radii"] = torch.stack([info["radii"], info["radii"] * 0], dim=-1)
    strat.step_post_backward(params, opts, state, 11, info)
    torch.testing.assert_close(state["count"], torch.tensor([4.0, 2.0, 0.0]))
    assert params["means"].shape[0] == 3  # no refinement before refine_start


def test_size_pruning_starts_late_and_opacity_threshold_ramps():
    strat = strategy(screen_prune_start=50, max_screen_radius=0.2, max_world_scale_m=0.015, grad_threshold=1.0,
                     prune_opacity=(0.05, 0.3))  # 20 px of the 100 px image
    assert strat.prune_opacity(0) == pytest.approx(0.05) and strat.prune_opacity(50) == pytest.approx(0.175)
    assert strat.prune_opacity(1000) == pytest.approx(0.3)
    # 0: huge on screen, 1: too big in the world, 2: fine
    for step, expect in ((10, [1, 2, 3]), (60, [3])):
        params, opts = make_gaussians([0.001, 0.02, 0.001], [0.9, 0.9, 0.9])
        state = strat.initialize_state(params)
        info = fake_info(torch.zeros(1, 3), torch.tensor([[30, 5, 5]]))
        strat.step_post_backward(params, opts, state, step, info)
        assert row_tags(params).tolist() == expect
        assert_adam_aligned(params, opts, new_tags=set())


def test_public_ops_and_never_empty():
    params, opts = make_gaussians([0.001] * 3, [0.01] * 3)
    state = {"x": torch.arange(3.0)}
    duplicate(params, opts, state, torch.tensor([False, True, False]))
    remove(params, opts, state, torch.tensor([True, False, False, False]))
    assert row_tags(params).tolist() == [2, 3, 2] and state["x"].tolist() == [1.0, 2.0, 1.0]
    assert_adam_aligned(params, opts, new_tags={2})
    strat = strategy(stop=10, prune_opacity=(0.05, 0.3))
    st = strat.initialize_state(params)
    strat.step_post_backward(params, opts, st, 1, fake_info(torch.zeros(1, 3), torch.ones(1, 3)))
    assert params["means"].shape[0] == 3  # all below the opacity threshold: the branch is kept
    q = torch.tensor([math.cos(0.5), 0.0, 0.0, math.sin(0.5)])  # 1 rad about z
    R = quat_to_rotmat(q)
    torch.testing.assert_close(R @ R.T, torch.eye(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(R[0, 0], torch.tensor(math.cos(1.0)))


def test_with_real_renders_and_batch():
    """Rasterize B = 2 frames, backward, and let the strategy grow the Gaussians under the loss."""
    from talkgs.raster import rasterize

    torch.manual_seed(0)
    n, size = 40, 32
    pts = (torch.rand(n, 3) - 0.5) * 0.08
    params = init_from_points(pts, init_scale=0.004, init_opacity=0.8, sh_degree=0)
    opts = make_optimizers(params, {"means": 1e-4, "quats": 1e-3, "scales": 5e-3, "opacities": 5e-2, "sh0": 1e-2, "shN": 1e-3})
    strat = strategy(start=2, every=3, grow_scale_m=0.002, grad_threshold=1e-5)
    state = strat.initialize_state(params)
    V = torch.eye(4).repeat(2, 1, 1, 1)
    V[..., 1, 1] = V[..., 2, 2] = -1.0
    V[..., 2, 3] = 0.5
    V[1, 0, 0, 3] = 0.01  # second frame: camera moved sideways
    K = torch.tensor([[60.0, 0, 16], [0, 60.0, 16], [0, 0, 1]]).expand(2, 1, 3, 3)
    target = torch.rand(2, 1, size, size, 3)
    counts = []
    gen = torch.Generator().manual_seed(0)  # a CPU generator, as the trainer passes
    for step in range(1, 7):
        m = params["means"][None].expand(2, -1, -1)
        out = rasterize(m, params["quats"][None].expand(2, -1, -1), torch.exp(params["scales"])[None].expand(2, -1, -1),
                        torch.sigmoid(params["opacities"])[None].expand(2, -1), sh_coeffs=torch.cat([params["sh0"], params["shN"]], 1)[None].expand(2, -1, -1, -1),
                        viewmats=V, Ks=K, width=size, height=size, backend="torch")
        info = render_info(out, size, size)
        strat.step_pre_backward(params, opts, state, step, info)
        loss = (out.colors - target).abs().mean()
        for o in opts.values():
            o.zero_grad(set_to_none=True)
        loss.backward()
        assert out.means2d.grad is not None and out.means2d.grad.shape == (2, 1, params["means"].shape[0], 2)
        for o in opts.values():
            o.step()
        strat.step_post_backward(params, opts, state, step, info, generator=gen)
        counts.append(params["means"].shape[0])
        assert all(v.shape[0] == counts[-1] for v in state.values())
    assert counts[-1] > n  # the large (4 mm) Gaussians under a strong loss were split


def test_refine_schedule_follows_the_stage_length():
    """Every 100 steps in long stages, 20 refinements in short ones (at least 5 steps apart); from
    a tenth of the densification period (at most step 500); size pruning from its half."""
    assert RefineSchedule.for_stage(0.9, 4500) == RefineSchedule(start=405, stop=4050, every=100, screen_prune_start=2025)
    assert RefineSchedule.for_stage(0.9, 60_000) == RefineSchedule(start=500, stop=54_000, every=100, screen_prune_start=27_000)
    assert RefineSchedule.for_stage(0.9, 160) == RefineSchedule(start=14, stop=144, every=8, screen_prune_start=72)
    assert RefineSchedule.for_stage(0.5, 60) == RefineSchedule(start=3, stop=30, every=5, screen_prune_start=15)
    assert RefineSchedule.for_stage(0.9, 2250, every=50) == RefineSchedule(start=202, stop=2025, every=50, screen_prune_start=1012)
    # until 0: no step refines or collects statistics.
    params, opts = make_gaussians([0.001, 0.01], [0.9, 0.01])
    strat = DensifyStrategy(DensifyConfig(until=0.0), RefineSchedule.for_stage(0.0, 100))
    state = strat.initialize_state(params)
    for step in range(100):
        info = fake_info(torch.full((1, 2), 1.0), torch.ones(1, 2))
        assert strat.step_post_backward(params, opts, state, step, info) == {"cloned": 0, "split": 0, "pruned": 0}
    assert params["means"].shape[0] == 2 and state["count"].sum() == 0
