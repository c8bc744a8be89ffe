"""Constants of the rasterization model and input checking, shared by both backends.

The constants are gsplat 1.5.3's ("classic" mode); the torch backend must use exactly these
for the parity check to hold.
"""

from __future__ import annotations

from torch import Tensor

from talkgs.conventions import NEAR_PLANE
from talkgs.errors import TalkgsError

FAR_PLANE = 1e10  # metres; gsplat's default far plane
EPS2D = 0.3  # px^2 added to the 2D covariance (low-pass filter; a pixel is ~1/sqrt(12) px wide)
ALPHA_MIN = 1.0 / 255.0  # a Gaussian whose alpha at a pixel is below this is skipped there
# gsplat 1.5.3 clamps alpha at 0.999 (the original 3DGS CUDA code used 0.99); parity wins.
ALPHA_MAX = 0.999
T_MIN = 1e-4  # a pixel stops at the Gaussian that would bring its transmittance to <= this
RADIUS_SIGMAS = 3.33  # screen-space box half-size in standard deviations (opacity-aware below)

__all__ = [
    "ALPHA_MAX",
    "ALPHA_MIN",
    "EPS2D",
    "FAR_PLANE",
    "NEAR_PLANE",
    "RADIUS_SIGMAS",
    "T_MIN",
    "RenderError",
    "check_shape",
]


class RenderError(TalkgsError):
    """Bad input to the rasterizer, or a backend that cannot run here."""


def check_shape(name: str, x: Tensor, expected: tuple) -> None:
    """Raise RenderError unless ``x.shape`` matches ``expected`` (None = any size)."""
    shape = tuple(x.shape)
    ok = len(shape) == len(expected) and all(e is None or e == s for s, e in zip(shape, expected))
    if not ok:
        want = "[" + ", ".join("*" if e is None else str(e) for e in expected) + "]"
        raise RenderError(f"{name} has shape {list(shape)}, expected {want}")
