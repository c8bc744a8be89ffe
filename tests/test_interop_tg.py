"""`talkgs import-tg` / `export-tg`: the TalkingGaussian / ER-NeRF data layout.

A small folder in the original's layout is drawn here: the canonical face placed in the
original's world by a known similarity, 16 cameras with head sway (OpenGL c2w), parsing maps
drawn from the projected face, teeth masks, .lms landmarks, an OpenFace-style au.csv, audio and
feature files. The tests import it and check cameras (pixel-exact projections), labels, signals,
the export -> import round trip, and how missing parts are reported.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from talkgs import conventions
from talkgs.cli import main
from talkgs.commands.export_tg import ExportTGConfig
from talkgs.commands.import_tg import ImportTGConfig
from talkgs.data import format as fmt
from talkgs.data import load_dataset
from talkgs.errors import DatasetError, OutputError
from talkgs.interop import tg_layout as tg
from talkgs.interop.export_tg import export_tg
from talkgs.interop.import_tg import _canonical_478, import_tg
from talkgs.media import read_frames, read_wav, write_wav
from talkgs.landmarks import FACE_OVAL_IDX, LIPS_INNER_IDX

N, W, H, FOCAL = 16, 128, 128, 300.0
N_TRAIN = 14
GAPS = np.linspace(0.0, 6.0, N)  # px the lower inner lip is pushed down per frame
AU45 = np.array([0.0, 0.2, 2.5, 1.0] * 4)  # 2.5 is clipped to 2 by the original
HAIR_COLOUR, FACE_COLOUR, MOUTH_COLOUR, TORSO_COLOUR = (40, 30, 20), (220, 170, 140), (90, 10, 20), (30, 60, 160)


def _rot(axis: int, deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    i, j = [k for k in range(3) if k != axis]
    R = np.eye(3)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


def _true_alignment() -> np.ndarray:
    """tg_from_world of the synthetic data: scale 1.04, a 3 degree pitch, the centroid shift + 4 mm."""
    M = np.eye(4)
    M[:3, :3] = 1.04 * _rot(0, 3.0)
    M[:3, 3] = -_canonical_478()[:468].mean(0) + np.array([0.004, -0.003, 0.0])
    return M


def _cameras() -> np.ndarray:
    """OpenGL c2w [N, 4, 4]: about 0.55 m in front of the face, swaying a few degrees / cm."""
    rng = np.random.default_rng(1)
    c2w = np.zeros((N, 4, 4))
    for i in range(N):
        R = _rot(1, rng.uniform(-6, 6)) @ _rot(0, rng.uniform(-4, 4)) @ _rot(2, rng.uniform(-3, 3))
        c2w[i, :3, :3] = R
        c2w[i, :3, 3] = R @ np.array([0.0, 0.0, 0.55]) + rng.uniform(-0.02, 0.02, 3)
        c2w[i, 3, 3] = 1.0
    return c2w


def _tg_project(points_tg: np.ndarray, c2w_gl: np.ndarray, cx: float, cy: float) -> np.ndarray:
    """The original's pixel indices of world points [P, 3] for every camera: [N, P, 2]."""
    c2w_cv = c2w_gl @ np.diag([1.0, -1.0, -1.0, 1.0])
    w2c = np.linalg.inv(c2w_cv)
    pc = points_tg @ np.swapaxes(w2c[:, :3, :3], 1, 2) + w2c[:, None, :3, 3]
    return np.stack([FOCAL * pc[..., 0] / pc[..., 2] + cx, FOCAL * pc[..., 1] / pc[..., 2] + cy], -1)


def _poly(uv_idx: np.ndarray) -> np.ndarray:
    return np.round(uv_idx * 16).astype(np.int32)[None]


