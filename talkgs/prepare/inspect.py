"""`talkgs inspect DATASET`: draw what preprocessing found, so a user can check it by eye.

Writes into ``out_dir``:
  inspect.mp4        every frame (or the first ``max_frames``) with the label map blended
                     in, label borders, landmarks (interpolated frames in magenta), head-pose
                     axes (x red, y green, z blue, 5 cm), lips and face boxes, and a panel
                     with frame index, shot, mouth opening and blink bars; the dataset's
                     audio is muxed in, so lip sync can be judged too.
  contact_sheet.png  8 frames spread over the whole clip with the same overlays, the
                     background plate and a legend of the label colours.

Needs no mediapipe (only numpy, OpenCV and talkgs.media), so it runs wherever a dataset is.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from talkgs import conventions
from talkgs.data import format as fmt
from talkgs.errors import DatasetError
from talkgs.fsutil import atomic_path

# RGB colour of each label value (index = label), used in the video, the sheet and the legend.
LABEL_COLORS = np.array(
    [
        [0, 0, 0],  # background (not drawn)
        [230, 60, 60],  # torso + neck: red
        [240, 150, 30],  # hair: orange
        [60, 130, 255],  # face: blue
        [255, 240, 40],  # mouth interior: yellow
    ],
    dtype=np.uint8,
)
_COLOR_LUT = np.zeros((256, 1, 3), np.uint8)
_COLOR_LUT[: len(LABEL_COLORS), 0] = LABEL_COLORS
LABEL_ALPHA = 0.35
AXIS_LENGTH_M = 0.05
MOUTH_OPEN_FULL = 0.12  # mouth_open (gap / face height) that fills the bar; wide open is ~0.08-0.1
SHEET_FRAMES = 8
SHEET_TILE = 256  # tile width in pixels
_LEGEND_HEIGHT = 256

_LANDMARK_RGB = (40, 255, 80)
_INTERPOLATED_RGB = (255, 0, 255)
_AXIS_RGB = ((255, 40, 40), (40, 220, 40), (60, 120, 255))
_LIPS_BOX_RGB = (255, 240, 40)
_FACE_BOX_RGB = (200, 200, 200)


# ------------------------------------------------------------------------------- loading


def load_for_inspect(dataset_dir: str | os.PathLike) -> dict:
    """Everything inspect draws, from a prepared dataset folder (validated by read_meta).

    Returns ``meta``, ``K [3, 3]``, ``labels [N, H, W] uint8``, ``tracks`` (dict of arrays),
    ``background [H, W, 3] uint8`` RGB, ``wav [S] float32`` (16 kHz).
    """
    from talkgs.media import read_wav

    root = Path(dataset_dir)
    meta = fmt.read_meta(root)
    n = int(meta["n_frames"])
    labels = fmt.load_labels(root / fmt.LABELS)
    tracks = fmt.load_tracks(root)
    needed = ("landmarks", "w2c", "mouth_open", "blink", "lips_box", "face_box", "shot")
    missing = [k for k in needed if k not in tracks]
    if missing:
        raise DatasetError(f"{root / fmt.TRACKS} lacks {', '.join(missing)}")
    for name, arr in [("labels", labels), *tracks.items()]:
        if arr.shape[0] != n:
            raise DatasetError(f"{root}: {name} has {arr.shape[0]} frames, meta.json says {n}")
    bgr = cv2.imread(str(root / fmt.BACKGROUND), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetError(f"{root / fmt.BACKGROUND} is not a readable image")
    wav, sr = read_wav(root / fmt.AUDIO)
    if sr != conventions.SAMPLE_RATE:
        raise DatasetError(f"{root / fmt.AUDIO} is {sr} Hz, expected {conventions.SAMPLE_RATE}")
    ix = meta["intrinsics"]
    return {
        "meta": meta,
        "K": conventions.intrinsics(ix["fx"], ix["fy"], ix["cx"], ix["cy"]),
        "labels": labels,
        "tracks": tracks,
        "background": np.ascontiguousarray(bgr[:, :, ::-1]),
        "wav": wav.astype(np.float32),
    }


# ------------------------------------------------------------------------------- drawing


def _px(uv: np.ndarray, shift: int = 4) -> tuple[int, int]:
    """A continuous pixel coordinate (centres at +0.5) as a cv2 fixed-point point."""
    return (int(round((uv[0] - 0.5) * (1 << shift))), int(round((uv[1] - 0.5) * (1 << shift))))


def blend_labels(frame: np.ndarray, labels: np.ndarray, alpha: float = LABEL_ALPHA) -> np.ndarray:
    """uint8 ``[H, W, 3]``: ``frame`` with each label's colour blended in (background left
    as is) and the borders between labels drawn in full colour."""
    # cv2 colour maps and masked copies: several times faster than numpy fancy indexing.
    colour = cv2.applyColorMap(labels, _COLOR_LUT)
    mixed = cv2.addWeighted(frame, 1.0 - alpha, colour, alpha, 0.0)
    out = np.ascontiguousarray(frame).copy()
    cv2.copyTo(mixed, (labels > 0).view(np.uint8), out)
    kernel = np.ones((3, 3), np.uint8)
    edges = cv2.morphologyEx(labels, cv2.MORPH_GRADIENT, kernel)
    # Colour a border pixel by the larger label there, so the mouth and face outlines win.
    border = cv2.applyColorMap(cv2.dilate(labels, kernel), _COLOR_LUT)
    cv2.copyTo(border, (edges > 0).view(np.uint8), out)
    return out


def draw_landmarks(img: np.ndarray, landmarks: np.ndarray, interpolated: bool) -> None:
    """Mark ``landmarks [P, 2]`` (continuous pixels) as 2x2-pixel dots, in place."""
    H, W = img.shape[:2]
    ij = np.floor(landmarks - 0.5).astype(np.int64)  # top-left of the 2x2 block around the point
    colour = _INTERPOLATED_RGB if interpolated else _LANDMARK_RGB
    for dy in (0, 1):
        for dx in (0, 1):
            x, y = ij[:, 0] + dx, ij[:, 1] + dy
            ok = (x >= 0) & (x < W) & (y >= 0) & (y < H)
            img[y[ok], x[ok]] = colour


def draw_pose_axes(img: np.ndarray, w2c: np.ndarray, K: np.ndarray, length: float = AXIS_LENGTH_M) -> None:
    """Draw the world (head) frame's x, y, z axes, ``length`` metres long, in place."""
    pts = np.array([[0, 0, 0], [length, 0, 0], [0, length, 0], [0, 0, length]], dtype=np.float64)
    uv, z = conventions.project(pts, w2c.astype(np.float64), K)
    if not np.all(z > conventions.NEAR_PLANE) or not np.all(np.isfinite(uv)):
        return
    o = _px(uv[0])
    for k in range(3):
        cv2.arrowedLine(img, o, _px(uv[k + 1]), _AXIS_RGB[k], 2, cv2.LINE_AA, shift=4, tipLength=0.2)


