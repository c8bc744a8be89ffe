"""Evaluation metrics: PSNR/SSIM (pure torch), ST-LPIPS, and landmark-based lip metrics.

Importing this package never imports stlpips; the LPIPS model is built on first use.
The LPIPS distance is ``talkgs.metrics.lpips.lpips`` (not re-exported here: a function
named like its module would shadow the module attribute ``talkgs.metrics.lpips``).
"""

from talkgs.metrics.image import psnr, ssim, ssim_map
from talkgs.metrics.lips import (
    MEDIAPIPE_LIPS_40,
    Correlation,
    lips_landmarks,
    lmd,
    mouth_opening_correlation,
    pearson,
)
from talkgs.metrics.lpips import load_lpips

__all__ = [
    "MEDIAPIPE_LIPS_40",
    "Correlation",
    "lips_landmarks",
    "lmd",
    "load_lpips",
    "mouth_opening_correlation",
    "pearson",
    "psnr",
    "ssim",
    "ssim_map",
]
