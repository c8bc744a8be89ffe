"""The dataset format, its loader, and a run's view of its checkpoint and dataset (``runs``)."""

from talkgs.data.format import (
    FORMAT_VERSION,
    LABEL_BACKGROUND,
    LABEL_FACE,
    LABEL_HAIR,
    LABEL_MOUTH,
    LABEL_NAMES,
    LABEL_TORSO,
    read_meta,
)


def __getattr__(name: str):
    # The loader needs torch; the format helpers do not. Importing it lazily keeps
    # `talkgs.data.format` (argument checks, --help) free of torch.
    if name in ("Dataset", "label_area", "load_dataset"):
        from talkgs.data import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'talkgs.data' has no attribute {name!r}")


__all__ = [
    "FORMAT_VERSION",
    "LABEL_BACKGROUND",
    "LABEL_TORSO",
    "LABEL_HAIR",
    "LABEL_FACE",
    "LABEL_MOUTH",
    "LABEL_NAMES",
    "Dataset",
    "label_area",
    "load_dataset",
    "read_meta",
]
