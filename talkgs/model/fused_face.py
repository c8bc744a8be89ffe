"""The face branch's deformation for a fixed field, fused into one Triton kernel (rendering only).

A renderer's face field has its frame-independent part computed once (:meth:`FaceMotion.spatial`:
the tri-plane features through the first layer, the region-attention gates). What remains per
frame is a small MLP per Gaussian and the deltas' application; done by PyTorch it writes and reads
``[N, B, 64]`` activations several times, which at 130k Gaussians x 32 frames is most of the
deformation's device time. This kernel keeps each block of Gaussians' activations on chip and
writes only the deformed means, unit quaternions and scales.

The reference is the eager path of :meth:`TalkingHead.deform` (FaceMotion.forward, then the deltas
added to the canonical Gaussians); tests compare the two (on CPU through Triton's interpreter
where Triton is installed, on CUDA in tests/gpu/). No gradients: training never uses it.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import torch

from talkgs.errors import TalkgsError

BLOCK = 64  # Gaussians per program
DELTA_COLS = 16  # each delta's columns padded to tl.dot's smallest width


def available(device: torch.device) -> bool:
    """Whether the kernel can run on ``device``: CUDA with Triton, or Triton's CPU interpreter
    (``TRITON_INTERPRET=1``, for tests)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


@dataclasses.dataclass
class FusedFace:
    """The fixed face field's tensors, laid out for the kernel (:func:`prepare`)."""

    gates: torch.Tensor  # [N, K] region attention [a_aud, a_eye], K = A + E
    feat_first: torch.Tensor  # [N, H] the first layer on the tri-plane features
    w_code: torch.Tensor  # [K, H] the first layer's code columns, transposed
    w_hidden: torch.Tensor  # [H, H] the second layer, transposed
    w_xyz: torch.Tensor  # [H, 16] the last layer's d_xyz rows (x xyz_scale), transposed, zero-padded
    w_rot: torch.Tensor  # [H, 16] its d_rot rows
    w_scale: torch.Tensor  # [H, 16] its d_scale rows
    means: torch.Tensor  # [N, 3] canonical means
    raw_quats: torch.Tensor  # [N, 4] stored (unnormalised) quaternions
    raw_scales: torch.Tensor  # [N, 3] stored log-scales
    scale_bound: float  # bounded_log_scale_delta's bound
    precision: str = "tf32x3"  # tl.dot's input precision: tf32x3 (three TF32 products, ~float32) or ieee


