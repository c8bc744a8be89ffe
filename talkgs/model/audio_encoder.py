"""Audio conditioning: per-frame feature window -> code, smoothed over neighbouring frames.

The dataset stores one audio feature window per video frame, ``[N, W, C]`` (W time steps of C
channels, e.g. log-mel ``[N, 16, 80]``; see ``talkgs.audio``). As in the original (ER-NeRF's
AudioNet + AudioAttNet):

* :class:`AudioEncoder`: stride-2 Conv1d stack over the W axis (C channels in) down to length 1,
  then two linear layers -> ``code_dim`` (32).
* :class:`AudioAttention`: the codes of the ``window`` (8) frames around each frame go through a
  Conv1d stack over time and a linear layer -> softmax weights -> their weighted sum: one code
  per frame, smooth in time.

The caller gathers the 8-frame windows with :func:`gather_windows` (frames ``[i - 4, i + 4)``,
zero outside the clip) and calls :meth:`AudioNet.encode`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from talkgs.errors import AudioFeatureError
from talkgs.model.config import AudioNetConfig  # noqa: F401  (re-exported)

_SLOPE = 0.02  # LeakyReLU slope of the original audio nets


def gather_windows(features: torch.Tensor, idx: torch.Tensor, size: int = 8) -> torch.Tensor:
    """Windows of ``size`` frames around each index: ``features [N, W, C]``, ``idx [B]`` -> ``[B, size, W, C]``.

    Frame ``i``'s window is frames ``[i - size // 2, i - size // 2 + size)``; frames outside
    ``[0, N)`` are zeros (the original's padding).
    """
    if features.ndim != 3:
        raise AudioFeatureError(f"audio features must be [N, W, C], got {tuple(features.shape)}")
    n = features.shape[0]
    idx = torch.as_tensor(idx, device=features.device).long().reshape(-1)
    offsets = torch.arange(size, device=features.device) - size // 2
    j = idx[:, None] + offsets[None, :]  # [B, size]
    valid = (j >= 0) & (j < n)
    out = features[j.clamp(0, n - 1)]
    return out * valid[:, :, None, None].to(out.dtype)



@torch.no_grad()
def set_input_stats(module: nn.Module, features: torch.Tensor) -> None:
    """Fill ``module``'s per-channel input buffers ``in_mean``, ``in_std``, ``in_lo``, ``in_hi``
    ``[C]`` from training features ``[N, W, C]`` of real audio."""
    f = features.reshape(-1, features.shape[-1]).float()
    module.in_mean.copy_(f.mean(0).to(module.in_mean))
    module.in_std.copy_(f.std(0).clamp_min(1e-5).to(module.in_std))
    module.in_lo.copy_(f.amin(0).to(module.in_lo))
    module.in_hi.copy_(f.amax(0).to(module.in_hi))


def normalize_input(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x [..., C]`` clamped to the training range per channel, then standardised."""
    return (torch.minimum(torch.maximum(x, module.in_lo), module.in_hi) - module.in_mean) / module.in_std


class AudioEncoder(nn.Module):
    """Per-frame audio window ``[B, W, C]`` -> code ``[B, code_dim]``.

    ceil(log2 W) stride-2 convolutions (kernel 3, channels 32, 32, 64, 64, 64...) shrink W to 1
    (W = 16: 4 layers, as the original's DeepSpeech net; W = 2, e.g. HuBERT: 1 layer), then
    Linear(64, 64) + LeakyReLU + Linear(64, code_dim). Input statistics (per channel mean and
    std, buffers saved with the model) normalise features whose scale varies by kind; inputs
    are first clamped to the per-channel range seen in training.
    """

    def __init__(self, in_channels: int, window: int, code_dim: int = 32) -> None:
        super().__init__()
        if in_channels < 1 or window < 1:
            raise AudioFeatureError(f"audio features need W >= 1 and C >= 1, got W={window}, C={in_channels}")
        self.in_channels = in_channels
        self.window = window
        n_down = max(1, math.ceil(math.log2(window)))
        widths = [32, 32, 64, 64] + [64] * max(0, n_down - 4)
        layers: list[nn.Module] = []
        c = in_channels
        for w in widths[:n_down]:
            layers += [nn.Conv1d(c, w, kernel_size=3, stride=2, padding=1), nn.LeakyReLU(_SLOPE)]
            c = w
        self.conv = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Linear(c, 64), nn.LeakyReLU(_SLOPE), nn.Linear(64, code_dim))
        self.register_buffer("in_mean", torch.zeros(in_channels))
        self.register_buffer("in_std", torch.ones(in_channels))
        # Inputs are clamped to the training range per channel (of real audio: the trainer leaves
        # out the padded windows at the clip's ends): audio unlike anything in the training clip
        # (digital silence below its room noise, a louder or clipped voice) then reads as the
        # nearest training audio (for silence: the quietest pause) instead of an extrapolation.
        self.register_buffer("in_lo", torch.full((in_channels,), -torch.inf))
        self.register_buffer("in_hi", torch.full((in_channels,), torch.inf))

    def set_input_stats(self, features: torch.Tensor) -> None:
        """Per-channel mean/std/range from training features ``[N, W, C]`` (call once before training)."""
        set_input_stats(self, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[1:] != (self.window, self.in_channels):
            raise AudioFeatureError(
                f"audio window must be [B, {self.window}, {self.in_channels}], got {tuple(x.shape)}"
            )
        x = normalize_input(self, x)
        h = self.conv(x.transpose(1, 2))  # [B, c, W'] with W' = 1 when W is a power of two
        return self.fc(h.mean(dim=-1))


class AudioAttention(nn.Module):
    """Codes of ``window`` neighbouring frames ``[B, window, D]`` -> one code ``[B, D]``.

    Conv1d over time (kernel 3, channels D -> 16 -> 8 -> 4 -> 2 -> 1 for D = 32), Linear(window,
    window), softmax: weights over the frames, then their weighted sum.
    """

    def __init__(self, window: int = 8, code_dim: int = 32) -> None:
        super().__init__()
        self.window = window
        layers: list[nn.Module] = []
        c = code_dim
        while c > 1:
            nxt = max(1, c // 2)
            layers += [nn.Conv1d(c, nxt, kernel_size=3, stride=1, padding=1), nn.LeakyReLU(_SLOPE)]
            c = nxt
        self.conv = nn.Sequential(*layers)
        self.fc = nn.Linear(window, window)

    def weights(self, codes: torch.Tensor) -> torch.Tensor:
        """Softmax weights ``[B, window]`` over the frames of ``codes [B, window, D]``."""
        y = self.conv(codes.transpose(1, 2))[:, 0]  # [B, window]
        return torch.softmax(self.fc(y), dim=-1)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.ndim != 3 or codes.shape[1] != self.window:
            raise AudioFeatureError(f"audio codes must be [B, {self.window}, D], got {tuple(codes.shape)}")
        return (self.weights(codes)[:, :, None] * codes).sum(dim=1)


class AudioNet(nn.Module):
    """:class:`AudioEncoder` + :class:`AudioAttention`: ``encode([B, window, W, C]) -> [B, code_dim]``."""

    def __init__(self, in_window: int, in_channels: int, code_dim: int = 32, window: int = 8, attention: bool = True):
        super().__init__()
        self.code_dim = code_dim
        self.window = window
        self.encoder = AudioEncoder(in_channels, in_window, code_dim)
        self.attention = AudioAttention(window, code_dim) if attention else None

    def encode(self, windows: torch.Tensor) -> torch.Tensor:
        if windows.ndim != 4 or windows.shape[1] != self.window:
            raise AudioFeatureError(
                f"audio windows must be [B, {self.window}, W, C], got {tuple(windows.shape)}"
            )
        b = windows.shape[0]
        codes = self.encoder(windows.reshape(b * self.window, *windows.shape[2:])).reshape(b, self.window, -1)
        if self.attention is None:
            return codes[:, self.window // 2]
        return self.attention(codes)

    forward = encode
