"""`talkgs import-tg`: a folder preprocessed for TalkingGaussian / ER-NeRF / RAD-NeRF -> a talkgs dataset.

Essential (a one-line error when absent):
  transforms_train.json          cameras and the frame list (transforms_val.json is optional)
  ori_imgs/<i>.jpg or gt_imgs/<i>.jpg   one image per listed frame (ori_imgs preferred)
  parsing/<i>.png                one label map per frame (talkgs cannot segment without mediapipe)
  audio                          aud.wav, else the audio of a single <ID>.mp4 beside it, else at
                                 least one feature file (aud_ds.npy / aud.npy / aud_hu.npy / aud_eo.npy)
Optional (reported in the printed list and meta.json ``tg_import.missing``):
  transforms_val.json, ori_imgs/<i>.lms, teeth_mask/<i>.npy, bc.jpg (else our own plate),
  au.csv, the feature files, aud.wav (when features exist: audio.wav is then silence and no mel).
  torso_imgs/ and gt_imgs/ are not needed (talkgs composites the torso from frames and labels).

Tracks the original does not have are derived (README "Interoperating with TalkingGaussian
data" lists each): landmarks are the canonical face projected through each camera, mouth
opening and eye ratios come from the .lms files (else from the labels / AU45), blink from AU45.
This module never imports mediapipe.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from talkgs import __version__, conventions
from talkgs.data import format as fmt
from talkgs.errors import DatasetError, MediaError
from talkgs.fsutil import atomic_path, move_into, partial_dir, write_json
from talkgs.interop import tg_layout as tg


# Open-eye aspect ratio assumed when no landmarks give one (a typical 6-point EAR).
EAR_OPEN = 0.3


@dataclasses.dataclass
class ImportResult:
    """What import-tg wrote and what it had to do without."""

    path: Path
    n_frames: int
    missing: list[str]  # optional parts that were absent
    notes: list[str]  # conversions and fallbacks worth knowing
    alignment: str


# ------------------------------------------------------------------------------------ reading


def _read_transforms(src: Path, missing: list[str], notes: list[str]) -> dict:
    """Frame ids, OpenGL c2w, intrinsics and split from the transforms files."""
    files = {}
    for name in (tg.TRANSFORMS_TRAIN, tg.TRANSFORMS_VAL):
        p = src / name
        if not p.is_file():
            continue
        try:
            files[name] = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DatasetError(f"{p} is unreadable: {e}") from None
    if tg.TRANSFORMS_TRAIN not in files:
        raise DatasetError(f"{src} has no {tg.TRANSFORMS_TRAIN}; it is not a TalkingGaussian/ER-NeRF data folder")
    if tg.TRANSFORMS_VAL not in files:
        missing.append(tg.TRANSFORMS_VAL)
    focal = cx = cy = None
    marker = None
    split: dict[str, list[int]] = {}
    poses: dict[int, np.ndarray] = {}
    for name, content in files.items():
        p = src / name
        try:
            f = float(content["focal_len"])
            frames = content["frames"]
        except (KeyError, TypeError, ValueError):
            raise DatasetError(f"{p} lacks focal_len or frames") from None
        if focal is not None and abs(f - focal) > 1e-6 * focal:
            raise DatasetError(f"{p} has focal_len {f}, the other transforms file {focal}")
        focal = f
        if f <= 0:
            raise DatasetError(f"{p} has focal_len {f}; it must be positive")
        cx = content.get("cx", cx)
        cy = content.get("cy", cy)
        marker = content.get(tg.MARKER_KEY, marker)
        ids = []
        for k, fr in enumerate(frames):
            try:
                i = int(fr["img_id"])
                m = np.asarray(fr["transform_matrix"], np.float64)
            except (KeyError, TypeError, ValueError):
                raise DatasetError(f"{p}: frame {k} lacks img_id or transform_matrix") from None
            if m.shape != (4, 4) or not np.all(np.isfinite(m)):
                raise DatasetError(f"{p}: frame {k} (img_id {i}) has a bad transform_matrix (need finite 4x4)")
            if i in poses and not np.allclose(poses[i], m, atol=1e-6):
                raise DatasetError(f"{p}: img_id {i} appears twice with different transform_matrix")
            poses[i] = m
            ids.append(i)
        split[name] = ids
    if not poses:
        raise DatasetError(f"{src}: the transforms files list no frames")
    ids = sorted(poses)
    a, b = ids[0], ids[-1] + 1
    if len(ids) != b - a:
        gap = next(i for i in range(a, b) if i not in poses)
        raise DatasetError(
            f"{src}: frames img_id {a}..{b - 1} are not contiguous (img_id {gap} is missing); talkgs needs an unbroken clip"
        )
    return {
        "ids": ids,
        "offset": a,
        "c2w_gl": np.stack([poses[i] for i in ids]),
        "focal": focal,
        "cx": None if cx is None else float(cx),
        "cy": None if cy is None else float(cy),
        "split": split,
        "marker": marker,
    }


def _split(tr: dict, n: int, notes: list[str]) -> dict:
    """Our split (contiguous train then val ranges) from the transforms files, else the default."""
    a = tr["offset"]
    train = sorted(set(tr["split"].get(tg.TRANSFORMS_TRAIN, [])))
    val = sorted(set(tr["split"].get(tg.TRANSFORMS_VAL, [])))
    if val and train and not set(train) & set(val) and max(train) < min(val):
        k = min(val) - a
        if train == list(range(a, a + k)) and val == list(range(a + k, a + n)):
            return {"train": [0, k], "val": [k, n]}
    n_val = max(1, int(round(n / 11.0))) if n > 1 else 0
    if val:
        notes.append(
            f"the transforms split is not 'train frames, then val frames'; using the last {n_val} frames as val"
        )
    return {"train": [0, n - n_val], "val": [n - n_val, n]}


def _imread_rgb(path: Path, flags=None) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR if flags is None else flags)
    if img is None:
        raise DatasetError(f"{path} is not a readable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _read_au(path: Path, ids: list[int], notes: list[str]) -> tuple[np.ndarray, list[str]] | None:
    """AU intensity/presence columns ``[N, K]`` (rows indexed by img_id, as the original reads them)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        notes.append(f"{tg.AU_CSV} is unreadable ({e}); AU signals not imported")
        return None
    if len(rows) < 2:
        notes.append(f"{tg.AU_CSV} has no data rows; AU signals not imported")
        return None
    header = [h.strip() for h in rows[0]]
    cols = [(j, h) for j, h in enumerate(header) if h.startswith("AU") and h[-2:] in ("_r", "_c")]
    if not cols:
        notes.append(f"{tg.AU_CSV} has no AUxx_r columns; AU signals not imported")
        return None
    data = rows[1:]
    if len(data) < ids[-1] + 1:
        notes.append(f"{tg.AU_CSV} has {len(data)} rows, frames go up to img_id {ids[-1]}; AU signals not imported")
        return None
    try:
        arr = np.array([[float(data[i][j]) for j, _ in cols] for i in ids], np.float32)
    except (ValueError, IndexError):
        notes.append(f"{tg.AU_CSV} has non-numeric or short rows; AU signals not imported")
        return None
    return arr, [h for _, h in cols]


