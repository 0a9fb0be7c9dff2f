"""Where a search job's data comes from, recorded in its output directory so that a resumed
run reads the same input without being told again."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import ShapesearchError
from .arrays import load_array
from .images import DEFAULT_IMAGE, load_image

SOURCE_FILE = "source.json"
KINDS = ("image", "array")


@dataclass(frozen=True)
class Source:
    """An image file (``path`` None: the bundled astronaut) or an array file (.npy, or
    .safetensors with ``key``).  Paths are kept absolute, so a run resumes from any directory."""

    kind: str
    path: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ShapesearchError(f"unknown input kind {self.kind!r}; use one of {', '.join(KINDS)}")
        if self.path is not None:
            object.__setattr__(self, "path", str(Path(self.path).absolute()))

    def load(self) -> tuple[np.ndarray, str, int]:
        """(data, name, image bit depth — 0 for arrays)."""
        if self.kind == "image":
            image = load_image(self.path)
            return image.pixels, image.name, image.bits
        return load_array(Path(self.path), self.key), self.name, 0

    @property
    def name(self) -> str:
        """What a run on this input is called: the file's stem, and a tensor's key (so that two
        tensors of one file get two default output directories); safe as a directory name."""
        stem = Path(self.path or DEFAULT_IMAGE).stem
        return stem if self.key is None else f"{stem}-{re.sub(r'[^A-Za-z0-9._-]', '_', self.key)}"

    def save(self, directory: Path) -> None:
        (Path(directory) / SOURCE_FILE).write_text(json.dumps(asdict(self)) + "\n")

    @classmethod
    def saved_in(cls, directory: Path) -> Source:
        """The source recorded in a run's output directory."""
        path = Path(directory) / SOURCE_FILE
        if not path.is_file():
            raise ShapesearchError(f"{directory} does not say which input it was run on ({SOURCE_FILE} is "
                                   "missing: a run from an older version); give the input path again")
        try:
            d = json.loads(path.read_text())
            return cls(kind=d["kind"], path=d["path"], key=d["key"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ShapesearchError(f"{path} is damaged ({exc}); give the input path again") from exc
