"""`talkgs prepare`: turn a talking-head video into a dataset (landmarks, pose, masks, audio).

Submodules import mediapipe and OpenCV lazily; importing this package is cheap.
"""
