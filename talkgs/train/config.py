"""Configuration of `talkgs train`: the schedule's stages, their losses, the mouth predictor, the
run, and the presets a run starts from. Frozen dataclasses, torch-free, so the command line is
built and checked without torch.

A preset (``--preset NAME``, :data:`PRESETS`) is a named transformation of the default
TrainConfig. The command line starts from the preset's values and sets its flags over them, so an
explicit flag always wins; the run's config.json records the preset's name beside the values it
trained with. In Python, :meth:`TrainConfig.from_preset` builds a preset's config (the ``preset``
field only records the name). Fields marked ``Hidden`` are model and schedule internals: settable
from Python and by presets, not on the command line.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Callable, Literal, Sequence, get_args

import tyro

from talkgs.model.config import HeadConfig

Positional = tyro.conf.Positional
Hidden = tyro.conf.Suppress


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (0 turns a term off)."""

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
    no gradient."""
    landmarks: float = 0.05
    """Landmark loss of the face stage (per pixel of the source video): the face field, evaluated
    at the person's neutral landmarks and projected through each frame's camera, must land on
    the tracked MediaPipe points (lips most, then jaw/chin and eyelids, the rest a little; see
    `talkgs.model.mouth.landmark_weights`)."""
    lpips: float = 0.0
    """ST-LPIPS on random patches and on the (padded) lips crop (needs talkgs[metrics])."""
    lpips_start: float = 0.5
    """Fraction of the stage after which the LPIPS terms are on."""


@dataclasses.dataclass(frozen=True)
class DensifyConfig:
    """Adaptive density control (clone, split, prune) of a stage's trained branches."""

    until: float = 0.9
    """Fraction of the stage after which the Gaussian count is frozen (0 = never densify)."""
    every: Hidden[int] = 0
    """Steps between refinements (0: every 100 steps, more often in stages under 2000 steps)."""
    grad_threshold: Hidden[float] = 2e-4
    """Mean screen-space gradient of a Gaussian's projected mean (half-image units, as 3DGS and
    gsplat) above which it is cloned or split."""
    grow_scale_m: Hidden[float] = 0.002
    """Largest scale (metres) up to which a growing Gaussian is cloned; above it, split."""
    split_factor: Hidden[float] = 1.6
    """A split Gaussian's two children have its scales divided by this (3DGS: 0.8 x 2)."""
    prune_opacity: Hidden[tuple[float, float]] = (0.005, 0.05)
    """Opacity below which Gaussians are pruned, ramped linearly from the first to the second value
    over the densification period (gentler than the original's 0.05 -> 0.30: the stages are ~10x
    shorter, so Gaussians have less time to become opaque)."""
    max_screen_radius: Hidden[float] = 0.15
    """Prune Gaussians whose screen radius exceeds this fraction of the image size (from half the
    densification period on)."""
    max_world_scale_m: Hidden[float] = 0.05
    """Prune Gaussians whose largest scale exceeds this (metres; a head is ~0.2 m; from half the
    densification period on)."""
    max_gaussians: int = 200_000
    """Growth never takes a branch above this many Gaussians."""


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """One stage of the schedule. All stages run through the same trainer loop; they differ only
    in these values (which branch renders, what the target is, what trains)."""

    name: Hidden[Literal["mouth", "face", "fuse"]]
    """mouth: inside-mouth branch against the mouth-interior pixels; face: face branch against the
    head pixels (mouth interior transparent); fuse: both branches composited over the torso
    background against the full frame."""
    iterations: int
    """Steps of this stage (each on --batch-size frames)."""
    batch_size: Hidden[int] = 8
    """Frames per step (set by TrainConfig.batch_size)."""
    warmup_static: Hidden[int] = 0
    """First steps render the canonical Gaussians without deformation."""
    curriculum_until: Hidden[float] = 0.8
    """Fraction of the stage during which incremental sampling is applied (0 = uniform only)."""
    densify: tyro.conf.AvoidSubcommands[DensifyConfig | None] = DensifyConfig()
    """Clone/split/prune of the trained branches (None: the Gaussian count stays as it is; fuse)."""
    lr_decay: Hidden[float] = 0.01
    """Position and network learning rates fall log-linearly to this factor over the stage."""
    random_background: Hidden[bool] = True
    """Branch stages composite on a random colour per step, so no Gaussian can learn the key colour."""
    losses: Hidden[LossWeights] = LossWeights()


# The default schedule (steps of 8 frames per stage; warm-ups about 5-8 % of them).
MOUTH_STAGE = StageConfig("mouth", iterations=2250, warmup_static=112)
FACE_STAGE = StageConfig("face", iterations=2250, warmup_static=188)
FUSE_STAGE = StageConfig("fuse", iterations=562, densify=None, curriculum_until=0.0, random_background=False)


