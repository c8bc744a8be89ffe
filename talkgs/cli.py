"""The `talkgs` command: one subcommand per module of :mod:`talkgs.commands`.

Each subcommand is generated from its module's config dataclass (tyro). The parsed config is
checked by the module's ``check`` (no torch), then its ``run`` does the work, so a refusal
costs no model loading. User-facing problems (talkgs.errors) are printed as one line,
``talkgs: <message>``, with exit status 2. Ctrl-C and SIGTERM (what a job scheduler sends)
unwind the same way, so temporary files are removed and training saves a resumable checkpoint;
the exit status is then 128 + the signal number.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Annotated, Sequence, Union

import tyro

from talkgs.console import end_open_bars
from talkgs.commands import commands
from talkgs.errors import TalkgsError, unwind_on_sigterm
from talkgs.train.config import command_line_default


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            return run_command(parse(sys.argv[1:] if argv is None else argv))
        finally:
            sys.stdout.flush()  # a closed pipe shows here (help text is printed, then SystemExit)
    except BrokenPipeError:
        # The reader went away (`talkgs train --help | head`): no traceback, and none at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def parse(args: Sequence[str]):
    """The config of the command line ``args`` (``["train", DATA, "-o", RUN, ...]``)."""
    args = list(args)
    if args[:1] == ["batch"]:  # `--ray` takes an optional address
        args = commands()["batch"].command_line(args)
    # `talkgs train` sets its flags over the values of its --preset, so explicit flags win.
    defaults = {"train": command_line_default(args[1:])} if args[:1] == ["train"] else {}
    subcommands = [
        Annotated[m.Config, tyro.conf.subcommand(name, **({"default": defaults[name]} if name in defaults else {}))]
        for name, m in commands().items()
    ]
    return tyro.cli(Union[tuple(subcommands)], args=args, prog="talkgs", description="Audio-driven 3D Gaussian talking heads.")


def run_command(cfg) -> int:
    """Check and run a parsed command's config; user-facing problems become one line and exit
    status 2, Ctrl-C and SIGTERM 128 + the signal number."""
    cmd = next(m for m in commands().values() if isinstance(cfg, m.Config))
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, unwind_on_sigterm) if in_main else None  # training installs its own
    try:
        if getattr(cfg, "verbose", False):
            os.environ["TALKGS_VERBOSE"] = "1"  # read by talkgs.prepare.track (MediaPipe logs)
        cmd.run(cmd.check(cfg))
    except TalkgsError as e:
        end_open_bars()
        print(f"talkgs: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        end_open_bars()
        signum = getattr(e, "signum", signal.SIGINT)
        default = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
        print(f"talkgs: {str(e) or default}", file=sys.stderr)
        return 128 + int(signum)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
