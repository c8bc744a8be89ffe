"""``talkgs render``: make a trained head say any audio.

Its checks read the inputs' contents before torch loads: the audio's streams and length
(PyAV, without decoding), a --features file (numpy), the checkpoint's structure, and the
tracks of the run's dataset and of a --drive-video folder.
"""

from __future__ import annotations

import dataclasses
import wave
from pathlib import Path
from typing import Annotated, Literal

import tyro

from talkgs import provenance as owner
from talkgs import validate
from talkgs.commands.common import (
    at_least, device, frame_range, input_run, mouth_amplitude, mouth_state_option, positive, run_dataset, within,
)
from talkgs.conventions import FPS
from talkgs.errors import AudioFeatureError, MediaError, UsageError
from talkgs.render.drive import DriveConfig

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")
# A --drive-video folder may be this many frames shorter than the audio (its last frame is held).
DRIVE_VIDEO_HOLD = 2


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    """Make a trained head say any audio: an H.264 mp4 with the audio muxed in."""

    run: tyro.conf.Positional[Path]
    """A run folder written by `talkgs train` (or a checkpoint file)."""
    audio: Path
    """Speech to say: any file PyAV decodes (wav, mp3, m4a, flac, a video's audio track); the
    video gets round(duration in s x 25) frames."""
    output: Annotated[Path, tyro.conf.arg(aliases=["-o"])]
    """The .mp4 to write (appears only when complete; never one of the inputs)."""
    force: bool = False
    """Replace OUTPUT when it is a video written by an earlier `talkgs render` (any other file is
    never replaced)."""
    features: Path | None = None
    """Features (.npy, [N, W, C] of the run's kind, N within one of the video's frames) used
    instead of extracting them from AUDIO, e.g. the original's aud_hu.npy for a `hubert` run."""
    audio_kind: str | None = None
    """Feature kind the caller expects (default: the run's own; another kind is refused)."""
    drive_video: Path | None = None
    """Make the mouth follow another video's tracked lips instead of the audio: the folder `talkgs
    prepare OTHER.mp4 -o DIR` made (mouth_state runs; at least the video's frames less 2)."""
    mouth_amplitude: float = 1.0
    """Scale of the predicted mouth motion around the person's mean mouth: 1 as trained, above 1
    livelier, below 1 calmer (mouth_state runs; at most 3)."""
    dataset: Path | None = None
    """The run's dataset, where it is no longer at the path the run recorded."""
    drive: DriveConfig = DriveConfig()
    """Head pose, eyes and torso (default: ping-pong over the longest training shot)."""
    scale: float | None = None
    """Render at this scale of the dataset's frame size (default: the run's training scale)."""
    batch_size: int = 16
    """Frames rendered per call on the device."""
    device: str = "auto"
    """cuda, cpu or auto."""
    backend: Literal["auto", "gsplat", "torch"] = "auto"
    """Rasterizer backend (auto: gsplat on CUDA, torch elsewhere)."""
    crf: float = 18
    """x264 constant rate factor, 0 to 51 (lower = better quality, bigger file)."""
    preset: str = "fast"
    """x264 preset (ultrafast .. veryslow): encoding speed vs file size."""
    progress: bool = True
    """Show a progress bar and a summary line."""


Config = RenderConfig


def audio_frames(path: Path) -> int | None:
    """Video frames the render of ``path`` will have, round(duration x 25), from its header
    (PyAV probe, no decoding); one-line MediaError for an empty or unreadable file, one without
    an audio stream or shorter than a frame. None where the length is not known up front."""
    from talkgs.media import import_av

    if path.stat().st_size == 0:
        raise MediaError(f"audio file {path} is empty")
    if import_av() is None:  # without PyAV only .wav files are read, with the standard library
        try:
            with wave.open(str(path), "rb") as w:
                seconds = w.getnframes() / w.getframerate()
        except (wave.Error, EOFError) as e:
            raise MediaError(f"audio file {path} is not a PCM WAV file ({e}); other formats need PyAV") from None
    else:
        from talkgs.media import probe

        info = probe(path, require_video=False)
        if info.has_audio is False:
            raise MediaError(f"audio file {path} has no audio stream")
        seconds = info.audio_duration_s
        if seconds is None:
            return None
    n = int(round(seconds * FPS))
    if n < 1:
        raise MediaError(f"audio file {path} holds {seconds * 1000:.0f} ms of audio; at least one frame (40 ms) is needed")
    return n


