"""Never lose a user's file: every command refuses bad input up front with one line, and
replaces nothing it did not make.

Real files and real processes: each command runs as ``python -m talkgs.cli`` (signals are sent
with ``os.kill``), and every test hashes what the command must not touch before and after.
Classes: paths and values refused before any heavy import (no torch); the overwrite rules of
``--force``; signals (SIGTERM / SIGINT) in training, rendering and prepare; resuming a run;
damaged datasets; library log noise.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from talkgs import provenance as owner
from talkgs.data import format as fmt
from tests.conftest import REPO
from tests.media_utils import tone, write_clip

ENV = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
# A head small enough that a CLI training run takes seconds on a CPU (frames 1500..1779).
TINY_TRAIN = [
    "--device", "cpu", "--image-scale", "0.0625", "--frame-range", "1500", "1779", "--batch-size", "1",
    "--no-progress", "--no-tensorboard", "--log-every", "1", "--audio-kind", "mel", "--preset", "quick",
    "--mouth.iterations", "3", "--mouth.densify.until", "0", "--face.iterations", "20", "--face.densify.until", "0",
    "--fuse.iterations", "2",
]


def talkgs(*args, cwd=None, timeout=600, importtime=False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "talkgs.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=cwd, timeout=timeout)


def talkgs_each(arg_lists, importtime=False) -> list[subprocess.CompletedProcess]:
    """``talkgs(*args)`` for each of ``arg_lists``, three at a time (independent refusals: each
    a real command line in its own process), results in order."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=3) as pool:
        return list(pool.map(lambda args: talkgs(*args, importtime=importtime), arg_lists))