def draw_box(img: np.ndarray, box: np.ndarray, colour: tuple[int, int, int]) -> None:
    """Rectangle for ``box [4]`` = x0, y0, x1, y1 (continuous pixel edges), in place."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), colour, 1, cv2.LINE_4)


def draw_panel(img: np.ndarray, i: int, shot: int, mouth_open: float, blink: float, interpolated: bool) -> None:
    """Text and bars in the top-left corner, in place: frame, shot, mouth opening, blink."""
    H, W = img.shape[:2]
    s = max(W / 512.0, 0.5)  # scale the panel with the frame
    pw, ph = int(170 * s), int(64 * s)
    roi = img[:ph, :pw]
    roi[:] = (roi * 0.45).astype(np.uint8)  # darken so the text reads on any background
    font, fs, th = cv2.FONT_HERSHEY_SIMPLEX, 0.42 * s, 1
    tag = "  interp" if interpolated else ""
    cv2.putText(img, f"frame {i}  shot {shot}{tag}", (int(5 * s), int(16 * s)), font, fs, (255, 255, 255), th, cv2.LINE_AA)
    bars = [("mouth", mouth_open / MOUTH_OPEN_FULL, mouth_open, _LIPS_BOX_RGB), ("blink", blink, blink, (120, 200, 255))]
    for k, (name, frac, value, colour) in enumerate(bars):
        y = int((30 + 16 * k) * s)
        cv2.putText(img, name, (int(5 * s), y + int(9 * s)), font, fs, (255, 255, 255), th, cv2.LINE_AA)
        x0, x1 = int(48 * s), int(128 * s)
        cv2.rectangle(img, (x0, y), (x1, y + int(10 * s)), (90, 90, 90), -1)
        fill = x0 + int(round(np.clip(frac, 0.0, 1.0) * (x1 - x0)))
        if fill > x0:
            cv2.rectangle(img, (x0, y), (fill, y + int(10 * s)), colour, -1)
        cv2.putText(img, f"{value:.2f}", (x1 + int(4 * s), y + int(9 * s)), font, fs * 0.9, (255, 255, 255), th, cv2.LINE_AA)


def overlay(frame: np.ndarray, i: int, data: dict) -> np.ndarray:
    """uint8 ``[H, W, 3]`` RGB: frame ``i`` with every overlay drawn."""
    t = data["tracks"]
    interp = bool(t["landmark_interpolated"][i]) if "landmark_interpolated" in t else False
    img = blend_labels(frame, data["labels"][i])
    draw_box(img, t["face_box"][i], _FACE_BOX_RGB)
    draw_box(img, t["lips_box"][i], _LIPS_BOX_RGB)
    draw_landmarks(img, t["landmarks"][i], interp)
    draw_pose_axes(img, t["w2c"][i], data["K"])
    draw_panel(img, i, int(t["shot"][i]), float(t["mouth_open"][i]), float(t["blink"][i]), interp)
    return img


# ---------------------------------------------------------------------------- contact sheet


def _tile(img: np.ndarray, width: int, caption: str | None = None) -> np.ndarray:
    h = int(round(img.shape[0] * width / img.shape[1]))
    out = cv2.resize(img, (width, h), interpolation=cv2.INTER_AREA)
    if caption:
        cv2.putText(out, caption, (4, h - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def legend_tile(width: int, height: int, inpainted_fraction: float | None) -> np.ndarray:
    """uint8 ``[height, width, 3]``: label colour swatches with their names."""
    img = np.full((height, width, 3), 32, dtype=np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, "labels", (10, 22), font, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    for k, name in sorted(fmt.LABEL_NAMES.items()):
        y = 36 + 24 * k
        cv2.rectangle(img, (10, y), (30, y + 16), tuple(int(c) for c in LABEL_COLORS[k]), -1)
        cv2.rectangle(img, (10, y), (30, y + 16), (200, 200, 200), 1)
        cv2.putText(img, f"{k} {name}", (38, y + 13), font, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    y = 36 + 24 * len(fmt.LABEL_NAMES) + 8
    for text, colour in [("landmarks", _LANDMARK_RGB), ("interpolated", _INTERPOLATED_RGB)]:
        cv2.circle(img, (20, y + 8), 3, colour, -1)
        cv2.putText(img, text, (38, y + 13), font, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
        y += 20
    cv2.putText(img, "axes x y z (5 cm)", (10, y + 13), font, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    if inpainted_fraction is not None:
        cv2.putText(img, f"plate inpainted {100 * inpainted_fraction:.1f}%", (10, y + 33), font, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def _fit(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """``img`` scaled to fit ``height`` x ``width`` (aspect kept), on a dark canvas."""
    s = min(width / img.shape[1], height / img.shape[0])
    small = cv2.resize(img, (max(int(img.shape[1] * s), 1), max(int(img.shape[0] * s), 1)), interpolation=cv2.INTER_AREA)
    out = np.full((height, width, 3), 32, dtype=np.uint8)
    out[: small.shape[0], : small.shape[1]] = small
    return out


def sheet_indices(n_frames: int, count: int = SHEET_FRAMES) -> np.ndarray:
    """``count`` frame indices spread evenly over the clip (centres of equal parts)."""
    count = min(count, n_frames)
    return np.unique(((np.arange(count) + 0.5) * n_frames / count).astype(np.int64))


def contact_sheet(tiles: list[np.ndarray], columns: int = 5) -> np.ndarray:
    """uint8 grid of equally sized tiles, ``columns`` per row, empty cells dark."""
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    sheet = np.full((rows * h, columns * w, 3), 16, dtype=np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, columns)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = t[:h, :w]
    return sheet


# ------------------------------------------------------------------------------- entry point


def write_inspect(
    dataset_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    max_frames: int | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Write ``inspect.mp4`` and ``contact_sheet.png`` for a prepared dataset into ``out_dir``
    (both tagged as made by talkgs; ``talkgs inspect`` replaces them only with ``--force``).

    ``max_frames`` limits the video to the first frames; the contact sheet always spans the
    whole clip. Returns ``{"video": path, "contact_sheet": path}``.
    """
    from talkgs.console import ProgressBar

    from talkgs.media import VideoWriter, iter_frames
    from talkgs.provenance import made_by, png_with_tag

    root = Path(dataset_dir)
    data = load_for_inspect(root)
    n = int(data["meta"]["n_frames"])
    if max_frames is not None and max_frames < 1:
        raise DatasetError(f"max_frames must be >= 1, got {max_frames}")
    n_video = n if max_frames is None else min(n, max_frames)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    video_path = out / "inspect.mp4"
    sheet_path = out / "contact_sheet.png"

    wanted = set(sheet_indices(n).tolist())
    picked: dict[int, np.ndarray] = {}
    wav = data["wav"][: conventions.SAMPLES_PER_FRAME * n_video]
    with VideoWriter(video_path, fps=conventions.FPS, crf=23, audio=wav, preset="veryfast",
                     comment=made_by("inspect")) as writer:
        frames = iter_frames(root / fmt.FRAMES, stop=n_video)
        i = -1
        for i, frame in enumerate(ProgressBar(frames, total=n_video, desc="inspect", unit="frame", disable=not progress)):
            img = overlay(frame, i, data)
            writer.write(img)
            if i in wanted:
                picked[i] = img
        if i + 1 != n_video:
            raise DatasetError(f"{root / fmt.FRAMES} ends after {i + 1} frames, meta.json says {n}")
    for i in sorted(wanted - picked.keys()):  # sheet frames past max_frames
        frame = next(iter(iter_frames(root / fmt.FRAMES, start=i, stop=i + 1)), None)
        if frame is None:
            raise DatasetError(f"{root / fmt.FRAMES} has no frame {i}, meta.json says {n} frames")
        picked[i] = overlay(frame, i, data)

    tiles = [_tile(picked[i], SHEET_TILE) for i in sorted(picked)]
    th = tiles[0].shape[0]
    tiles.append(_tile(data["background"], SHEET_TILE, "background plate"))
    legend = legend_tile(SHEET_TILE, _LEGEND_HEIGHT, data["meta"].get("background", {}).get("inpainted_fraction"))
    tiles.append(_fit(legend, SHEET_TILE, th))
    sheet = contact_sheet(tiles)
    ok, png = cv2.imencode(".png", sheet[:, :, ::-1])
    if not ok:
        raise DatasetError(f"cannot encode {sheet_path}")
    with atomic_path(sheet_path, suffix=".png") as tmp:
        tmp.write_bytes(png_with_tag(png.tobytes(), made_by("inspect")))
    return {"video": video_path, "contact_sheet": sheet_path}
