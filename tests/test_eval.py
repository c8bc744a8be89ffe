"""`talkgs eval`: the lip-sync report (val, a block of training frames, another clip's audio)
on real renders of the tiny CPU head, the metrics on the dataset's own frames, and the
completion path for machines without MediaPipe.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from talkgs.commands.eval import EvalConfig
from talkgs.data import format as fmt
from talkgs.data import load_dataset
from talkgs.errors import TalkgsError
from talkgs.metrics.lips import amplitude_ratio, best_lag, lagged_correlations, lips_landmarks, pearson, sync_scores
from talkgs.model.head import ground_truth_on_plate
from talkgs.render.drive import DriveConfig, drive_plan
from talkgs.eval.evaluate import (
    _check_drive_datasets,
    save_render,
    drive_features,
    evaluate,
    lip_scores,
    train_block,
    union_box,
    val_range,
)
from talkgs.render.renderer import HeadRenderer

# Runs `talkgs` as on the GPU machine: MediaPipe (talkgs.prepare.track) and PyAV fail to import.
NO_MEDIAPIPE = """
import sys, importlib.abc
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in ("talkgs.prepare.track", "mediapipe", "av") or name.startswith(("mediapipe.", "av.")):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return None
sys.meta_path.insert(0, _Block())
from talkgs.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _copy_run(run: Path, dst: Path) -> Path:
    (dst / "checkpoints").mkdir(parents=True)
    shutil.copy2(run / "checkpoints" / "latest.pt", dst / "checkpoints" / "latest.pt")
    shutil.copy2(run / "config.json", dst / "config.json")
    return dst


# Short sections: the tiny head renders at ~0.4 s per frame on 2 CPU cores. (The defaults, the
# whole val split and 250 training frames, are the same code over longer ranges.)
VAL = (1617, 1657)
TRAIN = (1597, 1617)
DRIVE_FRAMES = 40


@pytest.fixture(scope="module")
def report(trained, excerpt_dataset, tmp_path_factory):
    """The report (MediaPipe here) of a copy of the tiny run: 40 val frames, 20 training frames
    and 40 frames of the excerpt's audio; the renders are also saved (losslessly) for --lips-only."""
    _, _, _, run = trained
    run = _copy_run(run, tmp_path_factory.mktemp("report") / "run")
    cfg = EvalConfig(run=run, device="cpu", lpips=False, drive=(excerpt_dataset,), val_frames=VAL, train_frames=TRAIN,
                     drive_frames=DRIVE_FRAMES, save_renders=True, lips_codec="lossless", progress=False)
    return evaluate(cfg), run


# ----------------------------------------------------------------------------- the metrics


def test_offset_amplitude_and_r_of_a_real_opening_series(anchor_dataset):
    with np.load(anchor_dataset / fmt.TRACKS) as z:
        gt = z["mouth_open"][200:450].astype(np.float64)
    assert best_lag(gt, gt) == (0, 1.0)
    for k in (-5, -1, 2, 7):
        later = np.roll(gt, k)  # later[t] = gt[t - k]: the "render" moves k frames later
        if k > 0:  # the frames that wrapped around are unknown
            later[:k] = np.nan
        else:
            later[k:] = np.nan
        off, r = best_lag(later, gt)
        assert off == k and r == pytest.approx(1.0), (k, off, r)
        assert pearson(later, gt).r < 0.95  # unshifted, the same series correlates less
    s = sync_scores(0.5 * gt + 0.01, gt)
    assert s["amplitude"] == pytest.approx(0.5) and s["r"] == pytest.approx(1.0) and s["offset"] == 0
    assert amplitude_ratio(np.full_like(gt, 0.1), gt) == 0.0
    assert np.isnan(amplitude_ratio(gt, np.full_like(gt, 0.1)))
    rs = lagged_correlations(gt, gt, max_lag=3)
    assert rs.shape == (7,) and rs[3] == pytest.approx(1.0) and np.all(rs[:3] < 1) and np.all(rs[4:] < 1)


