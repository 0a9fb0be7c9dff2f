"""The command line: the top layer, on the library (``compressors``, ``shapesearch.jobs``)."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
