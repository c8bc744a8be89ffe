"""Lip-sync benchmark: train named variants, evaluate each (val, a training block, every --drive
clip) with `talkgs eval`, print ONE table and write JSON.

    python bench/lipsync.py DATASET --runs RUNS --variant base= --variant mel=--audio-kind mel \\
        --drive data/german --drive data/obama [--gpus 0,1 --jobs-per-gpu 3] [--time-limit 560] \\
        [--train-flags "--preset quick --image-scale 0.125 --device cpu"] [--eval-flags "--device cpu"] \\
        [--ablation [NAME ...]] [--copy-eval-to DIR] [--out bench/results/lipsync.json]

A variant is NAME=EXTRA_TRAIN_FLAGS (flags of `talkgs train`, added after --train-flags; write
a single flag value as --train-flags=--seed=1, so argparse does not read it as its own).
``--ablation`` adds the lip-sync ablation's variants (all, or the NAMEs given; see ABLATION):
the original design, each of its three changes alone (Whisper features, the mouth state, the
landmark loss with the lower-face grid) and all three with mel and with Whisper. They set model
fields that `talkgs train` does not offer, so this script trains them itself (``--train-variant``)
with --train-flags over them (``--preset quick`` there scales them down as the quick preset does).
Each variant is one job: `talkgs train DATASET -o RUNS/NAME ...` then `talkgs eval RUNS/NAME --drive ...`,
run as subprocesses; jobs run side by side, --jobs-per-gpu on each of --gpus (CUDA_VISIBLE_DEVICES
per job; no --gpus: one job at a time, on whatever the subprocess picks). --time-limit stops
everything still running at that many seconds with SIGINT (a training saves a resumable
checkpoint), never starts a job after it, and still reports whatever finished.

Other modes: --eval-only (evaluate existing runs: RUNS/NAME of every --variant, or --run
NAME=PATH), --lips-only (complete the lip metrics of evaluated runs with `talkgs eval RUN
--lips-only`, on a CPU with MediaPipe; --run NAME=PATH or every RUNS/*/eval/metrics.json), and
--table-only (print the table of evaluated runs). --copy-eval-to DIR copies each finished run's
eval folder and job record to DIR/NAME (small: what to bring back from a GPU machine).

Rows: variant x {val, train, each drive clip, the mean over the drive clips}; columns: mouth r,
amplitude, LMD, offset (MediaPipe mouth opening of the render vs the ground truth; offset > 0 =
render later), area r / offset (visible inside-mouth area vs mouth-interior labels; no
MediaPipe needed), PSNR / head PSNR (val, train) and training seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
JOB_FILE = "bench_job.json"

# The lip-sync ablation: NAME -> (preset, {dotted TrainConfig field: value}) over that preset.
ABLATION: dict[str, tuple[str, dict]] = {
    "orig": ("original", {}),
    "whisper": ("original", {"audio_kind": "whisper"}),
    "state": ("original", {"model.conditioning": "mouth_state"}),
    "landmarks": ("default", {"audio_kind": "mel", "model.conditioning": "audio"}),
    "combined_mel": ("default", {"audio_kind": "mel"}),
    "combined": ("default", {}),
}


def with_fields(cfg, fields: dict):
    """``cfg`` with dotted fields (``"model.face_motion.lower_face_grid"``) set."""
    for path, value in fields.items():
        head, _, rest = path.partition(".")
        value = with_fields(getattr(cfg, head), {rest: value}) if rest else value
        cfg = dataclasses.replace(cfg, **{head: value})
    return cfg


def variant_config(name: str, args: list[str]):
    """The TrainConfig of ablation variant ``name`` with the `talkgs train` flags ``args`` set over
    it (``--preset quick`` among them applies the quick preset to the variant)."""
    import tyro

    from talkgs.train.config import PRESETS, TrainConfig

    preset, fields = ABLATION[name]
    cfg = with_fields(TrainConfig.from_preset(preset, tyro.MISSING, tyro.MISSING), fields)
    rest, extra = [], []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--preset" or a.startswith("--preset="):
            value = args[i + 1] if a == "--preset" and i + 1 < len(args) else a.partition("=")[2]
            if value not in ("default", "quick"):
                raise SystemExit(f"lipsync: ablation variant {name} is --preset {preset}; --train-flags may add --preset quick only")
            extra.append(value)
            i += 2 if a == "--preset" else 1
            continue
        rest.append(a)
        i += 1
    for p in extra:
        cfg = PRESETS[p](cfg)
    return tyro.cli(TrainConfig, default=cfg, args=rest, prog=f"lipsync --train-variant {name}")


def train_variant(name: str, args: list[str]) -> int:
    """`talkgs train` of ablation variant ``name`` (``args``: DATASET -o RUN and other flags)."""
    from talkgs.cli import run_command

    if name not in ABLATION:
        raise SystemExit(f"lipsync: unknown ablation variant {name!r} ({', '.join(ABLATION)})")
    return run_command(variant_config(name, args))


def beside(run: Path, name: str) -> Path:
    """RUNS/NAME.<name>: the bench's own files sit beside a run, never in it (talkgs train
    refuses an output folder that holds anything but a run)."""
    return run.parent / f"{run.name}.{name}"


def parse_named(items: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or "/" in name:
            raise SystemExit(f"lipsync: {what} must be NAME=VALUE, got {item!r}")
        if name in out:
            raise SystemExit(f"lipsync: {what} {name} given twice")
        out[name] = value
    return out


class Job:
    """One variant: train (unless evaluating an existing run), then eval, as subprocesses."""

    def __init__(self, name: str, run: Path, steps: list[tuple[str, list[str]]], flags: str):
        self.name, self.run, self.steps, self.flags = name, run, steps, flags
        self.step = 0
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.gpu: str | None = None
        self.record: dict = {"name": name, "run": str(run), "flags": flags, "status": "not started"}
        self.log = None
        self.env: dict = {}

    def start_next(self, env: dict) -> None:
        what, cmd = self.steps[self.step]
        self.run.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(beside(self.run, f"bench_{what}.log"), "w")
        self.log.write("$ " + shlex.join(cmd) + "\n")
        self.log.flush()
        self.started = time.perf_counter()
        # Own process group: the time limit's SIGINT reaches the job, not this script.
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.record["status"] = f"{what} running"

    def poll(self) -> bool:
        """True when the job has nothing left to run."""
        if self.proc is None:
            return False
        rc = self.proc.poll()
        if rc is None:
            return False
        what, _ = self.steps[self.step]
        self.record[f"{what}_s"] = round(time.perf_counter() - self.started, 1)
        self.log.close()
        self.proc = None
        if rc != 0:
            self.record["status"] = f"{what} interrupted" if rc in (130, -2) else f"{what} failed (exit {rc}, see {beside(self.run, 'bench_' + what + '.log')})"
            return True
        self.step += 1
        if self.step == len(self.steps):
            self.record["status"] = "done"
            return True
        return False

    def interrupt(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)


def run_jobs(jobs: list[Job], gpus: list[str], per_gpu: int, time_limit: float | None) -> None:
    """Run the jobs, at most ``per_gpu`` per GPU (one at a time without GPUs), until done or the
    time limit; at the limit, SIGINT everything running and wait for it (SIGKILL after 30 s)."""
    slots = [g for g in gpus for _ in range(per_gpu)] if gpus else [None]
    free = list(slots)
    pending = list(jobs)
    running: list[Job] = []
    t0 = time.perf_counter()
    base_env = dict(os.environ)
    base_env["PYTHONPATH"] = str(REPO) + (os.pathsep + base_env["PYTHONPATH"] if base_env.get("PYTHONPATH") else "")
    stopped = False
    while pending or running:
        over = time_limit is not None and time.perf_counter() - t0 > time_limit
        if over and not stopped:
            stopped = True
            print(f"[lipsync] time limit {time_limit:.0f} s: stopping {len(running)} running job(s)", flush=True)
            for j in pending:
                j.record["status"] = "not started (time limit)"
            pending = []
            for j in running:
                j.interrupt()
            grace_end = time.perf_counter() + 30.0
        if stopped and time.perf_counter() > grace_end:
            for j in running:
                j.kill()
        while pending and free and not stopped:
            j = pending.pop(0)
            j.gpu = free.pop(0)
            env = dict(base_env)
            if j.gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = j.gpu
            j.record["gpu"] = j.gpu
            j.env = env
            j.start_next(env)
            running.append(j)
            print(f"[lipsync] {j.name}: {j.steps[0][0]} on GPU {j.gpu}" if j.gpu is not None else f"[lipsync] {j.name}: {j.steps[0][0]}", flush=True)
        for j in list(running):
            if j.poll():
                running.remove(j)
                free.append(j.gpu)
                j.record["stopped_by_time_limit"] = stopped
                beside(j.run, JOB_FILE).write_text(json.dumps(j.record, indent=2) + "\n")
                print(f"[lipsync] {j.name}: {j.record['status']} ({time.perf_counter() - t0:.0f} s)", flush=True)
            elif j.proc is None:  # a step finished; start the next one in the same slot
                if stopped:
                    j.record["status"] = f"{j.steps[j.step][0]} not started (time limit)"
                    running.remove(j)
                    beside(j.run, JOB_FILE).write_text(json.dumps(j.record, indent=2) + "\n")
                    continue
                j.start_next(j.env)
        time.sleep(0.5)


# --------------------------------------------------------------------------- the table


def _nanmean(xs):
    xs = [x for x in xs if x is not None and np.isfinite(x)]
    return float(np.mean(xs)) if xs else float("nan")


def variant_rows(metrics: dict) -> tuple[dict, dict | None]:
    """Per section: the figures of the table; and the mean over the drive clips (None without)."""
    rows = {}
    for name, e in metrics.get("sections", {}).items():
        lips, la, img = e.get("lips", {}), e.get("label_area", {}), e.get("image", {})
        rows[name] = {
            "frames": e["n_frames"], "mouth_r": lips.get("r"), "amplitude": lips.get("amplitude"),
            "lmd_px": lips.get("lmd_px"), "offset": lips.get("offset"), "area_r": la.get("r"),
            "area_offset": la.get("offset"), "psnr": img.get("psnr"), "head_psnr": img.get("head_psnr"),
        }
    drives = [r for k, r in rows.items() if k.startswith("drive:")]
    if not drives:
        return rows, None
    offs = [r["offset"] for r in drives if r["offset"] is not None]
    mean = {
        "frames": sum(r["frames"] for r in drives),
        "mouth_r": _nanmean([r["mouth_r"] for r in drives]),
        "amplitude": _nanmean([r["amplitude"] for r in drives]),
        "offset": _nanmean(offs) if offs else None,
        "max_abs_offset": max(abs(o) for o in offs) if offs else None,
        "area_r": _nanmean([r["area_r"] for r in drives]),
        "area_offset": _nanmean([r["area_offset"] for r in drives]),
        "n_clips": len(drives),
    }
    return rows, mean


def _f(v, spec: str, w: int) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return f"{'-':>{w}}"
    return f"{format(v, spec):>{w}}"


def table(results: dict) -> list[str]:
    head = (f"{'variant':<14}{'section':<18}{'frames':>7}{'mouth r':>9}{'amp':>7}{'LMD':>7}{'offset':>8}"
            f"{'area r':>8}{'area off':>9}{'PSNR':>8}{'head':>8}{'train s':>9}")
    lines = [head, "-" * len(head)]
    for name, v in results["variants"].items():
        rows = v.get("sections") or {}
        if not rows:
            lines.append(f"{name:<14}{v['status']}")
            continue
        first = True
        items = list(rows.items()) + ([("drive mean", v["drive_mean"])] if v.get("drive_mean") else [])
        for sec, r in items:
            off = r.get("offset")
            off_s = _f(off, "+.1f" if sec == "drive mean" else "+d", 8) if off is not None else _f(None, "", 8)
            aoff = r.get("area_offset")
            aoff_s = _f(aoff, "+.1f" if sec == "drive mean" else "+d", 9) if aoff is not None else _f(None, "", 9)
            lines.append(
                f"{(name if first else ''):<14}{sec.replace('drive:', ''):<18}{r['frames']:>7}{_f(r.get('mouth_r'), '.3f', 9)}"
                f"{_f(r.get('amplitude'), '.2f', 7)}{_f(r.get('lmd_px'), '.2f', 7)}{off_s}"
                f"{_f(r.get('area_r'), '.3f', 8)}{aoff_s}{_f(r.get('psnr'), '.2f', 8)}"
                f"{_f(r.get('head_psnr'), '.2f', 8)}{_f(v.get('train_s') if first else None, '.0f', 9)}"
            )
            first = False
        if v["status"] != "done" or v.get("lips_pending"):
            lines.append(f"{'':<14}({v['status']}{'; lip metrics pending: --lips-only' if v.get('lips_pending') else ''})")
    return lines


def collect(name: str, run: Path, flags: str | None = None, record: dict | None = None) -> dict:
    """A variant's row data: this bench's job record (else the one saved in RUN) and its eval."""
    rec_path = beside(run, JOB_FILE)
    if record is None:
        record = json.loads(rec_path.read_text()) if rec_path.is_file() else {"status": "done"}
    rec = record
    out = {"run": str(run), "flags": flags if flags is not None else rec.get("flags"), "status": rec.get("status"),
           "train_s": rec.get("train_s"), "eval_s": rec.get("eval_s"), "gpu": rec.get("gpu")}
    mpath = run / "eval" / "metrics.json"
    if mpath.is_file() and rec.get("status") == "done":
        m = json.loads(mpath.read_text())
        rows, mean = variant_rows(m)
        out.update(sections=rows, drive_mean=mean, lips_pending=bool(m.get("lips_pending")),
                   device=m.get("device"), image_size=m.get("image_size"), notes=m.get("notes", {}))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path, nargs="?", help="the dataset every variant trains on")
    ap.add_argument("--runs", type=Path, default=Path("/tmp/lipsync_runs"), help="run folders RUNS/NAME")
    ap.add_argument("--variant", action="append", default=[], help="NAME=EXTRA_TRAIN_FLAGS (repeatable)")
    ap.add_argument("--ablation", nargs="*", default=None, metavar="NAME",
                    help=f"add the ablation's variants: all, or these of {', '.join(ABLATION)}")
    ap.add_argument("--run", action="append", default=[], help="NAME=RUN_FOLDER of an existing run (repeatable)")
    ap.add_argument("--drive", action="append", default=[], type=Path, help="another prepared clip (repeatable)")
    ap.add_argument("--train-flags", default="", help="flags of `talkgs train` for every variant")
    ap.add_argument("--eval-flags", default="", help="flags of `talkgs eval` for every variant")
    ap.add_argument("--gpus", default="", help="comma-separated GPU ids, e.g. 0,1 (CUDA_VISIBLE_DEVICES per job)")
    ap.add_argument("--jobs-per-gpu", type=int, default=1)
    ap.add_argument("--time-limit", type=float, default=None, help="seconds; stop what still runs, report what finished")
    ap.add_argument("--eval-only", action="store_true", help="evaluate existing runs (no training)")
    ap.add_argument("--lips-only", action="store_true", help="complete the lip metrics of evaluated runs (MediaPipe)")
    ap.add_argument("--table-only", action="store_true", help="print the table of evaluated runs")
    ap.add_argument("--copy-eval-to", type=Path, default=None, help="copy each run's eval folder + job record here")
    ap.add_argument("--out", type=Path, default=REPO / "bench/results/lipsync.json")
    args = ap.parse_args()

    variants = parse_named(args.variant, "--variant")
    ablation = list(ABLATION) if args.ablation == [] else (args.ablation or [])
    for name in ablation:
        if name not in ABLATION:
            raise SystemExit(f"lipsync: unknown ablation variant {name!r} ({', '.join(ABLATION)})")
        if name in variants:
            raise SystemExit(f"lipsync: variant {name} given twice")
        preset, fields = ABLATION[name]
        variants[name] = f"(ablation: --preset {preset} {json.dumps(fields)})"
    existing = {k: Path(v) for k, v in parse_named(args.run, "--run").items()}
    modes = args.eval_only + args.lips_only + args.table_only
    if modes > 1:
        raise SystemExit("lipsync: --eval-only, --lips-only and --table-only exclude each other")
    if (args.lips_only or args.table_only) and not existing and not variants:
        existing = {p.parent.parent.name: p.parent.parent for p in sorted(args.runs.glob("*/eval/metrics.json"))}
    runs = dict(existing)
    for name in variants:
        runs.setdefault(name, args.runs / name)
    if not runs:
        raise SystemExit("lipsync: nothing to do: give --variant NAME=FLAGS (or --run NAME=PATH)")
    if not (args.lips_only or args.table_only) and args.dataset is None and not args.eval_only:
        raise SystemExit("lipsync: training needs the DATASET argument")

    t0 = time.perf_counter()
    py = [sys.executable, "-m", "talkgs"]
    records: dict[str, dict] = {}
    if args.lips_only:
        for name, run in runs.items():
            print(f"[lipsync] {name}: talkgs eval {run} --lips-only", flush=True)
            r = subprocess.run(py + ["eval", str(run), "--lips-only", "--no-progress"], capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")})
            if r.returncode != 0:
                print(f"[lipsync] {name}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
    elif not args.table_only:
        drive_flags = [x for d in args.drive for x in ("--drive", str(d))]
        eval_common = shlex.split(args.eval_flags) + ["--no-progress"] + drive_flags
        jobs = []
        for name, run in runs.items():
            steps = []
            if not args.eval_only and name not in existing:
                where = [str(args.dataset), "-o", str(run), "--no-progress"] + shlex.split(args.train_flags)
                if name in ablation:
                    steps.append(("train", [sys.executable, str(Path(__file__).resolve()), "--train-variant", name] + where))
                else:
                    steps.append(("train", py + ["train"] + where + shlex.split(variants[name])))
            steps.append(("eval", py + ["eval", str(run)] + eval_common))
            jobs.append(Job(name, run, steps, variants.get(name, "")))
        gpus = [g for g in args.gpus.split(",") if g.strip()]
        run_jobs(jobs, gpus, max(1, args.jobs_per_gpu), args.time_limit)
        for j in jobs:
            records[j.name] = j.record
            if not j.run.is_dir():
                continue
            path = beside(j.run, JOB_FILE)
            rec = json.loads(path.read_text()) if path.is_file() else {}
            if "train_s" not in j.record and "train_s" in rec:  # eval-only: keep the earlier training time
                j.record["train_s"] = rec["train_s"]
            path.write_text(json.dumps(j.record, indent=2) + "\n")

    results = {
        "dataset": str(args.dataset) if args.dataset else None,
        "drives": [str(d) for d in args.drive],
        "train_flags": args.train_flags, "eval_flags": args.eval_flags,
        "gpus": args.gpus, "jobs_per_gpu": args.jobs_per_gpu, "time_limit_s": args.time_limit,
        "wall_s": round(time.perf_counter() - t0, 1),
        "offset_sign": "offset > 0: the render's mouth moves later than the ground truth's (frames)",
        "variants": {name: collect(name, run, variants.get(name), records.get(name)) for name, run in runs.items()},
    }
    if args.copy_eval_to is not None:
        for name, run in runs.items():
            dst = args.copy_eval_to / name
            if (run / "eval").is_dir():
                shutil.copytree(run / "eval", dst / "eval", dirs_exist_ok=True)
            for src, f in ((beside(run, JOB_FILE), JOB_FILE), (run / "config.json", "config.json"),
                           (beside(run, "bench_train.log"), "bench_train.log"), (beside(run, "bench_eval.log"), "bench_eval.log"),
                           (run / "predictor.json", "predictor.json")):
                if src.is_file():
                    dst.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dst / f)
    lines = table(results)
    results["table"] = lines
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    pending = [n for n, v in results["variants"].items() if v.get("lips_pending")]
    print("\nlip sync (offset > 0: render later, frames; area = visible inside-mouth area vs mouth labels)")
    print("\n".join(lines))
    if pending:
        where = args.copy_eval_to or args.runs
        print(f"lip metrics pending (no MediaPipe here) for: {', '.join(pending)}; on a CPU with talkgs[prepare], "
              f"with the eval folders copied back: python bench/lipsync.py --lips-only --runs {where}")
    print(f"JSON: {args.out}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--train-variant"] and len(sys.argv) > 2:
        sys.exit(train_variant(sys.argv[2], sys.argv[3:]))
    sys.exit(main())
