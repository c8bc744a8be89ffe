"""What differs between the stages of training, as data: which branches a stage renders and
trains (:func:`trained_branches`, :func:`trainable`) and its loss (:func:`stage_loss`).

mouth: the inside-mouth branch against the mouth-interior pixels, judged around the lips; face:
the face branch against the head pixels, the mouth interior transparent; fuse: both branches
composited over the torso background against the full frame.
"""

from __future__ import annotations

import torch

from talkgs.conventions import project
from talkgs.data import LABEL_FACE, LABEL_HAIR, LABEL_MOUTH
from talkgs.errors import TalkgsError
from talkgs.model.head import TalkingHead, composite
from talkgs.train import losses as L
from talkgs.train.batch import Batch
from talkgs.train.config import StageConfig


def box_mask(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[B, H, W]`` bool: pixels whose centre lies inside ``boxes [B, 4]`` (x0, y0, x1, y1)."""
    ys = torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5
    xs = torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5
    inx = (xs[None, :] >= boxes[:, 0:1]) & (xs[None, :] < boxes[:, 2:3])
    iny = (ys[None, :] >= boxes[:, 1:2]) & (ys[None, :] < boxes[:, 3:4])
    return iny[:, :, None] & inx[:, None, :]


def _grow_boxes(boxes: torch.Tensor, factor: float) -> torch.Tensor:
    """Boxes ``[B, 4]`` scaled by ``factor`` about their centres."""
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * (factor / 2)
    return torch.cat([c - half, c + half], dim=1)


def _over(rgb: torch.Tensor, alpha: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
    return rgb + (1.0 - alpha) * bg


def stage_loss(
    model: TalkingHead,
    stage: StageConfig,
    batch: Batch,
    step: int,
    sh_degree: int,
    key_colour: torch.Tensor,
    width: int,
    height: int,
    backend: str,
    lpips_on: bool,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, object], tuple[torch.Tensor, torch.Tensor]]:
    """Loss of one step of ``stage``. Returns (loss, terms for logging, branch renders,
    (prediction, target) images [B, H, W, 3] for logging)."""
    w = stage.losses
    static = step < stage.warmup_static
    terms: dict[str, torch.Tensor] = {}
    renders: dict[str, object] = {}
    lab = batch.labels
    x = batch.inputs
    mouth = lab == LABEL_MOUTH

    def render(branch: str, with_attention: bool = False):
        deformed = model.deform(
            branch,
            None if static else x.audio,
            x.eye if branch == "face" else None,
            static=static,
            batch_size=batch.idx.shape[0],
            states=batch.states,
            with_landmarks=branch == "face" and stage.name == "face" and w.landmarks > 0 and batch.landmarks is not None,
        )
        out = model.render_branch(
            deformed, x.viewmats, x.Ks, width, height,
            with_attention=with_attention and not static, sh_degree=sh_degree, backend=backend,
        )
        renders[branch] = out
        return deformed, out.colors[:, 0], out.alphas[:, 0], out

    if stage.name == "mouth":
        deformed, rgb, alpha, _ = render("mouth")
        lips = box_mask(batch.lips_box, height, width)
        # The photometric terms look only at the lips box grown 2x, so the mouth interior (~0.5 %
        # of a frame) carries half the loss rather than vanishing in a full-frame mean. Inside the
        # lips box but outside the mouth interior the face branch will cover the mouth branch:
        # those pixels are ignored rather than forced either way.
        region = box_mask(_grow_boxes(batch.lips_box, 2.0), height, width)
        weight = mouth | (region & ~lips)
        target = torch.where(mouth[..., None], batch.gt, key_colour)
        pred = _over(rgb, alpha, key_colour)
        pred_m = torch.where(weight[..., None], pred, target)
        terms["l1"] = L.l1(pred, target, weight)
        terms["dssim"] = w.dssim * L.dssim(pred_m, target)
        terms["alpha"] = w.alpha * L.alpha_loss(alpha, mouth, ~lips)
        if deformed.d_xyz is not None:
            terms["deform"] = w.deformation * L.deformation_reg({"xyz": deformed.d_xyz})
    elif stage.name == "face":
        deformed, rgb, alpha, out = render("face", with_attention=True)
        head = (lab == LABEL_FACE) | (lab == LABEL_HAIR)
        # The mouth interior is not part of the face: the face branch must be transparent there
        # so the inside-mouth branch shows through.
        target = torch.where(head[..., None], batch.gt, key_colour)
        pred = _over(rgb, alpha, key_colour)
        terms["l1"] = L.l1(pred, target)
        terms["dssim"] = w.dssim * L.dssim(pred, target)
        terms["alpha"] = w.alpha * L.alpha_loss(alpha, head, ~head)
        if deformed.d_xyz is not None:
            terms["deform"] = w.deformation * L.deformation_reg(
                {"xyz": deformed.d_xyz, "rot": deformed.d_rot, "scale": deformed.d_scale}
            )
        if out.extras is not None:
            att = out.extras[:, 0]  # [B, H, W, 2]: audio, eye attention
            lips = box_mask(batch.lips_box, height, width)
            hair = lab == LABEL_HAIR
            terms["attention"] = w.attention * (
                L.attention_reg(att[..., 1], lips) + L.attention_reg(att.sum(-1), hair)
            )
        if w.lips > 0:
            terms["lips"] = w.lips * L.l1(pred, target, box_mask(_grow_boxes(batch.lips_box, 1.5), height, width))
        if w.landmarks > 0 and deformed.code is not None and batch.landmarks is not None:
            terms["landmarks"] = w.landmarks * face_landmark_loss(model, deformed, batch)
        if lpips_on and w.lpips > 0:
            terms["lpips"] = w.lpips * L.lips_lpips(pred, target, batch.lips_box_host)
    elif stage.name == "fuse":
        _, f_rgb, f_alpha, _ = render("face")
        _, m_rgb, m_alpha, _ = render("mouth")
        pred = composite(f_rgb, f_alpha, m_rgb, m_alpha, x.background)
        terms["l1"] = L.l1(pred, batch.gt)
        terms["dssim"] = w.dssim * L.dssim(pred, batch.gt)
        if w.lips > 0:
            terms["lips"] = w.lips * L.l1(pred, batch.gt, box_mask(_grow_boxes(batch.lips_box, 1.5), height, width))
        if lpips_on and w.lpips > 0:
            terms["lpips"] = w.lpips * (
                L.patch_lpips(pred, batch.gt) + L.lips_lpips(pred, batch.gt, batch.lips_box_host)
            )
    else:  # pragma: no cover - StageConfig.name is a Literal
        raise TalkgsError(f"unknown stage {stage.name!r}")
    loss = torch.stack(list(terms.values())).sum()
    return loss, terms, renders, (pred.detach(), (batch.gt if stage.name == "fuse" else target))


def face_landmark_loss(model: TalkingHead, deformed, batch: Batch) -> torch.Tensor:
    """:func:`talkgs.train.losses.landmark_loss` of the face field at the neutral landmarks,
    projected through the batch's cameras, against the tracked points; in pixels of the source
    video (the dataset's size), whatever the training resolution."""
    pts = deformed.landmarks if deformed.landmarks is not None else model.face_landmarks(deformed.code, deformed.eye)
    uv, _ = project(pts, batch.inputs.viewmats[:, 0], batch.inputs.Ks[:, 0])
    k = batch.source_scale
    return L.landmark_loss(uv * k, batch.landmarks * k, batch.landmark_weights)


def trained_branches(stage: StageConfig) -> tuple[str, ...]:
    return {"mouth": ("mouth",), "face": ("face",), "fuse": ("face", "mouth")}[stage.name]


def trainable(stage: StageConfig, branch: str, param: str) -> bool:
    """Which canonical Gaussian parameters a stage optimises. Fuse tunes colours (and the face's
    opacity) with geometry and motion frozen, as the original's fusion stage."""
    if stage.name != "fuse":
        return True
    return param in ("sh0", "shN") or (branch == "face" and param == "opacities")
