"""A jobs file read into jobs: parsed, connected, checked and marked done where they are (torch-free).

A jobs file holds one job a line, ``prepare ...``, ``train ...`` or ``render ...`` with exactly the
arguments of that command (``#`` starts a comment, blank lines are skipped). Each line is parsed
by :func:`talkgs.cli.parse`, the command line's own parser. The jobs are connected by their
paths: a prepare's dataset used as a train's DATASET and a train's run used as a render's RUN
are dependencies (the consumer waits); any other output that another job reads, a cycle, two
jobs writing one output and an input that neither exists nor is made by a job are refused, in
one line naming the line, before anything starts.

What is already done follows the commands' own rules: a prepare whose output is a dataset of
the same video (prepare says "already prepared"), a train whose run's latest checkpoint has
finished every stage (train --resume says "already complete"), a render whose output is a video
talkgs wrote from the same arguments and the same input files (recorded in ``JOBS.done.json``
when it was written: a render has no mark of its inputs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shlex
from pathlib import Path

from talkgs import provenance as owner
from talkgs import validate
from talkgs.errors import TalkgsError, UsageError

COMMANDS = ("prepare", "train", "render")
LEDGER_SUFFIX = ".done.json"


@dataclasses.dataclass(frozen=True)
class Input:
    path: Path  # absolute
    what: str  # how errors name it, e.g. "--audio file"
    role: str | None = None  # "dataset": train's DATASET, "run": render's RUN (what may wait for a job)


@dataclasses.dataclass
class Job:
    line: int  # 1-based line of the jobs file
    command: str
    argv: tuple[str, ...]  # the command line as written (command name first)
    cfg: object  # its parsed config
    output: Path  # absolute
    inputs: list[Input]
    deps: set[int] = dataclasses.field(default_factory=set)  # lines of the jobs it waits for
    done: str | None = None  # why it has nothing to do (already prepared, trained, rendered)


def parse_args(argv: list[str]):
    """The config of a command line, as ``talkgs`` parses it; its refusal as one UsageError line."""
    from talkgs import cli

    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(buf):
            return cli.parse(argv)
    except SystemExit:
        raise UsageError(_parser_message(buf.getvalue()) or f"`talkgs {shlex.join(argv)}` does not parse") from None


def _parser_message(text: str) -> str:
    """tyro's boxed error in one line: its title and the first lines of its body."""
    lines = [ln.strip(" |│─-╭╮╰╯┃━") for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("For full helptext")]
    if not lines:
        return ""
    title, body = lines[0], lines[1:3]
    if body and not body[0].endswith(":"):
        body = body[:1]
    if not body:
        return title
    if body[0].lower().startswith(title.lower()):  # "Unrecognized options: --x" under "Unrecognized options"
        return " ".join(body)
    return f"{title.lower()}: {' '.join(body)}"


def read(jobs_file: Path) -> list[Job]:
    """The jobs of ``jobs_file`` parsed (not yet connected); one-line UsageError naming the line."""
    from talkgs.commands import commands

    p = validate.input_file(jobs_file, "jobs file")
    try:
        text = p.read_text()
    except UnicodeDecodeError:
        raise UsageError(f"jobs file {p} is not text") from None
    jobs = []
    known = commands()
    for n, raw in enumerate(text.splitlines(), 1):
        try:
            argv = shlex.split(raw, comments=True)
        except ValueError as e:
            raise UsageError(f"{p} line {n}: {e}") from None
        if not argv:
            continue
        cmd = argv[0]
        if cmd not in COMMANDS:
            what = "is a command `talkgs batch` does not run" if cmd in known else "is not a talkgs command"
            raise UsageError(f"{p} line {n}: '{cmd}' {what} (a job is prepare, train or render)")
        try:
            cfg = parse_args(argv)
        except UsageError as e:
            raise UsageError(f"{p} line {n}: {e}") from None
        jobs.append(Job(n, cmd, tuple(argv), cfg, _abs(cfg.output), _inputs(cmd, cfg)))
    if not jobs:
        raise UsageError(f"jobs file {p} holds no job")
    return jobs


def _abs(path) -> Path:
    return Path(os.path.abspath(path))


