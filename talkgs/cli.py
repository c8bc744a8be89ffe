"""The `talkgs` command: one subcommand per stage, each generated from its config dataclass.

Every subcommand is a thin call into its module. Arguments and paths are checked first
(``talkgs.validate``, no torch), so a refusal costs no model loading. User-facing problems
(talkgs.errors) are printed as one line, ``talkgs: <message>``, with exit status 2. Ctrl-C and
SIGTERM (what a job scheduler sends) unwind the same way, so temporary files are removed and
training saves a resumable checkpoint; the exit status is then 128 + the signal number.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Annotated, Callable, Sequence, Union

import tyro

from talkgs.config import EvalConfig, InspectConfig, PrepareConfig, RenderConfig, TrainConfig
from talkgs.config import FeaturesConfig, ServeConfig
from talkgs.config import ExportTGConfig, ImportTGConfig
from talkgs.errors import Interrupted, TalkgsError
from talkgs.train.config import command_line_default
from talkgs.validate import check


def _prepare(cfg: PrepareConfig) -> None:
    from talkgs.prepare.pipeline import prepare

    prepare(cfg)


def _inspect(cfg: InspectConfig) -> None:
    from talkgs.prepare.inspect import write_inspect

    out = cfg.output if cfg.output is not None else cfg.dataset / "inspect"
    paths = write_inspect(cfg.dataset, out, max_frames=cfg.max_frames, progress=cfg.progress)
    for name, path in paths.items():
        print(f"{name}: {path}")


def _features(cfg: FeaturesConfig) -> None:
    from talkgs.audio.dataset_features import add_features

    options = {
        "hubert": {"model": cfg.hubert_model, "device": cfg.device},
        "whisper": {"model": cfg.whisper_model, "layer": cfg.whisper_layer, "device": cfg.device},
        "whisper_base": {"model": cfg.whisper_base_model, "layer": cfg.whisper_layer, "device": cfg.device},
    }
    done = add_features(cfg.dataset, cfg.kind, cfg.import_path, force=cfg.force, progress=cfg.progress, options=options)
    for kind, info in done.items():
        print(f"{kind}: {cfg.dataset / info['file']} {info['shape']} ({info['seconds']:.1f} s)")


def _train(cfg: TrainConfig) -> None:
    from talkgs.train.trainer import train

    path = train(cfg)
    print(f"checkpoint: {path}")


def _eval(cfg: EvalConfig) -> None:
    from talkgs.eval.evaluate import evaluate

    evaluate(cfg)


def _render(cfg: RenderConfig) -> None:
    from talkgs.render.renderer import render_audio

    render_audio(cfg)


def _serve(cfg: ServeConfig) -> None:
    from talkgs.serve.app import serve

    serve(cfg)


def _import_tg(cfg: ImportTGConfig) -> None:
    from talkgs.interop.import_tg import import_tg

    res = import_tg(cfg)
    for item in res.missing:
        print(f"missing (optional): {item}")
    for note in res.notes:
        print(f"note: {note}")
    print(f"dataset: {res.path} ({res.n_frames} frames, world alignment: {res.alignment})")


def _export_tg(cfg: ExportTGConfig) -> None:
    from talkgs.interop.export_tg import export_tg

    res = export_tg(cfg)
    for note in res.notes:
        print(f"note: {note}")
    print(f"exported: {res.path} ({res.n_frames} frames)")


COMMANDS: dict[str, tuple[type, Callable]] = {
    "prepare": (PrepareConfig, _prepare),
    "inspect": (InspectConfig, _inspect),
    "features": (FeaturesConfig, _features),
    "train": (TrainConfig, _train),
    "eval": (EvalConfig, _eval),
    "render": (RenderConfig, _render),
    "serve": (ServeConfig, _serve),
    "import-tg": (ImportTGConfig, _import_tg),
    "export-tg": (ExportTGConfig, _export_tg),
}


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(parse(sys.argv[1:] if argv is None else argv))


def parse(args: Sequence[str]):
    """The config of the command line ``args`` (``["train", DATA, "-o", RUN, ...]``)."""
    args = list(args)
    # `talkgs train` sets its flags over the values of its --preset, so explicit flags win.
    defaults = {"train": command_line_default(args[1:])} if args[:1] == ["train"] else {}
    commands = [
        Annotated[cls, tyro.conf.subcommand(name, **({"default": defaults[name]} if name in defaults else {}))]
        for name, (cls, _) in COMMANDS.items()
    ]
    return tyro.cli(Union[tuple(commands)], args=args, prog="talkgs", description="Audio-driven 3D Gaussian talking heads.")


def run_command(cfg) -> int:
    """Run a parsed command's config; user-facing problems become one line and exit status 2."""
    fn = next(fn for cls, fn in COMMANDS.values() if isinstance(cfg, cls))
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    try:
        if getattr(cfg, "verbose", False):
            os.environ["TALKGS_VERBOSE"] = "1"  # read by talkgs.prepare.track (MediaPipe logs)
        cfg = check(cfg)
        fn(cfg)
    except TalkgsError as e:
        print(f"talkgs: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        default = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
        print(f"talkgs: {str(e) or default}", file=sys.stderr)
        return 128 + int(signum)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _on_sigterm(signum, frame) -> None:
    # Unwind like Ctrl-C: every `finally` runs, so temporaries go and partial work is kept as
    # each command documents (training installs its own handler and saves a checkpoint).
    raise Interrupted("terminated (SIGTERM)", signum)


if __name__ == "__main__":
    sys.exit(main())
