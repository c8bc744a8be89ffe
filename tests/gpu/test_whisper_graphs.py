"""The Whisper encoder as CUDA graphs (talkgs.audio.whisper.EncoderGraphs) against its eager run
(on the GPU machine; a random tiny Whisper built here).

    PYTHONPATH=/tmp/site:. python3 -m pytest -q tests/gpu/test_whisper_graphs.py
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="the whisper kinds need transformers")

from talkgs.audio import whisper as W  # noqa: E402
from tests.test_whisper import build_rand_whisper  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (CUDA graphs)")]


@pytest.fixture(scope="module")
def enc(tmp_path_factory):
    root = build_rand_whisper(tmp_path_factory.mktemp("whisper"), ct2=False)["hf"]
    return W.load_encoder(root, "whisper", 2, "cuda")


def test_graphed_encoder_equals_the_eager_one_for_new_windows_and_batch_sizes(enc):
    """The live layout's windows: a captured size replayed with new audio, a second size, then
    the first again; each against the same computation run eagerly."""
    layout = W.DEFAULT_STREAM
    rng = np.random.default_rng(0)
    for b in (8, 3, 8):
        w = (0.1 * rng.standard_normal((b, layout.span))).astype(np.float32)
        got = W.encode(enc, w, layout.positions)
        with torch.inference_mode():
            want = W._encode_device(enc, torch.as_tensor(w).cuda(), layout.positions)
        assert got.shape == (1, b, layout.positions, enc.d_model)
        torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-3, msg=f"b={b}")
    assert enc.graphs.failed is None and enc.graphs.n_graphs == 2


def test_states_of_a_window_do_not_depend_on_its_batch(enc):
    """group_states' promise (one window's states depend on that window only) holds through the graphs."""
    layout = W.DEFAULT_STREAM
    w = (0.1 * np.random.default_rng(1).standard_normal((5, layout.span))).astype(np.float32)
    together = W.group_states(enc, w, layout)
    alone = np.concatenate([W.group_states(enc, w[k : k + 1], layout) for k in range(5)], axis=1)
    np.testing.assert_allclose(together, alone, atol=1e-2, rtol=1e-2)  # half precision: GEMMs differ by batch
