"""What the commands print: aligned key–value tables on stdout, progress bars on stderr."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def path_arg(text: str) -> Path:
    """An argparse type for paths: an empty one (an unset shell variable) would mean the current
    directory, where a run's files would then land; refused instead."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; give a file or directory path")
    return Path(text)


def table(rows: list[tuple[str, str]]) -> str:
    """Two columns, keys padded to the longest."""
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


class LazyBar:
    """A tqdm bar on stderr opened at the first progress report, so that a run refused by an
    input check prints only its one error line; closed when the ``with`` block ends, and
    erased if it ends in an error (the error line then stands alone)."""

    def __init__(self, **options: Any) -> None:
        self.options, self.bar = options, None

    def open(self, total: int):
        """The bar (created with ``total`` steps the first time)."""
        if self.bar is None:
            from tqdm import tqdm  # only commands that report progress pay for it

            self.bar = tqdm(total=total, file=sys.stderr, **self.options)
        return self.bar

    def __enter__(self) -> LazyBar:
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if self.bar is not None:
            if exc_type is not None:
                self.bar.leave = False
            self.bar.close()
