"""The audio -> mouth-state predictor alone (no rendering): how well its states, read as a mouth
opening, follow the measured mouth on unseen speech of the training speaker and on other voices.
CPU, about a minute per variant.

    python bench/predictor.py [--data /work/data] [--anchor anchor] [--kind whisper]
        [--variant NAME=KEY=VALUE,KEY=VALUE ...] [--builtin] [--cache DIR] [--frames F ...]
        [--name NAME | --out FILE]   (default bench/results/predictor/cpu.json)

Each variant fits the predictor exactly as `talkgs train` does (talkgs.train.trainer:
load_dataset, fit_face_model's measured states, predictor_clips, fit_mouth_predictor) on the
anchor's train split. KEYs are fields of PredictorConfig (``steps``, ``max_gain``, ``semitones``
= ``-3:3`` for tuples, ...), of MouthStateConfig (``ms.predictor_dropout``, ...), ``frames``
(the predictor's context window, default the head's audio window) or ``kind`` (the feature kind;
its dataset features are computed into a cached copy of the anchor dataset). Two keys change only
how the fitted predictor is read (they share its fit with the variant without them):
``smooth=SIGMA`` filters the predicted states in time (zero-phase Gaussian, SIGMA frames) before
scoring; ``drive_norm=mean|meanstd|meanstd_speech`` maps each drive clip's per-channel feature mean
(and std) onto the anchor's training features' before predicting (``_speech``: statistics of the
clip's loud frames only), a test-time adaptation to a new voice.

Opening: the linear map from states to tracks ``mouth_open`` (gap / face height) fitted by least
squares on the TRAIN frames' measured states, rescaled so that the measured training states
reproduce the measured opening's std (amplitude 1.00 on training frames, as the render has).
Scores (talkgs.metrics.lips.sync_scores, lag searched +-5 frames, offset > 0 = prediction later):
  val      the anchor's val split: predicted opening vs measured ``mouth_open``; ``s0`` the
           predicted vs measured state component 0;
  german, obama, trump, may   the whole drive clip's audio (features extracted with the same
           kind, cached): predicted opening vs that clip's own measured ``mouth_open``.
The row ``measured`` reads the measured states (val) and the drive clips' measured lower faces
transferred into the anchor's basis (talkgs.model.mouth.transfer_states): the ceiling of the
opening map, not of a predictor.

Columns ``sil`` and ``room``: the predicted opening on 4 s of digital silence and on 4 s of pink
noise alone at -50 dBFS (a pause in a real recording), 0 = the training frames' closed mouth
(10th percentile), 1 = their median.

Augmented copies' features are cached by the audio's hash (the same augmentation is extracted
once across variants and runs). Prints one table and writes JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

import _harness as H  # bench/ is on sys.path; it puts the checkout there too

REPO = H.REPO

import talkgs.audio as TA  # noqa: E402
from talkgs.audio.augment import QUIET_ROOM_DBFS, room_tone  # noqa: E402
from talkgs.audio.dataset_features import add_features  # noqa: E402
from talkgs.train.config import PredictorConfig  # noqa: E402
from talkgs.conventions import SAMPLES_PER_FRAME  # noqa: E402
from talkgs.data import format as fmt  # noqa: E402
from talkgs.data.loader import load_dataset  # noqa: E402
from talkgs.media import read_wav  # noqa: E402
from talkgs.metrics.lips import sync_scores  # noqa: E402
from talkgs.model.audio_encoder import gather_windows  # noqa: E402
from talkgs.model.config import AudioNetConfig, MouthStateConfig  # noqa: E402
from talkgs.landmarks import measure_offsets  # noqa: E402
from talkgs.model.mouth import MouthBasis, MouthPredictor, transfer_states  # noqa: E402
from talkgs.train.mouth_predictor import calibrate_gain, fit_mouth_predictor  # noqa: E402
from talkgs.train.predictor_data import predictor_clips  # noqa: E402
from talkgs.train.state import fit_face_model  # noqa: E402

DRIVES = ("german", "obama", "trump", "may")
MAX_LAG = 5
DRIVE_NORMS = ("none", "mean", "meanstd", "meanstd_speech")
BUILTIN = {"default": ""}


# ----------------------------------------------------------------------------- features, cached


def _hash(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.tobytes() if isinstance(p, np.ndarray) else repr(p).encode())
    return h.hexdigest()[:20]


def _code_hash() -> str:
    """The source of what a cached fit depends on: a fit made by other code is never reused."""
    import talkgs.model.mouth
    import talkgs.train.mouth_predictor
    import talkgs.train.predictor_data
    import talkgs.train.state

    mods = (talkgs.model.mouth, talkgs.train.mouth_predictor, talkgs.train.predictor_data, talkgs.train.state)
    return _hash(*(Path(m.__file__).read_bytes() for m in mods))


def install_extract_cache(cache: Path) -> None:
    """Make ``talkgs.audio.extract`` (what feature_clips calls for every augmented copy) read a
    disk cache keyed by (kind, audio, frames, options) before running the real extractor."""
    real = TA.extract
    if getattr(real, "_bench_cached", False):
        return

    def extract(kind: str, wav: np.ndarray, n_frames: int, **opts) -> np.ndarray:
        path = cache / f"x_{kind}_{_hash(kind, np.ascontiguousarray(wav, np.float32), int(n_frames), sorted(opts.items()))}.npy"
        if path.exists():
            return np.load(path)
        out = real(kind, wav, n_frames, **opts)
        np.save(path, out)
        return out

    extract._bench_cached = True
    TA.extract = extract


def anchor_copy(src: Path, kind: str, cache: Path) -> Path:
    """A writable copy of the (read-only) anchor dataset holding ``kind``'s features: every file
    linked except meta.json (copied, since `talkgs features` records the kind in it)."""
    dst = cache / f"{src.name}_ds"
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name != "meta.json" and not (dst / f.name).exists():
            (dst / f.name).symlink_to(f.resolve())
    if not (dst / "meta.json").exists():
        shutil.copyfile(src / "meta.json", dst / "meta.json")
    if not (dst / fmt.audio_feature_file(kind)).exists():
        t0 = time.perf_counter()
        add_features(dst, [kind], progress=False)
        print(f"  {kind} features of {src.name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return dst


def drive_clip(root: Path, kind: str) -> dict:
    """A drive clip's features (``kind``, via the cached extract), measured opening and offsets."""
    meta = fmt.read_meta(root)
    n = int(meta["n_frames"])
    wav, _ = read_wav(root / "audio.wav")
    ds = load_dataset(root, "cpu", audio_kind=None, load_images=False)
    offsets = measure_offsets(ds.tracks["landmarks"].numpy(), ds.w2c.numpy(), ds.K.numpy())
    return {"name": root.name, "features": TA.extract(kind, wav.astype(np.float32), n), "wav": wav,
            "mouth_open": ds.tracks["mouth_open"].numpy().astype(np.float64), "offsets": offsets}