def _inputs(cmd: str, cfg) -> list[Input]:
    if cmd == "prepare":
        return [Input(_abs(cfg.video), "input video")]
    if cmd == "train":
        return [Input(_abs(cfg.dataset), "dataset", "dataset")] + [
            Input(_abs(d), "--predictor.other-speakers dataset") for d in cfg.predictor.other_speakers]
    ins = [Input(_abs(cfg.run), "run", "run"), Input(_abs(cfg.audio), "--audio file")]
    for name, what in (("features", "--features file"), ("drive_video", "--drive-video dataset"), ("dataset", "--dataset")):
        if getattr(cfg, name) is not None:
            ins.append(Input(_abs(getattr(cfg, name)), what))
    return ins


def _key(p: Path) -> str:
    return os.path.realpath(p)


def _lands_on(i: Input, out: Path) -> bool:
    """Whether an output written at ``out`` is (or holds) the input ``i``."""
    a, b = _key(i.path), _key(out)
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep)


def connect(jobs: list[Job], jobs_file: Path) -> None:
    """Set each job's dependencies; one-line UsageError (naming the line) for two jobs writing one
    output, a cycle, an output another job reads other than as a dependency, and an input that
    neither exists nor is made by a job."""
    where = f"{jobs_file} line"
    writers: dict[str, Job] = {}
    for j in jobs:
        k = _key(j.output)
        if k in writers:
            raise UsageError(f"{where} {j.line}: its output {j.output} is also written by line {writers[k].line}")
        writers[k] = j
    reads: dict[int, list[tuple[Input, Job]]] = {j.line: [] for j in jobs}
    for j in jobs:
        for i in j.inputs:
            for p in jobs:
                if p is not j and _lands_on(i, p.output):
                    reads[j.line].append((i, p))
    cycle = _cycle(jobs, {n: [p.line for _, p in r] for n, r in reads.items()})
    if cycle:
        raise UsageError(f"{where} {cycle[0]}: the jobs wait for each other in a cycle: "
                         + " -> ".join(f"line {n}" for n in cycle + [cycle[0]]))
    for j in jobs:
        for i, p in reads[j.line]:
            ok = (i.role == "dataset" and p.command == "prepare" and _key(i.path) == _key(p.output)) or (
                i.role == "run" and p.command == "train")
            if not ok:
                raise UsageError(
                    f"{where} {j.line}: its {i.what} {i.path} is written by line {p.line} (`talkgs {p.command}`); "
                    "a job waits only for a prepared dataset (train's DATASET) or a trained run (render's RUN)")
            j.deps.add(p.line)
        made = {_key(i.path) for i, _ in reads[j.line]}
        for i in j.inputs:
            if _key(i.path) not in made and not i.path.exists():
                raise UsageError(f"{where} {j.line}: {i.what} {i.path} does not exist and no job of the file makes it")


def _producers_first(jobs: list[Job]) -> list[Job]:
    """The jobs ordered so each comes after the jobs it waits for (file order otherwise)."""
    order: list[Job] = []
    placed: set[int] = set()
    while len(order) < len(jobs):
        for j in jobs:
            if j.line not in placed and j.deps <= placed:
                order.append(j)
                placed.add(j.line)
                break
    return order


def _cycle(jobs: list[Job], edges: dict[int, list[int]]) -> list[int] | None:
    """A cycle of lines (each waits for the next) in ``edges`` {line: lines it reads from}, or None."""
    state: dict[int, int] = {}  # 1: on the path, 2: finished
    path: list[int] = []

    def visit(n: int) -> list[int] | None:
        state[n] = 1
        path.append(n)
        for m in sorted(set(edges[n])):
            if state.get(m) == 1:
                return path[path.index(m):]
            if m not in state and (c := visit(m)):
                return c
        path.pop()
        state[n] = 2
        return None

    for j in jobs:
        if j.line not in state and (c := visit(j.line)):
            return c
    return None


# ----------------------------------------------------------------------------------- done or not


def prepare_done(job: Job) -> str | None:
    """Why a prepare has nothing to do (its output is a dataset of the same video), else None.
    A dataset of another video without --force is refused, as prepare refuses it."""
    from talkgs.fsutil import sha256_file

    cfg = job.cfg
    meta = owner.dataset_meta(job.output) if job.output.is_dir() else None
    if meta is None or cfg.force:
        return None
    if (meta.get("source") or {}).get("sha256") == sha256_file(cfg.video):
        return "already prepared from this video"
    raise UsageError(f"output {job.output} holds a dataset of another video; pass --force to replace it or choose another folder")


