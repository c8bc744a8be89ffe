"""The tiny CPU training run shared by the training and rendering tests (see conftest.trained)."""

from __future__ import annotations

import dataclasses

import torch

from talkgs.train.config import PredictorConfig, TrainConfig
from talkgs.metrics.image import psnr
from talkgs.model.config import BranchInitConfig, HeadConfig
from talkgs.model.head import ground_truth_on_plate

FRAMES = (1500, 1779)  # the last shot: its end is the val split (last 1/11 of the clip)


def _tiny_cfg(dataset, out, **kw) -> TrainConfig:
    model = HeadConfig(
        face_init=BranchInitConfig(n=600, kind="surface"),
        mouth_init=BranchInitConfig(n=150, kind="cavity"),
    )
    cfg = TrainConfig(
        dataset=dataset,
        output=out,
        device="cpu",
        image_scale=0.125,
        frame_range=FRAMES,
        batch_size=2,
        progress=False,
        tensorboard=False,
        log_every=20,
        checkpoint_every=1000,
        model=model,
        # mel: a CPU-suite speed choice (the predictor's voice-augmented clips are featurised in
        # milliseconds instead of seconds each); the default whisper kind has its own tests.
        audio_kind=kw.pop("audio_kind", "mel"),
        # A short predictor fit with one copy of each kind of voice change (the default fits 3000
        # steps on ten copies: ~20 s on a GPU, minutes on a CPU).
        predictor=PredictorConfig(
            steps=150, batch_size=128, speeds=(1.1,), semitones=(-3.0,), gains_db=(),
            noise_snr_db=(10.0,), silence_gaps=3,
        ),
        **kw,
    )
    return dataclasses.replace(
        cfg,
        mouth=dataclasses.replace(cfg.mouth, iterations=60, warmup_static=10),
        face=dataclasses.replace(cfg.face, iterations=160, warmup_static=20),
        fuse=dataclasses.replace(cfg.fuse, iterations=60),
    )


@torch.no_grad()
def render_frames(model, frames, idx: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Frames ``[B, H, W, 3]`` in [0, 1] of dataset frames ``idx`` with their own audio, eyes,
    cameras and torso (``frames``: the trainer's TrainingFrames)."""
    x = frames.inputs(idx)
    out = model.render_frames(x.audio, x.eye, x.viewmats, x.Ks, width, height, x.background)
    return out.image.clamp(0.0, 1.0)


def _val_psnr(model, frames, ds) -> float:
    with torch.no_grad():
        pred = render_frames(model, frames, ds.val_idx, ds.width, ds.height)
        gt = ground_truth_on_plate(ds.frames[ds.val_idx], ds.labels[ds.val_idx], ds.background)
        return float(psnr(pred, gt).mean())


def _live_cfg(dataset, out) -> TrainConfig:
    """The tiny config with few Gaussians and no densification: fast to render on a CPU."""
    cfg = _tiny_cfg(dataset, out)
    return dataclasses.replace(
        cfg,
        model=HeadConfig(face_init=BranchInitConfig(n=300, kind="surface"), mouth_init=BranchInitConfig(n=80, kind="cavity")),
        mouth=dataclasses.replace(cfg.mouth, iterations=30, warmup_static=5, densify=None),
        face=dataclasses.replace(cfg.face, iterations=60, warmup_static=10, densify=None),
        fuse=dataclasses.replace(cfg.fuse, iterations=20),
    )
