"""The benchmark results: one schema (bench/_harness.py), docs/results.md and docs/speed.md made from
them (bench/results_md.py), and bench/speed.py's per-module times on a tiny synthetic head."""

from __future__ import annotations

import argparse
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
SHA = re.compile(r"`([0-9a-f]{12})(-dirty)?`\*?")


@pytest.fixture(scope="module")
def bench_modules():
    """bench/_harness.py and bench/results_md.py as modules (bench/ is not a package)."""
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("_harness"), importlib.import_module("results_md")
    finally:
        sys.path.remove(str(BENCH))


def bench_module(name: str):
    """bench/<name>.py loaded as a module (bench/ on sys.path while it loads: its scripts import _harness)."""
    import importlib.util

    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCH))


def result_files() -> list[Path]:
    return sorted(RESULTS.rglob("*.json"))


def test_every_result_file_is_of_the_schema_and_where_its_header_says(bench_modules):
    H, _ = bench_modules
    files = result_files()
    assert files
    for path in files:
        doc = H.read(path)
        assert path.relative_to(RESULTS).parts == (doc["bench"], f"{doc['name']}.json"), path
        assert re.fullmatch(r"[0-9a-f]{12}(-dirty)?", doc["commit"]), (path, doc["commit"])
        assert doc["rows"], path
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["date"]), path
        json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{path}: {c} is not strict JSON"))


def test_read_refuses_other_shapes(bench_modules, tmp_path):
    H, _ = bench_modules
    doc = H.read(result_files()[0])
    for broken in ({k: v for k, v in doc.items() if k != "commit"}, {**doc, "schema": "other"}, {**doc, "rows": {}}):
        p = tmp_path / "r.json"
        p.write_text(json.dumps(broken))
        with pytest.raises(ValueError):
            H.read(p)


def test_write_records_the_run_and_reads_back(bench_modules, tmp_path):
    H, _ = bench_modules
    args = argparse.Namespace(out=tmp_path / "x" / "cpu.json", name=None, size=3, path=Path("/a"))
    path = H.write("demo", args, [{"v": float("nan"), "n": 2, "t": (1, 2)}], device="cpu", setup={"k": 1}, note="n")
    doc = H.read(path)
    assert (doc["bench"], doc["name"], doc["params"], doc["setup"], doc["note"]) == (
        "demo", "cpu", {"size": 3, "path": "/a"}, {"k": 1}, "n")
    assert doc["rows"] == [{"v": None, "n": 2, "t": [1, 2]}]  # strict JSON: NaN -> null
    assert doc["device"].startswith("cpu") and doc["command"].startswith("python")
    assert doc["commit"] != "" and doc["versions"]["python"]


def test_results_md_names_command_commit_and_device_of_every_result(bench_modules, tmp_path):
    H, R = bench_modules
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{R.BEGIN}\nold table\n{R.END}\nafter\n")
    assert R.main(["--docs", str(tmp_path / "docs"), "--readme", str(readme)]) == 0
    text = (tmp_path / "docs" / "results.md").read_text()
    docs = H.read_all()
    index_rows = [line for line in text.splitlines() if re.match(r"\| \[[^\]]+\]\([^)]*\.json\) \|", line)]
    assert len(index_rows) == len(docs)
    for line in index_rows:
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        link, device, commit, date, command = cells
        assert device and device != "-", line
        assert SHA.fullmatch(commit), line
        assert command.startswith("`") and len(command) > 2, line
        target = tmp_path / "docs" / re.search(r"\(([^)]*)\)", link).group(1)
        H.read(target.resolve())  # the link leads to the result
    for d in docs:  # each result's own section names its full command
        assert f"### {d['bench']} / {d['name']}" in text
        assert "`" + d["command"].replace("`", "'") + "`" in text

    table = readme.read_text().split(R.BEGIN)[1].split(R.END)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| measurement")]
    assert rows and len(rows) <= 8
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        assert cells[2] and cells[2] != "-" and SHA.fullmatch(cells[3]), line
        H.read((readme.parent / re.search(r"\(([^)]*)\)", cells[4]).group(1)).resolve())
    assert readme.read_text().startswith("before\n") and readme.read_text().endswith("after\n")


