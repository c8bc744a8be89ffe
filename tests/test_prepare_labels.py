"""Label maps, background plate and `talkgs inspect` (talkgs.prepare.labels / background / inspect).

Synthetic inputs: a face made by projecting MediaPipe's canonical face through a known
camera, with a soft elliptical "selfie" mask of head, neck and shoulders; a static textured
background crossed by a moving labelled disk and a moving unlabelled "graphic". Real data:
150 frames (6 s) of the anchor clip spanning open and closed mouths, tracked with
talkgs.prepare.track. A tiny dataset folder is written by this file's own helper to
test inspect independently of the dataset writer.
"""

from __future__ import annotations

import json
import wave
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from talkgs import conventions
from talkgs.data import format as fmt
from talkgs.errors import DatasetError, PrepareError
from talkgs.prepare import background as bgmod
from talkgs.prepare import labels as lab
from talkgs.landmarks import FACE_OVAL_IDX, LIPS_INNER_IDX, load_canonical_face

ANCHOR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "anchor_cnn_512_25fps.mp4"
BG, TORSO, HAIR, FACE, MOUTH = 0, 1, 2, 3, 4


# ------------------------------------------------------------------------------ synthetic face


def face_camera(size: int, roll_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``(w2c [4, 4], K [3, 3])`` of a frontal camera 0.6 m from the canonical face, the
    face in the upper middle of a ``size`` x ``size`` image, rolled by ``roll_deg``."""
    a = np.deg2rad(roll_deg)
    roll = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    R = np.diag([1.0, -1.0, -1.0]) @ roll
    w2c = conventions.rigid(R, np.array([0.0, 0.0, 0.6]))
    f = 1.6 * size  # the ~15 cm wide canonical face spans ~0.4 * size pixels
    K = conventions.intrinsics(f, f, size / 2, 0.42 * size)
    return w2c, K


def synthetic_landmarks(size: int = 320, roll_deg: float = 0.0, mouth: str = "as_is", open_px: float = 8.0):
    """``[478, 2]`` landmarks of the projected canonical face (iris points at the eye
    centres). ``mouth``: "closed" puts each lower inner-lip point on its upper partner,
    "open" moves the lower inner lip ``open_px`` down along the head's down axis."""
    w2c, K = face_camera(size, roll_deg)
    uv, _ = conventions.project(load_canonical_face(), w2c, K)
    lm = np.zeros((478, 2))
    lm[:468] = uv
    lm[468:473] = uv[[33, 133, 159, 145]].mean(0)
    lm[473:] = uv[[362, 263, 386, 374]].mean(0)
    inner = list(LIPS_INNER_IDX)
    # LIPS_INNER_IDX: corner, 9 upper points, the other corner, 9 lower points coming back.
    upper, lower = inner[1:10], inner[11:20][::-1]
    if mouth == "closed":
        lm[lower] = lm[upper]
    elif mouth == "open":
        a = np.deg2rad(roll_deg)
        down = np.array([np.sin(a), np.cos(a)])  # image down, turned with the head (CCW on screen)
        lm[upper] = lm[lower]  # start from closed lips so the gap is exactly open_px
        lm[lower] += open_px * down
    return lm.astype(np.float32)


def synthetic_person(lm: np.ndarray, size: int = 320) -> np.ndarray:
    """uint8 ``[size, size]`` soft person mask: a head ellipse around the face oval (hair and
    ears beyond it), a neck and shoulders reaching the bottom edge."""
    oval = lm[list(FACE_OVAL_IDX)]
    c = oval.mean(0)
    w = oval[:, 0].max() - oval[:, 0].min()
    h = oval[:, 1].max() - oval[:, 1].min()
    m = np.zeros((size, size), np.uint8)
    cv2.ellipse(m, (int(c[0]), int(c[1] - 0.12 * h)), (int(0.62 * w), int(0.68 * h)), 0, 0, 360, 255, -1)
    chin_y = int(oval[:, 1].max())
    cv2.rectangle(m, (int(c[0] - 0.3 * w), int(c[1])), (int(c[0] + 0.3 * w), chin_y + int(0.3 * h)), 255, -1)
    cv2.ellipse(m, (int(c[0]), size + int(0.3 * h)), (int(1.5 * w), int(0.75 * h)), 0, 0, 360, 255, -1)
    return cv2.GaussianBlur(m, (5, 5), 0)


def rotate_about(img: np.ndarray, centre, deg: float, nearest: bool) -> np.ndarray:
    M = cv2.getRotationMatrix2D((float(centre[0]) - 0.5, float(centre[1]) - 0.5), deg, 1.0)
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.warpAffine(img, M, img.shape[1::-1], flags=flags, borderValue=0)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


# ------------------------------------------------------------------------------ label rules


def test_labels_frontal_face_rules():
    lm = synthetic_landmarks(mouth="closed")
    person = synthetic_person(lm)
    L = lab.label_frame(lm, person)
    assert L.dtype == np.uint8 and L.shape == person.shape
    assert set(np.unique(L).tolist()) == {BG, TORSO, HAIR, FACE}  # closed mouth: no 4
    assert (L[person < lab.PERSON_THRESHOLD] == BG).all()

    oval = lm[list(FACE_OVAL_IDX)]
    top, chin = oval[:, 1].min(), oval[:, 1].max()
    height = chin - top
    ys, xs = np.nonzero(L == FACE)
    # Face: inside the oval's bounding box, raised at most ~8% of its height at the top.
    assert xs.min() >= oval[:, 0].min() - 1 and xs.max() <= oval[:, 0].max() + 1
    assert ys.min() >= top - 0.1 * height and ys.max() <= chin + 1
    for k in (1, 4, 6, 9, 151, 205, 425):  # nose tip, bridge, forehead, cheeks
        x, y = np.floor(lm[k]).astype(int)
        assert L[y, x] == FACE, k
    # Torso: only below the jaw corners; everything of the person below the chin is torso.
    ty = np.nonzero(L == TORSO)[0]
    assert ty.min() >= min(lm[132, 1], lm[361, 1]) - 1
    below = np.zeros_like(L, bool)
    below[int(np.ceil(chin)) + 2 :] = True
    assert (L[below & (person >= 200)] == TORSO).all()
    # Hair: the person above the (raised) face oval, and beside the face (ears).
    above = np.zeros_like(L, bool)
    above[: int(top - 0.1 * height)] = True
    assert (L[above & (person >= 200)] == HAIR).all() and (L[above] == HAIR).sum() > 500
    ear_x, ear_y = int(oval[:, 0].min()) - 6, int(lm[234, 1])
    assert person[ear_y, ear_x] >= 200 and L[ear_y, ear_x] == HAIR


def test_mouth_interior_zero_when_closed_positive_when_open():
    closed = synthetic_landmarks(mouth="closed")
    person = synthetic_person(closed)
    assert (lab.label_frame(closed, person) == MOUTH).sum() == 0
    # Nearly closed (0.4 px gap: a sliver of half-covered pixels) also gives no interior.
    nearly = synthetic_landmarks(mouth="open", open_px=0.4)
    assert (lab.label_frame(nearly, person) == MOUTH).sum() == 0

    opened = synthetic_landmarks(mouth="open", open_px=8.0)
    L = lab.label_frame(opened, synthetic_person(opened))
    mouth = L == MOUTH
    inner = opened[list(LIPS_INNER_IDX)]
    area = lab.polygon_area(inner)
    assert area > 150
    # The label covers the inner-lip polygon: same area within 15%, inside its bounding box.
    assert abs(mouth.sum() - area) < 0.15 * area, (mouth.sum(), area)
    ys, xs = np.nonzero(mouth)
    assert xs.min() >= inner[:, 0].min() - 1 and xs.max() <= inner[:, 0].max() + 1
    assert ys.min() >= inner[:, 1].min() - 1 and ys.max() <= inner[:, 1].max() + 1
    # The interior is surrounded by face (lips), never touching hair or torso.
    ring = cv2.dilate(mouth.view(np.uint8), np.ones((5, 5), np.uint8)).view(bool) & ~mouth
    assert (L[ring] == FACE).all()


def test_labels_follow_head_roll():
    """Rolling the head (landmarks and mask rotated together) rotates the label map with it:
    the jaw line and the head zone follow the head's axes, not the image axes."""
    size, deg = 320, 25.0
    lm0 = synthetic_landmarks(size, mouth="open")
    person0 = synthetic_person(lm0, size)
    L0 = lab.label_frame(lm0, person0)
    lm1 = synthetic_landmarks(size, roll_deg=deg, mouth="open")
    # Rolling the head by deg about the optical axis turns the image by deg about the
    # principal point (counter-clockwise on screen, cv2's positive angle).
    _, K = face_camera(size, deg)
    centre = (K[0, 2], K[1, 2])
    rot = lambda img, nearest: rotate_about(img, centre, deg, nearest)  # noqa: E731
    # Check the landmark rotation matches the image rotation we apply to the mask.
    M = cv2.getRotationMatrix2D((centre[0] - 0.5, centre[1] - 0.5), deg, 1.0)
    lm0_rot = (lm0 - 0.5) @ M[:, :2].T + M[:, 2] + 0.5
    assert np.abs(lm0_rot - lm1).max() < 0.05
    L1 = lab.label_frame(lm1, rot(person0, False))
    L0r = rot(L0, True)
    for k, floor in [(TORSO, 0.9), (HAIR, 0.85), (FACE, 0.95), (MOUTH, 0.7)]:
        assert iou(L1 == k, L0r == k) > floor, (k, iou(L1 == k, L0r == k))


def test_person_mask_cleanup():
    lm = synthetic_landmarks(mouth="closed")
    person = synthetic_person(lm)
    dirty = person.copy()
    cv2.circle(dirty, (12, 12), 7, 255, -1)  # a detached blob (another person, a graphic)
    dirty[300:302, 150:152] = 0  # a small hole in the shoulders
    dirty[250:251, 20:21] = 255  # speckle
    L = lab.label_frame(lm, dirty)
    assert (L[5:20, 5:20] == BG).all()
    assert (L[300:302, 150:152] == TORSO).all()
    assert L[250, 20] == BG
    np.testing.assert_array_equal(L, lab.label_frame(lm, person))


def test_label_video_matches_frames_and_rejects_bad_input():
    lms = np.stack([synthetic_landmarks(mouth=m) for m in ("closed", "open", "as_is")])
    persons = np.stack([synthetic_person(x) for x in lms])
    out = lab.label_video(lms, persons, progress=False)
    assert out.shape == persons.shape and out.dtype == np.uint8
    for i in range(3):
        np.testing.assert_array_equal(out[i], lab.label_frame(lms[i], persons[i]))
    bad = lms[0].copy()
    bad[13] = np.nan
    with pytest.raises(PrepareError, match="NaN"):
        lab.label_frame(bad, persons[0])
    with pytest.raises(PrepareError, match="uint8"):
        lab.label_frame(lms[0], persons[0].astype(np.float32))
    with pytest.raises(PrepareError, match="equal N"):
        lab.label_video(lms[:2], persons, progress=False)


# ------------------------------------------------------------------------------ background


def test_masked_median_is_a_median_of_the_valid_samples():
    rng = np.random.default_rng(0)
    K, H, W = 9, 12, 14
    v = rng.integers(0, 256, (K, H, W, 3), dtype=np.uint8)
    valid = rng.random((K, H, W)) > 0.45
    med, count = bgmod.masked_median(iter(v), valid)
    np.testing.assert_array_equal(count, valid.sum(0))
    for y in range(H):
        for x in range(W):
            c = count[y, x]
            if c == 0:
                assert (med[y, x] == 0).all()
                continue
            s = np.sort(v[valid[:, y, x], y, x], axis=0)
            lo, hi = s[(c - 1) // 2], s[c // 2]
            assert ((med[y, x] == lo) | (med[y, x] == hi)).all()


def synthetic_background_clip(n: int = 60, size: int = 96, seed: int = 0):
    """Frames, labels and the true background of a static-camera clip: a textured plate, a
    fixed block always in front of it (labelled torso), a labelled disk moving across, and
    an unlabelled bright square (a moving graphic) that the median must reject."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    plate = np.stack([60 + xx, 80 + yy, 150 + 30 * np.sin(xx / 5) * np.cos(yy / 7)], -1)
    plate = np.clip(plate, 0, 255).astype(np.uint8)
    block = np.zeros((size, size), bool)
    block[70:, 30:66] = True
    frames = np.empty((n, size, size, 3), np.uint8)
    labels = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        f = plate.astype(np.float32) + rng.normal(0, 2.0, plate.shape)
        lab_i = block.astype(np.uint8) * TORSO
        cx = int(-15 + (size + 30) * i / (n - 1))  # disk crosses the image once
        disk = np.zeros((size, size), np.uint8)
        cv2.circle(disk, (cx, 30), 14, 1, -1)
        lab_i[disk > 0] = TORSO
        gx = (7 * i) % (size - 10)  # graphic: sweeps the row band 50..60 several times
        f[50:60, gx : gx + 10] = (255, 255, 255)
        f[lab_i > 0] = (20, 20, 20)
        frames[i] = np.clip(f, 0, 255).astype(np.uint8)
        labels[i] = lab_i
    return frames, labels, plate, block


def test_background_plate_synthetic():
    frames, labels, plate_true, block = synthetic_background_clip()
    halo = 2
    plate, inpainted = bgmod.background_plate(frames, labels, stride=1, halo_px=halo, progress=False)
    assert plate.dtype == np.uint8 and plate.shape == plate_true.shape and inpainted.dtype == bool
    # Never seen = the fixed block grown by the halo, nothing else.
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * halo + 1, 2 * halo + 1))
    expected = cv2.dilate(block.view(np.uint8), k).view(bool)
    np.testing.assert_array_equal(inpainted, expected)
    assert abs(inpainted.mean() - expected.mean()) < 1e-9
    err = np.abs(plate.astype(int) - plate_true.astype(int)).max(-1)
    # Seen pixels: median of noisy samples (sigma 2), the moving graphic rejected.
    assert np.median(err[~inpainted]) <= 2 and np.percentile(err[~inpainted], 99.9) <= 8
    # Inpainted pixels: a smooth continuation of the plate, not black or the occluder.
    assert np.median(err[inpainted]) < 25


def test_background_plate_subsampling_and_errors():
    idx = bgmod.sample_indices(1779, max_samples=48)
    assert len(idx) <= 48 and idx.min() >= 0 and idx.max() <= 1778 and idx.max() - idx.min() > 1700
    np.testing.assert_array_equal(bgmod.sample_indices(10, stride=3), [0, 3, 6, 9])
    frames, labels, _, _ = synthetic_background_clip(n=12, size=32)
    with pytest.raises(PrepareError, match="do not match"):
        bgmod.background_plate(frames, labels[:5], progress=False)
    with pytest.raises(PrepareError, match="uint8"):
        bgmod.background_plate(frames.astype(np.float32), labels, progress=False)


# ------------------------------------------------------------------------------ real data


@pytest.fixture(scope="module")
def anchor_subset():
    """Frames 1100..1249 of the anchor clip (mouths from closed to wide open), tracked."""
    if not ANCHOR.is_file():
        pytest.skip(f"real test clip absent: {ANCHOR}")
    from talkgs.media import read_frames
    from talkgs.prepare.track import track_video

    frames = read_frames(ANCHOR, start=1100, stop=1250)
    tr = track_video(frames, progress=False)
    assert tr.detected.all()
    return frames, tr.landmarks, tr.person, lab.label_video(tr.landmarks, tr.person, progress=False)


def test_labels_on_anchor_clip(anchor_subset):
    frames, lms, person, labels = anchor_subset
    gap = np.linalg.norm(lms[:, 13] - lms[:, 14], axis=1)  # inner-lip centre gap, px
    area = (labels == MOUTH).sum((1, 2))
    order = np.argsort(gap)
    assert gap[order[-10:]].min() > 10 and gap[order[:10]].max() < 1
    # Measured: >= 577 px on the 10 widest, 0 px on the 10 most closed.
    assert area[order[-10:]].min() > 300, area[order[-10:]]
    assert area[order[:10]].max() <= 5, area[order[:10]]
    # Layout of every frame: hair above face above torso; each region present.
    ys = np.arange(labels.shape[1])
    for k in (TORSO, HAIR, FACE):
        assert ((labels == k).sum((1, 2)) > 2000).all(), k

    def mean_y(k):
        rows = (labels == k).sum(2)  # [N, H] pixels of class k per row
        return (rows * ys).sum(1) / rows.sum(1)

    assert (mean_y(HAIR) < mean_y(FACE)).all() and (mean_y(FACE) < mean_y(TORSO)).all()


def test_background_plate_on_anchor_clip(anchor_subset):
    frames, _, person, labels = anchor_subset
    plate, inpainted = bgmod.background_plate(frames, labels, progress=False)
    # Behind the torso is never uncovered in 6 s (on the whole clip ~45% is inpainted).
    assert 0.2 < inpainted.mean() < 0.7
    seen_bg = bgmod.background_masks(labels[::10], halo_px=4) & ~inpainted
    # Outside the person (with a 4 px margin) the plate matches each frame: per-frame median
    # abs error <= 6 levels (max over RGB). Measured 2-4 on the whole clip; the studio
    # graphics move, so single pixels differ by far more.
    for k, i in enumerate(range(0, len(frames), 10)):
        err = np.abs(frames[i].astype(int) - plate.astype(int)).max(-1)[seen_bg[k]]
        assert np.median(err) <= 6, (i, np.median(err))
    assert (person[::10][seen_bg] < 64).mean() > 0.999  # "seen" pixels really are off the person


# ------------------------------------------------------------------------------ inspect


def write_synthetic_dataset(root: Path, n: int = 30, size: int = 128) -> dict:
    """A tiny dataset folder in the docs/design.md layout (format_version 1), written with
    av/numpy/cv2 directly: a projected canonical face over a gradient, talking (the mouth
    opens and closes), with labels from label_frame."""
    import av

    root.mkdir(parents=True)
    w2c, K = face_camera(size)
    yy, xx = np.mgrid[0:size, 0:size]
    bg = np.stack([40 + xx, 90 + 0 * xx, 120 + yy], -1).astype(np.uint8)
    opening = 3.0 * (1 + np.sin(np.arange(n) * 0.7))
    lms = np.stack([synthetic_landmarks(size, mouth="open", open_px=o) for o in opening])
    person = np.stack([synthetic_person(x, size) for x in lms])
    labels = lab.label_video(lms, person, progress=False)
    palette = np.array([[0, 0, 0], [40, 40, 90], [70, 50, 30], [210, 170, 150], [90, 20, 30]], np.uint8)
    frames = np.where(labels[..., None] > 0, palette[labels], bg[None]).astype(np.uint8)

    with av.open(str(root / "frames.mp4"), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        s.options = {"crf": "10"}
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, 25)
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    t = np.arange(n * conventions.SAMPLES_PER_FRAME) / conventions.SAMPLE_RATE
    pcm = (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype(np.int16)
    with wave.open(str(root / "audio.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(conventions.SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    fmt.save_labels(root / "labels.npz", labels)
    gap = np.linalg.norm(lms[:, 13] - lms[:, 14], axis=1)
    oval = lms[:, list(FACE_OVAL_IDX)]
    lips = lms[:, list(LIPS_INNER_IDX)]
    tracks = {
        "landmarks": lms,
        "landmarks_z": np.zeros((n, 478), np.float32),
        "landmark_interpolated": np.arange(n) % 10 == 3,
        "w2c": np.repeat(w2c[None].astype(np.float32), n, 0),
        "w2c_raw": np.repeat(w2c[None].astype(np.float32), n, 0),
        "reproj_error_px": np.zeros(n, np.float32),
        "mouth_open": (gap / (oval[:, :, 1].max(1) - oval[:, :, 1].min(1))).astype(np.float32),
        "mouth_gap_px": gap.astype(np.float32),
        "eye_ratio": np.full((n, 2), 0.3, np.float32),
        "blink": (np.arange(n) % 12 < 2).astype(np.float32),
        "lips_box": np.concatenate([lips.min(1) - 4, lips.max(1) + 4], -1).astype(np.float32),
        "face_box": np.concatenate([oval.min(1), oval.max(1)], -1).astype(np.float32),
        "shot": (np.arange(n) >= n // 2).astype(np.int32),
    }
    np.savez(root / "tracks.npz", **tracks)
    cv2.imwrite(str(root / "background.png"), bg[:, :, ::-1])
    meta = {
        "format_version": 1,
        "fps": 25,
        "n_frames": n,
        "width": size,
        "height": size,
        "intrinsics": {"fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2]},
        "split": {"train": [0, n - 3], "val": [n - 3, n]},
        "shots": [[0, n // 2], [n // 2, n]],
        "audio": {"sample_rate": 16000, "features": {}},
        "labels": {"0": "background", "1": "torso+neck", "2": "hair", "3": "face", "4": "mouth interior"},
        "background": {"inpainted_fraction": 0.25},
    }
    (root / "meta.json").write_text(json.dumps(meta))
    return {"frames": frames, "labels": labels, "tracks": tracks, "K": K}


def _probe(path: Path) -> tuple[int, bool, float]:
    import av

    with av.open(str(path)) as c:
        has_audio = len(c.streams.audio) > 0
        n = sum(1 for _ in c.decode(video=0))
    with av.open(str(path)) as c:
        dur = float(c.duration) / 1e6 if c.duration else 0.0
    return n, has_audio, dur


def test_inspect_writes_video_and_contact_sheet(tmp_path):
    from talkgs.prepare import inspect as insp

    n = 30
    ds = write_synthetic_dataset(tmp_path / "ds", n=n)
    paths = insp.write_inspect(tmp_path / "ds", tmp_path / "out", progress=False)
    assert set(paths) == {"video", "contact_sheet"}
    frames_in_video, has_audio, dur = _probe(paths["video"])
    assert frames_in_video == n and has_audio and abs(dur - n / 25) < 0.1
    sheet = cv2.imread(str(paths["contact_sheet"]))
    # 8 frames + plate + legend, 5 per row, 256 px tiles of the square frames.
    assert sheet.shape == (2 * 256, 5 * 256, 3)

    # The overlays themselves: label colours blended inside regions, frame untouched
    # elsewhere, pose axes drawn, interpolated frames marked in another colour.
    data = insp.load_for_inspect(tmp_path / "ds")
    i = 5
    frame = ds["frames"][i]
    out = insp.overlay(frame, i, data)
    L = ds["labels"][i]
    quiet = np.ones_like(L, bool)
    quiet[:70, :90] = False  # text panel
    for box in (ds["tracks"]["lips_box"][i], ds["tracks"]["face_box"][i]):
        x0, y0, x1, y1 = box.astype(int)
        quiet[max(y0 - 3, 0) : y1 + 3, max(x0 - 3, 0) : x1 + 3] = False
    interior = cv2.erode((L == TORSO).view(np.uint8), np.ones((5, 5), np.uint8)).view(bool) & quiet
    want = frame * (1 - insp.LABEL_ALPHA) + insp.LABEL_COLORS[TORSO] * insp.LABEL_ALPHA
    assert interior.sum() > 200
    assert np.abs(out[interior].astype(float) - want[interior]).max() <= 1.0
    far_bg = cv2.erode((L == BG).view(np.uint8), np.ones((7, 7), np.uint8)).view(bool) & quiet
    np.testing.assert_array_equal(out[far_bg], frame[far_bg])
    red = (out[..., 0] > 200) & (out[..., 1] < 90) & (out[..., 2] < 90)
    assert red.sum() > 5  # the x axis
    lm_px = np.floor(ds["tracks"]["landmarks"][i, 1]).astype(int)  # nose tip dot
    assert tuple(out[lm_px[1], lm_px[0]]) == (40, 255, 80)
    j = 3  # interpolated
    out_j = insp.overlay(ds["frames"][j], j, data)
    lm_px = np.floor(ds["tracks"]["landmarks"][j, 1]).astype(int)
    assert tuple(out_j[lm_px[1], lm_px[0]]) == (255, 0, 255)


def test_inspect_max_frames_and_missing_files(tmp_path):
    from talkgs.prepare import inspect as insp

    write_synthetic_dataset(tmp_path / "ds", n=20)
    paths = insp.write_inspect(tmp_path / "ds", tmp_path / "out", max_frames=5, progress=False)
    assert _probe(paths["video"])[0] == 5
    assert cv2.imread(str(paths["contact_sheet"])).shape == (512, 1280, 3)  # still 8 frames
    (tmp_path / "ds" / "labels.npz").unlink()
    with pytest.raises(DatasetError, match="labels.npz"):
        insp.write_inspect(tmp_path / "ds", tmp_path / "out2", progress=False)


def test_labels_in_chunks_equal_the_whole_clip_from_masks_read_on_demand(tmp_path):
    """label_chunks (what prepare writes from person masks read from disk a chunk at a time)
    gives label_video's maps for any chunk size."""
    from talkgs.prepare.pipeline import _NpyRows

    lms = np.stack([synthetic_landmarks(mouth=m) for m in ("closed", "open", "as_is") * 2 + ("open",)])
    persons = np.stack([synthetic_person(x) for x in lms])
    np.save(tmp_path / "person.npy", persons)
    whole = lab.label_video(lms, persons, progress=False)
    rows = _NpyRows(tmp_path / "person.npy")
    assert len(rows) == 7 and np.array_equal(rows[2:5], persons[2:5])
    for chunk in (1, 3, 7):
        np.testing.assert_array_equal(np.concatenate(list(lab.label_chunks(lms, rows, chunk, progress=False))), whole)
    assert len(np.unique(whole)) >= 4  # background, torso, face and mouth at least