def test_replay_plan_gives_each_frame_its_own_eyes_in_order():
    meta = {"n_frames": 100, "split": {"train": [0, 90], "val": [90, 100]}, "shots": [[0, 100]]}
    tracks = {"blink": np.linspace(0, 1, 100).astype(np.float32), "eye_ratio": np.full((100, 2), 0.3, np.float32)}
    plan = drive_plan(meta, tracks, 10, DriveConfig(segment=(90, 100), pose="replay"))
    assert np.array_equal(plan.frames, np.arange(90, 100))
    assert np.array_equal(plan.blink, tracks["blink"][90:100])
    with pytest.raises(TalkgsError, match="11 were asked"):
        drive_plan(meta, tracks, 11, DriveConfig(segment=(90, 100), pose="replay"))


def test_lip_metrics_on_the_datasets_own_frames(anchor_dataset, tmp_path):
    """The report's signals on real frames: the ground truth's own frames score r ~ 1, offset 0,
    amplitude ~ 1 and LMD ~ 0; frames two later read as offset -2 (the "render" moves earlier);
    the face crop and a saved-and-decoded video give the same figures as the full frames."""
    a, b = 1617, 1717
    ds = load_dataset(anchor_dataset, "cpu", audio_kind=None, frame_range=(a, b + 2))
    frames = (ground_truth_on_plate(ds.frames, ds.labels, ds.background) * 255 + 0.5).to(torch.uint8).numpy()
    with np.load(anchor_dataset / fmt.TRACKS) as z:
        gt_open = z["mouth_open"][a:b].astype(np.float64)
        gt_lips = lips_landmarks(z["landmarks"][a:b])
    full, _ = lip_scores(frames[:-2], gt_open, gt_lips, 1.0, 8)
    assert full["r"] > 0.98 and full["offset"] == 0 and 0.95 < full["amplitude"] < 1.05, full
    assert full["lmd_px"] < 0.3 and full["detected_fraction"] == 1.0, full
    shifted, _ = lip_scores(frames[2:], gt_open, gt_lips, 1.0, 8)
    assert shifted["offset"] == -2 and shifted["r_at_offset"] > 0.98, shifted
    x0, y0, x1, y1 = union_box(ds.tracks["face_box"][: b - a].numpy(), ds.width, ds.height)
    assert (x1 - x0) % 2 == 0 and (y1 - y0) % 2 == 0 and (x1 - x0) < ds.width
    crop = np.ascontiguousarray(frames[:-2, y0:y1, x0:x1])
    cropped, _ = lip_scores(crop, gt_open, gt_lips, 1.0, 8)
    assert abs(cropped["r"] - full["r"]) < 0.01 and abs(cropped["lmd_px"] - full["lmd_px"]) < 0.15, (cropped, full)
    assert cropped["offset"] == 0
    # The compact codecs of the completion path: H.264 (PyAV) and MPEG-4 Part 2 (OpenCV, the GPU machine).
    from talkgs.media import read_frames, write_video_silent_cv2

    write_video_silent_cv2(tmp_path / "cv2.mp4", crop)
    for path in (save_render(tmp_path / "crop", crop), tmp_path / "cv2.mp4"):
        back = read_frames(path)[:, : crop.shape[1], : crop.shape[2]]
        saved, _ = lip_scores(np.ascontiguousarray(back), gt_open, gt_lips, 1.0, 8)
        assert saved["r"] > 0.98 and saved["offset"] == 0, (path.name, saved, full)
        assert abs(saved["amplitude"] - full["amplitude"]) < 0.05 and saved["lmd_px"] < 0.5, (path.name, saved, full)


# ----------------------------------------------------------------------------- the report


