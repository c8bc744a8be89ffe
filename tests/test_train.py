"""`talkgs train` smoke test on CPU: a tiny head learns the real clip (`talkgs eval`: test_eval.py).

Low resolution (64x64), a few hundred Gaussians and a few hundred steps with the pure-PyTorch
rasterizer: enough to show that the three stages learn and that checkpoints round-trip, in
about a minute.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from talkgs.commands import train as train_command
from talkgs.errors import CheckpointError, Interrupted, TalkgsError
from talkgs.model import checkpoint as ckpt
from talkgs.train.checkpoint import save as save_checkpoint
from talkgs.train.state import TrainState, training_sampler
from talkgs.train.trainer import Trainer, resume_trainer, train

from tests.conftest import REPO
from tests.train_utils import _tiny_cfg, render_frames

ENV = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_val_psnr_rises_well_above_the_initial_render(trained):
    trainer, before, after, _ = trained
    assert after > before + 3.0, (before, after)
    hist = [r for r in trainer.state.history if r["stage"] == "face"]
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
        a = render_frames(trainer.model.eval(), trainer.frames, idx, trainer.width, trainer.height)
        b = render_frames(model, trainer.frames, idx, trainer.width, trainer.height)
    assert torch.equal(a, b)
    # A training state loaded from the checkpoint saves the same checkpoint again.
    sampler, _ = training_sampler(trainer.ds, 1, trainer.cfg.image_scale)
    loaded = TrainState(model.train(), sampler, torch.zeros(2), trainer.stages, seed=1)
    loaded.load_state_dict(state)
    again = ckpt.load(save_checkpoint(tmp_path / "again.pt", trainer.cfg, trainer.ds, loaded))
    assert again.keys() == state.keys()
    for k in ref:
        assert torch.equal(again["model"][k], state["model"][k]), k
    for k in ("eye_ratio_ref", "torch_rng"):
        assert torch.equal(again[k], state[k]), k
    assert torch.equal(again["sampler"]["queue"], state["sampler"]["queue"])
    for k in ("completed", "stage_index", "stage_step", "global_step", "history", "predictor_report", "stage_steps"):
        assert again[k] == state[k], k
    assert state["completed"] == ["mouth", "face", "fuse"] and state["optimizers"] is None


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


def _short_cfg(dataset, out, **kw):
    """The tiny config with stages of a few steps and a short predictor fit."""
    cfg = _tiny_cfg(dataset, out)
    return dataclasses.replace(
        cfg,
        mouth=dataclasses.replace(cfg.mouth, iterations=6, warmup_static=2),
        face=dataclasses.replace(cfg.face, iterations=6, warmup_static=2),
        fuse=dataclasses.replace(cfg.fuse, iterations=4),
        predictor=dataclasses.replace(cfg.predictor, steps=20, augment=False),
        **{"checkpoint_every": 3, "log_every": 2, **kw},
    )


class StopAt(Trainer):
    """A trainer that stops (as on Ctrl-C) after step ``at`` of stage ``stage``."""

    def __init__(self, cfg, stage: str, at: int, **kw):
        super().__init__(cfg, **kw)
        self.stop_stage, self.stop_step = stage, at

    def after_step(self, stage, out):
        super().after_step(stage, out)
        if stage.name == self.stop_stage and self.state.stage_step == self.stop_step:
            self.request_stop()


def _saved_optimizer_tensors(saved: dict) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint's ``optimizers`` entry by a dotted name."""
    flat = {}

    def walk(prefix, v):
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}", x)
        elif torch.is_tensor(v):
            flat[prefix] = v.cpu()

    walk("optimizers", saved)
    return flat


