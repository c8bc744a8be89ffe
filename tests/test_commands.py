"""The commands as vertical slices (talkgs.commands): each command's check runs exactly once
through the real command line, a feature kind defined in this file is computed, trained and
rendered without any change to talkgs, and bad input contents are refused in one line before
torch is imported.

Real components throughout: a 6 s excerpt of the anchor clip prepared through the CLI, tiny
CPU trainings (a few Gaussians, a few steps), real renders. Only `serve`'s engine, which runs
until stopped, is replaced by a recorder where its check is counted.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from talkgs import cli
from talkgs.audio.registry import REGISTRY, register
from talkgs.commands import commands
from talkgs.data import format as fmt
from talkgs.errors import UsageError
from tests.test_robustness import ENV, one_line_refusal, snapshot, talkgs, talkgs_each

# A head trained in seconds on a CPU: 32x32 pixels, the quick preset with a few steps per stage.
TINY = [
    "--device", "cpu", "--image-scale", "0.0625", "--batch-size", "1", "--no-progress", "--no-tensorboard",
    "--log-every", "1", "--preset", "quick", "--mouth.iterations", "2", "--mouth.densify.until", "0",
    "--face.iterations", "4", "--face.densify.until", "0", "--fuse.iterations", "2",
]


# ------------------------------------------------------------------------------------ helpers


@contextlib.contextmanager
def counted_checks():
    """Every command's real ``check``, counted per command while the block runs."""
    counts: collections.Counter = collections.Counter()
    with pytest.MonkeyPatch.context() as mp:
        for name, module in commands().items():
            def counted(cfg, _real=module.check, _name=name):
                counts[_name] += 1
                return _real(cfg)

            mp.setattr(module, "check", counted)
        yield counts


def run_cli(*args, capsys=None) -> int:
    """``talkgs ARGS`` in this process (kinds registered here are known); asserts that the
    command's check ran exactly once and no other command's check ran."""
    with counted_checks() as counts:
        rc = cli.main([str(a) for a in args])
    assert dict(counts) == {args[0]: 1}, (args, dict(counts))
    return rc


def dataset_view(src: Path, dst: Path) -> Path:
    """A dataset folder whose files link to ``src``'s, with its own meta.json (what commands
    that add files to a dataset write)."""
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.name == fmt.META:
            shutil.copy(p, dst / p.name)
        elif p.is_file():
            (dst / p.name).symlink_to(p.resolve())
    return dst


def damaged(path: Path) -> None:
    """Replace a (linked) file by its first half: a copy cut short."""
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data[: len(data) // 2])


def write_mp3(path: Path, seconds: float, sample_rate: int = 16000) -> Path:
    """A mono mp3 of a 220 Hz tone, ``seconds`` long, encoded with PyAV (libmp3lame)."""
    import av

    n = int(round(seconds * sample_rate))
    x = (0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / sample_rate)).astype(np.float32)
    with av.open(str(path), "w", format="mp3") as c:
        s = c.add_stream("mp3", rate=sample_rate)
        s.layout = "mono"
        step = s.codec_context.frame_size or 1152
        for i in range(0, n, step):
            f = av.AudioFrame.from_ndarray(x[None, i : i + step], format="flt", layout="mono")
            f.sample_rate, f.pts, f.time_base = sample_rate, i, Fraction(1, sample_rate)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def excerpt(anchor_excerpt) -> Path:
    return anchor_excerpt()  # 6 s, 150 frames at 25 fps


@pytest.fixture(scope="module")
def small(excerpt, tmp_path_factory) -> Path:
    """The excerpt prepared through the CLI with mel features only (no whisper: the resume test
    needs a dataset without the default kind)."""
    out = tmp_path_factory.mktemp("cmd") / "small"
    assert run_cli("prepare", excerpt, "-o", out, "--audio-features", "mel", "--no-progress") == 0
    return out


