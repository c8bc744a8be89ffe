"""One-off: convert the result files written before bench/_harness.py into its schema.

    python bench/convert_old_results.py

Reads bench/results/*.json (the old flat layout), writes bench/results/<bench>/<name>.json and
removes the old files. The commit of a converted result is the commit that added the old file.
"""

from __future__ import annotations

import datetime
import json
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as H  # noqa: E402

OLD = H.RESULTS
COMMIT_NOTE = "the commit that added this result (measured before the harness)"
DONE: set[str] = set()
DROP = ["eval_h100", "train_half_mel", "train_half_phones", "train_half_phones_mel", "train_profile_h200"]


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=H.REPO, capture_output=True, text=True, check=True).stdout.strip()


def added(path: Path) -> tuple[str, str]:
    """(commit, date) of the commit that added ``path``."""
    rel = str(path.relative_to(H.REPO))
    sha = git("log", "--diff-filter=A", "--format=%H", "-1", "--", rel)[:12]
    iso = git("log", "-1", "--format=%cI", sha)
    date = datetime.datetime.fromisoformat(iso).astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return sha, date


def load(name: str) -> dict:
    return json.loads((OLD / f"{name}.json").read_text())


def cpu(cores=None, model: str = "model unrecorded") -> str:
    return f"cpu: {model}" + (f" ({cores} cores)" if cores else "")


def gpu_name(text: str) -> tuple[str, str | None]:
    """``NVIDIA H200 (nvidia-h200), session ...`` -> ("NVIDIA H200", the whole text)."""
    head = text.split(" (")[0].split(",")[0].strip()
    return head, (text if text != head else None)


def emit(old: str, bench: str, name: str, device: str, command: str, rows: list[dict], params: dict | None = None,
         setup: dict | None = None, note: str | None = None, versions: dict | None = None) -> None:
    src = OLD / f"{old}.json"
    DONE.add(old)
    sha, date = added(src)
    doc = {"schema": H.SCHEMA, "bench": bench, "name": name, "commit": sha, "commit_note": COMMIT_NOTE,
           "device": device, "command": command, "date": date, "versions": versions or {}, "params": params or {}}
    if setup:
        doc["setup"] = {k: v for k, v in setup.items() if v is not None}
    if note:
        doc["note"] = note
    doc["rows"] = rows
    H.dump(doc, H.RESULTS / bench / f"{name}.json")


# --------------------------------------------------------------------------- per bench
def audio_features() -> None:
    for old, name, cmd in (
        ("audio_features_cpu", "cpu", "python bench/audio_features.py --dataset /work/data/anchor"),
        ("audio_features_gpu", "h200",
         "python bench/audio_features.py --dataset .carry/data/anchor --kinds mel whisper --devices cuda"),
    ):
        d = load(old)
        m = d["machine"]
        device = m["gpu"] or cpu(m["cpus"])
        rows = [{"measure": "extract", **r} for r in d["rows"]] + [{"measure": "stream step", **r} for r in d["stream_step"]]
        emit(old, "audio_features", name, device, cmd, rows,
             params={"dataset": str(Path(d["audio"]).parent), "seconds": d["audio_s"], "threads": m["torch_threads"],
                     "whisper_models": d["whisper_models"]},
             setup={"audio": d["audio"], "audio_s": d["audio_s"], "cpus": m["cpus"], "platform": m["platform"],
                    "load_average": m["load_average"]},
             versions={"torch": m["torch"]})


def cli_latency() -> None:
    d = load("cli_latency")
    m = d["machine"]
    emit("cli_latency", "cli_latency", "cpu", cpu(m["cpus"]),
         "python bench/cli_latency.py --dataset /work/main/outputs/demo/anchor --run /work/main/outputs/demo/run",
         d["rows"], params={"repeat": d["repeat"]}, setup={"load_avg_1_5_15": m["load_avg_1_5_15"]},
         versions={"python": m["python"]})


def drive_av_lag() -> None:
    d = load("drive_av_lag")
    cmd = shlex.join(["python", "bench/drive_av_lag.py", *[f"/work/data/{r['dataset']}" for r in d["rows"]]])
    emit("drive_av_lag", "drive_av_lag", "cpu", cpu(), cmd, d["rows"], params={"max_lag": d["max_lag"]},
         note="numpy only: the figures do not depend on the machine")


