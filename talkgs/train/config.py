"""Configuration of `talkgs train`: the schedule's stages, their losses, the mouth predictor and
the run. Frozen dataclasses, torch-free, so the command line is built and checked without torch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal

import tyro

from talkgs.model.config import HeadConfig

Positional = tyro.conf.Positional


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (the original's values unless noted)."""

    dssim: float = 0.2
    """D-SSIM weight beside L1."""
    alpha: float = 1e-3
    """Alpha regulariser: opaque inside the branch's region, transparent outside."""
    deformation: float = 1e-5
    """Mean |delta| of position, rotation and scale (keeps the canonical Gaussians meaningful)."""
    attention: float = 1e-4
    """Region attention: no eye attention at the lips, no attention on hair."""
    lips: float = 1.0
    """Extra L1 over the lips box (grown 1.5x) in the face and fuse stages, as a mean over that
    box: the lips are ~1 % of the frame, so in the full-frame mean their motion carries almost
    no gradient and the audio path learns an average mouth. Measured on the anchor clip (H100,
    default schedule, seeds 0 and 1): val mouth-opening correlation 0.23 / 0.10 without it,
    0.29 / 0.25 with it; LMD and PSNR unchanged within noise. 0 = off (the original's loss)."""
    landmarks: float = 0.05
    """Landmark loss of the face stage (per pixel of the source video): the face field, evaluated
    at the person's neutral landmarks and projected through each frame's camera, must land on
    the tracked MediaPipe points (lips most, then jaw/chin and eyelids, the rest a little; see
    `talkgs.model.mouth.landmark_weights`). The direct geometric signal that makes the lips part
    instead of blurring (weight per pixel of error). 0 = off (the original)."""
    lpips: float = 0.0
    """ST-LPIPS on random patches and on the (padded) lips crop; 0 = off (needs talkgs[metrics])."""
    lpips_start: float = 0.5
    """Fraction of the stage after which the LPIPS terms are on."""


@dataclasses.dataclass(frozen=True)
class DensifyConfig:
    """Adaptive density control of a stage's trained branches (clone, split, prune; see
    `talkgs.train.strategy`). The refinement steps follow from the stage's length."""

    until: float = 0.9
    """Fraction of the stage after which the Gaussian count is frozen (0 = never densify)."""
    grad_threshold: float = 2e-4
    """Mean screen-space gradient of a Gaussian's projected mean (half-image units, as
    3DGS/gsplat) above which it is cloned or split."""
    grow_scale_m: float = 0.002
    """Largest scale (metres) up to which a growing Gaussian is cloned; above it, split."""
    split_factor: float = 1.6
    """A split Gaussian's two children have its scales divided by this (3DGS: 0.8 x 2)."""
    prune_opacity: tuple[float, float] = (0.005, 0.05)
    """Opacity below which Gaussians are pruned, ramped linearly from the first to the second
    value over the densification period. Lower than the original's 0.05 -> 0.30, whose stages
    are ~10x longer: a steep ramp removes still-forming Gaussians before they become opaque."""
    max_screen_radius: float = 0.15
    """Prune Gaussians whose screen radius exceeds this fraction of the image size (from half
    the densification period on)."""
    max_world_scale_m: float = 0.05
    """Prune Gaussians whose largest scale exceeds this (metres; a head is ~0.2 m; from half the
    densification period on)."""
    max_gaussians: int = 200_000
    """Growth never takes a branch above this many Gaussians."""


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """One stage of the schedule. All stages run through the same trainer loop; they differ only
    in these values (which branch renders, what the target is, what trains)."""

    name: tyro.conf.Fixed[Literal["mouth", "face", "fuse"]]
    """mouth: inside-mouth branch against the mouth-interior pixels; face: face branch against the
    head pixels (mouth interior transparent); fuse: both branches composited over the torso
    background against the full frame."""
    iterations: int
    """Optimisation steps (each on `batch_size` frames)."""
    batch_size: tyro.conf.Suppress[int] = 4
    """Frames per step (set by TrainConfig.batch_size)."""
    warmup_static: int = 0
    """First steps render the canonical Gaussians without deformation (the original's 3000/50k)."""
    curriculum_until: float = 0.8
    """Fraction of the stage during which incremental sampling is applied (0 = uniform only)."""
    densify: tyro.conf.AvoidSubcommands[DensifyConfig | None] = DensifyConfig()
    """Clone/split/prune of the trained branches (None: the Gaussian count stays as it is; fuse)."""
    lr_decay: float = 0.01
    """Position and network learning rates fall log-linearly to this factor over the stage."""
    random_background: bool = True
    """Branch stages composite on a random colour per step, so no Gaussian can learn the key colour."""
    losses: LossWeights = LossWeights()


