"""Interoperation with other talking-head codebases' data.

``tg_layout`` (the TalkingGaussian / ER-NeRF / RAD-NeRF folder layout and camera conversion),
``import_tg`` (`talkgs import-tg`) and ``export_tg`` (`talkgs export-tg`). Nothing here imports
mediapipe: importing needs only the core install plus OpenCV.
"""