def test_readme_training_figures_come_from_default_trainings_only(bench_modules):
    """A bench variant, another preset, TF32 or a baseline is never the README's training time
    or image quality; the default training is."""
    _, R = bench_modules
    stages = [{"measure": "stage", "stage": name, "seconds": sec, "iterations": it, "batch": 8}
              for name, sec, it in (("face", 122.3, 2250), ("mouth", 80.0, 2250), ("fuse", 11.0, 562))]
    rows = [{"measure": "total", "train_wall_s": 151.4, "peak_gpu_mem_gib": 5.7}, *stages,
            {"measure": "val", "psnr": 31.19, "lpips": 0.0305}]
    default = {"bench": "train", "params": {"dataset": "/d/anchor"}, "setup": {"preset": "default", "variant": "none"},
               "rows": rows}
    assert R.fig_train(default).startswith("151 s (face 122, mouth 80, fuse 11)") and R.fig_image(default).startswith("PSNR 31.19")
    # A schedule variant that is today's default schedule counts; today's variant of the old one does not.
    assert R.fig_train(dict(default, setup={**default["setup"], "variant": "batch8"})) is not None
    old = [dict(r, iterations=2 * r["iterations"], batch=4) if r["measure"] == "stage" else r for r in rows]
    assert R.fig_train(dict(default, rows=old)) is None
    # Another clip is not the README's.
    assert R.fig_train(dict(default, setup={**default["setup"], "clip": "obama.mp4"})) is None
    assert R.fig_train(dict(default, params={"dataset": "/d/obama_v25"})) is None
    for other in ({"variant": "mouth_loss"}, {"preset": "original"}, {"tf32": True}, {"baseline": "x"}):
        d = dict(default, setup={**default["setup"], **other})
        assert R.fig_train(d) is None and R.fig_image(d) is None, other


def test_readme_own_voice_figure_takes_the_default_on_the_anchor_from_a_mouth_table(bench_modules):
    """bench/mouth_table.py results: the mean row of the default preset without a variant on the
    anchor clip, with its seed range; a variant's, another preset's or another clip's never."""
    _, R = bench_modules
    mean = {"measure": "mean", "clip": "anchor", "preset": "default", "variant": "none", "seeds": [0, 1],
            "lips_r": 0.7525, "lips_r_range": [0.745, 0.760]}
    others = [dict(mean, variant="mouth_loss", lips_r=0.9), dict(mean, clip="obama_v25", lips_r=0.5),
              dict(mean, preset="original", lips_r=0.3)]
    d = {"bench": "mouth", "rows": [*others, mean]}
    assert R.fig_own_voice(d) == "val mouth r 0.752 (0.745-0.760; seeds 0, 1)"
    assert R.fig_own_voice(dict(d, rows=others)) is None


def test_readme_serve_figure_comes_from_the_product_only(bench_modules):
    """A bench/serve.py variant (pipelined loop, another stream window, several processes) or a
    baseline (PyTorch's face deformation, eager) is never the README's sessions per GPU; nor is
    the fused kernel of the results from before it was built in."""
    _, R = bench_modules
    product = {"bench": "serve", "params": {"fused_face": False, "pipelined": False, "stream_window": None,
                                            "eager": False, "max_batch": 32},
               "rows": [{"measure": "capacity", "largest_n_holding_25fps": 36}]}
    assert R.fig_serve(product) == "36 sessions at >= 24 frames/s each"
    for other in ({"fused_face": True}, {"torch_face": True}, {"pipelined": True}, {"stream_window": 30.0},
                  {"eager": True}, {"eager_encoder": True}, {"processes": 2}):
        assert R.fig_serve(dict(product, params={**product["params"], **other})) is None, other
    limits = dict(product, rows=[{"measure": "capacity", "largest_n_holding_25fps": 38, "largest_n_within_limits": 36}])
    assert R.fig_serve(limits).startswith("36 sessions at >= 24 frames/s each, latency p95 < 250 ms")


