"""The dataset loader decodes frames and label maps a chunk at a time onto the device; the
result must not depend on the chunk."""

from __future__ import annotations

import numpy as np
import pytest

from talkgs.data import format as fmt
from talkgs.data.loader import load_dataset


@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_chunked_loading_equals_decoding_the_range_whole(anchor_dataset, scale):
    import cv2

    from talkgs.media import read_frames

    lo, hi = 100, 161
    ref_frames = read_frames(anchor_dataset / fmt.FRAMES, start=lo, stop=hi)
    ref_labels = fmt.load_labels(anchor_dataset / fmt.LABELS, lo, hi)
    assert ref_frames.shape[0] == ref_labels.shape[0] == hi - lo
    if scale != 1.0:
        size = (ref_frames.shape[2] // 4, ref_frames.shape[1] // 4)
        ref_frames = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in ref_frames])
        ref_labels = np.stack([cv2.resize(m, size, interpolation=cv2.INTER_NEAREST) for m in ref_labels])
    for chunk in (7, 64, 1000):
        ds = load_dataset(anchor_dataset, "cpu", audio_kind=None, frame_range=(lo, hi), scale=scale, chunk=chunk)
        np.testing.assert_array_equal(ds.frames.numpy(), ref_frames)
        np.testing.assert_array_equal(ds.labels.numpy(), ref_labels)
    # The maps hold every class a prepared clip has, so the nibble unpacking is exercised.
    assert set(np.unique(ref_labels)) >= {fmt.LABEL_BACKGROUND, fmt.LABEL_FACE, fmt.LABEL_MOUTH}


def test_label_chunks_tile_the_range(anchor_dataset):
    path = anchor_dataset / fmt.LABELS
    whole = fmt.load_labels(path, 40, 90)
    parts = list(fmt.iter_labels(path, 40, 90, chunk=16))
    assert [p.shape[0] for p in parts] == [16, 16, 16, 2]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
