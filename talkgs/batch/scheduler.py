"""The one scheduler of ``talkgs batch``, whichever executor runs the jobs.

A job starts when every job it waits for has succeeded (or had nothing to do) and a worker is
free; the jobs that finished earlier are skipped. A failed job does not stop the others: the
jobs that wait for it are skipped and listed as such. One line per job as it starts and as it
ends (clock time, duration, worker), then a table of every job. Ctrl-C (or SIGTERM) stops the
running jobs as it stops their commands (trainings save a resumable checkpoint) and starts no
other; running the same batch again continues.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Callable

from talkgs.batch.plan import Job, Ledger, runnable_argv, train_done
from talkgs.batch.worker import Task
from talkgs.errors import Interrupted, TalkgsError

SUCCEEDED = ("done", "up to date")


@dataclasses.dataclass
class Record:
    job: Job
    status: str  # waiting, running, done, up to date, failed, skipped, interrupted, not started
    message: str = ""
    seconds: float | None = None
    worker: str = ""


def _shown(path) -> str:
    """A path as short as it reads: relative to the current folder when inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


def schedule(jobs: list[Job], ledger: Ledger, executor, echo: Callable[[str], None] = print) -> int:
    """Run ``jobs`` (from :func:`talkgs.batch.plan.plan`) on ``executor``'s workers; print one line
    per job event and the summary. Returns the exit status: 0 when every job succeeded (or had
    nothing to do), 1 otherwise; Ctrl-C / SIGTERM raise :class:`talkgs.errors.Interrupted`
    after the running jobs stopped and the summary is printed."""
    recs = {j.line: Record(j, "up to date" if j.done else "waiting", j.done or "") for j in jobs}
    total = len(jobs)
    ended = [0]  # jobs that reached their final status

    def say(r: Record, event: str) -> None:
        if event != "start":
            ended[0] += 1
        clock = time.strftime("%H:%M:%S")
        j = r.job
        head = f"[{ended[0]}/{total}] {clock} {event:<11} line {j.line} {j.command} {_shown(j.output)}"
        tail = f" ({r.seconds:.1f} s on {r.worker})" if r.seconds is not None else (f" on {r.worker}" if r.worker else "")
        echo(head + tail + (f": {r.message}" if r.message else ""))

    for r in recs.values():
        if r.status == "up to date":
            say(r, "up to date")
    idle = list(range(len(executor.names)))
    running: dict[int, int] = {}  # worker index -> line
    signum = None
    try:
        while True:
            progressed = _skip_blocked(recs, say) > 0
            for r in [r for r in recs.values() if r.status == "waiting"]:
                if not all(recs[d].status in SUCCEEDED for d in r.job.deps):
                    continue
                try:
                    reason = _done_now(r.job, ledger)
                except TalkgsError as e:
                    r.status, r.message, progressed = "failed", str(e), True
                    say(r, "failed")
                    continue
                if reason:
                    r.status, r.message, progressed = "up to date", reason, True
                    say(r, "up to date")
                    continue
                if not idle:
                    break
                i = idle.pop(0)
                argv = runnable_argv(r.job)
                r.status, r.worker = "running", executor.names[i]
                if "--resume" in argv and not r.job.cfg.resume:
                    r.message = "resuming from its checkpoint"
                executor.submit(i, Task(r.job.line, r.job.command, tuple(argv), os.getcwd()))
                running[i] = r.job.line
                say(r, "start")
            if not running:
                if progressed:  # a job ended without a worker: others may be ready now
                    continue
                break
            i, outcome = executor.next()
            _finish(recs[running.pop(i)], outcome, ledger, say)
            idle.append(i)
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", 2)
        echo(f"talkgs batch: stopping {len(running)} running job(s); trainings keep a resumable checkpoint")
        executor.interrupt()
        while running:
            try:
                i, outcome = executor.next()
            except KeyboardInterrupt:
                executor.interrupt()
                continue
            _finish(recs[running.pop(i)], outcome, ledger, say)
    finally:
        executor.close()
    for r in recs.values():
        if r.status == "waiting":
            r.status = "not started"
    summary(list(recs.values()), echo)
    if signum is not None:
        raise Interrupted("batch interrupted; run the same command again to continue", signum)
    return 0 if all(r.status in SUCCEEDED for r in recs.values()) else 1


def _done_now(job: Job, ledger: Ledger) -> str | None:
    """Whether a job whose inputs were just made has nothing to do (checked when it is ready)."""
    if job.command == "train" and job.deps:
        return train_done(job)
    if job.command == "render":
        return ledger.render_done(job)
    return None


def _finish(r: Record, outcome, ledger: Ledger, say) -> None:
    r.status, r.message, r.seconds, r.worker = outcome.status, outcome.message, outcome.seconds, outcome.worker
    if r.status == "done" and r.job.command == "render":
        ledger.record(r.job)
    say(r, r.status)


def _skip_blocked(recs: dict[int, Record], say) -> int:
    """Skip the waiting jobs that wait for a job that did not succeed; the number skipped."""
    n = 0
    changed = True
    while changed:
        changed = False
        for r in recs.values():
            bad = [d for d in sorted(r.job.deps) if recs[d].status in ("failed", "skipped", "interrupted", "not started")]
            if r.status == "waiting" and bad:
                r.status, r.message = "skipped", f"line {bad[0]} {recs[bad[0]].status}"
                say(r, "skipped")
                n += 1
                changed = True
    return n


def summary(recs: list[Record], echo: Callable[[str], None] = print) -> None:
    """The table of every job: line, command, output, status, time, worker, note."""
    rows = [("line", "job", "output", "status", "time", "worker", "note")]
    for r in sorted(recs, key=lambda r: r.job.line):
        rows.append((str(r.job.line), r.job.command, _shown(r.job.output), r.status,
                     f"{r.seconds:.1f} s" if r.seconds is not None else "-", r.worker or "-", r.message))
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]) - 1)]
    for row in rows:
        echo("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    counts: dict[str, int] = {}
    for r in recs:
        counts[r.status] = counts.get(r.status, 0) + 1
    echo(", ".join(f"{n} {s}" for s, n in counts.items()))
    sys.stdout.flush()