def test_readme_render_figure_takes_the_product_rows_of_an_alternating_run(bench_modules):
    """Rows that name the product's renderer: its rows; older rows (the fused kernel a variant then):
    those without the kernel."""
    _, R = bench_modules
    rows = [{"measure": "pipeline", "batch": 32, "fps": fps, "round": k, "fused_face": fused}
            for k, (fps, fused) in enumerate([(1576.0, False), (1993.0, True), (1590.0, False)])]
    d = {"bench": "render", "params": {"alternate_fused_face": True, "rounds": 2}, "setup": {"size": [512, 512]}, "rows": rows}
    assert R.fig_render(d) == "1576 / 1590 frames/s (512x512)"
    marked = dict(d, rows=[dict(r, product=r["fused_face"]) for r in rows])
    assert R.fig_render(marked) == "1993 frames/s (512x512)"
    baseline = dict(marked, params={**d["params"], "torch_face": True})
    assert R.fig_render(baseline) is None


def test_serve_capacity_counts_latency_and_first_frame_limits():
    S = bench_module("serve")
    trial = lambda n, holds, p95, first: {"clients": n, "holds_25fps": holds, "latency_ms_p95": p95,  # noqa: E731
                                          "first_frame_ms_max": first}
    table = [trial(24, True, 201.0, 215.0), trial(29, True, 454.0, 326.0), trial(32, True, 240.0, 310.0),
             trial(36, False, 200.0, 200.0)]
    assert S.capacity(table) == {"largest_n_holding_25fps": 32, "largest_n_within_limits": 24}
    assert S.capacity([trial(24, True, None, 200.0)])["largest_n_within_limits"] == 0