def _load_features(path: Path, kind: str, notes: list[str]) -> np.ndarray | None:
    """``[M, W, C]`` features of ``kind`` from an .npy file (``talkgs.audio.load_feature_file``,
    which also accepts the transposed [M, C, W] layout), or None (with a note) when unusable."""
    from talkgs.audio import load_feature_file
    from talkgs.errors import AudioFeatureError

    try:
        return load_feature_file(path, kind)
    except AudioFeatureError as e:
        notes.append(f"{kind} features not imported: {e}")
        return None


# Feature rows may fall short of the frames by this many (the original's DeepSpeech count is
# round(50 * duration) / 2); the last row is repeated. More is refused for that kind.
MAX_FEATURE_SHORTFALL = 2


def _fit_rows(arr: np.ndarray, a: int, n: int) -> tuple[np.ndarray, int]:
    """Rows [a, a + n) of ``arr``, the last row repeated where it is short; also the number of
    repeated rows."""
    part = arr[a : a + n]
    pad = n - part.shape[0]
    if pad > 0:
        part = np.concatenate([part, np.repeat(part[-1:], pad, 0)])
    return part, max(pad, 0)


# ------------------------------------------------------------------------------------ derived tracks


def _label_boxes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: face box (face + mouth classes, continuous coords), whether it exists, the
    mouth-interior vertical extent (px) and the face vertical extent (px)."""
    n = labels.shape[0]
    box = np.zeros((n, 4), np.float64)
    ok = np.zeros(n, bool)
    mouth_h = np.zeros(n)
    face_h = np.zeros(n)
    for i in range(n):
        face = (labels[i] == fmt.LABEL_FACE) | (labels[i] == fmt.LABEL_MOUTH)
        rows = np.flatnonzero(face.any(1))
        if rows.size:
            cols = np.flatnonzero(face.any(0))
            box[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
            ok[i] = True
            face_h[i] = rows[-1] + 1 - rows[0]
        mrows = np.flatnonzero((labels[i] == fmt.LABEL_MOUTH).any(1))
        if mrows.size:
            mouth_h[i] = mrows[-1] + 1 - mrows[0]
    return box, ok, mouth_h, face_h


def _canonical_478() -> np.ndarray:
    """Canonical face [478, 3] metres: the 468 mesh vertices plus each iris at its eye's centre."""
    from talkgs.landmarks import LEFT_EYE_IDX, RIGHT_EYE_IDX, load_canonical_face

    p = load_canonical_face()
    right = p[list(RIGHT_EYE_IDX)].mean(0)
    left = p[list(LEFT_EYE_IDX)].mean(0)
    return np.concatenate([p, np.repeat(right[None], 5, 0), np.repeat(left[None], 5, 0)])


