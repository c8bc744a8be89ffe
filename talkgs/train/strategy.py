"""Adaptive density control of one branch's Gaussians: clone, split, prune (3DGS, gsplat-style).

One :class:`DensifyStrategy` per branch, made from the stage's
:class:`talkgs.train.config.DensifyConfig` (the thresholds) and a :class:`RefineSchedule` (the
steps, from the stage's length). The trainer calls, every step::

    info = render_info(out, width, height)          # out: RenderOutput of this branch
    strategy.step_pre_backward(params, optimizers, state, step, info)
    loss.backward()
    strategy.step_post_backward(params, optimizers, state, step, info)

Statistics: the screen-space gradient of each Gaussian's projected mean, in "half-image" units
(``d loss / d means2d`` times ``(W / 2, H / 2)``: the NDC gradient of 3DGS, which gsplat keeps),
averaged over the views where the Gaussian was visible. With a batch of ``B`` frames (each frame
its own deformed copy of the Gaussians) every frame is one view.

Every refinement (every ``schedule.every`` steps in ``(schedule.start, schedule.stop)``):

* grow: Gaussians whose mean gradient exceeds ``grad_threshold`` are cloned when their largest
  scale is <= ``grow_scale_m`` metres, else split in two (children sampled from the parent,
  scales / ``split_factor``); the total never exceeds ``max_gaussians`` (highest gradients first);
* prune: opacity below a threshold that ramps linearly over ``[0, schedule.stop]`` between the two
  values of ``prune_opacity`` (the original: 0.05 -> 0.30), and after
  ``schedule.screen_prune_start`` screen radius > ``max_screen_radius`` x the image size or
  largest scale > ``max_world_scale_m``.

Size thresholds are absolute head-frame metres, not multiples of the original's camera extent
(which shrinks with a still head). Every edit updates the ParameterDict, each parameter's Adam
state rows (``exp_avg``, ``exp_avg_sq``; new rows start at zero) and the statistics together.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from talkgs.errors import TalkgsError
from talkgs.train.config import DensifyConfig

Params = nn.ParameterDict
Optimizers = Mapping[str, torch.optim.Optimizer]


# ----------------------------------------------------------------------------- geometry
def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[..., 3, 3]`` from quaternions ``[..., 4]`` (w, x, y, z; normalised here)."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*quats.shape[:-1], 3, 3)


# ----------------------------------------------------------------------------- editing core
@torch.no_grad()
def _update_params_and_optimizers(
    params: Params,
    optimizers: Optimizers,
    param_fn: Callable[[str, torch.Tensor], torch.Tensor],
    adam_fn: Callable[[torch.Tensor], torch.Tensor],
) -> None:
    """Replace every parameter by ``param_fn(name, old)`` and each row-indexed optimiser state
    tensor ``v [N, ...]`` by ``adam_fn(v)``; the optimiser then points at the new parameter."""
    for name in list(params.keys()):
        old = params[name]
        new = nn.Parameter(param_fn(name, old.detach()), requires_grad=old.requires_grad)
        params[name] = new
        opt = optimizers.get(name)
        if opt is None:
            continue
        found = False
        for group in opt.param_groups:
            for i, p in enumerate(group["params"]):
                if p is old:
                    group["params"][i] = new
                    found = True
        if not found:
            raise TalkgsError(f"optimizer for Gaussian parameter {name!r} does not hold that parameter")
        st = opt.state.pop(old, None)
        if st:
            for k, v in st.items():
                # "step" (0-d) is shared by all rows and stays as it is.
                if torch.is_tensor(v) and v.ndim > 0 and v.shape[0] == old.shape[0]:
                    st[k] = adam_fn(v)
            opt.state[new] = st


def _update_state(state: dict, fn: Callable[[torch.Tensor], torch.Tensor], n_old: int) -> None:
    for k, v in list(state.items()):
        if torch.is_tensor(v) and v.ndim > 0 and v.shape[0] == n_old:
            state[k] = fn(v)


@torch.no_grad()
def duplicate(params: Params, optimizers: Optimizers, state: dict, mask: torch.Tensor) -> None:
    """Clone the Gaussians in ``mask [N]``: exact copies appended at the end (Adam state zero)."""
    n = params["means"].shape[0]
    sel = torch.where(mask)[0]
    _update_params_and_optimizers(
        params,
        optimizers,
        lambda name, p: torch.cat([p, p[sel]]),
        lambda v: torch.cat([v, torch.zeros_like(v[sel])]),
    )
    _update_state(state, lambda v: torch.cat([v, v[sel]]), n)


@torch.no_grad()
def split(
    params: Params,
    optimizers: Optimizers,
    state: dict,
    mask: torch.Tensor,
    split_factor: float = 1.6,
    generator: torch.Generator | None = None,
) -> None:
    """Replace each Gaussian in ``mask [N]`` by 2 children drawn from it (positions ~ the parent's
    Gaussian, scales / ``split_factor``); children are appended at the end, Adam state zero.
    Assumes ``scales`` stores log-scales (`talkgs.model.gaussians`)."""
    n = params["means"].shape[0]
    sel = torch.where(mask)[0]
    rest = torch.where(~mask)[0]
    m = sel.numel()
    scales = torch.exp(params["scales"][sel])  # [M, 3]
    rot = quat_to_rotmat(params["quats"][sel])  # [M, 3, 3]
    # Draw on the generator's device (the trainer's is a CPU one), then move.
    gen_dev = generator.device if generator is not None else scales.device
    noise = torch.randn(2, m, 3, generator=generator, device=gen_dev, dtype=scales.dtype).to(scales.device)
    offsets = torch.einsum("mij,bmj->bmi", rot, scales[None] * noise)  # [2, M, 3]

    def param_fn(name: str, p: torch.Tensor) -> torch.Tensor:
        if name == "means":
            child = (p[sel][None] + offsets).reshape(-1, 3)
        elif name == "scales":
            child = torch.log(scales / split_factor).repeat(2, 1)
        else:
            child = p[sel].repeat(2, *([1] * (p.ndim - 1)))
        return torch.cat([p[rest], child])

    _update_params_and_optimizers(
        params,
        optimizers,
        param_fn,
        lambda v: torch.cat([v[rest], v.new_zeros((2 * m, *v.shape[1:]))]),
    )
    _update_state(state, lambda v: torch.cat([v[rest], v[sel].repeat(2, *([1] * (v.ndim - 1)))]), n)


@torch.no_grad()
def remove(params: Params, optimizers: Optimizers, state: dict, mask: torch.Tensor) -> None:
    """Delete the Gaussians in ``mask [N]`` (also usable by the trainer, e.g. background-coloured ones)."""
    n = params["means"].shape[0]
    keep = torch.where(~mask)[0]
    _update_params_and_optimizers(params, optimizers, lambda name, p: p[keep], lambda v: v[keep])
    _update_state(state, lambda v: v[keep], n)


def render_info(out: Any, width: int, height: int) -> dict:
    """The statistics input of the strategy from a ``RenderOutput``: means2d, radii, image size."""
    return {"means2d": out.means2d, "radii": out.radii, "width": int(width), "height": int(height)}


# ----------------------------------------------------------------------------- strategy
@dataclasses.dataclass(frozen=True)
class RefineSchedule:
    """The steps of one stage at which a :class:`DensifyStrategy` refines."""

    start: int
    """First step (exclusive) at which to refine."""
    stop: int
    """No refinement from this step on (also ends statistics collection)."""
    every: int
    """Refine every this many steps."""
    screen_prune_start: int
    """Size-based pruning only after this step."""

    @classmethod
    def for_stage(cls, until: float, iterations: int, every: int = 0) -> "RefineSchedule":
        """The schedule of a stage of ``iterations`` steps that densifies for the fraction
        ``until`` of them: every ``every`` steps (0: every 100, more often in short stages), from
        a tenth of the period (at most step 500) on, size pruning from half of it on."""
        stop = int(iterations * until)
        return cls(
            start=min(500, max(1, stop // 10)),
            stop=stop,
            every=every if every > 0 else 100 if iterations >= 2000 else max(5, iterations // 20),
            screen_prune_start=stop // 2,
        )


class DensifyStrategy:
    """Clone / split / prune of one branch with the thresholds of ``config`` at the steps of
    ``schedule`` (see the module docstring).

    Gradients are multiplied by the number of rendered views: the loss is a mean over the
    ``B x C`` views, and the threshold must not depend on the batch size (gsplat's
    ``n_cameras`` factor)."""

    def __init__(self, config: DensifyConfig, schedule: RefineSchedule):
        self.config = config
        self.schedule = schedule
        self._half: tuple | None = None  # (key, [2] tensor) of _half_size

    def prune_opacity(self, step: int) -> float:
        """Opacity threshold at ``step`` (linear ramp over ``[0, schedule.stop]``)."""
        t = min(max(step / max(self.schedule.stop, 1), 0.0), 1.0)
        start, end = self.config.prune_opacity
        return start + (end - start) * t

    def initialize_state(self, params: Params) -> dict:
        """Per-Gaussian statistics: accumulated gradient norm, visible count, max screen radius (px)."""
        n = params["means"].shape[0]
        dev = params["means"].device
        return {
            "grad2d": torch.zeros(n, device=dev),
            "count": torch.zeros(n, device=dev),
            "radii": torch.zeros(n, device=dev),
        }

    def step_pre_backward(self, params: Params, optimizers: Optimizers, state: dict, step: int, info: Mapping) -> None:
        """Keep the gradient of the projected means (call before ``loss.backward()``)."""
        means2d = info["means2d"]
        if step < self.schedule.stop and means2d.requires_grad:
            means2d.retain_grad()

    @torch.no_grad()
    def step_post_backward(
        self,
        params: Params,
        optimizers: Optimizers,
        state: dict,
        step: int,
        info: Mapping,
        generator: torch.Generator | None = None,
    ) -> dict[str, int]:
        """Accumulate statistics; on refinement steps grow and prune. Returns counts of what changed."""
        report = {"cloned": 0, "split": 0, "pruned": 0}
        if step >= self.schedule.stop:
            return report
        self._accumulate(params, state, info)
        if step > self.schedule.start and step % self.schedule.every == 0:
            report["cloned"], report["split"] = self._grow(params, optimizers, state, generator)
            report["pruned"] = self._prune(params, optimizers, state, step, info)
            for v in state.values():
                v.zero_()
        return report

    # ------------------------------------------------------------------ internals
    def _half_size(self, like: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """``[2]`` (width / 2, height / 2) on ``like``'s device, made once and filled on the device
        (a tensor from host data would be a blocking copy every step)."""
        key = (like.device, like.dtype, width, height)
        cached = self._half
        if cached is None or cached[0] != key:
            half = like.new_full((2,), width / 2.0)
            half[1:].fill_(height / 2.0)
            self._half = cached = (key, half)
        return cached[1]

    def _accumulate(self, params: Params, state: dict, info: Mapping) -> None:
        means2d = info["means2d"]
        grad = means2d.grad
        if grad is None:
            return
        n = params["means"].shape[0]
        if grad.shape[-2:] != (n, 2):
            raise TalkgsError(f"means2d grad has shape {tuple(grad.shape)}, expected [..., {n}, 2]")
        if state["grad2d"].shape[0] != n:
            raise TalkgsError(f"strategy state has {state['grad2d'].shape[0]} rows for {n} Gaussians")
        half = self._half_size(grad, info["width"], info["height"])
        g = grad.reshape(-1, n, 2) * half  # [V, N, 2], V = all batch and camera views
        g = g * g.shape[0]  # the loss is a mean over the views
        radii = info["radii"]
        if radii.ndim == grad.ndim:  # per-axis radii [..., N, 2] (gsplat >= 1.5)
            radii = radii.amax(dim=-1)
        r = radii.reshape(-1, n).to(g.dtype)  # [V, N]
        vis = r > 0
        state["grad2d"] += (g.norm(dim=-1) * vis).sum(dim=0)
        state["count"] += vis.sum(dim=0).to(g.dtype)
        state["radii"] = torch.maximum(state["radii"], r.amax(dim=0))

    def _grow(self, params: Params, optimizers: Optimizers, state: dict, generator) -> tuple[int, int]:
        n = params["means"].shape[0]
        avg = state["grad2d"] / state["count"].clamp_min(1.0)
        high = avg > self.config.grad_threshold
        budget = max(self.config.max_gaussians - n, 0)
        if int(high.sum()) > budget:
            # Each clone or split adds one Gaussian: keep the strongest `budget` candidates.
            keep = torch.zeros_like(high)
            if budget > 0:
                keep[torch.topk(torch.where(high, avg, -1.0), budget).indices] = True
            high = keep
        small = torch.exp(params["scales"]).amax(dim=-1) <= self.config.grow_scale_m
        is_clone = high & small
        is_split = high & ~small
        n_clone, n_split = int(is_clone.sum()), int(is_split.sum())
        if n_clone:
            duplicate(params, optimizers, state, is_clone)
            is_split = torch.cat([is_split, is_split.new_zeros(n_clone)])
        if n_split:
            split(params, optimizers, state, is_split, self.config.split_factor, generator)
        return n_clone, n_split

    def _prune(self, params: Params, optimizers: Optimizers, state: dict, step: int, info: Mapping) -> int:
        prune = torch.sigmoid(params["opacities"]) < self.prune_opacity(step)
        if step > self.schedule.screen_prune_start:
            # Relative to the image, so the rule means the same at any training resolution.
            max_radius_px = self.config.max_screen_radius * max(info["width"], info["height"])
            prune |= state["radii"] > max_radius_px
            prune |= torch.exp(params["scales"]).amax(dim=-1) > self.config.max_world_scale_m
        n_prune = int(prune.sum())
        if n_prune == params["means"].shape[0]:
            return 0  # never empty a branch: a later refinement can still prune
        if n_prune:
            remove(params, optimizers, state, prune)
        return n_prune
