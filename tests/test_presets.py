"""`talkgs train --preset` and its --help: presets are named starting configs that explicit flags
change, recorded in the run; the help lists what a user tunes, without measurements."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from talkgs.cli import main, parse
from talkgs.configio import config_from_dict, config_to_dict
from talkgs.train.config import PRESETS, TrainConfig

REPO = Path(__file__).resolve().parents[1]
D, R = Path("data"), Path("run")


def _differences(a, b, path: str = "") -> dict:
    """Dotted field -> (a's value, b's value) where two config dicts differ."""
    if isinstance(a, dict):
        out = {}
        for k in a:
            out.update(_differences(a[k], b[k], f"{path}.{k}" if path else k))
        return out
    return {} if a == b else {path: (a, b)}


def test_train_help_is_short_and_holds_no_measurements():
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "talkgs", "train", "--help"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) < 150, len(lines)
    bad = [line for line in lines if re.search(r"measured|H100|H200|seeds? \d|the default now|README", line, re.I)]
    assert not bad, bad
    for hidden in ("--model.", "--predictor.steps", "--face.losses", "--mouth.lr-decay", "--quick"):
        assert hidden not in r.stdout, hidden
    for shown in ("--preset", "--schedule-scale", "--batch-size", "--image-scale", "--device", "--backend",
                  "--audio-kind", "--seed", "--frame-range", "--resume", "--face.iterations"):
        assert shown in r.stdout, shown


def test_preset_original_is_the_original_design_and_flags_win():
    default = parse(["train", str(D), "-o", str(R)])
    assert default == TrainConfig(D, R) and default.preset == "default"
    orig = parse(["train", str(D), "-o", str(R), "--preset", "original"])
    assert orig == TrainConfig.from_preset("original", D, R)
    assert _differences(config_to_dict(orig), config_to_dict(default)) == {
        "preset": ("original", "default"),
        "audio_kind": ("mel", "whisper"),
        "model.conditioning": ("audio", "mouth_state"),
        "model.face_motion.lower_face_grid": (False, True),
        "face.losses.landmarks": (0.0, 0.05),
    }
    # An explicit flag wins over the preset; the rest of the preset stays.
    mine = parse(["train", str(D), "-o", str(R), "--preset=original", "--audio-kind", "whisper", "--face.iterations", "7"])
    assert mine.audio_kind == "whisper" and mine.face.iterations == 7
    assert mine.model.conditioning == "audio" and mine.face.losses.landmarks == 0.0
    # The last --preset counts, as for any repeated flag.
    assert parse(["train", str(D), "-o", str(R), "--preset", "original", "--preset", "default"]) == default
    with pytest.raises(SystemExit):
        parse(["train", str(D), "-o", str(R), "--preset", "fastest"])


def test_preset_quick_scales_the_schedule_and_composes_with_schedule_scale():
    quick = parse(["train", str(D), "-o", str(R), "--preset", "quick"])
    assert [(s.iterations, s.warmup_static) for s in quick.resolved_stages()] == [(112, 6), (112, 9), (28, 0)]
    assert (quick.model.face_init.n, quick.model.mouth_init.n, quick.predictor.steps) == (3000, 1000, 150)
    tenth = parse(["train", str(D), "-o", str(R), "--preset", "quick", "--schedule-scale", "0.1", "--mouth.iterations", "500"])
    assert [s.iterations for s in tenth.resolved_stages()] == [50, 11, 3]
    assert set(PRESETS) == {"default", "quick", "cpu", "original"} and all(f.__doc__ for f in PRESETS.values())
    cpu = parse(["train", str(D), "-o", str(R), "--preset", "cpu", "--schedule-scale", "4"])
    assert [s.iterations for s in cpu.resolved_stages()] == [448, 448, 112]
    assert (cpu.model.face_init.n, cpu.model.mouth_init.n, cpu.mouth.densify, cpu.face.densify) == (600, 150, None, None)


def test_ablation_variants_of_the_lipsync_bench_are_the_published_recipes():
    spec = importlib.util.spec_from_file_location("lipsync_bench", REPO / "bench" / "lipsync.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    default = config_to_dict(TrainConfig(D, R))
    flags = {  # the recipes of bench/results/lipsync_ablation_{A,B}_h200.json
        "orig": {"audio_kind": "mel", "model.conditioning": "audio", "model.face_motion.lower_face_grid": False,
                 "face.losses.landmarks": 0.0},
        "whisper": {"model.conditioning": "audio", "model.face_motion.lower_face_grid": False, "face.losses.landmarks": 0.0},
        "state": {"audio_kind": "mel", "model.face_motion.lower_face_grid": False, "face.losses.landmarks": 0.0},
        "landmarks": {"audio_kind": "mel", "model.conditioning": "audio"},
        "combined_mel": {"audio_kind": "mel"},
        "combined": {},
    }
    assert set(bench.ABLATION) == set(flags)
    for name, want in flags.items():
        cfg = bench.variant_config(name, [str(D), "-o", str(R), "--seed", "3"])
        got = {k: v[0] for k, v in _differences(config_to_dict(cfg), default).items() if k != "preset"}
        assert got == {**want, "seed": 3}, name


def test_preset_original_trains_and_is_recorded_in_the_run(anchor_dataset, tmp_path):
    run = tmp_path / "orig"
    rc = main(["train", str(anchor_dataset), "-o", str(run), "--preset", "original", "--device", "cpu",
               "--image-scale", "0.125", "--frame-range", "1500", "1779", "--batch-size", "2",
               "--mouth.iterations", "3", "--face.iterations", "3", "--fuse.iterations", "2",
               "--no-progress", "--no-tensorboard", "--log-every", "1"])
    assert rc == 0
    saved = json.loads((run / "config.json").read_text())
    for mark in ("kind", "format_version", "dataset_sha256"):
        saved.pop(mark)
    cfg = config_from_dict(TrainConfig, saved)
    want = TrainConfig.from_preset("original", anchor_dataset.resolve(), run, device="cpu", image_scale=0.125,
                                   frame_range=(1500, 1779), batch_size=2, progress=False, tensorboard=False, log_every=1)
    want = dataclasses.replace(want, mouth=dataclasses.replace(want.mouth, iterations=3),
                               face=dataclasses.replace(want.face, iterations=3), fuse=dataclasses.replace(want.fuse, iterations=2))
    assert cfg == want and cfg.preset == "original"
    from talkgs.model import checkpoint as ckpt

    state = ckpt.load(run / "checkpoints" / "latest.pt")
    assert state["completed"] == ["mouth", "face", "fuse"] and state["audio"]["kind"] == "mel"
    model = ckpt.build_model(state, "cpu")
    assert model.cfg.conditioning == "audio" and not model.cfg.face_motion.lower_face_grid
    assert config_from_dict(TrainConfig, state["config"]) == cfg
