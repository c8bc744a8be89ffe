"""Shared fixtures: the real anchor clip (skipped where absent) and datasets prepared from it.

The clip and anything derived from it live only in pytest's temporary folders.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
ANCHOR = SHARED_DATA / "anchor_cnn_512_25fps.mp4"


def _require_anchor() -> Path:
    if not ANCHOR.is_file():
        pytest.skip(f"real test clip absent: {ANCHOR} (it lives in ../shared/data beside the repo)")
    return ANCHOR


@pytest.fixture(scope="session")
def anchor_path() -> Path:
    return _require_anchor()


@pytest.fixture(scope="session")
def anchor_dataset(tmp_path_factory) -> Path:
    """The whole anchor clip prepared once per test session (~30-60 s on 2 cores)."""
    from talkgs.commands.prepare import PrepareConfig
    from talkgs.prepare.pipeline import prepare

    src = _require_anchor()
    out = tmp_path_factory.mktemp("anchor") / "dataset"
    return prepare(PrepareConfig(video=src, output=out, progress=False))


@pytest.fixture(scope="session")
def anchor_excerpt(tmp_path_factory):
    """Factory: a re-encoded excerpt of the anchor clip (start s, duration s, fps, audio?)."""
    src = _require_anchor()
    cache: dict = {}

    def make(start: float = 10.0, duration: float = 6.0, fps: int = 25, audio: bool = True) -> Path:
        key = (start, duration, fps, audio)
        if key not in cache:
            from tests.media_utils import write_excerpt

            out = tmp_path_factory.mktemp("excerpt") / f"excerpt_{fps}fps_{int(audio)}.mp4"
            write_excerpt(src, out, start=start, duration=duration, fps=fps, audio=audio)
            cache[key] = out
        return cache[key]

    return make


@pytest.fixture(scope="session")
def trained(anchor_dataset, tmp_path_factory):
    """A tiny head trained on CPU (64x64, ~280 steps on the anchor's last shot, 2000 + 150
    Gaussians without densification, so that it trains and renders in seconds): the trainer,
    val PSNR before and after, and the run folder. Shared by test_train, test_eval, test_render_audio
    and test_robustness; densification has its own tests (test_strategy, test_train's resume)."""
    import dataclasses

    import torch

    from talkgs.train.trainer import Trainer
    from tests.train_utils import _tiny_cfg, _val_psnr

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("run") / "tiny"
    cfg = _tiny_cfg(anchor_dataset, out)
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, face_init=dataclasses.replace(cfg.model.face_init, n=2000)),
        **{s: dataclasses.replace(getattr(cfg, s), densify=None) for s in ("mouth", "face", "fuse")},
    )
    trainer = Trainer(cfg)
    before = _val_psnr(trainer.model, trainer.frames, trainer.ds)
    trainer.run()
    after = _val_psnr(trainer.model, trainer.frames, trainer.ds)
    return trainer, before, after, out


@pytest.fixture(scope="session")
def live_run(anchor_dataset, tmp_path_factory) -> Path:
    """A head small enough to render live on a 2-core CPU (64x64, 300 + 80 Gaussians, no
    densification, ~110 steps): the `talkgs serve` tests stream it in real time."""
    import torch

    from talkgs.train.trainer import Trainer
    from tests.train_utils import _live_cfg

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("run") / "live"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # measured on 2 busy cores: ~10 s with one thread, minutes with two
    try:
        Trainer(_live_cfg(anchor_dataset, out)).run()
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="session")
def excerpt_dataset(anchor_excerpt, tmp_path_factory) -> Path:
    """A second, small prepared dataset: 6 s of the anchor clip (from 10 s, 150 frames) prepared
    on its own (its own tracks, labels and features). `talkgs eval --drive` uses it as another clip."""
    from talkgs.commands.prepare import PrepareConfig
    from talkgs.prepare.pipeline import prepare

    out = tmp_path_factory.mktemp("excerpt_ds") / "excerpt"
    return prepare(PrepareConfig(video=anchor_excerpt(), output=out, progress=False))
