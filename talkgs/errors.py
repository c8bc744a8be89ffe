"""Errors a user can act on. The CLI prints ``talkgs: <message>`` on one line and exits 2.

Raise these (never bare exceptions) for bad input: the message names the file or value
and the problem, in one sentence.
"""


def short(e: BaseException | str, limit: int = 120) -> str:
    """A library's error text as one line of at most ``limit`` characters, cut at a word."""
    text = " ".join(str(e).split()) or type(e).__name__
    if len(text) <= limit:
        return text
    cut = text[: limit - 3].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + "..."


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


class UsageError(TalkgsError):
    """An argument is out of range, or an input/output path cannot be used as given."""


class OutputError(TalkgsError):
    """An output path exists and talkgs may not replace it (or it is one of the inputs)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM. The message says what was kept and how to continue; the CLI
    prints it as ``talkgs: <message>`` and exits 128 + the signal number."""

    def __init__(self, message: str = "interrupted", signum: int = 2):
        super().__init__(message)
        self.signum = signum


def unwind_on_sigterm(signum, frame) -> None:
    """A SIGTERM handler that unwinds like Ctrl-C: every ``finally`` runs, so temporaries go and
    partial work is kept as each command documents."""
    raise Interrupted("terminated (SIGTERM)", signum)


def interrupt_behind(e: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C (or SIGTERM) that ``e`` was raised from, if any: some libraries turn a
    signal that lands inside them into their own error (MediaPipe's import raises
    ``ImportError: initialization failed`` from the KeyboardInterrupt)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None