# Steps measured on the anchor clip: face 6000 -> 10000 changed val PSNR by -0.03 dB (H100);
# all stages at 0.75 of 3000 / 6000 / 1500 gave val PSNR 31.17 / head 28.06 against 31.15 / 28.01
# (H200, mouth_state + whisper head; README "Lip sync"), with 141k instead of 160k face Gaussians.
# Mouth 2250 -> 4500 (H200, seed 0): training-frame mouth r 0.894 -> 0.922 (0.933 on seed 1 with
# 6000 mouth Gaussians), val PSNR 31.17 -> 31.23: the teeth and inner lips are sharper, so the
# mouth reads as open where it is; about 30 s more training (README "Lip sync").
MOUTH_STAGE = StageConfig("mouth", iterations=4500, warmup_static=225)
FACE_STAGE = StageConfig("face", iterations=4500, warmup_static=375)
FUSE_STAGE = StageConfig("fuse", iterations=1125, densify=None, curriculum_until=0.0, random_background=False)


def scale_stage(stage: StageConfig, scale: float, batch_size: int) -> StageConfig:
    """``stage`` with its step counts multiplied by ``scale`` and the given batch size."""

    def it(n: int) -> int:
        return max(1, int(round(n * scale))) if n > 0 else 0

    return dataclasses.replace(
        stage, iterations=it(stage.iterations), warmup_static=it(stage.warmup_static), batch_size=batch_size
    )


