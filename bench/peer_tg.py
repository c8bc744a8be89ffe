"""TalkingGaussian itself (Fictionarry/TalkingGaussian at a pinned commit) trained on a talkgs
dataset and scored with talkgs's metrics: the peer the rebuild is measured against.

    python bench/peer_tg.py setup --mirror TG_GIT [--rasterizer GIT --simple-knn GIT --glm GIT] --dir WORK
    python bench/peer_tg.py data DATASET --dir WORK [--kind whisper] [--frame-range A B]
    python bench/peer_tg.py build --dir WORK                                    # GPU machine, once
    python bench/peer_tg.py train --dir WORK --id ID [--iterations N --fuse-iterations M] [--parallel] [--from STAGE]  # GPU
    python bench/peer_tg.py score DATASET --dir WORK [--name NAME] [--lips-only]  # MediaPipe for the lips

setup   clones TG_GIT (a local git directory or bare mirror: nothing is downloaded) at PINNED into
        WORK/TalkingGaussian, its two CUDA submodules from the mirrors given (at the commits TG
        pins), and applies EDITS: each is an exact text replacement that must match once (or is
        already applied), listed in WORK/TalkingGaussian/TALKGS_EDITS.txt. Their code is only ever
        edited there, never copied into this repository.
data    `talkgs export-tg DATASET -o WORK/data/ID` (TG's data/<ID> layout; the val split becomes
        its transforms_val.json) and TG's audio slot aud_wh.npy ``[N, 16, C]``: talkgs's
        features of KIND (``audio_<kind>.npy``, ``[N, 2, C]``, two 20 ms states per frame), 16
        states per frame centred on the frame's centre (the second state of frame i - 4, both
        of frames i - 3 .. i + 3, the first of frame i + 4; zeros past the clip's ends), the
        shape TG's AudioNet reads from DeepSpeech (16 steps of 20 ms).
build   pip-installs TG's two CUDA extensions (diff-gaussian-rasterization, simple-knn) from the
        checkout into the running Python (no build isolation, no dependencies: nothing is
        downloaded), then imports its gridencoder once, which compiles it (torch JIT: nvcc, ninja).
train   TG's own recipe (scripts/train_xx.sh): train_mouth.py, train_face.py --init_num 2000
        --densify_grad_threshold 0.0005, train_fuse.py --opacity_lr 0.001, then synthesize_fuse.py
        --eval, with --audio_extractor whisper; run folder WORK/output/ID (talkgs_times.json: each
        stage's wall time). --iterations sets its mouth and face stages' steps (its own option)
        and --fuse-iterations its fuse stage's (an edit): the equal-wall-clock setting. Its
        schedule's phases scale with them (edits, and its own --position_lr_max_steps): warm-up
        3000/50000, mouth curriculum to 10000 steps before the end, position-LR decay over
        45000/50000, fuse LPIPS from 5000/10000; unchanged at its full schedule.
        --parallel runs its mouth and face stages side by side on the one GPU (its own script's
        commented-out parallel recipe, there on two GPUs); score then counts their common wall
        time once. Each stage loads the clip's frames itself (~50 s for the anchor's 1779).
        --from fuse (or face, render) resumes after a failed stage, keeping the earlier ones.
        Needs CUDA, nvcc, plyfile; stand-ins where lpips, imageio or pandas are missing.
score   the val renders (WORK/output/ID/test/ours_None/renders/renders.npy, written by an edit)
        against talkgs's ground truth of the same frames (`talkgs eval`'s protocol: the frame with
        its background replaced by the plate), with talkgs's metrics: PSNR, SSIM, ST-LPIPS on the
        full frame and on the mouth crop, and (MediaPipe) mouth r / amplitude / offset / LMD and the
        inside-mouth area and teeth. One row; bench/results/peer_tg/<--name>.json.

Deviations from the original, all listed in EDITS: the audio slot takes talkgs's Whisper states
(dimension from $TALKGS_TG_AUDIO_DIM, set by `train`); renders.npy is saved beside out.mp4; an
unused torchvision import goes; where the `lpips` package is missing, WORK/TalkingGaussian/lpips.py
stands in with talkgs's ST-LPIPS (alex) for TG's lip and patch LPIPS losses; where imageio
cannot write mp4 (imageio-ffmpeg missing), a stand-in that writes no mp4 (renders.npy is what is
scored); where pandas is missing, a stand-in read_csv for its au.csv. Its checkpoints hold numpy
scalars, which torch >= 2.6 loads only with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (set by `train`).
To build and train on a current PyTorch/CUDA it needs C++17 for its grid encoder, two standard
includes in its CUDA submodules (<cstdint>, <cfloat>) and a skip of non-finite steps (its mouth
loss is NaN where a frame's mouth mask is empty; its rasterizer returns non-finite images on
some face steps).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import _harness as H  # bench/ is on sys.path; it puts the checkout there too

PINNED = "9bd34f732e30cd94c0a9a087a125d2dda228e258"  # Fictionarry/TalkingGaussian, "accelerate loading a bit"
TG = "TalkingGaussian"
EXTRACTOR = "whisper"
POSTFIX = "wh"  # aud_<postfix>.npy, TG's naming of its feature files
STATES_PER_FRAME = 2
TG_WINDOW = 16  # states per frame TG's AudioNet reads

TG_ITERATIONS = 50_000  # its mouth and face stages' default --iterations
TG_FUSE_ITERATIONS = 10_000  # its fuse stage's, hard-coded


def _skip_non_finite(script: str, why: str) -> tuple[str, str, str, int, str]:
    """The edit that skips a training step whose loss is not finite (not the last step, which saves)."""
    return (script, "        loss.backward()\n",
            "        if not torch.isfinite(loss) and iteration < opt.iterations:  # talkgs: skip a non-finite step\n"
            "            continue\n        loss.backward()\n",
            1, f"skip non-finite steps: {why}")


# (file, old, new, count, why): exact replacements inside the TG checkout.
EDITS = (
    ("scene/dataset_readers.py",
     'postfix_dict = {"deepspeech": "ds", "esperanto": "eo", "hubert": "hu"}',
     'postfix_dict = {"deepspeech": "ds", "esperanto": "eo", "hubert": "hu", "whisper": "wh"}',
     1, "the audio slot reads aud_wh.npy for --audio_extractor whisper"),
    ("scene/motion_net.py",
     "        elif 'hubert' in args.audio_extractor:\n            self.audio_in_dim = 1024\n",
     "        elif 'hubert' in args.audio_extractor:\n            self.audio_in_dim = 1024\n"
     "        elif 'whisper' in args.audio_extractor:\n"
     "            self.audio_in_dim = int(__import__('os').environ['TALKGS_TG_AUDIO_DIM'])\n",
     2, "AudioNet's input width for talkgs's features (face and mouth motion networks)"),
    ("synthesize_fuse.py",
     "import torchvision\n", "",
     1, "unused import (the calls are commented out); torchvision may not match the installed torch"),
    ("synthesize_fuse.py",
     "    imageio.mimwrite(os.path.join(render_path, 'out.mp4'), all_preds,",
     "    np.save(os.path.join(render_path, 'renders.npy'), np.stack(all_preds))  # talkgs: frames to score\n"
     "    imageio.mimwrite(os.path.join(render_path, 'out.mp4'), all_preds,",
     1, "the val renders losslessly, for bench/peer_tg.py score"),
    ("gridencoder/backend.py", "'-std=c++14'", "'-std=c++17'",
     2, "C++17: current PyTorch headers do not compile as C++14"),
    ("submodules/diff-gaussian-rasterization/cuda_rasterizer/rasterizer_impl.h",
     "#include <iostream>\n#include <vector>\n", "#include <cstdint>\n#include <iostream>\n#include <vector>\n",
     1, "<cstdint> for std::uintptr_t and uint32_t (current GCC headers no longer include it on the way)"),
    ("submodules/simple-knn/simple_knn.cu",
     "#define BOX_SIZE 1024\n", "#define BOX_SIZE 1024\n#include <cfloat>\n",
     1, "<cfloat> for FLT_MAX (likewise)"),
    _skip_non_finite("train_mouth.py", "the mouth loss is NaN on frames whose mouth mask is empty"),
    _skip_non_finite("train_face.py", "the rasterizer returns non-finite images on some face steps"),
    _skip_non_finite("train_fuse.py", "as the face stage"),
    ("train_fuse.py", "    opt.iterations = 10000\n",
     "    opt.iterations = int(os.environ.get('TALKGS_TG_FUSE_ITERATIONS', 10000))  # talkgs: settable\n",
     1, "the fuse stage's step count (10000, hard-coded) settable for the equal-wall-clock setting"),
    *(edit for script in ("train_mouth.py", "train_face.py") for edit in (
        (script, "    warm_step = 3000\n",
         "    warm_step = 3000 * opt.iterations // 50000  # talkgs: scaled with --iterations\n",
         1, "its warm-up (3000 of 50000 steps) scaled with --iterations: the same at its full schedule"),
        (script, "    mouth_select_iter = bg_iter - 10000\n",
         "    mouth_select_iter = bg_iter - 10000 * opt.iterations // 50000  # talkgs: scaled with --iterations\n",
         1, "its mouth-curriculum end (10000 steps before the last) scaled likewise: below ~11000 steps the "
            "original's is negative and its face stage loops for ever looking for a camera in an empty window"))),
    ("train_fuse.py", "    lpips_start_iter = 5000\n",
     "    lpips_start_iter = 5000 * opt.iterations // 10000  # talkgs: scaled with its step count\n",
     1, "its LPIPS start (5000 of 10000 fuse steps) scaled with the fuse step count"),
)

LPIPS_STAND_IN = '''"""talkgs stand-in for the `lpips` package (missing here): ST-LPIPS (alex) from talkgs."""
import torch

from talkgs.metrics.lpips import load_lpips


class LPIPS(torch.nn.Module):
    def __init__(self, net="alex", **kwargs):
        super().__init__()
        self.net = net

    def forward(self, a, b):
        """a, b: [N, 3, H, W] or [3, H, W] in [-1, 1] (lpips' convention) -> [N, 1, 1, 1]."""
        a, b = (a[None] if a.dim() == 3 else a), (b[None] if b.dim() == 3 else b)
        to01 = lambda x: ((x + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)  # noqa: E731
        return load_lpips(self.net, a.device)(to01(a), to01(b)).view(-1, 1, 1, 1)
'''
PANDAS_STAND_IN = '''"""talkgs stand-in for pandas (missing here): read_csv of a numeric CSV, columns as .values."""
import csv

import numpy as np


class _Column:
    def __init__(self, values):
        self.values = np.asarray(values, dtype=np.float64)


class _Frame(dict):
    def __getitem__(self, key):
        return _Column(dict.__getitem__(self, key))


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    head, body = rows[0], rows[1:]
    return _Frame({k: [float(r[i]) for r in body] for i, k in enumerate(head)})
'''
IMAGEIO_STAND_IN = '''"""talkgs stand-in for imageio (it cannot write mp4 here): writes no video; renders.npy holds the frames."""


def mimwrite(*args, **kwargs):
    return None
'''


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def apply_edits(root: Path) -> list[str]:
    """Apply EDITS to the pristine checkout at ``root``; returns one line per edit. Refuses
    (SystemExit) an edit whose text is not there exactly ``count`` times."""
    done = []
    for rel, old, new, count, why in EDITS:
        path = root / rel
        if rel.startswith("submodules/") and not path.exists():
            done.append(f"not edited {rel}: its submodule is not checked out")
            continue
        text = path.read_text()
        if text.count(old) != count:
            raise SystemExit(f"peer_tg: {rel}: the text to edit is found {text.count(old)} times, not {count} "
                             f"(is the checkout at {PINNED[:12]}?): {old.splitlines()[0]!r}")
        path.write_text(text.replace(old, new))
        done.append(f"edit {rel}: {why}")
    return done


def _installed(python: str, module: str) -> bool:
    """Whether ``python`` imports ``module`` from its own installation (run outside the checkout,
    so a stand-in there does not count)."""
    code = f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({module!r}) else 1)"
    return subprocess.run([python, "-c", code], cwd="/").returncode == 0


def stand_ins(root: Path, python: str = sys.executable) -> list[str]:
    """lpips.py / imageio.py / pandas.py in the checkout where ``python`` lacks what TG uses of the
    package (imageio: its FFmpeg backend, which TG's mp4 writing needs); a stand-in written earlier
    goes where that is installed."""
    out = []
    for module, needs, text in (("lpips", "lpips", LPIPS_STAND_IN), ("imageio", "imageio_ffmpeg", IMAGEIO_STAND_IN),
                                ("pandas", "pandas", PANDAS_STAND_IN)):
        path = root / f"{module}.py"
        if _installed(python, needs):
            if path.exists() and path.read_text() == text:
                path.unlink()
            out.append(f"{module}: installed")
        else:
            path.write_text(text)
            out.append(f"{module}.py: talkgs stand-in ({needs} is not installed)")
    return out


def submodule(parent: Path, path: str, src: str | None) -> str:
    """Check out submodule ``path`` of the repository at ``parent`` from the local git ``src`` at
    the commit ``parent`` pins; one line saying what was done."""
    if not (parent / ".git").exists():
        return f"{path}: its parent {parent.name} is not checked out"
    pin = git("ls-tree", "HEAD", path, cwd=parent).split()[2]
    if src is None:
        return f"{path}: no mirror given (pass one; the build needs {pin})"
    where = parent / path
    if not (where / ".git").exists():
        if where.exists():
            where.rmdir()  # the empty folder git leaves for an uninitialised submodule
        git("clone", "--quiet", "--no-checkout", str(src), str(where))
    git("-c", "advice.detachedHead=false", "checkout", "--quiet", "--force", pin, cwd=where)
    return f"{path}: {pin} from {src}"


def cmd_setup(args) -> int:
    mirror = Path(args.mirror)
    dst = Path(args.dir) / TG
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        git("clone", "--quiet", "--no-checkout", str(mirror), str(dst))
    # A forced checkout restores every tracked file, so the edits always start from the original.
    git("-c", "advice.detachedHead=false", "checkout", "--quiet", "--force", PINNED, cwd=dst)
    lines = [f"TalkingGaussian {PINNED} from {mirror}"]
    rast = dst / "submodules/diff-gaussian-rasterization"
    for parent, path, src in ((dst, "submodules/diff-gaussian-rasterization", args.rasterizer),
                              (dst, "submodules/simple-knn", args.simple_knn),
                              (rast, "third_party/glm", args.glm)):
        lines.append(submodule(parent, path, src))
    lines += apply_edits(dst)
    lines += stand_ins(dst)
    (dst / "TALKGS_EDITS.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def tg_windows(states: np.ndarray) -> np.ndarray:
    """``[N, 16, C]``: per frame, the 16 feature states centred on its centre, from talkgs
    features ``[N, 2, C]`` (module docstring)."""
    n, s, c = states.shape
    if s != STATES_PER_FRAME:
        raise SystemExit(f"peer_tg: features must hold {STATES_PER_FRAME} states per frame, got {states.shape}")
    half = TG_WINDOW // 2
    flat = np.concatenate([np.zeros((half, c), states.dtype), states.reshape(n * s, c), np.zeros((half, c), states.dtype)])
    # Frame i's states are flat[2 i .. 2 i + 1] (+ half for the padding); its centre lies between them.
    starts = np.arange(n) * s + 1
    return np.stack([flat[a : a + TG_WINDOW] for a in starts])


def cmd_data(args) -> int:
    from talkgs.data import format as fmt

    root = Path(args.dataset)
    ident = args.id or root.resolve().name
    out = Path(args.dir) / "data" / ident
    rng = [] if args.frame_range is None else ["--frame-range", *map(str, args.frame_range)]
    subprocess.run([sys.executable, "-m", "talkgs", "export-tg", str(root), "-o", str(out), "--force", *rng], check=True)
    states = np.load(root / fmt.audio_feature_file(args.kind)).astype(np.float32)
    lo, hi = args.frame_range or (0, states.shape[0])
    windows = tg_windows(states)[lo:hi]  # aud_id counts from the range's first frame
    np.save(out / f"aud_{POSTFIX}.npy", windows)
    (out / "talkgs_audio.json").write_text(json.dumps({"kind": args.kind, "dim": int(windows.shape[-1])}) + "\n")
    print(f"peer_tg: {out} with aud_{POSTFIX}.npy {list(windows.shape)} ({args.kind})")
    return 0


def cmd_build(args) -> int:
    tg = Path(args.dir) / TG
    for sub in ("submodules/diff-gaussian-rasterization", "submodules/simple-knn"):
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", str(tg / sub)],
                       check=True)
    # Its grid encoder compiles on first import: do it here, so no stage's wall time includes it.
    subprocess.run([sys.executable, "-c", "from gridencoder import GridEncoder"], cwd=tg, check=True)
    return 0


def cmd_train(args) -> int:
    import torch

    work = Path(args.dir)
    tg = work / TG
    data = work / "data" / args.id
    run = work / "output" / args.id
    audio = json.loads((data / "talkgs_audio.json").read_text())
    # Its checkpoints hold numpy scalars, which torch >= 2.6's weights-only torch.load refuses:
    # its own files are loaded with the earlier default.
    env = {**os.environ, "TALKGS_TG_AUDIO_DIM": str(audio["dim"]), "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",
           "PYTHONPATH": os.pathsep.join([str(H.REPO), os.environ.get("PYTHONPATH", "")])}
    if args.fuse_iterations is not None:
        env["TALKGS_TG_FUSE_ITERATIONS"] = str(args.fuse_iterations)
    stand_ins(tg)
    common = ["-s", str(data), "-m", str(run), "--audio_extractor", EXTRACTOR]
    its = [] if args.iterations is None else [  # its position-LR decay (45000 of 50000 steps) scaled likewise
        "--iterations", str(args.iterations), "--position_lr_max_steps", str(45_000 * args.iterations // TG_ITERATIONS)]
    steps = [("mouth", ["train_mouth.py", *common, *its]),
             ("face", ["train_face.py", *common, "--init_num", "2000", "--densify_grad_threshold", "0.0005", *its]),
             ("fuse", ["train_fuse.py", *common, "--opacity_lr", "0.001"]),
             ("render", ["synthesize_fuse.py", *common, "--eval"])]
    times = {"iterations": {"mouth": args.iterations or TG_ITERATIONS, "face": args.iterations or TG_ITERATIONS,
                            "fuse": args.fuse_iterations or TG_FUSE_ITERATIONS}, "seconds": {}}
    times["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    run.mkdir(parents=True, exist_ok=True)
    times_path = run / "talkgs_times.json"
    names = [name for name, _ in steps]
    if args.resume_from != "mouth":  # the stages before it ran earlier: keep their times
        if not times_path.is_file():
            raise SystemExit(f"peer_tg: --from {args.resume_from} needs the earlier stages' {times_path}")
        earlier = json.loads(times_path.read_text())
        if earlier["iterations"] != times["iterations"]:
            raise SystemExit(f"peer_tg: {times_path} is of {earlier['iterations']} steps, not {times['iterations']}")
        times = {**earlier, "seconds": {k: v for k, v in earlier["seconds"].items()
                                        if names.index(k) < names.index(args.resume_from)}}
        steps = steps[names.index(args.resume_from):]
        if args.resume_from == "face":  # its face stage now runs alone: the stages' times add up
            times.pop("parallel", None)
    save = lambda: times_path.write_text(json.dumps(times, indent=1) + "\n")  # noqa: E731
    if args.parallel and args.resume_from == "mouth":  # its mouth and face stages are independent: side by side on one GPU
        times["parallel"] = True
        t0 = time.perf_counter()
        procs = []
        for name, step in steps[:2]:
            print("peer_tg (side by side):", " ".join(step), flush=True)
            procs.append((name, subprocess.Popen([sys.executable, *step], cwd=tg, env=env)))
        pending = dict(procs)
        while pending:  # each stage's own end, whichever ends first
            for name, proc in list(pending.items()):
                if proc.poll() is None:
                    continue
                del pending[name]
                if proc.returncode != 0:
                    for other in pending.values():
                        other.kill()
                    raise SystemExit(f"peer_tg: its {name} stage failed (exit {proc.returncode})")
                times["seconds"][name] = round(time.perf_counter() - t0, 1)
            time.sleep(0.2)
        save()
        steps = steps[2:]
    for name, step in steps:
        print("peer_tg:", " ".join(step), flush=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *step], cwd=tg, env=env, check=True)
        times["seconds"][name] = round(time.perf_counter() - t0, 1)
        save()
    return 0


def _lip_figures(crop: np.ndarray, gt, landmarks: np.ndarray, gt_open: np.ndarray) -> dict:
    """talkgs's lip and inside-mouth figures of TG's face crops ``uint8 [N, h, w, 3]`` against
    the ground truth ``gt`` (float [N, H, W, 3] on the plate) and its tracked ``landmarks``."""
    import torch

    from talkgs.eval.evaluate import lip_scores
    from talkgs.metrics import mouth as mm
    from talkgs.metrics.lips import lips_landmarks

    gt_u8 = (gt * 255 + 0.5).to(torch.uint8).numpy()
    gt_mouth = {"area": mm.inner_lip_area(landmarks), "teeth": mm.teeth_fraction(gt_u8, landmarks)}
    scores, _ = lip_scores(crop, gt_open, lips_landmarks(landmarks), 1.0, 8, gt_mouth)
    return {**{f"lips_{k}": v for k, v in scores.items() if k != "mouth"},
            **{f"mouth_{k}": v for k, v in scores["mouth"].items()}}


def _val_truth(root: Path, a: int, b: int):
    """The val frames ``[a, b)`` of a talkgs dataset as `talkgs eval` scores them: ``(ds, gt,
    tracks)``, ``gt`` float ``[N, H, W, 3]`` on the plate, ``tracks`` their ``landmarks``,
    ``mouth_open`` and ``face_box`` (float64) and the whole clip's ``all_landmarks``."""
    from talkgs.data import load_dataset
    from talkgs.data import format as fmt
    from talkgs.model.head import ground_truth_on_plate

    ds = load_dataset(root, "cpu", audio_kind=None, frame_range=(a, b))
    gt = ground_truth_on_plate(ds.frames, ds.labels, ds.background)
    with np.load(root / fmt.TRACKS) as z:
        tracks = {k: z[k][a:b].astype(np.float64) for k in ("landmarks", "mouth_open", "face_box")}
        tracks["all_landmarks"] = z["landmarks"]
    return ds, gt, tracks


def _complete_lips(args, root: Path) -> int:
    """``score --lips-only``: the lip figures of the row an earlier ``score`` wrote without
    MediaPipe (bench/results/peer_tg/<--name>.json), from the face crops it saved."""
    from talkgs.eval.evaluate import mediapipe_missing
    from talkgs.media import read_frames

    missing = mediapipe_missing()
    if missing is not None:
        raise SystemExit(f"peer_tg: --lips-only needs MediaPipe (talkgs[prepare]): {missing}")
    path = H.result_path("peer_tg", args, "cpu")
    if not path.is_file():
        raise SystemExit(f"peer_tg: {path} is missing; run score (without --lips-only) and copy its result here")
    doc = json.loads(path.read_text())
    row = doc["rows"][0]
    if "lips_render" not in row:
        raise SystemExit(f"peer_tg: {path} holds no saved crops (lips_render): nothing to complete")
    a, b = row["frames"]
    crop = read_frames(Path(row["lips_render"]["file"]))
    if crop.shape[0] != b - a:
        raise SystemExit(f"peer_tg: {row['lips_render']['file']} has {crop.shape[0]} frames; the val split has {b - a}")
    _, gt, tracks = _val_truth(root, a, b)
    row.update(_lip_figures(np.ascontiguousarray(crop), gt, tracks["landmarks"], tracks["mouth_open"]))
    row.pop("lips_note", None)
    row["lips_completed"] = "lip figures from the saved face crops (score --lips-only)"
    H.dump(doc, path)
    print(json.dumps(row, indent=1))
    return 0


def cmd_score(args) -> int:
    import torch

    from talkgs.data import format as fmt
    from talkgs.eval.evaluate import frame_figures, mediapipe_missing, save_render, union_box
    from talkgs.metrics import mouth as mm

    root = Path(args.dataset)
    if args.lips_only:
        return _complete_lips(args, root)
    ident = args.id or root.resolve().name
    renders_path = Path(args.dir) / "output" / ident / "test" / "ours_None" / "renders" / "renders.npy"
    renders = np.load(renders_path)
    meta = fmt.read_meta(root)
    a, b = (int(v) for v in meta["split"]["val"])
    if renders.shape[0] != b - a:
        raise SystemExit(f"peer_tg: {renders_path} has {renders.shape[0]} frames; the val split has {b - a}")
    ds, gt, tracks = _val_truth(root, a, b)
    pred = torch.from_numpy(renders).float() / 255
    landmarks, gt_open = tracks["landmarks"], tracks["mouth_open"]
    box = union_box(tracks["face_box"], ds.width, ds.height)
    side = mm.mouth_crop_side(tracks["all_landmarks"])
    boxes = mm.mouth_crop_boxes(mm.lip_centres(landmarks), side, ds.width, ds.height)
    lp, lp_note = None, None
    try:
        from talkgs.metrics.lpips import load_lpips

        lp = load_lpips("alex", "cpu")
    except Exception as e:  # ST-LPIPS missing: the other figures stand
        lp_note = str(e)
    per_frame: dict[str, list[float]] = {}
    with torch.no_grad():
        for i in range(0, len(pred), 8):  # `talkgs eval`'s figures, a few frames at a time
            j = min(i + 8, len(pred))
            figs = frame_figures(pred[i:j], gt[i:j], ds.labels[i:j], tracks["face_box"][i:j], boxes[i:j], lp)
            for k, v in figs.items():
                per_frame.setdefault(k, []).extend(v)
    row = {"method": f"TalkingGaussian {PINNED[:7]} ({EXTRACTOR} audio)", "frames": [a, b],
           **{k: float(np.mean(v)) for k, v in per_frame.items()}, "mouth_crop_px": side}
    if lp_note is not None:
        row["lpips_note"] = lp_note
    times = renders_path.parents[3] / "talkgs_times.json"
    if times.exists():
        t = json.loads(times.read_text())
        row["iterations"] = t["iterations"]
        sec = t["seconds"]
        first = max(sec["mouth"], sec["face"]) if t.get("parallel") else sec["mouth"] + sec["face"]
        row["train_wall_s"] = round(first + sec.get("fuse", 0.0), 1)
        row["parallel_mouth_face"] = bool(t.get("parallel"))
        row["stage_seconds"] = t["seconds"]
        row["train_device"] = t.get("device")
    crop = np.ascontiguousarray(renders[:, box[1]:box[3], box[0]:box[2]])  # as `talkgs eval` (--render-crop face)
    missing = mediapipe_missing()
    if missing is None:
        row.update(_lip_figures(crop, gt, landmarks, gt_open))
    else:  # the GPU machine: save the crops as `talkgs eval` does; --lips-only completes the row
        saved = save_render(renders_path.parent / "talkgs_lips_val", crop)
        row["lips_render"] = {"file": str(saved), "box": list(box)}
        row["lips_note"] = (f"lip metrics pending: {missing}; complete them where MediaPipe is, with "
                            f"{saved} copied to the same path: peer_tg.py score {root} --dir {args.dir} --lips-only")
    H.write("peer_tg", args, [row], device="cpu", params={"dataset": str(root), "renders": str(renders_path)})
    print(json.dumps(row, indent=1))
    return 0


def main() -> int:
    ap = H.parser(__doc__, "peer_tg")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("setup", help="clone at the pinned commit and apply the edits")
    p.add_argument("--mirror", required=True, help="TalkingGaussian git directory (e.g. /work/.mirror/Fictionarry+TalkingGaussian/repo)")
    p.add_argument("--rasterizer", default=None, help="git directory of ashawkey/diff-gaussian-rasterization")
    p.add_argument("--simple-knn", default=None, help="git directory of simple-knn (gitlab.inria.fr/bkerbl/simple-knn, "
                   "or a copy holding its commit, e.g. github camenduru/simple-knn)")
    p.add_argument("--glm", default=None, help="git directory of g-truc/glm (the rasterizer's submodule)")
    p.add_argument("--dir", required=True, help="work folder (outside this repository)")
    p = sub.add_parser("data", help="export a talkgs dataset into TG's layout with the audio slot")
    p.add_argument("dataset")
    p.add_argument("--dir", required=True)
    p.add_argument("--id", default=None, help="TG's data/<ID> (default: the dataset folder's name)")
    p.add_argument("--kind", default="whisper", help="talkgs feature kind with 2 states per frame")
    p.add_argument("--frame-range", type=int, nargs=2, default=None, metavar=("A", "B"),
                   help="export only dataset frames [A, B) (export-tg's --frame-range)")
    p = sub.add_parser("build", help="install TG's CUDA extensions into this Python (GPU machine)")
    p.add_argument("--dir", required=True)
    p = sub.add_parser("train", help="TG's training recipe and val renders (GPU)")
    p.add_argument("--dir", required=True)
    p.add_argument("--id", required=True)
    p.add_argument("--iterations", type=int, default=None,
                   help="steps of its mouth and face stages (its --iterations; default its 50000)")
    p.add_argument("--fuse-iterations", type=int, default=None, help="steps of its fuse stage (default its 10000)")
    p.add_argument("--parallel", action="store_true",
                   help="its mouth and face stages side by side on the one GPU (each stage's time is then "
                        "from their common start)")
    p.add_argument("--from", dest="resume_from", choices=("mouth", "face", "fuse", "render"), default="mouth",
                   help="start at this stage, the earlier ones' checkpoints and times kept from an earlier run")
    p = sub.add_parser("score", help="talkgs's metrics on TG's val renders")
    p.add_argument("dataset")
    p.add_argument("--dir", required=True)
    p.add_argument("--id", default=None)
    p.add_argument("--out", type=Path, default=argparse.SUPPRESS, help="result file (as before the verb)")
    p.add_argument("--name", default=argparse.SUPPRESS, help="result name (as before the verb)")
    p.add_argument("--lips-only", action="store_true",
                   help="complete the lip figures of an earlier score's result (--name) from the face crops it "
                        "saved where MediaPipe was missing")
    args = ap.parse_args()
    return {"setup": cmd_setup, "data": cmd_data, "build": cmd_build, "train": cmd_train, "score": cmd_score}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
