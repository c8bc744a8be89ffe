"""The per-frame inputs of a :class:`talkgs.model.head.TalkingHead`, built the same way for
training (dataset frames) and for rendering, evaluation and serving (a drive plan's frames).

:func:`frame_inputs` is the one place where audio windows, eye signals, cameras and the torso
background of ``B`` frames become what :meth:`TalkingHead.deform` and
:meth:`TalkingHead.render_frames` take.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from talkgs.errors import TalkgsError
from talkgs.model.motion import eye_code


class FrameInputs(NamedTuple):
    """Inputs of ``B`` frames, on one device (unpacks in :meth:`TalkingHead.render_frames`'s order)."""

    audio: torch.Tensor  # [B, 8, W, C] float32 audio-feature windows (talkgs.model.audio_encoder.gather_windows)
    eye: torch.Tensor  # [B, 3] eye codes (talkgs.model.motion.eye_code)
    viewmats: torch.Tensor  # [B, 1, 4, 4] world-to-camera
    Ks: torch.Tensor  # [B, 1, 3, 3] intrinsics
    background: torch.Tensor | None  # [B, H, W, 3] float in [0, 1]: torso over the plate (None: not needed)


def frame_inputs(
    windows: torch.Tensor,
    blink: torch.Tensor,
    eye_ratio: torch.Tensor,
    eye_ratio_ref: torch.Tensor,
    w2c: torch.Tensor,
    K: torch.Tensor,
    background: torch.Tensor | None = None,
) -> FrameInputs:
    """:class:`FrameInputs` of ``B`` frames on ``w2c``'s device: audio windows ``[B, 8, W, C]``
    (any float dtype), ``blink [B]`` and ``eye_ratio [B, 2]`` with the run's open-eye reference
    ``eye_ratio_ref [2]``, world-to-camera ``w2c [B, 4, 4]``, intrinsics ``K [3, 3]`` (one
    camera for every frame), and the torso ``background [B, H, W, 3]`` (float in [0, 1]) or None."""
    b = windows.shape[0]
    if w2c.shape[0] != b or blink.shape[0] != b or (background is not None and background.shape[0] != b):
        raise TalkgsError(
            f"frame inputs of {b} audio windows need as many cameras, eye signals and backgrounds; got "
            f"{w2c.shape[0]}, {blink.shape[0]}, {None if background is None else background.shape[0]}"
        )
    dev = w2c.device
    eye = eye_code(torch.as_tensor(blink, device=dev), torch.as_tensor(eye_ratio, device=dev), eye_ratio_ref.to(dev))
    return FrameInputs(
        audio=windows.to(dev, torch.float32),
        eye=eye,
        viewmats=w2c[:, None],
        Ks=K.to(dev).expand(b, 1, 3, 3),
        background=background,
    )
