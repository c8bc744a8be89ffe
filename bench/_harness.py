"""What every benchmark shares: its arguments, the device it ran on, and one JSON shape.

A result file is ``bench/results/<bench>/<name>.json``::

    {"schema": "talkgs-bench/1", "bench": "render", "name": "h200",
     "commit": "1a2b3c4d5e6f" (+ "-dirty" when the tree had changes), "device": "NVIDIA H200",
     "command": "python bench/render.py RUN --batches 1,32", "date": "2026-12-06T21:30:00Z",
     "versions": {"python": "3.12.3", "torch": "2.11.0+cu130", "gsplat": "1.5.3"},
     "params": {...the script's arguments...},
     "setup": {...what was measured, beyond the arguments: a run's Gaussian counts, image size...},
     "note": "...",
     "rows": [{...one measured case...}, ...]}

``setup`` and ``note`` are optional. Rows of different kinds in one file (e.g. pipeline rates and
an end-to-end time) carry a ``measure`` key naming theirs. Results measured before this harness
existed were converted into it: their ``commit`` is the commit that added the old file, said by
``commit_note``.

A script imports this module (bench/ is on ``sys.path`` when it runs as ``python bench/x.py``),
adds its own arguments to :func:`parser`, measures, and calls :func:`write`. ``docs/results.md``
and ``docs/speed.md`` are made from these files by ``bench/results_md.py``.

The commit: ``git rev-parse`` in the checkout; where there is no ``.git`` (a copy of the tree on
a GPU machine) set ``TALKGS_COMMIT`` to it, e.g. ``TALKGS_COMMIT=$(git rev-parse --short=12 HEAD)``
expanded on the machine that sends the command.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

SCHEMA = "talkgs-bench/1"
HEADER = ("bench", "name", "commit", "device", "command", "date")  # every result has these, non-empty
REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"

if str(REPO) not in sys.path:  # the scripts import talkgs from the checkout, installed or not
    sys.path.insert(0, str(REPO))


def commit() -> str:
    """The checkout's commit (12 hex digits), with ``-dirty`` when tracked files differ from it;
    ``$TALKGS_COMMIT`` where set (a copy of the tree without .git); else ``unknown``."""
    if os.environ.get("TALKGS_COMMIT"):
        return os.environ["TALKGS_COMMIT"]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def device_name(device: str | None = None) -> str:
    """``NVIDIA H200`` for a CUDA device, else ``cpu: <model> (<n> cores)``. Any other string is a
    device's name given as it is (results measured on another machine and tabulated here)."""
    if device is not None and not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(device)):
        return str(device)
    if device in (None, "auto", "cuda") or str(device).startswith("cuda"):
        try:
            import torch

            if torch.cuda.is_available():
                return torch.cuda.get_device_name()
        except ImportError:
            pass
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {model} ({os.cpu_count()} cores)"