def test_serve_processes_split_the_clients_and_merge_their_records(live_run, anchor_dataset, tmp_path):
    """bench/serve.py --processes 2: two batch loops in two processes on one clock; every client
    of both is in the merged trial, with its frames."""
    out = tmp_path / "serve_p2.json"
    cmd = [sys.executable, str(BENCH / "serve.py"), str(live_run), "--dataset", str(anchor_dataset), "--device", "cpu",
           "--clients", "3", "--seconds", "2", "--warmup", "1", "--no-encode", "--processes", "2", "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    d = json.loads(out.read_text())
    trial = next(r for r in d["rows"] if r["measure"] == "trial")
    assert d["params"]["processes"] == 2 and d["setup"]["processes"] == 2
    assert trial["clients"] == 3 and trial["clients_per_process"] == [2, 1]
    assert len(trial["per_process"]) == 2 and trial["fps_min"] > 0
    assert trial["first_frame_ms_max"] is not None and trial["latency_ms_p50"] > 0


def test_results_md_leaves_a_readme_without_the_markers_as_it_is(bench_modules, tmp_path):
    _, R = bench_modules
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    R.main(["--docs", str(tmp_path / "docs"), "--readme", str(readme)])
    assert readme.read_text() == "no markers here\n"


def test_speed_times_every_module_of_a_synthetic_head_and_speed_md_shows_them(bench_modules, tmp_path):
    """The tiny size only checks that every module runs (training steps included) and is reported."""
    H, R = bench_modules
    out = tmp_path / "results" / "speed" / "tiny.json"
    cmd = [sys.executable, str(BENCH / "speed.py"), "--device", "cpu", "--face-gaussians", "300", "--mouth-gaussians",
           "60", "--size", "32", "--batch", "2", "--warmup", "0", "--repeats", "1", "--kinds", "mel", "--audio-s", "1",
           "--threads", "1", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = H.read(out)
    modules = [row["module"] for row in doc["rows"]]
    assert modules == ["mouth-state prediction", "deform: face", "deform: mouth", "rasterize: face", "rasterize: mouth",
                       "render batch", "audio features: mel", "tri-plane lookups: cuDNN", "tri-plane lookups: native",
                       "tri-plane lookups: native, spread order", "D-SSIM, conv", "D-SSIM, rows", "D-SSIM, matmul", "train step: mouth",
                       "train step: face", "train step: fuse"]
    assert all("error" not in row and row["ms"] > 0 and row["runs"] == 1 for row in doc["rows"])
    assert doc["setup"]["face_gaussians"] == 300 and doc["setup"]["size"] == [32, 32]
    md = R.speed_md(H.read_all(tmp_path / "results"), tmp_path)
    for m in modules:
        assert re.search(rf"^\| {re.escape(m)} \| [0-9.]+ \|$", md, re.M), m


def test_committed_docs_are_what_results_md_makes_of_the_results(bench_modules):
    """After adding or changing a result: `make results` (python bench/results_md.py)."""
    H, R = bench_modules
    docs = H.read_all()
    assert (REPO / "docs" / "results.md").read_text() == R.results_md(docs, REPO / "docs")
    assert (REPO / "docs" / "speed.md").read_text() == R.speed_md(docs, REPO / "docs")


def test_launch_summary_counts_what_a_real_profile_saw(bench_modules):
    """bench/_profile.py on a CPU profile: no kernel launches or device time; each .item() is a
    scalar read; the aten operators' host time is there."""
    import torch

    P = bench_module("_profile")
    x = torch.randn(256, 256)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(4):
            y = (x @ x).relu()
            y.sum().item()
            y.mean().item()
    s = P.launch_summary(prof, steps=4, wall_ms_per_step=1.0)
    assert s["launches"] == 0 and s["host_syncs"] == 0 and s["device_busy_ms"] == 0
    assert s["scalar_reads"] == 2.0
    assert s["host_ops_ms"] > 0 and s["device_busy_fraction"] is None


def test_mouth_table_groups_runs_with_the_seed_spread(tmp_path):
    """bench/mouth_table.py: a row per run from its eval and config, a mean per (clip, preset,
    variant) with each figure's min and max over the seeds."""
    def run(name, clip, seed, variant, psnr, area_r):
        d = tmp_path / name
        (d / "eval").mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"dataset": f"/data/{clip}", "preset": "default", "seed": seed}))
        metrics = {"mean": {"psnr": psnr, "head_psnr": psnr - 3, "mouth_psnr": psnr + 1},
                   "sections": {"val": {"lips": {"r": 0.8, "offset": 0, "mouth": {"area_r": area_r, "teeth": 0.5}}}}}
        (d / "eval" / "metrics.json").write_text(json.dumps(metrics))
        (tmp_path / f"{name}.json").write_text(json.dumps({"setup": {"variant": variant},
                                                           "rows": [{"measure": "total", "train_wall_s": 100.0 + seed}]}))
        return d

    runs = [run("a0", "anchor", 0, "none", 31.0, 0.7), run("a1", "anchor", 1, "none", 31.4, 0.8),
            run("b0", "anchor", 0, "mouth_branch", 31.2, 0.9), run("o0", "obama", 0, "none", 32.0, 0.6)]
    out = tmp_path / "table.json"
    subprocess.run([sys.executable, str(BENCH / "mouth_table.py"), *map(str, runs), "--out", str(out)],
                   check=True, capture_output=True, text=True)
    doc = json.loads(out.read_text())
    means = {(r["clip"], r["variant"]): r for r in doc["rows"] if r["measure"] == "mean"}
    assert set(means) == {("anchor", "none"), ("anchor", "mouth_branch"), ("obama", "none")}
    a = means[("anchor", "none")]
    assert a["seeds"] == [0, 1] and a["psnr"] == pytest.approx(31.2) and a["psnr_range"] == [31.0, 31.4]
    assert a["mouth_area_r_range"] == [0.7, 0.8] and a["train_wall_s_range"] == [100.0, 101.0]
    assert means[("obama", "none")]["head_psnr"] == pytest.approx(29.0)
    assert sum(r["measure"] == "run" for r in doc["rows"]) == 4


def test_peer_tg_windows_are_centred_on_each_frame(bench_modules):
    """TG's audio slot from talkgs features [N, 2, C]: 16 states per frame centred between the
    frame's two states, zeros past the clip's ends."""
    import numpy as np

    tg = bench_module("peer_tg")
    n, c = 10, 3
    states = np.arange(n * 2 * c, dtype=np.float32).reshape(n, 2, c) + 1  # no zero state
    w = tg.tg_windows(states)
    assert w.shape == (n, 16, c)
    flat = states.reshape(n * 2, c)
    i = 5  # frame i: the second state of i - 4, both of i - 3 .. i + 3, the first of i + 4
    np.testing.assert_array_equal(w[i], flat[2 * i - 7 : 2 * i + 9])
    assert (w[0, :7] == 0).all() and (w[0, 7:] != 0).all()
    assert (w[n - 1, -7:] == 0).all() and (w[n - 1, :-7] != 0).all()