def check(cfg: RenderConfig) -> RenderConfig:
    from talkgs.audio import check_kinds, load_feature_file

    run = Path(cfg.run)
    ckpt, state = input_run(run)
    validate.input_file(cfg.audio, "audio file", MediaError)
    if cfg.features is not None:
        validate.input_file(cfg.features, "--features file", AudioFeatureError)
    if cfg.drive_video is not None:
        dv = Path(cfg.drive_video)
        if dv.is_file():
            raise UsageError(
                f"--drive-video takes the other video's prepared folder: `talkgs prepare {dv} -o DIR`, then "
                f"--drive-video DIR (its lips are tracked once, by prepare)"
            )
        drive_meta = validate.drive_dataset(dv, "--drive-video dataset")
    at_least("batch_size", cfg.batch_size, 1)
    if cfg.scale is not None:
        positive("scale", cfg.scale)
    within("crf", cfg.crf, 0, 51)
    if cfg.preset not in X264_PRESETS:
        raise UsageError(f"--preset {cfg.preset!r} is not an x264 preset ({', '.join(X264_PRESETS)})")
    device(cfg.device)
    d = cfg.drive
    at_least("drive.blink_rate_per_min", d.blink_rate_per_min, 0.0)
    if cfg.audio_kind is not None:
        check_kinds([cfg.audio_kind], computed=False)
    mouth_amplitude(cfg.mouth_amplitude, [(run, state)])
    if cfg.drive_video is not None:
        mouth_state_option("--drive-video", [(run, state)])
    audio = state.get("audio") or {}
    kind = audio.get("kind")
    if cfg.audio_kind is not None and kind is not None and cfg.audio_kind != kind:
        raise AudioFeatureError(
            f"run {run} was trained with '{kind}' audio features and cannot be driven by "
            f"'{cfg.audio_kind}' features (train another run with --audio-kind {cfg.audio_kind})"
        )
    found = run_dataset(run, state, cfg.dataset)
    if found is not None:
        root, meta = found
        n = int(meta["n_frames"])
        frame_range("drive.segment", d.segment, n, root)
        if d.still_frame is not None and not (0 <= d.still_frame < n):
            raise UsageError(f"--drive.still-frame {d.still_frame} is outside the dataset's {n} frames")
    validate.output_file(
        cfg.output,
        inputs=[(cfg.audio, "--audio file"), (cfg.features, "--features file"), (ckpt, "run's checkpoint")],
        force=cfg.force,
        made_by_talkgs=owner.is_talkgs_video,
        command="render",
        suffix=".mp4",
    )
    # The inputs' contents last: the cheap refusals above come first.
    n_audio = audio_frames(Path(cfg.audio))
    if cfg.features is not None and kind is not None:
        feats = load_feature_file(cfg.features, kind, n_audio)
        want = (int(audio.get("window", feats.shape[1])), int(audio.get("channels", feats.shape[2])))
        if tuple(feats.shape[1:]) != want:
            raise AudioFeatureError(f"--features {cfg.features} has shape {tuple(feats.shape)}; run {run} needs "
                                    f"[N, {want[0]}, {want[1]}] ('{kind}')")
    if cfg.drive_video is not None and n_audio is not None:
        m = int(drive_meta["n_frames"])
        if m + DRIVE_VIDEO_HOLD < n_audio:
            raise UsageError(f"--drive-video {cfg.drive_video} has {m} frames ({m / FPS:.2f} s); the audio "
                             f"{cfg.audio} needs {n_audio} ({n_audio / FPS:.2f} s)")
    return cfg


def run(cfg: RenderConfig) -> None:
    from talkgs.render.renderer import render_audio

    render_audio(cfg)
