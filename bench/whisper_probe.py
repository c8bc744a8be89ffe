"""Linear probe from audio features to the mouth opening: which feature kind and which Whisper
layer carries the most mouth information, on the training speaker and on others; plus how the
offline chunking and the streaming windows change Whisper's states and the probe.

    python bench/whisper_probe.py [--families mel tiny.en base] [--neighbours 0 2]
    python bench/whisper_probe.py --no-probe --in-speaker [--folds 5] [--in-speaker-layer 3]
    python bench/whisper_probe.py --no-probe --position --chunking --max-layer 3
    python bench/whisper_probe.py --no-probe --streaming --max-layer 3 --speakers german trump may
    (all: [--data /work/data] [--name NAME]: bench/results/whisper_probe/NAME.json, one row per
    figure with its ``measure``: layers, best_layer, in_speaker, position, chunking, streaming)

A ridge regression (closed form, numpy; features standardised on the training frames; the ridge
strength picked on the last 15 % of the training frames, then refitted on all of them) maps
one frame's feature window (flattened; with ``--neighbours k`` also the k frames before and after)
to tracks.npz ``mouth_open``. It is fitted on the anchor's train split only and tested by the
Pearson r between prediction and truth on:
  val        the anchor's val split (unseen speech of the same speaker);
  speakers   the other speakers' whole clips (german, obama, trump, may), r per clip;
  pitch+3 / pitch-3 / noise   the anchor's val split after shifting the whole clip's pitch by
             +-3 semitones (phase vocoder + resampling, duration kept) or adding white noise at
             10 dB SNR (features extracted from the altered clip, fit unchanged).
Rows: mel, and every layer of Whisper tiny.en (0..4) and base (0..6) (0 = convolutions +
positions; the last = the encoder's output after its final layer norm), extracted offline with
the kinds' default chunking (``--layout`` another). The default layer of each model is the one
with the best mean of val r and mean cross-speaker r (k = 0).

``--in-speaker``: how much of each clip's mouth its own speech predicts: a probe fitted and tested
within the clip (``--folds`` contiguous folds, each tested on a probe fitted on the others), for
the anchor whole, the anchor cut into stretches as long as each other clip (mean over the
stretches: how much a clip of that length allows), and every other speaker; beside the cross-
speaker r of the anchor-fitted probe. Short clips bound what any r measured on them can say.

``--position``: how much a state changes when its moment sits elsewhere in the 30 s window vs
when less audio surrounds it. ``--chunking``: offline chunk/context settings against a
long-context reference (10 s chunks with 10 s of context on each side): state difference and
probe r. ``--streaming``: WhisperStream layouts (history, hop, lookahead) against the offline
features on the anchor's val split and on other speakers: state difference and probe r (the
probe fitted on offline features, as a model trained offline and run live would be).

Prints tables and writes JSON. Features are cached under --cache (default a temp folder).
"""

from __future__ import annotations

import hashlib
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

import _harness as H  # bench/ is on sys.path; it puts the checkout there too

REPO = H.REPO

from talkgs.audio import whisper as W  # noqa: E402
from talkgs.audio.mel import extract_mel  # noqa: E402
from talkgs.media import read_wav  # noqa: E402

SPEAKERS = ("german", "obama", "trump", "may")
MODELS = {"tiny.en": "whisper", "base": "whisper_base"}


# ----------------------------------------------------------------------------- data


def load(root: Path) -> dict:
    meta = json.loads((root / "meta.json").read_text())
    wav, sr = read_wav(root / "audio.wav")
    assert sr == 16000
    tracks = np.load(root / "tracks.npz")
    return {"name": root.name, "wav": wav.astype(np.float32), "n": int(meta["n_frames"]),
            "y": tracks["mouth_open"].astype(np.float64), "split": meta["split"]}


