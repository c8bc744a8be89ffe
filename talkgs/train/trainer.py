"""One trainer loop for every stage of the talking head (mouth, face, fuse).

A stage is a :class:`talkgs.train.config.StageConfig`; what differs between stages is data, not
code: which branch is rendered, what the target image is (:func:`stage_loss`), which
parameters train (:func:`trainable`), whether Gaussians densify, and the sampling curriculum.

Everything the loop touches lives on the device: frames, labels and the plate as uint8,
audio features, cameras and signals. A step draws ``batch_size`` frame indices, renders them
in one batched call per branch, and never reads the disk or syncs with the host except every
``log_every`` steps.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch

from talkgs.train.config import StageConfig, TrainConfig
from talkgs.data import LABEL_FACE, LABEL_HAIR, LABEL_MOUTH, Dataset, load_dataset
from talkgs.data.loader import lifted_offsets
from talkgs.errors import Interrupted, TalkgsError, UsageError
from talkgs.fsutil import write_json
from talkgs.landmarks import N_MESH
from talkgs.model.audio_encoder import AudioNet, gather_windows
from talkgs.landmarks import measure_offsets
from talkgs.model.mouth import landmark_weights, neutral_landmarks, transfer_states
from talkgs.provenance import RUN_HISTORY
from talkgs.model.head import TalkingHead, composite, ground_truth_on_plate, torso_background
from talkgs.model.motion import eye_code, eye_ratio_reference
from talkgs.conventions import SAMPLES_PER_FRAME, project
from talkgs.device import resolve_device
from talkgs.model.checkpoint import build_model, config_from_dict
from talkgs.model.checkpoint import load as load_checkpoint
from talkgs.train import checkpoint as ckpt
from talkgs.train import losses as L
from talkgs.train.mouth_predictor import feature_clips, fit_mouth_predictor, other_speaker_clips
from talkgs.train.sampler import (
    FACE_EVERY,
    MIN_MOUTH_AREA_PX,
    MOUTH_EVERY,
    FrameSampler,
    Window,
    blink_curriculum,
    cap_signal,
    mouth_curriculum,
)
from talkgs.train.strategy import DensifyStrategy, render_info

SH_DEGREE_EVERY = 500  # raise the active SH degree every this many steps (the original: 1000 at B=1)


# --------------------------------------------------------------------------------- batches


@dataclasses.dataclass
class Batch:
    """``B`` training frames, all tensors on the device."""

    idx: torch.Tensor  # [B] frame indices (into the loaded range)
    gt: torch.Tensor  # [B, H, W, 3] float in [0, 1]
    labels: torch.Tensor  # [B, H, W] uint8
    viewmats: torch.Tensor  # [B, 1, 4, 4]
    Ks: torch.Tensor  # [B, 1, 3, 3]
    audio: torch.Tensor  # [B, 8, W, C]
    eye: torch.Tensor  # [B, 3]
    lips_box: torch.Tensor  # [B, 4]
    background: torch.Tensor | None  # [B, H, W, 3] torso over plate (None unless asked for)
    states: torch.Tensor | None = None  # [B, m] measured mouth states (mouth_state heads)
    landmarks: torch.Tensor | None = None  # [B, 468, 2] tracked points, pixels of this resolution
    landmark_weights: torch.Tensor | None = None  # [468] weights of the landmark loss
    source_scale: float = 1.0  # source-video pixels per pixel of this resolution


class Conditioning:
    """Per-frame inputs of the model that come from a dataset: cameras, audio windows, eye codes,
    and (mouth_state heads) the measured mouth states.

    Shared by training, evaluation and rendering so that all three build frames the same way.
    """

    def __init__(self, ds: Dataset, eye_ratio_ref: torch.Tensor, audio_window: int = 8,
                 states: torch.Tensor | None = None, state_noise: float = 0.0):
        self.ds = ds
        self.audio_window = audio_window
        self.eye_all = eye_code(ds.tracks["blink"].float(), ds.tracks["eye_ratio"].float(), eye_ratio_ref.to(ds.device))
        self.states = states  # [N, m] on the device, or None
        self.state_noise = state_noise
        self.landmark_weights = torch.as_tensor(landmark_weights(), device=ds.device)
        self.source_scale = float(ds.meta["width"]) / float(ds.width)

    def cameras(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = idx.shape[0]
        return self.ds.w2c[idx][:, None], self.ds.K.expand(b, 1, 3, 3)

    def audio(self, idx: torch.Tensor) -> torch.Tensor:
        return gather_windows(self.ds.audio, idx, self.audio_window)

    def batch(self, idx: torch.Tensor, with_background: bool = True) -> Batch:
        """Training inputs of frames ``idx [B]``; ``with_background=False`` skips the torso
        background, which only full-frame (fuse) steps composite over."""
        ds = self.ds
        frames = ds.frames[idx]
        labels = ds.labels[idx]
        viewmats, Ks = self.cameras(idx)
        return Batch(
            idx=idx,
            gt=ground_truth_on_plate(frames, labels, ds.background),
            labels=labels,
            viewmats=viewmats,
            Ks=Ks,
            audio=self.audio(idx),
            eye=self.eye_all[idx],
            lips_box=ds.tracks["lips_box"][idx].float(),
            background=torso_background(frames, labels, ds.background) if with_background else None,
            states=self._noisy_states(idx),
            landmarks=ds.tracks["landmarks"][idx, : N_MESH].float(),
            landmark_weights=self.landmark_weights,
            source_scale=self.source_scale,
        )

    def _noisy_states(self, idx: torch.Tensor) -> torch.Tensor | None:
        if self.states is None:
            return None
        s = self.states[idx]
        return s + self.state_noise * torch.randn_like(s) if self.state_noise > 0 else s


def box_mask(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[B, H, W]`` bool: pixels whose centre lies inside ``boxes [B, 4]`` (x0, y0, x1, y1)."""
    ys = torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5
    xs = torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5
    inx = (xs[None, :] >= boxes[:, 0:1]) & (xs[None, :] < boxes[:, 2:3])
    iny = (ys[None, :] >= boxes[:, 1:2]) & (ys[None, :] < boxes[:, 3:4])
    return iny[:, :, None] & inx[:, None, :]


