"""Frames copied to the host on a side stream (talkgs.render.hostcopy) against plain ``.cpu()``
copies (run on the GPU machine).

    PYTHONPATH=/tmp/site:. python3 -m pytest -q -m gpu tests/gpu/test_host_copies.py
"""

from __future__ import annotations

import pytest
import torch

from talkgs.render.hostcopy import HostCopies

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (streams)")]


def test_side_stream_copies_equal_plain_copies_while_the_next_batches_render():
    g = torch.Generator(device="cuda").manual_seed(0)
    copies = HostCopies(torch.device("cuda"))
    want, got, pending = [], [], None
    for i in range(6):
        x = torch.rand(8, 256, 256, 3, device="cuda", generator=g)
        for _ in range(20):  # a long queue of work before the frames exist: the copy must wait for it
            x = torch.sin(x * 3.0 + i)
        frames = (x.abs() * 255).clamp_(0, 255).to(torch.uint8)
        want.append(frames.cpu().numpy().copy())
        if pending is not None:
            got.append(copies.finish(pending))
        pending = copies.start(frames)
        del frames, x  # the caching allocator may hand this memory to the next batch
    got.append(copies.finish(pending))
    assert len(got) == len(want)
    for a, b in zip(got, want):  # every returned array still holds its own batch
        assert a.shape == b.shape and (a == b).all()
    assert any((got[0] != got[1]).ravel())  # batches differ: equality is not of two constants