def interop() -> None:
    d = load("interop_roundtrip")
    keep = ("n_frames", "export_dir_mb", "camera_max_abs_err", "labels_equal", "intrinsics_equal", "frames_mae",
            "frames_psnr_db", "alignment", "prepare_s", "export_s", "import_s", "train_s", "export_notes", "import_missing")
    emit("interop_roundtrip", "interop_roundtrip", "cpu", cpu(), "python bench/interop_roundtrip.py",
         [{k: d[k] for k in keep if k in d}],
         params={"frames": d["frames"], "work": "/tmp/interop_bench", "train_scale": 0.1},
         setup={"dataset": d["dataset"], "size": d["size"], "checkpoint": d["checkpoint"], "platform": d["machine"]})


# lipsync: rows are variants, as bench/lipsync.py writes them ({variant, flags, status, train_s, eval_s,
# sections {val, train, drive:NAME: {frames, mouth_r, amplitude, lmd_px, offset, ...}}, drive_mean}),
# with "default": true on a variant trained at the default configuration of its commit.
LIPSYNC_DEFAULTS = {
    "lipsync_ablation_B_h200": {"combined"},
    "lipsync_amplitude_h200": {"c3_NEW_DEFAULT_s0", "c3_NEW_DEFAULT_s1", "c4_NEW_DEFAULT_s2"},
    "lipsync_seeds34_h200": {"s3", "s4"},
    "lipsync_other_speakers_h200": {"default_s0", "default_s1"},
    "lipsync_select_h200": {"final_s0", "final_s1", "final_s2", "final_s0_drives"},
    "lipsync_whisper_base_h200": {"final_s0_drives", "final_s1"},
    "lpips_seed_matched_h200": {"default_s0", "default_s1", "default_s2"},
    "psnr_seed_matched_h200": {"final_s1", "final_s2"},
    "room_tone_h200": {"default_s0"},
}


def lipsync_cmd(d: dict, runs: str) -> str:
    argv = ["python", "bench/lipsync.py", d["dataset"], "--runs", runs]
    for k, v in d["variants"].items():
        argv += ["--variant", f"{k}={v['flags']}"]
    for p in d["drives"]:
        argv += ["--drive", p]
    if d["train_flags"]:
        argv += ["--train-flags", d["train_flags"]]
    if d["eval_flags"]:
        argv += ["--eval-flags", d["eval_flags"]]
    if d["gpus"]:
        argv += ["--gpus", d["gpus"]]
    if d["jobs_per_gpu"] != 1:
        argv += ["--jobs-per-gpu", str(d["jobs_per_gpu"])]
    if d["time_limit_s"]:
        argv += ["--time-limit", f"{d['time_limit_s']:g}"]
    return shlex.join(argv)


def lipsync_bench() -> None:
    for old, name in (("lipsync_ablation_A_h200", "ablation_A_h200"), ("lipsync_ablation_B_h200", "ablation_B_h200"),
                      ("lipsync_gpu", "half_schedule_h200"), ("lipsync_seeds34_h200", "seeds34_h200"),
                      ("lipsync_amplitude_h200", "amplitude_h200")):
        d = load(old)
        defaults = LIPSYNC_DEFAULTS.get(old, set())
        rows = [{"variant": k, **v, "default": k in defaults} for k, v in d["variants"].items()]
        first = next(iter(d["variants"].values()))
        runs = str(Path(first["run"]).parent)
        if old == "lipsync_amplitude_h200":
            cmd = (f"python bench/lipsync.py --table-only --runs {runs} (over the eval folders of `talkgs eval RUN "
                   "--drive german --drive obama --drive trump --drive may --no-lpips --no-video --batch-size 32 "
                   "[--mouth-amplitude X | --mouth-states measured]` on the GPU machine)")
            detail = first["gpu"]
        else:
            cmd = lipsync_cmd(d, runs)
            detail = d.get("device")
        params = {k: d[k] for k in ("dataset", "drives", "train_flags", "eval_flags", "gpus", "jobs_per_gpu", "time_limit_s")}
        emit(old, "lipsync", name, first["device"], cmd, rows, params=params,
             setup={"wall_s": d["wall_s"] or None, "offset_sign": d["offset_sign"],
                    "image_metrics_from": d.get("image_metrics_from")},
             note=detail)


