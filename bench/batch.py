"""Jobs per minute of `talkgs batch` with 1 and 2 workers on the same jobs.

The jobs: ``--trains`` tiny trainings of DATASET (the cpu preset, a few steps at 32x32), each
followed by ``--renders`` renders of AUDIO by the head it trained. Each worker count runs them
afresh, in a folder of its own, as one ``talkgs batch`` process (the local executor, or a Ray
instance started by the batch with ``--ray``). A row: workers, jobs, wall time, jobs per minute,
and the CPU time of the batch and everything it waited for (local executor only: Ray's
processes are not its children). Each worker runs ``--threads`` torch threads (1 by default), so
the worker counts compare at the same threads per job.

    python bench/batch.py --dataset DATASET --audio AUDIO [--trains 2] [--renders 2] [--workers 1,2] [--threads 1] [--ray]

DATASET is only read (a prepared dataset with mel features). Writes
bench/results/batch/<name>.json.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _harness

TRAIN = ("--preset cpu --audio-kind mel --device cpu --image-scale 0.0625 --batch-size 1 --no-tensorboard "
         "--mouth.iterations 4 --face.iterations 40 --fuse.iterations 4")


def jobs_file(folder: Path, dataset: Path, audio: Path, trains: int, renders: int) -> Path:
    lines = []
    for t in range(trains):
        lines.append(f"train {dataset} -o runs/r{t} {TRAIN}")
        lines += [f"render runs/r{t} --audio {audio} -o out/r{t}_{k}.mp4 --device cpu" for k in range(renders)]
    path = folder / "jobs.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    ap = _harness.parser(__doc__, "batch")
    ap.add_argument("--dataset", type=Path, required=True, help="prepared dataset with mel features (only read)")
    ap.add_argument("--audio", type=Path, required=True, help="speech the renders say")
    ap.add_argument("--trains", type=int, default=2, help="trainings (each a head of its own)")
    ap.add_argument("--renders", type=int, default=2, help="renders per trained head")
    ap.add_argument("--workers", default="1,2", help="worker counts to measure, comma-separated")
    ap.add_argument("--ray", action="store_true", help="run the jobs as Ray actors (a Ray instance started by the batch)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of each worker (OMP_NUM_THREADS; 0: the batch's default, the cores shared out)")
    ap.add_argument("--note", default=None, help="one sentence a reader needs, e.g. what else ran on the machine")
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(_harness.REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("OMP_NUM_THREADS", None)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    rows = []
    for workers in [int(w) for w in args.workers.split(",")]:
        with tempfile.TemporaryDirectory(prefix="talkgs-bench-batch-") as tmp:
            folder = Path(tmp)
            jobs = jobs_file(folder, args.dataset.resolve(), args.audio.resolve(), args.trains, args.renders)
            n = args.trains * (1 + args.renders)
            cmd = [sys.executable, "-m", "talkgs.cli", "batch", str(jobs), "--workers", str(workers)]
            cmd += ["--ray"] if args.ray else []
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            r = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if r.returncode != 0:
                sys.exit(f"batch with {workers} worker(s) failed:\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            row = {"workers": workers, "executor": "ray" if args.ray else "local", "jobs": n, "wall_s": round(wall, 2),
                   "jobs_per_min": round(60.0 * n / wall, 2), "load_avg_1min_at_start": round(load, 2)}
            if not args.ray:
                row["cpu_s"] = round(cpu, 2)
            rows.append(row)
            print(row, flush=True)
    params = {k: v for k, v in vars(args).items() if k not in ("out", "name", "note")}
    _harness.write("batch", args, rows, device="cpu", params=params, setup={"train_flags": TRAIN, "cores": os.cpu_count()},
                   note=args.note)


if __name__ == "__main__":
    main()
