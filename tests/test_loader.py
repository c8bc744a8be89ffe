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


def test_label_area_counts_each_map_within_bounded_memory(anchor_dataset):
    """The pixels of a class per map equal the whole-clip sum for every chunk, and counting a
    2,000-frame clip's maps stays within a chunk's transient memory (the whole-clip sum widens
    the mask to int64 first: +4.2 GB here)."""
    import subprocess
    import sys

    import torch

    from talkgs.data.loader import label_area

    maps = torch.from_numpy(fmt.load_labels(anchor_dataset / fmt.LABELS, 0, 300))
    ref = (maps == fmt.LABEL_MOUTH).flatten(1).sum(1)
    assert ref.max() > 0 and ref.min() == 0  # open and closed mouths among the maps
    for chunk in (1, 7, 256, 1000):
        area = label_area(maps, fmt.LABEL_MOUTH, chunk=chunk)
        assert area.dtype == torch.int64
        torch.testing.assert_close(area, ref, rtol=0, atol=0)
    code = (
        "import resource, torch; from talkgs.data.loader import label_area\n"
        "maps = torch.randint(0, 5, (2000, 512, 512), dtype=torch.uint8)\n"
        "rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
        "before = rss(); a = label_area(maps, 4); print(rss() - before, int(a.sum()))"
    )
    grew, total = map(int, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert 0.15 * 2000 * 512 * 512 < total < 0.25 * 2000 * 512 * 512  # one class in five
    assert grew < 1.0e9, f"counting grew the peak memory by {grew / 1e9:.2f} GB"


def test_label_maps_written_a_chunk_at_a_time_are_the_whole_file_byte_for_byte(tmp_path):
    """write_labels (prepare's streaming writer) gives save_labels' very file for any chunking,
    odd widths included, and refuses a count other than the one announced or values >= 16."""
    from talkgs.errors import DatasetError

    rng = np.random.default_rng(0)
    for w in (8, 7):
        maps = rng.integers(0, 5, (23, 6, w), dtype=np.uint8)
        fmt.save_labels(tmp_path / "whole.npz", maps)
        for chunk in (1, 5, 23):
            fmt.write_labels(tmp_path / "parts.npz", (maps[a : a + chunk] for a in range(0, 23, chunk)), 23)
            assert (tmp_path / "parts.npz").read_bytes() == (tmp_path / "whole.npz").read_bytes()
        np.testing.assert_array_equal(fmt.load_labels(tmp_path / "parts.npz"), maps)
    with pytest.raises(DatasetError, match="22 frames were written where 23"):
        fmt.write_labels(tmp_path / "short.npz", [maps[:22]], 23)
    with pytest.raises(DatasetError, match="below 16"):
        fmt.write_labels(tmp_path / "bad.npz", [maps, np.full((1, 6, w), 16, np.uint8)], 24)
