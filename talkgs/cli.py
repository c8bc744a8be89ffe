"""The `talkgs` command: one subcommand per stage, each generated from its config dataclass.

Every subcommand is a thin call into its module. User-facing problems (talkgs.errors) are
printed as one line, ``talkgs: <message>``, with exit status 2.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence

import tyro

from talkgs.config import EvalConfig, InspectConfig, PrepareConfig, TrainConfig
from talkgs.errors import TalkgsError


def _prepare(cfg: PrepareConfig) -> None:
    from talkgs.prepare.pipeline import prepare

    prepare(cfg)


def _inspect(cfg: InspectConfig) -> None:
    from talkgs.prepare.inspect import write_inspect

    out = cfg.output if cfg.output is not None else cfg.dataset / "inspect"
    paths = write_inspect(cfg.dataset, out, max_frames=cfg.max_frames, progress=cfg.progress)
    for name, path in paths.items():
        print(f"{name}: {path}")


def _train(cfg: TrainConfig) -> None:
    from talkgs.train.trainer import train

    path = train(cfg)
    print(f"checkpoint: {path}")


def _eval(cfg: EvalConfig) -> None:
    from talkgs.train.evaluate import evaluate

    evaluate(cfg)


COMMANDS: dict[str, tuple[type, Callable]] = {
    "prepare": (PrepareConfig, _prepare),
    "inspect": (InspectConfig, _inspect),
    "train": (TrainConfig, _train),
    "eval": (EvalConfig, _eval),
}


def main(argv: Sequence[str] | None = None) -> int:
    cfg = tyro.extras.subcommand_cli_from_dict(
        {name: cls for name, (cls, _) in COMMANDS.items()},
        args=argv,
        prog="talkgs",
        description="Audio-driven 3D Gaussian talking heads.",
    )
    run = next(fn for cls, fn in COMMANDS.values() if isinstance(cfg, cls))
    try:
        run(cfg)
    except TalkgsError as e:
        print(f"talkgs: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("talkgs: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
