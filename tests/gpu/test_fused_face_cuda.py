"""The compiled fused face deformation (talkgs.model.fused_face) against PyTorch's, on CUDA, eager
and inside a captured CUDA graph (run on the GPU machine; no dataset needed).

    PYTHONPATH=/tmp/site:. python3 -m pytest -q -m gpu tests/gpu/test_fused_face_cuda.py
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from talkgs.render.graphs import DeformGraphs
from tests.test_fused_face import fused_test_head, fused_test_inputs

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
              pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs Triton")]


@pytest.mark.parametrize("n_face,b,precision", [(300, 3, "tf32x3"), (5000, 32, "tf32x3"), (5000, 32, "ieee")])
def test_compiled_fused_face_matches_pytorch_eager_and_graphed(n_face, b, precision):
    head = fused_test_head("cuda", n_face=n_face)
    windows, eye = fused_test_inputs(b, 1, "cuda")
    with torch.no_grad():
        head.fix_fields()
        want = head.deform_frames(windows, eye)
        head.fix_fields(fused=True)
        assert head.fused_kernel is not None
        head.fused_kernel.precision = precision
        got = head.deform_frames(windows, eye)
        graphed = DeformGraphs(head)(windows, eye)
    for out in (got, graphed):
        for field in ("means", "quats", "scales"):
            torch.testing.assert_close(getattr(out["face"], field), getattr(want["face"], field),
                                       atol=1e-5, rtol=1e-5, msg=field)
        torch.testing.assert_close(out["mouth"].means, want["mouth"].means)
