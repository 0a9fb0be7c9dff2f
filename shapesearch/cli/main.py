"""``shapesearch``: search TT shapes of images, arrays and model layers; compress and evaluate models.

The command line only parses, calls the library and prints; every bad input becomes one
``shapesearch: error: …`` line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

from ..errors import ShapesearchError
from . import front_command, layers_command, model_commands, search_commands, service_commands


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"shapesearch: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="shapesearch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    search_commands.add_parsers(sub)
    layers_command.add_parser(sub)
    model_commands.add_parsers(sub)
    front_command.add_parser(sub)
    service_commands.add_parsers(sub)
    return parser


class _Terminated(BaseException):
    """SIGTERM, raised wherever the program is, so that cleanup runs as for Ctrl-C."""


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated


def _stop_ray() -> None:
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def _run(args: argparse.Namespace) -> int:
    try:
        result, text = args.run(args)
    except ShapesearchError as exc:
        print(f"shapesearch: error: {exc.for_command_line(set(vars(args)))}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file the checks could not foresee (a full disk, a vanished directory)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"shapesearch: error: {where}{exc.strerror or exc}; check the path and free space", file=sys.stderr)
        return 2
    except MemoryError:
        print("shapesearch: error: out of memory for this input; give a smaller one or use a larger machine",
              file=sys.stderr)
        return 2
    try:
        print(json.dumps(result) if args.json else text)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (`| head`): not an error of ours
        sys.stdout = None
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help or a one-line usage error
        return int(exc.code or 0)
    # Ctrl-C / SIGTERM: finally blocks close the Ray workers, the last checkpoint stays usable
    # (written atomically every generation), and one line replaces the traceback
    previous = signal.signal(signal.SIGTERM, _terminate)
    # Python leaves SIGINT ignored when the parent ignored it (a background job, a test runner
    # after some library set SIG_IGN); `kill -INT` must still stop the run with its checkpoint
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _run(args)
    except (KeyboardInterrupt, _Terminated) as exc:
        _stop_ray()
        code, name = (130, "SIGINT") if isinstance(exc, KeyboardInterrupt) else (143, "SIGTERM")
        resume = " (a checkpointed search continues with --resume DIR)" if args.command in ("image", "tensor") else ""
        print(f"shapesearch: interrupted by {name}{resume}", file=sys.stderr)
        return code
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
