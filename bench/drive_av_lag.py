"""Each prepared clip's own audio-video lag: the lag that maximises the correlation between its
audio's loudness (log RMS per video frame) and its tracked mouth opening (tracks ``mouth_open``).

    python bench/drive_av_lag.py DATASET [DATASET ...] [--max-lag 6]

Why: `talkgs eval RUN --drive OTHER` reports the offset between the head's mouth (driven by
OTHER's audio) and OTHER's own mouth. A head that opens its mouth where the sound is (as on its
training clip) shows OTHER's own audio-to-mouth lag there, relative to the training clip's: a
recording whose picture leads its sound, or a speaker who opens early, reads as a late head.
This gives that baseline per clip, with no model involved. Loudness is a crude proxy of the
mouth (r ~0.1-0.5), so short clips give uncertain lags; the table shows the correlation at each
lag, and the lag > 0 means the mouth moves after the sound. Writes bench/results/drive_av_lag/cpu.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import _harness as H  # bench/ is on sys.path; it puts the checkout there too
from talkgs.conventions import SAMPLES_PER_FRAME
from talkgs.media import read_wav
from talkgs.metrics.lips import best_lag, lagged_correlations


def loudness(wav: np.ndarray, n: int) -> np.ndarray:
    """``[n]`` log RMS of each video frame's 640 samples (zero-padded at the end)."""
    x = np.zeros(n * SAMPLES_PER_FRAME, np.float64)
    m = min(len(wav), len(x))
    x[:m] = wav[:m]
    return np.log(np.sqrt((x.reshape(n, -1) ** 2).mean(1)) + 1e-5)


def main() -> int:
    ap = H.parser(__doc__, "drive_av_lag")
    ap.add_argument("datasets", type=Path, nargs="+", help="prepared clips")
    ap.add_argument("--max-lag", type=int, default=6, help="largest lag searched (frames, either way)")
    args = ap.parse_args()
    rows = []
    for root in args.datasets:
        mouth = np.load(root / "tracks.npz")["mouth_open"].astype(np.float64)
        wav, _ = read_wav(root / "audio.wav")
        # The eval's convention: the mouth against the sound, lag > 0 = the mouth later.
        loud = loudness(wav, len(mouth))
        rs = lagged_correlations(mouth, loud, args.max_lag)
        lag, r = best_lag(mouth, loud, args.max_lag)
        by_lag = {k: float(v) for k, v in zip(range(-args.max_lag, args.max_lag + 1), rs)}
        rows.append({"dataset": root.name, "frames": len(mouth), "lag": lag, "r": r, "r_by_lag": by_lag})
    print(f"{'clip':<12}{'frames':>7}{'lag':>5}{'r':>7}   r at lag " + " ".join(f"{k:>5}" for k in rows[0]["r_by_lag"]))
    for r in rows:
        print(f"{r['dataset']:<12}{r['frames']:>7}{r['lag']:>+5}{r['r']:>7.2f}   " + " " * 9
              + " ".join(f"{v:>5.2f}" for v in r["r_by_lag"].values()))
    H.write("drive_av_lag", args, rows, device="cpu", note="numpy only: the figures do not depend on the machine")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
