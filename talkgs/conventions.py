"""The one place where talkgs defines its coordinate frames, cameras and time grid.

Every module that builds, converts or uses a camera imports from here; nothing else in
the project defines world-to-camera matrices or intrinsics.

World (head) frame
    Metric, head-centred: the frame of MediaPipe's canonical face, converted from
    centimetres to metres. Origin near the centre of the head, +x towards the image
    right when the person faces the camera (the person's left), +y up, +z out of the
    face towards the viewer. The head never moves in this frame: head motion is
    absorbed into a per-frame camera (as in TalkingGaussian).

Camera frame (OpenCV)
    +x right, +y down, +z forward (the viewing direction). A camera looking at the face
    from the front therefore has a world-to-camera rotation close to diag(1, -1, -1).

Matrices
    ``w2c [..., 4, 4]`` maps homogeneous world points to camera points: X_c = R X_w + t,
    with R = w2c[..., :3, :3] and t = w2c[..., :3, 3]. ``c2w`` is its inverse.
    This is exactly gsplat's ``viewmats`` convention.

Intrinsics and pixels
    ``K [..., 3, 3] = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in pixels. Pixel (row i,
    column j) covers the square [j, j+1) x [i, i+1) and its centre is (j + 0.5, i + 0.5);
    u = fx X_c / Z_c + cx, v = fy Y_c / Z_c + cy. MediaPipe's normalised landmarks times
    (W, H) are in this continuous coordinate. gsplat uses the same pixel-centre rule.

OpenGL / Blender cameras (TalkingGaussian's transforms JSON)
    Camera +x right, +y up, +z backward: flip the camera's y and z axes
    (``opengl_c2w_to_opencv``) to convert.

Time
    Video runs at ``FPS`` = 25; audio at ``SAMPLE_RATE`` = 16 kHz mono. Frame i covers
    [i / 25, (i + 1) / 25) s, i.e. samples [640 i, 640 (i + 1)). Any per-frame feature has
    exactly one entry per video frame, computed on a window centred on the frame centre.

All functions here work on numpy arrays and torch tensors alike (they only use
indexing, ``@`` and elementwise arithmetic).
"""

from __future__ import annotations

from typing import Any

import numpy as np

FPS = 25
SAMPLE_RATE = 16_000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
MAX_MOUTH_AMPLITUDE = 3.0  # most a predicted mouth's motion may be scaled (render/eval/serve --mouth-amplitude)
CANONICAL_CM_TO_M = 0.01
NEAR_PLANE = 0.01  # metres; gsplat's default near plane, used by both render backends

# Camera y and z axes flipped: OpenGL/Blender <-> OpenCV camera frames (self-inverse).
_GL_CV_FLIP = np.diag([1.0, -1.0, -1.0, 1.0])


def _lib(x: Any):
    """numpy or torch, whichever ``x`` belongs to."""
    if isinstance(x, np.ndarray):
        return np
    import torch

    return torch


def _swap_last(x: Any) -> Any:
    return np.swapaxes(x, -1, -2) if isinstance(x, np.ndarray) else x.transpose(-1, -2)


def intrinsics(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """``K [3, 3]`` (float64) from focal lengths and principal point in pixels."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def scale_intrinsics(K: Any, factor: float) -> Any:
    """``K`` for an image resized by ``factor`` (pixel-centre consistent: a continuous
    coordinate u maps to u * factor)."""
    K2 = K.copy() if isinstance(K, np.ndarray) else K.clone()
    K2[..., 0, :] = K[..., 0, :] * factor
    K2[..., 1, :] = K[..., 1, :] * factor
    K2[..., 2, :] = K[..., 2, :]
    return K2


def rigid(R: Any, t: Any) -> Any:
    """``[..., 4, 4]`` homogeneous matrix from rotation ``[..., 3, 3]`` and translation ``[..., 3]``."""
    lib = _lib(R)
    shape = tuple(R.shape[:-2]) + (4, 4)
    if lib is np:
        M = np.zeros(shape, dtype=R.dtype)
    else:
        M = lib.zeros(shape, dtype=R.dtype, device=R.device)
    M[..., :3, :3] = R
    M[..., :3, 3] = t
    M[..., 3, 3] = 1.0
    return M


def invert_rigid(M: Any) -> Any:
    """Inverse of rigid transforms ``[..., 4, 4]`` (w2c <-> c2w), exact for rotations."""
    R = M[..., :3, :3]
    t = M[..., :3, 3]
    Rt = _swap_last(R)
    return rigid(Rt, -(Rt @ t[..., None])[..., 0])


def world_to_camera(points: Any, w2c: Any) -> Any:
    """Camera-frame points ``[..., N, 3]`` from world points ``[..., N, 3]`` and ``w2c [..., 4, 4]``."""
    R = w2c[..., :3, :3]
    t = w2c[..., None, :3, 3]
    return points @ _swap_last(R) + t


def project(points: Any, w2c: Any, K: Any) -> tuple[Any, Any]:
    """Pixel coordinates ``uv [..., N, 2]`` (continuous, pixel centres at +0.5) and camera
    depth ``z [..., N]`` of world points ``[..., N, 3]``."""
    pc = world_to_camera(points, w2c)
    z = pc[..., 2]
    fx = K[..., None, 0, 0]
    fy = K[..., None, 1, 1]
    cx = K[..., None, 0, 2]
    cy = K[..., None, 1, 2]
    u = fx * pc[..., 0] / z + cx
    v = fy * pc[..., 1] / z + cy
    lib = _lib(points)
    return lib.stack([u, v], **({"axis": -1} if lib is np else {"dim": -1})), z


def camera_centres(w2c: Any) -> Any:
    """World positions ``[..., 3]`` of the camera centres."""
    return invert_rigid(w2c)[..., :3, 3]


def opengl_c2w_to_opencv(c2w_gl: Any) -> Any:
    """Camera-to-world in OpenCV camera axes from one in OpenGL/Blender camera axes."""
    flip = _GL_CV_FLIP if isinstance(c2w_gl, np.ndarray) else _as_torch(_GL_CV_FLIP, c2w_gl)
    return c2w_gl @ flip


def opencv_c2w_to_opengl(c2w_cv: Any) -> Any:
    """Inverse of :func:`opengl_c2w_to_opencv` (the flip is its own inverse)."""
    return opengl_c2w_to_opencv(c2w_cv)


def _as_torch(a: np.ndarray, like: Any) -> Any:
    import torch

    return torch.as_tensor(a, dtype=like.dtype, device=like.device)


def n_frames_for_duration(seconds: float) -> int:
    """Number of 25 fps frames for an audio/video duration: ``round(seconds * 25)``."""
    return int(round(seconds * FPS))
