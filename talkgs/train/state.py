"""The state of a training run (:class:`TrainState`): the model and everything that moves while
it trains (optimisers, densification, sampler, random generators, position in the schedule,
history). A checkpoint is its :meth:`TrainState.state_dict`; a resumed run loads it back with
:meth:`TrainState.load_state_dict`.

Also the set-up of a new run from its dataset: the initial model (:func:`new_model`), the
person's neutral landmarks and mouth-state basis (:func:`fit_face_model`), and the frame sampler
with its curriculum (:func:`training_sampler`).
"""

from __future__ import annotations

import json

import numpy as np
import torch

from talkgs.data import LABEL_MOUTH, Dataset, label_area
from talkgs.landmarks import measure_offsets
from talkgs.model.audio_encoder import AudioNet
from talkgs.model.head import TalkingHead
from talkgs.model.mouth import neutral_landmarks
from talkgs.train.config import StageConfig, TrainConfig
from talkgs.train.sampler import MIN_MOUTH_AREA_PX, Curriculum, FrameSampler, cap_signal
from talkgs.train.stages import trainable, trained_branches
from talkgs.train.strategy import DensifyStrategy, RefineSchedule, render_info

STAGE_SEED_STRIDE = 7919  # stage i's generator is seeded with seed + i x this


# --------------------------------------------------------------------------------- set-up


def input_stat_frames(ds: Dataset, margin: int = 4) -> torch.Tensor:
    """Training frames whose audio windows hold only real audio: the first and last ``margin``
    frames of the whole clip are left out, since their windows are padded with the feature
    kind's silence level. The audio encoder's input statistics and clamp range (see
    ``AudioEncoder``) come from these, so they do not depend on whether the training range
    touches the clip's ends."""
    n_all = int(ds.meta["n_frames"])
    g = ds.train_idx + ds.frame_offset
    keep = ds.train_idx[(g >= margin) & (g < n_all - margin)]
    return keep if keep.numel() > 0 else ds.train_idx


def new_model(cfg: TrainConfig, ds: Dataset, device: torch.device) -> TalkingHead:
    """The initial model of a run (seeded by ``cfg.seed``) with its audio encoders' input
    statistics taken from the training frames."""
    gen = torch.Generator().manual_seed(cfg.seed)
    _, aw, ac = ds.audio.shape
    model = cfg.model.setup(aw, ac, generator=gen).to(device)
    train_audio = ds.audio[input_stat_frames(ds)]
    for name in ("face", "mouth"):
        net = model.branch(name).audio
        if isinstance(net, AudioNet):
            net.encoder.set_input_stats(train_audio)
    return model


def _lifted_offsets(ds: Dataset) -> np.ndarray:
    lm = ds.tracks["landmarks"].cpu().numpy()
    return measure_offsets(lm, ds.w2c.cpu().numpy(), ds.K.cpu().numpy())  # [N, 468, 3]