def scale_stage(stage: StageConfig, scale: float, batch_size: int | None = None) -> StageConfig:
    """``stage`` with its step counts multiplied by ``scale`` (and the given batch size)."""

    def it(n: int) -> int:
        return max(1, int(round(n * scale))) if n > 0 else 0

    return dataclasses.replace(
        stage, iterations=it(stage.iterations), warmup_static=it(stage.warmup_static),
        batch_size=stage.batch_size if batch_size is None else batch_size,
    )


@dataclasses.dataclass(frozen=True)
class PredictorConfig:
    """How the audio -> mouth-state predictor is fitted (`talkgs train`, before the mouth stage, for
    mouth-state heads; see `talkgs.train.mouth_predictor`)."""

    steps: Hidden[int] = 3000
    """Optimisation steps (batch of ``batch_size`` frames); the final weights are kept."""
    batch_size: Hidden[int] = 256
    """Frames per step."""
    lr: Hidden[float] = 1e-3
    """Adam learning rate (cosine decay to 5 % over the steps)."""
    weight_decay: Hidden[float] = 1e-4
    """AdamW weight decay."""
    holdout: Hidden[float] = 0.1
    """Fraction at the end of every clip held out to calibrate the output gain."""
    augment: Hidden[bool] = True
    """Train on augmented copies of the voice too (speed, pitch, gain, noise, silences)."""
    speeds: Hidden[tuple[float, ...]] = (0.9, 1.1)
    """Speed-perturbed copies (tempo and pitch together); targets are time-warped."""
    semitones: Hidden[tuple[float, ...]] = (-3.0, 3.0)
    """Pitch-shifted copies (same tempo)."""
    gains_db: Hidden[tuple[float, ...]] = (-12.0, 6.0)
    """Louder / quieter copies."""
    noise_snr_db: Hidden[tuple[float, ...]] = (15.0, 10.0)
    """Noisy copies: white noise at the first SNR, pink at the second, and so on alternating."""
    silence_gaps: Hidden[int] = 8
    """Digital-silence gaps inserted in one more copy (0 = none); the mouth target there is closed."""
    silent_clip_s: Hidden[float] = 8.0
    """Seconds of a clip of digital silence alone, its target the closed mouth (0 = none)."""
    max_gain: Hidden[float] = 2.0
    """Upper bound of the per-component output gain calibrated on held-out frames."""
    amplitude: Hidden[float] = 1.3
    """Factor on the calibrated gain (after ``max_gain``), stored in the run: how far predicted
    mouths move from the mean mouth (render/eval/serve --mouth-amplitude scale it further)."""
    other_speakers: tuple[Path, ...] = ()
    """Prepared datasets of other people speaking: their audio and mouth motion also train the predictor."""


