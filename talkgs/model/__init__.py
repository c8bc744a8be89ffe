"""The talking-head model: canonical Gaussians, tri-plane features, audio nets, motion fields."""

from talkgs.model.audio_encoder import AudioAttention, AudioEncoder, AudioNet, AudioNetConfig, gather_windows
from talkgs.model.gaussians import (
    GaussianParams,
    activate,
    init_face_surface,
    init_from_points,
    init_mouth_cavity,
    init_random_cube,
    load_canonical_face,
    make_optimizers,
)
from talkgs.model.head import (
    BranchInitConfig,
    DeformedGaussians,
    GaussianLRs,
    HeadConfig,
    NetLRs,
    TalkingHead,
    composite,
    torso_background,
)
from talkgs.model.motion import EYE_DIM, FaceMotion, FaceMotionConfig, MouthMotion, MouthMotionConfig, eye_code
from talkgs.model.triplane import TriPlaneConfig, TriPlaneEncoder

__all__ = [
    "AudioAttention",
    "AudioEncoder",
    "AudioNet",
    "AudioNetConfig",
    "BranchInitConfig",
    "DeformedGaussians",
    "EYE_DIM",
    "FaceMotion",
    "FaceMotionConfig",
    "GaussianLRs",
    "GaussianParams",
    "HeadConfig",
    "MouthMotion",
    "MouthMotionConfig",
    "NetLRs",
    "TalkingHead",
    "TriPlaneConfig",
    "TriPlaneEncoder",
    "activate",
    "composite",
    "eye_code",
    "gather_windows",
    "init_face_surface",
    "init_from_points",
    "init_mouth_cavity",
    "init_random_cube",
    "load_canonical_face",
    "make_optimizers",
    "torso_background",
]
