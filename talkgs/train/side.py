"""The inside-mouth branch trained in a second process, beside the face branch.

The mouth stage and the face stage train disjoint parts of the head (the mouth branch against
the mouth interior, the face branch against the head with the mouth transparent), and the
mouth-state predictor depends on neither. A run whose first two stages are mouth and face can
therefore hand the predictor fit and the mouth stage to a side process while it trains the face
stage itself (``TrainConfig.branches_in_parallel``): both loops are bound by kernel launches
rather than by the device, so on one GPU they can overlap. The fuse stage, which needs both
branches, starts once the side process has ended.

The side process is an ordinary run of the same settings in ``RUN/mouth_branch/``, started from
the run's first checkpoint and stopped after its mouth stage (``python -m talkgs.train.side``).
Its checkpoints make it resumable like any run: a run stopped during the face stage stops the
side process too, and ``--resume`` continues both where they stopped. At the join the run takes
the side run's mouth branch, predictor, history and stage times (:func:`merge`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from talkgs.errors import Interrupted, TalkgsError
from talkgs.model.checkpoint import load as load_checkpoint
from talkgs.train.state import TrainState

SIDE_DIR = "mouth_branch"  # the side run's folder inside the run folder
SIDE_STAGE = "mouth"
SIDE_HEADROOM = 5 * 2**30  # bytes the side process needs beyond its copy of the clip (context, model, steps)
FACE_PREFIX = "branches.face."  # the face stage's parameters in the model's state dict


def wanted(mode: str | bool, device_type: str, world_size: int, stage_names: list[str]) -> bool:
    """Whether a run trains its mouth branch in a side process: ``mode`` on (or auto on a CUDA
    device, where the two launch-bound loops overlap, if it :func:`has_room`; a bool is a config
    written before auto), one process, and a schedule that starts mouth, face."""
    mode = {True: "on", False: "off"}.get(mode, mode)  # type: ignore[arg-type]
    if mode not in ("auto", "on", "off"):
        raise TalkgsError(f"branches_in_parallel must be auto, on or off, got {mode!r}")
    on = mode == "on" or (mode == "auto" and device_type == "cuda")
    return on and world_size == 1 and stage_names[:2] == [SIDE_STAGE, "face"]


def has_room(free_bytes: int, dataset_bytes: int) -> bool:
    """Whether a device with ``free_bytes`` free holds the side process: its own copy of the
    clip (``dataset_bytes``) and :data:`SIDE_HEADROOM`."""
    return free_bytes >= dataset_bytes + SIDE_HEADROOM


class SideRun:
    """The side process of a run in ``out`` (started or already finished)."""

    def __init__(self, out: Path, dataset: Path, device: str, backend: str, log_every: int, checkpoint_every: int):
        self.dir = Path(out) / SIDE_DIR
        self.dataset, self.device, self.backend = Path(dataset), device, backend
        self.log_every, self.checkpoint_every = int(log_every), int(checkpoint_every)
        self.proc: subprocess.Popen | None = None
        self.log_path = self.dir / "train.log"

    @property
    def latest(self) -> Path:
        return self.dir / "checkpoints" / "latest.pt"

    def finished(self) -> bool:
        """The side run's checkpoint says its mouth stage is complete."""
        return self.latest.is_file() and SIDE_STAGE in load_checkpoint(self.latest)["completed"]

    def start(self) -> None:
        """Start (or resume) the side process unless its stage is already complete."""
        if self.finished():
            return
        cmd = [sys.executable, "-m", "talkgs.train.side", str(self.dir), str(self.dataset),
               "--device", self.device, "--backend", self.backend,
               "--log-every", str(self.log_every), "--checkpoint-every", str(self.checkpoint_every)]
        self.dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        # Its own session: a Ctrl-C in the terminal reaches the run, which stops the side
        # process with one SIGTERM (two signals would stop it without a checkpoint).
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        log.close()

    def failed(self) -> str | None:
        """A one-line reason when the side process has ended without finishing its stage."""
        if self.proc is None or self.proc.poll() is None or self.proc.returncode == 0:
            return None
        return self._failure(self.proc.returncode)

    def _failure(self, code: int) -> str:
        tail = ""
        if self.log_path.is_file():
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
            tail = f": {lines[-1].strip()}" if lines else ""
        return f"the mouth branch's side process ended with exit code {code} (log {self.log_path}){tail}"

    def stop(self, timeout_s: float = 120.0) -> None:
        """Ask the side process to stop after its current step with a checkpoint, and wait."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def join(self) -> dict:
        """Wait for the side run to finish its stage; its latest checkpoint."""
        if self.proc is not None:
            code = self.proc.wait()
            if code != 0:
                raise TalkgsError(self._failure(code))
        state = load_checkpoint(self.latest) if self.latest.is_file() else None
        if state is None or SIDE_STAGE not in state["completed"]:
            raise TalkgsError(f"the mouth branch's side run {self.dir} has not finished its {SIDE_STAGE} stage")
        return state

    def copy_stage_checkpoint(self, run_out: Path) -> None:
        """The side run's end-of-stage checkpoint as the run's own ``checkpoints/mouth.pt``."""
        src = self.dir / "checkpoints" / f"{SIDE_STAGE}.pt"
        if src.is_file():
            dst = Path(run_out) / "checkpoints" / f"{SIDE_STAGE}.pt"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)


def merge(state: TrainState, side: dict) -> None:
    """Take into ``state`` (the run, at the end of its face stage) what the side run trained:
    every model tensor but the face branch's (the mouth branch, the predictor), the predictor's
    report, the mouth stage's history, times and steps, and the mouth stage as completed."""
    own = state.model.state_dict()
    merged = {k: (own[k] if k.startswith(FACE_PREFIX) else v) for k, v in side["model"].items()}
    state.model.load_state_dict(merged)
    state.predictor_report = json.loads(side["predictor_report"])
    state.history = [dict(r) for r in side["history"]] + [r for r in state.history if r["stage"] != SIDE_STAGE]
    for k, v in side["stage_times"].items():
        state.stage_times.setdefault(k, v)
    for k, v in side["stage_steps"].items():
        state.stage_steps.setdefault(k, v)
    if SIDE_STAGE not in state.completed:
        state.completed.insert(0, SIDE_STAGE)
    state.global_step += int(side["global_step"])


def main(argv: list[str] | None = None) -> int:
    """``python -m talkgs.train.side SIDE_DIR DATASET [--device D] [--backend B] [--log-every N]
    [--checkpoint-every N]``: continue the
    side run in SIDE_DIR from its latest checkpoint up to the end of its mouth stage."""
    import argparse

    from talkgs.train.config import TrainConfig
    from talkgs.train.trainer import resume_trainer

    ap = argparse.ArgumentParser(prog="python -m talkgs.train.side", description=main.__doc__)
    ap.add_argument("side_dir", type=Path)
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--log-every", type=int, default=TrainConfig.log_every)
    ap.add_argument("--checkpoint-every", type=int, default=TrainConfig.checkpoint_every)
    args = ap.parse_args(argv)
    cfg = TrainConfig(dataset=args.dataset, output=args.side_dir, resume=True, device=args.device,
                      backend=args.backend, progress=False, tensorboard=False, branches_in_parallel="off",
                      log_every=args.log_every, checkpoint_every=args.checkpoint_every)
    trainer = resume_trainer(cfg)
    try:
        trainer.run(until=SIDE_STAGE)
    except Interrupted as e:
        print(f"[mouth branch] {e}", flush=True)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