def prepare(motion, spatial, params, scale_bound: float) -> FusedFace:
    """Lay out a face ``motion`` (:class:`FaceMotion`), its ``spatial`` part (:class:`FaceSpatial`)
    and canonical Gaussian ``params`` for :func:`deform`."""
    first, hidden, last = motion.deform[0].weight, motion.deform[2].weight, motion.deform[4].weight
    h = first.shape[0]
    if h < 16 or h & (h - 1):
        raise TalkgsError(f"the fused face deformation needs a power-of-two hidden width >= 16, got {h}")
    k = motion.audio_dim + motion.eye_dim
    c = lambda t: t.detach().float().contiguous()  # noqa: E731

    def cols(rows: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        out = rows.new_zeros(h, DELTA_COLS)
        out[:, : rows.shape[0]] = rows.T * scale
        return c(out)

    return FusedFace(
        gates=c(torch.cat([spatial.aud_weight, spatial.eye_weight], dim=1)),
        feat_first=c(spatial.feat_first),
        w_code=c(first[:, first.shape[1] - k:].T),
        w_hidden=c(hidden.T),
        w_xyz=cols(last[:3], motion.cfg.xyz_scale),
        w_rot=cols(last[3:7]),
        w_scale=cols(last[7:10]),
        means=c(params["means"]),
        raw_quats=c(params["quats"]),
        raw_scales=c(params["scales"]),
        scale_bound=float(scale_bound),
    )


def deform(f: FusedFace, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Deformed ``means [B, N, 3]``, unit ``quats [B, N, 4]`` and ``scales [B, N, 3]`` for the
    frames' codes ``[B, K]`` (audio code, then eye code)."""
    import triton

    n, k = f.gates.shape
    b, h = codes.shape[0], f.w_hidden.shape[0]
    if codes.shape != (b, k):
        raise TalkgsError(f"fused face codes must be [B, {k}], got {tuple(codes.shape)}")
    codes = codes.detach().float().contiguous()
    means = codes.new_empty(b, n, 3)
    quats = codes.new_empty(b, n, 4)
    scales = codes.new_empty(b, n, 3)
    kernel = _kernel(os.environ.get("TRITON_INTERPRET") == "1")
    kernel[(triton.cdiv(n, BLOCK),)](
        f.gates, f.feat_first, codes, f.w_code, f.w_hidden, f.w_xyz, f.w_rot, f.w_scale,
        f.means, f.raw_quats, f.raw_scales, means, quats, scales, n, b, k, f.scale_bound,
        H=h, KP=max(16, triton.next_power_of_2(k)), BLOCK=BLOCK, DC=DELTA_COLS, PRECISION=f.precision, num_warps=4,
    )
    return means, quats, scales


@functools.cache
def _kernel(interpreted: bool):
    """The Triton kernel, defined on first use (Triton is imported only where it runs; Triton reads
    ``TRITON_INTERPRET`` when a kernel is defined, hence one definition per mode)."""
    import triton
    import triton.language as tl

    @triton.jit
    def face_deform(gates, feat_first, codes, w_code, w_hidden, w_xyz, w_rot, w_scale,
                    means, raw_quats, raw_scales, out_means, out_quats, out_scales, N, B, K, bound,
                    H: tl.constexpr, KP: tl.constexpr, BLOCK: tl.constexpr, DC: tl.constexpr,
                    PRECISION: tl.constexpr):
        rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        live = rows < N
        kk = tl.arange(0, KP)
        hh = tl.arange(0, H)
        jj = tl.arange(0, DC)
        gate = tl.load(gates + rows[:, None] * K + kk[None, :], mask=live[:, None] & (kk < K)[None, :], other=0.0)
        first = tl.load(feat_first + rows[:, None] * H + hh[None, :], mask=live[:, None], other=0.0)
        wc = tl.load(w_code + kk[:, None] * H + hh[None, :], mask=(kk < K)[:, None], other=0.0)
        wh = tl.load(w_hidden + hh[:, None] * H + hh[None, :])
        wx = tl.load(w_xyz + hh[:, None] * DC + jj[None, :])
        wr = tl.load(w_rot + hh[:, None] * DC + jj[None, :])
        ws = tl.load(w_scale + hh[:, None] * DC + jj[None, :])
        m3 = live[:, None] & (jj < 3)[None, :]
        m4 = live[:, None] & (jj < 4)[None, :]
        mean0 = tl.load(means + rows[:, None] * 3 + jj[None, :], mask=m3, other=0.0)
        quat0 = tl.load(raw_quats + rows[:, None] * 4 + jj[None, :], mask=m4, other=0.0)
        scale0 = tl.load(raw_scales + rows[:, None] * 3 + jj[None, :], mask=m3, other=0.0)
        for b in range(0, B):
            code = tl.load(codes + b * K + kk, mask=kk < K, other=0.0)
            x = tl.maximum(tl.dot(gate * code[None, :], wc, input_precision=PRECISION) + first, 0.0)
            x = tl.maximum(tl.dot(x, wh, input_precision=PRECISION), 0.0)
            d_xyz = tl.dot(x, wx, input_precision=PRECISION)
            q = quat0 + tl.dot(x, wr, input_precision=PRECISION)
            q = tl.where(m4, q, 0.0)
            norm = tl.maximum(tl.sqrt(tl.sum(q * q, axis=1)), 1e-12)
            d_s = tl.dot(x, ws, input_precision=PRECISION) / bound
            tanh = 1.0 - 2.0 / (tl.exp(2.0 * d_s) + 1.0)
            at = (b * N + rows[:, None])
            tl.store(out_means + at * 3 + jj[None, :], mean0 + d_xyz, mask=m3)
            tl.store(out_quats + at * 4 + jj[None, :], q / norm[:, None], mask=m4)
            tl.store(out_scales + at * 3 + jj[None, :], tl.exp(scale0 + bound * tanh), mask=m3)

    return face_deform
