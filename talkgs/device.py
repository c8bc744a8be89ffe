"""Which torch device a command runs on."""

from __future__ import annotations

import torch

from talkgs.errors import TalkgsError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; a named device is checked to exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TalkgsError("--device cuda was asked for but this torch has no CUDA device")
    return torch.device(name)
