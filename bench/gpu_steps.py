"""The steps of bench/gpu_chain.sh's chain, as the bash commands each one runs.

    python3 bench/gpu_steps.py STEP            # the step's commands (the chain runs them with bash)
    python3 bench/gpu_steps.py --check STEP ...  # exit 2 with one line naming the first bad step

A step is one of:
- a named step (:data:`NAMED`): render, serve and its settings, profile, tests. They use the run of
  ``train`` (the default on the anchor, seed 0), which must come earlier in the chain;
- ``train:CLIP:NAME:SEED``: bench/train.py on the dataset $DATA/CLIP with NAME, a bench variant
  of bench/train.py (VARIANTS; ``none`` is the default) or a preset (``original``), and the seed;
  ``train`` alone is ``train:anchor:none:0``;
- ``side:T,T,...``: several trainings ``CLIP:NAME:SEED`` side by side on the one GPU, for their
  quality: their wall times are not one training's (bench/train.py --shared-gpu records that).

A training's run is $RUNS/CLIP_NAME_sSEED and its result $RES/CLIP_NAME_sSEED_$TAG.json; a named
step's result is $RES/STEP_$TAG.json. Before training, a step waits for its dataset (up to 10 min:
a later call may carry it; the chain marks a whole one with .ready) and computes the audio
features its config reads where the dataset lacks them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import _harness  # noqa: F401  bench/ is on sys.path; it puts the checkout there too
import train as bench_train  # noqa: E402
from talkgs.train.config import PRESETS, TrainConfig  # noqa: E402

DEFAULT_RUN = "$RUNS/anchor_none_s0"
SERVE = "--dataset $DATA/anchor --clients 24 32 40 48 --find-max --seconds 4 --no-encode"
ALTERNATE = "--batches 1,4,16,32 --frames 1000 --seconds 2 --no-mouth --rounds 3 --alternate one-pass"

SERVE_SETTINGS = {"serve": "", "serve_2pass": "--two-passes", "serve_torch": "--torch-face",
                  "serve_eager_enc": "--eager-encoder", "serve_mb64": "--max-batch 64", "serve_p2": "--processes 2"}
"""bench/serve.py as built, and with a baseline's or a setting's switch."""

NAMED = {
    "render": f"python3 bench/render.py {DEFAULT_RUN} {ALTERNATE} --out $RES/render_$TAG.json",
    **{name: " ".join(filter(None, ["python3 bench/serve.py", DEFAULT_RUN, SERVE, switch, f"--out $RES/{name}_$TAG.json"]))
       for name, switch in SERVE_SETTINGS.items()},
    "profile": f"python3 bench/train_profile.py $DATA/anchor --stage face --checkpoint {DEFAULT_RUN}/checkpoints/face.pt "
               "--at 0.9 --steps 20 --out $RES/profile_$TAG.json",
    "tests": "timeout 300 python3 -m pytest -q tests/gpu",
}
"""Named steps: render (as built, alternating with two rasterizer passes, three rounds), serve
(--find-max, :data:`SERVE_SETTINGS`), profile (the face stage's step), tests/gpu."""

ALIASES = {"train": "train:anchor:none:0"}


class StepError(ValueError):
    """A step the chain cannot run (one line naming it)."""


def parse_training(spec: str) -> tuple[str, str, int]:
    """``CLIP:NAME:SEED`` -> (clip, name, seed), refused in one line where a part is not valid."""
    parts = spec.split(":")
    if len(parts) != 3:
        raise StepError(f"training {spec!r}: expected CLIP:NAME:SEED")
    clip, name, seed = parts
    if not clip or clip.startswith(".") or not all(c.isalnum() or c in "_-." for c in clip):
        raise StepError(f"training {spec!r}: CLIP is a dataset folder's name under $DATA")
    if name not in bench_train.VARIANTS and name not in PRESETS:
        raise StepError(f"training {spec!r}: {name!r} is neither a bench variant "
                        f"({', '.join(sorted(bench_train.VARIANTS))}) nor a preset ({', '.join(PRESETS)})")
    if not seed.isdigit():
        raise StepError(f"training {spec!r}: SEED is a whole number")
    return clip, name, int(seed)


def audio_kind(name: str) -> str:
    """The audio features a training NAME (variant of the default, or preset) reads."""
    base = TrainConfig.from_preset(name if name in PRESETS else "default", Path("DATA"), Path("RUN"))
    return base.audio_kind if name in PRESETS else bench_train.VARIANTS[name](base).audio_kind


def _selector(name: str) -> str:
    return f"--preset {name}" if name in PRESETS else f"--variant {name}"


def _training(clip: str, name: str, seed: int, shared: bool) -> str:
    rid = f"{clip}_{name}_s{seed}"
    return (f"python3 bench/train.py $DATA/{clip} --run $RUNS/{rid} --out $RES/{rid}_$TAG.json --seed {seed} "
            f"{_selector(name)}" + (" --shared-gpu" if shared else ""))


def _prepare_data(trainings: list[tuple[str, str, int]]) -> list[str]:
    """Wait for each clip (carried whole when .ready), then add the features the trainings read."""
    lines = []
    for clip in dict.fromkeys(c for c, _, _ in trainings):
        lines.append(f"for i in $(seq 120); do [ -e $DATA/{clip}/.ready ] && break; sleep 5; done")
        for kind in dict.fromkeys(audio_kind(n) for c, n, _ in trainings if c == clip):
            lines.append(f"[ -e $DATA/{clip}/audio_{kind}.npy ] || python3 -m talkgs features $DATA/{clip} --kind {kind}")
    return lines


def plan(step: str) -> list[str]:
    """The bash lines of one step (see the module docstring); :class:`StepError` if it is not one."""
    step = ALIASES.get(step, step)
    if step in NAMED:
        return [NAMED[step]]
    if step.startswith("train:"):
        t = parse_training(step[len("train:"):])
        return _prepare_data([t]) + [_training(*t, shared=False)]
    if step.startswith("side:"):
        ts = [parse_training(s) for s in step[len("side:"):].split(",")]
        if len(ts) < 2:
            raise StepError(f"step {step!r}: side by side needs two trainings or more")
        if len(set(ts)) < len(ts):
            raise StepError(f"step {step!r}: a training is named twice")
        runs = [_training(*t, shared=True) for t in ts]
        logs = [f"$RUNS/{c}_{n}_s{s}.log" for c, n, s in ts]
        return _prepare_data(ts) + [f"{r} > {log} 2>&1 &" for r, log in zip(runs, logs)] + [
            "wait", *[f"tail -n 12 {log}" for log in logs]]
    raise StepError(f"no step {step!r} (named: {', '.join(NAMED)}; or train:CLIP:NAME:SEED, side:T,T,...)")


def check(steps: list[str]) -> list[str]:
    """All the steps' lines, in order; :class:`StepError` for a bad step, or one that uses the
    default run before ``train`` made it."""
    lines, trained = [], False
    for step in steps:
        got = plan(step)
        trained = trained or any(ln.startswith("python3 bench/train.py") and f"--run {DEFAULT_RUN} " in ln for ln in got)
        if not trained and any(DEFAULT_RUN in ln for ln in got):
            raise StepError(f"step {step!r} uses the run of 'train', which must come before it")
        lines += got
    return lines


def main(argv: list[str]) -> int:
    only_check = argv[:1] == ["--check"]
    steps = argv[1:] if only_check else argv
    if not steps or (not only_check and len(steps) != 1):
        print("usage: gpu_steps.py STEP | --check STEP ...", file=sys.stderr)
        return 2
    try:
        lines = check(steps) if only_check else plan(steps[0])
    except StepError as e:
        print(f"gpu_steps.py: {e}", file=sys.stderr)
        return 2
    if not only_check:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
