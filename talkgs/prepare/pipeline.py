"""`talkgs prepare`: video -> dataset, as a sequence of resumable steps.

All work happens in ``OUTPUT.partial/``. Each step writes its outputs atomically there, so
an interrupted run resumes at the first unfinished step (same source file only). The
folder is renamed to ``OUTPUT`` only once meta.json is written, so a dataset that exists
is always complete.

Step order and outputs (``_work/`` is scratch, deleted at the end):
  media       frames.mp4 (25 fps, stream copy when possible), audio.wav (16 kHz mono)
  track       _work/track.npz (landmarks, detection flags), _work/person.npy (selfie masks)
  pose        _work/pose.npz (cuts, focal, w2c raw/smoothed, reprojection errors)
  labels      labels.npz
  background  background.png, _work/background.json
  audio_*     audio_<kind>.npy, one per feature kind
  finalize    tracks.npz, meta.json
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import signal
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from talkgs import __version__, conventions
from talkgs.commands.prepare import PrepareConfig
from talkgs.data import format as fmt
from talkgs.errors import Interrupted, MediaError, PrepareError, TalkgsError, interrupt_behind, unwind_on_sigterm
from talkgs.fsutil import atomic_path, move_into, sha256_file, signals_deferred, signals_noted, write_json

WORK = "_work"
SOURCE_JSON = "source.json"


@dataclasses.dataclass
class _Ctx:
    cfg: PrepareConfig
    work: Path  # OUTPUT.partial
    source: dict
    timings: dict

    def frames(self) -> Iterator[np.ndarray]:
        """The frames of frames.mp4, uint8 ``[H, W, 3]``, decoded as they are taken (a step holds
        one at a time, never the clip: 5 minutes of 512x512 are 5.9 GB)."""
        from talkgs.media import iter_frames

        return iter_frames(self.work / fmt.FRAMES)

    def n_frames(self) -> int:
        return int(json.loads((self.work / WORK / "media.json").read_text())["n_frames"])

    def say(self, msg: str) -> None:
        """A step's progress (hidden by --no-progress)."""
        if self.cfg.progress:
            print(f"[prepare] {msg}", flush=True)

    @staticmethod
    def tell(msg: str) -> None:
        """An outcome the user must see: printed with or without --no-progress."""
        print(f"[prepare] {msg}", flush=True)


def picked(items: Iterable[np.ndarray], idx: np.ndarray) -> Iterator[np.ndarray]:
    """The items at the increasing indices ``idx`` of a stream, in one pass (it stops after the last)."""
    want = iter(np.asarray(idx).tolist())
    nxt = next(want, None)
    if nxt is None:
        return
    for i, x in enumerate(items):
        if i == nxt:
            yield x
            nxt = next(want, None)
            if nxt is None:
                return


def _save_npz(path: Path, compressed: bool = False, **arrays) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        (np.savez_compressed if compressed else np.savez)(tmp, **arrays)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)


# ---------------------------------------------------------------------------------------
# Steps. Each takes the context and writes its outputs; `_STEPS` lists (name, outputs, fn).


def _step_media(ctx: _Ctx) -> None:
    """frames.mp4 and audio.wav; frames copied bit-exact when the source allows it."""
    from talkgs.media import (
        VideoWriter,
        copy_video_stream,
        count_frames,
        fit_audio_to_frames,
        iter_frames,
        read_audio,
        write_wav,
    )

    info = ctx.source["info"]
    dst = ctx.work / fmt.FRAMES
    copied = False
    if abs(info["fps"] - conventions.FPS) < 1e-3:
        tmp = dst.with_name(".frames.copy.tmp.mp4")
        copied = copy_video_stream(ctx.cfg.video, tmp)  # leaves no file when it returns False
        if copied:
            os.replace(tmp, dst)
    if not copied:
        ctx.say(f"re-encoding video at {conventions.FPS} fps (source {info['fps']:.3f} fps)")
        # High quality: these frames are the training targets.
        with VideoWriter(dst, fps=conventions.FPS, crf=12) as writer:
            for frame in _progress(
                iter_frames(ctx.cfg.video, fps=conventions.FPS),
                ctx.cfg.progress,
                "resample",
                total=conventions.n_frames_for_duration(info["duration_s"]),
            ):
                writer.write(frame)
    n = count_frames(dst)
    wav = fit_audio_to_frames(read_audio(ctx.cfg.video, conventions.SAMPLE_RATE), n)
    with atomic_path(ctx.work / fmt.AUDIO) as tmp:
        write_wav(tmp, wav, conventions.SAMPLE_RATE)
    write_json(
        ctx.work / WORK / "media.json",
        {"n_frames": n, "copied_stream": copied, "resampled": abs(info["fps"] - conventions.FPS) >= 1e-3},
    )


