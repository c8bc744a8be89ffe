"""`talkgs prepare` end to end: the real anchor clip, and every kind of bad input."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from talkgs import conventions
from talkgs.commands import prepare as prepare_command
from talkgs.commands.prepare import PrepareConfig
from talkgs.data import LABEL_BACKGROUND, LABEL_MOUTH, load_dataset, read_meta
from talkgs.data.format import load_labels
from talkgs.errors import MediaError, OutputError, PrepareError
from talkgs.prepare import pipeline
from tests.media_utils import tone, write_clip

# The rigid fit's mean reprojection error on the anchor clip is ~2.5 px (notes.md; the gap between
# MediaPipe's generic canonical face and this person's face, not tracking noise). 4 px leaves margin
# for smoothing while still failing on a wrong focal, a flipped axis or smoothing across cuts
# (each of those gives > 10 px).
REPROJ_BOUND_PX = 4.0


def _cfg(video, out, **kw):
    return PrepareConfig(video=video, output=out, progress=False, **kw)


def prepare(cfg: PrepareConfig):
    """`talkgs prepare` from Python: the command's checks, then the pipeline."""
    return pipeline.prepare(prepare_command.check(cfg))


# ---- the real clip ---------------------------------------------------------------------------


def test_anchor_dataset_layout_and_meta(anchor_dataset):
    meta = read_meta(anchor_dataset)
    assert meta["n_frames"] == 1779
    assert (meta["width"], meta["height"]) == (512, 512)
    n_val = meta["split"]["val"][1] - meta["split"]["val"][0]
    assert meta["split"]["train"] == [0, 1779 - n_val] and abs(n_val - 1779 / 11) <= 1
    assert meta["source"]["video_stream_copied"] is True
    size = sum(p.stat().st_size for p in anchor_dataset.iterdir())
    assert size <= 30 * 1024 * 1024, f"dataset is {size / 2**20:.1f} MiB"
    assert not list(anchor_dataset.parent.glob("*.partial")), "work folder left behind"


def test_anchor_face_pose_and_reprojection(anchor_dataset):
    meta = read_meta(anchor_dataset)
    assert meta["quality"]["face_detected_fraction"] >= 0.99
    tr = np.load(anchor_dataset / "tracks.npz")
    err = tr["reproj_error_px"]
    assert err.mean() < REPROJ_BOUND_PX, f"mean reprojection error {err.mean():.2f} px"
    # Camera in front of the face (+z world), about arm's length away, OpenCV axes.
    w2c = tr["w2c"]
    centres = conventions.camera_centres(w2c.astype(np.float64))
    assert np.all(centres[:, 2] > 0.2) and np.all(centres[:, 2] < 3.0)
    R = w2c[:, :3, :3]
    assert np.allclose(np.einsum("nij,nkj->nik", R, R), np.eye(3), atol=1e-4)
    assert np.median(R[:, 1, 1]) < -0.8 and np.median(R[:, 2, 2]) < -0.8  # ~diag(1, -1, -1)
    # The nose tip of the canonical face projects near MediaPipe's nose tip (landmark 1).
    from talkgs.landmarks import load_canonical_face

    nose = load_canonical_face()[1][None]
    K = conventions.intrinsics(**{k: meta["intrinsics"][k] for k in ("fx", "fy", "cx", "cy")})
    uv, _ = conventions.project(np.broadcast_to(nose, (len(w2c), 1, 3)), w2c.astype(np.float64), K)
    d = np.linalg.norm(uv[:, 0] - tr["landmarks"][:, 1], axis=-1)
    assert np.median(d) < 6.0


def test_anchor_mouth_interior_follows_mouth_opening(anchor_dataset):
    tr = np.load(anchor_dataset / "tracks.npz")
    labels = load_labels(anchor_dataset / "labels.npz")
    area = (labels == LABEL_MOUTH).sum(axis=(1, 2))
    order = np.argsort(tr["mouth_open"])
    wide, closed = order[-20:], order[:20]
    assert np.all(area[wide] > 50), area[wide]
    assert np.median(area[closed]) < 10, area[closed]
    assert np.corrcoef(area, tr["mouth_gap_px"])[0, 1] > 0.8


def test_anchor_background_plate_matches_visible_background(anchor_dataset):
    ds = load_dataset(anchor_dataset, audio_kind="mel", frame_range=(0, 200))
    plate = ds.background.float()
    frames = ds.frames.float()
    bg = ds.labels == LABEL_BACKGROUND
    # Dilating the person by a few px keeps halo pixels out; the studio graphics move, so
    # compare with a median: most seen-background pixels must agree closely with the plate.
    err = (frames - plate).abs().mean(-1)[bg]
    assert err.median() < 12, float(err.median())


