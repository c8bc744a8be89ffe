"""How long the command line takes to answer `--help` and to refuse bad input.

Every refusal that needs no model must answer in well under a second (target < 0.5 s on a
2-core CPU): arguments and paths are checked by `talkgs.validate` before torch or a media
library is imported. Each command runs ``--repeat`` times as a fresh process (the way a user
runs it); the table shows the median and the fastest wall time, and whether the process
imported torch (``-X importtime``, on one extra run). Refusals must exit 2 with one line.

    python bench/cli_latency.py --dataset /work/data/anchor [--run RUN] [--repeat 7]

Writes bench/results/cli_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], env: dict) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "talkgs.cli", *args], capture_output=True, text=True, env=env, cwd=REPO)
    return time.perf_counter() - t0, r.returncode, r.stderr


def _imports_torch(args: list[str], env: dict) -> bool:
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "talkgs.cli", *args], capture_output=True,
                       text=True, env=env, cwd=REPO)
    return any(line.rstrip().endswith("| torch") for line in r.stderr.splitlines())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, required=True, help="a prepared dataset (read only)")
    ap.add_argument("--run", type=Path, default=None, help="a trained run (read only); adds render refusals")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cli_latency.json")
    a = ap.parse_args()

    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    tmp = Path(tempfile.mkdtemp(prefix="cli_latency."))
    speech = tmp / "speech.mp4"
    speech.write_bytes(b"not read: the refusal comes first")
    ds = str(a.dataset.resolve())
    cases: list[tuple[str, list[str], int]] = [
        ("talkgs --help", ["--help"], 0),
        ("talkgs train --help", ["train", "--help"], 0),
        ("talkgs render --help", ["render", "--help"], 0),
        ("prepare: input is a folder", ["prepare", str(tmp), "-o", str(tmp / "ds")], 2),
        ("train: --batch-size 0", ["train", ds, "-o", str(tmp / "run"), "--batch-size", "0"], 2),
        ("train: unknown --audio-kind", ["train", ds, "-o", str(tmp / "run"), "--audio-kind", "wav2vec"], 2),
        ("export-tg: -o is the dataset", ["export-tg", ds, "-o", ds, "--force"], 2),
    ]
    if a.run is not None:
        run = str(a.run.resolve())
        cases += [
            ("render: missing --audio", ["render", run, "--audio", str(tmp / "missing.wav"), "-o", str(tmp / "o.mp4")], 2),
            ("render: -o is the --audio", ["render", run, "--audio", str(speech), "-o", str(speech)], 2),
            ("render: other --audio-kind", ["render", run, "--audio", str(speech), "-o", str(tmp / "o.mp4"), "--audio-kind", "hubert"], 2),
        ]
    rows = []
    for name, args, want in cases:
        _run(args, env)  # warm the file cache
        times, lines = [], ""
        for _ in range(a.repeat):
            dt, rc, err = _run(args, env)
            if rc != want:
                raise SystemExit(f"{name}: exit {rc}, expected {want}: {err.strip()[-300:]}")
            times.append(dt)
            lines = err.strip()
        if want == 2 and (len(lines.splitlines()) != 1 or not lines.startswith("talkgs: ")):
            raise SystemExit(f"{name}: not a one-line refusal: {lines!r}")
        rows.append({
            "case": name,
            "argv": args,
            "exit": want,
            "median_s": round(statistics.median(times), 3),
            "min_s": round(min(times), 3),
            "imports_torch": _imports_torch(args, env),
            "message": lines if want == 2 else None,
        })
    load = os.getloadavg()
    print(f"{'case':<32}{'median s':>10}{'min s':>8}  torch  message")
    for r in rows:
        print(f"{r['case']:<32}{r['median_s']:>10.3f}{r['min_s']:>8.3f}  {'yes' if r['imports_torch'] else 'no ':<5}  {r['message'] or ''}")
    print(f"load average during the run: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} ({os.cpu_count()} CPUs)")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_1_5_15": load},
        "repeat": a.repeat,
        "rows": rows,
    }, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