def _step_track(ctx: _Ctx) -> None:
    from talkgs.prepare.track import fill_missing, track_video

    with atomic_path(ctx.work / WORK / "person.npy", suffix=".npy") as person:
        tr = track_video(ctx.frames(), n_frames_hint=ctx.n_frames(), progress=ctx.cfg.progress, person_to=person)
    landmarks, interpolated = fill_missing(
        tr.landmarks, tr.detected, max_missing_fraction=ctx.cfg.max_missing_fraction
    )
    landmarks_z, _ = fill_missing(tr.landmarks_z, tr.detected, max_missing_fraction=ctx.cfg.max_missing_fraction)
    _save_npz(
        ctx.work / WORK / "track.npz",
        landmarks=landmarks.astype(np.float32),
        landmarks_z=landmarks_z.astype(np.float32),
        detected=tr.detected,
        interpolated=interpolated,
    )


def _step_pose(ctx: _Ctx) -> None:
    from talkgs.prepare.pose import detect_cuts, fit_head_pose

    with np.load(ctx.work / WORK / "track.npz") as z:
        landmarks, interpolated = z["landmarks"], z["interpolated"]
    h, w = ctx.source["info"]["height"], ctx.source["info"]["width"]
    shots = detect_cuts(landmarks, ctx.frames())
    pose = fit_head_pose(landmarks, w, h, shots, interpolated=interpolated, smooth_sigma=ctx.cfg.smooth_sigma)
    shot_idx = np.zeros(len(landmarks), np.int32)
    for i, (a, b) in enumerate(shots):
        shot_idx[a:b] = i
    _save_npz(
        ctx.work / WORK / "pose.npz",
        w2c=pose.w2c.astype(np.float32),
        w2c_raw=pose.w2c_raw.astype(np.float32),
        K=np.asarray(pose.K, np.float64),
        focal_uncertainty_px=np.float64(pose.focal_uncertainty_px),
        reproj_error_px=pose.reproj_error_px.astype(np.float32),
        reproj_error_raw_px=pose.reproj_error_raw_px.astype(np.float32),
        shots=np.asarray(shots, np.int64).reshape(-1, 2),
        shot=shot_idx,
    )


