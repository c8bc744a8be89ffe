"""One table of trained runs on the mouth up close: per run its clip, preset, variant and seed,
the val image metrics (whole frame, head, mouth crop), lip sync (MediaPipe: mouth r, offset,
amplitude, LMD) and the inside of the mouth (area r, area ratio on open frames, teeth score).

    python bench/mouth_table.py RUN [RUN ...] [--note "..."]

Reads each RUN's eval/metrics.json (`talkgs eval`, or bench/train.py's eval) and config.json,
and RUN.json beside RUN when bench/train.py wrote it (--out RUN.json: training wall time,
Gaussian counts, the variant). Writes bench/results/mouth/<--name>.json, rows of ``measure``
run, then one ``measure`` mean row per (clip, preset, variant) with the seed spread of each
figure (min and max over seeds).
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import _harness as H  # bench/ is on sys.path; it puts the checkout there too

FIGURES = ("psnr", "head_psnr", "lpips", "mouth_psnr", "mouth_ssim", "mouth_lpips", "lips_r", "lips_offset",
           "lips_amplitude", "lmd_px", "mouth_area_r", "mouth_area_ratio_open", "teeth", "train_wall_s")


def _num(x):
    return float(x) if isinstance(x, (int, float)) and math.isfinite(float(x)) else None


def run_row(run: Path) -> dict:
    m = json.loads((run / "eval" / "metrics.json").read_text())
    cfg = json.loads((run / "config.json").read_text())
    mean, lips = m["mean"], m["sections"]["val"].get("lips", {})
    mouth = lips.get("mouth", {})
    row = {"run": run.name, "clip": Path(cfg["dataset"]).name, "preset": cfg.get("preset", "default"),
           "variant": "none", "seed": cfg.get("seed"),
           "psnr": _num(mean.get("psnr")), "head_psnr": _num(mean.get("head_psnr")), "lpips": _num(mean.get("lpips")),
           "mouth_psnr": _num(mean.get("mouth_psnr")), "mouth_ssim": _num(mean.get("mouth_ssim")),
           "mouth_lpips": _num(mean.get("mouth_lpips")),
           "lips_r": _num(lips.get("r")), "lips_offset": lips.get("offset"), "lips_amplitude": _num(lips.get("amplitude")),
           "lmd_px": _num(lips.get("lmd_px")), "mouth_area_r": _num(mouth.get("area_r")),
           "mouth_area_ratio_open": _num(mouth.get("area_ratio_open")), "teeth": _num(mouth.get("teeth")),
           "n_open": mouth.get("n_open"), "n_teeth_gt": mouth.get("n_teeth_gt")}
    bench = run.parent / f"{run.name}.json"
    if bench.exists():
        b = json.loads(bench.read_text())
        row["variant"] = (b.get("setup") or {}).get("variant", "none")
        total = next((r for r in b["rows"] if r["measure"] == "total"), {})
        row["train_wall_s"] = total.get("train_wall_s")
        row["gaussians"] = total.get("num_gaussians")
    return row


def group_means(rows: list[dict]) -> list[dict]:
    groups = defaultdict(list)
    for r in rows:
        groups[(r["clip"], r["preset"], r["variant"])].append(r)
    out = []
    for (clip, preset, variant), rs in sorted(groups.items()):
        g = {"clip": clip, "preset": preset, "variant": variant, "seeds": sorted(r["seed"] for r in rs)}
        for k in FIGURES:
            vals = [r[k] for r in rs if isinstance(r.get(k), (int, float))]
            if vals:
                g[k] = sum(vals) / len(vals)
                g[f"{k}_range"] = [min(vals), max(vals)]
        out.append(g)
    return out


def main() -> int:
    ap = H.parser(__doc__, "mouth")
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--note", default=None, help="one sentence a reader needs (e.g. runs trained side by side)")
    ap.add_argument("--device", default=None,
                    help="the device the runs trained and rendered on, as named in their results (default: this machine)")
    args = ap.parse_args()
    rows = [run_row(r) for r in args.runs if (r / "eval" / "metrics.json").exists()]
    if not rows:
        raise SystemExit("mouth_table: no RUN has eval/metrics.json")
    means = group_means(rows)
    H.write("mouth", args, [{"measure": "run", **r} for r in rows] + [{"measure": "mean", **g} for g in means],
            device=args.device, params={"runs": [str(r) for r in args.runs]}, note=args.note)
    cols = ("clip", "preset", "variant", "seeds", "psnr", "head_psnr", "mouth_psnr", "mouth_ssim", "mouth_lpips",
            "lips_r", "mouth_area_r", "mouth_area_ratio_open", "teeth")
    print(" | ".join(cols))
    for g in means:
        print(" | ".join(f"{g[c]:.4f}" if isinstance(g.get(c), float) else str(g.get(c)) for c in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
