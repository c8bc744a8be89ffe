"""Which torch device a command runs on, and small host tensors sent to it without a wait."""

from __future__ import annotations

import re

from talkgs.errors import TalkgsError, UsageError

_NAMES = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


def check_name(name: str, flag: str = "--device") -> None:
    """One-line UsageError unless ``name`` is a device name (checked without torch)."""
    if not _NAMES.fullmatch(str(name)):
        raise UsageError(f"{flag} {name!r} is not a device; use auto, cpu, cuda or cuda:N")


def resolve_device(name: str):
    """``auto`` -> CUDA when available, else CPU; a named device is checked to exist."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TalkgsError("--device cuda was asked for but this torch has no CUDA device")
    return torch.device(name)


def to_device_async(t, device):
    """A small host tensor on ``device`` without waiting for the kernels queued there: on CUDA it
    goes from pinned memory, non-blocking (a copy from pageable memory synchronises the stream,
    which a launch-bound loop pays in idle device time)."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