def test_report_sections_on_real_renders(report, excerpt_dataset, anchor_dataset):
    m, run = report
    secs = m["sections"]
    assert list(secs) == ["val", "train", "drive:excerpt"]
    assert secs["val"]["frames"] == list(VAL) and secs["val"]["n_frames"] == m["n_val_frames"] == VAL[1] - VAL[0]
    assert secs["train"]["frames"] == list(TRAIN) and secs["train"]["n_frames"] == TRAIN[1] - TRAIN[0]
    drive = secs["drive:excerpt"]
    assert fmt.read_meta(excerpt_dataset)["n_frames"] == 150
    assert drive["n_frames"] == DRIVE_FRAMES and drive["frames"] == [0, DRIVE_FRAMES]
    lo, hi = drive["drive"]["segment"]
    assert 1500 <= lo < hi <= 1617 and drive["drive"]["pose"] == "pingpong"  # the run's own training shot
    with np.load(anchor_dataset / fmt.TRACKS) as z:
        assert np.allclose(secs["val"]["per_frame"]["mouth_open_gt"], z["mouth_open"][VAL[0] : VAL[1]])
    with np.load(excerpt_dataset / fmt.TRACKS) as z:
        assert np.allclose(drive["per_frame"]["mouth_open_gt"], z["mouth_open"][:DRIVE_FRAMES])
    labels = fmt.load_labels(excerpt_dataset / fmt.LABELS, 0, DRIVE_FRAMES)
    assert np.array_equal(drive["per_frame"]["label_area"], (labels == 4).reshape(DRIVE_FRAMES, -1).sum(1))
    for name, e in secs.items():
        n = e["n_frames"]
        pf = e["per_frame"]
        for key in ("visible_mouth_area", "label_area", "mouth_open_gt", "mouth_open_render"):
            assert len(pf[key]) == n, (name, key)
        assert np.all(np.array(pf["visible_mouth_area"]) >= 0)
        la = e["label_area"]
        assert la["r"] == pytest.approx(pearson(pf["visible_mouth_area"], pf["label_area"]).r, abs=1e-12)
        assert -8 <= la["offset"] <= 8 and la["n"] == n
        assert ("amplitude" in la) == (e["kind"] == "replay")
        lips = e["lips"]
        assert set(lips) >= {"r", "amplitude", "offset", "r_at_offset", "detected_fraction", "n"}
        assert ("lmd_px" in lips) == (e["kind"] == "replay")
        assert lips["detected_fraction"] > 0.5, (name, lips)  # MediaPipe finds the 64x64 rendered face
        got = np.array(pf["mouth_open_render"])
        assert lips["r"] == pytest.approx(pearson(got, pf["mouth_open_gt"]).r, abs=1e-12)
        assert lips["amplitude"] == pytest.approx(amplitude_ratio(got, pf["mouth_open_gt"]), abs=1e-12)
        assert ("image" in e) == (e["kind"] == "replay")
        # Inside-mouth area and teeth: the ground truth's from its tracks and frames, the render's from MediaPipe.
        for key in ("mouth_area_gt", "teeth_gt", "mouth_area_render", "teeth_render"):
            assert len(pf[key]) == n, (name, key)
        assert np.all(np.array(pf["mouth_area_gt"]) >= 0) and np.all(np.array(pf["teeth_gt"]) >= 0)
        mo = lips["mouth"]
        assert mo["n_open"] == int(np.sum(np.array(pf["mouth_open_gt"]) >= 0.02)) > 0, (name, mo)
        assert -1 <= mo["area_r"] <= 1 and 0 <= mo["area_ratio_open"] < 10, (name, mo)
        assert mo["n_teeth_gt"] == 0 or 0 <= mo["teeth"] <= 1, (name, mo)
        assert ("mouth_crop_px" in e) == (e["kind"] == "replay")
    assert 0 < secs["val"]["lips"]["lmd_px"] < 10
    img = secs["val"]["image"]
    assert 0 < img["mouth_psnr"] < 60 and 0 < img["mouth_ssim"] < 1, img
    assert secs["val"]["mouth_crop_px"] == 16  # 0.45 x the anchor's ~270 px face at the tiny head's 1/8 scale
    assert len(secs["val"]["per_frame"]["mouth_psnr"]) == VAL[1] - VAL[0]
    # The ground truth's figures do not depend on the render: the dataset's own tracks and frames.
    from talkgs.metrics.mouth import inner_lip_area

    with np.load(excerpt_dataset / fmt.TRACKS) as z:
        assert np.allclose(drive["per_frame"]["mouth_area_gt"], inner_lip_area(z["landmarks"][:DRIVE_FRAMES]))
    # The non-head area is ground truth, so the head region scores lower than the full frame.
    assert m["mean"]["head_psnr"] < m["mean"]["psnr"] == secs["val"]["image"]["psnr"]
    saved = json.loads((run / "eval" / "metrics.json").read_text())
    assert saved["sections"].keys() == secs.keys() and "lips_pending" not in saved
    from talkgs.media import count_frames, probe

    assert count_frames(run / "eval" / "side_by_side.mp4") == VAL[1] - VAL[0]
    info = probe(run / "eval" / "side_by_side.mp4")
    assert info.width == 128 and info.has_audio