def _fan_signals(lms: np.ndarray, width: int, height: int) -> dict[str, np.ndarray]:
    """mouth gap/opening, eye ratios and lips box from FAN-68 landmarks ``[N, 68, 2]`` (talkgs px)."""
    from talkgs.landmarks import CHIN, FOREHEAD_TOP, load_canonical_face
    from talkgs.prepare.signals import square_box

    c = load_canonical_face()
    nasion = tg.FAN68_TO_MEDIAPIPE[tg.FAN_NASION]
    # FAN has no forehead point: face height (forehead top to chin, as in talkgs.prepare.signals)
    # is the nasion-chin distance times the canonical face's ratio of the two.
    ratio = np.linalg.norm(c[FOREHEAD_TOP] - c[CHIN]) / np.linalg.norm(c[nasion] - c[CHIN])
    down = lms[:, tg.FAN_CHIN] - lms[:, tg.FAN_NASION]
    nasion_chin = np.linalg.norm(down, axis=-1)
    down = down / np.maximum(nasion_chin[:, None], 1e-9)
    up = [u for u, _ in tg.FAN_INNER_LIP_PAIRS]
    lo = [v for _, v in tg.FAN_INNER_LIP_PAIRS]
    gap = np.clip(((lms[:, lo] - lms[:, up]) * down[:, None]).sum(-1), 0.0, None).mean(-1)

    def ear(eye):
        p1, p2, p3, p4, p5, p6 = (lms[:, k] for k in eye)
        lids = np.linalg.norm(p2 - p6, axis=-1) + np.linalg.norm(p3 - p5, axis=-1)
        return lids / np.maximum(2.0 * np.linalg.norm(p1 - p4, axis=-1), 1e-9)

    return {
        "mouth_gap_px": gap,
        "mouth_open": gap / np.maximum(nasion_chin * ratio, 1e-9),
        "eye_ratio": np.stack([ear(tg.FAN_RIGHT_EYE), ear(tg.FAN_LEFT_EYE)], -1),
        "lips_box": square_box(lms[:, list(tg.FAN_LIPS_OUTER)], width, height),
    }