MIRRORS = Path("/work/.mirror")
TG_MIRROR = MIRRORS / "Fictionarry+TalkingGaussian/repo"
TG_SUBMODULES = {"--rasterizer": MIRRORS / "ashawkey+diff-gaussian-rasterization/repo",
                 "--simple-knn": MIRRORS / "camenduru+simple-knn/repo", "--glm": MIRRORS / "g-truc+glm/repo"}


@pytest.mark.skipif(not all(p.exists() for p in (TG_MIRROR, *TG_SUBMODULES.values())),
                    reason=f"no local mirrors of TalkingGaussian and its submodules under {MIRRORS}")
def test_peer_tg_edits_apply_exactly_once_to_the_pinned_checkout(tmp_path):
    """Every edit bench/peer_tg.py makes to the original finds its text exactly as often as it says
    (a checkout at another commit is refused), and a second setup starts again from the original."""
    cmd = [sys.executable, str(BENCH / "peer_tg.py"), "setup", "--mirror", str(TG_MIRROR), "--dir", str(tmp_path),
           *(a for k, v in TG_SUBMODULES.items() for a in (k, str(v)))]
    for _ in range(2):
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    tg = bench_module("peer_tg")
    assert out.count("\nedit ") == len(tg.EDITS)
    root = tmp_path / "TalkingGaussian"
    assert "'-std=c++17'" in (root / "gridencoder/backend.py").read_text()
    assert (root / "train_face.py").read_text().count("talkgs: skip a non-finite step") == 1
    assert (root / "submodules/simple-knn/simple_knn.cu").read_text().count("#include <cfloat>") == 1


def test_every_train_bench_variant_changes_the_default_and_only_its_own_fields(tmp_path):
    """bench/train.py --variant NAME: each variant (but none) gives a config unlike the default
    preset's, and touches only the parts its docstring names (model, the stages, frames per step)."""
    import dataclasses

    mod = bench_module("train")
    from talkgs.train.config import TrainConfig

    base = TrainConfig.from_preset("default", tmp_path / "data", tmp_path / "run")
    for name, variant in mod.VARIANTS.items():
        cfg = variant(base)
        changed = {f.name for f in dataclasses.fields(base) if getattr(cfg, f.name) != getattr(base, f.name)}
        if name == "none":
            assert not changed
            continue
        assert changed, name
        assert changed <= {"model", "mouth", "face", "fuse", "batch_size"}, (name, changed)
        assert (variant.__doc__ or "").strip(), name


