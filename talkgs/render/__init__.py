"""Differentiable Gaussian rasterization: one function, two backends (gsplat on CUDA, torch
elsewhere) with the same semantics. See :func:`rasterize` for shapes and conventions."""

from talkgs.render._api import BACKENDS, RenderOutput, rasterize
from talkgs.render._checks import RenderError
from talkgs.render._gsplat import gsplat_available
from talkgs.render.sh import sh_to_rgb

__all__ = ["BACKENDS", "RenderError", "RenderOutput", "gsplat_available", "rasterize", "sh_to_rgb"]