@pytest.fixture(scope="module")
def whole_short_run(anchor_dataset, tmp_path_factory):
    """The short config trained in sequence, uninterrupted, on one thread (bit-exact comparisons:
    no order of a parallel sum may differ): the reference of the resume tests."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        whole = _short_cfg(anchor_dataset, tmp_path_factory.mktemp("whole") / "run")
        Trainer(whole).run()
    finally:
        torch.set_num_threads(threads)
    return whole


def test_resumed_run_continues_where_it_stopped_and_ends_as_an_uninterrupted_one(anchor_dataset, whole_short_run,
                                                                                   tmp_path):
    """A run stopped in the middle of the face stage saves its whole training state (optimisers,
    densification statistics, sampler, generators); the resumed trainer holds exactly that state,
    continues at the same step and ends with the very model and history of a run that was never
    interrupted."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-exact comparisons: no order of a parallel sum may differ
    try:
        _resume_and_compare(anchor_dataset, whole_short_run, tmp_path)
    finally:
        torch.set_num_threads(threads)


def _resume_and_compare(anchor_dataset, whole, tmp_path):
    cfg = _short_cfg(anchor_dataset, tmp_path / "stopped")
    torch.manual_seed(0)
    with pytest.raises(Interrupted, match="face step 3/6"):
        StopAt(cfg, "face", 3).run()
    saved = ckpt.load(cfg.output / "checkpoints" / "latest.pt")
    assert (saved["stage_index"], saved["stage_step"], saved["completed"]) == (1, 3, ["mouth"])
    assert saved["optimizers"]["densify"]["face"]["grad2d"].abs().sum() > 0  # statistics mid-period
    with pytest.raises(TalkgsError, match="--resume"):  # the command line refuses a run without --resume
        train_command.check(cfg)
    resumed = resume_trainer(dataclasses.replace(cfg, resume=True))
    st = resumed.state
    assert (st.stage_index, st.stage_step, st.global_step, st.in_stage) == (1, 3, saved["global_step"], True)
    assert np.array_equal(st.sampler.state_dict()["queue"], saved["sampler"]["queue"].numpy())
    restored = _saved_optimizer_tensors(st.state_dict()["optimizers"])
    want = _saved_optimizer_tensors(saved["optimizers"])
    assert restored.keys() == want.keys() and any("exp_avg_sq" in k for k in want)
    for k in want:
        assert torch.equal(restored[k], want[k]), k
    assert [(r["stage"], r["step"]) for r in st.history] == [("mouth", s) for s in (2, 4, 6)] + [("face", 2)]
    path = resumed.run()
    a, b = ckpt.load(path), ckpt.load(whole.output / "checkpoints" / "latest.pt")
    assert a["completed"] == b["completed"] == ["mouth", "face", "fuse"]
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    keep = ("stage", "step", "loss", "psnr", "n_face", "n_mouth")
    assert [{k: r[k] for k in keep} for r in a["history"]] == [{k: r[k] for k in keep} for r in b["history"]]
    assert json.loads((cfg.output / "train_history.json").read_text()) == a["history"]
    # Resuming a finished run changes nothing.
    before = (cfg.output / "checkpoints" / "latest.pt").stat().st_mtime_ns
    assert train(dataclasses.replace(cfg, resume=True)) == cfg.output / "checkpoints" / "latest.pt"
    assert (cfg.output / "checkpoints" / "latest.pt").stat().st_mtime_ns == before