def _sections(secs: dict, psnr: dict | None = None, head_psnr: dict | None = None) -> dict:
    out = {}
    for sec, s in secs.items():
        key = sec if sec in ("val", "train") else f"drive:{sec}"
        row = {"frames": s.get("frames"), "mouth_r": s["r"], "amplitude": s.get("amp"), "lmd_px": s.get("lmd_px"),
               "offset": s.get("offset")}
        if "r_at_offset" in s:
            row["r_at_offset"] = s["r_at_offset"]
        if psnr and sec in psnr:
            row["psnr"] = psnr[sec]
        if head_psnr and sec in head_psnr:
            row["head_psnr"] = head_psnr[sec]
        out[key] = row
    return out


def _assembled_row(old: str, r: dict) -> dict:
    secs = r.get("sections") or r.get("lips") or {}
    row = {"variant": r["name"], "seed": r.get("seed"), "default": r["name"] in LIPSYNC_DEFAULTS[old]}
    if "flags" in r:
        row["flags"] = r["flags"]
    train_s = r.get("train_wall_s", r.get("train_wall_s_two_per_gpu"))
    if train_s is not None:
        row["train_s"] = train_s
    row["sections"] = _sections(secs, r.get("psnr"), r.get("head_psnr"))
    mean = {k2: r[k] for k, k2 in (("drive_mean_r", "mouth_r"), ("drive_mean_amp", "amplitude"),
                                    ("drive_mean_r_at_offset", "r_at_offset")) if r.get(k) is not None}
    if mean:
        row["drive_mean"] = mean
    if r.get("image_val"):
        row["val_image"] = r["image_val"]
    if r.get("image_train"):
        row["train_image"] = r["image_train"]
    for k in ("call", "note", "predictor", "render"):
        if r.get(k) is not None:
            row[k] = r[k]
    if "train_wall_s_two_per_gpu" in r:
        row["note"] = (row.get("note", "") + "; " if row.get("note") else "") + "two trainings per GPU"
    return row


def lipsync_assembled() -> None:
    for old, name in (("lipsync_other_speakers_h200", "other_speakers_h200"), ("lipsync_select_h200", "select_h200"),
                      ("lipsync_whisper_base_h200", "whisper_base_h200"), ("lpips_seed_matched_h200", "lpips_seed_matched_h200"),
                      ("psnr_seed_matched_h200", "psnr_seed_matched_h200"), ("room_tone_h200", "room_tone_h200")):
        d = load(old)
        device, detail = gpu_name(d["device"])
        setup = {k: d[k] for k in ("other_speakers_sources", "footage") if k in d}
        note = d["what"] + (f" ({detail})" if detail else "")
        emit(old, "lipsync", name, device, d["command"], [_assembled_row(old, r) for r in d["rows"]], setup=setup,
             note=note)


def predictor() -> None:
    names = {"predictor_cpu": "cpu"}
    for p in sorted(OLD.glob("predictor_*_cpu.json")):
        names[p.stem] = p.stem[len("predictor_"):]
    for old, name in names.items():
        d = load(old)
        m = d["machine"]
        if d.get("command"):
            cmd = d["command"]
        elif d.get("commands"):
            cmd = "; ".join(d["commands"])
        elif d.get("note") and "Command: " in d["note"]:
            cmd = d["note"].split("Command: ", 1)[1].split(". ")[0].split(" (a base row")[0].strip()
        else:  # the variants' specs are their --variant arguments; @sN: --seed N
            by_seed: dict[int, list[str]] = {}
            for r in d["rows"]:
                if r["name"] == "measured":
                    continue
                base, _, s = r["name"].partition("@s")
                by_seed.setdefault(int(s or 0), []).append(f"--variant {shlex.quote(base + '=' + r['spec'])}")
            cmd = "; ".join(f"python bench/predictor.py --data /work/data" + (f" --seed {s}" if s else "") + " "
                            + " ".join(v) for s, v in by_seed.items())
        note = " ".join(x for x in (d.get("note"), m.get("note")) if x) or None
        emit(old, "predictor", name, cpu(m["cpus"]), cmd, d["rows"],
             setup={"anchor": d["anchor"], "drives": d["drives"], "max_lag": d["max_lag"], "opening": d["opening"],
                    "offset_sign": d["offset_sign"], "torch_threads": m["torch_threads"], "platform": m["platform"]},
             note=note)


