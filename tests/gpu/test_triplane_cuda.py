"""The tri-plane lookup on CUDA, as built and with PyTorch's sampler over the points in a spread
order, against the CPU path (run on the GPU machine).

    PYTHONPATH=/tmp/site:. python3 -m pytest -q -m gpu tests/gpu/test_triplane_cuda.py
"""

from __future__ import annotations

import copy

import pytest
import torch

from talkgs.model import triplane
from talkgs.model.triplane import TriPlaneEncoder

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("native, spread", [(False, None), triplane.SPREAD_VARIANT])
def test_training_lookups_on_cuda_give_the_cpu_features_and_plane_gradients(monkeypatch, native, spread):
    monkeypatch.setattr(triplane, "NATIVE_SAMPLER_ON_CUDA", native)
    monkeypatch.setattr(triplane, "SPREAD_MIN_POINTS", spread)
    g = torch.Generator().manual_seed(0)
    enc = TriPlaneEncoder(bound=0.15, n_levels=6, base_res=16, max_res=64, init_scale=1.0)
    n = 16384  # enough points for the spread order
    # Clustered points (many per cell, as Gaussians are) plus some outside the box.
    pts = 0.05 * torch.randn(n, 3, generator=g)
    pts[:50] = 0.3
    w = torch.randn(n, enc.out_dim, generator=g)
    cpu, gpu = enc, copy.deepcopy(enc).cuda()
    f_cpu = cpu(pts)
    (f_cpu * w).sum().backward()
    f_gpu = gpu(pts.cuda())
    assert (gpu._order_key == (n, "cuda:0")) == (spread is not None)  # the spread order was used when asked
    (f_gpu * w.cuda()).sum().backward()
    torch.testing.assert_close(f_gpu.cpu(), f_cpu, atol=1e-5, rtol=1e-5)
    assert f_cpu[:50].abs().max() == 0 and f_cpu[50:].abs().max() > 0
    for a, b in zip(gpu.planes, cpu.planes):
        torch.testing.assert_close(a.grad.cpu(), b.grad, atol=1e-3, rtol=1e-4)
    with torch.no_grad():  # no gradient: the plain order
        torch.testing.assert_close(gpu(pts.cuda()).cpu(), f_cpu.detach(), atol=1e-5, rtol=1e-5)
