"""CUDA graphs of a render batch's deformation: one captured graph per input shape replays the
mouth-state prediction and both branches' motion fields (:meth:`TalkingHead.deform_frames`) as
one launch instead of a few hundred small ones. Rasterization stays outside: gsplat sizes its
tile-intersection buffers from the data, which a graph cannot capture.

The eager path (:meth:`TalkingHead.deform_frames`) is the reference; off CUDA it is what runs.
"""

from __future__ import annotations

import dataclasses

import torch

from talkgs.model.head import DeformedGaussians, TalkingHead


@dataclasses.dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    inputs: tuple[torch.Tensor | None, ...]  # audio windows [B, 8, W, C], eye [B, E], states [B, m] or None
    outputs: dict[str, DeformedGaussians]


class DeformGraphs:
    """``graphs(audio_windows, eye, states=None)`` -> what ``model.deform_frames`` returns, from a
    CUDA graph captured on first use of each (shape, dtype) of the inputs.

    The model must not change after the first call (a renderer's never does: evaluation mode,
    fixed fields). The returned tensors are the graphs' own buffers, in one memory pool shared
    by every captured shape: they hold this call's result until the next call, of any shape,
    which may overwrite them (a render batch rasterizes them before asking for the next).
    Capture the largest shape first: the blocks it frees are split for smaller captures, while
    blocks freed by a smaller capture are too small for a larger one.
    """

    def __init__(self, model: TalkingHead, mouth_amplitude: float = 1.0, warmup: int = 2) -> None:
        self.model = model
        self.mouth_amplitude = float(mouth_amplitude)
        self.warmup = int(warmup)
        self._captured: dict[tuple, _Captured] = {}
        self._pool = None  # one memory pool for all captures: a batch size costs its outputs, not its peak
        # Its own capture stream: cuBLAS's workspace is per (thread, stream), so graphs captured on
        # torch's shared capture stream would all write one workspace when replayed at once.
        self._capture_stream = None

    def eager(self, audio_windows: torch.Tensor, eye: torch.Tensor, states: torch.Tensor | None = None):
        """The reference: the same deformation without a graph."""
        with torch.no_grad():
            return self.model.deform_frames(audio_windows, eye, states, self.mouth_amplitude)

    def __call__(self, audio_windows: torch.Tensor, eye: torch.Tensor,
                 states: torch.Tensor | None = None) -> dict[str, DeformedGaussians]:
        if audio_windows.device.type != "cuda":
            return self.eager(audio_windows, eye, states)
        cap = self.ensure(audio_windows, eye, states)
        for buf, x in zip(cap.inputs, (audio_windows, eye, states)):
            if buf is not None:
                buf.copy_(x)
        cap.graph.replay()
        return cap.outputs

    def ensure(self, audio_windows: torch.Tensor, eye: torch.Tensor, states: torch.Tensor | None = None) -> _Captured:
        """The graph for inputs of these shapes, captured now if it is not yet (without a replay)."""
        key = tuple(None if t is None else (tuple(t.shape), t.dtype) for t in (audio_windows, eye, states))
        cap = self._captured.get(key)
        if cap is None:
            cap = self._captured[key] = self._capture(audio_windows, eye, states)
        return cap

    @property
    def n_graphs(self) -> int:
        """How many input shapes have a captured graph."""
        return len(self._captured)

    def _capture(self, audio_windows: torch.Tensor, eye: torch.Tensor, states: torch.Tensor | None) -> _Captured:
        inputs = tuple(None if t is None else t.detach().clone() for t in (audio_windows, eye, states))
        # Warm-up on a side stream first: lazy initialisation (cuBLAS workspaces) must not be captured.
        side = torch.cuda.Stream(device=audio_windows.device)
        side.wait_stream(torch.cuda.current_stream(audio_windows.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.eager(*inputs)
        torch.cuda.current_stream(audio_windows.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
            self._capture_stream = torch.cuda.Stream(device=audio_windows.device)
        with torch.no_grad(), torch.cuda.graph(graph, pool=self._pool, stream=self._capture_stream):
            outputs = self.model.deform_frames(*inputs, mouth_amplitude=self.mouth_amplitude)
        return _Captured(graph=graph, inputs=inputs, outputs=outputs)