def test_default_training_block_is_the_middle_of_the_longest_training_shot(trained):
    r = HeadRenderer(trained[3], "cpu", drive=None)
    # The run trains on frames 1500:1779 (its last shot); the training split ends at 1617.
    assert train_block(r) == (1500, 1617) and train_block(r, 50) == (1533, 1583)
    assert val_range(r) == (1617, 1779)


def test_saved_renders_complete_to_the_same_figures(report, tmp_path):
    """--lips-only on the renders the report saved (FFV1, lossless) gives exactly the figures
    MediaPipe gave on the frames in memory: the completion path is the direct path."""
    direct, run = report
    assert sorted(p.name for p in (run / "eval" / "lips").iterdir()) == [
        "drive_excerpt.avi", "inputs.npz", "train.avi", "val.avi"]
    copy = tmp_path / "copy"
    shutil.copytree(run / "eval", copy / "eval")
    done = evaluate(EvalConfig(run=copy, lips_only=True, video=False))
    for name, e in done["sections"].items():
        ref = direct["sections"][name]
        np.testing.assert_equal(e["lips"], ref["lips"], err_msg=name)  # NaN (e.g. no teeth to show) equals NaN
        assert e["per_frame"]["mouth_open_render"] == ref["per_frame"]["mouth_open_render"], name


