"""Which torch device a command runs on."""

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