def test_peer_tg_train_runs_mouth_and_face_side_by_side_with_parallel(tmp_path):
    """`peer_tg.py train --parallel`: its mouth and face stages run at the same time, then fuse and
    render in order; talkgs_times.json records the side-by-side wall time (stand-in stage scripts
    that log their start and end: what is tested is the orchestration, not the original)."""
    tg = tmp_path / "TalkingGaussian"
    tg.mkdir()
    log = tmp_path / "log.txt"
    stage = ("import os, time\nopen({log!r}, 'a').write(f'start {name} {{time.time()}}\\n')\n"
             "assert os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] == '1'\n"
             "time.sleep(1.0)\nopen({log!r}, 'a').write(f'end {name} {{time.time()}}\\n')\n")
    for name, script in (("mouth", "train_mouth.py"), ("face", "train_face.py"), ("fuse", "train_fuse.py"),
                         ("render", "synthesize_fuse.py")):
        (tg / script).write_text(stage.format(log=str(log), name=name))
    data = tmp_path / "data" / "clip"
    data.mkdir(parents=True)
    (data / "talkgs_audio.json").write_text(json.dumps({"kind": "whisper", "dim": 384}))
    train = [sys.executable, str(BENCH / "peer_tg.py"), "train", "--dir", str(tmp_path), "--id", "clip",
             "--iterations", "10", "--fuse-iterations", "5", "--parallel"]
    subprocess.run(train, check=True, capture_output=True)
    events = {}
    for line in log.read_text().splitlines():
        what, name, t = line.split()
        events[(what, name)] = float(t)
    assert events[("start", "face")] < events[("end", "mouth")] and events[("start", "mouth")] < events[("end", "face")]
    assert events[("start", "fuse")] >= max(events[("end", "mouth")], events[("end", "face")])
    assert events[("start", "render")] >= events[("end", "fuse")]
    times = json.loads((tmp_path / "output" / "clip" / "talkgs_times.json").read_text())
    assert times["parallel"] is True and times["iterations"] == {"mouth": 10, "face": 10, "fuse": 5}
    assert set(times["seconds"]) == {"mouth", "face", "fuse", "render"}
    # --from fuse: only fuse and render run again; the side-by-side stages keep their times
    log.write_text("")
    subprocess.run([*train, "--from", "fuse"], check=True, capture_output=True)
    assert [line.split()[:2] for line in log.read_text().splitlines()] == [
        ["start", "fuse"], ["end", "fuse"], ["start", "render"], ["end", "render"]]
    again = json.loads((tmp_path / "output" / "clip" / "talkgs_times.json").read_text())
    assert again["parallel"] is True and {k: again["seconds"][k] for k in ("mouth", "face")} == {
        k: times["seconds"][k] for k in ("mouth", "face")}
    refused = subprocess.run([*train[:-4], "7", "--fuse-iterations", "5", "--from", "fuse"], capture_output=True, text=True)
    assert refused.returncode != 0 and "not {'mouth': 7" in refused.stderr


def test_peer_tg_score_saves_crops_without_mediapipe_and_lips_only_completes_them(anchor_dataset, tmp_path, monkeypatch):
    """`peer_tg.py score` on renders that are the val ground truth itself: the image figures are
    near-perfect; without MediaPipe (the GPU machine) it saves the face crops and leaves the lip
    figures pending; `--lips-only` then fills them from the crops, and the truth follows itself."""
    import numpy as np

    import talkgs.eval.evaluate as ev
    from talkgs.data import format as fmt
    from talkgs.data import load_dataset
    from talkgs.model.head import ground_truth_on_plate

    tg = bench_module("peer_tg")
    # The anchor with a val split of its first 24 val frames (the files linked, meta.json its own).
    clip = tmp_path / "anchor"
    clip.mkdir()
    for f in Path(anchor_dataset).iterdir():
        if f.name != fmt.META:
            (clip / f.name).symlink_to(f.resolve())
    meta = fmt.read_meta(anchor_dataset)
    a = int(meta["split"]["val"][0])
    b = a + 24
    (clip / fmt.META).write_text(json.dumps({**meta, "split": {**meta["split"], "val": [a, b]}}))
    anchor_dataset = clip
    ds = load_dataset(anchor_dataset, "cpu", audio_kind=None, frame_range=(a, b))
    gt = ground_truth_on_plate(ds.frames, ds.labels, ds.background)
    renders = tmp_path / "output" / "clip" / "test" / "ours_None" / "renders" / "renders.npy"
    renders.parent.mkdir(parents=True)
    np.save(renders, (gt * 255 + 0.5).clamp(0, 255).byte().numpy())
    out = tmp_path / "score.json"
    args = argparse.Namespace(dataset=str(anchor_dataset), dir=str(tmp_path), id="clip", out=out, name=None,
                              lips_only=False)
    monkeypatch.setattr(ev, "mediapipe_missing", lambda: "no module named mediapipe (as on the GPU machine)")
    tg.cmd_score(args)
    row = json.loads(out.read_text())["rows"][0]
    assert row["psnr"] > 45 and row["head_psnr"] > 45 and row["mouth_psnr"] > 45 and row["head_ssim"] > 0.99
    assert "lips_note" in row and "mouth_r" not in row
    assert Path(row["lips_render"]["file"]).is_file()
    monkeypatch.undo()
    if ev.mediapipe_missing() is not None:
        pytest.skip(f"MediaPipe missing here: {ev.mediapipe_missing()}")
    tg.cmd_score(argparse.Namespace(**{**vars(args), "lips_only": True}))
    row = json.loads(out.read_text())["rows"][0]
    assert "lips_note" not in row and row["lips_detected_fraction"] > 0.95
    assert row["lips_r"] > 0.9 and abs(row["lips_offset"]) <= 1 and row["mouth_area_r"] > 0.9