def _build(root: Path) -> dict:
    """Write the synthetic folder; return what the tests compare against."""
    rng = np.random.default_rng(0)
    M = _true_alignment()
    canon = _canonical_478()
    face_tg = canon @ M[:3, :3].T + M[:3, 3]
    c2w = _cameras()
    cx, cy = W / 2, H / 2
    uv = _tg_project(face_tg, c2w, cx, cy)  # [N, 478, 2] pixel indices
    for d in (tg.ORI_IMGS, tg.PARSING, tg.TEETH_MASK, tg.GT_IMGS, tg.TORSO_IMGS):
        (root / d).mkdir(parents=True)
    bc = np.full((H, W, 3), (200, 210, 190), np.uint8)
    bc[:, : W // 2] = (180, 200, 215)
    cv2.imwrite(str(root / tg.BACKGROUND), bc[..., ::-1])
    labels = np.zeros((N, H, W), np.uint8)
    lms_all = np.zeros((N, 68, 2))
    for i in range(N):
        pts = uv[i].copy()
        pts[list(LIPS_INNER_IDX[11:]), 1] += GAPS[i]  # the lower inner lip (not the corners) drops
        lms = pts[list(tg.FAN68_TO_MEDIAPIPE)]
        lms_all[i] = lms
        parsing = np.full((H, W, 3), 255, np.uint8)
        cv2.rectangle(parsing, (0, H - 22), (W - 1, H - 1), tg.RED, -1)
        cv2.rectangle(parsing, (W // 2 - 12, H - 34), (W // 2 + 12, H - 23), tg.GREEN, -1)
        oval = pts[list(FACE_OVAL_IDX)]
        hair = oval.copy()
        hair[:, 1] -= 8  # a band above the face
        cv2.fillPoly(parsing, _poly(hair), tg.BLACK, shift=4)
        cv2.fillPoly(parsing, _poly(oval), tg.BLUE, shift=4)
        if GAPS[i] > 1.0:
            cv2.fillPoly(parsing, _poly(pts[list(LIPS_INNER_IDX)]), tg.GRAY, shift=4)
        teeth = np.zeros((H, W), bool)
        c = pts[[13, 14]].mean(0).round().astype(int)
        teeth[c[1] - 1 : c[1] + 1, c[0] - 3 : c[0] + 3] = GAPS[i] > 2.0  # inside the mouth
        teeth[2, 2] = True  # a stray teeth pixel on the background: the original counts it as mouth
        lab = tg.labels_from_parsing(parsing)
        lab[teeth] = fmt.LABEL_MOUTH
        labels[i] = lab
        colours = {0: None, 1: TORSO_COLOUR, 2: HAIR_COLOUR, 3: FACE_COLOUR, 4: MOUTH_COLOUR}
        img = bc.copy()
        for k, col in colours.items():
            if col is not None:
                img[lab == k] = col
        img = np.clip(img.astype(np.int16) + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(root / tg.ORI_IMGS / f"{i}.jpg"), img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 98])
        cv2.imwrite(str(root / tg.GT_IMGS / f"{i}.jpg"), img[..., ::-1])
        cv2.imwrite(str(root / tg.PARSING / f"{i}.png"), parsing[..., ::-1])
        np.save(root / tg.TEETH_MASK / f"{i}.npy", teeth)
        (root / tg.ORI_IMGS / f"{i}.lms").write_text(tg.format_lms(lms))
    for name, ids in ((tg.TRANSFORMS_TRAIN, range(N_TRAIN)), (tg.TRANSFORMS_VAL, range(N_TRAIN, N))):
        doc = {
            "focal_len": FOCAL,
            "cx": cx,
            "cy": cy,
            "frames": [{"img_id": i, "aud_id": i, "transform_matrix": c2w[i].tolist()} for i in ids],
        }
        (root / name).write_text(json.dumps(doc))
    cols = ["AU01_r", "AU02_r", "AU04_r", "AU05_r", "AU06_r", "AU07_r", "AU25_r", "AU45_r", "AU45_c"]
    au = rng.uniform(0, 3, (N, len(cols))).round(2)
    au[:, cols.index("AU45_r")] = AU45
    lines = [", ".join(["frame", "face_id", "timestamp", "confidence", "success"] + cols)]
    for i in range(N):
        lines.append(", ".join([str(i + 1), "0", f"{i * 0.04:.3f}", "0.98", "1"] + [f"{v:.2f}" for v in au[i]]))
    (root / tg.AU_CSV).write_text("\n".join(lines) + "\n")
    t = np.arange(N * 640) / 16000.0
    write_wav(root / tg.AUDIO_WAV, (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t)).astype(np.float32), 16000)
    ds = rng.normal(size=(N, 16, 29)).astype(np.float32)
    np.save(root / "aud_ds.npy", ds)
    np.save(root / "aud_hu.npy", rng.normal(size=(N + 1, 2, 1024)).astype(np.float32))
    return {"M": M, "c2w": c2w, "labels": labels, "lms": lms_all, "au": au, "au_cols": cols, "ds": ds}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("tg") / "May"
    truth = _build(root)
    return root, truth


@pytest.fixture(scope="module")
def imported(synthetic, tmp_path_factory):
    src, truth = synthetic
    out = tmp_path_factory.mktemp("imported") / "ds"
    res = import_tg(ImportTGConfig(source=src, output=out, progress=False))
    return out, res


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


# ----------------------------------------------------------------------------------- cameras


def test_imported_cameras_project_points_to_the_same_pixels(synthetic, imported):
    src, truth = synthetic
    out, res = imported
    meta = fmt.read_meta(out)
    assert res.alignment == "landmarks"
    M = np.asarray(meta["tg_import"]["tg_from_world"])
    with np.load(out / fmt.TRACKS) as z:
        w2c = z["w2c"].astype(np.float64)
    ix = meta["intrinsics"]
    K = conventions.intrinsics(ix["fx"], ix["fy"], ix["cx"], ix["cy"])
    assert ix["fx"] == ix["fy"] == FOCAL and ix["cx"] == W / 2 + 0.5 and ix["cy"] == H / 2 + 0.5
    rng = np.random.default_rng(5)
    pts_tg = rng.uniform(-0.12, 0.12, (50, 3))  # anywhere around the head, in the original's world
    want = _tg_project(pts_tg, truth["c2w"], W / 2, H / 2)
    Minv = np.linalg.inv(M)
    pts = pts_tg @ Minv[:3, :3].T + Minv[:3, 3]
    uv, z = conventions.project(pts[None], w2c, K[None])
    assert np.all(z > 0)
    np.testing.assert_allclose(uv - 0.5, want, atol=1e-4, rtol=0)
    # w2c is a rigid OpenCV camera (rotation orthonormal, det +1).
    R = w2c[:, :3, :3]
    np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape), atol=1e-6)
    assert np.allclose(np.linalg.det(R), 1.0, atol=1e-6)


