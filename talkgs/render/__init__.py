"""Audio -> frames -> mp4: render a trained head for any audio, of any length.

See :mod:`talkgs.render.renderer` (the pipeline, streaming generator) and
:mod:`talkgs.render.drive` (pose, eyes and torso for any length).
"""

from talkgs.render.drive import DriveConfig, DrivePlan, drive_plan, pingpong, synth_blinks

__all__ = ["DriveConfig", "DrivePlan", "drive_plan", "pingpong", "synth_blinks"]