def test_anchor_audio_features_one_window_per_frame(anchor_dataset):
    meta = read_meta(anchor_dataset)
    mel = np.load(anchor_dataset / "audio_mel.npy")
    assert mel.shape[0] == meta["n_frames"] and mel.ndim == 3
    from talkgs.media import read_wav

    wav, sr = read_wav(anchor_dataset / "audio.wav")
    assert sr == 16000 and len(wav) == meta["n_frames"] * conventions.SAMPLES_PER_FRAME


def test_loader_rescales_consistently(anchor_dataset):
    full = load_dataset(anchor_dataset, frame_range=(100, 104))
    half = load_dataset(anchor_dataset, frame_range=(100, 104), scale=0.5)
    assert half.frames.shape == (4, 256, 256, 3) and half.labels.shape == (4, 256, 256)
    assert half.frames.dtype == half.labels.dtype == half.background.dtype == torch.uint8
    assert np.isclose(float(half.K[0, 0]), float(full.K[0, 0]) / 2)
    assert np.allclose(half.tracks["landmarks"].numpy(), full.tracks["landmarks"].numpy() / 2)
    assert set(full.labels.unique().tolist()) <= {0, 1, 2, 3, 4}


def test_rerun_skips_and_other_source_is_refused(anchor_dataset, anchor_excerpt, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in anchor_dataset.iterdir()}
    from tests.conftest import ANCHOR

    capsys.readouterr()
    prepare(_cfg(ANCHOR, anchor_dataset))
    # --no-progress hides progress, not the outcome.
    assert capsys.readouterr().out == f"[prepare] {anchor_dataset} is already prepared from this video (use --force to redo)\n"
    after = {p.name: p.stat().st_mtime_ns for p in anchor_dataset.iterdir()}
    assert before == after, "a finished dataset was rewritten without --force"
    with pytest.raises(PrepareError, match="another video"):
        prepare(_cfg(anchor_excerpt(), anchor_dataset))
    assert {p.name: p.stat().st_mtime_ns for p in anchor_dataset.iterdir()} == before


