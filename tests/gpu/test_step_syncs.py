"""A training step waits on the device only where gsplat sizes its buffers: the lips crops, the
random LPIPS patches and the batch's indices reach the device without a sync (run on the GPU
machine).

    PYTHONPATH=/tmp/site:. python3 -m pytest -q -m gpu tests/gpu/test_step_syncs.py
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from tests.test_bench import bench_module

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("stage_name", ["face", "fuse"])
def test_a_step_with_lips_crops_and_patches_syncs_only_inside_the_rasterizer(stage_name):
    from talkgs.model.config import BranchInitConfig, HeadConfig
    from talkgs.model.head import TalkingHead
    from talkgs.train.config import FACE_STAGE, FUSE_STAGE
    from talkgs.train.stages import stage_loss

    speed = bench_module("speed")
    dev = torch.device("cuda")
    gen = torch.Generator().manual_seed(0)
    window = (2, 384)
    cfg = HeadConfig(face_init=BranchInitConfig(n=20_000, kind="surface"), mouth_init=BranchInitConfig(n=1_000, kind="cavity"))
    model = TalkingHead(cfg, *window, generator=gen).to(dev)
    batch = speed.synthetic_batch(model, 4, 256, window, dev, gen)
    stage = {"face": FACE_STAGE, "fuse": FUSE_STAGE}[stage_name]
    stage = dataclasses.replace(stage, losses=dataclasses.replace(stage.losses, lpips=0.05))  # the crops' losses on
    key = torch.zeros(3, device=dev)
    step = stage.warmup_static + 1
    for _ in range(2):  # the first step initialises cuBLAS, cuDNN and LPIPS, which may sync
        loss, *_ = stage_loss(model, stage, batch, step, model.cfg.sh_degree, key, 256, 256, "auto", lpips_on=True)
        loss.backward()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loss, *_ = stage_loss(model, stage, batch, step, model.cfg.sh_degree, key, 256, 256, "auto", lpips_on=True)
            loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    ours = [f"{w.filename}:{w.lineno}" for w in syncs if "/talkgs/train/" in w.filename.replace("\\", "/")]
    assert not ours, f"the {stage_name} step syncs in talkgs.train at {ours}"
    assert len(syncs) <= 4, [f"{w.filename}:{w.lineno}" for w in syncs]  # gsplat: one per rasterization
