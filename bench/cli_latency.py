"""How long the command line takes to answer `--help` and to refuse bad input.

Every refusal must answer in well under a second on a 2-core CPU: each command's check
(talkgs.commands.<name>.check) reads arguments, paths and the inputs' contents (PyAV probe,
numpy headers, zip directories) before torch is imported. Each case runs ``--repeat`` times as
a fresh process (the way a user runs it); a row holds the median and fastest wall time, the
median CPU time of the process (user + system: what the wall time is on an idle machine with
a core to spare, whatever the load while measuring), the message, and whether the process
imported torch (``-X importtime``, one extra run). The script stops at a refusal that does not
exit 2 with one line, or that imports torch.

    python bench/cli_latency.py --dataset DATASET --run RUN [--repeat 7]

DATASET and RUN are only read (RUN: a mouth_state run trained on DATASET); the damaged copies
the cases need are made in a temporary folder. Writes bench/results/cli_latency/<name>.json.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _harness
import numpy as np

from talkgs.data import format as fmt
from talkgs.data.runs import check_checkpoint

REPO = _harness.REPO


def _run(args: list[str], env: dict) -> tuple[float, float, int, str]:
    """(wall s, CPU s of the process, exit status, stderr) of one ``talkgs ARGS``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "talkgs.cli", *args], capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, r.returncode, r.stderr


def _imports_torch(args: list[str], env: dict) -> bool:
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "talkgs.cli", *args], capture_output=True,
                       text=True, env=env, cwd=REPO)
    return any(line.rstrip().endswith("| torch") for line in r.stderr.splitlines())