# ----------------------------------------------------------------------------- variants


def _value(text: str, current, key: str = ""):
    if key == "other_speakers":
        return tuple(Path(v) for v in text.split(":") if v)
    if isinstance(current, bool):
        return text.lower() in ("1", "true", "yes")
    if isinstance(current, tuple):
        return tuple(float(v) for v in text.split(":") if v != "")
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    return text


def parse_variant(spec: str) -> dict:
    """``NAME=KEY=VALUE,KEY=VALUE`` -> ``{"name", "spec", "predictor", "mouth_state", "frames", "kind",
    "smooth", "drive_norm"}``."""
    name, _, rest = spec.partition("=")
    pc, ms = PredictorConfig(), MouthStateConfig()
    out = {"name": name, "spec": rest, "frames": AudioNetConfig().window, "kind": None, "smooth": 0.0,
           "drive_norm": "none"}
    for item in [s for s in rest.split(",") if s]:
        key, _, val = item.partition("=")
        if key.startswith("ms."):
            f = key[3:]
            ms = dataclasses.replace(ms, **{f: _value(val, getattr(ms, f))})
        elif key == "frames":
            out["frames"] = int(val)
        elif key == "kind":
            out["kind"] = val
        elif key == "smooth":
            out["smooth"] = float(val)
        elif key == "drive_norm":
            if val not in DRIVE_NORMS:
                raise SystemExit(f"drive_norm must be one of {', '.join(DRIVE_NORMS)}, got {val!r}")
            out["drive_norm"] = val
        else:
            pc = dataclasses.replace(pc, **{key: _value(val, getattr(pc, key), key)})
    out["predictor"], out["mouth_state"] = pc, ms
    return out


