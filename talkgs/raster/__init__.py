"""Differentiable Gaussian rasterization: one function, two backends (gsplat on CUDA, torch
elsewhere) with the same semantics. See :func:`rasterize` for shapes and conventions."""

from talkgs.raster._api import BACKENDS, RenderOutput, rasterize
from talkgs.raster._checks import RenderError
from talkgs.raster._gsplat import gsplat_available
from talkgs.raster.sh import sh_to_rgb

__all__ = ["BACKENDS", "RenderError", "RenderOutput", "gsplat_available", "rasterize", "sh_to_rgb"]