def test_landmark_alignment_puts_the_canonical_face_where_the_lms_are(synthetic, imported):
    src, truth = synthetic
    out, _ = imported
    meta = fmt.read_meta(out)
    with np.load(out / fmt.TRACKS) as z:
        lm = z["landmarks"].astype(np.float64)
        fan = z["landmarks_fan68"].astype(np.float64)
    rigid = list(tg.FAN_RIGID)
    mp = [tg.FAN68_TO_MEDIAPIPE[j] for j in rigid]
    # The projected canonical face lands on the rigid .lms points (talkgs px = index + 0.5).
    np.testing.assert_allclose(fan, truth["lms"] + 0.5, atol=1e-3)
    err = np.linalg.norm(lm[:, mp] - fan[:, rigid], axis=-1)
    assert err.max() < 0.05, err.max()
    assert meta["tg_import"]["alignment_rms_px"] < 0.05
    # ... and so the world really is the canonical face's: the fitted similarity is the true one.
    M, Mt = np.asarray(meta["tg_import"]["tg_from_world"]), truth["M"]
    assert abs(tg.similarity_scale(M) - 1.04) < 0.01
    np.testing.assert_allclose(M[:3, 3], Mt[:3, 3], atol=0.003)
    # The centroid-only alignment is off by the unmodelled scale/offset: a real difference.
    c = tg.centroid_alignment(_canonical_478()[:468])
    assert np.abs(c[:3, 3] - Mt[:3, 3]).max() > 0.003


# ----------------------------------------------------------------------------------- labels, signals, audio