def _view(src: Path, dst: Path, cut: str | None = None) -> Path:
    """A dataset folder linking to ``src``'s files, with ``cut`` replaced by its first half."""
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.is_file():
            (dst / p.name).symlink_to(p.resolve())
    if cut is not None:
        data = (src / cut).read_bytes()
        (dst / cut).unlink()
        (dst / cut).write_bytes(data[: len(data) // 2])
    return dst


def _inputs(tmp: Path, ds: Path, run: Path) -> dict[str, Path]:
    """The bad (and good) inputs of the cases, in ``tmp``."""
    from talkgs.media import write_video, write_wav

    n = int(fmt.read_meta(ds)["n_frames"])
    state = check_checkpoint(run / "checkpoints" / "latest.pt")
    w, c = int(state["audio"]["window"]), int(state["audio"]["channels"])
    p = {name: tmp / name for name in ("speech.wav", "long.wav", "empty.wav", "text.mp3", "silent.mp4", "channels.npy",
                                       "nan.npy", "notes", "o.mp4", "missing.wav")}
    write_wav(p["speech.wav"], (0.1 * np.sin(np.arange(2 * 16000) / 7.0)).astype(np.float32))
    write_wav(p["long.wav"], np.zeros((n + 10) * 640, np.float32))  # longer than DATASET as a --drive-video
    p["empty.wav"].write_bytes(b"")
    p["text.mp3"].write_text("not audio\n")
    write_video(p["silent.mp4"], np.full((10, 32, 32, 3), 90, np.uint8))
    np.save(p["channels.npy"], np.zeros((50, w, c + 1), np.float32))
    np.save(p["nan.npy"], np.full((50, w, c), np.nan, np.float32))
    p["notes"].mkdir()
    p["cut_run"] = tmp / "cut_run"
    (p["cut_run"] / "checkpoints").mkdir(parents=True)
    shutil.copy(run / "config.json", p["cut_run"] / "config.json")
    data = (run / "checkpoints" / "latest.pt").read_bytes()
    (p["cut_run"] / "checkpoints" / "latest.pt").write_bytes(data[: len(data) // 2])
    p["moved_run"] = tmp / "moved_run"
    (p["moved_run"] / "checkpoints").mkdir(parents=True)
    (p["moved_run"] / "checkpoints" / "latest.pt").symlink_to((run / "checkpoints" / "latest.pt").resolve())
    doc = json.loads((run / "config.json").read_text())
    (p["moved_run"] / "config.json").write_text(json.dumps({**doc, "dataset": str(tmp / "gone")}))
    p["cut_tracks"] = _view(ds, tmp / "cut_tracks", fmt.TRACKS)
    return p


def main() -> None:
    ap = _harness.parser(__doc__, "cli_latency")
    ap.add_argument("--dataset", type=Path, required=True, help="a prepared dataset (read only)")
    ap.add_argument("--run", type=Path, required=True, help="a mouth_state run trained on --dataset (read only)")
    ap.add_argument("--repeat", type=int, default=7, help="runs of each case (fresh processes)")
    a = ap.parse_args()

    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    tmp = Path(tempfile.mkdtemp(prefix="cli_latency."))
    ds, run = a.dataset.resolve(), a.run.resolve()
    p = {k: str(v) for k, v in _inputs(tmp, ds, run).items()}
    kind = check_checkpoint(run / "checkpoints" / "latest.pt")["audio"]["kind"]
    other = "hubert" if kind != "hubert" else "mel"
    render = ["render", str(run), "-o", p["o.mp4"]]
    cases: list[tuple[str, list[str], int]] = [
        ("talkgs --help", ["--help"], 0),
        ("talkgs train --help", ["train", "--help"], 0),
        ("talkgs render --help", ["render", "--help"], 0),
        ("talkgs features --help", ["features", "--help"], 0),
        ("prepare: input is a folder", ["prepare", str(tmp), "-o", str(tmp / "ds")], 2),
        ("train: --batch-size 0", ["train", str(ds), "-o", str(tmp / "run"), "--batch-size", "0"], 2),
        ("train: unknown --audio-kind", ["train", str(ds), "-o", str(tmp / "run"), "--audio-kind", "wav2vec"], 2),
        ("train: damaged tracks.npz", ["train", p["cut_tracks"], "-o", str(tmp / "run"), "--audio-kind", kind], 2),
        ("inspect: damaged tracks.npz", ["inspect", p["cut_tracks"], "-o", str(tmp / "insp")], 2),
        ("export-tg: -o is the dataset", ["export-tg", str(ds), "-o", str(ds), "--force"], 2),
        ("export-tg: damaged tracks.npz", ["export-tg", p["cut_tracks"], "-o", str(tmp / "tg")], 2),
        ("features: bad --whisper.layer", ["features", str(ds), "--kind", "whisper", "--whisper.layer", "-1", "--force"], 2),
        ("render: missing --audio", [*render, "--audio", p["missing.wav"]], 2),
        ("render: -o is the --audio", ["render", str(run), "--audio", p["silent.mp4"], "-o", p["silent.mp4"]], 2),
        ("render: other --audio-kind", [*render, "--audio", p["speech.wav"], "--audio-kind", other], 2),
        ("render: empty --audio", [*render, "--audio", p["empty.wav"]], 2),
        ("render: --audio not media", [*render, "--audio", p["text.mp3"]], 2),
        ("render: --audio without audio", [*render, "--audio", p["silent.mp4"]], 2),
        ("render: --features channels", [*render, "--audio", p["speech.wav"], "--features", p["channels.npy"]], 2),
        ("render: --features NaN", [*render, "--audio", p["speech.wav"], "--features", p["nan.npy"]], 2),
        ("render: --drive-video too short", [*render, "--audio", p["long.wav"], "--drive-video", str(ds)], 2),
        ("render: damaged --dataset", [*render, "--audio", p["speech.wav"], "--dataset", p["cut_tracks"]], 2),
        ("render: corrupt checkpoint", ["render", p["cut_run"], "--audio", p["speech.wav"], "-o", p["o.mp4"]], 2),
        ("eval: corrupt checkpoint", ["eval", p["cut_run"]], 2),
        ("eval: --drive not a dataset", ["eval", str(run), "--drive", p["notes"]], 2),
        ("eval: --drive damaged", ["eval", str(run), "--drive", p["cut_tracks"]], 2),
        ("serve: corrupt checkpoint", ["serve", p["cut_run"]], 2),
        ("serve: dataset moved", ["serve", p["moved_run"]], 2),
    ]
    rows = []
    try:
        for name, args, want in cases:
            _run(args, env)  # warm the file cache
            times, cpus, lines = [], [], ""
            for _ in range(a.repeat):
                dt, cpu, rc, err = _run(args, env)
                if rc != want:
                    raise SystemExit(f"{name}: exit {rc}, expected {want}: {err.strip()[-300:]}")
                times.append(dt)
                cpus.append(cpu)
                lines = err.strip()
            if want == 2 and (len(lines.splitlines()) != 1 or not lines.startswith("talkgs: ")):
                raise SystemExit(f"{name}: not a one-line refusal: {lines!r}")
            torch = _imports_torch(args, env)
            if torch:
                raise SystemExit(f"{name}: imports torch")
            rows.append({
                "case": name,
                "argv": [s.replace(str(tmp), "TMP").replace(str(ds), "DATASET").replace(str(run), "RUN") for s in args],
                "exit": want,
                "median_s": round(statistics.median(times), 3),
                "min_s": round(min(times), 3),
                "median_cpu_s": round(statistics.median(cpus), 3),
                "imports_torch": torch,
                "message": lines.replace(str(tmp), "TMP").replace(str(ds), "DATASET").replace(str(run), "RUN")
                if want == 2 else None,
            })
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load = os.getloadavg()
    print(f"{'case':<34}{'median s':>10}{'min s':>8}{'cpu s':>8}  message")
    for r in rows:
        print(f"{r['case']:<34}{r['median_s']:>10.3f}{r['min_s']:>8.3f}{r['median_cpu_s']:>8.3f}  {r['message'] or ''}")
    print(f"load average during the run: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} ({os.cpu_count()} CPUs)")
    params = {"dataset": str(a.dataset), "run": str(a.run), "repeat": a.repeat, "cpus": os.cpu_count(),
              "load_avg_1_5_15": [round(x, 2) for x in load]}
    _harness.write("cli_latency", a, rows, device="cpu", params=params)


if __name__ == "__main__":
    main()
