"""The talking head: a face branch and an inside-mouth branch of deformable Gaussians.

Each branch holds canonical Gaussians (`talkgs.model.gaussians`), a motion field
(`talkgs.model.motion`) and its own audio net (`talkgs.model.audio_encoder`), as in the
original. A frame is rendered per branch on a black background (premultiplied colour) and
composited face over mouth over background (:func:`composite`). The background of a training or
replay frame is that frame's torso over the background plate (:func:`torso_background`), one
function so a torso model can replace it later.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator


import torch
import torch.nn.functional as F
from torch import nn

from talkgs.errors import TalkgsError
from talkgs.model import fused_face
from talkgs.model.audio_encoder import AudioNet
from talkgs.model.mouth import MouthBasis, MouthPredictor, StateCode
from talkgs.model.config import BranchInitConfig, GaussianLRs, HeadConfig, NetLRs  # noqa: F401
from talkgs.model.gaussians import (
    GaussianParams,
    activate,
    init_face_surface,
    init_from_points,
    init_mouth_cavity,
    init_random_cube,
    load_canonical_face,
    make_optimizers,
    scale_activation,
    sh_degree_of,
)

BRANCHES = ("face", "mouth")
TORSO_LABEL = 1  # talkgs.data.LABEL_TORSO (torso + neck); model does not import talkgs.data


@dataclasses.dataclass
class DeformedGaussians:
    """One branch's Gaussians in ``B`` frames (renderable), plus what the regularisers need."""

    means: torch.Tensor  # [B, N, 3] metres
    quats: torch.Tensor  # [B, N, 4] unit
    scales: torch.Tensor  # [B, N, 3] metres
    opacities: torch.Tensor  # [B, N]
    sh: torch.Tensor  # [B, N, K, 3] (expanded view of the canonical SH)
    sh_degree: int
    d_xyz: torch.Tensor | None = None  # [B, N, 3]; None when static
    d_rot: torch.Tensor | None = None  # [B, N, 4]; face only
    d_scale: torch.Tensor | None = None  # [B, N, 3]; face only
    aud_weight: torch.Tensor | None = None  # [N, A] region attention a_aud; face only
    eye_weight: torch.Tensor | None = None  # [N, E] a_eye; face only
    code: torch.Tensor | None = None  # [B, A] the condition code; None when static
    eye: torch.Tensor | None = None  # [B, E] the eye code; face only
    landmarks: torch.Tensor | None = None  # [B, 468, 3] the neutral landmarks moved by the face field (with_landmarks)

    @property
    def batch_size(self) -> int:
        return self.means.shape[0]

    @property
    def audio_att(self) -> torch.Tensor | None:
        """``[B, N, A]``: a_aud * audio code (face only; computed when asked)."""
        return None if self.aud_weight is None else self.aud_weight[None] * self.code[:, None, :]

    @property
    def eye_att(self) -> torch.Tensor | None:
        """``[B, N, E]``: a_eye * eye code (face only; computed when asked)."""
        return None if self.eye_weight is None else self.eye_weight[None] * self.eye[:, None, :]

    def attention_norms(self) -> torch.Tensor | None:
        """``[B, N, 2]``: per-Gaussian ||a_aud * audio|| and ||a_eye * eye|| (None without attention)."""
        if self.audio_att is None or self.eye_att is None:
            return None
        return torch.stack([self.audio_att.norm(dim=-1), self.eye_att.norm(dim=-1)], dim=-1)


@dataclasses.dataclass
class FrameRender:
    """Composited frames and the two branches' alphas (see :meth:`TalkingHead.render_frames`)."""

    image: torch.Tensor  # [B, H, W, 3] float, not clamped
    face_alpha: torch.Tensor  # [B, H, W, 1]
    mouth_alpha: torch.Tensor  # [B, H, W, 1]

    def visible_mouth_area(self) -> torch.Tensor:
        """``[B]`` inside-mouth pixels that show through the face, sum of (1 - a_face) a_mouth:
        the render's own mouth-opening signal, comparable with the mouth-interior label area."""
        return ((1.0 - self.face_alpha) * self.mouth_alpha)[..., 0].sum(dim=(1, 2))