def test_imported_labels_signals_and_audio(synthetic, imported):
    src, truth = synthetic
    out, res = imported
    labels = fmt.load_labels(out / fmt.LABELS)
    assert np.array_equal(labels, truth["labels"])
    assert (labels == fmt.LABEL_MOUTH).any() and (labels == fmt.LABEL_HAIR).any() and (labels == fmt.LABEL_TORSO).any()
    assert labels[0, 2, 2] == fmt.LABEL_MOUTH  # a teeth pixel is mouth whatever its colour
    with np.load(out / fmt.TRACKS) as z:
        t = {k: z[k] for k in z.files}
    assert set(fmt.TRACK_KEYS) <= set(t)
    np.testing.assert_allclose(t["blink"], np.clip(AU45, 0, 2) / 2, atol=1e-6)  # the original's blink
    cols = fmt.read_meta(out)["tg_import"]["au_columns"]
    assert cols == truth["au_cols"]
    np.testing.assert_allclose(t["au"], truth["au"], atol=1e-6)
    # Mouth gap from the inner-lip .lms: the pushed-down lower lip, measured along the face axis
    # (a few degrees of head roll), so it grows with GAPS (the canonical mouth is slightly open:
    # ~3 px here at GAPS 0).
    gap = t["mouth_gap_px"]
    assert 1.0 < gap[0] < 5.0
    np.testing.assert_allclose(gap - gap[0], GAPS - GAPS[0], atol=0.5)
    assert np.corrcoef(t["mouth_open"], GAPS)[0, 1] > 0.95  # / face height (camera distance varies)
    assert np.all((0.01 < t["mouth_open"]) & (t["mouth_open"] < 0.2))
    assert t["eye_ratio"].shape == (N, 2) and np.all(t["eye_ratio"] > 0.05)
    # lips_box: square, >= 32 px, inside the image, around the lips.
    lb = t["lips_box"]
    assert np.allclose(lb[:, 2] - lb[:, 0], lb[:, 3] - lb[:, 1]) and np.all(lb[:, :2] >= 0) and np.all(lb[:, 2:] <= W)
    lips = truth["lms"][:, 48:60] + 0.5
    assert np.all(lips.min(1) >= lb[:, :2]) and np.all(lips.max(1) <= lb[:, 2:])
    # face_box: the face + mouth pixels.
    ys, xs = np.nonzero((labels[0] == fmt.LABEL_FACE) | (labels[0] == fmt.LABEL_MOUTH))
    assert np.allclose(t["face_box"][0], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    # Audio: the wav, the mel features computed from it, both feature files under their kinds.
    wav, sr = read_wav(out / fmt.AUDIO)
    assert sr == 16000 and wav.shape[0] == N * 640
    src_wav, _ = read_wav(src / tg.AUDIO_WAV)
    assert np.abs(wav - src_wav).max() < 2e-4
    meta = fmt.read_meta(out)
    feats = meta["audio"]["features"]
    assert feats["deepspeech"]["shape"] == [N, 16, 29] and feats["hubert"]["shape"] == [N, 2, 1024]
    assert feats["mel"]["shape"][0] == N
    np.testing.assert_allclose(np.load(out / "audio_deepspeech.npy").astype(np.float32), truth["ds"], atol=5e-3)
    assert meta["split"] == {"train": [0, N_TRAIN], "val": [N_TRAIN, N]}
    assert res.missing == []
    # The loader and the trainer's inputs accept it.
    d = load_dataset(out, "cpu", audio_kind="deepspeech", scale=0.5)
    assert d.frames.shape == (N, H // 2, W // 2, 3) and d.audio.shape == (N, 16, 29)
    assert d.train_idx.tolist() == list(range(N_TRAIN))


def test_parsing_colours_off_the_palette_take_the_nearest_class():
    img = np.array([[tg.WHITE, tg.BLUE, tg.GRAY, tg.GREEN, tg.RED, tg.BLACK],
                    [(250, 247, 252), (6, 9, 240), (110, 96, 104), (12, 240, 3), (236, 14, 8), (20, 12, 25)]], np.uint8)
    want = [fmt.LABEL_BACKGROUND, fmt.LABEL_FACE, fmt.LABEL_MOUTH, fmt.LABEL_TORSO, fmt.LABEL_TORSO, fmt.LABEL_HAIR]
    labels = tg.labels_from_parsing(img)
    assert labels.tolist() == [want, want]
    teeth = np.zeros((2, 6), bool)
    teeth[1, 0] = True
    assert tg.labels_from_parsing(img, teeth)[1, 0] == fmt.LABEL_MOUTH


def test_camera_conversion_inverts_for_any_similarity():
    rng = np.random.default_rng(3)
    c2w = _cameras()
    M = np.eye(4)
    M[:3, :3] = 0.9 * _rot(1, 20.0) @ _rot(2, -7.0)
    M[:3, 3] = rng.normal(size=3) * 0.05
    w2c = tg.tg_to_w2c(c2w, M)
    np.testing.assert_allclose(tg.w2c_to_tg(w2c, M), c2w, atol=1e-12)
    # Without a world change it is exactly the original loader's flip of columns 1-2 and inverse.
    flipped = c2w.copy()
    flipped[:, :3, 1:3] *= -1
    np.testing.assert_allclose(tg.tg_to_w2c(c2w), np.linalg.inv(flipped), atol=1e-12)


# ----------------------------------------------------------------------------------- round trip


def test_export_then_import_round_trips(synthetic, imported, tmp_path):
    out, _ = imported
    exp = tmp_path / "exported"
    mask = os.umask(0o027)
    try:
        res = export_tg(ExportTGConfig(dataset=out, output=exp, progress=False))
    finally:
        os.umask(mask)
    assert stat.S_IMODE(exp.stat().st_mode) == 0o750  # the umask's mode, as mkdir gives
    for name in (tg.TRANSFORMS_TRAIN, tg.TRANSFORMS_VAL, tg.BACKGROUND, tg.AU_CSV, tg.AUDIO_WAV, "aud_ds.npy",
                 "aud.npy", "aud_hu.npy", tg.ORI_IMGS, tg.GT_IMGS, tg.PARSING, tg.TORSO_IMGS, tg.TEETH_MASK):
        assert (exp / name).exists(), name
    assert res.n_frames == N
    header = (exp / tg.AU_CSV).read_text().splitlines()[0].split(",")
    for col in tg.TG_AU_COLUMNS:
        assert " " + col in header  # OpenFace's leading space, as the original indexes it
    tr = json.loads((exp / tg.TRANSFORMS_TRAIN).read_text())
    assert tr["focal_len"] == FOCAL and tr["cx"] == W / 2 and [f["img_id"] for f in tr["frames"]] == list(range(N_TRAIN))
    # The mouth interior is blue + teeth: the original's face = blue XOR teeth, mouth = gray OR teeth.
    lab0 = fmt.load_labels(out / fmt.LABELS)
    for i in range(N):
        p = cv2.imread(str(exp / tg.PARSING / f"{i}.png"))[..., ::-1]
        teeth = np.load(exp / tg.TEETH_MASK / f"{i}.npy")
        blue = (p[..., 2] > 254) & (p[..., 0] == 0) & (p[..., 1] == 0)
        assert np.array_equal(blue ^ teeth, lab0[i] == fmt.LABEL_FACE)
        assert np.array_equal(((p == 100).all(-1)) | teeth, lab0[i] == fmt.LABEL_MOUTH)

    back = tmp_path / "back"
    mask = os.umask(0o002)
    try:
        res2 = import_tg(ImportTGConfig(source=exp, output=back, progress=False))
    finally:
        os.umask(mask)
    assert stat.S_IMODE(back.stat().st_mode) == 0o775
    assert res2.alignment == "marker"
    with np.load(out / fmt.TRACKS) as a, np.load(back / fmt.TRACKS) as b:
        np.testing.assert_allclose(b["w2c"], a["w2c"], atol=1e-5, rtol=0)
        np.testing.assert_allclose(b["blink"], a["blink"], atol=1e-4)
        np.testing.assert_allclose(b["au"], a["au"], atol=1e-4)
        np.testing.assert_allclose(b["landmarks_fan68"], a["landmarks_fan68"], atol=1e-3)
    m1, m2 = fmt.read_meta(out), fmt.read_meta(back)
    assert m1["intrinsics"] == m2["intrinsics"] and m1["split"] == m2["split"]
    assert np.array_equal(fmt.load_labels(back / fmt.LABELS), lab0)
    f1, f2 = read_frames(out / fmt.FRAMES).astype(float), read_frames(back / fmt.FRAMES).astype(float)
    assert f1.shape == f2.shape
    # JPEG q95 + another H.264 crf 12 generation on frames with +-6 levels of pixel noise
    # (measured: 2.1 levels mean, 39 dB).
    assert np.abs(f1 - f2).mean() < 3.0
    assert 10 * np.log10(255**2 / ((f1 - f2) ** 2).mean()) > 36
    np.testing.assert_allclose(np.load(back / "audio_hubert.npy"), np.load(out / "audio_hubert.npy"), atol=2e-3)


# ----------------------------------------------------------------------------------- missing parts


@pytest.mark.parametrize(
    "remove, message",
    [
        ([tg.TRANSFORMS_TRAIN], "no transforms_train.json"),
        ([tg.PARSING + "/3.png"], "no parsing/3.png"),
        ([tg.ORI_IMGS + "/5.jpg", tg.GT_IMGS + "/5.jpg"], "neither ori_imgs/5.jpg nor gt_imgs/5.jpg"),
        ([tg.AUDIO_WAV, "aud_ds.npy", "aud_hu.npy"], "has no audio"),
    ],
)
def test_missing_essential_part_is_a_one_line_error(synthetic, tmp_path, capsys, remove, message):
    src = _copy(synthetic[0], tmp_path)
    for r in remove:
        p = src / r
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    out = tmp_path / "ds"
    rc = main(["import-tg", str(src), "-o", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("talkgs: ") and "\n" not in err and message in err, err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".ds.")]


def test_cli_exit_status_for_a_folder_that_is_not_the_original_layout(tmp_path):
    (tmp_path / "empty").mkdir()
    r = subprocess.run(
        [sys.executable, "-m", "talkgs", "import-tg", str(tmp_path / "empty"), "-o", str(tmp_path / "ds")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert r.stderr.strip().startswith("talkgs: ") and len(r.stderr.strip().splitlines()) == 1


def test_import_works_without_mediapipe(synthetic, tmp_path):
    code = (
        "import sys; sys.modules['mediapipe'] = None\n"  # any `import mediapipe` now raises
        "from talkgs.cli import main\n"
        f"sys.exit(main(['import-tg', {str(synthetic[0])!r}, '-o', {str(tmp_path / 'ds')!r}, '--no-progress']))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert fmt.read_meta(tmp_path / "ds")["n_frames"] == N


def test_missing_optional_parts_are_reported_and_import_succeeds(synthetic, tmp_path, capsys):
    src = _copy(synthetic[0], tmp_path)
    for name in (tg.AU_CSV, tg.BACKGROUND, "aud_hu.npy", "aud_ds.npy", tg.TRANSFORMS_VAL):
        (src / name).unlink()
    shutil.rmtree(src / tg.TEETH_MASK)
    for p in (src / tg.ORI_IMGS).glob("*.lms"):
        p.unlink()
    out = tmp_path / "ds"
    rc = main(["import-tg", str(src), "-o", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0
    meta = fmt.read_meta(out)
    missing = meta["tg_import"]["missing"]
    for part in (tg.AU_CSV, tg.BACKGROUND, "audio feature files", tg.TRANSFORMS_VAL, tg.TEETH_MASK, ".lms"):
        assert any(part in m for m in missing), (part, missing)
        assert part in printed
    assert meta["tg_import"]["alignment"] == "centroid"
    labels = fmt.load_labels(out / fmt.LABELS)
    truth = synthetic[1]["labels"]
    # Without teeth masks only the parsing gray is mouth.
    assert labels[0, 2, 2] == fmt.LABEL_BACKGROUND and (labels == fmt.LABEL_MOUTH).sum() < (truth == fmt.LABEL_MOUTH).sum()
    # Only the frames of transforms_train.json exist now; the split is the default 1/11.
    assert meta["n_frames"] == N_TRAIN and meta["split"]["val"] == [N_TRAIN - 1, N_TRAIN]
    assert (out / fmt.BACKGROUND).is_file() and meta["background"]["inpainted_fraction"] >= 0
    with np.load(out / fmt.TRACKS) as z:
        # mouth opening from the mouth-interior labels: zero where no gray was drawn, growing after
        gap, g = z["mouth_gap_px"], GAPS[:N_TRAIN]
        assert np.all(gap[g <= 1.0] == 0) and gap[-1] > gap[g > 1.0][0]
        assert np.all(z["blink"] == 0)
    d = load_dataset(out, "cpu", audio_kind="mel")
    assert d.audio.shape[0] == N_TRAIN


def test_features_without_a_waveform_import_with_silent_audio(synthetic, tmp_path):
    src = _copy(synthetic[0], tmp_path)
    (src / tg.AUDIO_WAV).unlink()
    res = import_tg(ImportTGConfig(source=src, output=tmp_path / "ds", progress=False))
    meta = fmt.read_meta(res.path)
    assert sorted(meta["audio"]["features"]) == ["deepspeech", "hubert"] and not meta["audio"]["waveform"]
    assert any("silence" in n for n in res.notes)
    wav, _ = read_wav(res.path / fmt.AUDIO)
    assert wav.shape[0] == N * 640 and np.all(wav == 0)
    with pytest.raises(DatasetError, match="no 'mel' audio features"):
        load_dataset(res.path, "cpu", audio_kind="mel")


def test_existing_output_is_kept_without_force(imported, synthetic):
    out, _ = imported
    before = (out / fmt.META).read_bytes()
    with pytest.raises(OutputError, match="--force"):
        import_tg(ImportTGConfig(source=synthetic[0], output=out, progress=False))
    assert (out / fmt.META).read_bytes() == before


# ----------------------------------------------------------------------------------- the anchor clip

ANCHOR_RANGE = (1500, 1779)  # the last shot; its end is the val split


@pytest.mark.slow
def test_anchor_round_trips_and_trains(anchor_dataset, tmp_path):
    from talkgs.train.config import TrainConfig
    from talkgs.train.trainer import train

    exp = tmp_path / "tg"
    export_tg(ExportTGConfig(dataset=anchor_dataset, output=exp, frame_range=ANCHOR_RANGE, progress=False))
    back = tmp_path / "back"
    res = import_tg(ImportTGConfig(source=exp, output=back, progress=False))
    assert res.alignment == "marker"
    lo, hi = ANCHOR_RANGE
    with np.load(anchor_dataset / fmt.TRACKS) as a, np.load(back / fmt.TRACKS) as b:
        np.testing.assert_allclose(b["w2c"], a["w2c"][lo:hi], atol=1e-5, rtol=0)
    assert np.array_equal(fmt.load_labels(back / fmt.LABELS), fmt.load_labels(anchor_dataset / fmt.LABELS, lo, hi))
    m0, m1 = fmt.read_meta(anchor_dataset), fmt.read_meta(back)
    assert m0["intrinsics"] == m1["intrinsics"]
    # The .lms written from our MediaPipe landmarks (FAN-68 correspondence) lead the landmark
    # alignment back to our own world: measured 3 deg, 4 mm, 2 % from it (13 rigid FAN points
    # against the ~70 rigid points of our pose fit), RMS 2 px.
    fr = sum((json.loads((exp / n).read_text())["frames"] for n in (tg.TRANSFORMS_TRAIN, tg.TRANSFORMS_VAL)), [])
    doc = json.loads((exp / tg.TRANSFORMS_TRAIN).read_text())
    K = conventions.intrinsics(doc["focal_len"], doc["focal_len"], doc["cx"] + 0.5, doc["cy"] + 0.5)
    lms = np.stack([tg.read_lms(exp / tg.ORI_IMGS / f"{f['img_id']}.lms") for f in fr]) + 0.5
    canon = _canonical_478()
    M, rms = tg.fit_landmark_alignment(
        tg.tg_to_w2c(np.array([f["transform_matrix"] for f in fr])), K, lms[:, list(tg.FAN_RIGID)],
        canon[[tg.FAN68_TO_MEDIAPIPE[j] for j in tg.FAN_RIGID]], init=tg.centroid_alignment(canon[:468]),
    )
    Me = np.asarray(doc[tg.MARKER_KEY]["tg_from_world"])
    s = tg.similarity_scale(M)
    angle = np.degrees(np.arccos(np.clip((np.trace(M[:3, :3] @ Me[:3, :3].T) / s - 1) / 2, -1, 1)))
    assert rms < 3.0 and abs(s - 1) < 0.05 and angle < 6.0 and np.abs(M[:3, 3] - Me[:3, 3]).max() < 0.01, (rms, s, angle)
    assert m1["split"] == {"train": [0, m0["split"]["train"][1] - lo], "val": [m0["split"]["val"][0] - lo, hi - lo]}
    cfg = TrainConfig.from_preset(
        "quick",
        dataset=back,
        output=tmp_path / "run",
        schedule_scale=0.1,
        image_scale=0.125,
        batch_size=2,
        device="cpu",
        progress=False,
        tensorboard=False,
    )
    ckpt = train(cfg)
    assert Path(ckpt).is_file()
