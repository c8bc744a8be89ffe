"""`talkgs batch`: a jobs file of prepare -> train -> renders run on two Ray workers, stopped by
Ctrl-C mid-training and run again (the training resumes from its checkpoint, the renders
follow), then on the local executor (only a new job runs; then nothing does); and every kind of
bad jobs file refused in one line with nothing started.

Real components: the 6 s excerpt of the anchor clip, a tiny CPU training through the command
line (the cpu preset, a few steps), real renders, a real local Ray instance.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from talkgs import cli
from talkgs.data import runs
from tests.test_robustness import ENV, snapshot

# A head trained in seconds on a CPU: 32x32 pixels, 750 Gaussians, few steps; a checkpoint every
# 2 steps, so Ctrl-C finds one mid-training.
TRAIN = ("--preset cpu --audio-kind mel --device cpu --image-scale 0.0625 --batch-size 1 --no-tensorboard "
         "--log-every 1 --checkpoint-every 2 --mouth.iterations 4 --face.iterations 100 --fuse.iterations 4")
JOBS = f"""\
# a dataset, a head, two videos of it saying the clip
render runs/anna --audio clip.mp4 -o out/a.mp4 --device cpu   # waits for the training
prepare clip.mp4 -o data/anna --audio-features mel

train data/anna -o runs/anna {TRAIN}
render runs/anna --audio clip.mp4 -o out/b.mp4 --device cpu --crf 30
"""


def batch(*args, cwd: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "talkgs.cli", "batch", *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=600, **kw)


def lines_of(out: str, word: str) -> dict[int, str]:
    """{jobs-file line: progress line} of the progress lines with event ``word``."""
    found = {}
    for ln in out.splitlines():
        parts = ln.split()
        if len(parts) > 4 and ln.startswith("[") and parts[2] == word.split()[0] and "line" in parts:
            found[int(parts[parts.index("line") + 1])] = ln
    return found


def history(run: Path) -> list[dict]:
    p = run / "train_history.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return []


@pytest.fixture(scope="module")
def folder(anchor_excerpt, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("batch")
    (d / "clip.mp4").symlink_to(anchor_excerpt())  # 6 s, 150 frames
    (d / "jobs.txt").write_text(JOBS)
    return d


@pytest.fixture(scope="module")
def resumed(folder):
    """The batch on two Ray workers, SIGINT once the training has logged a step, then run again:
    (stdout of the interrupted run, stdout of the second, the history the interruption kept)."""
    proc = subprocess.Popen([sys.executable, "-m", "talkgs.cli", "batch", "jobs.txt", "--ray", "--workers", "2"],
                            cwd=folder, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = folder / "runs" / "anna"
    t0 = time.monotonic()
    while not history(run) and proc.poll() is None and time.monotonic() - t0 < 400:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, (out, err[-3000:])
    assert err.rstrip().splitlines()[-1].startswith("talkgs: batch interrupted"), err[-2000:]
    kept = history(run)
    state = runs.check_checkpoint(run / "checkpoints" / "latest.pt")
    assert 0 < len(kept) and len(state["completed"]) < 3, (kept[-1:], state["completed"])  # stopped mid-training
    again = batch("jobs.txt", "--ray", "--workers", "2", cwd=folder)
    assert again.returncode == 0, (again.stdout, again.stderr[-3000:])
    return out, again.stdout, kept


def test_ray_batch_stops_on_ctrl_c_and_resumes_the_training_then_renders(folder, resumed):
    from talkgs import provenance as owner
    from talkgs.media import count_frames

    out, again, kept = resumed
    # The interrupted run: prepare done, training interrupted, the renders never started.
    assert set(lines_of(out, "done")) == {3}
    assert set(lines_of(out, "interrupted")) == {5}
    table = {ln.split()[0]: ln for ln in out.splitlines() if ln.split() and ln.split()[0].isdigit()}
    assert "not started" in table["2"] and "not started" in table["6"]
    # Run again: the dataset is not redone, the training resumes from its checkpoint.
    assert "already prepared" in lines_of(again, "up to date")[3]
    assert "resuming from its checkpoint" in lines_of(again, "start")[5]
    run = folder / "runs" / "anna"
    assert history(run)[: len(kept)] == kept  # the steps before Ctrl-C are kept, not retrained
    assert runs.check_checkpoint(run / "checkpoints" / "latest.pt")["completed"] == ["mouth", "face", "fuse"]
    # The two renders follow, at once, one on each worker.
    starts = lines_of(again, "start")
    assert set(lines_of(again, "done")) == {2, 5, 6}
    assert starts[2].split(" on ")[-1] != starts[6].split(" on ")[-1]
    for name in ("a", "b"):
        video = folder / "out" / f"{name}.mp4"
        assert owner.is_talkgs_video(video) and count_frames(video) == 150


def test_local_batch_runs_only_the_new_job_then_nothing(folder, resumed):
    outputs = [folder / "out" / "a.mp4", folder / "out" / "b.mp4", folder / "runs" / "anna", folder / "data" / "anna"]
    before = snapshot(*outputs)
    import numpy as np

    from talkgs.media import count_frames, write_wav

    write_wav(folder / "one.wav", (0.1 * np.sin(np.arange(16000) / 7.0)).astype(np.float32))  # 1 s: 25 frames
    with open(folder / "jobs.txt", "a") as f:
        f.write("render runs/anna --audio one.wav -o out/c.mp4 --device cpu --preset ultrafast\n")
    r = batch("jobs.txt", "--workers", "1", cwd=folder)
    assert r.returncode == 0, (r.stdout, r.stderr[-3000:])
    assert set(lines_of(r.stdout, "up to date")) == {2, 3, 5, 6} and set(lines_of(r.stdout, "done")) == {7}
    assert lines_of(r.stdout, "done")[7].endswith("on cpu:0)")
    assert snapshot(*outputs) == before and count_frames(folder / "out" / "c.mp4") == 25
    everything = snapshot(folder / "out", folder / "runs", folder / "data")
    r = batch("jobs.txt", cwd=folder)
    assert r.returncode == 0 and not lines_of(r.stdout, "start"), r.stdout
    assert set(lines_of(r.stdout, "up to date")) == {2, 3, 5, 6, 7}
    assert snapshot(folder / "out", folder / "runs", folder / "data") == everything


def test_bad_jobs_files_are_refused_in_one_line_with_nothing_started(folder, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths of a jobs file start at the current folder
    (tmp_path / "clip.mp4").symlink_to((folder / "clip.mp4").resolve())
    cases = [
        ("fly clip.mp4\n", 1, "'fly' is not a talkgs command"),
        ("\n# eval is not a job\neval runs/x\n", 3, "'eval' is a command `talkgs batch` does not run"),
        ("prepare clip.mp4 -o ds --bogus 1\n", 1, "Unrecognized options: --bogus"),
        ("prepare clip.mp4 -o ds --val-fraction 0.9\n", 1, "--val-fraction must be in [0.0, 0.5]"),
        ("train nowhere -o run\n", 1, "dataset"),
        ("prepare clip.mp4 -o ds\nprepare clip.mp4 -o ./ds\n", 2, "its output"),
        ("render run --audio clip.mp4 -o again.mp4\nprepare again.mp4 -o ds\ntrain ds -o run\n", 1, "in a cycle"),
        (f"prepare clip.mp4 -o ds\ntrain ds -o run {TRAIN}\nrender run --audio ds/audio.wav -o o.mp4\n", 3,
         "its --audio file"),
    ]
    needles = {4: "does not exist and no job of the file makes it", 5: "also written by line 1",
               6: "line 1 -> line 3 -> line 2 -> line 1", 7: "is written by line 1 (`talkgs prepare`)"}
    for k, (text, line, needle) in enumerate(cases):
        jobs = tmp_path / "jobs.txt"
        jobs.write_text(text)
        before = sorted(p.name for p in tmp_path.iterdir())
        assert cli.main(["batch", str(jobs), "--workers", "2"]) == 2, text
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"talkgs: {jobs} line {line}: "), err
        assert needle in err and needles.get(k, "") in err, err
        assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_ray_option_without_ray_installed_is_refused_in_one_line(folder):
    code = ("import sys; sys.modules['ray'] = None; from talkgs.cli import main; "
            "sys.exit(main(['batch', 'jobs.txt', '--ray']))")
    r = subprocess.run([sys.executable, "-c", code], cwd=folder, env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr == "talkgs: --ray needs Ray: pip install 'talkgs[cluster]'\n", r.stderr


def test_a_failed_job_is_listed_with_its_error_and_the_jobs_waiting_for_it_are_skipped(folder, resumed):
    (folder / "failing.txt").write_text(
        "prepare clip.mp4 -o data/short --audio-features mel --min-duration-s 60   # the clip is 6 s: fails\n"
        f"train data/short -o runs/short {TRAIN}\n"
        "render runs/short --audio clip.mp4 -o out/short.mp4 --device cpu\n"
        "prepare clip.mp4 -o data/anna --audio-features mel\n"  # up to date (the first batch made it)
    )
    r = batch("failing.txt", cwd=folder)
    assert r.returncode == 1, (r.stdout, r.stderr[-3000:])
    failed = lines_of(r.stdout, "failed")
    assert list(failed) == [1] and failed[1].endswith("s long; at least 60 s is needed"), r.stdout
    skipped = lines_of(r.stdout, "skipped")
    assert skipped[2].endswith("line 1 failed") and skipped[3].endswith("line 2 skipped"), r.stdout
    assert "already prepared" in lines_of(r.stdout, "up to date")[4]
    assert not (folder / "data" / "short").exists() and not (folder / "runs" / "short").exists()


def test_a_ray_address_where_no_cluster_answers_is_refused_in_one_line(folder, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once it is closed
    assert cli.main(["batch", str(folder / "jobs.txt"), "--ray", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert err == f"talkgs: --ray 127.0.0.1:{port}: no Ray cluster answers there (Connection refused)\n", err