# --------------------------------------------------------------------------------- the stage maths


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
    mouth = lab == LABEL_MOUTH

    def render(branch: str, with_attention: bool = False):
        deformed = model.deform(
            branch,
            None if static else batch.audio,
            batch.eye if branch == "face" else None,
            static=static,
            batch_size=batch.idx.shape[0],
            states=batch.states,
            with_landmarks=branch == "face" and stage.name == "face" and w.landmarks > 0 and batch.landmarks is not None,
        )
        out = model.render_branch(
            deformed, batch.viewmats, batch.Ks, width, height,
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
            terms["lpips"] = w.lpips * L.lips_lpips(pred, target, batch.lips_box)
    elif stage.name == "fuse":
        _, f_rgb, f_alpha, _ = render("face")
        _, m_rgb, m_alpha, _ = render("mouth")
        pred = composite(f_rgb, f_alpha, m_rgb, m_alpha, batch.background)
        terms["l1"] = L.l1(pred, batch.gt)
        terms["dssim"] = w.dssim * L.dssim(pred, batch.gt)
        if w.lips > 0:
            terms["lips"] = w.lips * L.l1(pred, batch.gt, box_mask(_grow_boxes(batch.lips_box, 1.5), height, width))
        if lpips_on and w.lpips > 0:
            terms["lpips"] = w.lpips * (
                L.patch_lpips(pred, batch.gt) + L.lips_lpips(pred, batch.gt, batch.lips_box)
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
    uv, _ = project(pts, batch.viewmats[:, 0], batch.Ks[:, 0])
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


# --------------------------------------------------------------------------------- trainer


def predictor_clips(ds: Dataset, states: torch.Tensor, cfg, seed: int = 0, stop=None, basis=None) -> tuple[list, str | None]:
    """Training pairs of the mouth predictor: ``[(name, features [n, W, C], states [n, m])]`` for
    the training frames' audio and its augmented copies, then (``cfg.other_speakers``, with the
    person's :class:`MouthBasis` ``basis``) other people's clips. The clean clip uses the
    dataset's own features (exactly what rendering that audio sees); the copies are extracted
    with the feature kind's extractor. A kind that cannot be computed here (an imported one)
    trains on the clean clip alone."""
    from talkgs.media import read_wav

    train = ds.train_idx.cpu().numpy()
    g0, g1 = int(train.min()) + ds.frame_offset, int(train.max()) + 1 + ds.frame_offset
    rows = np.arange(g0, g1) - ds.frame_offset
    st = states[torch.as_tensor(rows, device=states.device)].cpu().numpy()
    wav, _ = read_wav(ds.root / "audio.wav")
    wav = wav[g0 * SAMPLES_PER_FRAME : g1 * SAMPLES_PER_FRAME]
    mouth_open = ds.tracks["mouth_open"].cpu().numpy()[rows]
    clean = ds.audio[torch.as_tensor(rows, device=ds.device)].float().cpu().numpy()
    clips, note = feature_clips(ds.audio_kind, wav, st, mouth_open, clean, cfg, seed, stop=stop)
    if cfg.other_speakers and basis is not None:
        speakers = [other_speaker(Path(root), basis) for root in cfg.other_speakers]
        more, more_note = other_speaker_clips(speakers, ds.audio_kind, st, cfg, seed, stop=stop)
        clips += more
        note = "; ".join(n for n in (note, more_note) if n) or None
    return clips, note


def other_speaker(root: Path, basis) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """``(name, wav [n * 640], states [n, m], mouth_open [n])`` of another person's prepared clip
    ``root``: the whole clip's audio and its tracked lower-face motion transferred into this
    person's mouth states (:func:`talkgs.model.mouth.transfer_states`). Reads only its meta,
    tracks and audio."""
    from talkgs.data import format as fmt
    from talkgs.media import fit_audio_to_frames, read_wav

    meta = fmt.read_meta(root, check_files=False)
    with torch.no_grad():
        offsets = torch.as_tensor(lifted_offsets(root, meta), device=basis.mean.device)
        st = transfer_states(basis, offsets).float().cpu().numpy()
    wav, _ = read_wav(root / fmt.AUDIO)
    wav = fit_audio_to_frames(wav, int(meta["n_frames"]))
    return root.name, wav, st, fmt.load_tracks(root, ("mouth_open",))["mouth_open"]


def fit_face_model(model: TalkingHead, ds: Dataset) -> torch.Tensor | None:
    """Fit the person's neutral landmarks (and, for mouth_state heads, the mouth-state basis) to
    the dataset's tracked landmarks of the training frames, store them in ``model``, and return
    the measured mouth state of every loaded frame ``[N, m]`` on the device (None for
    audio-conditioned heads). Deterministic: a resumed run refits the same values."""
    lm = ds.tracks["landmarks"].cpu().numpy()
    offsets = measure_offsets(lm, ds.w2c.cpu().numpy(), ds.K.cpu().numpy())  # [N, 468, 3]
    train = ds.train_idx.cpu().numpy()
    model.neutral_landmarks.copy_(torch.as_tensor(neutral_landmarks(offsets[train])))
    if model.mouth_basis is None:
        return None
    model.mouth_basis.fit(offsets[train])
    with torch.no_grad():
        return model.mouth_basis.encode(torch.as_tensor(offsets, device=model.neutral_landmarks.device)).float()


def input_stat_frames(ds: Dataset, margin: int = 4) -> torch.Tensor:
    """Training frames whose audio windows hold only real audio: the first and last ``margin``
    frames of the whole clip are left out, since their windows are padded with the feature
    kind's silence level. The audio encoder's input statistics and clamp range (see
    ``AudioEncoder``) come from these, so they do not depend on whether the training range
    touches the clip's ends."""
    n_all = int(ds.meta["n_frames"])
    g = ds.train_idx + ds.frame_offset
    keep = ds.train_idx[(g >= margin) & (g < n_all - margin)]
    return keep if keep.numel() > 0 else ds.train_idx


class Trainer:
    """Runs the stages of ``cfg`` on ``cfg.dataset`` and writes checkpoints to ``cfg.output``."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.out = Path(cfg.output)
        self.device = resolve_device(cfg.device)
        self.stages = cfg.resolved_stages()
        self.ds = load_dataset(
            cfg.dataset, self.device, audio_kind=cfg.audio_kind, frame_range=cfg.frame_range, scale=cfg.image_scale
        )
        if self.ds.train_idx.numel() == 0:
            raise TalkgsError(f"dataset {cfg.dataset} has no training frames in the chosen range")
        self.width, self.height = self.ds.width, self.ds.height
        gen = torch.Generator().manual_seed(cfg.seed)
        _, aw, ac = self.ds.audio.shape
        self.model = cfg.resolved_model().setup(aw, ac, generator=gen).to(self.device)
        train_audio = self.ds.audio[input_stat_frames(self.ds)]
        for name in ("face", "mouth"):
            net = self.model.branch(name).audio
            if isinstance(net, AudioNet):
                net.encoder.set_input_stats(train_audio)
        states = fit_face_model(self.model, self.ds)
        self.eye_ratio_ref = eye_ratio_reference(self.ds.tracks["eye_ratio"][self.ds.train_idx].cpu())
        self.cond = Conditioning(self.ds, self.eye_ratio_ref, self.model.cfg.audio.window, states,
                                 self.model.cfg.mouth_state.state_noise)
        self.predictor_report: dict | None = None
        self.sampler = self._make_sampler()
        self.global_step = 0  # steps over all stages (logging)
        self.stage_index = 0
        self.stage_step = 0
        self.completed: list[str] = []
        self._stop = False
        self._stop_signal = signal.SIGINT
        self.history: list[dict] = []
        self.stage_times: dict[str, float] = {}  # wall seconds per stage in this process
        self.stage_steps: dict[str, int] = {}  # steps run per stage in this process

    # ------------------------------------------------------------------ set-up
    def _make_sampler(self) -> FrameSampler:
        tr = self.ds.tracks
        labels = self.ds.labels
        mouth_area = (labels == LABEL_MOUTH).flatten(1).sum(1).cpu().numpy()
        mouth_open = tr["mouth_open"].cpu().numpy().astype(np.float64)
        train = self.ds.train_idx.cpu().numpy()
        capped, self._mouth_p25, self._mouth_ub = cap_signal(mouth_open, train)
        min_area = MIN_MOUTH_AREA_PX * (self.cfg.image_scale**2)
        return FrameSampler(
            train,
            signals={"mouth_open": capped, "blink": tr["blink"].cpu().numpy()},
            masks={"mouth_visible": mouth_area >= min_area},
            seed=self.cfg.seed,
        )

    def _window(self, stage: StageConfig, p: float) -> tuple[Window | None, int]:
        if p >= stage.curriculum_until:
            return None, 1
        q = p / max(stage.curriculum_until, 1e-9)
        if stage.name == "mouth":
            lo, hi = mouth_curriculum(q, self._mouth_p25, self._mouth_ub)
            return Window("mouth_open", lo, hi, only="mouth_visible"), MOUTH_EVERY
        if stage.name == "face":
            lo, hi = blink_curriculum(q)
            return Window("blink", lo, hi), FACE_EVERY
        return None, 1

    def _optimizers(self, stage: StageConfig):
        """Adam per Gaussian parameter (what densification edits) + AdamW over the networks."""
        gauss: dict[str, dict[str, torch.optim.Optimizer]] = {}
        for branch in trained_branches(stage):
            opts = self.model.gaussian_optimizers(branch)
            gs = self.model.gaussians(branch)
            for name in list(opts):
                keep = trainable(stage, branch, name)
                gs[name].requires_grad_(keep)
                if not keep:
                    del opts[name]
            gauss[branch] = opts
        nets = None
        if stage.name != "fuse":
            groups = []
            for branch in trained_branches(stage):
                groups += self.model.network_param_groups(branch)
            fused = self.device.type == "cuda"
            nets = torch.optim.AdamW(groups, betas=(0.9, 0.99), weight_decay=1e-4, **({"fused": True} if fused else {}))
        for branch in ("face", "mouth"):
            train_nets = stage.name != "fuse" and branch in trained_branches(stage)
            br = self.model.branch(branch)
            for p in list(br.motion.parameters()) + list(br.audio.parameters()):
                p.requires_grad_(train_nets)
            if branch not in trained_branches(stage):
                for p in br.gaussians.parameters():
                    p.requires_grad_(False)
        return gauss, nets

    def _strategies(self, stage: StageConfig) -> dict[str, tuple[DensifyStrategy, dict]]:
        if not stage.densify:
            return {}
        out = {}
        stop = int(stage.iterations * stage.densify_until)
        for branch in trained_branches(stage):
            strat = DensifyStrategy(
                grad_threshold=stage.grad_threshold,
                prune_opacity_start=stage.prune_opacity[0],
                prune_opacity_end=stage.prune_opacity[1],
                # Relative to the image, so the rule means the same at any training resolution.
                max_screen_radius_px=stage.max_screen_radius * max(self.width, self.height),
                max_world_scale_m=stage.max_world_scale_m,
                refine_start=min(500, max(1, stop // 10)),
                refine_stop=stop,
                refine_every=100 if stage.iterations >= 2000 else max(5, stage.iterations // 20),
                screen_prune_start=stop // 2,
            )
            out[branch] = (strat, strat.initialize_state(self.model.gaussians(branch)))
        return out

    # ------------------------------------------------------------------ running
    def run(self) -> Path:
        """Run the remaining stages. Ctrl-C or SIGTERM (a job scheduler's stop) ends the current
        step, saves a resumable ``latest`` checkpoint and the history, and raises
        :class:`talkgs.errors.Interrupted` naming the checkpoint and the command that resumes."""
        # The run records its dataset as an absolute path, so it is found from any directory.
        self.cfg = dataclasses.replace(self.cfg, dataset=Path(os.path.abspath(self.cfg.dataset)))
        self.out.mkdir(parents=True, exist_ok=True)
        ckpt.save_config(self.out, self.cfg, dataset_sha256=self.ds.meta["source"]["sha256"])
        logger = _Logger(self.out, self.cfg)
        in_main = threading.current_thread() is threading.main_thread()
        stop_signals = (signal.SIGINT, signal.SIGTERM)
        previous = {s: signal.signal(s, self._on_signal) for s in stop_signals} if in_main else {}
        try:
            if self.model.mouth_predictor is not None and self.predictor_report is None and self.stage_index == 0 \
                    and self.stage_step == 0:
                self.fit_predictor()
                if self._stop:  # interrupted while fitting: a resume fits it again
                    self.predictor_report = None
                    path = self._checkpoint("latest")
                    raise Interrupted(self._interrupted_message(self.stages[0], path), self._stop_signal)
                self._checkpoint("latest")
            for si in range(self.stage_index, len(self.stages)):
                self.stage_index = si
                stage = self.stages[si]
                self._run_stage(stage, logger)
                if self._stop:
                    path = self._checkpoint("latest")
                    raise Interrupted(self._interrupted_message(stage, path), self._stop_signal)
                self.completed.append(stage.name)
                self.stage_step = 0
                ckpt.save(self, stage.name)
                self._checkpoint("latest")
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            logger.close()
        self._write_history()
        return self.out / "checkpoints" / "latest.pt"

    def fit_predictor(self) -> dict:
        """Fit the audio -> mouth-state predictor on the training frames and augmented copies of
        their audio (:mod:`talkgs.train.mouth_predictor`); writes RUN/predictor.json."""
        t0 = time.perf_counter()
        stop = lambda: self._stop  # noqa: E731  (Ctrl-C / SIGTERM: see run())
        clips, note = predictor_clips(
            self.ds, self.cond.states, self.cfg.resolved_predictor(), self.cfg.seed, stop, basis=self.model.mouth_basis
        )
        report = fit_mouth_predictor(
            self.model.mouth_predictor, clips, self.cfg.resolved_predictor(), self.device, self.cfg.seed,
            progress=self.cfg.progress, stop=stop,
        )
        if self._stop:
            return report
        report["total_seconds"] = round(time.perf_counter() - t0, 2)
        if note:
            report["note"] = note
        self.predictor_report = report
        self.stage_times["predictor"] = report["total_seconds"]
        (self.out / "predictor.json").write_text(json.dumps(report, indent=2) + "\n")
        if self.cfg.progress:
            r = ", ".join(f"{v:.2f}" for v in report["held_out_r"])
            print(f"[train] predictor: {len(clips)} clips, {report['frames']} frames, held-out r per state [{r}], "
                  f"{report['total_seconds']:.1f} s", flush=True)
        return report

    def _checkpoint(self, tag: str) -> Path:
        """Save checkpoint ``tag`` and the history up to it (a resume continues both from here)."""
        path = ckpt.save(self, tag)
        self._write_history()
        return path

    def _write_history(self) -> None:
        write_json(self.out / RUN_HISTORY, self.history)

    def _on_signal(self, signum, frame) -> None:
        if self._stop:  # a second Ctrl-C / SIGTERM: stop now, without a new checkpoint
            raise Interrupted(
                f"stopped at once (second signal); the last checkpoint is {self.out / 'checkpoints' / 'latest.pt'}",
                signum,
            )
        self._stop = True
        self._stop_signal = signum

    def _interrupted_message(self, stage: StageConfig, path: Path) -> str:
        what = "terminated (SIGTERM)" if self._stop_signal == signal.SIGTERM else "interrupted"
        resume = shlex.join(["talkgs", "train", os.path.abspath(self.cfg.dataset), "-o", os.path.abspath(self.out), "--resume"])
        return (
            f"{what} at {stage.name} step {self.stage_step}/{stage.iterations}; resumable checkpoint {path}; "
            f"continue with: {resume}"
        )

    def _run_stage(self, stage: StageConfig, logger: "_Logger") -> None:
        gauss_opts, net_opt = self._optimizers(stage)
        strategies = self._strategies(stage)
        if getattr(self, "_pending_opt_state", None) is not None:
            ckpt.restore_optimizers(self, gauss_opts, net_opt, strategies)
        base_lrs = {b: {k: o.param_groups[0]["lr"] for k, o in opts.items()} for b, opts in gauss_opts.items()}
        net_base = [g["lr"] for g in net_opt.param_groups] if net_opt else []
        gen = torch.Generator(device="cpu").manual_seed(self.cfg.seed + 7919 * self.stage_index)
        key_default = torch.zeros(3, device=self.device)
        t_stage = time.perf_counter()
        logger.start_stage(stage, self.stage_step)
        lpips_from = int(stage.iterations * stage.losses.lpips_start)
        step = first_step = self.stage_step
        while step < stage.iterations and not self._stop:
            p = step / max(stage.iterations, 1)
            decay = stage.lr_decay**p
            for b, opts in gauss_opts.items():
                if "means" in opts:
                    opts["means"].param_groups[0]["lr"] = base_lrs[b]["means"] * decay
            if net_opt is not None:
                for g, lr0 in zip(net_opt.param_groups, net_base):
                    g["lr"] = lr0 * decay
            window, every = self._window(stage, p)
            idx_np = self.sampler.draw(stage.batch_size, step, window, every)
            idx = torch.as_tensor(idx_np, device=self.device)
            batch = self.cond.batch(idx, with_background=stage.name == "fuse")
            key = torch.rand(3, generator=gen).to(self.device) if stage.random_background else key_default
            sh_degree = min(self.model.cfg.sh_degree, step // SH_DEGREE_EVERY)
            loss, terms, renders, images = stage_loss(
                self.model, stage, batch, step, sh_degree, key, self.width, self.height,
                self.cfg.backend, lpips_on=step >= lpips_from,
            )
            for branch, (strat, state) in strategies.items():
                strat.step_pre_backward(
                    self.model.gaussians(branch), gauss_opts[branch], state, step,
                    render_info(renders[branch], self.width, self.height),
                )
            loss.backward()
            for branch, (strat, state) in strategies.items():
                strat.step_post_backward(
                    self.model.gaussians(branch), gauss_opts[branch], state, step,
                    render_info(renders[branch], self.width, self.height), generator=gen,
                )
            for opts in gauss_opts.values():
                for o in opts.values():
                    o.step()
                    o.zero_grad(set_to_none=True)
            if net_opt is not None:
                net_opt.step()
                net_opt.zero_grad(set_to_none=True)
            step += 1
            self.stage_step = step
            self.global_step += 1
            if step % self.cfg.log_every == 0 or step == stage.iterations:
                rec = logger.log(stage, step, loss, terms, images, self.model, time.perf_counter() - t_stage)
                self.history.append(rec)
            if step % self.cfg.checkpoint_every == 0 and step < stage.iterations:
                self._gauss_opts, self._net_opt, self._strategies_live = gauss_opts, net_opt, strategies
                self._checkpoint("latest")
        self._gauss_opts, self._net_opt, self._strategies_live = gauss_opts, net_opt, strategies
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - t_stage
        self.stage_times[stage.name] = self.stage_times.get(stage.name, 0.0) + seconds
        self.stage_steps[stage.name] = self.stage_steps.get(stage.name, 0) + step - first_step
        logger.end_stage(stage, seconds)


# --------------------------------------------------------------------------------- logging


class _Logger:
    """Progress display (rich), TensorBoard scalars, and a plain history. Syncs the device only
    when it logs."""

    def __init__(self, out: Path, cfg: TrainConfig):
        self.cfg = cfg
        self.tb = None
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "logs"))
            except Exception:  # tensorboard is optional; training goes on without it
                self.tb = None
        self.progress = None
        self.task = None
        self.t0 = time.perf_counter()
        self.last = (0, time.perf_counter())

    def start_stage(self, stage: StageConfig, start: int) -> None:
        self.last = (start, time.perf_counter())
        if self.cfg.progress:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]{task.fields[stage]:<5}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
            )
            self.progress.start()
            self.task = self.progress.add_task("", total=stage.iterations, completed=start, stage=stage.name, info="")

    def log(self, stage, step, loss, terms, images, model, elapsed) -> dict:
        with torch.no_grad():
            vals = {k: float(v) for k, v in terms.items()}
            vals["loss"] = float(loss)
            n = model.num_gaussians()
        now = time.perf_counter()
        its = (step - self.last[0]) / max(now - self.last[1], 1e-9)
        self.last = (step, now)
        with torch.no_grad():
            pred, target = images
            vals["psnr"] = float(-10.0 * torch.log10(((pred - target) ** 2).mean().clamp_min(1e-10)))
        rec = {"stage": stage.name, "step": step, "it_s": round(its, 2), "elapsed_s": round(elapsed, 2), **vals, **{f"n_{k}": v for k, v in n.items()}}
        if self.tb is not None:
            for k, v in vals.items():
                self.tb.add_scalar(f"{stage.name}/{k}", v, step)
            self.tb.add_scalar(f"{stage.name}/it_per_s", its, step)
            for k, v in n.items():
                self.tb.add_scalar(f"{stage.name}/n_{k}", v, step)
        if self.progress is not None:
            info = f"loss {vals['loss']:.4f}  psnr {vals['psnr']:.2f}  {its:.1f} it/s  N {n['face']}/{n['mouth']}"
            self.progress.update(self.task, completed=step, info=info)
        return rec

    def end_stage(self, stage, seconds) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        if self.cfg.progress:
            print(f"[train] stage {stage.name}: {seconds:.1f} s", flush=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.tb is not None:
            self.tb.close()


def _history_until(out: Path, stage_names: list[str], stage_index: int, stage_step: int) -> list[dict]:
    """The records of ``out``'s train_history.json up to a checkpoint's position (``stage_index``,
    ``stage_step``); records past it (a history written later than the checkpoint) are dropped,
    so the resumed run appends each step exactly once."""
    try:
        records = json.loads((out / RUN_HISTORY).read_text())
    except (OSError, ValueError):
        return []
    order = {name: i for i, name in enumerate(stage_names)}
    keep = []
    for r in records if isinstance(records, list) else []:
        pos = (order.get(r.get("stage"), len(order)), int(r.get("step", 0)))
        if pos <= (stage_index, stage_step):
            keep.append(r)
    return keep


def run_complete(state: dict, cfg: TrainConfig) -> bool:
    """Whether a checkpoint's run has finished every stage of its schedule."""
    return len(state["completed"]) >= len(cfg.resolved_stages())


def resume_trainer(cfg: TrainConfig, state: dict | None = None):
    """A Trainer positioned where ``cfg.output``'s latest checkpoint stopped (``state``: that
    checkpoint, when already loaded). The run's own schedule and model are kept; the dataset
    must be the run's (the same source video; it may have moved) and output stays ``cfg.output``
    (a run folder that was moved resumes where it is now)."""
    from talkgs.data import format as fmt

    if state is None:
        state = load_checkpoint(Path(cfg.output) / "checkpoints" / "latest.pt")
    saved = config_from_dict(TrainConfig, state["config"])
    sha = (state.get("dataset") or {}).get("sha256")
    if sha and fmt.read_meta(cfg.dataset).get("source", {}).get("sha256") != sha:
        raise UsageError(
            f"--resume: dataset {cfg.dataset} is not the one run {cfg.output} was trained on "
            f"({state['dataset'].get('path')}); resume with that dataset or train a new run"
        )
    # Only how it runs may change on resume.
    run_cfg = dataclasses.replace(
        saved,
        dataset=cfg.dataset,
        output=cfg.output,
        resume=True,
        device=cfg.device,
        backend=cfg.backend,
        progress=cfg.progress,
        log_every=cfg.log_every,
        checkpoint_every=cfg.checkpoint_every,
        tensorboard=cfg.tensorboard,
        schedule_scale=cfg.schedule_scale if cfg.schedule_scale != 1.0 else saved.schedule_scale,
    )
    trainer = Trainer(run_cfg)
    trainer.model = build_model(state, trainer.device).train()
    trainer.eye_ratio_ref = state["eye_ratio_ref"]
    trainer.cond = Conditioning(trainer.ds, trainer.eye_ratio_ref, trainer.model.cfg.audio.window,
                                trainer.cond.states, trainer.model.cfg.mouth_state.state_noise)
    report = state.get("predictor_report")
    trainer.predictor_report = json.loads(report) if report else None
    trainer.stage_index = int(state["stage_index"])
    trainer.stage_step = int(state["stage_step"])
    trainer.completed = list(state["completed"])
    trainer.global_step = int(state["global_step"])
    if len(trainer.completed) > trainer.stage_index:  # saved at a stage's end
        trainer.stage_index = len(trainer.completed)
        trainer.stage_step = 0
    trainer.sampler.load_state_dict({"rng": json.loads(state["sampler"]["rng"]), "queue": state["sampler"]["queue"].numpy()})
    torch.set_rng_state(state["torch_rng"])
    trainer._pending_opt_state = state.get("optimizers") if trainer.stage_step > 0 else None
    trainer.history = _history_until(
        trainer.out, [s.name for s in trainer.stages], trainer.stage_index, trainer.stage_step
    )
    return trainer


def train(cfg: TrainConfig) -> Path:
    """Train (or resume) a run checked by ``talkgs.commands.train.check`` (which records the
    dataset as an absolute path); returns the final checkpoint path. Resuming a finished run
    says so and changes nothing."""
    latest = Path(cfg.output) / "checkpoints" / "latest.pt"
    if cfg.resume:
        state = load_checkpoint(latest)
        saved = config_from_dict(TrainConfig, state["config"])
        if run_complete(state, saved):
            print(f"run {cfg.output} is already complete (stages {', '.join(state['completed'])}); nothing was changed")
            return latest
        trainer = resume_trainer(cfg, state)
    else:
        trainer = Trainer(cfg)
    return trainer.run()
