"""Video and audio files: probing, decoding onto the 25 fps grid, audio at 16 kHz, writing mp4.

PyAV is imported lazily (never at import time); where it is missing (the GPU machine),
video frames are decoded with OpenCV instead. Time rules: see :mod:`talkgs.media.frames`
(resampling to a frame rate) and :mod:`talkgs.media.audio` (audio/video alignment).
"""

from talkgs.media._backend import import_av
from talkgs.media.audio import fit_audio_to_frames, read_audio, read_wav, samples_for_frames, write_wav
from talkgs.media.frames import iter_frames, read_frames
from talkgs.media.probe import MediaInfo, count_frames, probe
from talkgs.media.remux import copy_video_stream
from talkgs.media.writer import VideoWriter, write_video, write_video_silent_cv2

__all__ = [
    "MediaInfo",
    "VideoWriter",
    "copy_video_stream",
    "count_frames",
    "fit_audio_to_frames",
    "import_av",
    "iter_frames",
    "probe",
    "read_audio",
    "read_frames",
    "read_wav",
    "samples_for_frames",
    "write_video",
    "write_video_silent_cv2",
    "write_wav",
]
