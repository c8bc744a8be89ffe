"""Audio -> frames -> mp4: render a trained head for any audio, of any length.

See :mod:`talkgs.synth.render` (the pipeline, streaming generator) and
:mod:`talkgs.synth.drive` (pose, eyes and torso for any length).
"""

from talkgs.synth.drive import DriveConfig, DrivePlan, drive_plan, pingpong, synth_blinks

__all__ = ["DriveConfig", "DrivePlan", "drive_plan", "pingpong", "synth_blinks"]
