"""The dataset format and its loader."""

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
from talkgs.data.loader import Dataset, load_dataset

__all__ = [
    "FORMAT_VERSION",
    "LABEL_BACKGROUND",
    "LABEL_TORSO",
    "LABEL_HAIR",
    "LABEL_FACE",
    "LABEL_MOUTH",
    "LABEL_NAMES",
    "Dataset",
    "load_dataset",
    "read_meta",
]