def test_report_completes_on_a_cpu_after_a_machine_without_mediapipe(report, trained, excerpt_dataset, tmp_path):
    """As on the GPU machine (no MediaPipe, no PyAV): eval saves the renders the lip metrics need
    and prints the command that completes them; `--lips-only` then completes them from RUN/eval
    alone (no checkpoint, no dataset)."""
    direct, _ = report
    run = _copy_run(trained[3], tmp_path / "gpu_run")
    r = subprocess.run(
        [sys.executable, "-c", NO_MEDIAPIPE, "eval", str(run), "--device", "cpu", "--no-lpips", "--no-progress",
         "--val-frames", "1617", "1637", "--train-frames", "1607", "1617",
         "--drive", str(excerpt_dataset), "--drive-frames", "20"],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr
    assert f"talkgs eval {run} --lips-only" in r.stdout, r.stdout
    m = json.loads((run / "eval" / "metrics.json").read_text())
    assert m["lips_pending"] is True and "talkgs.prepare.track" in m["notes"]["lips"]
    assert "PyAV missing" in m["notes"]["video"]
    files = sorted(p.name for p in (run / "eval" / "lips").iterdir())
    assert files == ["drive_excerpt.mp4", "inputs.npz", "train.mp4", "val.mp4"]
    assert [m["sections"][k]["n_frames"] for k in m["sections"]] == [20, 10, 20]
    # The image metrics and the label-area signal need no MediaPipe: the same per-frame values.
    pf, ref = m["sections"]["val"]["per_frame"], direct["sections"]["val"]["per_frame"]
    assert np.allclose(pf["psnr"], ref["psnr"][:20], atol=1e-4)
    assert np.allclose(pf["visible_mouth_area"], ref["visible_mouth_area"][:20], rtol=1e-4, atol=1e-3)
    for e in m["sections"].values():
        assert "lips" not in e and "r" in e["label_area"]
    assert np.allclose(pf["mouth_psnr"], ref["mouth_psnr"][:20], atol=1e-4)
    assert np.allclose(pf["teeth_gt"], ref["teeth_gt"][:20])
    shutil.rmtree(run / "checkpoints")
    r = subprocess.run([sys.executable, "-m", "talkgs", "eval", str(run), "--lips-only", "--no-video"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    done = json.loads((run / "eval" / "metrics.json").read_text())
    assert "lips_pending" not in done and "lips" not in done["notes"]
    for name, e in done["sections"].items():
        assert e["lips"]["detected_fraction"] > 0.5, (name, e["lips"])
        assert set(e["lips"]["mouth"]) == {"area_r", "area_ratio_open", "n_open", "teeth", "n_teeth_gt"}, name
        assert np.isfinite(e["lips"]["r"]) and -8 <= e["lips"]["offset"] <= 8
    assert "mouth r" in r.stdout and "drive excerpt" in r.stdout


def test_eval_with_measured_mouth_states(report, trained, tmp_path):
    """`--mouth-states measured`: the replayed sections are rendered with the mouth states
    measured from their tracked lips instead of the ones predicted from their audio; the report
    says so, and the val frames' rendered mouths differ from the audio-driven report's."""
    direct, _ = report
    run = _copy_run(trained[3], tmp_path / "run")
    r = subprocess.run(
        [sys.executable, "-m", "talkgs", "eval", str(run), "--device", "cpu", "--no-lpips", "--no-progress",
         "--no-video", "--no-lip-metrics", "--val-frames", str(VAL[0]), str(VAL[0] + 10), "--train-block", "8",
         "--mouth-states", "measured"],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "replayed sections with measured states" in r.stdout, r.stdout
    m = json.loads((run / "eval" / "metrics.json").read_text())
    assert m["mouth"] == {"replayed_sections": "measured", "amplitude": 1.0}
    assert direct["mouth"] == {"replayed_sections": "audio", "amplitude": 1.0}
    assert [m["sections"][k]["n_frames"] for k in m["sections"]] == [10, 8]
    got = np.array(m["sections"]["val"]["per_frame"]["visible_mouth_area"])
    audio = np.array(direct["sections"]["val"]["per_frame"]["visible_mouth_area"][:10])
    assert got.shape == audio.shape == (10,) and np.all(got >= 0)
    # The tiny head shows almost none of its inside mouth (~0.02-0.25 px of 64x64 visible), so
    # other states move that area by ~1e-4 px only; an audio-driven rerun reproduces the report's
    # areas bit for bit (measured: 0 difference), so 1e-5 is well above noise.
    assert np.abs(got - audio).max() > 1e-5, (got, audio)
    assert np.allclose(got, audio, rtol=0.05, atol=1e-3)  # the same head, camera and eyes


def test_drive_features_come_from_the_wav_when_the_clip_has_none(trained, excerpt_dataset, tmp_path):
    """A drive clip needs only meta.json, tracks.npz and its audio (labels.npz adds the label-area
    signal): e.g. a copy carried to the GPU machine without frames.mp4."""
    other = tmp_path / "other"
    shutil.copytree(excerpt_dataset, other, ignore=shutil.ignore_patterns("audio_*.npy", "frames.mp4", "labels.npz"))
    assert _check_drive_datasets((other, excerpt_dataset)) == [("drive:other", other), ("drive:excerpt", excerpt_dataset)]
    (other / fmt.TRACKS).rename(tmp_path / "tracks.npz")
    with pytest.raises(TalkgsError, match="has no tracks.npz"):
        _check_drive_datasets((other,))
    (tmp_path / "tracks.npz").rename(other / fmt.TRACKS)
    r = HeadRenderer(trained[3], "cpu", drive=None)
    n = fmt.read_meta(other, check_files=False)["n_frames"]
    computed = drive_features(r, other, n)
    stored = np.load(excerpt_dataset / "audio_mel.npy").astype(np.float32)
    assert computed.shape == stored.shape == (n, 16, 80)
    assert np.abs(computed - stored).max() < 0.02 * np.abs(stored).max()  # float16 storage
    (other / fmt.AUDIO).unlink()
    with pytest.raises(TalkgsError, match="neither audio_mel.npy nor audio.wav"):
        drive_features(r, other, n)


def test_bad_eval_input_fails_before_rendering(trained, tmp_path):
    run = _copy_run(trained[3], tmp_path / "run")
    not_ds = tmp_path / "notes"
    not_ds.mkdir()
    r = subprocess.run([sys.executable, "-m", "talkgs", "eval", str(run), "--device", "cpu", "--drive", str(not_ds)],
                       capture_output=True, text=True)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("talkgs:") and "notes" in lines[0], r.stderr
    assert not (run / "eval").exists()
    with pytest.raises(TalkgsError, match="run `talkgs eval"):
        evaluate(EvalConfig(run=run, lips_only=True))


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_failed_or_interrupted_eval_leaves_run_eval_as_it_was(trained, excerpt_dataset, tmp_path, monkeypatch):
    """RUN/eval is built beside it and moved in when complete: Ctrl-C during a first eval leaves
    no RUN/eval; a later eval that fails on a damaged drive clip leaves the earlier report as it
    was; an eval replaces only what eval writes, and its folder has the umask's mode."""
    import talkgs.eval.evaluate as ev

    run = _copy_run(trained[3], tmp_path / "run")
    kw = dict(run=run, device="cpu", lpips=False, lip_metrics=False, val_frames=(VAL[0], VAL[0] + 8),
              train_frames=(TRAIN[0], TRAIN[0] + 4), drive_frames=8, progress=False)

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(ev, "render_drive", ctrl_c)  # Ctrl-C once val and train are written
        with pytest.raises(KeyboardInterrupt):
            evaluate(EvalConfig(drive=(excerpt_dataset,), **kw))
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json"]

    evaluate(EvalConfig(**kw))
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((run / "eval").stat().st_mode) == 0o777 & ~mask
    (run / "eval" / "notes.txt").write_text("mine")
    before = _hashes(run / "eval")
    assert {"metrics.json", "side_by_side.mp4", "val_render.mp4", "notes.txt"} <= set(before)

    damaged = tmp_path / "damaged"
    shutil.copytree(excerpt_dataset, damaged, ignore=shutil.ignore_patterns("frames.mp4"))
    data = (damaged / fmt.TRACKS).read_bytes()
    (damaged / fmt.TRACKS).write_bytes(data[: len(data) // 2])
    with pytest.raises(Exception):
        evaluate(EvalConfig(drive=(damaged,), **kw))
    assert _hashes(run / "eval") == before
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json", "eval"]

    evaluate(EvalConfig(**{**kw, "video": False}))
    after = _hashes(run / "eval")
    assert after["notes.txt"] == before["notes.txt"] and after["metrics.json"] != before["metrics.json"]


# ----------------------------------------------------------------------------- bench/lipsync.py

BENCH = Path(__file__).resolve().parents[1] / "bench" / "lipsync.py"


def test_lipsync_bench_table_of_an_evaluated_run(report, tmp_path):
    _, run = report
    out = tmp_path / "lipsync.json"
    r = subprocess.run([sys.executable, str(BENCH), "--table-only", "--run", f"tiny={run}", "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    v = res["variants"]["tiny"]
    assert list(v["sections"]) == ["val", "train", "drive:excerpt"]
    assert v["sections"]["train"]["frames"] == TRAIN[1] - TRAIN[0]
    assert v["drive_mean"]["n_clips"] == 1 and v["drive_mean"]["mouth_r"] == v["sections"]["drive:excerpt"]["mouth_r"]
    m = json.loads((run / "eval" / "metrics.json").read_text())
    assert v["sections"]["val"]["psnr"] == m["sections"]["val"]["image"]["psnr"]
    rows = [line.split() for line in res["table"][2:]]
    assert [row[1] if i == 0 else row[0] for i, row in enumerate(rows)] == ["val", "train", "excerpt", "drive"]
    assert "\n".join(res["table"]) in r.stdout


def test_lipsync_bench_time_limit_stops_jobs_and_still_reports(anchor_dataset, tmp_path):
    """Two variants side by side on one 'GPU' slot pair; the time limit interrupts both (SIGINT:
    the trainer saves a resumable checkpoint) and the bench still writes its table and JSON."""
    out = tmp_path / "lipsync.json"
    r = subprocess.run(
        [sys.executable, str(BENCH), str(anchor_dataset), "--runs", str(tmp_path / "runs"), "--variant", "a=",
         "--variant", "b=--seed 1", "--variant", "c=--seed 2", "--gpus", "0", "--jobs-per-gpu", "2",
         "--time-limit", "15", "--train-flags", "--device cpu --preset quick --image-scale 0.125 --frame-range 1500 1779",
         "--out", str(out)],
        capture_output=True, text=True, timeout=240,
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    st = {k: v["status"] for k, v in res["variants"].items()}
    assert st == {"a": "train interrupted", "b": "train interrupted", "c": "not started (time limit)"}, (st, r.stdout)
    for name in ("a", "b"):
        rec = json.loads((tmp_path / "runs" / f"{name}.bench_job.json").read_text())
        assert rec["gpu"] == "0" and rec["stopped_by_time_limit"] and "train_s" in rec
    assert "time limit" in r.stdout and "train interrupted" in r.stdout
