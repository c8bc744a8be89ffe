"""Progress bars on the terminal (tqdm) that know which of them are still open, so that a
message printed when a command stops (an error, an interruption) starts a line of its own."""

from __future__ import annotations

import weakref

from tqdm import tqdm

# tqdm keeps its own set of open bars, but as a private attribute.
_OPEN: "weakref.WeakSet[ProgressBar]" = weakref.WeakSet()


class ProgressBar(tqdm):
    """A tqdm bar that registers itself as open until it is closed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _OPEN.add(self)

    def close(self) -> None:
        _OPEN.discard(self)
        super().close()


def end_open_bars() -> None:
    """Close the bars left open where they stopped, keeping them on screen (their line ends),
    so that what is printed next starts a line of its own."""
    for bar in list(_OPEN):
        if not bar.disable:
            bar.leave = True
        bar.close()