def prepare() -> None:
    d = load("prepare")
    keep = ("wall_s", "steps_s", "dataset_bytes", "files_bytes", "n_frames", "quality", "focal_px",
            "focal_uncertainty_px", "inpainted_fraction")
    emit("prepare", "prepare", "cpu", cpu(d["machine"]["cpus"]), f"python bench/prepare.py --video {d['video']}",
         [{k: d[k] for k in keep}], params={"video": d["video"]},
         setup={"cli": d["command"], "platform": d["machine"]["platform"]}, versions={"python": d["machine"]["python"]})


def raster() -> None:
    for old, name, cmd in (
        ("raster_cpu", "cpu", ".venv/bin/python bench/raster.py --device cpu --out bench/results/raster_cpu.json"),
        ("raster_h100", "h100", "python3 bench/raster.py --device cuda --out $OUT/raster.json"),
    ):
        d = load(old)
        e = d["env"]
        device = cpu(e["cpu_count"], e["device"]) if name == "cpu" else e["device"]
        emit(old, "raster", name, device, cmd, d["results"],
             params={k: e[k] for k in ("warmup", "repeats", "threads", "timing")},
             setup={k: e.get(k) for k in ("load_avg_before", "load_avg_after")},
             versions={k: e[k] for k in ("python", "torch", "gsplat") if e.get(k)})
    d = load("raster_parity_h100")
    rows = [{"case": k, **v} for k, v in d["cases"].items()]
    emit("raster_parity_h100", "raster_parity", "h100", d["device"], "python3 bench/raster_parity.py --out $OUT/parity.json",
         rows, params={"size": d["size"], "mode": d["mode"], "thresholds": d["thresholds"]},
         versions={k: d[k] for k in ("python", "torch", "gsplat")})


def _render_rows(d: dict, extra: dict | None = None) -> list[dict]:
    extra = extra or {}
    rows = [{**extra, "measure": "pipeline", **r} for r in d["pipeline"]]
    rows.append({**extra, "measure": "end to end", **d["end_to_end"]})
    if d.get("mouth_area"):
        rows.append({**extra, "measure": "mouth area", **d["mouth_area"]})
    return rows


def render() -> None:
    for old, name, cmd in (
        ("render_cpu", "cpu", "python bench/render.py /tmp/gpu/d1run --scale 0.125 --device cpu --batches 1,8 --seconds 2"),
        ("render_h100", "h100", "python bench/render.py runs/L1"),
        ("render_h200", "h200", "python bench/render.py /tmp/runs/def_s0 --batches 1,16,32,64 --frames 320 --seconds 30"),
        ("render_seed3_h200", "seed3_h200", "python bench/render.py /tmp/runs/s3 --batches 1,32 --seconds 30"),
    ):
        d = load(old)
        device = "cpu: model unrecorded (2 threads)" if name == "cpu" else d["device"]
        emit(old, "render", name, device, cmd, _render_rows(d),
             setup={k: d[k] for k in ("run", "size", "gaussians", "audio_kind", "load_s")})
    d = load("render_seeds12_h200")
    device, detail = gpu_name(d["device"])
    rows = []
    for r in d["rows"]:
        rows += _render_rows(r, {"seed": r["seed"], "gaussians": r["gaussians"]})
    emit("render_seeds12_h200", "render", "seeds12_h200", device, d["command"], rows,
         setup={"runs": [r["run"] for r in d["rows"]], "size": d["rows"][0]["size"], "audio_kind": d["rows"][0]["audio_kind"]},
         note=d["what"] + (f" ({detail})" if detail else ""))
    d = load("render_profile_h200")
    rows = [{"measure": "part", "part": k, "ms_per_batch": v} for k, v in d["parts_ms"].items()]
    rows += [{"measure": "op", **o} for o in d["ops"]] + [{"measure": "variant", **v} for v in d["variants"]]
    emit("render_profile_h200", "render_profile", "h200", d["device"],
         "python bench/render_profile.py /tmp/runs/m0 --batch 32", rows,
         params={"batch": d["batch"]}, setup={k: d[k] for k in ("run", "size", "gaussians")})