MAX_LOG_SCALE_DELTA = 1.0  # a frame may shrink or grow a Gaussian by at most e (x2.7)


def bounded_log_scale_delta(d_scale: torch.Tensor, bound: float = MAX_LOG_SCALE_DELTA) -> torch.Tensor:
    """Soft-bounded log-scale change: ``bound * tanh(d / bound)`` (identity near 0). Unbounded
    scale deltas let a few Gaussians stretch into streaks across the frame on unseen audio."""
    return bound * torch.tanh(d_scale / bound)


class GaussianBranch(nn.Module):
    """Canonical Gaussians + motion field + condition net of one branch (``audio``: an
    :class:`AudioNet` of the audio features, or a :class:`StateCode` of the mouth state)."""

    def __init__(self, kind: str, gaussians: GaussianParams, motion: nn.Module, audio: nn.Module) -> None:
        super().__init__()
        self.kind = kind
        self.gaussians = gaussians
        self.motion = motion
        self.audio = audio


def _init_points(
    cfg: BranchInitConfig, canonical: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    if cfg.kind == "surface":
        return init_face_surface(canonical, cfg.n, jitter=cfg.jitter, head_fraction=cfg.head_fraction, generator=generator)
    if cfg.kind == "cavity":
        return init_mouth_cavity(canonical, cfg.n, generator=generator)
    if cfg.kind == "cube":
        return init_random_cube(cfg.n, cfg.cube_bound, generator=generator, device=canonical.device)
    raise TalkgsError(f"unknown Gaussian init kind {cfg.kind!r} (surface, cavity or cube)")


class TalkingHead(nn.Module):
    """Face and inside-mouth branches. ``audio_window``/``audio_channels``: the dataset's feature
    shape ``[N, W, C]``; ``canonical [468, 3]`` metres (default: the bundled MediaPipe face)."""

    def __init__(
        self,
        cfg: HeadConfig,
        audio_window: int,
        audio_channels: int,
        canonical: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        canonical = load_canonical_face() if canonical is None else canonical.float().cpu()
        self.register_buffer("canonical", canonical, persistent=False)
        branches = {}
        for kind, init in (("face", cfg.face_init), ("mouth", cfg.mouth_init)):
            pts = _init_points(init, canonical, generator)
            gs = init_from_points(pts, init_opacity=init.opacity, init_scale=init.scale, sh_degree=cfg.sh_degree)
            if cfg.conditioning == "mouth_state":
                ms = cfg.mouth_state
                audio = StateCode(ms.n_components, cfg.audio.code_dim, ms.code_hidden)
            else:
                audio = cfg.audio.setup(audio_window, audio_channels)
            if kind == "face":
                motion = cfg.face_motion.setup(cfg.audio.code_dim, cfg.eye_dim)
            else:
                motion = cfg.mouth_motion.setup(cfg.audio.code_dim)
            branches[kind] = GaussianBranch(kind, gs, motion, audio)
        self.branches = nn.ModuleDict(branches)
        # The person's mean face (metres, head frame): where the landmark loss evaluates the face
        # field. Set by the trainer from the tracks (talkgs.model.mouth.neutral_landmarks).
        self.register_buffer("neutral_landmarks", canonical[:468].clone())
        self.mouth_basis: MouthBasis | None = None
        self.mouth_predictor: MouthPredictor | None = None
        if cfg.conditioning == "mouth_state":
            ms = cfg.mouth_state
            self.mouth_basis = MouthBasis(ms.n_components)
            self.mouth_predictor = MouthPredictor(
                audio_window, audio_channels, ms.n_components, frames=cfg.audio.window,
                hidden=ms.predictor_hidden, dropout=ms.predictor_dropout, members=ms.predictor_members,
            )
        elif cfg.conditioning != "audio":
            raise TalkgsError(f"unknown conditioning {cfg.conditioning!r} (audio or mouth_state)")
        self._fixed_fields: dict[str, object] = {}  # fix_fields(): branch -> its motion's spatial part
        self._fused_face: fused_face.FusedFace | None = None  # fix_fields(fused=True) where the kernel runs

    def fix_fields(self, fused: bool = False) -> None:
        """Compute each branch's frame-independent motion terms once (tri-plane features through
        the first layer, region-attention gates): for rendering a model whose parameters no longer
        change. ``deform`` then evaluates only the per-frame part; ``train()`` and ``load_state_dict`` drop them.
        ``fused``: the face branch's per-frame part runs as one Triton kernel where it can
        (:mod:`talkgs.model.fused_face`; without gradients)."""
        with torch.no_grad():
            self._fixed_fields = {name: br.motion.spatial(activate(br.gaussians)[0]) for name, br in self.branches.items()}
            face = self.branch("face")
            self._fused_face = None
            if fused and fused_face.available(face.gaussians["means"].device):
                self._fused_face = fused_face.prepare(face.motion, self._fixed_fields["face"], face.gaussians,
                                                      MAX_LOG_SCALE_DELTA)

    @property
    def fused_kernel(self) -> fused_face.FusedFace | None:
        """The face branch's Triton kernel that :meth:`fix_fields` prepared (None: PyTorch's ops)."""
        return self._fused_face

    @contextlib.contextmanager
    def eager_face(self) -> Iterator[None]:
        """Within it, eager calls deform the face branch with PyTorch's ops and the prepared kernel
        is kept for after (a baseline; a CUDA graph captured with the kernel still replays it)."""
        kept, self._fused_face = self._fused_face, None
        try:
            yield
        finally:
            self._fused_face = kept

    def train(self, mode: bool = True) -> "TalkingHead":
        if mode:
            self._fixed_fields = {}  # the parameters may change from here on
            self._fused_face = None
        return super().train(mode)

    # ------------------------------------------------------------------ access
    def branch(self, name: str) -> GaussianBranch:
        if name not in BRANCHES:
            raise TalkgsError(f"unknown branch {name!r} (face or mouth)")
        return self.branches[name]  # type: ignore[return-value]

    def gaussians(self, name: str) -> GaussianParams:
        return self.branch(name).gaussians

    def gaussian_optimizers(self, name: str) -> dict[str, torch.optim.Adam]:
        """One Adam per Gaussian parameter of branch ``name`` (what the strategy edits)."""
        return make_optimizers(self.gaussians(name), self.cfg.gaussian_lrs.as_dict())

    def network_param_groups(self, name: str) -> list[dict]:
        """Optimiser groups of a branch's networks: grid, mlp (motion + attention MLPs), audio
        (encoder), audio_att (temporal attention), with the config's learning rates."""
        br = self.branch(name)
        lrs = self.cfg.net_lrs
        grid = [p for g in (br.motion.grids() if hasattr(br.motion, "grids") else [br.motion.grid]) for p in g.parameters()]
        grid_ids = {id(p) for p in grid}
        mlp = [p for p in br.motion.parameters() if id(p) not in grid_ids]
        if isinstance(br.audio, AudioNet):
            att = list(br.audio.attention.parameters()) if br.audio.attention is not None else []
            enc = list(br.audio.encoder.parameters())
        else:  # StateCode: no temporal attention (the state is already per frame)
            att, enc = [], list(br.audio.parameters())
        groups = [
            {"name": "grid", "params": grid, "lr": lrs.grid},
            {"name": "mlp", "params": mlp, "lr": lrs.mlp},
            {"name": "audio", "params": enc, "lr": lrs.audio},
            {"name": "audio_att", "params": att, "lr": lrs.audio_att},
        ]
        return [g for g in groups if g["params"]]

    # ------------------------------------------------------------------ deformation
    def predict_states(self, audio_windows: torch.Tensor, amplitude: float = 1.0) -> torch.Tensor:
        """Mouth states ``[B, m]`` predicted from ``audio_windows [B, 8, W, C]`` (mouth_state
        conditioning only); ``amplitude`` scales their deviation from the mean mouth."""
        if self.mouth_predictor is None:
            raise TalkgsError("this head is conditioned on audio, not on a mouth state")
        return self.mouth_predictor(audio_windows.to(self.neutral_landmarks.dtype), amplitude)

    def condition_code(
        self, branch: str, audio_windows: torch.Tensor | None = None, states: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The code ``[B, A]`` that drives ``branch``'s motion field: from the mouth state
        (``states [B, m]``, else predicted from the audio) or from the audio windows."""
        br = self.branch(branch)
        dtype = self.neutral_landmarks.dtype
        if self.cfg.conditioning == "mouth_state":
            if states is None:
                if audio_windows is None:
                    raise TalkgsError("a mouth-state head needs mouth states or audio windows")
                states = self.predict_states(audio_windows)
            return br.audio(states.to(dtype))
        if audio_windows is None:
            raise TalkgsError("an audio-conditioned head needs audio windows")
        return br.audio.encode(audio_windows.to(dtype))

    def deform(
        self,
        branch: str,
        audio_windows: torch.Tensor | None,
        eye: torch.Tensor | None = None,
        static: bool = False,
        batch_size: int | None = None,
        states: torch.Tensor | None = None,
        with_landmarks: bool = False,
    ) -> DeformedGaussians:
        """Gaussians of ``branch`` in ``B`` frames.

        ``audio_windows [B, 8, W, C]`` (see ``gather_windows``); ``states [B, m]`` the mouth
        states (mouth_state heads; None: predicted from the audio windows); ``eye [B, E]`` face
        only (None: zeros). ``static`` skips the motion field (the warm-up stage); then the
        conditions may be None and ``batch_size`` gives B. ``with_landmarks`` (face) also moves
        the neutral landmarks by the same field in the same pass (``landmarks``, what the
        landmark loss projects; one field evaluation instead of two per training step).
        """
        br = self.branch(branch)
        gs = br.gaussians
        if audio_windows is not None:
            b = audio_windows.shape[0]
        elif states is not None:
            b = states.shape[0]
        elif static and batch_size is not None:
            b = batch_size
        else:
            raise TalkgsError("deform needs audio windows or mouth states (or static=True with batch_size)")
        means_c, quats_c, scales_c, opac_c, sh = activate(gs)
        n = means_c.shape[0]
        sh_b = sh[None].expand(b, *sh.shape)
        opac = opac_c[None].expand(b, n)
        sh_degree = sh_degree_of(gs)
        if static:
            return DeformedGaussians(
                means=means_c[None].expand(b, n, 3),
                quats=quats_c[None].expand(b, n, 4),
                scales=scales_c[None].expand(b, n, 3),
                opacities=opac,
                sh=sh_b,
                sh_degree=sh_degree,
            )
        code = self.condition_code(branch, audio_windows, states)  # [B, A]
        if br.kind == "face":
            if eye is not None:
                eye = eye.to(device=means_c.device, dtype=means_c.dtype)
            lm = self.neutral_landmarks.to(means_c) if with_landmarks else None
            fixed = self._fixed_fields.get(branch) if lm is None else None
            if fixed is not None and self._fused_face is not None and not torch.is_grad_enabled():
                eye_code = eye if eye is not None else code.new_zeros(b, br.motion.eye_dim)
                means, quats, scales = fused_face.deform(self._fused_face, torch.cat([code, eye_code.to(code)], dim=1))
                return DeformedGaussians(means=means, quats=quats, scales=scales, opacities=opac, sh=sh_b,
                                         sh_degree=sh_degree, code=code, eye=eye_code)
            d = br.motion(means_c if lm is None else torch.cat([means_c, lm]), code, eye, spatial=fixed)
            landmarks = None
            if lm is not None:
                landmarks = lm[None] + d.d_xyz[:, n:]
                d = d.head(n)
            return DeformedGaussians(
                means=means_c[None] + d.d_xyz,
                quats=F.normalize(gs["quats"][None] + d.d_rot, dim=-1),
                scales=scale_activation(gs["scales"][None] + bounded_log_scale_delta(d.d_scale)),
                opacities=opac,
                sh=sh_b,
                sh_degree=sh_degree,
                d_xyz=d.d_xyz,
                d_rot=d.d_rot,
                d_scale=d.d_scale,
                aud_weight=d.aud_weight,
                eye_weight=d.eye_weight,
                code=code,
                eye=d.eye,
                landmarks=landmarks,
            )
        d_xyz = br.motion(means_c, code, spatial=self._fixed_fields.get(branch))
        return DeformedGaussians(
            means=means_c[None] + d_xyz,
            quats=quats_c[None].expand(b, n, 4),
            scales=scales_c[None].expand(b, n, 3),
            opacities=opac,
            sh=sh_b,
            sh_degree=sh_degree,
            d_xyz=d_xyz,
            code=code,
        )

    def face_landmarks(self, code: torch.Tensor, eye: torch.Tensor | None, points: torch.Tensor | None = None) -> torch.Tensor:
        """Where the face field moves landmark points in ``B`` frames: ``[B, K, 3]`` (metres, head
        frame) for ``points [K, 3]`` (default: the neutral landmarks) under the face codes
        ``code [B, A]`` and eye codes ``eye [B, E]`` of a deformed face (what the landmark loss
        projects onto the tracked points)."""
        pts = self.neutral_landmarks if points is None else points
        d = self.branch("face").motion(pts, code, eye)
        return pts[None] + d.d_xyz

    # ------------------------------------------------------------------ rendering
    def render_branch(
        self,
        deformed: DeformedGaussians,
        viewmats: torch.Tensor,
        Ks: torch.Tensor,
        width: int,
        height: int,
        with_attention: bool = False,
        sh_degree: int | None = None,
        backgrounds: torch.Tensor | None = None,
        render_depth: bool = False,
        backend: str = "auto",
    ):
        """Render deformed Gaussians: ``viewmats [B, 1, 4, 4]``, ``Ks [B, 1, 3, 3]`` -> RenderOutput
        with ``colors [B, 1, H, W, 3]`` (premultiplied on black unless ``backgrounds``).

        ``sh_degree``: active SH degree (None: all stored bands; the trainer raises it over time).
        ``with_attention``: ``extras [B, 1, H, W, 2]`` holds the splatted audio / eye attention
        norms (face branch), rendered with detached geometry when the config says so.
        """
        from talkgs.raster import rasterize

        b = deformed.batch_size
        if viewmats.shape != (b, 1, 4, 4) or Ks.shape != (b, 1, 3, 3):
            raise TalkgsError(
                f"render_branch needs viewmats [{b}, 1, 4, 4] and Ks [{b}, 1, 3, 3], got "
                f"{tuple(viewmats.shape)} and {tuple(Ks.shape)}"
            )
        deg = deformed.sh_degree if sh_degree is None else min(sh_degree, deformed.sh_degree)
        att = deformed.attention_norms() if with_attention else None
        if with_attention and att is None:
            raise TalkgsError("with_attention needs a deformed face branch (attention is face-only)")
        single_pass = att is not None and not self.cfg.attention_detach_geometry
        out = rasterize(
            deformed.means,
            deformed.quats,
            deformed.scales,
            deformed.opacities,
            sh_coeffs=deformed.sh,
            sh_degree=deg,
            viewmats=viewmats,
            Ks=Ks,
            width=width,
            height=height,
            backgrounds=backgrounds,
            render_depth=render_depth,
            backend=backend,
            extras=att if single_pass else None,
        )
        if att is None or single_pass:
            return out
        geo = (deformed.means, deformed.quats, deformed.scales, deformed.opacities)
        if self.cfg.attention_detach_geometry:
            geo = tuple(t.detach() for t in geo)
        att_out = rasterize(
            *geo, colors=att, viewmats=viewmats, Ks=Ks, width=width, height=height, backend=backend
        )
        return dataclasses.replace(out, extras=att_out.colors)

    def render_frames(
        self,
        audio_windows: torch.Tensor,
        eye: torch.Tensor,
        viewmats: torch.Tensor,
        Ks: torch.Tensor,
        width: int,
        height: int,
        background: torch.Tensor,
        backend: str = "auto",
        states: torch.Tensor | None = None,
        mouth_amplitude: float = 1.0,
    ) -> "FrameRender":
        """The composited talking head for ``B`` frames: both branches deformed by their
        conditions, rasterized, face over mouth over ``background [B, H, W, 3]`` (float in
        [0, 1]). ``audio_windows [B, 8, W, C]``, ``eye [B, E]``, ``viewmats [B, 1, 4, 4]``,
        ``Ks [B, 1, 3, 3]``; ``states [B, m]`` mouth states to use instead of the ones predicted
        from the audio (mouth_state heads), ``mouth_amplitude`` the scale of the predicted ones
        (:meth:`predict_states`). The one render path of evaluation, offline rendering and
        serving: :meth:`deform_frames` then :meth:`render_deformed`."""
        deformed = self.deform_frames(audio_windows, eye, states, mouth_amplitude)
        return self.render_deformed(deformed, viewmats, Ks, width, height, background, backend)

    def deform_frames(
        self,
        audio_windows: torch.Tensor,
        eye: torch.Tensor,
        states: torch.Tensor | None = None,
        mouth_amplitude: float = 1.0,
    ) -> dict[str, DeformedGaussians]:
        """Both branches deformed for ``B`` frames (``{"face": ..., "mouth": ...}``): the
        rendering's part without a host sync or a data-dependent shape, which
        :class:`talkgs.render.graphs.DeformGraphs` captures as a CUDA graph. Arguments as in
        :meth:`render_frames`."""
        if states is None and self.cfg.conditioning == "mouth_state":
            states = self.predict_states(audio_windows, mouth_amplitude)
        return {branch: self.deform(branch, audio_windows, eye if branch == "face" else None, states=states)
                for branch in BRANCHES}

    def render_deformed(
        self,
        deformed: dict[str, DeformedGaussians],
        viewmats: torch.Tensor,
        Ks: torch.Tensor,
        width: int,
        height: int,
        background: torch.Tensor,
        backend: str = "auto",
        one_pass: bool = False,
    ) -> "FrameRender":
        """Rasterize both deformed branches (:meth:`deform_frames`) and composite face over
        mouth over ``background [B, H, W, 3]``.

        ``one_pass``: both branches in one rasterizer call of ``2B`` images
        (:func:`stack_branches`): the same frames for one call's launches and host syncs
        instead of two, at the cost of projecting the padding."""
        b = viewmats.shape[0]
        stacked = stack_branches(deformed["face"], deformed["mouth"]) if one_pass else None
        if stacked is not None:
            o = self.render_branch(stacked, viewmats.repeat(2, 1, 1, 1), Ks.repeat(2, 1, 1, 1), width, height,
                                   backend=backend)
            colors, alphas = o.colors[:, 0], o.alphas[:, 0]
            outs = {"face": (colors[:b], alphas[:b]), "mouth": (colors[b:], alphas[b:])}
        else:
            outs = {}
            for branch in BRANCHES:
                o = self.render_branch(deformed[branch], viewmats, Ks, width, height, backend=backend)
                outs[branch] = (o.colors[:, 0], o.alphas[:, 0])
        image = composite(*outs["face"], *outs["mouth"], background)
        return FrameRender(image=image, face_alpha=outs["face"][1], mouth_alpha=outs["mouth"][1])

    # ------------------------------------------------------------------ checkpoints
    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Like nn.Module's, but first resizes the Gaussians to the checkpoint's counts
        (densification changes N)."""
        self._fixed_fields = {}
        self._fused_face = None
        for name in BRANCHES:
            gs = self.gaussians(name)
            for key in list(gs.keys()):
                sd_key = f"branches.{name}.gaussians.{key}"
                if sd_key in state_dict and state_dict[sd_key].shape != gs[key].shape:
                    gs[key] = nn.Parameter(torch.empty_like(state_dict[sd_key], device=gs[key].device))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def num_gaussians(self) -> dict[str, int]:
        return {name: int(self.gaussians(name)["means"].shape[0]) for name in BRANCHES}


def stack_branches(face: DeformedGaussians, mouth: DeformedGaussians) -> DeformedGaussians | None:
    """Both branches' Gaussians of ``B`` frames as ``2B`` renderable sets of ``N = max(N_face,
    N_mouth)``: rows ``[0, B)`` the face, ``[B, 2B)`` the mouth, the smaller branch padded with
    Gaussians of opacity 0, which the rasterizer culls (alpha below 1/255) so that each image is
    its branch's own render. None where the branches' SH bands differ."""
    if face.sh.shape[2:] != mouth.sh.shape[2:] or face.sh_degree != mouth.sh_degree:
        return None
    b, n = face.batch_size, max(face.means.shape[1], mouth.means.shape[1])

    def stacked(name: str, pad: float) -> torch.Tensor:
        parts = (getattr(face, name), getattr(mouth, name))
        out = parts[0].new_empty((2 * b, n) + tuple(parts[0].shape[2:]))
        for i, t in enumerate(parts):
            out[i * b:(i + 1) * b, : t.shape[1]].copy_(t)
            if t.shape[1] < n:
                out[i * b:(i + 1) * b, t.shape[1]:].fill_(pad)
        return out

    # unit quaternions (1, 1, 1, 1) / 2 keep the padding finite on every backend
    return DeformedGaussians(means=stacked("means", 0.0), quats=stacked("quats", 0.5), scales=stacked("scales", 1e-3),
                             opacities=stacked("opacities", 0.0), sh=stacked("sh", 0.0), sh_degree=face.sh_degree)


def composite(
    face_rgb: torch.Tensor,
    face_alpha: torch.Tensor,
    mouth_rgb: torch.Tensor,
    mouth_alpha: torch.Tensor,
    background: torch.Tensor,
) -> torch.Tensor:
    """Face over mouth over background, premultiplied: ``[..., H, W, 3]`` colours, ``[..., H, W, 1]``
    alphas (renders on black). mouth_img = C_mouth + (1 - a_mouth) BG; image = C_face + (1 - a_face) mouth_img."""
    mouth_img = mouth_rgb + (1.0 - mouth_alpha) * background
    return face_rgb + (1.0 - face_alpha) * mouth_img


def _unit_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 images to float in [0, 1]; float images unchanged (as float32)."""
    return image.float() / 255.0 if image.dtype == torch.uint8 else image.float()


def torso_background(
    frame_uint8: torch.Tensor,
    labels: torch.Tensor,
    plate: torch.Tensor,
    torso_label: int = TORSO_LABEL,
    extend_up: float = 0.05,
) -> torch.Tensor:
    """Background of a frame ``[B, H, W, 3]`` float in [0, 1]: the ground-truth frame's torso+neck
    pixels (``labels [B, H, W] == torso_label``) over the background ``plate [H, W, 3]`` (uint8 or
    float in [0, 1]). The original's shortcut (torso is not modelled); a torso model replaces this.

    The neck is extended upwards under the head by ``extend_up`` x H pixels (each column repeats
    its top torso colour into the person's head pixels), as the original inpaints its torso
    images: where the face branch's soft edge meets the neck, the plate must not show through
    (a visible line along the jaw otherwise)."""
    if frame_uint8.ndim != 4 or labels.shape != frame_uint8.shape[:3] or plate.shape != frame_uint8.shape[1:]:
        raise TalkgsError(
            f"torso_background needs frames [B, H, W, 3], labels [B, H, W], plate [H, W, 3]; got "
            f"{tuple(frame_uint8.shape)}, {tuple(labels.shape)}, {tuple(plate.shape)}"
        )
    frame = _unit_float(frame_uint8)
    plate = _unit_float(plate.to(frame.device))
    torso = labels == torso_label
    person_head = (labels != 0) & ~torso
    img = torch.where(torso[..., None], frame, torch.zeros_like(frame))
    for _ in range(max(0, int(round(extend_up * labels.shape[1])))):
        below = torch.zeros_like(torso)
        below[:, :-1] = torso[:, 1:]
        grow = below & ~torso & person_head
        shifted = torch.zeros_like(img)
        shifted[:, :-1] = img[:, 1:]
        img = torch.where(grow[..., None], shifted, img)
        torso = torso | grow
    return torch.where(torso[..., None], img, plate[None])


def ground_truth_on_plate(
    frame_uint8: torch.Tensor,
    labels: torch.Tensor,
    plate: torch.Tensor,
    background_label: int = 0,
) -> torch.Tensor:
    """Training/eval target ``[B, H, W, 3]`` float in [0, 1]: the frame with its background-labelled
    pixels replaced by the plate (the original's ``gt_imgs``). Neither branch nor the torso
    shortcut models moving studio graphics, so the target's background is the static plate."""
    frame = _unit_float(frame_uint8)
    plate = _unit_float(plate.to(frame.device))
    return torch.where((labels == background_label)[..., None], plate[None], frame)