# ------------------------------------------------------------------------------------ main


def _find_images(src: Path, ids: list[int], missing: list[str], notes: list[str]) -> list[Path]:
    paths = []
    n_gt = 0
    for i in ids:
        p = src / tg.ORI_IMGS / f"{i}.jpg"
        if not p.is_file():
            q = src / tg.GT_IMGS / f"{i}.jpg"
            if not q.is_file():
                raise DatasetError(
                    f"{src} has neither {tg.ORI_IMGS}/{i}.jpg nor {tg.GT_IMGS}/{i}.jpg; every listed frame needs an image"
                )
            p = q
            n_gt += 1
        paths.append(p)
    if n_gt:
        missing.append(f"{tg.ORI_IMGS}/*.jpg ({n_gt} of {len(ids)} frames)")
        notes.append(
            f"{n_gt} frames come from {tg.GT_IMGS} (background already replaced by {tg.BACKGROUND}): fine for "
            "training, but the dataset's background then is the plate, not the original"
        )
    for i in ids:
        if not (src / tg.PARSING / f"{i}.png").is_file():
            raise DatasetError(f"{src} has no {tg.PARSING}/{i}.png; talkgs needs the label map of every frame")
    return paths


def _source_audio(src: Path, missing: list[str], notes: list[str]) -> np.ndarray | None:
    """The whole 16 kHz mono waveform of the clip, or None."""
    from talkgs.media import read_audio

    wav_path = src / tg.AUDIO_WAV
    if wav_path.is_file():
        try:
            return read_audio(wav_path)
        except MediaError as e:
            notes.append(f"{tg.AUDIO_WAV} is unreadable ({e})")
    else:
        missing.append(tg.AUDIO_WAV)
    videos = sorted(p for p in src.glob("*.mp4") if p.is_file())
    if len(videos) == 1:
        try:
            wav = read_audio(videos[0])
            notes.append(f"audio taken from {videos[0].name} (no usable {tg.AUDIO_WAV})")
            return wav
        except MediaError as e:
            notes.append(f"{videos[0].name} has no usable audio ({e})")
    return None


