"""`talkgs train` smoke test on CPU: a tiny head learns the real clip (`talkgs eval`: test_eval.py).

Low resolution (64x64), a few hundred Gaussians and a few hundred steps with the pure-PyTorch
rasterizer: enough to show that the three stages learn and that checkpoints round-trip, in
about a minute.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from talkgs.errors import CheckpointError, TalkgsError
from talkgs.model import checkpoint as ckpt
from talkgs.train.checkpoint import save as save_checkpoint
from talkgs.train.trainer import Trainer, train

from tests.train_utils import _tiny_cfg, render_frames


def test_val_psnr_rises_well_above_the_initial_render(trained):
    trainer, before, after, _ = trained
    assert after > before + 3.0, (before, after)
    hist = [r for r in trainer.history if r["stage"] == "face"]
    assert hist[-1]["l1"] < hist[0]["l1"]


def test_run_folder_and_checkpoints(trained):
    _, _, _, out = trained
    assert (out / "config.json").is_file()
    for tag in ("mouth", "face", "fuse", "latest"):
        assert (out / "checkpoints" / f"{tag}.pt").is_file()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["image_scale"] == 0.125 and cfg["face"]["iterations"] == 160


def test_checkpoint_round_trips_bit_exactly(trained, tmp_path):
    trainer, _, _, out = trained
    state = ckpt.load(out / "checkpoints" / "latest.pt")
    model = ckpt.build_model(state, "cpu")
    ref = trainer.model.state_dict()
    got = model.state_dict()
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k].cpu(), got[k]), k
    idx = trainer.ds.val_idx[:3]
    with torch.no_grad():
        a = render_frames(trainer.model.eval(), trainer.cond, idx, trainer.width, trainer.height)
        b = render_frames(model, trainer.cond, idx, trainer.width, trainer.height)
    assert torch.equal(a, b)
    # Saving the reloaded model again gives the same tensors.
    trainer.model = model
    again = ckpt.load(save_checkpoint(trainer, "again"))
    for k in ref:
        assert torch.equal(again["model"][k], state["model"][k]), k


def test_corrupt_and_foreign_checkpoints_fail_in_one_line(trained, tmp_path):
    _, _, _, out = trained
    data = (out / "checkpoints" / "latest.pt").read_bytes()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt") as e:
        ckpt.load(bad)
    assert "\n" not in str(e.value)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not a talkgs checkpoint"):
        ckpt.load(other)
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.load(tmp_path / "missing.pt")


def test_resume_refuses_without_flag_and_continues_with_it(anchor_dataset, tmp_path):
    cfg = _tiny_cfg(anchor_dataset, tmp_path / "r")
    cfg = dataclasses.replace(
        cfg,
        mouth=dataclasses.replace(cfg.mouth, iterations=6, warmup_static=2),
        face=dataclasses.replace(cfg.face, iterations=6, warmup_static=2),
        fuse=dataclasses.replace(cfg.fuse, iterations=4),
        checkpoint_every=3,
    )
    trainer = Trainer(cfg)
    trainer.stages = trainer.stages[:1]  # stop after the mouth stage, as an interrupted run
    trainer.run()
    with pytest.raises(TalkgsError, match="--resume"):
        train(cfg)
    path = train(dataclasses.replace(cfg, resume=True))
    state = ckpt.load(path)
    assert state["completed"] == ["mouth", "face", "fuse"]
    assert np.isfinite(float(state["model"]["branches.face.gaussians.means"].abs().sum()))
