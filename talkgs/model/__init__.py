"""The talking-head model: canonical Gaussians, tri-plane features, audio nets, motion fields.

Names are imported lazily (PEP 562), so ``talkgs.model.config`` (torch-free) can be imported
without importing torch; ``from talkgs.model import TalkingHead`` works as usual.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "AudioAttention": "audio_encoder",
    "AudioEncoder": "audio_encoder",
    "AudioNet": "audio_encoder",
    "gather_windows": "audio_encoder",
    "AudioNetConfig": "config",
    "BranchInitConfig": "config",
    "EYE_DIM": "config",
    "FaceMotionConfig": "config",
    "GaussianLRs": "config",
    "HeadConfig": "config",
    "MouthMotionConfig": "config",
    "NetLRs": "config",
    "TriPlaneConfig": "config",
    "GaussianParams": "gaussians",
    "activate": "gaussians",
    "init_face_surface": "gaussians",
    "init_from_points": "gaussians",
    "init_mouth_cavity": "gaussians",
    "init_random_cube": "gaussians",
    "load_canonical_face": "gaussians",
    "make_optimizers": "gaussians",
    "DeformedGaussians": "head",
    "TalkingHead": "head",
    "composite": "head",
    "torso_background": "head",
    "FaceMotion": "motion",
    "MouthMotion": "motion",
    "eye_code": "motion",
    "TriPlaneEncoder": "triplane",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"talkgs.model.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'talkgs.model' has no attribute {name!r}")
