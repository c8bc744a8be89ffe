"""The model's input windows for per-frame features that arrive in order (live audio).

The audio path of a frame looks at ``size`` (8) consecutive frames of features: frame i's
window is frames ``[i - size // 2, i - size // 2 + size)`` (4 before, i, 3 after), with zeros
before the first frame and after the last (as :func:`talkgs.model.audio_encoder.gather_windows`
over the whole clip). So frame i can be rendered once frame ``i + size - size // 2 - 1``'s
features are final: 3 frames (120 ms) on top of the feature kind's own lookahead.

Numpy only, no device: one :class:`FrameWindows` per live stream, O(size) memory.
"""

from __future__ import annotations

import numpy as np

from talkgs.errors import AudioFeatureError


class FrameWindows:
    """Per-frame features ``[n, W, C]`` pushed in order -> windows ``[m, size, W, C]`` of the
    frames whose windows became complete, in order.

    ``push(feats)`` returns ``(first, windows)``: windows of frames ``first .. first + m``;
    ``flush()`` ends the stream and returns the rest (the clip's end zero-padded).
    Concatenated, the windows equal ``gather_windows(all_features, arange(N), size)``.
    """

    def __init__(self, size: int, shape: tuple[int, int]):
        if size < 1:
            raise AudioFeatureError(f"window size must be >= 1, got {size}")
        self.size = int(size)
        self.before = self.size // 2
        self.ahead = self.size - self.before - 1  # frames after i in i's window
        self.shape = (int(shape[0]), int(shape[1]))
        # Features of frames [self._start - before, ...), zeros standing in for frames < 0.
        self._buf = np.zeros((self.before, *self.shape), np.float32)
        self._start = 0  # first frame whose window is not out yet
        self._n = 0  # frames of features received
        self._closed = False

    @property
    def frames_emitted(self) -> int:
        return self._start

    def push(self, feats: np.ndarray) -> tuple[int, np.ndarray]:
        if self._closed:
            raise AudioFeatureError("frame windows: push() after flush()")
        feats = np.asarray(feats, np.float32)
        if feats.ndim != 3 or tuple(feats.shape[1:]) != self.shape:
            raise AudioFeatureError(f"frame windows: features must be [n, {self.shape[0]}, {self.shape[1]}], got {tuple(feats.shape)}")
        self._buf = np.concatenate([self._buf, feats])
        self._n += feats.shape[0]
        return self._emit(self._n - self.ahead)

    def flush(self) -> tuple[int, np.ndarray]:
        """Windows of the remaining frames, with zeros after the last frame."""
        self._closed = True
        pad = np.zeros((self.ahead, *self.shape), np.float32)
        self._buf = np.concatenate([self._buf, pad])
        return self._emit(self._n)

    def _emit(self, stop: int) -> tuple[int, np.ndarray]:
        first = self._start
        m = max(stop - first, 0)
        if m == 0:
            return first, np.zeros((0, self.size, *self.shape), np.float32)
        # Buffer row r holds frame (first - before + r); frame first + j's window = rows [j, j + size).
        win = np.lib.stride_tricks.sliding_window_view(self._buf, self.size, axis=0)[:m]  # [m, W, C, size]
        out = np.ascontiguousarray(np.moveaxis(win, -1, 1))
        self._start = first + m
        self._buf = self._buf[m:]
        return first, out