def import_tg(cfg) -> ImportResult:
    """Convert ``cfg.source`` (original layout) into a talkgs dataset at ``cfg.output``."""
    import cv2

    from talkgs.media import VideoWriter, fit_audio_to_frames, write_wav

    from talkgs import validate

    t_start = time.perf_counter()
    src, out = Path(cfg.source), Path(cfg.output)
    missing: list[str] = []
    notes: list[str] = []
    say = (lambda m: print(f"[import-tg] {m}", flush=True)) if cfg.progress else (lambda m: None)

    # ---- essentials first, so a bad folder fails before any work
    tr = _read_transforms(src, missing, notes)
    ids, a = tr["ids"], tr["offset"]
    n = len(ids)
    image_paths = _find_images(src, ids, missing, notes)
    wav = _source_audio(src, missing, notes)
    features: dict[str, np.ndarray] = {}
    for kind, names in tg.FEATURE_FILES.items():
        found = [src / nm for nm in names if (src / nm).is_file()]
        if not found:
            continue
        arr = _load_features(found[0], kind, notes)
        if arr is not None:
            features[kind] = arr
    feature_names = [nm for names in tg.FEATURE_FILES.values() for nm in names]
    if not any((src / nm).is_file() for nm in feature_names):
        missing.append(f"audio feature files ({' / '.join(feature_names)})")
    if wav is None and not features:
        raise DatasetError(
            f"{src} has no audio: no {tg.AUDIO_WAV}, no <ID>.mp4 and no {' / '.join(feature_names)} features"
        )

    first = _imread_rgb(image_paths[0])
    h0, w0 = first.shape[:2]
    pad_h, pad_w = h0 % 2, w0 % 2  # H.264 needs even sizes: pad the bottom/right edge
    height, width = h0 + pad_h, w0 + pad_w
    if pad_h or pad_w:
        notes.append(f"frames are {w0}x{h0}; padded to {width}x{height} (edge pixels, background label)")

    teeth_dir = src / tg.TEETH_MASK
    n_teeth_missing = 0
    if not teeth_dir.is_dir():
        missing.append(f"{tg.TEETH_MASK}/ (mouth interior from the parsing gray only)")
    lms_all = []
    have_lms = True

    tmp = partial_dir(out)
    timings: dict[str, float] = {}
    try:
        # ---- frames, labels, landmarks: one pass over the images
        from talkgs.prepare.background import sample_indices

        t0 = time.perf_counter()
        plate_idx = set(sample_indices(n).tolist())
        plate_frames: dict[int, np.ndarray] = {}
        labels = np.zeros((n, height, width), np.uint8)
        with VideoWriter(tmp / fmt.FRAMES, fps=conventions.FPS, crf=12) as writer:
            for k, (i, path) in enumerate(zip(ids, image_paths)):
                img = first if k == 0 else _imread_rgb(path)
                if img.shape[:2] != (h0, w0):
                    raise DatasetError(f"{path} is {img.shape[1]}x{img.shape[0]}, earlier frames {w0}x{h0}")
                parsing = _imread_rgb(src / tg.PARSING / f"{i}.png")
                if parsing.shape[:2] != (h0, w0):
                    raise DatasetError(
                        f"{src / tg.PARSING}/{i}.png is {parsing.shape[1]}x{parsing.shape[0]}, frames are {w0}x{h0}"
                    )
                teeth = None
                if teeth_dir.is_dir():
                    tp = teeth_dir / f"{i}.npy"
                    if tp.is_file():
                        teeth = np.load(tp, allow_pickle=False)
                        if teeth.shape != (h0, w0):
                            raise DatasetError(f"{tp} has shape {teeth.shape}, frames are {h0}x{w0}")
                    else:
                        n_teeth_missing += 1
                if pad_h or pad_w:
                    img = np.pad(img, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
                labels[k, :h0, :w0] = tg.labels_from_parsing(parsing, teeth)
                writer.write(img)
                if k in plate_idx:
                    plate_frames[k] = img
                if have_lms:
                    lp = src / tg.ORI_IMGS / f"{i}.lms"
                    try:
                        lms_all.append(tg.read_lms(lp))
                    except (OSError, ValueError):
                        have_lms = False
                        missing.append(f"{tg.ORI_IMGS}/*.lms (first absent or unreadable: {i}.lms)")
                        lms_all = []
                if cfg.progress and (k + 1) % 250 == 0:
                    say(f"frames {k + 1}/{n}")
        if n_teeth_missing:
            missing.append(f"{tg.TEETH_MASK}/*.npy ({n_teeth_missing} of {n} frames)")
        with atomic_path(tmp / fmt.LABELS, suffix=".npz") as p:
            fmt.save_labels(p, labels)
        timings["frames_labels"] = round(time.perf_counter() - t0, 3)

        # ---- background plate
        t0 = time.perf_counter()
        inpainted = 0.0
        bc = src / tg.BACKGROUND
        plate = None
        if bc.is_file():
            plate = _imread_rgb(bc)
            if plate.shape[:2] != (h0, w0):
                notes.append(
                    f"{tg.BACKGROUND} is {plate.shape[1]}x{plate.shape[0]}, frames {w0}x{h0}; computed our own plate"
                )
                plate = None
            elif pad_h or pad_w:
                plate = np.pad(plate, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        else:
            missing.append(f"{tg.BACKGROUND} (plate computed from the frames and labels)")
        if plate is None:
            from talkgs.prepare.background import background_plate

            ks = sorted(plate_frames)
            plate, unseen = background_plate(
                np.stack([plate_frames[k] for k in ks]), labels[ks], stride=1, progress=False
            )
            inpainted = float(unseen.mean())
        with atomic_path(tmp / fmt.BACKGROUND) as p:
            if not cv2.imwrite(str(p), cv2.cvtColor(plate, cv2.COLOR_RGB2BGR)):
                raise DatasetError(f"could not write {p}")
        del plate_frames
        timings["background"] = round(time.perf_counter() - t0, 3)

        # ---- audio and features
        t0 = time.perf_counter()
        spf = conventions.SAMPLES_PER_FRAME
        if wav is not None:
            clip = wav[a * spf : (a + n) * spf]
            short = n * spf - clip.shape[0]
            if short > spf:
                notes.append(f"the audio covers {clip.shape[0] / spf:.1f} of {n} frames; padded with silence")
            clip = fit_audio_to_frames(clip, n)
        else:
            clip = np.zeros(n * spf, np.float32)
            notes.append(
                "no waveform: audio.wav is silence and no waveform features were computed; train with "
                f"--audio-kind {sorted(features)[0]}"
            )
        with atomic_path(tmp / fmt.AUDIO) as p:
            write_wav(p, clip, conventions.SAMPLE_RATE)
        feat_meta = {}
        for kind, arr in features.items():
            short = a + n - arr.shape[0]
            if short > MAX_FEATURE_SHORTFALL or arr.shape[0] <= a:
                notes.append(f"{kind} features have {arr.shape[0]} rows for frames {a}..{a + n - 1}; not imported")
                continue
            part, pad = _fit_rows(arr, a, n)
            if pad or arr.shape[0] > a + n + 1:
                notes.append(
                    f"{kind} features have {arr.shape[0]} rows for frames {a}..{a + n - 1}; fitted ({pad} rows repeated)"
                )
            dtype = np.float16 if np.abs(part).max(initial=0.0) < 6e4 else np.float32
            with atomic_path(tmp / fmt.audio_feature_file(kind), suffix=".npy") as p:
                np.save(p, part.astype(dtype))
            feat_meta[kind] = {"file": fmt.audio_feature_file(kind), "shape": list(part.shape), "from": "imported"}
        if wav is None and not feat_meta:
            raise DatasetError(f"{src} has no usable audio: no waveform and no feature file fits the frames")
        if wav is not None:
            from talkgs.audio import extract

            for kind in cfg.audio_features:
                if kind in feat_meta:
                    continue
                arr = extract(kind, clip, n)
                with atomic_path(tmp / fmt.audio_feature_file(kind), suffix=".npy") as p:
                    np.save(p, arr.astype(np.float16))
                feat_meta[kind] = {"file": fmt.audio_feature_file(kind), "shape": list(arr.shape)}
        timings["audio"] = round(time.perf_counter() - t0, 3)

        # ---- cameras
        t0 = time.perf_counter()
        cx = tr["cx"] if tr["cx"] is not None else w0 / 2.0
        cy = tr["cy"] if tr["cy"] is not None else h0 / 2.0
        if tr["cx"] is None or tr["cy"] is None:
            notes.append("transforms lack cx/cy; principal point at the image centre")
        K = conventions.intrinsics(tr["focal"], tr["focal"], cx + tg.PIXEL_OFFSET, cy + tg.PIXEL_OFFSET)
        canonical = _canonical_478()
        lms = np.stack(lms_all) + tg.PIXEL_OFFSET if have_lms and lms_all else None
        w2c_tg = tg.tg_to_w2c(tr["c2w_gl"])
        align = cfg.align
        rms = None
        if align == "auto":
            align = "marker" if tr["marker"] else ("landmarks" if lms is not None else "centroid")
        if align == "marker":
            if not tr["marker"] or "tg_from_world" not in tr["marker"]:
                raise DatasetError(f"{src}: --align marker, but the transforms carry no '{tg.MARKER_KEY}' record")
            M = np.asarray(tr["marker"]["tg_from_world"], np.float64)
        elif align == "none":
            M = np.eye(4)
        elif align == "centroid":
            M = tg.centroid_alignment(canonical[:468])
        elif align == "landmarks":
            if lms is None:
                raise DatasetError(f"{src}: --align landmarks needs ori_imgs/<i>.lms for every frame")
            sel = np.unique(np.linspace(0, n - 1, min(n, 200)).round().astype(int))
            M, rms = tg.fit_landmark_alignment(
                w2c_tg[sel],
                K,
                lms[sel][:, list(tg.FAN_RIGID)],
                canonical[[tg.FAN68_TO_MEDIAPIPE[j] for j in tg.FAN_RIGID]],
                init=tg.centroid_alignment(canonical[:468]),
            )
            notes.append(f"world aligned to the canonical face from the .lms landmarks (RMS {rms:.2f} px)")
        else:
            raise DatasetError(f"unknown alignment {align!r} (auto, landmarks, centroid, marker, none)")
        if align == "centroid":
            notes.append("world aligned by the face-mesh centroid only (no .lms): expect ~1-2 cm offsets")
        w2c = tg.tg_to_w2c(tr["c2w_gl"], M)
        timings["cameras"] = round(time.perf_counter() - t0, 3)

        # ---- tracks
        uv, z = conventions.project(canonical[None], w2c, K[None])
        box, has_face, mouth_h, face_h = _label_boxes(labels)
        from talkgs.landmarks import FACE_OVAL_IDX, LIPS_OUTER_IDX
        from talkgs.prepare.signals import square_box

        oval = uv[:, list(FACE_OVAL_IDX)]
        proj_box = np.clip(np.concatenate([oval.min(1), oval.max(1)], -1), 0.0, [width, height, width, height])
        face_box = np.where(has_face[:, None], box, proj_box)
        au = _read_au(src / tg.AU_CSV, ids, notes) if (src / tg.AU_CSV).is_file() else None
        if not (src / tg.AU_CSV).is_file():
            missing.append(f"{tg.AU_CSV} (blink from the .lms eye ratios, else 0)")
        au45 = None
        if au is not None and "AU45_r" in au[1]:
            au45 = au[0][:, au[1].index("AU45_r")].astype(np.float64)
        if lms is not None:
            sig = _fan_signals(lms, width, height)
            mouth_gap, mouth_open, eye_ratio = sig["mouth_gap_px"], sig["mouth_open"], sig["eye_ratio"]
            lips_box = sig["lips_box"]
            fan_idx = [tg.FAN68_TO_MEDIAPIPE[j] for j in tg.FAN_RIGID]
            reproj = np.linalg.norm(uv[:, fan_idx] - lms[:, list(tg.FAN_RIGID)], axis=-1).mean(-1)
        else:
            mouth_gap = mouth_h
            mouth_open = mouth_h / np.maximum(face_h, 1.0)
            if au45 is not None:
                eye_ratio = np.repeat((EAR_OPEN * (1.0 - 0.6 * np.clip(au45, 0, 2) / 2.0))[:, None], 2, 1)
            else:
                eye_ratio = np.full((n, 2), EAR_OPEN)
            lips_box = square_box(uv[:, list(LIPS_OUTER_IDX)], width, height)
            reproj = np.full(n, np.nan)
            notes.append("no .lms: mouth opening from the mouth-interior labels, lips box from the projected canonical face")
        if au45 is not None:
            blink = np.clip(au45, 0.0, 2.0) / 2.0  # the original's blink
        elif lms is not None:
            from talkgs.prepare.signals import blink_from_ear

            blink = blink_from_ear(eye_ratio)
        else:
            blink = np.zeros(n)
            notes.append("no AU45 and no .lms: blink is 0 for every frame")
        depth = z - z.mean(-1, keepdims=True)
        tracks = {
            "landmarks": uv.astype(np.float32),
            "landmarks_z": (depth * K[0, 0]).astype(np.float32),
            "landmark_interpolated": np.ones((n,), bool),
            "w2c": w2c.astype(np.float32),
            "w2c_raw": w2c.astype(np.float32),
            "reproj_error_px": reproj.astype(np.float32),
            "mouth_open": np.asarray(mouth_open, np.float32),
            "mouth_gap_px": np.asarray(mouth_gap, np.float32),
            "eye_ratio": np.asarray(eye_ratio, np.float32),
            "blink": np.asarray(blink, np.float32),
            "lips_box": np.asarray(lips_box, np.float32),
            "face_box": face_box.astype(np.float32),
            "shot": np.zeros(n, np.int32),
        }
        if lms is not None:
            tracks["landmarks_fan68"] = lms.astype(np.float32)
        if au is not None:
            tracks["au"] = au[0]
        missing_keys = [k for k in fmt.TRACK_KEYS if k not in tracks]
        if missing_keys:
            raise DatasetError(f"internal: imported tracks lack {missing_keys}")
        with atomic_path(tmp / fmt.TRACKS, suffix=".npz") as p:
            np.savez_compressed(p, **tracks)

        # ---- meta.json
        h = hashlib.sha256()
        for name in (tg.TRANSFORMS_TRAIN, tg.TRANSFORMS_VAL):
            if (src / name).is_file():
                h.update((src / name).read_bytes())
        split = _split(tr, n, notes)
        timings["total"] = round(time.perf_counter() - t_start, 3)
        meta = {
            "format_version": fmt.FORMAT_VERSION,
            "fps": conventions.FPS,
            "n_frames": n,
            "width": width,
            "height": height,
            "intrinsics": {"fx": float(K[0, 0]), "fy": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2])},
            "focal_uncertainty_px": None,
            "principal_point": "the original's cx/cy (pixel indices) + 0.5: talkgs pixel coordinates (centres at +0.5)",
            "world_frame": "MediaPipe canonical face, metres, +x image-right, +y up, +z towards the viewer",
            "split": split,
            "shots": [[0, n]],
            "source": {
                "path": str(src.resolve()),
                "sha256": h.hexdigest(),
                "fps": conventions.FPS,
                "duration_s": n / conventions.FPS,
                "resampled": False,
                "video_stream_copied": False,
                "kind": "talkinggaussian",
            },
            "audio": {"sample_rate": conventions.SAMPLE_RATE, "features": feat_meta, "waveform": wav is not None},
            "labels": {str(k): v for k, v in fmt.LABEL_NAMES.items()},
            "background": {"inpainted_fraction": inpainted},
            "quality": {
                "face_detected_fraction": float(has_face.mean()),
                "reproj_error_px_mean": None if lms is None else float(np.mean(reproj)),
                "reproj_error_raw_px_mean": None if lms is None else float(np.mean(reproj)),
            },
            "tg_import": {
                "img_id_offset": a,
                "frames_from": sorted({p.parent.name for p in image_paths}),
                "tg_from_world": M.tolist(),
                "alignment": align,
                "alignment_rms_px": rms,
                "au_columns": au[1] if au is not None else [],
                "landmarks": "canonical face projected through each camera (not measured)",
                "missing": missing,
                "notes": notes,
            },
            "tools": {"talkgs": __version__, "python": platform.python_version(), "numpy": np.__version__},
            "timings_s": timings,
        }
        write_json(tmp / fmt.META, meta)
        # Only an earlier dataset's own files are replaced; meta.json goes last.
        replace = validate.output_dir(out, inputs=[(src, "source folder")], force=cfg.force, kind="dataset", command="import-tg")
        move_into(tmp, out, replace=replace or [], last=fmt.META)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    say(f"dataset written to {out} ({n} frames, {time.perf_counter() - t_start:.1f} s)")
    return ImportResult(path=out, n_frames=n, missing=missing, notes=notes, alignment=align)