def _encode(model: TalkingHead, offsets: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model.mouth_basis.encode(torch.as_tensor(offsets, device=model.neutral_landmarks.device)).float()


def fit_face_model(model: TalkingHead, ds: Dataset) -> torch.Tensor | None:
    """Fit the person's neutral landmarks (and, for mouth_state heads, the mouth-state basis) to
    the dataset's tracked landmarks of the training frames, store them in ``model``, and return
    the measured mouth state of every loaded frame ``[N, m]`` on the device (None for
    audio-conditioned heads). Deterministic: refitting gives the same values."""
    offsets = _lifted_offsets(ds)
    train = ds.train_idx.cpu().numpy()
    model.neutral_landmarks.copy_(torch.as_tensor(neutral_landmarks(offsets[train])))
    if model.mouth_basis is None:
        return None
    model.mouth_basis.fit(offsets[train])
    return _encode(model, offsets)


def measured_states(model: TalkingHead, ds: Dataset) -> torch.Tensor | None:
    """The mouth state ``[N, m]`` of every loaded frame in ``model``'s fitted basis (a resumed
    run's; None for audio-conditioned heads)."""
    return None if model.mouth_basis is None else _encode(model, _lifted_offsets(ds))


def training_sampler(ds: Dataset, seed: int, image_scale: float, rank: int = 0, world_size: int = 1
                     ) -> tuple[FrameSampler, Curriculum]:
    """The sampler of the training frames (windows over the capped mouth opening, among frames
    whose mouth interior is visible, and over the blink) and its curriculum."""
    tr = ds.tracks
    mouth_area = label_area(ds.labels, LABEL_MOUTH).cpu().numpy()
    mouth_open = tr["mouth_open"].cpu().numpy().astype(np.float64)
    train = ds.train_idx.cpu().numpy()
    capped, p25, ub = cap_signal(mouth_open, train)
    min_area = MIN_MOUTH_AREA_PX * (image_scale**2)
    sampler = FrameSampler(
        train,
        signals={"mouth_open": capped, "blink": tr["blink"].cpu().numpy()},
        masks={"mouth_visible": mouth_area >= min_area},
        seed=seed,
        rank=rank,
        world_size=world_size,
    )
    return sampler, Curriculum(p25, ub)


def stage_optimizers(model: TalkingHead, stage: StageConfig):
    """``(gaussian, network)``: Adam per Gaussian parameter that ``stage`` trains (what
    densification edits) ``{branch: {param: Adam}}``, and AdamW over the trained branches'
    networks (None in fuse). Sets ``requires_grad`` of every parameter to what the stage trains."""
    device = model.neutral_landmarks.device
    gauss: dict[str, dict[str, torch.optim.Optimizer]] = {}
    for branch in trained_branches(stage):
        opts = model.gaussian_optimizers(branch)
        gs = model.gaussians(branch)
        for name in list(opts):
            keep = trainable(stage, branch, name)
            gs[name].requires_grad_(keep)
            if not keep:
                del opts[name]
        gauss[branch] = opts
    nets = None
    if stage.name != "fuse":
        groups = []
        for branch in trained_branches(stage):
            groups += model.network_param_groups(branch)
        fused = device.type == "cuda"
        nets = torch.optim.AdamW(groups, betas=(0.9, 0.99), weight_decay=1e-4, **({"fused": True} if fused else {}))
    for branch in ("face", "mouth"):
        train_nets = stage.name != "fuse" and branch in trained_branches(stage)
        br = model.branch(branch)
        for p in list(br.motion.parameters()) + list(br.audio.parameters()):
            p.requires_grad_(train_nets)
        if branch not in trained_branches(stage):
            for p in br.gaussians.parameters():
                p.requires_grad_(False)
    return gauss, nets


# --------------------------------------------------------------------------------- the state


class TrainState:
    """Everything a run changes as it trains, on the model's device.

    Between stages only the model, the sampler, the counters (``stage_index``, ``stage_step``,
    ``global_step``, ``completed``), the predictor's report, the history and the stage times
    are set; :meth:`begin_stage` adds the stage's optimisers, densification strategies (with
    their statistics) and random generator (background colours, split positions), and
    :meth:`end_stage` drops them and moves on to the next stage.
    """

    def __init__(self, model: TalkingHead, sampler: FrameSampler, eye_ratio_ref: torch.Tensor,
                 stages: tuple[StageConfig, ...], seed: int):
        self.model = model
        self.sampler = sampler
        self.eye_ratio_ref = eye_ratio_ref  # [2] open-eye reference of the eye code (saved for rendering)
        self.stages = tuple(stages)
        self.seed = seed
        self.stage_index = 0
        self.stage_step = 0  # steps done in the current stage
        self.global_step = 0  # steps over all stages (logging)
        self.completed: list[str] = []
        self.predictor_report: dict | None = None
        self.history: list[dict] = []  # the logged steps' records
        self.stage_times: dict[str, float] = {}  # wall seconds per stage (and the predictor's fit)
        self.stage_steps: dict[str, int] = {}  # steps run per stage
        self._clear_stage()

    def _clear_stage(self) -> None:
        self.gaussian_opts: dict[str, dict[str, torch.optim.Optimizer]] = {}
        self.network_opt: torch.optim.Optimizer | None = None
        self.strategies: dict[str, DensifyStrategy] = {}
        self.densify_state: dict[str, dict[str, torch.Tensor]] = {}
        self.generator: torch.Generator | None = None
        self._base_lrs: dict[str, float] = {}  # branch -> the means' learning rate at the stage's start
        self._network_base_lrs: list[float] = []

    # ------------------------------------------------------------------ position
    @property
    def finished(self) -> bool:
        """Every stage of the schedule is done."""
        return self.stage_index >= len(self.stages)

    @property
    def stage(self) -> StageConfig:
        return self.stages[self.stage_index]

    @property
    def in_stage(self) -> bool:
        """The current stage's optimisers exist (:meth:`begin_stage` was called)."""
        return self.generator is not None

    def begin_stage(self) -> None:
        """Fresh optimisers, strategies and generator of the current stage."""
        stage = self.stage
        self.gaussian_opts, self.network_opt = stage_optimizers(self.model, stage)
        self._base_lrs = {b: opts["means"].param_groups[0]["lr"] for b, opts in self.gaussian_opts.items() if "means" in opts}
        self._network_base_lrs = [g["lr"] for g in self.network_opt.param_groups] if self.network_opt else []
        self.strategies, self.densify_state = {}, {}
        if stage.densify is not None:
            schedule = RefineSchedule.for_stage(stage.densify.until, stage.iterations, stage.densify.every)
            for branch in trained_branches(stage):
                self.strategies[branch] = strat = DensifyStrategy(stage.densify, schedule)
                self.densify_state[branch] = strat.initialize_state(self.model.gaussians(branch))
        self.generator = torch.Generator(device="cpu").manual_seed(self.seed + STAGE_SEED_STRIDE * self.stage_index)

    def end_stage(self) -> None:
        """Record the current stage as completed and move to the next one's first step."""
        self.completed.append(self.stage.name)
        self.stage_index += 1
        self.stage_step = 0
        self._clear_stage()

    # ------------------------------------------------------------------ one step
    def set_learning_rates(self, progress: float) -> None:
        """Positions' and networks' learning rates at ``progress`` in [0, 1] of the stage: the
        stage's start values times ``lr_decay ** progress``."""
        decay = self.stage.lr_decay**progress
        for b, opts in self.gaussian_opts.items():
            if "means" in opts:
                opts["means"].param_groups[0]["lr"] = self._base_lrs[b] * decay
        if self.network_opt is not None:
            for g, lr0 in zip(self.network_opt.param_groups, self._network_base_lrs):
                g["lr"] = lr0 * decay

    def densify_before_backward(self, renders: dict, width: int, height: int) -> None:
        for branch, strat in self.strategies.items():
            strat.step_pre_backward(self.model.gaussians(branch), self.gaussian_opts[branch], self.densify_state[branch],
                                    self.stage_step, render_info(renders[branch], width, height))

    def densify_after_backward(self, renders: dict, width: int, height: int) -> None:
        for branch, strat in self.strategies.items():
            strat.step_post_backward(self.model.gaussians(branch), self.gaussian_opts[branch], self.densify_state[branch],
                                     self.stage_step, render_info(renders[branch], width, height), generator=self.generator)

    def optimizer_step(self) -> None:
        """Step every optimiser, clear the gradients and count the step."""
        for opts in self.gaussian_opts.values():
            for o in opts.values():
                o.step()
                o.zero_grad(set_to_none=True)
        if self.network_opt is not None:
            self.network_opt.step()
            self.network_opt.zero_grad(set_to_none=True)
        self.stage_step += 1
        self.global_step += 1

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Tensors and plain values only (``torch.load(weights_only=True)`` reads them back):
        ``model`` (its state dict), ``eye_ratio_ref``, the counters, ``predictor_report`` (JSON),
        ``history``, ``stage_times``, ``stage_steps``, ``sampler`` (its RNG as JSON and its
        queue), ``torch_rng`` (the global generator), and inside a stage ``optimizers``
        (``gaussians`` {branch: {param: state}}, ``networks``, ``densify`` {branch: statistics})
        and ``stage_rng`` (the stage's generator); outside a stage those two are None."""
        sampler = self.sampler.state_dict()
        optimizers = None
        if self.in_stage:
            optimizers = {
                "gaussians": {b: {k: o.state_dict() for k, o in opts.items()} for b, opts in self.gaussian_opts.items()},
                "networks": self.network_opt.state_dict() if self.network_opt is not None else None,
                "densify": {b: dict(s) for b, s in self.densify_state.items()},
            }
        return {
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "eye_ratio_ref": self.eye_ratio_ref.detach().cpu().clone(),
            "stage_index": self.stage_index,
            "stage_step": self.stage_step,
            "global_step": self.global_step,
            "completed": list(self.completed),
            "predictor_report": json.dumps(self.predictor_report),
            "history": [dict(r) for r in self.history],
            "stage_times": dict(self.stage_times),
            "stage_steps": dict(self.stage_steps),
            "sampler": {"rng": json.dumps(sampler["rng"]), "queue": torch.as_tensor(np.asarray(sampler["queue"]))},
            "torch_rng": torch.get_rng_state(),
            "optimizers": optimizers,
            "stage_rng": self.generator.get_state() if self.in_stage else None,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where :meth:`state_dict` was taken: model, counters, sampler, the
        global generator and, inside a stage, the stage's optimisers, densification statistics
        and generator (rebuilt for the current stage, then loaded)."""
        self.model.load_state_dict(state["model"])
        self.eye_ratio_ref = state["eye_ratio_ref"]
        self.stage_index = int(state["stage_index"])
        self.stage_step = int(state["stage_step"])
        self.global_step = int(state["global_step"])
        self.completed = list(state["completed"])
        self.predictor_report = json.loads(state["predictor_report"])
        self.history = [dict(r) for r in state["history"]]
        self.stage_times = dict(state["stage_times"])
        self.stage_steps = dict(state["stage_steps"])
        self.sampler.load_state_dict({"rng": json.loads(state["sampler"]["rng"]), "queue": state["sampler"]["queue"].numpy()})
        torch.set_rng_state(state["torch_rng"])
        self._clear_stage()
        saved = state["optimizers"]
        if saved is None or self.finished:
            return
        self.begin_stage()
        for b, opts in self.gaussian_opts.items():
            for k, o in opts.items():
                o.load_state_dict(saved["gaussians"][b][k])
        if self.network_opt is not None:
            self.network_opt.load_state_dict(saved["networks"])
        for b, s in self.densify_state.items():
            for k in s:
                s[k] = saved["densify"][b][k].to(s[k].device)
        self.generator.set_state(state["stage_rng"])
