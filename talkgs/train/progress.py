"""What training shows and records while it runs: a live progress bar on a terminal, plain
progress lines when stdout is a pipe or a file, TensorBoard scalars, and the history records.

The device is synchronised only when a step is logged (every ``log_every`` steps).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from talkgs.train.config import StageConfig, TrainConfig


def clock(seconds: float) -> str:
    """``seconds`` as ``m:ss`` or ``h:mm:ss``."""
    s = max(int(round(seconds)), 0)
    h, m = s // 3600, (s // 60) % 60
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


class TrainLogger:
    """Progress display, TensorBoard scalars and history records of one process. ``show``
    False (a process other than the run's first, or ``--no-progress``) prints nothing;
    ``write`` False writes no TensorBoard logs. With ``show``, a terminal gets a live bar and
    anything else (a pipe, a log file) a flushed line every logged step."""

    def __init__(self, out: Path, cfg: TrainConfig, show: bool = True, write: bool = True):
        self.show = show and cfg.progress
        self.live = self.show and sys.stdout.isatty()
        self.tb = None
        if write and cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "logs"))
            except Exception:  # tensorboard is optional; training goes on without it
                self.tb = None
        self.progress = None
        self.task = None
        self.last = (0, time.perf_counter())

    def say(self, line: str) -> None:
        """Print one line of progress (when this process shows progress)."""
        if self.show:
            print(line, flush=True)

    def start_stage(self, stage: StageConfig, start: int) -> None:
        self.last = (start, time.perf_counter())
        if self.live:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]{task.fields[stage]:<5}"),
                BarColumn(),
                TextColumn("step {task.completed}/{task.total}"),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
            )
            self.progress.start()
            self.task = self.progress.add_task("", total=stage.iterations, completed=start, stage=stage.name, info="")
        else:
            resumed = f", from step {start}" if start else ""
            self.say(f"[train] {stage.name} stage: {stage.iterations} steps of {stage.batch_size} frames{resumed}")

    def log(self, stage: StageConfig, step: int, loss, terms, images, num_gaussians: dict[str, int], elapsed: float) -> dict:
        """The history record of ``step`` (loss terms, PSNR of the logged images, steps/s since
        the last record, Gaussian counts); shown and written to TensorBoard."""
        with torch.no_grad():
            vals = {k: float(v) for k, v in terms.items()}
            vals["loss"] = float(loss)
            pred, target = images
            vals["psnr"] = float(-10.0 * torch.log10(((pred - target) ** 2).mean().clamp_min(1e-10)))
        now = time.perf_counter()
        its = (step - self.last[0]) / max(now - self.last[1], 1e-9)
        self.last = (step, now)
        n = num_gaussians
        rec = {"stage": stage.name, "step": step, "it_s": round(its, 2), "elapsed_s": round(elapsed, 2), **vals,
               **{f"n_{k}": v for k, v in n.items()}}
        if self.tb is not None:
            for k, v in vals.items():
                self.tb.add_scalar(f"{stage.name}/{k}", v, step)
            self.tb.add_scalar(f"{stage.name}/it_per_s", its, step)
            for k, v in n.items():
                self.tb.add_scalar(f"{stage.name}/n_{k}", v, step)
        info = (f"loss {vals['loss']:.4f}  psnr {vals['psnr']:.2f} dB  {its:.1f} steps/s  "
                f"gaussians face {n['face']} mouth {n['mouth']}")
        if self.progress is not None:
            self.progress.update(self.task, completed=step, info=info)
        else:
            eta = (stage.iterations - step) / its if its > 0 else 0.0
            self.say(f"[train] {stage.name} step {step}/{stage.iterations}  {info}  eta {clock(eta)}")
        return rec

    def end_stage(self, stage: StageConfig, seconds: float) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        self.say(f"[train] stage {stage.name}: {seconds:.1f} s")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        if self.tb is not None:
            self.tb.close()