class _NpyRows:
    """Rows ``[a:b]`` of a C-order .npy file read from disk on demand (not memory-mapped: mapped
    pages stay resident, and a long clip's person masks are gigabytes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            self.shape, fortran, self.dtype = header(f)
            self.offset = f.tell()
        if fortran:
            raise PrepareError(f"internal: {path} is Fortran-ordered")
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, rows: slice) -> np.ndarray:
        a, b, _ = rows.indices(len(self))
        with open(self.path, "rb") as f:
            f.seek(self.offset + a * self.row_bytes)
            data = f.read(max(b - a, 0) * self.row_bytes)
        return np.frombuffer(data, self.dtype).reshape(max(b - a, 0), *self.shape[1:])


def _step_labels(ctx: _Ctx) -> None:
    from talkgs.prepare.labels import label_chunks

    with np.load(ctx.work / WORK / "track.npz") as z:
        landmarks = z["landmarks"]
    person = _NpyRows(ctx.work / WORK / "person.npy")
    with atomic_path(ctx.work / fmt.LABELS, suffix=".npz") as tmp:
        fmt.write_labels(tmp, label_chunks(landmarks, person, progress=ctx.cfg.progress), len(landmarks))


def _step_background(ctx: _Ctx) -> None:
    import cv2

    from talkgs.prepare.background import plate_from_samples, sample_indices

    from talkgs.console import ProgressBar

    idx = sample_indices(ctx.n_frames())
    maps = (m for chunk in fmt.iter_labels(ctx.work / fmt.LABELS) for m in chunk)
    labels = np.stack(list(picked(maps, idx)))
    frames = ProgressBar(picked(ctx.frames(), idx), total=len(idx), desc="background", unit="frame",
                         disable=not ctx.cfg.progress)
    plate, inpainted = plate_from_samples(frames, labels)
    with atomic_path(ctx.work / fmt.BACKGROUND) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(plate, cv2.COLOR_RGB2BGR)):
            raise PrepareError(f"could not write {tmp}")
    write_json(ctx.work / WORK / "background.json", {"inpainted_fraction": float(inpainted.mean())})


def _step_audio(kind: str) -> Callable[[_Ctx], None]:
    def run(ctx: _Ctx) -> None:
        from talkgs.audio import extract
        from talkgs.media import read_wav

        wav, sr = read_wav(ctx.work / fmt.AUDIO)
        n = ctx.n_frames()
        # float16 on disk halves the dataset that travels to the GPU; the loader returns float32.
        _save_npy(ctx.work / fmt.audio_feature_file(kind), extract(kind, wav, n).astype(np.float16))

    return run


def _step_finalize(ctx: _Ctx) -> None:
    from talkgs.prepare.signals import compute_signals

    info = ctx.source["info"]
    media = json.loads((ctx.work / WORK / "media.json").read_text())
    bg = json.loads((ctx.work / WORK / "background.json").read_text())
    n = media["n_frames"]
    with np.load(ctx.work / WORK / "track.npz") as z:
        track = {k: z[k] for k in z.files}
    with np.load(ctx.work / WORK / "pose.npz") as z:
        pose = {k: z[k] for k in z.files}
    signals = compute_signals(track["landmarks"], info["width"], info["height"])
    tracks = {
        "landmarks": track["landmarks"],
        "landmarks_z": track["landmarks_z"],
        "landmark_interpolated": track["interpolated"].astype(bool),
        "w2c": pose["w2c"],
        "w2c_raw": pose["w2c_raw"],
        "reproj_error_px": pose["reproj_error_px"],
        "shot": pose["shot"],
        **{k: np.asarray(v, np.float32) for k, v in signals.items()},
    }
    missing = [k for k in fmt.TRACK_KEYS if k not in tracks]
    if missing:
        raise PrepareError(f"internal: tracks lack {missing}")
    for k, v in tracks.items():
        if v.shape[0] != n:
            raise PrepareError(f"internal: track {k} has {v.shape[0]} rows for {n} frames")
    _save_npz(ctx.work / fmt.TRACKS, compressed=True, **tracks)

    K = pose["K"]
    n_val = max(1, int(round(n * ctx.cfg.val_fraction))) if ctx.cfg.val_fraction > 0 else 0
    features = {}
    for kind in ctx.cfg.audio_features:
        arr = np.load(ctx.work / fmt.audio_feature_file(kind), mmap_mode="r")
        features[kind] = {"file": fmt.audio_feature_file(kind), "shape": list(arr.shape)}
    meta = {
        "format_version": fmt.FORMAT_VERSION,
        "fps": conventions.FPS,
        "n_frames": n,
        "width": info["width"],
        "height": info["height"],
        "intrinsics": {"fx": float(K[0, 0]), "fy": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2])},
        "focal_uncertainty_px": float(pose["focal_uncertainty_px"]),
        "principal_point": "image centre (W/2, H/2) in talkgs pixel coordinates (pixel centres at +0.5)",
        "world_frame": "MediaPipe canonical face, metres, +x image-right, +y up, +z towards the viewer",
        "split": {"train": [0, n - n_val], "val": [n - n_val, n]},
        "shots": pose["shots"].tolist(),
        "source": {
            "path": str(Path(ctx.cfg.video).resolve()),
            "sha256": ctx.source["sha256"],
            "fps": info["fps"],
            "duration_s": info["duration_s"],
            "resampled": media["resampled"],
            "video_stream_copied": media["copied_stream"],
        },
        "audio": {"sample_rate": conventions.SAMPLE_RATE, "features": features},
        "labels": {str(k): v for k, v in fmt.LABEL_NAMES.items()},
        "background": {"inpainted_fraction": bg["inpainted_fraction"]},
        "quality": {
            "face_detected_fraction": float(track["detected"].mean()),
            "reproj_error_px_mean": float(pose["reproj_error_px"].mean()),
            "reproj_error_raw_px_mean": float(pose["reproj_error_raw_px"].mean()),
        },
        "tools": _tool_versions(),
        "timings_s": ctx.timings,
    }
    write_json(ctx.work / fmt.META, meta)


def _tool_versions() -> dict:
    versions = {"talkgs": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for mod in ("mediapipe", "av", "cv2", "torch"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # an optional tool missing is not an error here
            versions[mod] = None
    return versions


def _steps(cfg: PrepareConfig) -> list[tuple[str, list[str], Callable[[_Ctx], None]]]:
    steps = [
        ("media", [fmt.FRAMES, fmt.AUDIO, f"{WORK}/media.json"], _step_media),
        ("track", [f"{WORK}/track.npz", f"{WORK}/person.npy"], _step_track),
        ("pose", [f"{WORK}/pose.npz"], _step_pose),
        ("labels", [fmt.LABELS], _step_labels),
        ("background", [fmt.BACKGROUND, f"{WORK}/background.json"], _step_background),
    ]
    for kind in cfg.audio_features:
        steps.append((f"audio_{kind}", [fmt.audio_feature_file(kind)], _step_audio(kind)))
    steps.append(("finalize", [fmt.TRACKS, fmt.META], _step_finalize))
    return steps


def _progress(it, enabled: bool, desc: str, total: int | None = None):
    if not enabled:
        return it
    from talkgs.console import ProgressBar

    return ProgressBar(it, desc=desc, total=total, unit="frame", leave=False)


# ---------------------------------------------------------------------------------------


def _check_source(cfg: PrepareConfig) -> dict:
    """Probe the input and refuse what cannot become a dataset (one-line errors)."""
    from talkgs.media import probe

    info = probe(cfg.video)
    if not info.has_audio:
        raise MediaError(f"{cfg.video} has no audio stream; talkgs needs the speech that drives the face")
    if info.duration_s < cfg.min_duration_s:
        raise PrepareError(
            f"{cfg.video} is {info.duration_s:.1f} s long; at least {cfg.min_duration_s:.0f} s is needed"
        )
    return {
        "width": info.width,
        "height": info.height,
        "fps": float(info.fps),
        "duration_s": float(info.duration_s),
    }


def prepare(cfg: PrepareConfig) -> Path:
    """Run every unfinished step; return the dataset folder.

    An existing dataset at OUTPUT is kept when it comes from the same video (nothing to do) and
    otherwise needs ``force``, which replaces only the dataset's own files (``talkgs.provenance``):
    everything else in the folder stays, and feature kinds added later (``talkgs features``)
    stay too when the video is the same. A refused input leaves nothing behind; Ctrl-C or
    SIGTERM keeps OUTPUT.partial, from which the same command resumes.
    """
    from talkgs import provenance as owner

    out = Path(cfg.output)
    video = Path(cfg.video)
    sha = sha256_file(video)

    old_meta = owner.dataset_meta(out) if out.exists() else None
    if old_meta is not None and not cfg.force:
        if old_meta.get("source", {}).get("sha256") == sha:
            _Ctx.tell(f"{out} is already prepared from this video (use --force to redo)")
            return out
        raise PrepareError(
            f"output {out} holds a dataset of another video; pass --force to replace it or choose another folder"
        )

    info = _check_source(cfg)
    work = out.with_name(out.name + ".partial")
    source_json = work / SOURCE_JSON
    if work.exists():
        stale = cfg.force
        try:
            stale = stale or json.loads(source_json.read_text()).get("sha256") != sha
        except (OSError, json.JSONDecodeError):
            stale = True
        if stale:
            shutil.rmtree(work)
    created = not work.exists()
    (work / WORK).mkdir(parents=True, exist_ok=True)
    source = {"sha256": sha, "info": info}
    write_json(source_json, source)

    ctx = _Ctx(cfg=cfg, work=work, source=source, timings={})
    try:
        _run_steps(ctx)
    except TalkgsError:
        # Bad input (no face, ...) is not resumable: the same run would fail the same way.
        shutil.rmtree(work, ignore_errors=True)
        raise
    except KeyboardInterrupt as e:
        finished = any(all((work / o).exists() for o in outputs) for _, outputs, _ in _steps(cfg))
        if created and not finished:  # nothing to resume from
            shutil.rmtree(work, ignore_errors=True)
        else:
            what = "terminated" if getattr(e, "signum", signal.SIGINT) == signal.SIGTERM else "interrupted"
            raise Interrupted(
                f"{what}; finished steps are kept in {work}: run the same command again to resume",
                getattr(e, "signum", signal.SIGINT),
            ) from None
        raise
    # Scratch goes before the move, so the finished folder is exactly the dataset; a signal
    # waits until the dataset is in place (a folder without source.json would be redone).
    with signals_deferred():
        shutil.rmtree(work / WORK, ignore_errors=True)
        source_json.unlink(missing_ok=True)
        replace = owner.dataset_files(old_meta) if old_meta is not None else []
        if old_meta is not None:
            replace = _keep_added_features(work, out, old_meta, sha, replace, ctx)
        move_into(work, out, replace=replace, last=fmt.META)
        ctx.tell(f"dataset written to {out}")
    return out


def _run_steps(ctx: _Ctx) -> None:
    """Run the unfinished steps in order; the audio feature steps need only the media step's
    audio, so they run in a child process beside the picture steps (track, pose, labels,
    background), which leave a core free, and are joined before ``finalize``. A process, not a
    thread: an interrupt stops it at once, and torch never loads beside MediaPipe and scipy."""
    work = ctx.work
    timings_file = work / WORK / "timings.json"
    if timings_file.exists():
        ctx.timings.update(json.loads(timings_file.read_text()))

    def record(name: str, seconds: float) -> None:
        ctx.timings[name] = round(seconds, 3)
        write_json(timings_file, ctx.timings)
        ctx.say(f"{name}: {ctx.timings[name]:.1f} s")

    def run(name: str, fn: Callable[[_Ctx], None]) -> None:
        t0 = time.perf_counter()
        ctx.say(f"{name} ...")
        try:
            fn(ctx)
        except Exception as e:
            # A library can turn a signal into its own error (MediaPipe's import: ImportError),
            # with or without the KeyboardInterrupt behind it: still an interrupt, so the
            # finished steps are kept.
            signal_ = interrupt_behind(e)
            if signal_ is None and noted:
                signal_ = Interrupted("interrupted", noted[-1])
            if signal_ is None:
                raise
            raise signal_ from None
        record(name, time.perf_counter() - t0)

    total0 = time.perf_counter()
    pending = []
    for name, outputs, fn in _steps(ctx.cfg):
        if all((work / o).exists() for o in outputs):
            ctx.say(f"{name}: done earlier, skipped")
        else:
            pending.append((name, fn))
    side = [name for name, _ in pending if name.startswith("audio_")]
    audio: _AudioProcess | None = None
    with signals_noted() as noted:
        try:
            if not any(name == "media" for name, _ in pending) and side:
                audio = _AudioProcess(ctx, side)
            for name, fn in pending:
                if name.startswith("audio_"):
                    continue
                if name == "finalize" and audio is not None:
                    audio.join(record)
                run(name, fn)
                if name == "media" and side:
                    audio = _AudioProcess(ctx, side)
            if audio is not None:
                audio.join(record)
        finally:
            if audio is not None:
                audio.stop(record)
    ctx.say(f"all steps done in {time.perf_counter() - total0:.1f} s")


class _AudioProcess:
    """The audio feature steps ``names`` (``audio_<kind>``) in a child Python process that
    writes their files into the work folder and reports each step's seconds over a pipe. The
    child has its own process group, so a terminal's Ctrl-C reaches only this process, which
    stops the child; a fresh interpreter, not a fork, which would copy MediaPipe's threads' locks."""

    def __init__(self, ctx: _Ctx, names: list[str]):
        import subprocess
        import sys
        from multiprocessing import Pipe

        self.conn, child = Pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from talkgs.prepare.pipeline import _audio_main; _audio_main()",
             str(child.fileno())],
            pass_fds=(child.fileno(),), process_group=0,
        )
        child.close()
        self.conn.send((ctx.cfg, ctx.work, names))
        self.error: BaseException | None = None

    def _drain(self, record: Callable[[str, float], None], block: bool) -> None:
        while block or self.conn.poll():
            try:
                kind, *args = self.conn.recv()
            except (EOFError, OSError):
                return
            if kind == "done":
                record(*args)
            elif kind == "error":
                self.error = args[0]

    def join(self, record: Callable[[str, float], None]) -> None:
        """Wait for the steps; re-raise a step's error here, in the main process."""
        self._drain(record, block=True)
        self.proc.wait()
        if self.error is not None:
            raise self.error
        if self.proc.returncode != 0:
            raise PrepareError(f"the audio feature process ended with status {self.proc.returncode}")

    def stop(self, record: Callable[[str, float], None]) -> None:
        """End the child if it still runs (an interrupt or another step's error), keeping the
        timings of the steps it finished."""
        import subprocess

        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: the child unwinds, so no temporary file stays
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._drain(record, block=False)
        self.conn.close()


