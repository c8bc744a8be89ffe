"""The mouth state: an explicit, measurable per-frame description of the mouth, and the small
temporal network that predicts it from audio.

Why: a face branch that learns mouth motion only through the photometric loss on ~1 % of the
image finds it cheaper to blur the lips than to move them apart. So the mouth gets a state that is

* **measured** on every training frame from the tracked landmarks (:func:`talkgs.landmarks.measure_offsets`,
  :class:`MouthBasis`): the 2D landmarks of the lower face are lifted onto the person's own face
  depth in the head frame (the world frame *is* MediaPipe's canonical face, and every frame has a
  camera), their offsets from the person's mean shape are reduced by PCA to ``m`` coefficients;
* **predicted** from audio by :class:`MouthPredictor`, a small temporal network trained directly
  on (audio, measured state) pairs of the training clip with voice augmentation
  (:mod:`talkgs.audio.augment`) - seconds of training, swappable, evaluable on its own;
* **the input of both motion fields** (through each branch's :class:`StateCode`): training
  renders use the measured state (the geometry learns exactly how each state looks), rendering
  new audio uses the predicted one.

The same lifted landmarks supervise the face motion field directly (``talkgs.train.losses.
landmark_loss``): the field evaluated at the person's neutral landmarks (:func:`neutral_landmarks`)
and projected through each frame's camera must land on the tracked points.

Units: offsets and the neutral shape are in metres in the head frame; states are PCA
coefficients divided by the first component's standard deviation (the dominant mode has unit
variance over the training frames, the others less).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from talkgs import landmarks as L
from talkgs.errors import TalkgsError
from talkgs.model.audio_encoder import normalize_input, set_input_stats


def _lower_face_idx(margin_m: float = 0.003) -> tuple[int, ...]:
    c = L.load_canonical_face()
    return tuple(int(i) for i in np.where(c[:, 1] < c[2, 1] - margin_m)[0])


# Canonical vertices below the nose base (3 mm under landmark 2): lips, chin, jaw, lower cheeks.
# What the mouth state describes (164 points).
MOUTH_REGION_IDX: tuple[int, ...] = _lower_face_idx()


def landmark_weights(lips: float = 1.0, mouth_region: float = 0.5, eyes: float = 0.5, rest: float = 0.1) -> np.ndarray:
    """Per-landmark weights ``[468]`` of the landmark loss: the lips count most, then the rest of
    the lower face (jaw, chin) and the eyelids; every other point (forehead, nose, cheekbones)
    a little, which keeps the field still where the face does not move with speech."""
    w = np.full(L.N_MESH, rest, np.float32)
    w[list(MOUTH_REGION_IDX)] = mouth_region
    w[list(L.RIGHT_EYE_IDX) + list(L.LEFT_EYE_IDX)] = eyes
    w[list(L.LIP_LANDMARKS_40)] = lips
    return w


def neutral_landmarks(offsets_train: np.ndarray, points: np.ndarray | None = None) -> np.ndarray:
    """The person's mean face ``[468, 3]`` (metres): the reference (canonical) points plus the
    mean lifted offset over training frames ``offsets_train [N, 468, 3]``. Mouth states are
    deviations from this shape (state 0 = the mean mouth)."""
    ref = L.load_canonical_face() if points is None else np.asarray(points, np.float64)
    return (ref + np.asarray(offsets_train, np.float64).mean(0)).astype(np.float32)


class MouthBasis(nn.Module):
    """PCA of the lower face's lifted offsets: ``encode(offsets [N, 468, 3]) -> states [N, m]``,
    ``decode(states) -> offsets [N, K, 3]`` of the :data:`MOUTH_REGION_IDX` points.

    Buffers (saved with the model): ``mean [3K]``, ``components [m, 3K]`` (orthonormal rows),
    ``scale`` (the first component's standard deviation over the training frames)."""

    def __init__(self, n_components: int = 8):
        super().__init__()
        k = len(MOUTH_REGION_IDX)
        if not 1 <= n_components <= 3 * k:
            raise TalkgsError(f"mouth state needs 1..{3 * k} components, got {n_components}")
        self.n_components = n_components
        self.register_buffer("idx", torch.tensor(MOUTH_REGION_IDX, dtype=torch.long), persistent=False)
        self.register_buffer("mean", torch.zeros(3 * k))
        self.register_buffer("components", torch.zeros(n_components, 3 * k))
        self.register_buffer("scale", torch.ones(()))

    @torch.no_grad()
    def fit(self, offsets_train: np.ndarray | torch.Tensor) -> np.ndarray:
        """Fit on training frames' offsets ``[N, 468, 3]``; returns the explained variance
        ratio of each kept component ``[m]``."""
        x = torch.as_tensor(np.asarray(offsets_train), dtype=torch.float64)[:, self.idx.cpu()].reshape(len(offsets_train), -1)
        if x.shape[0] <= self.n_components:
            raise TalkgsError(f"fitting a {self.n_components}-component mouth state needs more than {x.shape[0]} frames")
        mu = x.mean(0)
        _, s, vt = torch.linalg.svd(x - mu, full_matrices=False)
        comps = vt[: self.n_components]
        # A deterministic sign: each component's largest-magnitude entry is positive.
        sign = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
        comps = comps * sign
        proj = (x - mu) @ comps.T
        self.mean.copy_(mu.to(self.mean))
        self.components.copy_(comps.to(self.components))
        self.scale.copy_(proj[:, 0].std().clamp_min(1e-9).to(self.scale))
        var = s**2
        return (var[: self.n_components] / var.sum()).numpy()

    def encode(self, offsets: torch.Tensor) -> torch.Tensor:
        """States ``[N, m]`` of lifted offsets ``[N, 468, 3]`` (any float tensor)."""
        x = offsets[:, self.idx].reshape(offsets.shape[0], -1).to(self.mean)
        return (x - self.mean) @ self.components.T / self.scale

    def decode(self, states: torch.Tensor) -> torch.Tensor:
        """Offsets ``[N, K, 3]`` of the mouth-region points for states ``[N, m]``."""
        x = self.mean + (states.to(self.mean) * self.scale) @ self.components
        return x.reshape(states.shape[0], -1, 3)


def transfer_states(basis: MouthBasis, offsets: torch.Tensor) -> torch.Tensor:
    """Mouth states ``[N, m]`` of this person's basis for another person's lifted offsets
    ``[N, 468, 3]`` (:func:`talkgs.data.loader.lifted_offsets` of their clip): their deviations from their own
    mean face (over these N frames), so a different face shape is not read as an open or
    twisted mouth; state 0 is then this person's mean mouth, as in training."""
    x = offsets[:, basis.idx].reshape(offsets.shape[0], -1).to(basis.mean)
    return (x - x.mean(0, keepdim=True)) @ basis.components.T / basis.scale


class StateCode(nn.Module):
    """A branch's condition code from the mouth state: ``[B, m] -> [B, code_dim]`` (bias-free,
    so the mean mouth gives a zero code, as zero audio did in the original nets)."""

    def __init__(self, n_states: int, code_dim: int = 32, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_states, hidden, bias=False), nn.LeakyReLU(0.02), nn.Linear(hidden, code_dim, bias=False)
        )

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.net(states)


