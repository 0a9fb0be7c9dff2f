"""The one rule of imports: they point downward.

cli → shapesearch.service → compressors / shapesearch.jobs → shapesearch.matrix → shapesearch.engine →
shapesearch.errors (and shapesearch.paths, the destination checks, on the same bottom level).
Every import statement of every file is parsed (function-level imports included), so a lazy
import cannot hide a cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# layer of a module → modules (prefixes) it must never import
_ABOVE_BASE = ("shapesearch.engine", "shapesearch.matrix", "shapesearch.jobs", "shapesearch.service",
                 "shapesearch.cli", "compressors", "torch", "transformers")
FORBIDDEN = {
    "shapesearch.errors": _ABOVE_BASE,
    "shapesearch.paths": _ABOVE_BASE,
    "shapesearch.engine": _ABOVE_BASE[1:],
    "shapesearch.matrix": ("shapesearch.jobs", "shapesearch.service", "shapesearch.cli", "compressors", "torch",
                           "transformers"),
    "shapesearch.jobs": ("shapesearch.matrix", "shapesearch.service", "shapesearch.cli", "compressors", "torch",
                         "transformers"),
    "compressors": ("shapesearch.cli", "shapesearch.jobs", "shapesearch.service"),
    "shapesearch.service": ("shapesearch.cli",),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            out.add(target)
            out.update(f"{target}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return out


def layer_of(name: str) -> str | None:
    return next((layer for layer in FORBIDDEN if name == layer or name.startswith(layer + ".")), None)


def violations() -> list[str]:
    found = []
    for path in sorted([*ROOT.glob("shapesearch/**/*.py"), *ROOT.glob("compressors/**/*.py")]):
        layer = layer_of(module_name(path))
        if layer is None:
            continue
        for target in imports_of(path):
            for banned in FORBIDDEN[layer]:
                if target == banned or target.startswith(banned + "."):
                    found.append(f"{path.relative_to(ROOT)} imports {target} ({layer} must not import {banned})")
    return found


def test_imports_point_downward():
    assert violations() == []


# what the compressors take from shapesearch: errors, destination checks, the engine's TT-SVD, the formats, the plan,
# the per-layer search that writes the plan, and the one place Ray is started (loopback-only) and workers are limited
COMPRESSORS_MAY_USE = ("shapesearch.errors", "shapesearch.paths", "shapesearch.engine.tt_svd",
                       "shapesearch.matrix.formats", "shapesearch.matrix.plan", "shapesearch.matrix.layer_search",
                       "shapesearch.engine.executors")


def test_compressors_use_only_the_tt_svd_formats_and_plan():
    used = {(path.name, target) for path in ROOT.glob("compressors/**/*.py") for target in imports_of(path)
            if target.split(".")[0] == "shapesearch"}
    assert {(f, t) for f, t in used if not t.startswith(COMPRESSORS_MAY_USE)} == set()
    assert any(t.startswith("shapesearch.matrix.plan") for _, t in used)  # the checker sees them at all


def test_checker_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    """The rule would fail on a cycle hidden in a function-level relative import."""
    engine = tmp_path / "shapesearch" / "engine"
    engine.mkdir(parents=True)
    (engine / "bad.py").write_text("def f():\n    from ..cli import main\n    import torch\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = violations()
    assert any("imports shapesearch.cli" in v for v in found)
    assert any("imports torch" in v for v in found)


@pytest.mark.parametrize("package", ["shapesearch", "shapesearch.engine", "shapesearch.matrix", "compressors"])
def test_import_creates_no_deap_classes_and_leaves_random_alone(package):
    """Importing a package has no side effects on DEAP's creator or the global random generator."""
    code = ("import random, deap.creator as c; random.seed(7); before = random.random(); random.seed(7); "
            f"import {package}; after = random.random(); "
            "names = [n for n in vars(c) if n[0].isupper() and n not in ('MetaCreator',)]; "
            "assert before == after, 'the global random generator was used'; "
            "assert not names, names")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