# ----------------------------------------------------------------------------- evaluation


def opening_map(states: np.ndarray, mouth_open: np.ndarray) -> tuple[np.ndarray, float]:
    """``(w [m], b)``: least squares of ``mouth_open`` on ``states`` (training frames), scaled
    so that the fitted opening has the measured opening's std."""
    X = np.concatenate([states, np.ones((len(states), 1))], 1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(X, mouth_open, rcond=None)
    w, b = coef[:-1], coef[-1]
    fit = states @ w
    k = mouth_open.std() / max(fit.std(), 1e-12)
    return w * k, float(mouth_open.mean() - k * (states.mean(0) @ w))


@torch.no_grad()
def predict(pred: MouthPredictor, feats: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
    f = torch.as_tensor(np.asarray(feats), dtype=torch.float32)
    idx = torch.arange(len(f)) if idx is None else torch.as_tensor(idx)
    pred.eval()
    return torch.cat([pred(gather_windows(f, i, pred.frames)) for i in idx.split(2048)]).numpy()


def silence_opening(pred: MouthPredictor, kind: str, mouth_open_train: np.ndarray, w: np.ndarray, b: float,
                    seconds: float = 4.0, room_tone_dbfs: float | None = None) -> float:
    """The predicted opening on ``seconds`` of digital silence (or, with ``room_tone_dbfs``, of
    pink noise alone at that level: a pause in a real recording), where the measured training
    openings' 10th percentile (closed) is 0 and their median is 1 (the render's silence check
    in bench/render.py, without rendering)."""
    from talkgs.audio import extract

    n = int(seconds * 25)
    if room_tone_dbfs is None:
        wav = np.zeros(n * 640, np.float32)
    else:
        wav = room_tone(n * 640, room_tone_dbfs, np.random.default_rng(0))
    p = predict(pred, extract(kind, wav, n)) @ w + b
    closed, median = np.percentile(mouth_open_train, [10, 50])
    return float((p.mean() - closed) / max(median - closed, 1e-12))


def smooth_states(states: np.ndarray, sigma: float) -> np.ndarray:
    """``states [n, m]`` filtered along time by a zero-phase Gaussian of ``sigma`` frames."""
    from scipy.ndimage import gaussian_filter1d

    return states if sigma <= 0 else gaussian_filter1d(states, sigma, axis=0, mode="nearest")


def normalize_drive(d: dict, mode: str, train_features: np.ndarray) -> dict:
    """Drive clip ``d`` with its features' per-channel mean (``mean``) or mean and std
    (``meanstd``, ``meanstd_speech``: over the frames louder than a tenth of the clip's 90th
    percentile RMS) mapped onto ``train_features [N, W, C]``'s."""
    if mode == "none":
        return d
    f = d["features"]
    ref = train_features.reshape(-1, train_features.shape[-1])
    sel = np.ones(len(f), bool)
    if mode == "meanstd_speech":
        rms = np.sqrt(np.mean(d["wav"][: len(f) * SAMPLES_PER_FRAME].reshape(len(f), -1) ** 2, 1))
        sel = rms > 0.1 * np.percentile(rms, 90)
    x = f[sel].reshape(-1, f.shape[-1])
    if mode == "mean":
        out = f - x.mean(0) + ref.mean(0)
    else:
        out = (f - x.mean(0)) / (x.std(0) + 1e-6) * ref.std(0) + ref.mean(0)
    return {**d, "features": out.astype(f.dtype)}


def scores(p: np.ndarray, t: np.ndarray) -> dict:
    s = sync_scores(p, t, MAX_LAG)
    return {"r": s["r"], "amp": s["amplitude"], "offset": s["offset"], "r_at_offset": s["r_at_offset"]}


def evaluate(states_fn, w: np.ndarray, b: float, val: dict, drives: list[dict]) -> dict:
    """Scores of ``states_fn(clip) -> states [n, m]`` for the val split and each drive clip."""
    sv = states_fn(val)
    row = {"val": scores(sv @ w + b, val["mouth_open"]), "s0": scores(sv[:, 0], val["states"][:, 0]), "drives": {}}
    for d in drives:
        row["drives"][d["name"]] = scores(states_fn(d) @ w + b, d["mouth_open"])
    if drives:
        row["cross_mean_r"] = float(np.mean([v["r"] for v in row["drives"].values()]))
        row["cross_mean_amp"] = float(np.mean([v["amp"] for v in row["drives"].values()]))
        row["cross_max_abs_offset"] = int(max(abs(v["offset"]) for v in row["drives"].values()))
    return row


def fit_key(dataset: Path, kind: str, frames: int, predictor: PredictorConfig, ms, seed: int, n_clips: int) -> str:
    """What a cached fit depends on: the training clip (its folder and split), the features, the
    configs, the seed, the clips and the code. A fit of one clip is never reused for another."""
    split = json.loads((Path(dataset) / fmt.META).read_text())["split"]
    return _hash(str(Path(dataset).resolve()), split, kind, frames, dataclasses.asdict(predictor),
                 dataclasses.asdict(ms), seed, n_clips, _code_hash())


def run_variant(v: dict, data: Path, anchor: str, cache: Path, drives_by_kind: dict, seed: int,
                frames: list[int] = ()) -> dict:
    kind = v["kind"]
    root = anchor_copy(data / anchor, kind, cache)
    ds = load_dataset(root, "cpu", audio_kind=kind, load_images=False)
    ms = v["mouth_state"]
    face = SimpleNamespace(neutral_landmarks=torch.zeros(468, 3), mouth_basis=MouthBasis(ms.n_components))
    states = fit_face_model(face, ds)  # [N, m] measured, basis fitted on the train split
    t0 = time.perf_counter()
    clips, note = predictor_clips(ds, states, v["predictor"], seed, basis=face.mouth_basis)
    t_clips = time.perf_counter() - t0
    W, C = ds.audio.shape[1:]
    pred = MouthPredictor(W, C, ms.n_components, frames=v["frames"], hidden=ms.predictor_hidden,
                          dropout=ms.predictor_dropout, members=ms.predictor_members)
    # Variants that differ only in the gain calibration share one fit (weights cached on disk).
    calib = ("max_gain", "amplitude")
    base = dataclasses.replace(v["predictor"], **{k: getattr(PredictorConfig(), k) for k in calib})
    key = fit_key(data / anchor, kind, v["frames"], base, ms, seed, len(clips))
    path = cache / f"fit_{key}.pt"
    if path.exists():
        saved = torch.load(path)
        pred.load_state_dict(saved["state"])
        rep = saved["report"]
        calibrate_gain(pred, clips, v["predictor"], torch.device("cpu"))
        rep["gain"] = [float(g) for g in pred.out_gain]
        rep["cached"] = True
    else:
        torch.manual_seed(seed)
        rep = fit_mouth_predictor(pred, clips, v["predictor"], torch.device("cpu"), seed)
        torch.save({"state": pred.state_dict(), "report": rep}, path)
    st = states.numpy()
    mo = ds.tracks["mouth_open"].numpy().astype(np.float64)
    tr, va = ds.train_idx.numpy(), ds.val_idx.numpy()
    w, b = opening_map(st[tr], mo[tr])
    feats = ds.audio.numpy()
    val = {"name": "val", "idx": va, "mouth_open": mo[va], "states": st[va]}
    drives = [normalize_drive(d, v["drive_norm"], feats[tr]) for d in drives_by_kind.setdefault(kind, [])]
    # val and train are contiguous runs of frames (the split is a cut), so smoothing them is a render's.
    def states_of(c: dict) -> np.ndarray:
        raw = predict(pred, feats, c["idx"]) if c["name"] == "val" else predict(pred, c["features"])
        return smooth_states(raw, v["smooth"])

    row = evaluate(states_of, w, b, val, drives)
    if frames:
        at = {int(f): i for i, f in enumerate(va)}
        missing = [f for f in frames if f not in at]
        if missing:
            raise SystemExit(f"predictor: --frames {missing} are not in the val split {va[0]}:{va[-1] + 1}")
        p_val = states_of(val) @ w + b
        row["at_frames"] = {str(f): {"measured_open": float(mo[f]), "measured_states_open": float(st[f] @ w + b),
                                  "predicted_open": float(p_val[at[f]])} for f in frames}
    row["train"] = scores(smooth_states(predict(pred, feats, tr), v["smooth"]) @ w + b, mo[tr])
    row["silence"] = silence_opening(pred, kind, mo[tr], w, b)
    row["room_tone"] = silence_opening(pred, kind, mo[tr], w, b, room_tone_dbfs=QUIET_ROOM_DBFS)
    row.update(name=v["name"], spec=v["spec"], kind=kind, frames=v["frames"], smooth=v["smooth"],
               drive_norm=v["drive_norm"], note=note,
               predictor=dataclasses.asdict(v["predictor"]), mouth_state=dataclasses.asdict(ms),
               fit={k: rep[k] for k in ("clips", "frames", "steps", "held_out_mse", "held_out_r", "gain", "seconds")},
               clips_seconds=round(t_clips, 1))
    return row, (face.mouth_basis, st, w, b, val)


def measured_row(basis: MouthBasis, w: np.ndarray, b: float, val: dict, drives: list[dict]) -> dict:
    def states_fn(c):
        if c["name"] == "val":
            return c["states"]
        with torch.no_grad():
            return transfer_states(basis, torch.as_tensor(c["offsets"])).numpy()
    row = evaluate(states_fn, w, b, val, drives)
    row.update(name="measured", spec="measured states (val) / transferred measured lower faces (drives)")
    return row


# ----------------------------------------------------------------------------- output


def _f(x, fmt_: str) -> str:
    return "nan" if x is None or (isinstance(x, float) and not np.isfinite(x)) else format(x, fmt_)


def print_table(rows: list[dict]) -> None:
    drives = list(rows[0]["drives"]) if rows else []
    head = f"{'variant':<16}{'val r':>7}{'amp':>6}{'off':>4}{'s0 r':>7}{'amp':>6}"
    head += "".join(f"{d[:6] + ' r':>9}{'amp':>6}{'off':>4}" for d in drives)
    head += f"{'x r':>7}{'x amp':>7}{'sil':>6}{'room':>6}{'fit s':>7}"
    print("\n" + head)
    for r in rows:
        line = (f"{r['name']:<16}{_f(r['val']['r'], '.3f'):>7}{_f(r['val']['amp'], '.2f'):>6}{r['val']['offset']:>+4d}"
                f"{_f(r['s0']['r'], '.3f'):>7}{_f(r['s0']['amp'], '.2f'):>6}")
        for d in drives:
            s = r["drives"][d]
            line += f"{_f(s['r'], '.3f'):>9}{_f(s['amp'], '.2f'):>6}{s['offset']:>+4d}"
        line += f"{_f(r.get('cross_mean_r'), '.3f'):>7}{_f(r.get('cross_mean_amp'), '.2f'):>7}"
        line += f"{_f(r.get('silence'), '.2f'):>6}{_f(r.get('room_tone'), '.2f'):>6}{_f(r.get('fit', {}).get('seconds'), '.0f'):>7}"
        print(line)
    print("(opening = states mapped to mouth_open; amp = std ratio prediction / measured; "
          f"off = best lag in +-{MAX_LAG} frames, > 0 = prediction later; s0 = state component 0 vs measured; "
          "sil = opening on digital silence, 0 = the training frames' 10th percentile (closed), 1 = their median; "
          f"room = the same on pink noise alone at {QUIET_ROOM_DBFS:g} dBFS, a quiet room's pause)")


def main() -> int:
    ap = H.parser(__doc__, "predictor")
    ap.add_argument("--data", type=Path, default=REPO.parent / "data")
    ap.add_argument("--anchor", default="anchor")
    ap.add_argument("--drives", nargs="*", default=list(DRIVES))
    ap.add_argument("--kind", default="whisper", help="feature kind of variants that do not set kind=")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE,...")
    ap.add_argument("--builtin", action="store_true", help="also run the default variant (no KEY=VALUE)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, nargs="*", default=[],
                    help="val frames whose measured, measured-state and predicted openings each row lists")
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "talkgs_bench_predictor")
    args = ap.parse_args()

    specs = [f"{k}={v}" for k, v in BUILTIN.items()] if (args.builtin or not args.variant) else []
    variants = [parse_variant(s) for s in specs + args.variant]
    for v in variants:
        v["kind"] = v["kind"] or args.kind
        v["name"] += f"@s{args.seed}" if args.seed else ""
    args.cache.mkdir(parents=True, exist_ok=True)
    install_extract_cache(args.cache)
    drives_by_kind: dict = {}
    for kind in dict.fromkeys(v["kind"] for v in variants):
        t0 = time.perf_counter()
        drives_by_kind[kind] = [drive_clip(args.data / d, kind) for d in args.drives]
        print(f"  {kind} features of the drive clips: {time.perf_counter() - t0:.0f} s", flush=True)
    rows, measured = [], None
    for v in variants:
        t0 = time.perf_counter()
        row, (basis, st, w, b, val) = run_variant(v, args.data, args.anchor, args.cache, drives_by_kind, args.seed,
                                                  args.frames)
        rows.append(row)
        print(f"  {v['name']}: {time.perf_counter() - t0:.0f} s (clips {row['clips_seconds']:.0f} s, fit "
              f"{row['fit']['seconds']:.0f} s, {row['fit']['steps']} steps, gain "
              f"{' '.join(f'{g:.2f}' for g in row['fit']['gain'])}) val r {row['val']['r']:.3f} amp "
              f"{row['val']['amp']:.2f}, cross r {row.get('cross_mean_r', float('nan')):.3f} amp "
              f"{row.get('cross_mean_amp', float('nan')):.2f}", flush=True)
        for f, o in row.get("at_frames", {}).items():
            print(f"    frame {f}: opening measured {o['measured_open']:.3f}, from its measured states "
                  f"{o['measured_states_open']:.3f}, predicted {o['predicted_open']:.3f}", flush=True)
        if measured is None:
            measured = measured_row(basis, w, b, val, drives_by_kind[v["kind"]])
    table = ([measured] if measured else []) + rows
    print_table(table)
    setup = {"anchor": args.anchor, "drives": args.drives, "max_lag": MAX_LAG, "torch_threads": torch.get_num_threads(),
             "opening": "least-squares map of states to tracks mouth_open on the train frames' measured states, "
                        "scaled to the measured std on those frames",
             "offset_sign": "offset > 0: the prediction moves later than the measured mouth (frames)"}
    # A rerun with other variants adds its rows to the file's (a row per variant name).
    path = H.result_path("predictor", args, "cpu")
    old = json.loads(path.read_text()) if path.exists() else {}
    keep = {r["name"]: r for r in old.get("rows", [])}
    keep.update({r["name"]: r for r in json.loads(json.dumps(table, default=lambda o: str(o) if isinstance(o, Path) else float(o)))})
    args.out = H.write("predictor", args, list(keep.values()), device="cpu", setup=setup)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
