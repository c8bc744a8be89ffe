"""The fused face deformation (talkgs.model.fused_face) against its reference, the eager path of
TalkingHead.deform, on CPU through Triton's interpreter (skipped where Triton is not installed;
tests/gpu/test_fused_face_cuda.py runs the compiled kernel)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from talkgs.model.audio_encoder import gather_windows
from talkgs.model.head import TalkingHead
from talkgs.model.motion import eye_code
from tests.test_model import small_head_config

REPO = Path(__file__).resolve().parents[1]
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="Triton is not installed (its CPU interpreter runs this test)")


def fused_test_head(device: str = "cpu", n_face: int = 300) -> TalkingHead:
    """A small head with a non-trivial face field (the planes start at ~1e-4) and unnormalised
    stored quaternions, so that every term of the kernel shows."""
    torch.manual_seed(0)
    head = TalkingHead(small_head_config(n_face=n_face), audio_window=16, audio_channels=20,
                       generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in head.branch("face").motion.parameters():
            p.normal_(0.0, 0.3)
        head.gaussians("face")["quats"].mul_(torch.rand(n_face, 1) + 0.5)
    return head.to(device).eval()


def fused_test_inputs(b: int, seed: int, device: str = "cpu"):
    g = torch.Generator().manual_seed(seed)
    windows = gather_windows(torch.randn(40, 16, 20, generator=g), torch.arange(b) * 3).to(device)
    eye = eye_code(torch.rand(b, generator=g), 0.3 * torch.rand(b, 2, generator=g)).to(device)
    return windows, eye


@needs_triton
def test_fused_face_deforms_as_the_eager_field_and_steps_aside_for_gradients():
    """In a fresh process: Triton's interpreter needs TRITON_INTERPRET before Triton is first
    imported (its library's own jit functions are made then)."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", "from tests.test_fused_face import compare_on_cpu; compare_on_cpu()"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("fused face: equal"), done.stdout[-500:]


def compare_on_cpu() -> None:
    """The comparison itself (run under TRITON_INTERPRET=1)."""
    head = fused_test_head(n_face=300)  # 300: the last block of 64 is partly empty
    windows, eye = fused_test_inputs(3, 0)
    with torch.no_grad():
        head.fix_fields()
        want = head.deform("face", windows, eye)
        head.fix_fields(fused=True)
        assert head.fused_kernel is not None
        got = head.deform("face", windows, eye)
        got_no_eye = head.deform("face", windows, None)
        kernel = head.fused_kernel
        with head.eager_face():  # a baseline inside, the same kernel after
            assert head.fused_kernel is None
            eager = head.deform("face", windows, eye)
        assert head.fused_kernel is kernel and eager.d_xyz is not None
        torch.testing.assert_close(eager.means, want.means)
        head.fix_fields()
        want_no_eye = head.deform("face", windows, None)
    assert got.d_xyz is None, "the fused path returns the deformed Gaussians only"
    for name in ("means", "quats", "scales"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), atol=2e-6, rtol=1e-5, msg=name)
        torch.testing.assert_close(getattr(got_no_eye, name), getattr(want_no_eye, name), atol=2e-6, rtol=1e-5)
    assert (want.d_xyz.abs().max() > 1e-3) and (want.d_scale.abs().max() > 1e-2), "a field that moves"
    torch.testing.assert_close(got.quats.norm(dim=-1), torch.ones(3, 300))
    head.fix_fields(fused=True)
    assert head.deform("face", windows, eye).d_xyz is not None, "with gradients on, the eager path runs"
    head.train()
    assert head.fused_kernel is None
    print("fused face: equal")
