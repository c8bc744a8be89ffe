"""Configuration of the talking-head model: frozen dataclasses, torch-free.

Every model part has its config here, so the command line (``talkgs.commands``, tyro) can be
built, parsed and validated without importing torch; each config's ``setup()`` imports its
module and builds the part.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # pragma: no cover
    from talkgs.model.audio_encoder import AudioNet
    from talkgs.model.head import TalkingHead
    from talkgs.model.motion import FaceMotion, MouthMotion
    from talkgs.model.triplane import TriPlaneEncoder

EYE_DIM = 3
"""Size of the eye code (:func:`talkgs.model.motion.eye_code`): blink and two eye ratios."""


@dataclasses.dataclass(frozen=True)
class TriPlaneConfig:
    """Size of a tri-plane encoder (defaults: the original's face grid, finer at the top level)."""

    bound: float = 0.15
    """Half-size of the feature box in metres (the box is ``centre +- bound``)."""
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Box centre in the head frame (metres)."""
    n_levels: int = 12
    """Resolution levels per plane."""
    base_res: int = 16
    """Vertices per side at the coarsest level."""
    max_res: int = 64
    """Vertices per side at the finest level (0.3 m / 64 ~ 4.8 mm cells with the default box)."""
    n_features_per_level: int = 1
    """Feature channels per level and plane."""
    init_scale: float = 1e-4
    """Features start uniform in +- init_scale (hash-grid convention)."""

    @property
    def out_dim(self) -> int:
        return 3 * self.n_levels * self.n_features_per_level

    def setup(self) -> "TriPlaneEncoder":
        from talkgs.model.triplane import TriPlaneEncoder

        return TriPlaneEncoder(
            bound=self.bound,
            centre=self.centre,
            n_levels=self.n_levels,
            base_res=self.base_res,
            max_res=self.max_res,
            n_features_per_level=self.n_features_per_level,
            init_scale=self.init_scale,
        )


@dataclasses.dataclass(frozen=True)
class AudioNetConfig:
    """Audio conditioning of one branch."""

    code_dim: int = 32
    """Size of the per-frame audio code."""
    window: int = 8
    """Neighbouring frames smoothed by the temporal attention (``[i - 4, i + 4)``)."""
    attention: bool = True
    """Use the temporal attention; False takes the centre frame's code alone."""

    def setup(self, in_window: int, in_channels: int) -> "AudioNet":
        from talkgs.model.audio_encoder import AudioNet

        return AudioNet(in_window, in_channels, self.code_dim, self.window, self.attention)


@dataclasses.dataclass(frozen=True)
class FaceMotionConfig:
    """Face-branch deformation field."""

    triplane: TriPlaneConfig = TriPlaneConfig()
    """Spatial feature grid (the head box)."""
    hidden: int = 64
    """Width of the two hidden layers of the deformation MLP."""
    att_hidden: int = 32
    """Hidden width of the audio-attention MLP (the eye one uses half)."""
    xyz_scale: float = 0.01
    """Metres per unit of the MLP's position output."""
    lower_face_grid: bool = True
    """Append the features of a fine tri-plane over the lower face (``lower_face_triplane``) to
    the head grid's (zero outside its box): the head grid's cells are about as large as the gap
    between the inner lips. False = the head grid alone (the original)."""
    lower_face_triplane: TriPlaneConfig = TriPlaneConfig(
        bound=0.045, centre=(0.0, -0.06, 0.045), n_levels=8, base_res=16, max_res=64
    )
    """The lower-face grid: a 9 cm box over lips, chin and jaw, 1.4 mm cells at the finest level."""

    def setup(self, audio_dim: int, eye_dim: int = EYE_DIM) -> "FaceMotion":
        from talkgs.model.motion import FaceMotion

        return FaceMotion(self, audio_dim=audio_dim, eye_dim=eye_dim)


@dataclasses.dataclass(frozen=True)
class MouthMotionConfig:
    """Inside-mouth deformation field (audio only, translation only)."""

    triplane: TriPlaneConfig = TriPlaneConfig(bound=0.06, centre=(0.0, -0.05, 0.03), n_levels=12, base_res=16, max_res=64)
    """Spatial feature grid: a 12 cm box around the mouth (~1.9 mm cells at the finest level)."""
    hidden: int = 32
    """Width of the two hidden layers."""
    xyz_scale: float = 0.01
    """Metres per unit of the MLP's output."""
    xz_damping: float = 0.2
    """Factor on the x and z motion (the original's 1/5: mostly vertical motion)."""

    def setup(self, audio_dim: int) -> "MouthMotion":
        from talkgs.model.motion import MouthMotion

        return MouthMotion(self, audio_dim=audio_dim)


@dataclasses.dataclass(frozen=True)
class GaussianLRs:
    """Adam learning rates of the canonical Gaussians (constant; the trainer owns schedules)."""

    means: float = 2e-5
    """Metres per step (~ the original's 1.6e-4 x its ~0.13 m camera extent); decay it over training."""
    quats: float = 1e-3
    scales: float = 5e-3
    """On log-scales (gsplat's value)."""
    opacities: float = 5e-2
    sh0: float = 2.5e-3
    shN: float = 1.25e-4

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class NetLRs:
    """Learning rates of a branch's networks (the original's: AdamW, grids 5e-3, MLPs 5e-4)."""

    grid: float = 5e-3
    mlp: float = 5e-4
    audio: float = 5e-4
    audio_att: float = 2.5e-3


@dataclasses.dataclass(frozen=True)
class BranchInitConfig:
    """How a branch's canonical Gaussians start."""

    n: int = 10_000
    """Number of initial Gaussians."""
    kind: Literal["surface", "cavity", "cube"] = "surface"
    """surface: on the canonical face + a shell over the head; cavity: box behind the inner lips;
    cube: uniform in +- cube_bound (the original)."""
    opacity: float = 0.1
    """Initial opacity (the original's)."""
    jitter: float = 0.002
    """Normal offset std of surface points (metres)."""
    head_fraction: float = 0.3
    """Fraction of surface points on the head shell (hair, ears) rather than on the face mesh."""
    cube_bound: float = 0.1
    """Half-size of the random cube (metres)."""
    scale: float | None = None
    """Initial scale in metres; None = RMS distance to the 3 nearest points."""


@dataclasses.dataclass(frozen=True)
class MouthStateConfig:
    """The explicit mouth state (:mod:`talkgs.model.mouth`) that drives both motion fields when
    ``HeadConfig.conditioning`` is ``mouth_state``."""

    n_components: int = 8
    """PCA coefficients of the lower face's landmark offsets."""
    code_hidden: int = 64
    """Hidden width of each branch's state -> code net."""
    predictor_hidden: int = 128
    """Width of the audio -> state predictor."""
    predictor_dropout: float = 0.1
    """Dropout of the predictor while it trains."""
    predictor_members: int = 4
    """Networks in the predictor's ensemble, fitted side by side from different initialisations
    (their mean predicts; each fits the targets on its own)."""
    state_noise: float = 0.05
    """Std of Gaussian noise added to the measured states of training renders (state units), so
    the geometry also looks right for predicted states that are slightly off."""


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """The talking-head model: both branches' Gaussians, motion fields and audio nets."""

    sh_degree: int = 2
    """Highest SH degree of the Gaussians' colour (the original's 2)."""
    face_init: BranchInitConfig = BranchInitConfig(n=10_000, kind="surface")
    """Face branch initialisation."""
    mouth_init: BranchInitConfig = BranchInitConfig(n=3_000, kind="cavity")
    """Inside-mouth branch initialisation."""
    face_motion: FaceMotionConfig = FaceMotionConfig()
    """Face deformation field (tri-plane + region attention + MLP)."""
    mouth_motion: MouthMotionConfig = MouthMotionConfig()
    """Inside-mouth deformation field."""
    audio: AudioNetConfig = AudioNetConfig()
    """Audio net of each branch (each branch has its own); its code size is used by both modes."""
    conditioning: Literal["audio", "mouth_state"] = "mouth_state"
    """What drives the motion fields. audio: each branch's audio net encodes the audio features
    (the original). mouth_state: an explicit mouth state, measured from landmarks on training
    frames and predicted from the audio features when rendering (see `talkgs.model.mouth`)."""
    mouth_state: MouthStateConfig = MouthStateConfig()
    """The mouth state (used when conditioning is mouth_state)."""
    eye_dim: int = EYE_DIM
    """Size of the eye code (`talkgs.model.motion.eye_code`)."""
    gaussian_lrs: GaussianLRs = GaussianLRs()
    """Adam learning rates of the Gaussians."""
    net_lrs: NetLRs = NetLRs()
    """Learning rates of the networks."""
    attention_detach_geometry: bool = False
    """Render attention maps in a second pass with detached Gaussians, so attention losses only
    move the gates (the original's way). False splats them as extra channels of the colour pass:
    half the rasterization work; the 1e-4-weighted attention terms then also nudge geometry."""

    def setup(self, audio_window: int, audio_channels: int, **kw) -> "TalkingHead":
        from talkgs.model.head import TalkingHead

        return TalkingHead(self, audio_window, audio_channels, **kw)
