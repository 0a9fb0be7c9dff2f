"""The library's error types: bad input, told in words that say what to do.

The library raises these (all ``ValueError``s) and names arguments, never command-line flags;
the command line alone turns one into a single ``shapesearch: error: …`` line and exit code 2.
"""

from __future__ import annotations


class ShapesearchError(ValueError):
    """Bad input: the message says what is wrong and what to do."""

    def for_command_line(self, flags: set[str] = frozenset()) -> str:
        """The message as the command line prints it (``flags``: its option names)."""
        return str(self)


class ArgumentError(ShapesearchError):
    """A bad value of one argument; the message starts with the argument's name."""

    def __init__(self, argument: str, problem: str) -> None:
        super().__init__(f"{argument} {problem}")
        self.argument, self.problem = argument, problem

    def for_command_line(self, flags: set[str] = frozenset()) -> str:
        if self.argument in flags:  # the same value came in as --argument
            return f"--{self.argument.replace('_', '-')} {self.problem}"
        return str(self)
