"""Shift-tolerant LPIPS (ST-LPIPS, Ghildyal & Liu 2022) as a metric and a training loss.

We use the ``stlpips-pytorch`` package because it ships the *full* backbone weights
(anti-aliased AlexNet / VGG plus the linear heads), so nothing is downloaded at run time;
the plain ``lpips`` package fetches its AlexNet through torchvision. Being shift-tolerant
it also penalises a 1-2 px misregistration far less than blur or noise, which suits a
renderer whose head pose comes from a landmark tracker.

The package is imported lazily (only when a model is first built), so ``talkgs.metrics``
imports on machines without it; building a model there raises a ``TalkgsError``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import sys
import types
from typing import Iterator

import torch
import torch.nn as nn

from talkgs.errors import TalkgsError

NETS = ("alex", "vgg")
# Smallest height/width each shift-tolerant backbone accepts (measured: below it a
# reflection pad inside the network becomes larger than its feature map and torch raises).
MIN_INPUT_SIZE = {"alex": 21, "vgg": 18}

# stlpips imports these at module level but never touches them on the shift-tolerant path
# (torchvision only builds the "vanilla" backbones, IPython.embed and torchsummary.summary
# are debugging leftovers). torchvision is unusable here (its wheels pin other torch builds)
# and the other two are absent, so stand-ins are placed while stlpips imports.
_UNUSED_IMPORTS = ("torchvision", "IPython", "torchsummary")


class _StandIn(types.ModuleType):
    """Placeholder module: any attribute is another placeholder; calling one raises."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _StandIn(f"{self.__name__}.{name}")

    def __call__(self, *args, **kwargs):
        raise TalkgsError(f"{self.__name__} is not installed; only a stand-in was provided for stlpips")


def _importable(name: str) -> bool:
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        importlib.import_module(name)
    except Exception:  # broken installs raise more than ImportError (torchvision: RuntimeError)
        return False
    return True


@contextlib.contextmanager
def _stand_ins(names: tuple[str, ...]) -> Iterator[list[str]]:
    """Put a :class:`_StandIn` in ``sys.modules`` for each name that cannot be imported,
    for the duration of the block only; real modules are left untouched. Yields the names
    that were stood in for."""
    placed: dict[str, _StandIn] = {}
    for name in names:
        if not _importable(name):
            placed[name] = _StandIn(name)
            sys.modules[name] = placed[name]
    try:
        yield list(placed)
    finally:
        for name, mod in placed.items():
            if sys.modules.get(name) is mod:
                del sys.modules[name]


def _import_stlpips() -> types.ModuleType:
    """The ``stlpips_pytorch.stlpips`` module, or a TalkgsError saying how to install it."""
    if "stlpips_pytorch.stlpips" in sys.modules and sys.modules["stlpips_pytorch.stlpips"] is not None:
        return sys.modules["stlpips_pytorch.stlpips"]
    with _stand_ins(_UNUSED_IMPORTS):
        try:
            return importlib.import_module("stlpips_pytorch.stlpips")
        except ImportError as e:
            raise TalkgsError(
                f"LPIPS needs the stlpips-pytorch package ({e}); install talkgs[metrics] "
                "(pip install 'talkgs[metrics]')"
            ) from None


def _as_nchw(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise TalkgsError(f"LPIPS {name} must be [B, H, W, 3] in [0, 1], got shape {tuple(x.shape)}")
    return x.permute(0, 3, 1, 2)


class FrozenLPIPS(nn.Module):
    """ST-LPIPS distance with frozen weights, always in eval mode.

    ``forward(a, b)``: ``a, b [B, H, W, 3]`` (or ``[H, W, 3]``) floats in [0, 1] ->
    distance ``[B]`` (float32). Gradients flow to the inputs, never to the weights.
    """

    def __init__(self, net: nn.Module, name: str):
        super().__init__()
        self.net = net
        self.name = name
        self.min_size = MIN_INPUT_SIZE[name]
        for p in self.net.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "FrozenLPIPS":
        # The heads contain Dropout: a parent module's .train() must not switch it on.
        return super().train(False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x = _as_nchw(a, "a")
        y = _as_nchw(b, "b")
        if x.shape != y.shape:
            raise TalkgsError(f"LPIPS inputs differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
        h, w = x.shape[-2:]
        if min(h, w) < self.min_size:
            raise TalkgsError(
                f"LPIPS-{self.name} needs images of at least {self.min_size} px per side, got {h}x{w} "
                "(pad or enlarge the crop, e.g. talkgs.train.losses.lips_crop)"
            )
        dtype = next(self.net.parameters()).dtype
        # The network expects [-1, 1].
        x = x.to(dtype) * 2.0 - 1.0
        y = y.to(dtype) * 2.0 - 1.0
        return self.net(x, y).reshape(-1)


@functools.lru_cache(maxsize=None)
def _load_cached(net: str, device: str) -> FrozenLPIPS:
    st = _import_stlpips()
    model = st.LPIPS(net=net, variant="shift_tolerant", verbose=False)
    return FrozenLPIPS(model, net).to(torch.device(device))


def load_lpips(net: str = "alex", device: str | torch.device = "cpu") -> FrozenLPIPS:
    """Shared frozen ST-LPIPS model for ``net`` ("alex" or "vgg") on ``device``.

    Built once per (net, device) and cached; callers must not modify it.
    """
    if net not in NETS:
        raise TalkgsError(f"unknown LPIPS network {net!r}; choose one of {', '.join(NETS)}")
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return _load_cached(net, str(dev))


def lpips(a: torch.Tensor, b: torch.Tensor, net: str = "alex") -> torch.Tensor:
    """ST-LPIPS distance ``[B]`` between ``a, b [B, H, W, 3]`` in [0, 1] (0 = identical).

    Runs on the inputs' device; differentiable in the inputs, so it serves as a loss.
    """
    return load_lpips(net, a.device)(a, b)
