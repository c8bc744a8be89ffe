"""`talkgs export-tg`: a talkgs dataset -> the TalkingGaussian / ER-NeRF data layout.

Writes what the original's training scripts read (``data/<ID>/`` of the design notes):
transforms_train/val.json, ori_imgs/<i>.jpg + .lms, gt_imgs/<i>.jpg, parsing/<i>.png,
torso_imgs/<i>.png, teeth_mask/<i>.npy, bc.jpg, au.csv, aud.wav and the feature files of
the kinds the dataset holds. README "Interoperating with TalkingGaussian data" maps every
field. Frame ids start at 0 (the first exported frame).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from talkgs import conventions
from talkgs.data import format as fmt
from talkgs.errors import DatasetError
from talkgs.fsutil import atomic_path, move_into, partial_dir
from talkgs.interop import tg_layout as tg


@dataclasses.dataclass
class ExportResult:
    path: Path
    n_frames: int
    written: list[str]
    notes: list[str]


def _au_table(tracks: dict, meta: dict, lo: int, hi: int) -> tuple[list[str], np.ndarray, str]:
    """AU column names (no leading space) and values ``[n, K]`` for frames [lo, hi)."""
    imported = meta.get("tg_import", {}).get("au_columns") or []
    if "au" in tracks and imported and tracks["au"].shape[1] == len(imported):
        names = list(imported)
        vals = [tracks["au"][lo:hi, j].astype(np.float64) for j in range(len(names))]
        source = "the imported au.csv"
    else:
        names, vals = [], []
        source = "our signals (AU45 = 2 x blink, AU25 from mouth_open, other AUs 0)"
    derived = {
        "AU45_r": 2.0 * np.clip(tracks["blink"][lo:hi].astype(np.float64), 0.0, 1.0),
        "AU25_r": np.clip(tg.AU25_PER_MOUTH_OPEN * tracks["mouth_open"][lo:hi].astype(np.float64), 0.0, 5.0),
    }
    for col in tg.TG_AU_COLUMNS:
        if col not in names:
            names.append(col)
            vals.append(derived.get(col, np.zeros(hi - lo)))
    return names, np.stack(vals, -1), source


def _write_au_csv(path: Path, names: list[str], values: np.ndarray) -> None:
    """OpenFace-style CSV: ", "-separated, so every column name after the first has a leading space."""
    head = ["frame", "face_id", "timestamp", "confidence", "success"] + names
    lines = [", ".join(head)]
    for i, row in enumerate(values):
        cells = [str(i + 1), "0", f"{i / conventions.FPS:.3f}", "0.98", "1"] + [f"{v:.4f}" for v in row]
        lines.append(", ".join(cells))
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def export_tg(cfg) -> ExportResult:
    """Write the dataset ``cfg.dataset`` in the original's layout at ``cfg.output``."""
    import cv2

    from talkgs.interop.import_tg import _canonical_478
    from talkgs.media import iter_frames, read_wav, write_wav

    from talkgs import validate

    t_start = time.perf_counter()
    root, out = Path(cfg.dataset), Path(cfg.output)
    meta = fmt.read_meta(root)
    n_all = int(meta["n_frames"])
    lo, hi = cfg.frame_range if cfg.frame_range is not None else (0, n_all)
    if not (0 <= lo < hi <= n_all):
        raise DatasetError(f"frame range {lo}:{hi} is outside the dataset's {n_all} frames")
    n = hi - lo
    width, height = int(meta["width"]), int(meta["height"])
    intr = meta["intrinsics"]
    fx, fy, cx, cy = (float(intr[k]) for k in ("fx", "fy", "cx", "cy"))
    if abs(fx - fy) > 1e-6 * fx:
        raise DatasetError(f"{root} has fx {fx} != fy {fy}; the original's cameras have a single focal length")
    notes: list[str] = []
    if abs(cx - width / 2) > 0.01 or abs(cy - height / 2) > 0.01:
        notes.append(
            f"principal point ({cx:.2f}, {cy:.2f}) is not the image centre; the original's renderer ignores cx/cy"
        )
    tracks = fmt.load_tracks(root)
    labels = fmt.load_labels(root / fmt.LABELS, lo, hi)
    plate = fmt.load_plate(root)

    # World: the original's origin is the face centroid; keep the world an import came from.
    imported_M = meta.get("tg_import", {}).get("tg_from_world")
    M = np.asarray(imported_M, np.float64) if imported_M is not None else tg.centroid_alignment(_canonical_478()[:468])
    c2w_gl = tg.w2c_to_tg(tracks["w2c"][lo:hi], M)

    # Landmarks: the imported FAN points when the dataset has them, else our MediaPipe points
    # through the FAN-68 correspondence.
    if "landmarks_fan68" in tracks:
        fan = tracks["landmarks_fan68"][lo:hi].astype(np.float64)
    else:
        fan = tracks["landmarks"][lo:hi][:, list(tg.FAN68_TO_MEDIAPIPE)].astype(np.float64)
        notes.append(".lms are MediaPipe landmarks at the FAN-68 positions (tg_layout.FAN68_TO_MEDIAPIPE), not FAN output")
    fan_idx = fan - tg.PIXEL_OFFSET

    tmp = partial_dir(out)
    try:
        for d in (tg.ORI_IMGS, tg.GT_IMGS, tg.PARSING, tg.TORSO_IMGS, tg.TEETH_MASK):
            (tmp / d).mkdir()
        # 4:4:4: the frames are already chroma-subsampled once (yuv420p); do not do it again.
        q = [int(cv2.IMWRITE_JPEG_QUALITY), int(cfg.jpeg_quality), int(cv2.IMWRITE_JPEG_SAMPLING_FACTOR),
             int(cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444)]

        def write_frame(j: int, frame: np.ndarray) -> None:
            lab = labels[j]
            bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
            ok = cv2.imwrite(str(tmp / tg.ORI_IMGS / f"{j}.jpg"), bgr, q)
            (tmp / tg.ORI_IMGS / f"{j}.lms").write_text(tg.format_lms(fan_idx[j]))
            bg = lab == fmt.LABEL_BACKGROUND
            gt = np.where(bg[..., None], plate, frame)
            ok &= cv2.imwrite(str(tmp / tg.GT_IMGS / f"{j}.jpg"), cv2.cvtColor(gt, cv2.COLOR_RGB2BGR), q)
            parsing, teeth = tg.parsing_from_labels(lab)
            ok &= cv2.imwrite(str(tmp / tg.PARSING / f"{j}.png"), cv2.cvtColor(parsing, cv2.COLOR_RGB2BGR))
            torso = lab == fmt.LABEL_TORSO
            rgba = np.concatenate([np.where(torso[..., None], frame, 0), (torso * 255).astype(np.uint8)[..., None]], -1)
            ok &= cv2.imwrite(str(tmp / tg.TORSO_IMGS / f"{j}.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
            np.save(tmp / tg.TEETH_MASK / f"{j}.npy", teeth)
            if not ok:
                raise DatasetError(f"could not write the images of frame {j} under {tmp}")

        t0 = time.perf_counter()
        j = -1
        with ThreadPoolExecutor(max_workers=2) as pool:
            pending = []
            for j, frame in enumerate(iter_frames(root / fmt.FRAMES, start=lo, stop=hi)):
                if j >= n:
                    break
                frame = frame[:height, :width]
                pending.append(pool.submit(write_frame, j, frame))
                if len(pending) >= 8:
                    pending.pop(0).result()
            for f in pending:
                f.result()
        if j + 1 < n:
            raise DatasetError(f"{root / fmt.FRAMES} decoded to {j + 1} frames in {lo}:{hi}, expected {n}")
        t_frames = time.perf_counter() - t0

        if not cv2.imwrite(str(tmp / tg.BACKGROUND), cv2.cvtColor(plate, cv2.COLOR_RGB2BGR), q):
            raise DatasetError(f"could not write {tmp / tg.BACKGROUND}")

        # transforms: our split intersected with the range, ids re-based to 0
        marker = {"format_version": fmt.FORMAT_VERSION, "tg_from_world": M.tolist(), "dataset": str(root.resolve()),
                  "frame_offset": lo}
        for name, (a, b) in ((tg.TRANSFORMS_TRAIN, meta["split"]["train"]), (tg.TRANSFORMS_VAL, meta["split"]["val"])):
            a, b = max(a, lo), min(b, hi)
            frames = [
                {"img_id": i - lo, "aud_id": i - lo, "transform_matrix": c2w_gl[i - lo].tolist()} for i in range(a, b)
            ]
            doc = {
                "focal_len": fx,
                "cx": cx - tg.PIXEL_OFFSET,
                "cy": cy - tg.PIXEL_OFFSET,
                "frames": frames,
                tg.MARKER_KEY: marker,
            }
            with atomic_path(tmp / name) as p:
                p.write_text(json.dumps(doc, indent=1))

        names, values, au_source = _au_table(tracks, meta, lo, hi)
        _write_au_csv(tmp / tg.AU_CSV, names, values)
        notes.append(f"au.csv from {au_source}")

        wav, sr = read_wav(root / fmt.AUDIO)
        spf = sr // conventions.FPS
        write_wav(tmp / tg.AUDIO_WAV, wav[lo * spf : hi * spf], sr)
        for kind, files in tg.FEATURE_FILES.items():
            p = root / fmt.audio_feature_file(kind)
            if not p.is_file():
                continue
            arr = np.load(p, mmap_mode="r")[lo:hi].astype(np.float32)
            for fname in files:
                with atomic_path(tmp / fname, suffix=".npy") as t:
                    np.save(t, arr)
        kinds = sorted(meta.get("audio", {}).get("features", {}))
        if not any(k in tg.FEATURE_FILES for k in kinds):
            notes.append(
                f"the dataset holds no {'/'.join(tg.FEATURE_FILES)} features (has: {', '.join(kinds) or 'none'}); "
                "run the original's feature extractor on aud.wav"
            )
        # Only what an earlier export-tg wrote is replaced; the marked transforms file goes last.
        replace = validate.output_dir(out, inputs=[(root, "dataset")], force=cfg.force, kind="tg-export", command="export-tg")
        move_into(tmp, out, replace=replace or [], last=tg.TRANSFORMS_TRAIN)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    written = sorted(p.name for p in out.iterdir())
    if cfg.progress:
        print(f"[export-tg] {n} frames written to {out} in {time.perf_counter() - t_start:.1f} s "
              f"(images {t_frames:.1f} s)", flush=True)
    return ExportResult(path=out, n_frames=n, written=written, notes=notes)