def train_done(job: Job) -> str | None:
    """Why a train has nothing to do (its run's latest checkpoint finished every stage), else None."""
    from talkgs.configio import config_from_dict
    from talkgs.data import runs
    from talkgs.train.config import TrainConfig

    latest = job.output / "checkpoints" / "latest.pt"
    if not latest.is_file():
        return None
    state = runs.check_checkpoint(latest)
    try:
        stages = len(config_from_dict(TrainConfig, state["config"]).resolved_stages())
    except (KeyError, TypeError, ValueError, TalkgsError):
        return None  # a run of another talkgs: `train --resume` decides
    completed = list(state.get("completed") or [])
    return f"already trained (stages {', '.join(completed)})" if len(completed) >= stages else None


class Ledger:
    """``JOBS.done.json``: for each render output batch wrote, the arguments and the input files
    (size, mtime) it was made from; a render is done when its output is still that video."""

    def __init__(self, jobs_file: Path):
        self.path = Path(str(jobs_file) + LEDGER_SUFFIX)
        self.entries: dict = owner.read_json(self.path) or {}

    @staticmethod
    def _stat(p: Path) -> list[int] | None:
        try:
            s = p.stat()
        except OSError:
            return None
        return [s.st_size, s.st_mtime_ns]

    def fingerprint(self, job: Job) -> dict:
        cfg = job.cfg
        files = [owner.run_checkpoint(_abs(cfg.run)), _abs(cfg.audio)]
        files += [_abs(cfg.features)] if cfg.features is not None else []
        files += [_abs(d) / "meta.json" for d in (cfg.drive_video, cfg.dataset) if d is not None]
        return {"argv": [a for a in job.argv if a != "--force"],
                "inputs": {str(f): self._stat(f) for f in files},
                "output": self._stat(job.output)}

    def render_done(self, job: Job) -> str | None:
        if job.cfg.force or not owner.is_talkgs_video(job.output):
            return None
        return "already rendered from these inputs" if self.entries.get(str(job.output)) == self.fingerprint(job) else None

    def record(self, job: Job) -> None:
        from talkgs.fsutil import write_json

        self.entries[str(job.output)] = self.fingerprint(job)
        try:
            write_json(self.path, self.entries)
        except OSError:
            pass  # a read-only folder: the render is redone next time


def runnable_argv(job: Job) -> list[str]:
    """The command line a job runs with: --resume for a run with a checkpoint, --force for a
    render replacing its own earlier video, and no progress bars (workers share a terminal)."""
    argv = list(job.argv)
    if job.command == "train" and not job.cfg.resume and (job.output / "checkpoints" / "latest.pt").is_file():
        argv.append("--resume")
    if job.command == "render" and not job.cfg.force and job.output.exists() and owner.is_talkgs_video(job.output):
        argv.append("--force")
    return argv + ["--no-progress"]


def check(job: Job, ready: bool) -> None:
    """The job's own check() on the command line it will run, when its inputs exist (``ready``);
    else the checks that do not need them: its output and its other inputs."""
    from talkgs.commands import commands

    argv = runnable_argv(job)
    cfg = parse_args(argv)
    if ready:
        commands()[job.command].check(cfg)
        return
    if job.command == "train":
        from talkgs.commands import train

        train.check_output(cfg, Path(cfg.dataset))
    elif job.command == "render":
        from talkgs.errors import AudioFeatureError, MediaError

        validate.input_file(cfg.audio, "audio file", MediaError)
        if cfg.features is not None:
            validate.input_file(cfg.features, "--features file", AudioFeatureError)
        validate.output_file(cfg.output, inputs=[(cfg.audio, "--audio file"), (cfg.features, "--features file")],
                             force=cfg.force, made_by_talkgs=owner.is_talkgs_video, command="render", suffix=".mp4")


def plan(jobs_file: Path) -> tuple[list[Job], Ledger]:
    """The jobs of ``jobs_file``, connected, checked and marked done where they are; one-line
    UsageError (naming the line) for anything the batch or a command refuses. Writes nothing."""
    jobs_file = Path(jobs_file)
    jobs = read(jobs_file)
    connect(jobs, jobs_file)
    ledger = Ledger(jobs_file)
    by_line = {j.line: j for j in jobs}
    for j in _producers_first(jobs):
        try:
            if j.command == "prepare":
                j.done = prepare_done(j)
            elif j.command == "train" and all(by_line[d].done for d in j.deps):
                j.done = train_done(j)
            ready = all(by_line[d].done for d in j.deps)
            if j.command == "render" and ready:
                j.done = ledger.render_done(j)
            if j.done is None:
                check(j, ready)
        except TalkgsError as e:
            raise UsageError(f"{jobs_file} line {j.line}: {e}") from None
    return jobs, ledger