# ---- bad input --------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(MediaError, match="does not exist"):
        prepare(_cfg(tmp_path / "nope.mp4", tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_truncated_file(tmp_path, anchor_path):
    bad = tmp_path / "truncated.mp4"
    data = anchor_path.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(MediaError, match="truncated.mp4"):
        prepare(_cfg(bad, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_no_audio(tmp_path, anchor_excerpt):
    clip = anchor_excerpt(audio=False)
    with pytest.raises(MediaError, match="no audio"):
        prepare(_cfg(clip, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_too_short(tmp_path, anchor_excerpt):
    clip = anchor_excerpt(duration=3.0)
    with pytest.raises(PrepareError, match="at least 5 s"):
        prepare(_cfg(clip, tmp_path / "out"))


def test_no_face(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)
    frames = [np.roll(base, i, axis=1) for i in range(150)]
    clip = write_clip(tmp_path / "noface.mp4", frames, 25, tone(6.0))
    with pytest.raises(PrepareError, match="no face found in any of the 150 frames") as e:
        prepare(_cfg(clip, tmp_path / "out"))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "out.partial").exists()  # bad input is not resumable: no work folder left


def test_face_missing_in_part_of_the_clip_names_the_first_bad_frames(tmp_path, anchor_path):
    from tests.media_utils import _decode_segment

    faces, _, pcm = _decode_segment(anchor_path, 10.0, 3.0)
    rng = np.random.default_rng(1)
    noise = [rng.integers(0, 255, faces[0].shape, dtype=np.uint8) for _ in range(75)]
    clip = write_clip(tmp_path / "half.mp4", faces[:75] + noise, 25, tone(6.0))
    with pytest.raises(PrepareError, match=r"no face found in 75 of 150 frames \(first: 75, 76, 77"):
        prepare(_cfg(clip, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_30fps_clip_is_resampled(tmp_path, anchor_excerpt, capsys):
    clip = anchor_excerpt(duration=6.0, fps=30)
    capsys.readouterr()
    out = prepare(_cfg(clip, tmp_path / "ds"))
    # Without progress, the outcome alone.
    assert capsys.readouterr().out == f"[prepare] dataset written to {out}\n"
    meta = read_meta(out)
    assert meta["n_frames"] == 150
    assert meta["source"]["resampled"] is True and abs(meta["source"]["fps"] - 30) < 0.01
    from talkgs.media import count_frames

    assert count_frames(out / "frames.mp4") == 150
    assert np.load(out / "audio_mel.npy").shape[0] == 150


def _flash_click_clip(path, fps: int, flashes: list[int], seconds: float = 2.0, sample_rate: int = 48000):
    """A grey clip whose frames ``flashes`` are white, with a 1 ms click in the audio at the
    middle of each of them (the instant the flash frame is shown), H.264 / AAC written by PyAV."""
    n = int(round(seconds * fps))
    frames = [np.full((64, 64, 3), 255 if j in flashes else 60, np.uint8) for j in range(n)]
    audio = np.zeros(int(seconds * sample_rate), np.int16)
    for j in flashes:
        c = int(round((j + 0.5) / fps * sample_rate))
        audio[c : c + sample_rate // 1000] = 20000
    return write_clip(path, frames, fps, audio, sample_rate=sample_rate)


@pytest.mark.parametrize("fps", [30, 25])
def test_a_flash_and_its_click_land_on_the_same_prepared_frame(tmp_path, fps):
    """prepare's media step (frames.mp4 at 25 fps, audio.wav at 16 kHz) on a clip where a frame
    flashes as a click sounds: each flash comes out on the 25 fps frame whose 640 samples hold
    its click. At 30 fps the flashes are at every phase of the 6-frame cycle, and one of the six
    is the source frame the resampling drops; at 25 fps (the stream is copied) all come out."""
    from talkgs.media import read_frames, read_wav

    flashes = [7, 14, 21, 28, 35, 42] if fps == 30 else [5, 12, 19, 26, 33, 40]
    clip = _flash_click_clip(tmp_path / f"flash{fps}.mp4", fps, flashes)
    cfg = _cfg(clip, tmp_path / "ds", min_duration_s=1.0)
    work = tmp_path / "work"
    (work / pipeline.WORK).mkdir(parents=True)
    ctx = pipeline._Ctx(cfg=cfg, work=work, source={"info": pipeline._check_source(cfg)}, timings={})
    pipeline._step_media(ctx)
    bright = read_frames(work / "frames.mp4").mean(axis=(1, 2, 3))
    wav, sr = read_wav(work / "audio.wav")
    assert sr == conventions.SAMPLE_RATE and len(bright) == 50 and len(wav) == 50 * conventions.SAMPLES_PER_FRAME
    shown = np.flatnonzero(bright > 160)
    clicks = []
    for j in flashes:  # the loudest sample within 100 ms of where the click was put
        c = int(round((j + 0.5) / fps * sr))
        lo = max(c - sr // 10, 0)
        clicks.append(lo + int(np.argmax(np.abs(wav[lo : c + sr // 10]))))
    click_frames = [c // conventions.SAMPLES_PER_FRAME for c in clicks]
    assert all(abs(c - round((j + 0.5) / fps * sr)) < 0.002 * sr for c, j in zip(clicks, flashes)), clicks
    assert set(shown) <= set(click_frames), (shown.tolist(), click_frames)
    assert len(shown) == (5 if fps == 30 else 6), shown.tolist()


def test_output_dir_that_is_not_a_dataset(tmp_path, anchor_excerpt):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not a talkgs dataset"):
        prepare(_cfg(anchor_excerpt(), out, force=True))
    assert (out / "notes.txt").read_text() == "keep me"


def test_interrupted_run_resumes_and_never_looks_complete(tmp_path, anchor_excerpt, monkeypatch):
    import talkgs.prepare.pipeline as pl

    clip = anchor_excerpt()
    out = tmp_path / "ds"

    def boom(ctx):
        raise KeyboardInterrupt

    steps = pl._steps
    monkeypatch.setattr(pl, "_steps", lambda cfg: [(n, o, boom if n == "labels" else f) for n, o, f in steps(cfg)])
    with pytest.raises(KeyboardInterrupt):
        prepare(_cfg(clip, out))
    assert not out.exists()
    partial = tmp_path / "ds.partial"
    assert (partial / "frames.mp4").exists() and not (partial / "meta.json").exists()
    def must_not_rerun(ctx):
        raise AssertionError("a finished step ran again")

    finished = {"media", "track", "pose"}
    monkeypatch.setattr(
        pl, "_steps", lambda cfg: [(n, o, must_not_rerun if n in finished else f) for n, o, f in steps(cfg)]
    )
    prepare(_cfg(clip, out))
    assert read_meta(out)["n_frames"] == 150
    assert not partial.exists()
    assert {"track", "labels"} <= set(read_meta(out)["timings_s"])


def test_cli_prints_one_line_error(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "talkgs", "prepare", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("talkgs: ")
    assert "missing.mp4" in r.stderr


def test_audio_features_are_computed_beside_the_picture_steps(tmp_path, anchor_excerpt, monkeypatch):
    """The audio feature steps need only the media step's audio: their process writes them while
    track runs (the track step here waits until an audio file is on disk), and finalize waits."""
    import talkgs.prepare.pipeline as pl

    steps = pl._steps

    def track(f):
        def run(ctx):
            deadline = time.monotonic() + 120
            while not any(ctx.work.glob("audio_*.npy")):
                assert time.monotonic() < deadline, "no audio feature was written while track ran"
                time.sleep(0.05)
            f(ctx)
        return run

    monkeypatch.setattr(pl, "_steps", lambda cfg: [(n, o, track(f) if n == "track" else f) for n, o, f in steps(cfg)])
    out = prepare(_cfg(anchor_excerpt(), tmp_path / "ds"))
    meta = read_meta(out)
    assert set(meta["audio"]["features"]) and all((out / e["file"]).is_file() for e in meta["audio"]["features"].values())