class GroupedLinear(nn.Module):
    """K independent linear maps: ``[B, K, I] -> [B, K, O]`` (nn.Linear's initialisation each)."""

    def __init__(self, groups: int, in_features: int, out_features: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(groups, out_features, in_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(groups, out_features).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bki,koi->bko", x, self.weight) + self.bias


class MouthPredictor(nn.Module):
    """Audio -> mouth state: ``forward(windows [B, F, W, C]) -> states [B, m]``.

    ``windows`` are the per-frame feature windows of the F (8) frames around each frame (frames
    ``[i - 4, i + 4)``, :func:`talkgs.model.audio_encoder.gather_windows`): 4 frames of context
    before and 3 after (coarticulation: the mouth shapes a sound before it is heard).
    Each frame's window is normalised per channel with training statistics (clamped to the
    training range, so silence or a louder voice reads as the nearest training audio), flattened
    and embedded (Linear + GELU), then two temporal convolutions (kernel 3) mix the frames and a
    linear layer reads the state out of all of them. The output is ``mean + gain * raw``: ``gain``
    is calibrated after training on held-out training frames so that predicted states vary as
    much as measured ones (a regression shrinks towards the mean; the mouth must not).
    ``members`` > 1 makes it an ensemble of that many such networks, trained side by side on
    the same batches from different initialisations; the prediction is their mean.
    """

    def __init__(self, in_window: int, in_channels: int, n_states: int, frames: int = 8, hidden: int = 128,
                 dropout: float = 0.1, members: int = 1):
        super().__init__()
        if members < 1:
            raise TalkgsError(f"mouth predictor members must be >= 1, got {members}")
        self.in_window, self.in_channels, self.frames, self.n_states = in_window, in_channels, frames, n_states
        self.members = members
        self.register_buffer("in_mean", torch.zeros(in_channels))
        self.register_buffer("in_std", torch.ones(in_channels))
        self.register_buffer("in_lo", torch.full((in_channels,), -torch.inf))
        self.register_buffer("in_hi", torch.full((in_channels,), torch.inf))
        self.register_buffer("out_mean", torch.zeros(n_states))
        self.register_buffer("out_gain", torch.ones(n_states))
        # ``members`` independent networks side by side (widths K x hidden, grouped convolutions
        # and read-outs): an ensemble whose mean is the prediction. K = 1 is the single network.
        k = members
        self.embed = nn.Sequential(nn.Linear(in_window * in_channels, k * hidden), nn.GELU(), nn.Dropout(dropout))
        self.temporal = nn.Sequential(
            nn.Conv1d(k * hidden, k * hidden, 3, padding=1, groups=k), nn.GELU(), nn.Dropout(dropout),
            nn.Conv1d(k * hidden, k * hidden, 3, padding=1, groups=k), nn.GELU(),
        )
        if k == 1:
            self.out = nn.Linear(frames * hidden, n_states)
        else:
            self.out = GroupedLinear(k, frames * hidden, n_states)

    def set_input_stats(self, features: torch.Tensor) -> None:
        """Per-channel mean/std/range from training features ``[N, W, C]`` of real audio."""
        set_input_stats(self, features)

    def raw_members(self, windows: torch.Tensor) -> torch.Tensor:
        """Each member's uncalibrated states ``[B, K, m]`` (what training fits, member by member)."""
        if windows.ndim != 4 or windows.shape[1:] != (self.frames, self.in_window, self.in_channels):
            raise TalkgsError(
                f"mouth predictor needs windows [B, {self.frames}, {self.in_window}, {self.in_channels}], "
                f"got {tuple(windows.shape)}"
            )
        x = normalize_input(self, windows.to(self.in_mean.dtype))
        h = self.embed(x.flatten(2))  # [B, F, K H]
        h = self.temporal(h.transpose(1, 2))  # [B, K H, F]
        if self.members == 1:
            return self.out(h.flatten(1))[:, None]
        return self.out(h.reshape(h.shape[0], self.members, -1))  # member k reads its [H, F] block

    def raw(self, windows: torch.Tensor) -> torch.Tensor:
        """Uncalibrated states ``[B, m]``: the members' mean."""
        return self.raw_members(windows).mean(1)

    def forward(self, windows: torch.Tensor, amplitude: float = 1.0) -> torch.Tensor:
        """Calibrated states ``[B, m]``; ``amplitude`` scales their deviation from the mean mouth
        (1 = as calibrated; > 1 livelier, < 1 calmer)."""
        return self.out_mean + (amplitude * self.out_gain) * (self.raw(windows) - self.out_mean)