@dataclasses.dataclass(frozen=True)
class PredictorConfig:
    """How the audio -> mouth-state predictor is fitted (`talkgs train`, before the mouth stage, for
    heads with ``--model.conditioning mouth_state``; see `talkgs.train.mouth_predictor`)."""

    steps: int = 3000
    """Optimisation steps (batch of ``batch_size`` frames)."""
    batch_size: int = 256
    """Frames per step."""
    lr: float = 1e-3
    """Adam learning rate (cosine decay to 5 % over the steps)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    holdout: float = 0.1
    """Fraction at the end of every clip held out for model selection and gain calibration."""
    augment: bool = True
    """Train on augmented copies of the voice too (speed, pitch, gain, noise, silences)."""
    speeds: tuple[float, ...] = (0.9, 1.1)
    """Speed-perturbed copies (tempo and pitch together); targets are time-warped."""
    semitones: tuple[float, ...] = (-3.0, 3.0)
    """Pitch-shifted copies (same tempo)."""
    gains_db: tuple[float, ...] = (-12.0, 6.0)
    """Louder / quieter copies."""
    noise_snr_db: tuple[float, ...] = (15.0, 10.0)
    """Noisy copies: white noise at the first SNR, pink at the second, and so on alternating."""
    silence_gaps: int = 8
    """Digital-silence gaps inserted in one more copy (0 = none); the mouth target there is closed."""
    silent_clip_s: float = 8.0
    """Seconds of a clip of digital silence alone, its target the closed mouth (0 = none).
    Measured (bench/predictor.py, 3 seeds): the predicted opening on silence went from 0.3-0.5
    of the way to the median mouth to closed, val r +0.04-0.08, cross-speaker r +0.01-0.02."""
    room_tone_dbfs: tuple[float, ...] = ()
    """Levels (dBFS, RMS) of clips of noise alone, each ``silent_clip_s`` long (pink at the first,
    white at the second, alternating), their target the closed mouth: the pauses of a real
    recording are room noise, not digital silence. Needs ``silent_clip_s`` > 0. Measured (seed 0,
    H200, -60 -45): inside mouth under -50 dBFS pink noise 5.3 -> 1.4 px (of a 289 px median),
    but amplitude 0.87 -> 0.83 and, predictor alone on seed 1, val r -0.05: off by default
    (README "Pauses in a real recording")."""
    max_gain: float = 2.0
    """Upper bound of the per-component output gain calibrated on held-out frames."""
    amplitude: float = 1.3
    """Factor on the calibrated gain (after ``max_gain``), stored in the run: how far predicted
    mouths move from the mean mouth. The held-out frames sit next to the training frames and
    pick the best step, so they understate how much predictions shrink on unseen speech, and the
    rendered mouth reads a little less open than its state. Measured (H200, val split, 4 heads,
    eval --mouth-amplitude): x1.3 took the mouth-opening amplitude from 0.71-0.78 to 0.86-0.95
    and val mouth r up by 0.01-0.04, LMD within +-0.05 px, PSNR -0.03 to -0.07 dB
    (README "Lip sync"; render/eval/serve --mouth-amplitude scale it further)."""
    gain_frames: Literal["clean", "all"] = "clean"
    """Held-out frames that calibrate the output gain: the clean clip's, or those of every copy
    (clean and augmented, so the gain also covers voices the predictor is less sure of)."""
    gain_shared: bool = False
    """One output gain for every component (the ratio of the states' total std, measured /
    predicted) instead of one per component."""
    eval_every: int = 100
    """Steps between held-out evaluations."""
    select_after: float = 1.0
    """The kept weights are those of the held-out evaluation with the lowest loss among the
    evaluations at or after this fraction of ``steps`` (0 = any; 1 = the final weights). Any
    step let the held-out loss (frames next to the training frames) keep steps 100-400 on some
    seeds, which predicted unseen speech worse; measured (H200): val mouth r 0.705 (seed 1, kept
    step 100) and 0.761 (seed 2, step 700, an earlier lease) with any step, 0.810 / 0.783 with the
    final weights (README "Lip sync")."""
    other_speakers: tuple[Path, ...] = ()
    """Prepared datasets (`talkgs prepare`) of other people speaking. Their audio, with their own
    mouth motion transferred into this person's mouth states, joins the predictor's training
    pairs (voice-augmented like the person's own unless ``other_speakers_augment`` is off), so
    the mouth learns to follow voices other than the training speaker's. Only their audio and
    tracks are read; a clip's speaker must not be this person."""
    other_speakers_augment: bool = True
    """Voice-augment the other speakers' clips too (speed, pitch, gain, noise, silences)."""
    other_speakers_scale: Literal["match", "own"] = "match"
    """``match``: each other speaker's transferred states are scaled to the total variance of this
    person's training states (people open their mouths more or less when they speak; the target
    is this person's range); ``own``: kept as transferred."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Learn a talking head from a prepared dataset: mouth, face and fuse stages in one trainer."""

    dataset: Positional[Path]
    """A folder written by `talkgs prepare` (or `talkgs import-tg`)."""
    output: Annotated[Path, tyro.conf.arg(aliases=["-o"])]
    """Run folder: config.json, checkpoints/, logs/ (TensorBoard), train_history.json. Must be new,
    empty or (with --resume) a run."""
    resume: bool = False
    """Continue the run in OUTPUT from its latest checkpoint (same DATASET; the run's own settings
    are kept, so only how it runs may change: device, logging, checkpoint interval)."""
    quick: bool = False
    """Smoke-test preset: ~5% of the iterations and fewer Gaussians."""
    schedule_scale: float = 1.0
    """Multiply every stage's iterations (3.0 = the long schedule used to check convergence)."""
    batch_size: int = 4
    """Frames per step."""
    device: str = "auto"
    """cuda, cpu or auto (cuda when available)."""
    backend: Literal["auto", "gsplat", "torch"] = "auto"
    """Rasterizer backend (auto: gsplat on CUDA, torch elsewhere)."""
    image_scale: float = 1.0
    """Train on frames resized by this factor (e.g. 0.25 for CPU smoke runs)."""
    frame_range: tuple[int, int] | None = None
    """Use only frames [start, stop) of the dataset (the split is intersected with it)."""
    audio_kind: str = "whisper"
    """Audio feature kind stored in the dataset to condition on (whisper: measured best for lip
    sync, on the training speaker and on other voices; README "Lip sync")."""
    seed: int = 0
    """Seed of every random choice (init, sampling, backgrounds)."""
    log_every: int = 50
    """Steps between progress/TensorBoard updates (each one syncs the GPU once)."""
    checkpoint_every: int = 2000
    """Steps between resumable checkpoints (also written at the end of each stage and on Ctrl-C)."""
    tensorboard: bool = True
    """Write TensorBoard logs to OUTPUT/logs when tensorboard is installed."""
    progress: bool = True
    """Show the live progress display."""
    model: HeadConfig = HeadConfig()
    """The talking-head model."""
    mouth: StageConfig = MOUTH_STAGE
    """Stage 1: the inside-mouth branch."""
    face: StageConfig = FACE_STAGE
    """Stage 2: the face branch."""
    fuse: StageConfig = FUSE_STAGE
    """Stage 3: both branches composited over the torso background."""
    predictor: PredictorConfig = PredictorConfig()
    """The audio -> mouth-state predictor (mouth_state heads only; fitted before stage 1)."""

    def resolved_stages(self) -> tuple[StageConfig, ...]:
        """The stages in order, scaled by ``schedule_scale`` (and the quick preset)."""
        scale = self.schedule_scale * (0.05 if self.quick else 1.0)
        return tuple(scale_stage(s, scale, self.batch_size) for s in (self.mouth, self.face, self.fuse))

    def resolved_predictor(self) -> PredictorConfig:
        """The predictor's schedule, shortened by the quick preset."""
        if not self.quick:
            return self.predictor
        return dataclasses.replace(self.predictor, steps=max(20, self.predictor.steps // 20), eval_every=10)

    def resolved_model(self) -> HeadConfig:
        if not self.quick:
            return self.model
        return dataclasses.replace(
            self.model,
            face_init=dataclasses.replace(self.model.face_init, n=min(self.model.face_init.n, 3000)),
            mouth_init=dataclasses.replace(self.model.mouth_init, n=min(self.model.mouth_init.n, 1000)),
        )