def test_the_mouth_branch_trained_in_a_side_process_is_the_sequential_runs_and_resumes(anchor_dataset, whole_short_run,
                                                                                        tmp_path, monkeypatch):
    """branches_in_parallel: the predictor and the mouth stage train in a second process while the
    run trains the face stage; that process trains the very mouth branch a run in sequence trains,
    the run ends with every stage, checkpoint and history row, and a run stopped in its face stage
    stops the side process with a checkpoint and resumes both to the uninterrupted run's model."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-exact comparisons: no order of a parallel sum may differ
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # nor in the side process
    try:
        seq = whole_short_run
        par = _short_cfg(anchor_dataset, tmp_path / "par", branches_in_parallel="on")
        torch.manual_seed(0)
        path = Trainer(par).run()
        stopped = _short_cfg(anchor_dataset, tmp_path / "stopped", branches_in_parallel="on")
        torch.manual_seed(0)
        with pytest.raises(Interrupted, match="face step 3/6"):
            StopAt(stopped, "face", 3).run()
        saved = ckpt.load(stopped.output / "checkpoints" / "latest.pt")
        assert (saved["stage_index"], saved["stage_step"], saved["completed"]) == (1, 3, [])  # mouth: in the side run
        side_saved = ckpt.load(stopped.output / "mouth_branch" / "checkpoints" / "latest.pt")
        assert side_saved["stage_index"] <= 1  # the side run checkpointed wherever it was stopped
        resumed = resume_trainer(dataclasses.replace(stopped, resume=True)).run()
    finally:
        torch.set_num_threads(threads)
    a, b = ckpt.load(path), ckpt.load(seq.output / "checkpoints" / "latest.pt")
    assert a["completed"] == b["completed"] == ["mouth", "face", "fuse"]
    for tag in ("mouth", "face", "fuse"):
        assert (par.output / "checkpoints" / f"{tag}.pt").is_file()
    assert [r["stage"] for r in a["history"]] == [r["stage"] for r in b["history"]]
    assert a["stage_steps"] == b["stage_steps"] == {"mouth": 6, "face": 6, "fuse": 4}
    assert json.loads(a["predictor_report"])["frames"] == json.loads(b["predictor_report"])["frames"]
    m_par, m_seq = ckpt.load(par.output / "checkpoints" / "mouth.pt"), ckpt.load(seq.output / "checkpoints" / "mouth.pt")
    mouth_keys = [k for k in m_seq["model"] if not k.startswith("branches.face.")]
    assert any(k.startswith("branches.mouth.gaussians") for k in mouth_keys)
    for k in mouth_keys:
        assert torch.equal(m_par["model"][k], m_seq["model"][k]), k
    init = ckpt.load(par.output / "mouth_branch" / "checkpoints" / "latest.pt")
    assert not torch.equal(a["model"]["branches.mouth.gaussians.means"], init["model"]["branches.face.gaussians.means"][:1])
    c = ckpt.load(resumed)
    for k in a["model"]:
        assert torch.equal(c["model"][k], a["model"][k]), k
    assert [(r["stage"], r["step"]) for r in c["history"]] == [(r["stage"], r["step"]) for r in a["history"]]


def test_a_process_of_world_rank_1_writes_and_prints_nothing(anchor_dataset, tmp_path, capsys):
    cfg = _short_cfg(anchor_dataset, tmp_path / "rank1", progress=True)
    trainer = Trainer(cfg, local_rank=1, world_rank=1, world_size=2)
    trainer.run()
    assert trainer.state.completed == ["mouth", "face", "fuse"] and trainer.state.history
    assert not cfg.output.exists()
    assert capsys.readouterr().out == ""


PROGRESS = """
import sys
from pathlib import Path
from tests.test_train import _short_cfg
from talkgs.train.trainer import train
train(_short_cfg(Path(sys.argv[1]), Path(sys.argv[2]), progress=True, log_every=1))
"""


def test_progress_is_printed_as_lines_while_training_when_stdout_is_a_pipe(anchor_dataset, tmp_path):
    """Piped (not a terminal), training prints a plain, labelled line per logged step as it goes:
    the first arrives while the run is still in its first stage."""
    out = tmp_path / "piped"
    proc = subprocess.Popen([sys.executable, "-c", PROGRESS, str(anchor_dataset), str(out)], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines, early = [], None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("[train] mouth step 1/6"):
            early = not (out / "checkpoints" / "mouth.pt").exists()
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert early, "the first step's line arrived only after the mouth stage had ended"
    steps = [i for i, x in enumerate(lines) if re.match(r"\[train\] \w+ step \d+/\d+  ", x)]
    assert len(steps) == 6 + 6 + 4, lines
    assert re.fullmatch(r"\[train\] face step 3/6  loss \d+\.\d{4}  psnr \d+\.\d\d dB  \d+\.\d steps/s  "
                        r"gaussians face \d+ mouth \d+  eta \d+:\d\d", lines[steps[8]]), lines[steps[8]]
    assert lines[0] == "[train] predictor: fitting 20 steps on the voice", lines
    mouth_end = next(i for i, x in enumerate(lines) if x.startswith("[train] stage mouth: "))
    assert steps[5] < mouth_end < steps[6]


def test_a_side_process_that_fails_is_reported_in_one_line_with_its_log(tmp_path):
    """A side process that ends without finishing its stage is named with its exit code, its log
    and the log's last line; joining it raises that line."""
    from talkgs.train.side import SideRun

    side = SideRun(tmp_path / "run", tmp_path / "dataset", "cpu", "auto", log_every=10, checkpoint_every=100)
    side.dir.mkdir(parents=True)
    side.log_path.write_text("[train] predictor: fitting\nDatasetError: frames.mp4 is unreadable\n")
    side.proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    side.proc.wait()
    msg = side.failed()
    assert msg is not None and "\n" not in msg
    assert "exit code 3" in msg and str(side.log_path) in msg and "frames.mp4 is unreadable" in msg
    with pytest.raises(TalkgsError, match="exit code 3"):
        side.join()