def serve() -> None:
    d = load("serve_h200")
    rows = [{"measure": "trial", **t} for t in d["trials"]]
    rows.append({"measure": "capacity", "largest_n_holding_25fps": d["largest_n_holding_25fps"]})
    emit("serve_h200", "serve", "h200", d["device_name"],
         "python bench/serve.py /tmp/runs/def_s1 --clients 1 4 16 32 --find-max --seconds 6", rows,
         params={k: d[k] for k in ("transport", "seconds", "warmup", "max_batch", "switch_interval_ms")},
         setup={k: d[k] for k in ("run", "head", "size", "encode", "audio_kind", "lookahead_ms")})


def train() -> None:
    for old, name, cmd in (
        ("train", "h100", "python bench/train.py data/anchor --run runs/d1"),
        ("train_lips1", "lips1_h100", "python bench/train.py data/anchor --run runs/L1 --lips-weight 1"),
        ("train_x3_part1", "x3_part1_h100",
         "python bench/train.py data/anchor --run runs/x3 --schedule-scale 3 (interrupted at the call's time limit)"),
        ("train_x3_part2", "x3_part2_h100", "python bench/train.py data/anchor --run runs/x3 --schedule-scale 3 --resume"),
    ):
        d = load(old)
        rows = [{"measure": "stage", **s} for s in d["stages"]]
        total = {"measure": "total", **{k: d[k] for k in ("setup_s", "train_wall_s", "peak_gpu_mem_gib", "num_gaussians")}}
        if "eval_s" in d:
            total["eval_s"] = d["eval_s"]
        rows.append(total)
        if d.get("val"):
            rows.append({"measure": "val", **d["val"]})
        params = {k: d[k] for k in ("dataset", "run", "schedule_scale", "audio_kind", "lips_weight", "resumed", "interrupted")
                  if k in d}
        emit(old, "train", name, d["device"], cmd, rows, params=params, setup=d.get("notes"))


def whisper_probe() -> None:
    d = load("whisper_probe")
    m = d["machine"]
    rows = []
    for model, rs in d["chunking"].items():
        rows += [{"measure": "chunking", **r} for r in rs]
    for model, s in d["streaming"].items():
        rows += [{"measure": "streaming", "speakers": s["speakers"], **r} for r in s["rows"]]
    for run, s in d["runs"].items():
        rows += [{"measure": "layers", "run": run, **r} for r in s["rows"]]
    for model, rs in d["position"].items():
        rows += [{"measure": "position", "model": model, **r} for r in rs]
    rows += [{"measure": "in_speaker", **r} for r in d["in_speaker"]]
    cmd = ("python bench/whisper_probe.py --data /work/data --families mel tiny.en base; "
           "python bench/whisper_probe.py --data /work/data --no-probe --in-speaker; "
           "python bench/whisper_probe.py --data /work/data --no-probe --position --chunking --max-layer 3; "
           "python bench/whisper_probe.py --data /work/data --no-probe --streaming --max-layer 3 --speakers german trump may "
           "(results merged into one file)")
    emit("whisper_probe", "whisper_probe", "cpu", cpu(m["cpus"]), cmd, rows,
         setup={"anchor": d["anchor"], "train": d["train"], "val": d["val"], "torch_threads": m["torch_threads"],
                "platform": m["platform"]})


def main() -> int:
    for f in (audio_features, cli_latency, drive_av_lag, interop, lipsync_bench, lipsync_assembled, predictor, prepare,
              raster, render, serve, train, whisper_probe):
        f()
    left = {p.stem for p in OLD.glob("*.json")} - DONE - set(DROP)
    if left:
        raise SystemExit(f"not converted: {sorted(left)}")
    for p in sorted(OLD.glob("*.json")):
        p.unlink()
    print(f"{len(H.read_all())} results read back")
    print(f"dropped: {', '.join(DROP)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