def _audio_main() -> None:
    """Entry point of :class:`_AudioProcess`'s child: its arguments come over the pipe whose
    file descriptor is ``sys.argv[1]``."""
    import sys
    from multiprocessing.connection import Connection

    conn = Connection(int(sys.argv[1]))
    cfg, work, names = conn.recv()
    _audio_steps(cfg, work, names, conn)


def _audio_steps(cfg: PrepareConfig, work: Path, names: list[str], conn) -> None:
    """The child of :class:`_AudioProcess`: run the steps ``names`` and send ``("done", name,
    seconds)`` for each, or ``("error", exception)`` for the first that fails."""
    signal.signal(signal.SIGTERM, unwind_on_sigterm)  # how the parent stops us
    ctx = _Ctx(cfg=cfg, work=work, source={}, timings={})
    steps = {name: fn for name, _, fn in _steps(cfg)}
    try:
        for name in names:
            t0 = time.perf_counter()
            ctx.say(f"{name} ...")
            steps[name](ctx)
            conn.send(("done", name, time.perf_counter() - t0))
    except KeyboardInterrupt as e:  # SIGTERM from the parent, or a signal sent to this process
        # A non-zero status: a parent still waiting sees that the steps did not all finish.
        raise SystemExit(128 + getattr(e, "signum", signal.SIGINT)) from None
    except TalkgsError as e:
        conn.send(("error", e))
    except Exception as e:  # a bug: its traceback here, a one-line cause in the parent
        import traceback

        traceback.print_exc()
        conn.send(("error", RuntimeError(f"audio features: {type(e).__name__}: {e}")))
    finally:
        conn.close()


def _keep_added_features(work: Path, out: Path, old_meta: dict, sha: str, replace: list[str], ctx: _Ctx) -> list[str]:
    """Feature kinds the old dataset has and this run did not compute (e.g. imported with
    `talkgs features`): kept, with their meta.json entries, when the video is the same; they
    describe another clip otherwise, so they go with the old dataset's files (said so)."""
    new_meta = json.loads((work / fmt.META).read_text())
    new_feats = new_meta["audio"]["features"]
    n = int(new_meta["n_frames"])
    same = old_meta.get("source", {}).get("sha256") == sha
    kept = []
    for kind, info in ((old_meta.get("audio") or {}).get("features") or {}).items():
        name = (info or {}).get("file") or fmt.audio_feature_file(kind)
        if kind in new_feats or not (out / name).is_file():
            continue
        if same and (info.get("shape") or [None])[0] == n:
            new_feats[kind] = info
            kept.append(name)
        else:
            ctx.tell(f"removing {name}: its '{kind}' features belong to the previous video")
    if kept:
        write_json(work / fmt.META, new_meta)
    return [r for r in replace if r not in kept]
