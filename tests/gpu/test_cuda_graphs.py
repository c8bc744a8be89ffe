"""CUDA graphs of the render deformation (talkgs.render.graphs) against the eager reference (run
on the GPU machine; no dataset needed).

    PYTHONPATH=/tmp/site:. python3 -m pytest -q -m gpu tests/gpu/test_cuda_graphs.py
"""

from __future__ import annotations

import pytest
import torch

from talkgs.model.audio_encoder import gather_windows
from talkgs.model.head import TalkingHead
from talkgs.model.motion import eye_code
from talkgs.render.graphs import DeformGraphs
from tests.test_model import front_cameras, small_head_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (CUDA graphs)")]


def _head() -> TalkingHead:
    torch.manual_seed(0)
    head = TalkingHead(small_head_config(), audio_window=16, audio_channels=20,
                       generator=torch.Generator().manual_seed(0)).to("cuda").eval()
    head.fix_fields()  # as a renderer holds it
    return head


def _inputs(b: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(40, 16, 20, generator=g)
    windows = gather_windows(feats, torch.arange(b) * 3).cuda()
    eye = eye_code(torch.rand(b, generator=g), 0.3 * torch.rand(b, 2, generator=g)).cuda()
    return windows, eye


def test_graphed_deformation_equals_the_eager_one_for_new_inputs_and_batch_sizes():
    head = _head()
    graphs = DeformGraphs(head)
    for b, seed in ((4, 0), (4, 1), (1, 2), (4, 3)):  # a captured size replayed with new audio, and a second size
        windows, eye = _inputs(b, seed)
        with torch.no_grad():
            want = head.deform_frames(windows, eye)
            got = graphs(windows, eye)
        for branch in ("face", "mouth"):
            for field in ("means", "quats", "scales", "opacities"):
                torch.testing.assert_close(getattr(got[branch], field), getattr(want[branch], field),
                                           atol=1e-5, rtol=1e-5, msg=f"{branch}.{field} b={b} seed={seed}")
    assert graphs.n_graphs == 2


def _frame_inputs(b: int, size: int, seed: int):
    """Audio windows, eye codes, cameras ``[b, 1, 4, 4]`` / ``[b, 1, 3, 3]`` and backgrounds of ``b``
    frames of ``size`` px on the GPU."""
    windows, eye = _inputs(b, seed)
    V, K = front_cameras(b, size)
    return windows, eye, V.cuda(), K.cuda(), torch.rand(b, size, size, 3, device="cuda")


def test_graphed_frames_equal_the_eager_frames():
    head = _head()
    graphs = DeformGraphs(head)
    size = 64
    windows, eye, V, K, bg = _frame_inputs(3, size, 5)
    with torch.no_grad():
        want = head.render_frames(windows, eye, V, K, size, size, bg)
        graphs(*_inputs(b, 6))  # capture on other audio first: the replay must take the new inputs
        got = head.render_deformed(graphs(windows, eye), V, K, size, size, bg)
    assert (got.image - want.image).abs().max() <= 1 / 255


def test_one_gsplat_pass_of_both_branches_renders_the_frames_of_two():
    """HeadRenderer's one_pass on gsplat: the padded mouth is culled, so the frames and alphas of one
    rasterizer call equal two calls'."""
    head = _head()
    size = 64
    windows, eye, V, K, bg = _frame_inputs(4, size, 7)
    with torch.no_grad():
        deformed = head.deform_frames(windows, eye)
        two = head.render_deformed(deformed, V, K, size, size, bg)
        one = head.render_deformed(deformed, V, K, size, size, bg, one_pass=True)
    assert two.mouth_alpha.max() > 0.1
    for field in ("image", "face_alpha", "mouth_alpha"):
        assert (getattr(one, field) - getattr(two, field)).abs().max() <= 1e-6, field


def test_two_sets_of_graphs_replayed_at_once_on_two_streams_equal_the_eager_deformation():
    """Render lanes: each its own DeformGraphs on its own stream and thread, replaying at the
    same time. Each set captures on its own stream, so the graphs do not share a cuBLAS
    workspace (on torch's one capture stream they did, and lanes' frames differed)."""
    import threading

    torch.manual_seed(0)
    head = TalkingHead(small_head_config(n_face=20_000, n_mouth=1_000), audio_window=16, audio_channels=20,
                       generator=torch.Generator().manual_seed(0)).to("cuda").eval()
    head.fix_fields()  # large enough that cuBLAS's products use their workspace
    b, rounds = 32, 30
    cases = [_inputs(b, 100 + k) for k in range(4)]
    with torch.no_grad():
        want = [head.deform_frames(w, e)["face"].means.clone() for w, e in cases]
    lanes = [(DeformGraphs(head), torch.cuda.Stream()) for _ in range(2)]
    for graphs, stream in lanes:  # capture one set at a time, before any replays
        with torch.cuda.stream(stream):
            graphs.ensure(*cases[0])
        stream.synchronize()
    errors: list[str] = []

    def run(lane: int) -> None:
        graphs, stream = lanes[lane]
        with torch.no_grad(), torch.cuda.stream(stream):
            for r in range(rounds):
                k = (r + 2 * lane) % len(cases)
                got = graphs(*cases[k])["face"].means.clone()
                stream.synchronize()
                err = float((got - want[k]).abs().max())
                if err > 1e-5:
                    errors.append(f"lane {lane} round {r}: {err:.3g}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]


def _reserved_for_sizes(sizes) -> int:
    """Bytes the caching allocator reserves to capture the deformation at ``sizes``, in order."""
    head = TalkingHead(small_head_config(n_face=40_000), audio_window=16, audio_channels=20,
                       generator=torch.Generator().manual_seed(0)).to("cuda").eval()
    head.fix_fields()
    graphs = DeformGraphs(head)
    torch.cuda.synchronize()
    before = torch.cuda.memory_reserved()
    for b in sizes:
        graphs.ensure(*_inputs(b, b))
    torch.cuda.synchronize()
    return torch.cuda.memory_reserved() - before


def test_capturing_the_largest_size_first_reuses_the_pool():
    """Batcher.warm_up captures every batch size of a serve loop, largest first: the smaller
    captures reuse what the larger one freed, so the pool stays far below the ascending order's."""
    ascending = _reserved_for_sizes(range(1, 17))
    torch.cuda.empty_cache()
    descending = _reserved_for_sizes(range(16, 0, -1))
    assert descending < 0.6 * ascending, (descending, ascending)
