"""Motion fields: per-Gaussian deformation from a tri-plane feature and per-frame condition codes.

Face branch (:class:`FaceMotion`), region attention as in TalkingGaussian / ER-NeRF: from the
tri-plane feature f(mu) of each canonical mean,

    a_aud = MLP_a(f)                (linear output, one gate per audio-code channel)
    a_eye = ReLU(MLP_e(f))          (one gate per eye-code channel)
    h     = [f, a_aud * audio, a_eye * eye]
    MLP(h) -> dxyz (x 0.01 m), drot (added to the raw quaternion), dscale (added to the raw log-scale)

Colour and opacity stay fixed (no delta opacity: the original predicted one and never applied it),
so the Gaussians keep their identity across frames. Features and gates depend only on the canonical
means: they are computed once per call (or once per fixed model: ``spatial``) and combined with
the ``B`` frames' codes.

Inside-mouth branch (:class:`MouthMotion`): MLP([f, audio]) -> dxyz only (x 0.01 m), with x and z
damped by ``xz_damping`` (the original divides them by 5: the mouth interior moves mostly up/down).

All MLPs are bias-free (as the original): zero feature and zero codes give exactly zero motion,
and the tri-plane features start at ~1e-4, so training starts from nearly static Gaussians
(|dxyz| ~ 1e-6 m).

Eye code (:func:`eye_code`): ``[blink, eye_ratio_l / ref_l, eye_ratio_r / ref_r]`` (3 values,
~[0, 1], 1 = fully open for the ratios, 1 = closed for blink) from the dataset's ``blink [N]`` and
``eye_ratio [N, 2]``; ``ref`` is an open-eye reference ratio per eye (see :func:`eye_ratio_reference`).
It replaces the original's 6 OpenFace AUs (AU01/04/05/06/07 + AU45).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from talkgs.errors import TalkgsError
from talkgs.model.config import EYE_DIM, FaceMotionConfig, MouthMotionConfig


def eye_ratio_reference(eye_ratio: torch.Tensor, q: float = 0.9) -> torch.Tensor:
    """Open-eye reference ratio per eye ``[2]``: the ``q`` quantile over training frames ``[N, 2]``."""
    r = torch.as_tensor(eye_ratio, dtype=torch.float32)
    return torch.quantile(r, q, dim=0).clamp_min(1e-3)


def eye_code(blink: torch.Tensor, eye_ratio: torch.Tensor, ratio_ref: torch.Tensor | float = 0.3) -> torch.Tensor:
    """Eye code ``[B, 3]`` from ``blink [B]`` (0 open .. 1 closed) and ``eye_ratio [B, 2]``.

    Ratios are divided by the open-eye reference ``ratio_ref`` (``[2]`` or a float) and clipped to
    [0, 1.5], so both entries sit near 1 for open eyes and near 0 for closed ones on any face.
    """
    blink = torch.as_tensor(blink, dtype=torch.float32)
    eye_ratio = torch.as_tensor(eye_ratio, dtype=torch.float32, device=blink.device)
    if blink.ndim != 1 or eye_ratio.shape != (blink.shape[0], 2):
        raise TalkgsError(f"eye signals must be blink [B] and eye_ratio [B, 2], got {tuple(blink.shape)}, {tuple(eye_ratio.shape)}")
    ref = torch.as_tensor(ratio_ref, dtype=torch.float32, device=blink.device)
    ratios = (eye_ratio / ref).clamp(0.0, 1.5)
    return torch.cat([blink.clamp(0.0, 1.0)[:, None], ratios], dim=1)


def mlp(dims: list[int]) -> nn.Sequential:
    """Bias-free Linear+ReLU stack with a linear last layer."""
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1], bias=False))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@dataclasses.dataclass
class FaceDeltas:
    """Output of :class:`FaceMotion` for ``B`` frames and ``N`` Gaussians."""

    d_xyz: torch.Tensor  # [B, N, 3] metres
    d_rot: torch.Tensor  # [B, N, 4] added to raw quaternions
    d_scale: torch.Tensor  # [B, N, 3] added to raw log-scales
    aud_weight: torch.Tensor  # [N, A] region attention a_aud of each Gaussian
    eye_weight: torch.Tensor  # [N, E] a_eye
    audio: torch.Tensor  # [B, A] the audio code
    eye: torch.Tensor  # [B, E] the eye code

    @property
    def audio_att(self) -> torch.Tensor:
        """``[B, N, A]``: a_aud * audio code (what the MLP sees)."""
        return self.aud_weight[None] * self.audio[:, None, :]

    @property
    def eye_att(self) -> torch.Tensor:
        """``[B, N, E]``: a_eye * eye code."""
        return self.eye_weight[None] * self.eye[:, None, :]

    def head(self, n: int) -> "FaceDeltas":
        """The deltas of the first ``n`` points."""
        return FaceDeltas(self.d_xyz[:, :n], self.d_rot[:, :n], self.d_scale[:, :n], self.aud_weight[:n],
                          self.eye_weight[:n], self.audio, self.eye)


@dataclasses.dataclass
class FaceSpatial:
    """The frame-independent part of the face field for fixed canonical means (what a renderer of
    a fixed model computes once, :meth:`FaceMotion.spatial`)."""

    feat_first: torch.Tensor  # [N, H] the first layer on the tri-plane features alone
    aud_weight: torch.Tensor  # [N, A]
    eye_weight: torch.Tensor  # [N, E]


class FaceMotion(nn.Module):
    """``forward(means [N, 3], audio [B, A], eye [B, E]) -> FaceDeltas``."""

    def __init__(self, cfg: FaceMotionConfig = FaceMotionConfig(), audio_dim: int = 32, eye_dim: int = EYE_DIM):
        super().__init__()
        self.cfg = cfg
        self.audio_dim = audio_dim
        self.eye_dim = eye_dim
        self.grid = cfg.triplane.setup()
        self.mouth_grid = cfg.lower_face_triplane.setup() if cfg.lower_face_grid else None
        fd = self.grid.out_dim + (self.mouth_grid.out_dim if self.mouth_grid is not None else 0)
        self.aud_att = mlp([fd, cfg.att_hidden, audio_dim])
        self.eye_att = nn.Sequential(mlp([fd, max(cfg.att_hidden // 2, eye_dim), eye_dim]), nn.ReLU())
        # Deformation MLP; its first layer is split into feature / audio / eye column blocks so
        # the per-Gaussian feature part is computed once for all B frames.
        self.deform = mlp([fd + audio_dim + eye_dim, cfg.hidden, cfg.hidden, 10])

    def grids(self) -> list[nn.Module]:
        """The spatial feature grids (head, and the fine lower-face one when configured)."""
        return [self.grid] + ([self.mouth_grid] if self.mouth_grid is not None else [])

    def features(self, means: torch.Tensor) -> torch.Tensor:
        """Tri-plane feature ``[N, F]`` of canonical means ``[N, 3]`` (head grid, then the
        lower-face grid, which is zero outside its box). The lookups send no gradient to the
        means: positions learn from the renders, not through piecewise bilinear weights."""
        x = means.detach()
        return torch.cat([g(x) for g in self.grids()], dim=-1)

    def spatial(self, means: torch.Tensor) -> FaceSpatial:
        """What the field computes from the canonical ``means [N, 3]`` alone: features through
        the first layer, and the region-attention gates."""
        feat = self.features(means)  # [N, F]
        fd = feat.shape[1]
        return FaceSpatial(feat @ self.deform[0].weight[:, :fd].T, self.aud_att(feat), self.eye_att(feat))

    def forward(self, means: torch.Tensor, audio: torch.Tensor, eye: torch.Tensor | None = None,
                spatial: FaceSpatial | None = None) -> FaceDeltas:
        """Deltas of ``means [N, 3]`` in the ``B`` frames of ``audio [B, A]`` and ``eye [B, E]``;
        ``spatial``: :meth:`spatial` of these means, when already computed."""
        b = audio.shape[0]
        if audio.ndim != 2 or audio.shape[1] != self.audio_dim:
            raise TalkgsError(f"face audio code must be [B, {self.audio_dim}], got {tuple(audio.shape)}")
        if eye is None:
            eye = audio.new_zeros(b, self.eye_dim)
        if eye.shape != (b, self.eye_dim):
            raise TalkgsError(f"eye code must be [{b}, {self.eye_dim}], got {tuple(eye.shape)}")
        sp = self.spatial(means) if spatial is None else spatial
        aud_weight, eye_weight = sp.aud_weight, sp.eye_weight  # [N, A], [N, E]
        first = self.deform[0].weight  # [H, F + A + E]
        n, hidden, A = aud_weight.shape[0], first.shape[0], self.audio_dim
        fd = first.shape[1] - A - self.eye_dim
        eye = eye.to(first.dtype)
        # The first layer on [feat, a_aud * audio_b, a_eye * eye_b] is feat W_f + [a_aud, a_eye]
        # [diag(audio_b) W_a; diag(eye_b) W_e]: one [N, A + E] x [A + E, B H] matmul for all B
        # frames, laid out [N, B, H], instead of materialising the [B, N, A] attended codes and
        # three [B, N, H] products (memory-bound at large B and N).
        w = torch.cat([audio[:, :, None] * first[:, fd : fd + A].T[None],
                       eye[:, :, None] * first[:, fd + A :].T[None]], dim=1)  # [B, A + E, H]
        h = torch.cat([aud_weight, eye_weight], dim=1) @ w.permute(1, 0, 2).reshape(-1, b * hidden)
        h = h.view(n, b, hidden) + sp.feat_first[:, None, :]  # [N, B, H]
        out = self.deform[1:](h).transpose(0, 1)  # ReLU, Linear, ReLU, Linear -> [B, N, 10]
        return FaceDeltas(
            d_xyz=out[..., :3] * self.cfg.xyz_scale,
            d_rot=out[..., 3:7],
            d_scale=out[..., 7:10],
            aud_weight=aud_weight,
            eye_weight=eye_weight,
            audio=audio,
            eye=eye,
        )


class MouthMotion(nn.Module):
    """``forward(means [N, 3], audio [B, A]) -> d_xyz [B, N, 3]`` (metres)."""

    def __init__(self, cfg: MouthMotionConfig = MouthMotionConfig(), audio_dim: int = 32):
        super().__init__()
        self.cfg = cfg
        self.audio_dim = audio_dim
        self.grid = cfg.triplane.setup()
        self.deform = mlp([self.grid.out_dim + audio_dim, cfg.hidden, cfg.hidden, 3])
        self.register_buffer(
            "axis_scale", torch.tensor([cfg.xz_damping, 1.0, cfg.xz_damping]) * cfg.xyz_scale, persistent=False
        )

    def spatial(self, means: torch.Tensor) -> torch.Tensor:
        """``[N, H]``: the first layer on the tri-plane features of ``means [N, 3]`` alone (no
        gradient to the means, as the face field)."""
        feat = self.grid(means.detach())  # [N, F]
        return feat @ self.deform[0].weight[:, : feat.shape[1]].T

    def forward(self, means: torch.Tensor, audio: torch.Tensor, spatial: torch.Tensor | None = None) -> torch.Tensor:
        """``spatial``: :meth:`spatial` of ``means``, when already computed."""
        if audio.ndim != 2 or audio.shape[1] != self.audio_dim:
            raise TalkgsError(f"mouth audio code must be [B, {self.audio_dim}], got {tuple(audio.shape)}")
        first = self.deform[0].weight
        sp = self.spatial(means) if spatial is None else spatial
        fd = first.shape[1] - self.audio_dim
        h = sp[None] + (audio @ first[:, fd:].T)[:, None, :]  # [B, N, H]
        return self.deform[1:](h) * self.axis_scale  # deform[1:] starts with the ReLU