def test_predictor_fit_cache_key_names_the_training_clip(tmp_path):
    """bench/predictor.py's cached fits are keyed by the clip they were fitted on: the same
    configs and seed on another clip (or another split of it) never reuse the fit."""
    from talkgs.model.config import MouthStateConfig
    from talkgs.train.config import PredictorConfig

    pred = bench_module("predictor")
    clips = {}
    for name, split in (("a", {"train": [0, 90], "val": [90, 100]}), ("b", {"train": [0, 90], "val": [90, 100]}),
                        ("c", {"train": [0, 75], "val": [75, 100]})):
        clips[name] = tmp_path / name
        clips[name].mkdir()
        (clips[name] / "meta.json").write_text(json.dumps({"n_frames": 100, "split": split}))
    key = lambda clip, seed=0: pred.fit_key(clip, "whisper", 8, PredictorConfig(), MouthStateConfig(), seed, 1)  # noqa: E731
    assert key(clips["a"]) == key(clips["a"])
    assert len({key(clips["a"]), key(clips["b"]), key(clips["c"]), key(clips["a"], seed=1)}) == 4


def test_prepare_bench_compares_tracks_with_a_baseline(tmp_path):
    """bench/prepare.py --baseline: the tracks of two preparations of one clip are compared in
    pixels; identical tracks read as zero, a shift of the landmarks as that shift; a folder that
    is not a talkgs checkout is refused before anything runs."""
    import numpy as np

    prep = bench_module("prepare")
    rng = np.random.default_rng(0)
    tracks = {"landmarks": rng.uniform(0, 512, (5, 478, 2)).astype(np.float32),
              "face_box": rng.uniform(0, 512, (5, 4)).astype(np.float32),
              "w2c": np.tile(np.eye(4, dtype=np.float32), (5, 1, 1)),
              "reproj_error_px": np.full(5, 2.0, np.float32)}
    for name, shift in (("a", 0.0), ("b", 0.0), ("c", 3.0)):
        (tmp_path / name).mkdir()
        moved = {**tracks, "landmarks": tracks["landmarks"] + np.float32(shift)}
        np.savez(tmp_path / name / "tracks.npz", **moved)
    same = prep.tracking_agreement(tmp_path / "b", tmp_path / "a")
    assert same["identical_tracks"] and same["landmark_px_max"] == 0 and same["reproj_px_mean"] == 2.0
    moved = prep.tracking_agreement(tmp_path / "c", tmp_path / "a")
    assert not moved["identical_tracks"] and moved["landmark_px_mean"] == pytest.approx(3 * 2**0.5, rel=1e-4)
    r = subprocess.run([sys.executable, str(BENCH / "prepare.py"), "--video", str(tmp_path / "a" / "tracks.npz"),
                        "--baseline", str(tmp_path), "--out", str(tmp_path / "out.json")], capture_output=True, text=True)
    assert r.returncode == 2 and "not a talkgs checkout" in r.stderr and not (tmp_path / "out.json").exists()


