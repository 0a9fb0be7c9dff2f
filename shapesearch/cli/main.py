"""``shapesearch``: search TT shapes of images, arrays and model layers; compress and evaluate models.

The command line only parses, calls the library and prints; every bad input becomes one
``shapesearch: error: …`` line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import ShapesearchError
from . import layers_command, model_commands, search_commands


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"shapesearch: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="shapesearch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    search_commands.add_parsers(sub)
    layers_command.add_parser(sub)
    model_commands.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help or a one-line usage error
        return int(exc.code or 0)
    try:
        result, text = args.run(args)
    except ShapesearchError as exc:
        print(f"shapesearch: error: {exc.for_command_line(set(vars(args)))}", file=sys.stderr)
        return 2
    print(json.dumps(result) if args.json else text)
    return 0