PresetName = Literal["default", "quick", "cpu", "original"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Learn a talking head from a prepared dataset: mouth, face and fuse stages in one trainer."""

    dataset: Positional[Path]
    """A folder written by `talkgs prepare` (or `talkgs import-tg`)."""
    output: Annotated[Path, tyro.conf.arg(aliases=["-o"])]
    """Run folder (config.json, checkpoints/, logs/, train_history.json): new, empty, or a run to --resume."""
    preset: PresetName = "default"
    """Starting settings: default, quick (smoke test: 5 % of the steps), cpu (quick with 600 + 150 Gaussians, for
    small heads on a CPU) or original (the original TalkingGaussian)."""
    resume: bool = False
    """Continue the run in OUTPUT from its latest checkpoint, with its own settings (device and logging may change)."""
    schedule_scale: float = 1.0
    """Multiply every stage's steps by this factor."""
    batch_size: int = 8
    """Frames per step."""
    device: str = "auto"
    """cuda, cpu or auto (cuda when available)."""
    backend: Literal["auto", "gsplat", "torch"] = "auto"
    """Rasterizer (auto: gsplat on CUDA, torch elsewhere)."""
    image_scale: float = 1.0
    """Train on frames resized by this factor."""
    frame_range: tuple[int, int] | None = None
    """Train on the dataset's frames [start, stop) only."""
    audio_kind: str = "whisper"
    """Audio feature kind of the dataset to condition on."""
    seed: int = 0
    """Seed of every random choice."""
    log_every: int = 50
    """Steps between progress and TensorBoard updates."""
    checkpoint_every: int = 2000
    """Steps between resumable checkpoints (also at each stage's end and on Ctrl-C)."""
    tensorboard: bool = True
    """Write OUTPUT/logs for TensorBoard (if installed)."""
    progress: bool = True
    """Show the live progress display."""
    branches_in_parallel: Literal["auto", "on", "off"] = "auto"
    """Train the inside-mouth branch and the mouth-state predictor in a second process beside the face
    branch: on, off, or auto (on where the device is CUDA and has room for a second copy of the clip)."""
    model: Hidden[HeadConfig] = HeadConfig()
    """The talking-head model."""
    mouth: StageConfig = MOUTH_STAGE
    """Stage 1: the inside-mouth branch."""
    face: StageConfig = FACE_STAGE
    """Stage 2: the face branch."""
    fuse: StageConfig = FUSE_STAGE
    """Stage 3: both branches composited over the torso background."""
    predictor: PredictorConfig = PredictorConfig()
    """The audio -> mouth-state predictor (mouth-state heads only; fitted before stage 1)."""

    @classmethod
    def from_preset(cls, name: str, dataset: Path, output: Path, **fields) -> "TrainConfig":
        """Preset ``name`` applied to the default config, then ``fields`` (top-level fields) set
        over it: what `talkgs train DATASET -o OUTPUT --preset NAME` starts from."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r} (one of {', '.join(PRESETS)})")
        cfg = PRESETS[name](cls(dataset=dataset, output=output))
        return dataclasses.replace(cfg, preset=name, **fields)

    def resolved_stages(self) -> tuple[StageConfig, ...]:
        """The stages in order, scaled by ``schedule_scale``, with the run's batch size."""
        return tuple(scale_stage(s, self.schedule_scale, self.batch_size) for s in (self.mouth, self.face, self.fuse))


# --------------------------------------------------------------------------- presets


def _default(cfg: TrainConfig) -> TrainConfig:
    """The defaults of every field."""
    return cfg


def _quick(cfg: TrainConfig) -> TrainConfig:
    """Smoke test: 5 % of every stage's steps, at most 3000 face and 1000 inside-mouth Gaussians
    at the start, a twentieth of the predictor's steps."""
    m = cfg.model
    return dataclasses.replace(
        cfg,
        mouth=scale_stage(cfg.mouth, 0.05),
        face=scale_stage(cfg.face, 0.05),
        fuse=scale_stage(cfg.fuse, 0.05),
        predictor=dataclasses.replace(cfg.predictor, steps=max(20, cfg.predictor.steps // 20)),
        model=dataclasses.replace(
            m,
            face_init=dataclasses.replace(m.face_init, n=min(m.face_init.n, 3000)),
            mouth_init=dataclasses.replace(m.mouth_init, n=min(m.mouth_init.n, 1000)),
        ),
    )


def _cpu(cfg: TrainConfig) -> TrainConfig:
    """A head for 2 CPU cores: the quick preset's steps and predictor with 600 face and 150
    inside-mouth Gaussians and no densification; fewer, cheaper Gaussians so that a small
    (e.g. 64x64) head can train several times the quick steps in minutes."""
    q = _quick(cfg)
    m = q.model
    return dataclasses.replace(
        q,
        mouth=dataclasses.replace(q.mouth, densify=None),
        face=dataclasses.replace(q.face, densify=None),
        model=dataclasses.replace(
            m,
            face_init=dataclasses.replace(m.face_init, n=min(m.face_init.n, 600)),
            mouth_init=dataclasses.replace(m.mouth_init, n=min(m.mouth_init.n, 150)),
        ),
    )


def _original(cfg: TrainConfig) -> TrainConfig:
    """The original TalkingGaussian's design: each branch's audio net encodes the audio features
    (no mouth state, no predictor), mel features, the head tri-plane alone, no landmark loss."""
    m = cfg.model
    return dataclasses.replace(
        cfg,
        audio_kind="mel",
        model=dataclasses.replace(
            m, conditioning="audio", face_motion=dataclasses.replace(m.face_motion, lower_face_grid=False)
        ),
        face=dataclasses.replace(cfg.face, losses=dataclasses.replace(cfg.face.losses, landmarks=0.0)),
    )


PRESETS: dict[str, Callable[[TrainConfig], TrainConfig]] = {"default": _default, "quick": _quick, "cpu": _cpu, "original": _original}
"""Preset name -> the transformation of a TrainConfig it stands for (its docstring says what)."""
assert tuple(PRESETS) == get_args(PresetName)


def command_line_default(args: Sequence[str]) -> TrainConfig:
    """The TrainConfig that `talkgs train ARGS` sets its flags over: the defaults of the last
    ``--preset NAME`` in ``args`` (an unknown name is left to the parser to refuse)."""
    name = "default"
    for i, a in enumerate(args):
        if a == "--preset" and i + 1 < len(args):
            name = args[i + 1]
        elif a.startswith("--preset="):
            name = a.split("=", 1)[1]
    if name not in PRESETS:
        name = "default"
    return TrainConfig.from_preset(name, tyro.MISSING, tyro.MISSING)
