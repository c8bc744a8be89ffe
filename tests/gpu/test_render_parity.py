"""GPU parity: gsplat 1.5.3 vs the torch backend on the same scenes (run on the GPU machine).

    PYTHONPATH=/tmp/site:. python3 -m pytest -q -m gpu tests/gpu/test_render_parity.py

Skipped without CUDA or gsplat. Thresholds and their justification: talkgs.raster.testing
(PARITY_*); bench/raster_parity.py prints the same measurements as a table.
"""

from __future__ import annotations

import pytest
import torch

from talkgs.raster import RenderError, rasterize
from talkgs.raster._gsplat import gsplat_unavailable_reason
from talkgs.raster.testing import (
    compare_backends,
    head_scene,
    parity_cases,
    parity_failures,
)

_REASON = gsplat_unavailable_reason()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(_REASON is not None, reason=f"gsplat backend unavailable: {_REASON}"),
]

@pytest.mark.parametrize("case", list(parity_cases()))
def test_gsplat_matches_torch_backend(case):
    scene, kwargs = parity_cases(256, "cuda")[case]()
    m = compare_backends(scene, kwargs, ref="torch", test="gsplat")
    failures = parity_failures(m)
    assert not failures, f"{case}: {failures}; metrics {m}"


def test_auto_backend_is_gsplat_on_cuda_and_torch_on_cpu():
    scene = head_scene(500, 64, device="cuda")
    assert rasterize(**scene).backend == "gsplat"
    cpu = head_scene(500, 64, device="cpu")
    assert rasterize(**cpu).backend == "torch"
    assert rasterize(**scene, backend="torch").backend == "torch"


def test_gsplat_absgrad_and_means2d_grad():
    scene = head_scene(2000, 128, n_cameras=2, device="cuda")
    out = rasterize(**scene, absgrad=True)
    out.means2d.retain_grad()
    (out.colors * torch.rand_like(out.colors)).sum().backward()
    g = out.means2d.grad
    assert g is not None and g.shape == (2, 2000, 2)
    assert out.means2d.absgrad.shape == (2, 2000, 2)
    # |sum of per-pixel grads| <= sum of |per-pixel grads|, elementwise.
    assert (g.abs() <= out.means2d.absgrad * (1 + 1e-4) + 1e-7).all()
    assert (out.means2d.absgrad[out.visible] > 0).any()


def test_gsplat_rejects_float64():
    scene = head_scene(10, 32, device="cuda", dtype=torch.float64)
    with pytest.raises(RenderError, match="float32"):
        rasterize(**scene, backend="gsplat")
