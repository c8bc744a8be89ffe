"""The commands of ``talkgs``, one module each: everything a command is, in one place.

A command module holds

- ``Config``: its frozen config dataclass. ``talkgs.cli`` makes the subcommand from it with
  tyro: every field is a flag, the docstring under a field is its help.
- ``check(cfg) -> cfg``: every argument and path checked before anything heavy is imported
  (no torch), so a refusal is one line, ``talkgs: <problem>`` (exit 2), and has written
  nothing. It may return the config normalised (e.g. a path made absolute).
- ``run(cfg)``: the work, importing the command's engine lazily. Engines do not check again:
  from Python, run a command as ``cmd.run(cmd.check(cfg))``.

Adding a command: a module here and its name in :data:`MODULES`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

MODULES = ("prepare", "inspect", "features", "train", "eval", "render", "serve", "import_tg", "export_tg", "batch")


def commands() -> dict[str, ModuleType]:
    """``{command name: its module}`` in the order ``talkgs --help`` lists them."""
    return {m.replace("_", "-"): importlib.import_module(f"talkgs.commands.{m}") for m in MODULES}
