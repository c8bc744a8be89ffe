"""Errors a user can act on. The CLI prints ``talkgs: <message>`` on one line and exits 2.

Raise these (never bare exceptions) for bad input: the message names the file or value
and the problem, in one sentence.
"""


class TalkgsError(Exception):
    """Base class: a user-facing problem with input, data or a run."""


class MediaError(TalkgsError):
    """A media file is missing, unreadable, or lacks a required stream."""


class PrepareError(TalkgsError):
    """A video cannot become a dataset (too short, no face, ...)."""


class DatasetError(TalkgsError):
    """A dataset folder is missing, incomplete or of an unknown format version."""


class CheckpointError(TalkgsError):
    """A checkpoint is missing, corrupt or incompatible."""


class AudioFeatureError(TalkgsError):
    """An audio feature kind is unknown, unavailable, or mismatches the model."""
