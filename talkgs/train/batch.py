"""Training batches: ``B`` dataset frames as model inputs (:func:`talkgs.model.inputs.frame_inputs`,
the builder rendering uses too) plus what the losses compare them with."""

from __future__ import annotations

import dataclasses

import torch

from talkgs.data import Dataset
from talkgs.landmarks import N_MESH
from talkgs.model.audio_encoder import gather_windows
from talkgs.model.head import ground_truth_on_plate, torso_background
from talkgs.model.inputs import FrameInputs, frame_inputs
from talkgs.model.mouth import landmark_weights


@dataclasses.dataclass
class Batch:
    """``B`` training frames, all tensors on the device."""

    idx: torch.Tensor  # [B] frame indices (into the loaded range)
    inputs: FrameInputs  # audio, eye, cameras, background (None unless asked for)
    gt: torch.Tensor  # [B, H, W, 3] float in [0, 1]
    labels: torch.Tensor  # [B, H, W] uint8
    lips_box: torch.Tensor  # [B, 4]
    lips_box_host: torch.Tensor  # [B, 4] the same on the host: lips crops are cut without a device sync
    states: torch.Tensor | None = None  # [B, m] measured mouth states (mouth_state heads)
    landmarks: torch.Tensor | None = None  # [B, 468, 2] tracked points, pixels of this resolution
    landmark_weights: torch.Tensor | None = None  # [468] weights of the landmark loss
    source_scale: float = 1.0  # source-video pixels per pixel of this resolution


class TrainingFrames:
    """The dataset's frames as training batches. ``eye_ratio_ref [2]``: the run's open-eye
    reference; ``states [N, m]`` (mouth_state heads): every loaded frame's measured mouth state,
    jittered by ``state_noise`` (standard deviation) when drawn into a batch."""

    def __init__(self, ds: Dataset, eye_ratio_ref: torch.Tensor, audio_window: int = 8,
                 states: torch.Tensor | None = None, state_noise: float = 0.0):
        self.ds = ds
        self.eye_ratio_ref = eye_ratio_ref.to(ds.device)  # on the device: no host copy per step
        self.audio_window = audio_window
        self.states = states  # [N, m] on the device, or None
        self.state_noise = state_noise
        self.landmark_weights = torch.as_tensor(landmark_weights(), device=ds.device)
        self.lips_box_host = ds.tracks["lips_box"].float().cpu()  # [N, 4]: crop boxes are host ints
        self.source_scale = float(ds.meta["width"]) / float(ds.width)

    def inputs(self, idx: torch.Tensor, with_background: bool = True) -> FrameInputs:
        """Model inputs of frames ``idx [B]`` with their own audio, eyes, cameras and (unless
        ``with_background`` is False) torso background."""
        ds = self.ds
        bg = torso_background(ds.frames[idx], ds.labels[idx], ds.background) if with_background else None
        return self._inputs(idx, bg)

    def _inputs(self, idx: torch.Tensor, background: torch.Tensor | None) -> FrameInputs:
        ds = self.ds
        return frame_inputs(
            gather_windows(ds.audio, idx, self.audio_window),
            ds.tracks["blink"][idx].float(),
            ds.tracks["eye_ratio"][idx].float(),
            self.eye_ratio_ref,
            ds.w2c[idx],
            ds.K,
            background,
        )

    def batch(self, idx: torch.Tensor, with_background: bool = True, host_idx: torch.Tensor | None = None) -> Batch:
        """Training batch of frames ``idx [B]``; ``with_background=False`` skips the torso
        background, which only full-frame (fuse) steps composite over. ``host_idx``: the same
        indices on the host (default: copied from ``idx``, a device sync on CUDA)."""
        ds = self.ds
        frames = ds.frames[idx]
        labels = ds.labels[idx]
        gt = ground_truth_on_plate(frames, labels, ds.background)
        bg = torso_background(frames, labels, ds.background) if with_background else None
        return Batch(
            idx=idx,
            inputs=self._inputs(idx, bg),
            gt=gt,
            labels=labels,
            lips_box=ds.tracks["lips_box"][idx].float(),
            lips_box_host=self.lips_box_host[idx.cpu() if host_idx is None else host_idx],
            states=self._noisy_states(idx),
            landmarks=ds.tracks["landmarks"][idx, :N_MESH].float(),
            landmark_weights=self.landmark_weights,
            source_scale=self.source_scale,
        )

    def _noisy_states(self, idx: torch.Tensor) -> torch.Tensor | None:
        if self.states is None:
            return None
        s = self.states[idx]
        return s + self.state_noise * torch.randn_like(s) if self.state_noise > 0 else s