def test_peak_memory_counts_the_processes_a_command_starts(bench_modules):
    """A parent holding 200 MB that starts a child holding 300 MB peaks above 450 MB in all, which
    the parent's own rusage would never show."""
    H, _ = bench_modules
    script = (
        "import subprocess, sys, time\n"
        "a = bytearray(200 * 2**20)\n"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; b = bytearray(300 * 2**20); time.sleep(1.5)'])\n"
        "c.wait()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    peak_gib = H.wait_sampling_rss(proc)
    assert proc.returncode == 0
    assert 450 / 1024 < peak_gib < 2.0, peak_gib
    assert H.tree_rss_bytes(proc.pid) == 0  # gone


def test_gpu_chain_steps_run_options_their_scripts_have_and_trainings_side_by_side_share_the_gpu():
    """bench/gpu_steps.py: every named step calls a bench script with options that script lists in
    its --help; a side-by-side step starts each training with --shared-gpu in the background,
    waits for all, and adds the audio features a preset reads (the original's mel) once per clip."""
    steps = bench_module("gpu_steps")
    helps: dict[str, str] = {}
    for name in steps.NAMED:
        (cmd,) = steps.plan(name)
        words = cmd.split()
        if words[:3] == ["timeout", "300", "python3"]:
            assert (REPO / words[-1]).is_dir()
            continue
        script = REPO / words[1]
        if script not in helps:
            r = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=REPO)
            assert r.returncode == 0, r.stderr[-2000:]
            helps[script] = r.stdout
        for opt in re.findall(r"(?<!\S)--[a-z0-9-]+", cmd):
            assert opt in helps[script], (name, opt)
    assert steps.plan("train") == steps.plan("train:anchor:none:0")
    lines = steps.plan("side:anchor:face_x4_3:0,anchor:net_lr_sqrt2:1,obama_v25:original:0")
    runs = [ln for ln in lines if ln.startswith("python3 bench/train.py")]
    assert len(runs) == 3 and all(ln.endswith("2>&1 &") and "--shared-gpu" in ln for ln in runs)
    assert "--variant face_x4_3" in runs[0] and "--seed 1 --variant net_lr_sqrt2" in runs[1]
    assert "$DATA/obama_v25 " in runs[2] and "--preset original" in runs[2]
    assert len({ln.split("--run ")[1].split()[0] for ln in runs}) == 3
    assert lines.index("wait") > max(lines.index(ln) for ln in runs)
    waits = [ln for ln in lines if ".ready" in ln]
    assert len(waits) == 2 and lines.index(waits[1]) < lines.index(runs[0])
    feats = [ln for ln in lines if "talkgs features" in ln]
    assert feats == ["[ -e $DATA/anchor/audio_whisper.npy ] || python3 -m talkgs features $DATA/anchor --kind whisper",
                     "[ -e $DATA/obama_v25/audio_mel.npy ] || python3 -m talkgs features $DATA/obama_v25 --kind mel"]
    alone = steps.plan("train:anchor:none:1")
    assert "--shared-gpu" not in alone[-1] and not alone[-1].endswith("&")


@pytest.mark.parametrize("bad, says", [
    ("train:anchor:bogus:0", "'bogus' is neither a bench variant"),
    ("train:anchor:none:x", "SEED is a whole number"),
    ("train:anchor:none", "expected CLIP:NAME:SEED"),
    ("train:../x:none:0", "CLIP is a dataset folder's name"),
    ("train:..:none:0", "CLIP is a dataset folder's name"),
    ("side:anchor:none:0", "needs two trainings or more"),
    ("side:anchor:none:0,anchor:none:0", "named twice"),
    ("serve_fast", "no step 'serve_fast'"),
])
def test_gpu_chain_refuses_a_bad_step_in_one_line_before_it_starts(bad, says):
    r = subprocess.run([sys.executable, str(BENCH / "gpu_steps.py"), "--check", "train", "render", bad],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and says in r.stderr, r.stderr


def test_gpu_chain_refuses_a_step_that_needs_the_default_run_before_train_made_it():
    steps = bench_module("gpu_steps")
    assert len(steps.check(["tests", "train:anchor:none:0", "render", "serve"])) >= 4
    assert steps.check(["side:anchor:face_x4_3:0,anchor:none:0", "profile"])[-1] == steps.plan("profile")[0]
    with pytest.raises(steps.StepError, match="'render' uses the run of 'train', which must come before it"):
        steps.check(["tests", "train:anchor:none:1", "render", "train"])


def test_net_lr_sqrt2_scales_every_network_learning_rate_and_nothing_else(tmp_path):
    import dataclasses
    import math

    from talkgs.train.config import TrainConfig

    train = bench_module("train")
    base = TrainConfig.from_preset("default", tmp_path, tmp_path / "run")
    new = train.VARIANTS["net_lr_sqrt2"](base)
    for f in dataclasses.fields(base.model.net_lrs):
        assert getattr(new.model.net_lrs, f.name) == pytest.approx(math.sqrt(2) * getattr(base.model.net_lrs, f.name))
    assert dataclasses.replace(new, model=dataclasses.replace(new.model, net_lrs=base.model.net_lrs)) == base