@pytest.fixture(scope="module")
def mel_run(small, tmp_path_factory) -> Path:
    """A tiny mouth-state head trained on ``small`` with mel features, through the CLI."""
    out = tmp_path_factory.mktemp("cmd") / "mel_run"
    assert run_cli("train", small, "-o", out, "--audio-kind", "mel", *TINY) == 0
    return out


@dataclasses.dataclass(frozen=True)
class RmsOptions:
    """Options of the ``rms`` kind."""

    scale: float = 1.0
    """Factor on both energies (> 0)."""

    def check(self, kind: str) -> None:
        if not self.scale > 0:
            raise UsageError(f"--{kind}.scale must be > 0, got {self.scale}")


RMS_STEPS = 4  # 10 ms windows per 40 ms video frame


def extract_rms(wav: np.ndarray, n_frames: int, scale: float = 1.0) -> np.ndarray:
    """RMS energy of the signal and of its first difference in each 10 ms of a frame:
    ``float32 [N, 4, 2]`` (the frame's own 640 samples, so the windows are centred on it)."""
    x = np.zeros(n_frames * 640, np.float32)
    m = min(len(wav), len(x))
    x[:m] = wav[:m]
    both = np.stack([x, np.diff(x, prepend=np.float32(0))], -1).reshape(n_frames, RMS_STEPS, 640 // RMS_STEPS, 2)
    return (scale * np.sqrt((both**2).mean(2))).astype(np.float32)


@pytest.fixture(scope="module")
def rms_kind():
    """The ``rms`` kind, registered the way a kind in talkgs.audio registers itself."""
    register("rms", window=RMS_STEPS, channels=2, description="RMS energy, 4 x 10 ms per video frame",
             options=RmsOptions)(extract_rms)
    yield REGISTRY["rms"]
    REGISTRY.pop("rms")


# ------------------------------------------------------------------------------------ checked once


def test_every_command_is_checked_once_on_refusal_and_on_success(small, mel_run, excerpt, tmp_path, monkeypatch, capsys):
    def refused(*args, needle: str) -> None:
        assert run_cli(*args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("talkgs: ") and err.count("\n") == 1 and needle in err, err

    # Refusals: the real check refuses, once.
    refused("prepare", tmp_path / "no.mp4", "-o", tmp_path / "ds", needle="does not exist")
    refused("inspect", small, "--max-frames", "0", needle="--max-frames")
    refused("features", small, "--kind", "wav2vec", needle="unknown audio feature kind")
    refused("train", small, "-o", tmp_path / "r", "--batch-size", "0", needle="--batch-size")
    refused("eval", mel_run, "--max-lag", "-1", needle="--max-lag")
    refused("render", mel_run, "--audio", excerpt, "-o", tmp_path / "o.mp4", "--crf", "99", needle="--crf")
    refused("serve", mel_run, "--port", "0", needle="--port")
    refused("import-tg", excerpt, "-o", tmp_path / "x", needle="not a folder")
    refused("export-tg", small, "-o", small, "--force", needle="the dataset itself")

    # Successes with the real engines (which no longer check), each check still once.
    assert run_cli("prepare", excerpt, "-o", small) == 0  # the same video: nothing to do
    assert "already prepared" in capsys.readouterr().out
    assert run_cli("inspect", small, "-o", tmp_path / "insp", "--max-frames", "2", "--no-progress") == 0
    view = dataset_view(small, tmp_path / "view")
    n = fmt.read_meta(view)["n_frames"]
    np.save(tmp_path / "aud_ds.npy", np.zeros((n, 16, 29), np.float32))
    assert run_cli("features", view, "--kind", "deepspeech", "--import", tmp_path / "aud_ds.npy") == 0
    assert run_cli("export-tg", small, "-o", tmp_path / "tg", "--frame-range", "0", "10", "--no-progress") == 0
    assert run_cli("import-tg", tmp_path / "tg", "-o", tmp_path / "back", "--audio-features", "mel", "--no-progress") == 0
    assert fmt.read_meta(tmp_path / "back")["n_frames"] == 10
    run = tmp_path / "run"
    shutil.copytree(mel_run, run)
    assert run_cli("eval", run, "--device", "cpu", "--no-lpips", "--no-lip-metrics", "--no-video", "--train-block", "0",
                   "--no-progress") == 0
    assert (run / "eval" / "metrics.json").is_file()
    served = []
    monkeypatch.setattr(commands()["serve"], "run", served.append)  # serve's engine runs until stopped
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert run_cli("serve", mel_run, "--port", port) == 0
    assert [c.runs for c in served] == [(mel_run,)]
    # train and render succeed in the tests below (resume, the mp3 render, the rms kind).


# ------------------------------------------------------------------------------------ a kind defined here


def test_a_kind_defined_outside_talkgs_is_computed_trained_and_rendered(rms_kind, small, tmp_path, capsys):
    ds = dataset_view(small, tmp_path / "ds")
    # Its option is a flag of `talkgs features`, checked by the kind.
    assert run_cli("features", ds, "--kind", "rms", "--rms.scale", "0", "--no-progress") == 2
    assert "--rms.scale must be > 0" in capsys.readouterr().err
    assert run_cli("features", ds, "--kind", "rms", "--rms.scale", "2", "--no-progress") == 0
    n = fmt.read_meta(ds)["n_frames"]
    entry = fmt.read_meta(ds)["audio"]["features"]["rms"]
    assert entry == {"file": "audio_rms.npy", "shape": [n, RMS_STEPS, 2], "options": {"scale": 2.0}}
    from talkgs.media import read_wav

    wav, _ = read_wav(ds / fmt.AUDIO)
    np.testing.assert_allclose(np.load(ds / "audio_rms.npy").astype(np.float32), extract_rms(wav, n, 2.0), rtol=1e-3, atol=1e-4)

    run = tmp_path / "run"
    assert run_cli("train", ds, "-o", run, "--audio-kind", "rms", *TINY) == 0
    from talkgs.model import checkpoint as ckpt

    state = ckpt.load(run)
    assert state["audio"] == {"kind": "rms", "window": RMS_STEPS, "channels": 2, "options": {"scale": 2.0}}
    out = tmp_path / "rms.mp4"
    assert run_cli("render", run, "--audio", ds / fmt.AUDIO, "-o", out, "--device", "cpu", "--no-progress") == 0
    from talkgs.media import count_frames

    assert count_frames(out) == n
    # New audio is computed with the options the run's features were computed with (scale 2).
    from talkgs.render.renderer import HeadRenderer

    r = HeadRenderer(run, device="cpu")
    np.testing.assert_allclose(r.extract_features(wav, n), extract_rms(wav, n, 2.0), rtol=1e-6)
    # A run of another kind refuses it by name.
    assert run_cli("render", run, "--audio", ds / fmt.AUDIO, "-o", tmp_path / "x.mp4", "--audio-kind", "mel") == 2
    assert "trained with 'rms'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ item 9 edges


def test_the_printed_resume_command_is_accepted_for_a_run_of_another_kind(small, mel_run, capsys):
    # `talkgs train DATASET -o RUN --resume`: the defaults (--audio-kind whisper) are not the
    # run's; its config.json decides, so the dataset without whisper features is fine.
    assert "whisper" not in fmt.read_meta(small)["audio"]["features"]
    before = snapshot(mel_run)
    assert run_cli("train", small, "-o", mel_run, "--resume", "--device", "cpu") == 0
    assert "already complete" in capsys.readouterr().out
    assert snapshot(mel_run) == before
    # A flag that changes what the run trains is still refused.
    assert run_cli("train", small, "-o", mel_run, "--resume", "--audio-kind", "hubert") == 2
    assert "--audio-kind hubert differs from the run's mel" in capsys.readouterr().err


def test_a_2_s_mp3_renders_50_frames(mel_run, tmp_path):
    from talkgs.media import count_frames, probe, read_audio

    mp3 = write_mp3(tmp_path / "two.mp3", 2.0)
    assert probe(mp3, require_video=False).audio_duration_s == pytest.approx(2.0)
    assert read_audio(mp3).shape[0] == 32000  # the encoder delay is not silence put before the speech
    out = tmp_path / "two.mp4"
    assert run_cli("render", mel_run, "--audio", mp3, "-o", out, "--device", "cpu", "--no-progress") == 0
    assert count_frames(out) == 50 == round(2.0 * 25)


def test_bad_contents_are_refused_in_one_line_before_torch(small, mel_run, tmp_path):
    from talkgs.media import write_wav
    from tests.media_utils import write_clip

    out = tmp_path / "o.mp4"
    speech = tmp_path / "speech.wav"
    n = fmt.read_meta(small)["n_frames"]
    write_wav(speech, 0.1 * np.sin(np.arange(n * 640) / 9.0).astype(np.float32))
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "speech.mp3"
    text.write_text("not audio\n")
    silent_video = write_clip(tmp_path / "silent.mp4", [np.full((32, 32, 3), 90, np.uint8)] * 10, 25, None)
    long_wav = tmp_path / "long.wav"
    write_wav(long_wav, np.zeros((n + 10) * 640, np.float32))  # 10 frames longer than the drive video
    feats = {}
    for name, arr in (("channels", np.zeros((n, 16, 81), np.float32)), ("nan", np.full((n, 16, 80), np.nan, np.float32)),
                      ("frames", np.zeros((n - 5, 16, 80), np.float32)), ("2d", np.zeros((n, 80), np.float32))):
        np.save(tmp_path / f"{name}.npy", arr)
        feats[name] = tmp_path / f"{name}.npy"
    cut = tmp_path / "cut_run"
    shutil.copytree(mel_run, cut)
    damaged(cut / "checkpoints" / "latest.pt")
    foreign = tmp_path / "foreign_run"
    shutil.copytree(mel_run, foreign)
    (foreign / "checkpoints" / "latest.pt").write_bytes(_foreign_checkpoint(tmp_path))
    tracks = dataset_view(small, tmp_path / "tracks_cut")
    damaged(tracks / fmt.TRACKS)
    labels = dataset_view(small, tmp_path / "labels_cut")
    damaged(labels / fmt.LABELS)
    mel = dataset_view(small, tmp_path / "mel_cut")
    damaged(mel / "audio_mel.npy")
    render = ["render", mel_run, "-o", out]
    cases = [
        ([*render, "--audio", empty], "is empty"),
        ([*render, "--audio", text], "not a readable media file"),
        ([*render, "--audio", silent_video], "has no audio stream"),
        ([*render, "--audio", speech, "--features", feats["channels"]], "(16, 81)"),
        ([*render, "--audio", speech, "--features", feats["nan"]], "NaN"),
        ([*render, "--audio", speech, "--features", feats["frames"]], f"has {n - 5} frames"),
        ([*render, "--audio", speech, "--features", feats["2d"]], "shape"),
        ([*render, "--audio", long_wav, "--drive-video", small], f"the audio {long_wav} needs {n + 10}"),
        (["render", cut, "--audio", speech, "-o", out], "not a complete zip archive"),
        (["render", foreign, "--audio", speech, "-o", out], "not a talkgs checkpoint"),
        (["eval", cut], "not a complete zip archive"),
        (["serve", cut], "not a complete zip archive"),
        ([*render, "--audio", speech, "--dataset", tracks], "tracks.npz is damaged"),
        (["train", tracks, "-o", tmp_path / "r", "--audio-kind", "mel"], "tracks.npz is damaged"),
        (["train", mel, "-o", tmp_path / "r", "--audio-kind", "mel"], "audio_mel.npy is damaged"),
        (["inspect", labels, "-o", tmp_path / "i"], "labels.npz is damaged"),
        (["export-tg", tracks, "-o", tmp_path / "tg"], "tracks.npz is damaged"),
        (["eval", mel_run, "--drive", tmp_path], "--drive dataset"),
        (["eval", mel_run, "--drive", tracks], "tracks.npz is damaged"),
    ]
    before = snapshot(tmp_path, mel_run, small)
    for (_, needle), r in zip(cases, talkgs_each([args for args, _ in cases], importtime=True)):
        msg = one_line_refusal(r, needle)
        assert "weights_only" not in msg and "Weights only" not in msg, msg
    assert snapshot(tmp_path, mel_run, small) == before


def _foreign_checkpoint(tmp_path: Path) -> bytes:
    """A torch.save file that is not a talkgs checkpoint (made in a subprocess: no torch here)."""
    path = tmp_path / "foreign.pt"
    code = f"import torch; torch.save({{'weights': torch.zeros(3)}}, {str(path)!r})"
    subprocess.run([sys.executable, "-c", code], check=True, env=ENV)
    data = path.read_bytes()
    path.unlink()
    return data


def test_eval_names_the_drive_argument(mel_run, tmp_path):
    (tmp_path / "notes").mkdir()
    msg = one_line_refusal(talkgs("eval", mel_run, "--drive", tmp_path / "notes", importtime=True), "--drive dataset")
    assert str(tmp_path / "notes") in msg and "meta.json" in msg


def test_serve_advice_for_a_moved_dataset_is_true_for_serve(mel_run, small, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(mel_run, run)
    doc = json.loads((run / "config.json").read_text())
    doc["dataset"] = str(tmp_path / "gone")
    (run / "config.json").write_text(json.dumps(doc))
    msg = one_line_refusal(talkgs("serve", run, importtime=True), "put the dataset back at that path")
    assert "pass --dataset" not in msg and "gone" in msg
    # render does take --dataset, and says so.
    one_line_refusal(talkgs("render", run, "--audio", small / fmt.AUDIO, "-o", tmp_path / "o.mp4", importtime=True),
                     "pass --dataset DIR")


def test_the_interruption_message_starts_a_line_after_a_progress_bar(mel_run, small, tmp_path):
    from talkgs.media import write_wav

    speech = tmp_path / "long.wav"
    write_wav(speech, 0.1 * np.sin(np.arange(60 * 16000) / 7.0).astype(np.float32))  # 1500 frames
    proc = subprocess.Popen([sys.executable, "-m", "talkgs.cli", "render", str(mel_run), "--audio", str(speech), "-o",
                             str(tmp_path / "o.mp4"), "--device", "cpu", "--batch-size", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    err = bytearray()
    reader = threading.Thread(target=lambda: [err.extend(c) for c in iter(lambda: proc.stderr.read1(4096), b"")])
    reader.start()
    t0 = time.monotonic()
    while b"frame/s]" not in err and proc.poll() is None and time.monotonic() - t0 < 300:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=120)
    reader.join(timeout=10)
    text = err.decode()
    assert proc.returncode == 128 + signal.SIGTERM, text[-2000:]
    last = text.rstrip("\n").split("\n")[-1]  # a line in a terminal: only \n starts one
    assert last.startswith("talkgs: terminated"), repr(text[-300:])
    assert "render:" in text  # the bar was on screen


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"]])
def test_help_into_a_closed_pipe_ends_quietly(args):
    # `talkgs train --help | head -1` where head has already left: a pipe whose reader is closed.
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([sys.executable, "-m", "talkgs", *args], stdout=w, stderr=subprocess.PIPE, text=True,
                           env=ENV, timeout=120)
    finally:
        os.close(w)
    assert p.returncode == 128 + signal.SIGPIPE and p.stderr == "", (p.returncode, p.stderr)