def start(*args, cwd=None) -> subprocess.Popen:
    """`talkgs ARGS` in the background, with Ctrl-C as KeyboardInterrupt even where this suite
    runs with SIGINT ignored (a shell's background job: `make test &`), as in a terminal."""
    from talkgs.batch.worker import _CHILD

    return subprocess.Popen([sys.executable, "-c", _CHILD, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, cwd=cwd)


def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots`` (files or folders), by path."""
    out = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def one_line_refusal(r: subprocess.CompletedProcess, needle: str = "") -> str:
    """The refusal's message; asserts exit 2 and exactly one line ``talkgs: ...`` (import-time
    lines of ``-X importtime`` aside) and, for those, that torch was never imported."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    imports = [ln for ln in lines if ln.startswith("import time:")]
    msg = [ln for ln in lines if not ln.startswith("import time:")]
    assert r.returncode == 2, r.stderr[-2000:]
    assert len(msg) == 1 and msg[0].startswith("talkgs: "), msg
    assert needle in msg[0], (needle, msg[0])
    assert not any(ln.rstrip().endswith("| torch") for ln in imports), f"torch imported for: {msg[0]}"
    return msg[0]


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 300.0, what: str = "") -> None:
    t0 = time.monotonic()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"process ended before {what}: {proc.stderr.read()[-2000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def small_dataset(anchor_excerpt, tmp_path_factory):
    """A 6 s excerpt of the anchor clip prepared through the command line (~10 s): another
    video than the anchor dataset. Its stderr is kept to check for library log noise."""
    out = tmp_path_factory.mktemp("small") / "ds"
    r = talkgs("prepare", anchor_excerpt(), "-o", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    return out, r


@pytest.fixture()
def world(tmp_path, anchor_excerpt):
    """User files a careless command could destroy: a source video, a notes folder, a config.json
    in a folder that is not a run."""
    video = tmp_path / "talk.mp4"
    shutil.copy(anchor_excerpt(), video)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("my notes")
    (notes / "config.json").write_text('{"mine": true}\n')
    text = tmp_path / "features.npy"
    text.write_text("0.1 0.2 0.3\n")
    return tmp_path


# ------------------------------------------------------------------------------------ paths and values


def _refusal_cases(w: Path, ds: Path, run: Path):
    video, notes = w / "talk.mp4", w / "notes"
    return [
        # prepare
        (["prepare", w, "-o", w / "o"], "is a folder"),
        (["prepare", video, "-o", video], "is a file"),
        (["prepare", video, "-o", notes, "--force"], "not a talkgs dataset"),
        (["prepare", video, "-o", w / "o", "--val-fraction", "0.9"], "--val-fraction"),
        (["prepare", video, "-o", w / "o", "--audio-features", "wav2vec"], "unknown audio feature kind"),
        (["prepare", video, "-o", w / "o", "--audio-features", "deepspeech"], "only imported"),
        # train
        (["train", ds, "-o", w / "r", "--batch-size", "0"], "--batch-size"),
        (["train", ds, "-o", w / "r", "--image-scale", "0"], "--image-scale"),
        (["train", ds, "-o", w / "r", "--schedule-scale", "-1"], "--schedule-scale"),
        (["train", ds, "-o", w / "r", "--frame-range", "50", "10"], "--frame-range"),
        (["train", ds, "-o", w / "r", "--audio-kind", "phones"], "no 'phones' audio features"),
        (["train", ds, "-o", w / "r", "--device", "gpu0"], "--device"),
        (["train", ds, "-o", w / "r", "--predictor.other-speakers", w / "nobody"], "does not exist"),
        (["train", ds, "-o", w / "r", "--predictor.other-speakers", ds], "the training dataset itself"),
        (["train", ds, "-o", w / "r", "--predictor.other-speakers", ds, "--preset", "original"],
         "an audio-conditioned head (--preset original) has none"),
        (["train", ds, "-o", notes], "not a talkgs run"),
        (["train", ds, "-o", video], "is a file"),
        (["train", ds, "-o", ds], "dataset"),
        (["train", ds, "-o", w / "r", "--resume"], "no checkpoint to resume"),
        (["train", video, "-o", w / "r"], "is a file"),
        # eval
        (["eval", notes], "checkpoints/latest.pt"),
        (["eval", run, "--batch-size", "0"], "--batch-size"),
        (["eval", run, "--mouth-amplitude", "0"], "--mouth-amplitude"),
        (["eval", run, "--mouth-amplitude", "4"], "--mouth-amplitude"),
        (["eval", run, "--lips-only", "--mouth-states", "measured"], "--lips-only scores the renders"),
        # render
        (["render", run, "--audio", video, "-o", video], "is the --audio file"),
        (["render", run, "--audio", video, "-o", video, "--force"], "is the --audio file"),
        (["render", run, "--audio", w / "speech.wav", "-o", video, "--force"], "does not exist"),
        (["render", run, "--audio", video, "-o", w / "other.mp4", "--audio-kind", "hubert"], "trained with 'mel'"),
        (["render", run, "--audio", video, "-o", w / "other.mp4", "--audio-kind", "wav2vec"], "unknown audio feature kind"),
        (["render", run, "--audio", notes, "-o", w / "other.mp4"], "is a folder"),
        (["render", run, "--audio", video, "-o", notes], "must be a .mp4"),
        (["render", run, "--audio", video, "-o", w / "other.mp4", "--batch-size", "0"], "--batch-size"),
        (["render", run, "--audio", video, "-o", w / "other.mp4", "--scale", "0"], "--scale"),
        (["render", run, "--audio", video, "-o", w / "other.mp4", "--features", notes], "is a folder"),
        (["render", run, "--audio", video, "-o", w / "other.mp4", "--mouth-amplitude", "0"], "--mouth-amplitude"),
        (["render", run, "--audio", video, "-o", w / "other.mp4", "--mouth-amplitude", "4"], "--mouth-amplitude"),
        # serve
        (["serve", run, "--mouth-amplitude", "4"], "--mouth-amplitude"),
        # features, inspect
        (["features", ds, "--kind", "wav2vec"], "unknown audio feature kind"),
        (["features", ds, "--kind", "deepspeech", "--import", notes], "is a folder"),
        (["inspect", ds, "-o", video], "is a file"),
        # import-tg / export-tg
        (["import-tg", video, "-o", w / "x"], "not a folder"),
        (["import-tg", notes, "-o", notes, "--force"], "source folder itself"),
        (["export-tg", ds, "-o", ds, "--force"], "the dataset itself"),
        (["export-tg", ds, "-o", ds / "tg"], "inside the dataset"),
        (["export-tg", ds, "-o", notes, "--force"], "is not the output of an earlier `talkgs export-tg`"),
        (["export-tg", ds, "-o", w / "tg", "--jpeg-quality", "0"], "--jpeg-quality"),
        (["export-tg", ds, "-o", w / "tg", "--frame-range", "0", "99999"], "--frame-range"),
    ]


def test_bad_arguments_and_paths_are_refused_in_one_line_before_torch(world, anchor_dataset, trained):
    run = trained[3]
    before = snapshot(world, anchor_dataset, run)
    cases = _refusal_cases(world, anchor_dataset, run)
    # Before any heavy work: one_line_refusal checks (-X importtime) that torch was never
    # imported; how quick that is, bench/cli_latency.py measures.
    for (_, needle), r in zip(cases, talkgs_each([args for args, _ in cases], importtime=True)):
        one_line_refusal(r, needle)
    assert snapshot(world, anchor_dataset, run) == before, "a refused command changed a file"
    assert sorted(p.name for p in world.iterdir()) == ["features.npy", "notes", "talk.mp4"], "a refusal left files"


def test_a_text_file_given_as_npy_is_named_for_what_it_is(world, small_dataset):
    ds, _ = small_dataset
    before = snapshot(ds)
    msg = one_line_refusal(talkgs("features", ds, "--kind", "deepspeech", "--import", world / "features.npy"))
    assert "not a .npy file" in msg and "pickle" not in msg
    assert snapshot(ds) == before


def test_help_never_imports_torch():
    for args in (["--help"], ["train", "--help"], ["render", "--help"], ["prepare", "--help"]):
        r = talkgs(*args, importtime=True)
        assert r.returncode == 0
        assert not any(ln.rstrip().endswith("| torch") for ln in r.stderr.splitlines()), args


# ------------------------------------------------------------------------------------ overwrite rules


def test_export_and_import_force_replace_only_their_own_files(anchor_dataset, tmp_path):
    tg_dir, ds2 = tmp_path / "tg", tmp_path / "ds2"
    r = talkgs("export-tg", anchor_dataset, "-o", tg_dir, "--frame-range", "1500", "1530", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert owner.is_tg_export(tg_dir)
    (tg_dir / "mine.txt").write_text("the original's notes")
    (tg_dir / "logs").mkdir()
    (tg_dir / "logs" / "run.log").write_text("the original's training log")
    keep = snapshot(tg_dir / "mine.txt", tg_dir / "logs")
    everything = snapshot(tg_dir)

    one_line_refusal(talkgs("export-tg", anchor_dataset, "-o", tg_dir), "--force")
    one_line_refusal(talkgs("import-tg", tg_dir, "-o", tg_dir, "--force"), "source folder itself")
    one_line_refusal(talkgs("import-tg", tg_dir, "-o", tg_dir / "ds", "--force"), "inside the source folder")
    assert snapshot(tg_dir) == everything

    r = talkgs("export-tg", anchor_dataset, "-o", tg_dir, "--frame-range", "1540", "1560", "--force", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert snapshot(tg_dir / "mine.txt", tg_dir / "logs") == keep  # not ours: kept
    assert len(list((tg_dir / "ori_imgs").glob("*.jpg"))) == 20  # ours: replaced, old frames gone
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folders left"

    r = talkgs("import-tg", tg_dir, "-o", ds2, "--no-progress")
    assert r.returncode == 0, r.stderr
    (ds2 / "notes.txt").write_text("beside the dataset")
    (ds2 / "inspect").mkdir()
    (ds2 / "inspect" / "x.png").write_bytes(b"a picture")
    keep = snapshot(ds2 / "notes.txt", ds2 / "inspect")
    source = snapshot(tg_dir)
    r = talkgs("import-tg", tg_dir, "-o", ds2, "--force", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert snapshot(ds2 / "notes.txt", ds2 / "inspect") == keep
    assert snapshot(tg_dir) == source  # the input is never touched
    assert fmt.read_meta(ds2)["n_frames"] == 20


def test_prepare_force_keeps_what_is_beside_the_dataset(small_dataset, anchor_excerpt, tmp_path):
    src, _ = small_dataset
    ds = tmp_path / "ds"
    shutil.copytree(src, ds)
    n = fmt.read_meta(ds)["n_frames"]
    np.save(tmp_path / "aud_ds.npy", np.random.default_rng(0).normal(size=(n, 16, 29)).astype(np.float32))
    assert talkgs("features", ds, "--kind", "deepspeech", "--import", tmp_path / "aud_ds.npy").returncode == 0
    assert talkgs("inspect", ds, "--max-frames", "3", "--no-progress").returncode == 0
    (ds / "notes.txt").write_text("my notes")
    keep = snapshot(ds / "notes.txt", ds / "inspect", ds / "audio_deepspeech.npy")
    one_line_refusal(talkgs("inspect", ds, "--max-frames", "3", "--no-progress"), "--force")  # its own earlier output
    assert talkgs("inspect", ds, "--max-frames", "2", "--no-progress", "--force").returncode == 0  # replaced
    assert owner.is_talkgs_video(ds / "inspect" / "inspect.mp4") and owner.is_talkgs_png(ds / "inspect" / "contact_sheet.png")
    keep = {**keep, **snapshot(ds / "inspect")}
    video = tmp_path / "same.mp4"
    shutil.copy(anchor_excerpt(), video)
    r = talkgs("prepare", video, "-o", ds, "--force", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert snapshot(ds / "notes.txt", ds / "inspect", ds / "audio_deepspeech.npy") == keep
    assert "deepspeech" in fmt.read_meta(ds)["audio"]["features"]  # added kind still listed (same video)
    assert not (tmp_path / "ds.partial").exists()


def test_no_face_leaves_no_work_folder_and_no_library_noise(tmp_path, small_dataset):
    clip = write_clip(tmp_path / "noface.mp4", [np.full((64, 64, 3), 90, np.uint8)] * 150, 25, tone(6.0))
    r = talkgs("prepare", clip, "-o", tmp_path / "out", "--no-progress")
    one_line_refusal(r, "no face")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noface.mp4"]
    # A successful prepare (the fixture's) ends without MediaPipe / TensorFlow Lite lines ...
    _, ok = small_dataset
    noise = ("TensorFlow Lite", "XNNPACK", "absl::", "W0000", "I0000", "inference_feedback_manager")
    assert not [ln for ln in ok.stderr.splitlines() if any(k in ln for k in noise)], ok.stderr[-2000:]
    # ... and --verbose shows them.
    r = talkgs("prepare", clip, "-o", tmp_path / "out", "--no-progress", "--verbose")
    assert r.returncode == 2 and any(k in r.stderr for k in noise), r.stderr[-2000:]


def test_damaged_tracks_is_one_line(small_dataset, tmp_path):
    src, _ = small_dataset
    ds = tmp_path / "ds"
    shutil.copytree(src, ds)
    data = (ds / fmt.TRACKS).read_bytes()
    (ds / fmt.TRACKS).write_bytes(data[: len(data) // 2])
    before = snapshot(tmp_path)
    msg = one_line_refusal(talkgs("inspect", ds, "-o", tmp_path / "insp", "--no-progress"), "tracks.npz")
    assert "damaged" in msg
    r = talkgs("train", ds, "-o", tmp_path / "run", "--device", "cpu", "--image-scale", "0.125", "--no-progress")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "damaged" in r.stderr, r.stderr[-2000:]
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "run").exists() and not (tmp_path / "insp").exists()


# ------------------------------------------------------------------------------------ render


def test_render_replaces_only_an_earlier_render_and_sigterm_leaves_nothing(trained, anchor_dataset, tmp_path):
    from talkgs.media import read_audio, write_wav

    run = trained[3]
    speech = read_audio(anchor_dataset / fmt.AUDIO, 16000)[5 * 16000 :]
    short, long = tmp_path / "short.wav", tmp_path / "long.wav"
    write_wav(short, speech[: 16000 // 2])
    write_wav(long, speech[: 30 * 16000])
    out = tmp_path / "out.mp4"
    r = talkgs("render", run, "--audio", short, "-o", out, "--device", "cpu", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert owner.is_talkgs_video(out)
    earlier = snapshot(tmp_path, run)
    one_line_refusal(talkgs("render", run, "--audio", short, "-o", out), "--force")

    proc = start("render", run, "--audio", long, "-o", out, "--device", "cpu", "--no-progress", "--force")
    temps = lambda: [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    wait_for(lambda: temps(), proc, what="the render's temporary file")
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1].startswith("talkgs: terminated"), err
    assert not temps(), "SIGTERM left a temporary video"
    assert snapshot(tmp_path, run) == earlier  # the earlier render is untouched


# ------------------------------------------------------------------------------------ training


def test_train_sigterm_resume_history_and_refusals(anchor_dataset, small_dataset, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    rel = os.path.relpath(anchor_dataset, work)  # typed relative: the run must record it absolute
    run = work / "run"
    proc = start("train", rel, "-o", "run", *TINY_TRAIN, cwd=work)
    wait_for(lambda: (run / "checkpoints" / "mouth.pt").is_file(), proc, what="the mouth stage's checkpoint")
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    msg = err.strip().splitlines()[-1]
    assert msg.startswith("talkgs: terminated") and "checkpoints/latest.pt" in msg and "--resume" in msg, msg
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["kind"] == "talkgs-run" and cfg["dataset"] == str(anchor_dataset.resolve())
    hist0 = json.loads((run / "train_history.json").read_text())
    assert hist0 and hist0[0]["stage"] == "mouth"

    # Refused on resume, nothing changed: another dataset, a changed training setting.
    before = snapshot(run)
    one_line_refusal(talkgs("train", small_dataset[0], "-o", run, "--resume"), "is not the one run")
    one_line_refusal(talkgs("train", anchor_dataset, "-o", run, "--resume", *TINY_TRAIN, "--face.iterations", "99"),
                     "--face.iterations")
    one_line_refusal(talkgs("train", anchor_dataset, "-o", run, *TINY_TRAIN), "--resume")
    assert snapshot(run) == before

    # The resume command the message printed, run from elsewhere: history accumulates.
    resume = msg.split("continue with: ")[1].split()[1:]
    r = talkgs(*resume, "--no-progress", "--device", "cpu", "--no-tensorboard", "--log-every", "1")
    assert r.returncode == 0, r.stderr
    hist = json.loads((run / "train_history.json").read_text())
    assert hist[: len(hist0)] == hist0
    steps = [(h["stage"], h["step"]) for h in hist]
    assert steps[0] == ("mouth", 1) and steps[-1] == ("fuse", 2) and len(set(steps)) == len(steps), steps
    assert len(steps) == 3 + 20 + 2  # log_every 1: every step of every stage exactly once

    # Resuming a finished run says so and changes nothing.
    before = snapshot(run)
    r = talkgs("train", anchor_dataset, "-o", run, "--resume", "--device", "cpu")
    assert r.returncode == 0 and "already complete" in r.stdout, r.stdout + r.stderr
    assert snapshot(run) == before

    # A run whose dataset moved: the refusal names the path and --dataset.
    moved = tmp_path / "moved_run"
    shutil.copytree(run, moved)
    doc = json.loads((moved / "config.json").read_text())
    doc["dataset"] = str(tmp_path / "gone")
    (moved / "config.json").write_text(json.dumps(doc))
    msg = one_line_refusal(talkgs("render", moved, "--audio", anchor_dataset / fmt.AUDIO, "-o", tmp_path / "o.mp4"), "--dataset")
    assert "gone" in msg


def test_checkpoint_dataset_lookup_mentions_dataset_flag(trained, tmp_path):
    from talkgs.data.runs import check_checkpoint, run_dataset
    from talkgs.errors import DatasetError
    from talkgs.model import checkpoint as ckpt

    state = ckpt.load(trained[3])
    assert run_dataset(state) == Path(state["dataset"]["path"])
    # The torch-free reading of the checkpoint holds the same plain values.
    header = check_checkpoint(trained[3] / "checkpoints" / "latest.pt")
    assert header["dataset"] == state["dataset"] and header["audio"] == state["audio"]
    state["dataset"]["path"] = str(tmp_path / "gone")
    with pytest.raises(DatasetError, match="--dataset"):
        run_dataset(state)
    with pytest.raises(DatasetError, match="--dataset"):
        run_dataset(state, tmp_path / "also_gone")


def test_prepare_sigint_keeps_the_work_folder_and_says_how_to_resume(anchor_excerpt, tmp_path):
    out = tmp_path / "ds"
    proc = start("prepare", anchor_excerpt(), "-o", out, "--no-progress")
    wait_for(lambda: (tmp_path / "ds.partial" / "_work" / "media.json").is_file(), proc, what="the media step")
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("prepare finished before the signal arrived")
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "resume" in err.strip().splitlines()[-1], err
    assert not out.exists() and (tmp_path / "ds.partial" / "source.json").is_file()
    r = talkgs("prepare", anchor_excerpt(), "-o", out)
    assert r.returncode == 0 and fmt.read_meta(out)["n_frames"] == 150
    assert "media: done earlier, skipped" in r.stdout
    assert not (tmp_path / "ds.partial").exists()


def test_an_interrupt_wrapped_by_a_library_is_still_found():
    from talkgs.errors import Interrupted, interrupt_behind

    def wrapped(signal_: BaseException):
        try:
            try:
                raise signal_
            except KeyboardInterrupt as e:
                raise ImportError("initialization failed") from e  # what MediaPipe's import does
        except ImportError as e:
            return e

    ki = KeyboardInterrupt()
    assert interrupt_behind(wrapped(ki)) is ki
    term = Interrupted("terminated (SIGTERM)", signal.SIGTERM)
    assert interrupt_behind(wrapped(term)) is term
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("while handling")  # implicit context counts as well
    except RuntimeError as e:
        assert isinstance(interrupt_behind(e), KeyboardInterrupt)
    assert interrupt_behind(ValueError("plain")) is None


def test_signals_noted_while_their_handlers_run_as_before():
    """A signal that a library swallows still leaves a note: the handler that was installed
    runs, and the note stays after it."""
    from talkgs.fsutil import signals_noted

    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    # Ctrl-C as a terminal gives it, also where this suite runs with SIGINT ignored (`make test &`).
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with signals_noted() as noted:
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)  # Python's default handler: KeyboardInterrupt
            signal.raise_signal(signal.SIGTERM)  # the installed handler, which raises nothing
        assert noted == [signal.SIGINT, signal.SIGTERM] and seen == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def test_library_errors_are_shortened_at_a_word():
    from talkgs.errors import short

    text = "PytorchStreamReader failed reading zip archive: failed finding central directory " * 3
    s = short(RuntimeError(text), 60)
    assert len(s) <= 60 and s.endswith("...")
    assert text.startswith(s[:-3]) and text[len(s) - 3] == " "  # cut before a space, never inside a word
    assert short(ValueError("two\nlines")) == "two lines"