def device_tag(device: str | None = None) -> str:
    """A short file-name tag for the device: ``h100``, ``h200``, ``cpu``..."""
    name = device_name(device).lower()
    for tag in ("h200", "h100", "a100", "l40"):
        if tag in name:
            return tag
    return "cpu" if name.startswith("cpu") else name.replace(" ", "_")[:16]


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("torch", "gsplat", "numpy"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # not installed here: not part of this run
            pass
    return out


def parser(doc: str | None, bench: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark has: ``--out`` (the result file,
    default ``bench/results/<bench>/<device tag>.json``) and ``--name`` (the file's name)."""
    first = (doc or bench).strip().splitlines()[0]
    ap = argparse.ArgumentParser(description=first, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join((doc or "").strip().splitlines()[1:]))
    ap.add_argument("--out", type=Path, default=None,
                    help=f"result file (default: bench/results/{bench}/<--name>.json)")
    ap.add_argument("--name", default=None, help="result name (default: the device tag, e.g. h200 or cpu)")
    return ap


def result_path(bench: str, args: argparse.Namespace, device: str | None = None) -> Path:
    if getattr(args, "out", None) is not None:
        return Path(args.out)
    return RESULTS / bench / f"{getattr(args, 'name', None) or device_tag(device)}.json"


def header(bench: str, name: str, device: str | None = None, params: dict | None = None) -> dict[str, Any]:
    """The header of a result measured now, by this process."""
    return {
        "schema": SCHEMA,
        "bench": bench,
        "name": name,
        "commit": commit(),
        "device": device_name(device),
        "command": shlex.join(["python", *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "versions": versions(),
        "params": _plain(params or {}),
    }


def write(bench: str, args: argparse.Namespace, rows: Iterable[dict], device: str | None = None,
          params: dict | None = None, setup: dict | None = None, note: str | None = None) -> Path:
    """Write one result file (header + rows) and return its path. ``params`` defaults to the
    script's parsed arguments; ``setup``: what was measured beyond them (e.g. a run's Gaussian
    counts); ``note``: one sentence a reader needs (e.g. what else ran on the machine)."""
    path = result_path(bench, args, device)
    if params is None:
        params = {k: v for k, v in vars(args).items() if k not in ("out", "name")}
    doc = header(bench, path.stem, device, params)
    if setup:
        doc["setup"] = _plain(setup)
    if note:
        doc["note"] = note
    doc["rows"] = [_plain(r) for r in rows]
    return dump(doc, path)


def dump(doc: dict[str, Any], path: Path) -> Path:
    """Write a complete result ``doc`` to ``path`` (strict JSON: NaN and infinities become null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_plain(doc), indent=2, allow_nan=False) + "\n")
    print(f"JSON: {path}")
    return path


def timer(device: Any) -> Callable[[Callable[[], Any]], float]:
    """A function that runs ``fn()`` and returns its duration in ms: CUDA events on a CUDA
    device (the device's time, queued work included), ``perf_counter`` elsewhere."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":

        def run(fn: Callable[[], Any]) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            return start.elapsed_time(end)

        return run

    def run_cpu(fn: Callable[[], Any]) -> float:
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    return run_cpu


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` and all its descendants, in bytes (Linux /proc; 0 once
    it is gone). A command that starts worker processes holds their memory too."""
    total, todo, page = 0, [pid], os.sysconf("SC_PAGE_SIZE")
    while todo:
        p = todo.pop()
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * page
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue  # it ended between two reads
    return total


def wait_sampling_rss(proc: subprocess.Popen, every_s: float = 0.05) -> float:
    """Wait for ``proc``; the peak of :func:`tree_rss_bytes` seen every ``every_s``, in GiB."""
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss_bytes(proc.pid))
        time.sleep(every_s)
    return peak / 2**30


def read(path: str | Path) -> dict[str, Any]:
    """One result file; ValueError when it is not of this schema."""
    doc = json.loads(Path(path).read_text())
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("rows"), list):
        raise ValueError(f"{path} is not a {SCHEMA} result")
    missing = [k for k in HEADER if not isinstance(doc.get(k), str) or not doc[k]]
    if missing or not all(isinstance(r, dict) for r in doc["rows"]):
        raise ValueError(f"{path}: {', '.join(missing) or 'rows'} missing or not of the {SCHEMA} shape")
    return doc


def read_all(root: Path = RESULTS) -> list[dict[str, Any]]:
    """Every result under ``root``, each with its ``path`` added, sorted by bench and name."""
    docs = []
    for p in sorted(root.glob("*/*.json")):
        doc = read(p)
        doc["path"] = str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)
        docs.append(doc)
    return docs


def _plain(value: Any) -> Any:
    """JSON-ready copy: paths as strings, tuples as lists, numpy scalars as Python numbers, NaN
    and infinities as None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):  # strict JSON: not a number -> null
        return None
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return _plain(value.item())
    return value
