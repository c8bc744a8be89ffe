"""What drives the parts of a rendered frame that audio does not: head pose, eyes, torso.

A trained head is rendered from new audio over a sequence of *drive frames* taken from its
training clip: each output frame t borrows drive frame ``plan.frames[t]``'s camera (head pose),
its torso and background (``talkgs.model.head.torso_background``) and, by default, its eyes.
The sequence must be as long as the audio, whatever that length, and must never jump:

- ``pingpong`` (default): forwards then backwards over one segment of training frames,
  0, 1, ..., L-1, L-2, ..., 1, 0, 1, ... Consecutive output frames are consecutive (or the
  same, never) source frames, so pose and torso move continuously for any length.
- ``still``: one frame held for the whole output (a still head; eyes still blink if asked).
- ``replay``: the segment's frames once, in order (at most as many output frames as the
  segment has): each frame with its own camera, torso and (with ``blinks=train``) eyes. This is
  how ``talkgs eval`` renders dataset frames with their own conditions; the segment may lie
  outside the training split (the val frames).

The default segment is the longest shot (the run of frames between two hard cuts) inside the
training split: a cut inside the segment would be a visible jump. Eyes:

- ``train`` (default): the drive frames' own blink and eye-openness signals (natural blinks,
  consistent with the borrowed pose);
- ``synth``: open eyes (the segment's median open-eye ratio) with synthetic blinks at a
  natural rate (default 15 per minute, 4 to 6 frames each, at random but never closer than
  1.5 s);
- ``open``: no blinks.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from talkgs.conventions import FPS
from talkgs.errors import TalkgsError


@dataclasses.dataclass(frozen=True)
class DriveConfig:
    """Head pose, eyes and torso of a rendered video (what the audio does not drive)."""

    segment: tuple[int, int] | None = None
    """Training frames [start, stop) to drive from (default: the longest shot between cuts in
    the training split)."""
    pose: Literal["pingpong", "still", "replay"] = "pingpong"
    """pingpong: forwards and backwards over the segment (never jumps, any length);
    still: hold one frame; replay: the segment's frames once, in order (output no longer than
    the segment)."""
    still_frame: int | None = None
    """Frame held by ``pose=still`` (default: the segment's middle frame)."""
    blinks: Literal["train", "synth", "open"] = "train"
    """Eyes from the drive frames (train), synthetic natural blinks (synth) or always open."""
    blink_rate_per_min: float = 15.0
    """Mean rate of synthetic blinks."""
    seed: int = 0
    """Seed of the synthetic blink times."""


@dataclasses.dataclass(frozen=True)
class DrivePlan:
    """Per output frame: the drive frame (dataset index) and the eye signals.

    frames     int64 [T]    dataset frame whose camera and torso are used
    blink      float32 [T]  0 open .. 1 closed
    eye_ratio  float32 [T, 2]
    """

    frames: np.ndarray
    blink: np.ndarray
    eye_ratio: np.ndarray

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def slice(self, start: int, stop: int) -> "DrivePlan":
        return DrivePlan(self.frames[start:stop], self.blink[start:stop], self.eye_ratio[start:stop])

    @staticmethod
    def concat(plans: "list[DrivePlan]") -> "DrivePlan":
        """One plan of the frames of ``plans`` in order (e.g. slices of several live sessions'
        plans, rendered in one batch: frame k of the result is frame k of the batch)."""
        if not plans:
            return DrivePlan(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros((0, 2), np.float32))
        return DrivePlan(
            np.concatenate([p.frames for p in plans]),
            np.concatenate([p.blink for p in plans]),
            np.concatenate([p.eye_ratio for p in plans]),
        )


def pingpong(n_out: int, length: int, start: int = 0) -> np.ndarray:
    """``int64 [n_out]``: 0, 1, ..., length-1, length-2, ..., 1, 0, 1, ... offset by ``start``
    (output frames ``start .. start + n_out`` of the infinite sequence)."""
    if length < 1:
        raise TalkgsError(f"a drive segment needs at least one frame, got {length}")
    t = np.arange(start, start + n_out, dtype=np.int64)
    if length == 1:
        return np.zeros_like(t)
    period = 2 * (length - 1)
    p = t % period
    return np.where(p < length, p, period - p)


def longest_shot(shots: list[list[int]] | np.ndarray, start: int, stop: int) -> tuple[int, int]:
    """The longest run ``[a, b)`` of a shot (``[[a0, b0], [a1, b1], ...]``) inside ``[start, stop)``."""
    best = (start, start)
    for a, b in np.asarray(shots, dtype=np.int64).reshape(-1, 2):
        a, b = max(int(a), start), min(int(b), stop)
        if b - a > best[1] - best[0]:
            best = (a, b)
    if best[1] <= best[0]:
        raise TalkgsError(f"no shot overlaps frames {start}:{stop}")
    return best


def default_segment(meta: dict) -> tuple[int, int]:
    """The longest shot in the training split of a dataset's ``meta.json``."""
    a, b = meta["split"]["train"]
    shots = meta.get("shots") or [[0, int(meta["n_frames"])]]
    return longest_shot(shots, int(a), int(b))


def synth_blinks(n: int, rate_per_min: float = 15.0, seed: int = 0, fps: float = FPS) -> np.ndarray:
    """``float32 [n]`` blink signal (0 open, 1 closed) with blinks at ``rate_per_min`` on average.

    Gaps between blinks are 1.5 s plus an exponential wait (a refractory period, then a
    memoryless process, roughly how people blink); each blink closes over 2 frames, stays
    closed 1 frame and opens over 1-3 frames (~160-240 ms at 25 fps).
    """
    out = np.zeros(n, np.float32)
    if n == 0 or rate_per_min <= 0:
        return out
    rng = np.random.default_rng(seed)
    mean_gap_s = 60.0 / rate_per_min
    refractory_s = min(1.5, 0.5 * mean_gap_s)
    t = rng.exponential(mean_gap_s - refractory_s) * fps
    while t < n:
        shape = np.concatenate([[0.5, 1.0, 1.0], np.linspace(1.0, 0.0, int(rng.integers(2, 5)))[1:-1]])
        i0 = int(t)
        seg = out[i0 : i0 + shape.shape[0]]
        np.maximum(seg, shape[: seg.shape[0]].astype(np.float32), out=seg)
        t += (refractory_s + rng.exponential(mean_gap_s - refractory_s)) * fps
    return out


def drive_plan(meta: dict, tracks: dict[str, np.ndarray], n_out: int, cfg: DriveConfig = DriveConfig()) -> DrivePlan:
    """The :class:`DrivePlan` of ``n_out`` output frames from a dataset's meta and tracks
    (``blink [N]``, ``eye_ratio [N, 2]`` as numpy arrays, whole clip)."""
    n = int(meta["n_frames"])
    if cfg.segment is not None:
        a, b = (int(v) for v in cfg.segment)
        if not (0 <= a < b <= n):
            raise TalkgsError(f"drive segment {a}:{b} is outside the dataset's {n} frames")
    else:
        a, b = default_segment(meta)
    if cfg.pose == "still":
        f = (a + b) // 2 if cfg.still_frame is None else int(cfg.still_frame)
        if not (0 <= f < n):
            raise TalkgsError(f"still frame {f} is outside the dataset's {n} frames")
        frames = np.full(n_out, f, np.int64)
    elif cfg.pose == "pingpong":
        frames = a + pingpong(n_out, b - a)
    elif cfg.pose == "replay":
        if n_out > b - a:
            raise TalkgsError(f"replay of frames {a}:{b} gives {b - a} frames; {n_out} were asked for")
        frames = np.arange(a, a + n_out, dtype=np.int64)
    else:
        raise TalkgsError(f"unknown pose mode {cfg.pose!r} (pingpong, still or replay)")

    blink_all = np.asarray(tracks["blink"], np.float32)
    ratio_all = np.asarray(tracks["eye_ratio"], np.float32)
    if cfg.blinks == "train":
        return DrivePlan(frames, blink_all[frames], ratio_all[frames])
    seg = frames[:1] if cfg.pose == "still" else np.arange(a, b)
    open_frames = seg[blink_all[seg] < 0.3]
    open_ratio = np.median(ratio_all[open_frames if open_frames.size else seg], axis=0).astype(np.float32)
    if cfg.blinks == "synth":
        blink = synth_blinks(n_out, cfg.blink_rate_per_min, cfg.seed)
    elif cfg.blinks == "open":
        blink = np.zeros(n_out, np.float32)
    else:
        raise TalkgsError(f"unknown blink mode {cfg.blinks!r} (train, synth or open)")
    # MediaPipe's lids never meet; the dataset reads "closed" at 40 % of the open ratio.
    ratio = open_ratio[None, :] * (1.0 - 0.6 * blink[:, None])
    return DrivePlan(frames, blink, ratio.astype(np.float32))
