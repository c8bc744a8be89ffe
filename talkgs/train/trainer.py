"""One trainer loop for every stage of the talking head (mouth, face, fuse).

A stage is a :class:`talkgs.train.config.StageConfig`; what differs between stages is data, not
code: which branch is rendered, what the target image is (:func:`talkgs.train.stages.stage_loss`),
which parameters train, whether Gaussians densify (``StageConfig.densify``), and the sampling
curriculum. Everything that changes while training is one :class:`talkgs.train.state.TrainState`,
which a checkpoint saves and a resume loads.

Everything the loop touches lives on the device: frames, labels and the plate as uint8,
audio features, cameras and signals. A step draws ``batch_size`` frame indices, renders them
in one batched call per branch, and never reads the disk or syncs with the host except every
``log_every`` steps.

The trainer is one process of ``world_size`` (``world_rank`` among them, ``local_rank`` on its
host); only world rank 0 writes the run folder (config, checkpoints, history, TensorBoard) and
prints. Today a run is one process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import threading
import time
from pathlib import Path

import torch

from talkgs.data import load_dataset
from talkgs.device import resolve_device, to_device_async
from talkgs.errors import Interrupted, TalkgsError
from talkgs.fsutil import write_json
from talkgs.model.checkpoint import build_model
from talkgs.model.checkpoint import load as load_checkpoint
from talkgs.model.motion import eye_ratio_reference
from talkgs.provenance import RUN_HISTORY
from talkgs.train import checkpoint as ckpt
from talkgs.train import side as side_run
from talkgs.train.batch import TrainingFrames
from talkgs.train.config import StageConfig, TrainConfig
from talkgs.train.mouth_predictor import fit_mouth_predictor
from talkgs.train.predictor_data import describe_clips, predictor_clips
from talkgs.train.progress import TrainLogger
from talkgs.train.stages import stage_loss
from talkgs.train.state import TrainState, fit_face_model, measured_states, new_model, training_sampler

SH_DEGREE_EVERY = 500  # raise the active SH degree every this many steps (the original: 1000 at B=1)


@dataclasses.dataclass
class StepOutput:
    """What one training step computed, for logging."""

    loss: torch.Tensor  # 0-dim
    terms: dict[str, torch.Tensor]  # the loss's weighted terms, 0-dim each
    images: tuple[torch.Tensor, torch.Tensor]  # (prediction, target) [B, H, W, 3] in [0, 1]


class Trainer:
    """Runs the stages of ``cfg`` on ``cfg.dataset`` and writes checkpoints to ``cfg.output``.
    ``checkpoint`` (a loaded one of this run, see :func:`resume_trainer`): continue from it
    instead of starting a new model."""

    def __init__(self, cfg: TrainConfig, checkpoint: dict | None = None, *,
                 local_rank: int = 0, world_rank: int = 0, world_size: int = 1):
        self.cfg = cfg
        self.out = Path(cfg.output)
        self.local_rank, self.world_rank, self.world_size = local_rank, world_rank, world_size
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda" and world_size > 1:
            self.device = torch.device("cuda", local_rank)
        self.ds = ds = load_dataset(
            cfg.dataset, self.device, audio_kind=cfg.audio_kind, frame_range=cfg.frame_range, scale=cfg.image_scale
        )
        if ds.train_idx.numel() == 0:
            raise TalkgsError(f"dataset {cfg.dataset} has no training frames in the chosen range")
        self.width, self.height = ds.width, ds.height
        if checkpoint is None:
            model = new_model(cfg, ds, self.device)
            states = fit_face_model(model, ds)
            eye_ratio_ref = eye_ratio_reference(ds.tracks["eye_ratio"][ds.train_idx].cpu())
        else:
            model = build_model(checkpoint, self.device).train()
            states = measured_states(model, ds)
            eye_ratio_ref = checkpoint["eye_ratio_ref"]
        self.frames = TrainingFrames(ds, eye_ratio_ref, model.cfg.audio.window, states, model.cfg.mouth_state.state_noise)
        sampler, self.curriculum = training_sampler(ds, cfg.seed, cfg.image_scale, world_rank, world_size)
        self.state = TrainState(model, sampler, eye_ratio_ref, cfg.resolved_stages(), cfg.seed)
        if checkpoint is not None:
            self.state.load_state_dict(checkpoint)
        self._black = torch.zeros(3, device=self.device)  # key colour of stages without random backgrounds
        self.logger = TrainLogger(self.out, cfg, show=False, write=False)  # run() opens the real one
        self._stage_start = time.perf_counter()
        self._stop = False
        self._stop_signal = signal.SIGINT
        self._side: side_run.SideRun | None = None  # the mouth branch's side process, while it runs

    @property
    def model(self):
        return self.state.model

    @property
    def stages(self) -> tuple[StageConfig, ...]:
        return self.state.stages

    @property
    def is_main(self) -> bool:
        """This process writes the run folder and prints (world rank 0)."""
        return self.world_rank == 0

    def request_stop(self, signum: int = signal.SIGINT) -> None:
        """End the run after the current step with a resumable checkpoint (what Ctrl-C does;
        ``signum`` names the reason in the message)."""
        self._stop = True
        self._stop_signal = signum

    # ------------------------------------------------------------------ running
    def run(self, until: str | None = None) -> Path:
        """Run the remaining stages (``until``: stop after that stage). Ctrl-C or SIGTERM (a job
        scheduler's stop) ends the current step, saves a resumable ``latest`` checkpoint and the
        history, and raises :class:`talkgs.errors.Interrupted` naming the checkpoint and the
        command that resumes. With ``cfg.branches_in_parallel`` the predictor and the mouth stage
        train in a side process during the face stage (:mod:`talkgs.train.side`)."""
        # The run records its dataset as an absolute path, so it is found from any directory.
        self.cfg = dataclasses.replace(self.cfg, dataset=Path(os.path.abspath(self.cfg.dataset)))
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            ckpt.save_config(self.out, self.cfg, dataset_sha256=self.ds.meta["source"]["sha256"])
        self.logger = TrainLogger(self.out, self.cfg, show=self.is_main, write=self.is_main)
        in_main = threading.current_thread() is threading.main_thread()
        stop_signals = (signal.SIGINT, signal.SIGTERM)
        previous = {s: signal.signal(s, self._on_signal) for s in stop_signals} if in_main else {}
        st = self.state
        try:
            self._side = self._start_side()
            if self._side is None and self.model.mouth_predictor is not None and st.predictor_report is None \
                    and st.stage_index == 0 and st.stage_step == 0:
                self.fit_predictor()
                path = self._checkpoint("latest")
                if self._stop:  # interrupted while fitting: a resume fits it again
                    raise Interrupted(self._interrupted_message(self.stages[0], path), self._stop_signal)
            while not st.finished:
                stage = st.stage
                self._run_stage(stage)
                if self._side is not None and not self._stop:
                    self._join_side()
                if self._stop:
                    path = self._checkpoint("latest")
                    raise Interrupted(self._interrupted_message(stage, path), self._stop_signal)
                st.end_stage()
                self._save(stage.name)
                self._checkpoint("latest")
                if stage.name == until:
                    break
        finally:
            if self._side is not None:
                self._side.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.logger.close()
        self._write_history()
        return self.out / "checkpoints" / "latest.pt"

    def _start_side(self) -> side_run.SideRun | None:
        """Hand the predictor and the mouth stage to a side process: in a new run that trains its
        branches in parallel, and in a resumed one whose side run has not been joined yet."""
        st = self.state
        names = [s.name for s in self.stages]
        pending = names[:2] == [side_run.SIDE_STAGE, "face"] and st.stage_index == 1 \
            and side_run.SIDE_STAGE not in st.completed
        fresh = st.stage_index == 0 and st.stage_step == 0 and self.is_main \
            and side_run.wanted(self.cfg.branches_in_parallel, self.device.type, self.world_size, names)
        if fresh and self.cfg.branches_in_parallel == "auto" and self.device.type == "cuda":
            free, need = torch.cuda.mem_get_info(self.device)[0], self.ds.nbytes
            if not side_run.has_room(free, need):
                self.logger.say(f"[train] mouth stage after the face stage: the GPU's {free / 2**30:.1f} GiB free "
                                f"do not hold a side process (the clip's {need / 2**30:.1f} GiB and "
                                f"{side_run.SIDE_HEADROOM / 2**30:.0f} GiB more)")
                fresh = False
        if not (pending or fresh):
            return None
        side = side_run.SideRun(self.out, self.cfg.dataset, self.cfg.device, self.cfg.backend,
                                self.cfg.log_every, self.cfg.checkpoint_every)
        if fresh:  # the side run starts from this very state
            ckpt.save(side.latest, self.cfg, self.ds, st)
            st.stage_index = 1
        side.start()
        self.logger.say(f"[train] predictor and mouth stage: in a side process beside the face stage (log {side.log_path})")
        return side

    def _join_side(self) -> None:
        """Wait for the side process and take its mouth branch, predictor and history."""
        side, t0 = self._side, time.perf_counter()
        merged = side.join()
        side_run.merge(self.state, merged)
        side.copy_stage_checkpoint(self.out)
        self._side = None
        waited = time.perf_counter() - t0
        self.logger.say(f"[train] mouth stage (side process) done: {merged['stage_steps'].get('mouth', 0)} steps, "
                        f"{merged['stage_times'].get('mouth', 0.0):.1f} s; waited {waited:.1f} s for it")

    def fit_predictor(self) -> dict:
        """Fit the audio -> mouth-state predictor on the training frames and augmented copies of
        their audio (:mod:`talkgs.train.mouth_predictor`); writes RUN/predictor.json."""
        t0 = time.perf_counter()
        stop = lambda: self._stop  # noqa: E731  (Ctrl-C / SIGTERM: see run())
        logger = self.logger
        pcfg = self.cfg.predictor
        clips, note = predictor_clips(self.ds, self.frames.states, pcfg, self.cfg.seed, stop, basis=self.model.mouth_basis)
        what = describe_clips([name for name, _, _ in clips])
        if not logger.live:
            logger.say(f"[train] predictor: fitting {pcfg.steps} steps on {what}")
        report = fit_mouth_predictor(
            self.model.mouth_predictor, clips, pcfg, self.device, self.cfg.seed, progress=logger.live, stop=stop,
        )
        if self._stop:
            return report
        report["total_seconds"] = round(time.perf_counter() - t0, 2)
        if note:
            report["note"] = note
        self.state.predictor_report = report
        self.state.stage_times["predictor"] = report["total_seconds"]
        if self.is_main:
            (self.out / "predictor.json").write_text(json.dumps(report, indent=2) + "\n")
        r = ", ".join(f"{v:.2f}" for v in report["held_out_r"])
        logger.say(f"[train] predictor: {what}, {report['frames']} frames, held-out r per state [{r}], "
                   f"{report['total_seconds']:.1f} s")
        return report

    def _run_stage(self, stage: StageConfig) -> None:
        st = self.state
        if not st.in_stage:
            st.begin_stage()
        self._stage_start = time.perf_counter()
        self.logger.start_stage(stage, st.stage_step)
        first_step = st.stage_step
        while st.stage_step < stage.iterations and not self._stop:
            self.after_step(stage, self.step(stage))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - self._stage_start
        st.stage_times[stage.name] = st.stage_times.get(stage.name, 0.0) + seconds
        st.stage_steps[stage.name] = st.stage_steps.get(stage.name, 0) + st.stage_step - first_step
        self.logger.end_stage(stage, seconds)

    def step(self, stage: StageConfig) -> StepOutput:
        """One optimisation step of ``stage`` (the current one) at ``state.stage_step``: draw a
        batch, render, loss, densification, optimiser steps; counts the step."""
        st = self.state
        step = st.stage_step
        p = step / max(stage.iterations, 1)
        st.set_learning_rates(p)
        window, every = self.curriculum.window(stage.name, stage.curriculum_until, p)
        host_idx = torch.from_numpy(st.sampler.draw(stage.batch_size, step, window, every))
        batch = self.frames.batch(to_device_async(host_idx, self.device), with_background=stage.name == "fuse",
                                  host_idx=host_idx)
        key = self._black
        if stage.random_background:
            key = to_device_async(torch.rand(3, generator=st.generator), self.device)
        sh_degree = min(self.model.cfg.sh_degree, step // SH_DEGREE_EVERY)
        loss, terms, renders, images = stage_loss(
            self.model, stage, batch, step, sh_degree, key, self.width, self.height,
            self.cfg.backend, lpips_on=step >= int(stage.iterations * stage.losses.lpips_start),
        )
        st.densify_before_backward(renders, self.width, self.height)
        loss.backward()
        st.densify_after_backward(renders, self.width, self.height)
        st.optimizer_step()
        return StepOutput(loss, terms, images)

    def after_step(self, stage: StageConfig, out: StepOutput) -> None:
        """Called after every step (``state.stage_step`` already counts it): logs every
        ``log_every`` steps and at the stage's end, saves the periodic checkpoint. A subclass
        may extend it (e.g. stop at a chosen step with :meth:`request_stop`)."""
        step = self.state.stage_step
        if self._side is not None and step % self.cfg.log_every == 0:
            failure = self._side.failed()
            if failure is not None:
                self._side = None
                self._checkpoint("latest")
                raise TalkgsError(failure + "; the run saved its face stage so far: fix the cause and --resume")
        if step % self.cfg.log_every == 0 or step == stage.iterations:
            elapsed = time.perf_counter() - self._stage_start
            self.state.history.append(
                self.logger.log(stage, step, out.loss, out.terms, out.images, self.model.num_gaussians(), elapsed)
            )
        if step % self.cfg.checkpoint_every == 0 and step < stage.iterations:
            self._checkpoint("latest")

    # ------------------------------------------------------------------ the run folder
    def _save(self, tag: str) -> Path:
        path = self.out / "checkpoints" / f"{tag}.pt"
        if self.is_main:
            ckpt.save(path, self.cfg, self.ds, self.state)
        return path

    def _checkpoint(self, tag: str) -> Path:
        """Save checkpoint ``tag`` and the history up to it (a resume continues both from here)."""
        path = self._save(tag)
        self._write_history()
        return path

    def _write_history(self) -> None:
        if self.is_main:
            write_json(self.out / RUN_HISTORY, self.state.history)

    def _on_signal(self, signum, frame) -> None:
        if self._stop:  # a second Ctrl-C / SIGTERM: stop now, without a new checkpoint
            raise Interrupted(
                f"stopped at once (second signal); the last checkpoint is {self.out / 'checkpoints' / 'latest.pt'}",
                signum,
            )
        self.request_stop(signum)

    def _interrupted_message(self, stage: StageConfig, path: Path) -> str:
        what = "terminated (SIGTERM)" if self._stop_signal == signal.SIGTERM else "interrupted"
        resume = shlex.join(["talkgs", "train", os.path.abspath(self.cfg.dataset), "-o", os.path.abspath(self.out), "--resume"])
        return (
            f"{what} at {stage.name} step {self.state.stage_step}/{stage.iterations}; resumable checkpoint {path}; "
            f"continue with: {resume}"
        )


def resume_trainer(cfg: TrainConfig, checkpoint: dict | None = None, **ranks) -> Trainer:
    """A Trainer positioned where ``cfg.output``'s latest checkpoint stopped (``checkpoint``: that
    checkpoint, when already loaded), with the run's own settings
    (:func:`talkgs.train.checkpoint.resumed_config`). ``ranks``: as :class:`Trainer`'s."""
    if checkpoint is None:
        checkpoint = load_checkpoint(Path(cfg.output) / "checkpoints" / "latest.pt")
    return Trainer(ckpt.resumed_config(cfg, checkpoint), checkpoint, **ranks)


def train(cfg: TrainConfig) -> Path:
    """Train (or resume) a run checked by ``talkgs.commands.train.check`` (which records the
    dataset as an absolute path); returns the final checkpoint path. Resuming a finished run
    says so and changes nothing."""
    latest = Path(cfg.output) / "checkpoints" / "latest.pt"
    if not cfg.resume:
        return Trainer(cfg).run()
    checkpoint = load_checkpoint(latest)
    if ckpt.run_complete(checkpoint):
        print(f"run {cfg.output} is already complete (stages {', '.join(checkpoint['completed'])}); nothing was changed")
        return latest
    return resume_trainer(cfg, checkpoint).run()