def test_side_process_is_on_by_default_on_cuda_only_and_forced_either_way():
    """branches_in_parallel auto: a side process on a CUDA device, not on the CPU; on / off force
    it (a bool is a config written before auto); never with several processes or another schedule."""
    from talkgs.train.side import wanted

    sched = ["mouth", "face", "fuse"]
    assert wanted("auto", "cuda", 1, sched) and not wanted("auto", "cpu", 1, sched)
    assert wanted("on", "cpu", 1, sched) and not wanted("off", "cuda", 1, sched)
    assert wanted(True, "cpu", 1, sched) and not wanted(False, "cuda", 1, sched)
    assert not wanted("on", "cuda", 2, sched) and not wanted("on", "cuda", 1, ["face", "mouth", "fuse"])
    with pytest.raises(TalkgsError, match="auto, on or off"):
        wanted("yes", "cuda", 1, sched)


def test_side_process_needs_room_for_a_second_copy_of_the_clip():
    """auto leaves the mouth stage to the run itself where the GPU's free memory does not hold
    the side process's own copy of the clip and its headroom."""
    from talkgs.train.side import SIDE_HEADROOM, has_room

    gib = 2**30
    clip_10min = 15000 * 512 * 512 * 4  # frames and maps of 10 min at 512x512
    assert has_room(80 * gib - clip_10min - 5 * gib, clip_10min)
    assert not has_room(24 * gib - clip_10min - 5 * gib, clip_10min)
    assert has_room(clip_10min + SIDE_HEADROOM, clip_10min) and not has_room(clip_10min + SIDE_HEADROOM - 1, clip_10min)


def test_batches_carry_their_lips_boxes_on_the_host_for_crops_without_a_device_sync(anchor_dataset):
    """The lips boxes a batch hands the crop losses are its device boxes, on the host (indexed by
    the sampler's host indices, or copied from the device ones)."""
    from talkgs.data.loader import load_dataset
    from talkgs.train import losses
    from talkgs.train.batch import TrainingFrames

    ds = load_dataset(anchor_dataset, "cpu", audio_kind="mel", frame_range=(300, 340), scale=0.25)
    frames = TrainingFrames(ds, torch.tensor([0.3, 0.3]))
    idx = torch.tensor([3, 17, 17, 39])
    for b in (frames.batch(idx, host_idx=idx.clone()), frames.batch(idx)):
        assert b.lips_box_host.device.type == "cpu"
        torch.testing.assert_close(b.lips_box_host, b.lips_box.cpu(), rtol=0, atol=0)
        assert torch.equal(losses.safe_square_boxes(b.lips_box_host, ds.height, ds.width),
                           losses.safe_square_boxes(b.lips_box, ds.height, ds.width).cpu())
    assert not torch.equal(b.lips_box_host[0], b.lips_box_host[1])  # boxes of different frames differ