def time_stretch(x: np.ndarray, rate: float, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """Phase vocoder: ``x`` played ``rate`` times faster (length / rate), pitch unchanged."""
    from scipy.signal import istft, stft

    _, _, Z = stft(x, nperseg=n_fft, noverlap=n_fft - hop, window="hann")
    steps = np.arange(0, Z.shape[1] - 1, rate)
    advance = 2 * np.pi * hop * np.arange(Z.shape[0]) / n_fft
    phase = np.angle(Z[:, 0])
    out = np.empty((Z.shape[0], steps.shape[0]), np.complex128)
    for j, s in enumerate(steps):
        i = int(s)
        frac = s - i
        mag = (1 - frac) * np.abs(Z[:, i]) + frac * np.abs(Z[:, i + 1])
        out[:, j] = mag * np.exp(1j * phase)
        d = np.angle(Z[:, i + 1]) - np.angle(Z[:, i]) - advance
        d -= 2 * np.pi * np.round(d / (2 * np.pi))
        phase = phase + advance + d
    _, y = istft(out, nperseg=n_fft, noverlap=n_fft - hop, window="hann")
    return y


def pitch_shift(x: np.ndarray, semitones: float) -> np.ndarray:
    """``x`` with its pitch moved by ``semitones``, same length and timing."""
    from scipy.signal import resample

    r = 2.0 ** (semitones / 12.0)
    y = time_stretch(x.astype(np.float64), 1.0 / r)  # r times longer
    y = resample(y, x.shape[0])  # back to the length: every frequency times r
    return (y * (np.abs(x).max() / max(np.abs(y).max(), 1e-9))).astype(np.float32)


def add_noise(x: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = float(np.mean(x.astype(np.float64) ** 2))
    return (x + rng.standard_normal(x.shape[0]) * np.sqrt(p / 10 ** (snr_db / 10))).astype(np.float32)


# ----------------------------------------------------------------------------- features


def _key(*parts) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


_ENCODERS: dict = {}
MAX_LAYER = {"tiny.en": 99, "base": 99}


def all_layers_encoder(model: str):
    """An encoder returning every layer 0..n (up to MAX_LAYER; CPU), built once per model."""
    if model not in _ENCODERS:
        w = W.load_weights(W.resolve_model(model, MODELS[model]))
        _ENCODERS[model] = W.build_encoder(w, tuple(range(min(w.n_layers, MAX_LAYER[model]) + 1)), "cpu")
    return _ENCODERS[model]


def offline_layout() -> tuple:
    return ("chunked", W.DEFAULT_CHUNK_S, W.DEFAULT_CONTEXT_S)


def whisper_all_layers(wav: np.ndarray, n: int, model: str, cache: Path, layout=None,
                       frames: tuple[int, int] | None = None) -> np.ndarray:
    """``float32 [L + 1, N, 2 C]``: every layer's frame windows (cached on disk). ``layout``:
    ``("chunked", chunk_s, context_s)`` (offline extraction; default: the kinds' settings) or a
    streaming :class:`W.Layout` (what WhisperStream emits), for which only ``frames`` are
    computed (the others are zero)."""
    layout = layout or offline_layout()
    f0, f1 = frames or (0, n)
    path = cache / f"w_{model}_{_key(hashlib.sha256(wav.tobytes()).hexdigest(), n, repr(layout), f0, f1, MAX_LAYER[model])}.npy"
    if path.exists():
        return np.load(path)
    enc = all_layers_encoder(model)
    x = wav[: n * 640]
    if isinstance(layout, tuple):
        s = W.encoder_states(enc, x, 2 * n, layout[1], layout[2])
        out = s.reshape(s.shape[0], n, -1).astype(np.float32)
    else:
        out = np.zeros((len(enc.layers), n, 2 * enc.d_model), np.float32)
        st = W.run_groups(enc, x, layout.groups(f0, f1, n), layout)
        out[:, f0:f1] = st.reshape(st.shape[0], f1 - f0, -1)
    np.save(path, out)
    return out


def mel_feats(wav: np.ndarray, n: int) -> np.ndarray:
    return extract_mel(wav, n).reshape(n, -1)


def with_neighbours(X: np.ndarray, k: int) -> np.ndarray:
    if k == 0:
        return X
    n = X.shape[0]
    idx = np.clip(np.arange(n)[:, None] + np.arange(-k, k + 1)[None], 0, n - 1)
    return X[idx].reshape(n, -1)


# ----------------------------------------------------------------------------- ridge


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    return float((a @ b) / np.sqrt((a @ a) * (b @ b) + 1e-30))


class Ridge:
    """Closed-form ridge on standardised features; strength picked on a held-out tail.

    One SVD of the centred features serves every strength: w = V diag(s / (s^2 + lam)) U^T y.
    """

    ALPHAS = 10.0 ** np.arange(-4, 2.5, 0.5)

    def __init__(self, X: np.ndarray, y: np.ndarray, holdout: float = 0.15):
        X = X.astype(np.float64)
        self.mu = X.mean(0)
        self.sd = X.std(0) + 1e-6
        Z = (X - self.mu) / self.sd
        cut = int(round(len(y) * (1 - holdout)))
        inner = self._factor(Z[:cut], y[:cut])
        scores = [pearson(Z[cut:] @ w + c, y[cut:]) for w, c in (self._solve(inner, a) for a in self.ALPHAS)]
        i = int(np.argmax(scores))
        self.alpha = float(self.ALPHAS[i])
        self.holdout_r = float(scores[i])
        self.w, self.c = self._solve(self._factor(Z, y), self.alpha)

    @staticmethod
    def _factor(Z, y):
        zm, ym = Z.mean(0), y.mean()
        U, S, Vt = np.linalg.svd(Z - zm, full_matrices=False)
        return zm, ym, S, Vt, U.T @ (y - ym), Z.shape[1]

    @staticmethod
    def _solve(f, alpha):
        zm, ym, S, Vt, Uty, D = f
        lam = alpha * float(S @ S) / D  # relative to the mean eigenvalue of Z^T Z
        w = Vt.T @ (S / (S * S + lam) * Uty)
        return w, ym - zm @ w

    def predict(self, X: np.ndarray) -> np.ndarray:
        return ((X.astype(np.float64) - self.mu) / self.sd) @ self.w + self.c


# ----------------------------------------------------------------------------- main probe


def probe_table(anchor: dict, others: list[dict], variants: dict, cache: Path, ks: list[int], families: list[str],
                layout=None) -> list[dict]:
    tr0, tr1 = anchor["split"]["train"]
    va0, va1 = anchor["split"]["val"]
    rows = []

    def feats_for(name: str, wav, n, frames=None):
        if name == "mel":
            return [("mel", None, mel_feats(wav, n))]
        allL = whisper_all_layers(wav, n, name, cache, layout, frames)
        return [(f"{name} L{i}", i, allL[i]) for i in range(allL.shape[0])]

    for fam in families:
        t0 = time.perf_counter()
        a_feats = feats_for(fam, anchor["wav"], anchor["n"])
        o_feats = {d["name"]: feats_for(fam, d["wav"], d["n"]) for d in others}
        v_feats = {v: feats_for(fam, wav, anchor["n"], (va0, va1)) for v, wav in variants.items()}
        for li, (label, layer, Xa) in enumerate(a_feats):
            for k in ks:
                Xk = with_neighbours(Xa, k)
                model = Ridge(Xk[tr0:tr1], anchor["y"][tr0:tr1])
                row = {"features": label, "family": fam, "layer": layer, "neighbours": k, "dims": int(Xk.shape[1]),
                       "layout": None if fam == "mel" else repr(layout or offline_layout()),
                       "alpha": model.alpha,
                       "train_r": pearson(model.predict(Xk[tr0:tr1]), anchor["y"][tr0:tr1]),
                       "val_r": pearson(model.predict(Xk[va0:va1]), anchor["y"][va0:va1])}
                row["speakers"] = {
                    d["name"]: pearson(model.predict(with_neighbours(o_feats[d["name"]][li][2], k)), d["y"])
                    for d in others
                }
                row["cross_mean_r"] = float(np.mean(list(row["speakers"].values()))) if others else float("nan")
                for v in variants:
                    Xv = with_neighbours(v_feats[v][li][2], k)
                    row[f"{v}_r"] = pearson(model.predict(Xv[va0:va1]), anchor["y"][va0:va1])
                row["score"] = 0.5 * (row["val_r"] + row["cross_mean_r"])
                rows.append(row)
        print(f"  {fam}: {time.perf_counter() - t0:.1f} s", flush=True)
    return rows


def print_table(rows: list[dict], others: list[dict], variants: dict) -> None:
    cols = ["val"] + [d["name"] for d in others] + ["x-mean"] + list(variants) + ["score"]
    print(f"\n{'features':<14}{'k':>3}{'dims':>6}" + "".join(f"{c:>9}" for c in cols))
    for r in rows:
        vals = [r["val_r"]] + [r["speakers"][d["name"]] for d in others] + [r["cross_mean_r"]]
        vals += [r[f"{v}_r"] for v in variants] + [r["score"]]
        print(f"{r['features']:<14}{r['neighbours']:>3}{r['dims']:>6}" + "".join(f"{v:>9.3f}" for v in vals))


# ----------------------------------------------------------------------------- chunking, streaming


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Median over frames of |a - b| / |b| (``[N, ...]`` arrays)."""
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    return float(np.median(np.linalg.norm(a - b, axis=1) / (np.linalg.norm(b, axis=1) + 1e-9)))


def cv_r(X: np.ndarray, y: np.ndarray, folds: int = 5) -> float:
    """Pearson r of ``y [n]`` against its cross-validated ridge prediction from ``X [n, D]``:
    ``folds`` contiguous blocks, each predicted by a probe fitted on the others."""
    n = len(y)
    pred = np.zeros(n)
    for block in np.array_split(np.arange(n), folds):
        rest = np.setdiff1d(np.arange(n), block)
        pred[block] = Ridge(X[rest], y[rest]).predict(X[block])
    return pearson(pred, y)


def in_speaker(anchor: dict, others: list[dict], models: list[str], layer: int, cache: Path, folds: int) -> list[dict]:
    """Per model: the within-clip cross-validated r of every clip, the anchor's at each other
    clip's length, and the anchor-fitted probe's cross-speaker r, for one Whisper layer."""
    tr0, tr1 = anchor["split"]["train"]
    out = []
    for model in models:
        Fa = whisper_all_layers(anchor["wav"], anchor["n"], model, cache)[layer]
        probe = Ridge(Fa[tr0:tr1], anchor["y"][tr0:tr1])
        row = {"model": model, "layer": layer, "folds": folds,
               "anchor": {"frames": anchor["n"], "in_speaker_r": cv_r(Fa, anchor["y"], folds)}, "speakers": {}}
        for d in others:
            F = whisper_all_layers(d["wav"], d["n"], model, cache)[layer]
            L = d["n"]
            cuts = [cv_r(Fa[s : s + L], anchor["y"][s : s + L], folds) for s in range(0, anchor["n"] - L + 1, L)]
            row["speakers"][d["name"]] = {
                "frames": L, "in_speaker_r": cv_r(F, d["y"], folds), "cross_r": pearson(probe.predict(F), d["y"]),
                "anchor_same_length_r": float(np.mean(cuts)), "anchor_stretches": len(cuts)}
        sp = row["speakers"].values()
        for k in ("in_speaker_r", "cross_r", "anchor_same_length_r"):
            row[f"mean_{k}"] = float(np.mean([v[k] for v in sp])) if others else float("nan")
        out.append(row)
    print(f"\nin-speaker ({folds}-fold contiguous CV within each clip, layer {layer}; cross = the anchor-fitted probe)")
    print(f"{'model':<9}{'clip':<8}{'frames':>7}{'own CV r':>10}{'anchor, same length':>21}{'cross r':>9}")
    for r in out:
        print(f"{r['model']:<9}{'anchor':<8}{r['anchor']['frames']:>7}{r['anchor']['in_speaker_r']:>10.3f}")
        for name, v in r["speakers"].items():
            print(f"{'':<9}{name:<8}{v['frames']:>7}{v['in_speaker_r']:>10.3f}"
                  f"{v['anchor_same_length_r']:>14.3f} ({v['anchor_stretches']:>2}){v['cross_r']:>11.3f}")
        print(f"{'':<9}{'mean':<8}{'':>7}{r['mean_in_speaker_r']:>10.3f}{r['mean_anchor_same_length_r']:>14.3f}"
              f"{'':>5}{r['mean_cross_r']:>11.3f}")
    return out


def chunking(anchor: dict, others: list[dict], model: str, layers: list[int], cache: Path) -> list[dict]:
    """Offline chunk/context settings against a long-context reference (10 s chunks, 10 s of
    context on both sides): state difference on the anchor, probe r."""
    tr0, tr1 = anchor["split"]["train"]
    va0, va1 = anchor["split"]["val"]
    settings = [(10.0, 10.0), (W.DEFAULT_CHUNK_S, W.DEFAULT_CONTEXT_S), (28.0, 1.0), (29.0, 0.0), (24.0, 3.0), (20.0, 5.0)]
    ref = whisper_all_layers(anchor["wav"], anchor["n"], model, cache, ("chunked", 10.0, 10.0))
    out = []
    for chunk_s, ctx_s in settings:
        lay = ("chunked", chunk_s, ctx_s)
        F = whisper_all_layers(anchor["wav"], anchor["n"], model, cache, lay)
        O = {d["name"]: whisper_all_layers(d["wav"], d["n"], model, cache, lay) for d in others}
        for L in layers:
            m = Ridge(F[L][tr0:tr1], anchor["y"][tr0:tr1])
            sp = {d["name"]: pearson(m.predict(O[d["name"]][L]), d["y"]) for d in others}
            out.append({"model": model, "layer": L, "chunk_s": chunk_s, "context_s": ctx_s,
                        "rel_diff_vs_ref": rel_diff(F[L], ref[L]), "neighbour_state_diff": rel_diff(ref[L][1:], ref[L][:-1]),
                        "val_r": pearson(m.predict(F[L][va0:va1]), anchor["y"][va0:va1]), "speakers": sp,
                        "cross_mean_r": float(np.mean(list(sp.values())))})
    print(f"\nchunking ({model}; reference: 10 s chunks with 10 s of context on each side)")
    print(f"{'layer':>6}{'chunk s':>8}{'ctx s':>7}{'diff':>8}{'(nbr)':>8}{'val r':>8}{'x-mean':>8}")
    for r in sorted(out, key=lambda r: r["layer"]):
        print(f"{r['layer']:>6}{r['chunk_s']:>8.0f}{r['context_s']:>7.0f}{r['rel_diff_vs_ref']:>8.3f}"
              f"{r['neighbour_state_diff']:>8.3f}{r['val_r']:>8.3f}{r['cross_mean_r']:>8.3f}")
    return out


def streaming(anchor: dict, others: list[dict], model: str, layers: list[int], cache: Path, specs: list[str]) -> list[dict]:
    """WhisperStream's features (each layout: HISTORY_S:HOP:LOOKAHEAD_MS, ``@val`` = anchor val
    only) against the offline ones: state difference and the probe fitted on offline features."""
    tr0, tr1 = anchor["split"]["train"]
    va0, va1 = anchor["split"]["val"]
    off_a = whisper_all_layers(anchor["wav"], anchor["n"], model, cache)
    off_o = {d["name"]: whisper_all_layers(d["wav"], d["n"], model, cache) for d in others}
    fits = {L: Ridge(off_a[L][tr0:tr1], anchor["y"][tr0:tr1]) for L in layers}
    out = []
    for spec in specs:
        val_only = spec.endswith("@val")
        h, hop, ahead, *window = spec.removesuffix("@val").split(":")
        lay = W.Layout(float(h), int(hop), float(ahead), *map(float, window)).check()
        t0 = time.perf_counter()
        st_a = whisper_all_layers(anchor["wav"], anchor["n"], model, cache, lay, (va0, va1))
        sets = [] if val_only else others
        st_o = {d["name"]: whisper_all_layers(d["wav"], d["n"], model, cache, lay) for d in sets}
        secs = time.perf_counter() - t0
        ms_window = encoder_ms(all_layers_encoder(model), anchor["wav"], lay, va0)
        for L in layers:
            f = fits[L]
            row = {"model": model, "layer": L, "history_s": lay.history_s, "hop_frames": lay.hop_frames,
                   "lookahead_ms": lay.lookahead_ms, "window_s": lay.window_s, "stream_lookahead_ms": lay.lookahead_ms + 40 * (lay.hop_frames - 1),
                   "val_diff": rel_diff(st_a[L][va0:va1], off_a[L][va0:va1]),
                   "val_r_stream": pearson(f.predict(st_a[L][va0:va1]), anchor["y"][va0:va1]),
                   "val_r_offline": pearson(f.predict(off_a[L][va0:va1]), anchor["y"][va0:va1]),
                   "speakers_stream": {d["name"]: pearson(f.predict(st_o[d["name"]][L]), d["y"]) for d in sets},
                   "speakers_offline": {d["name"]: pearson(f.predict(off_o[d["name"]][L]), d["y"]) for d in sets},
                   "speakers_diff": {d["name"]: rel_diff(st_o[d["name"]][L], off_o[d["name"]][L]) for d in sets},
                   "seconds": secs, "encoder_ms_per_window": ms_window}
            row["cross_mean_r_stream"] = float(np.mean(list(row["speakers_stream"].values()))) if sets else float("nan")
            row["cross_mean_r_offline"] = float(np.mean(list(row["speakers_offline"].values()))) if sets else float("nan")
            out.append(row)
        print(f"  stream {spec}: {secs:.0f} s", flush=True)
    print(f"\nstreaming ({model}; probe fitted on the offline train features; r offline in brackets)")
    print(f"{'layer':>6}{'hist s':>7}{'hop':>5}{'ahead ms':>9}{'worst ms':>9}{'window s':>9}{'ms/win':>7}{'val diff':>9}"
          f"{'val r':>8}{'(off)':>7}{'x diff':>8}{'x-mean r':>9}{'(off)':>7}")
    for r in sorted(out, key=lambda r: r["layer"]):
        xd = float(np.mean(list(r["speakers_diff"].values()))) if r["speakers_diff"] else float("nan")
        print(f"{r['layer']:>6}{r['history_s']:>7.0f}{r['hop_frames']:>5}{r['lookahead_ms']:>9.0f}{r['stream_lookahead_ms']:>9.0f}"
              f"{r['window_s']:>9.2f}{r['encoder_ms_per_window']:>7.1f}{r['val_diff']:>9.3f}{r['val_r_stream']:>8.3f}{r['val_r_offline']:>7.3f}{xd:>8.3f}"
              f"{r['cross_mean_r_stream']:>9.3f}{r['cross_mean_r_offline']:>7.3f}")
    return out


def encoder_ms(enc, wav: np.ndarray, lay, first: int, n: int = 16) -> float:
    """Wall ms per window of the encoder on ``n`` of ``lay``'s windows from frame ``first`` on
    (one batch, after one warm-up window): what a live session costs per frame at hop 1."""
    groups = lay.groups(first, first + n, None)
    windows = np.stack([W.window_audio(wav, W.STATES_PER_FRAME * a - lay.history, end, 0, lay.span) for a, _, end in groups])
    W.group_states(enc, windows[:1], lay)
    t0 = time.perf_counter()
    W.group_states(enc, windows, lay, batch=n)
    return (time.perf_counter() - t0) * 1e3 / n


def position(anchor: dict, model: str, layers: list[int]) -> list[dict]:
    """How much a state depends on where its moment sits in the 30 s window vs how much audio
    surrounds it: a 10 s stretch of the anchor (from 25 s) in the middle of its window (10 s
    of audio on each side) against the same stretch 2, 10 and 50 states later in the window,
    and against the same window with the audio more than 0.5 / 2 / 5 s from the stretch zeroed."""
    enc = all_layers_encoder(model)
    idx = [enc.layers.index(L) for L in layers]
    r0, p, span = 25 * 50, 500, 500
    ref_win = W.window_audio(anchor["wav"], r0 - p)
    ref = W.encode(enc, ref_win[None])[idx, 0, p : p + span].numpy()
    nbr = [rel_diff(ref[i][1:], ref[i][:-1]) for i in range(len(idx))]
    out = []
    for d in (2, 10, 50):
        h = W.encode(enc, W.window_audio(anchor["wav"], r0 - p - d)[None])[idx, 0, p + d : p + d + span].numpy()
        out.append({"change": f"{d} states later in the window", **{f"L{L}": rel_diff(h[i], ref[i]) for i, L in enumerate(layers)}})
    for c in (5.0, 2.0, 0.5):
        w = ref_win.copy()
        a, b = 320 * p - int(c * 16000), 320 * (p + span) + int(c * 16000)
        w[: max(a, 0)] = 0
        w[b:] = 0
        h = W.encode(enc, w[None])[idx, 0, p : p + span].numpy()
        out.append({"change": f"context cut to {c:g} s each side", **{f"L{L}": rel_diff(h[i], ref[i]) for i, L in enumerate(layers)}})
    out.append({"change": "neighbouring state (for scale)", **{f"L{L}": nbr[i] for i, L in enumerate(layers)}})
    print(f"\nposition vs context ({model}; median |change| / |state| over 500 states)")
    print(f"{'change':<36}" + "".join(f"{'L' + str(L):>8}" for L in layers))
    for r in out:
        print(f"{r['change']:<36}" + "".join(f"{r[f'L{L}']:>8.3f}" for L in layers))
    return out


def parse_layout(text: str):
    """``chunked:CHUNK_S:CONTEXT_S`` or ``slide:HISTORY_S:HOP_FRAMES:LOOKAHEAD_MS`` (``default``: the kinds')."""
    if text == "default":
        return offline_layout()
    kind, *v = text.split(":")
    if kind == "chunked":
        return ("chunked", float(v[0]), float(v[1]))
    return W.Layout(float(v[0]), int(v[1]), float(v[2])).check()


def main() -> int:
    ap = H.parser(__doc__, "whisper_probe")
    ap.add_argument("--data", type=Path, default=REPO.parent / "data")
    ap.add_argument("--anchor", default="anchor")
    ap.add_argument("--families", nargs="+", default=["mel", "tiny.en", "base"])
    ap.add_argument("--layout", default="default", help="slide:HISTORY_S:HOP_FRAMES:LOOKAHEAD_MS, chunked:CHUNK_S:CONTEXT_S or default")
    ap.add_argument("--neighbours", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--no-variants", action="store_true", help="skip the pitch-shifted and noisy val audio")
    ap.add_argument("--no-probe", action="store_true", help="skip the main table")
    ap.add_argument("--chunking", action="store_true", help="compare offline chunk/context settings")
    ap.add_argument("--position", action="store_true", help="state change with window position vs context")
    ap.add_argument("--in-speaker", action="store_true", help="within-clip cross-validated probe r of every clip")
    ap.add_argument("--folds", type=int, default=5, help="folds of --in-speaker")
    ap.add_argument("--in-speaker-layer", type=int, default=3)
    ap.add_argument("--streaming", nargs="*", default=None, metavar="H:HOP:AHEAD_MS[:WINDOW_S][@val]",
                    help="compare WhisperStream layouts with the offline features (no value: a default grid)")
    ap.add_argument("--probe-model", default="tiny.en", help="model of --chunking / --streaming")
    ap.add_argument("--probe-layers", type=int, nargs="+", default=[2, 3])
    ap.add_argument("--speakers", nargs="+", default=list(SPEAKERS))
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "talkgs-whisper-probe")
    ap.add_argument("--max-layer", type=int, default=99, help="compute layers 0..this only (saves time)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    for k in MAX_LAYER:
        MAX_LAYER[k] = args.max_layer
    import torch

    torch.set_num_threads(args.threads)
    args.cache.mkdir(parents=True, exist_ok=True)
    layout = parse_layout(args.layout)
    anchor = load(args.data / args.anchor)
    others = [load(args.data / s) for s in args.speakers if (args.data / s / "meta.json").is_file()]
    missing = [s for s in args.speakers if not (args.data / s / "meta.json").is_file()]
    if missing:
        print(f"missing speakers (not prepared): {', '.join(missing)}")
    variants = {} if (args.no_variants or args.no_probe) else {
        "pitch+3": pitch_shift(anchor["wav"], 3.0),
        "pitch-3": pitch_shift(anchor["wav"], -3.0),
        "noise10dB": add_noise(anchor["wav"], 10.0),
    }
    rows: list[dict] = []
    if not args.no_probe:
        t0 = time.perf_counter()
        table = probe_table(anchor, others, variants, args.cache, args.neighbours, args.families, layout)
        print(f"\nlayout {layout!r} ({time.perf_counter() - t0:.0f} s)")
        print_table(table, others, variants)
        best = {}
        for fam in args.families:
            cand = [r for r in table if r["family"] == fam and r["neighbours"] == 0 and fam != "mel"]
            if cand:
                b = max(cand, key=lambda r: r["score"])
                best[fam] = {"layer": b["layer"], "score": b["score"], "val_r": b["val_r"], "cross_mean_r": b["cross_mean_r"]}
        if best:
            print("\nbest layer (k = 0, mean of val r and mean cross-speaker r): "
                  + ", ".join(f"{k} L{v['layer']} ({v['score']:.3f})" for k, v in best.items()))
        run = f"{args.layout} {' '.join(args.families)}"
        rows += [{"measure": "layers", "run": run, **r} for r in table]
        rows += [{"measure": "best_layer", "run": run, "family": k, **v} for k, v in best.items()]
    if args.in_speaker:
        models = [f for f in args.families if f in MODELS]
        rows += [{"measure": "in_speaker", **r} for r in in_speaker(anchor, others, models, args.in_speaker_layer, args.cache, args.folds)]
    if args.position:
        rows += [{"measure": "position", "model": args.probe_model, **r} for r in position(anchor, args.probe_model, list(range(1, 5)))]
    if args.chunking:
        rows += [{"measure": "chunking", **r} for r in chunking(anchor, others, args.probe_model, args.probe_layers, args.cache)]
    if args.streaming is not None:
        specs = args.streaming or ["5:5:40", "5:5:120", "5:5:200", "5:5:400", "5:5:1000", "2:5:200", "10:5:200", "5:1:200@val"]
        speakers = [d["name"] for d in others]
        rows += [{"measure": "streaming", "speakers": speakers, **r}
                 for r in streaming(anchor, others, args.probe_model, args.probe_layers, args.cache, specs)]
    H.write("whisper_probe", args, rows, device="cpu", params={k: v for k, v in vars(args).items() if k not in ("out", "name", "cache")},
            setup={"anchor": anchor["name"], "train": anchor["split"]["train"], "val": anchor["split"]["val"],
                   "speakers": [d["name"] for d in others], "missing_speakers": missing, "torch_threads": args.threads,
                   "platform": platform.platform()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
