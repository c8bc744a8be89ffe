"""Frames to host memory while the next batch renders: a batch's copy runs on a side CUDA stream
into pinned memory, so it overlaps the next batch's kernels instead of queueing behind them on
the render stream (a plain ``.cpu()`` waits for every kernel launched before it). Off CUDA a
copy is the tensor's own memory.
"""

from __future__ import annotations

import numpy as np
import torch


class HostCopies:
    """``pending = copies.start(frames)`` after a batch's kernels are launched, then
    ``copies.finish(pending)`` (the frames as a numpy array in host memory) once the next batch
    is launched. Each batch gets its own pinned buffer (from torch's cache of pinned memory), so
    a returned array stays valid while the caller keeps it."""

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(device=self.device) if self.device.type == "cuda" else None

    def start(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        """Queue the copy of ``frames`` (on ``self.device``), ordered after the work already
        launched on the current stream."""
        if self.stream is None:
            return frames, None
        host = torch.empty(frames.shape, dtype=frames.dtype, pin_memory=True)
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            host.copy_(frames, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self.stream)
        frames.record_stream(self.stream)  # its memory is not reused before the copy has read it
        return host, done

    @staticmethod
    def finish(pending: tuple[torch.Tensor, torch.cuda.Event | None]) -> np.ndarray:
        """Wait for one copy; the frames in host memory."""
        host, done = pending
        if done is None:
            return host.cpu().numpy()
        done.synchronize()
        return host.numpy()
