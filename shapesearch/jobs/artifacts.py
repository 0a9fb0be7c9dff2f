"""What a run leaves in ``--out``: ``tt.safetensors`` (cores + how to undo the
tensorization), ``result.json``, a reconstruction and a convergence plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import tensorly as tl
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from tensorly.tt_tensor import TTTensor

from ..engine.checkpoint import write_atomically
from ..engine.tensorization import Tensorization
from ..engine.tt_svd import relative_error
from ..errors import ArgumentError, ShapesearchError
from ..paths import check_writable_file, readable_mode
from .memory import check_readable

TT_FILE = "tt.safetensors"
RESULT_FILE = "result.json"
PARETO_FILE = "pareto.json"  # a --pareto run's result; its points are in PARETO_TT files
PARETO_TT = "tt-eps{eps:g}.safetensors"
PARETO_PLOT = "pareto.png"
FORMAT = "shapesearch-tt/1"


def stored_cores(cores: list[np.ndarray], exponent: int, shape: Tensorization, searched: np.ndarray,
                 eps: float, rel_error: float) -> tuple[list[np.ndarray], np.ndarray, float]:
    """The cores a run stores, the data they rebuild and its measured relative error.

    ``cores`` (float64) approximate ``searched``, the data scaled by 2^-``exponent``, with
    ``rel_error``.  Stored in float32 (half the bytes) when the float32 cores' own reconstruction,
    measured, still meets ``eps`` and the scaling back stays exact in float32; else in float64."""
    single = [c.astype(np.float32) for c in cores]
    approx = reconstruct(single, shape)
    error = relative_error(searched, approx)
    with np.errstate(over="ignore", under="ignore"):  # caught below: the round trip is not exact
        first = np.ldexp(single[0], exponent)
    if error <= eps and np.array_equal(np.ldexp(first.astype(np.float64), -exponent), single[0]):
        return [first, *single[1:]], np.ldexp(approx, exponent, out=approx), error  # powers of two: exact
    del approx  # a large tensor's reconstructions are never held twice
    double = [np.ldexp(cores[0], exponent), *cores[1:]]
    return double, reconstruct(double, shape), rel_error


def save_tt(path: Path, cores: list[np.ndarray], shape: Tensorization, meta: dict) -> None:
    """Cores as ``core_0 … core_{d-1}`` (float32 or float64, as given); the tensorization and
    ``meta`` as metadata."""
    tensors = {f"core_{k}": np.ascontiguousarray(c, dtype=np.float32 if c.dtype == np.float32 else np.float64)
               for k, c in enumerate(cores)}
    header = {"format": FORMAT, "tensorization": json.dumps(shape.to_dict()),
              "meta": json.dumps(meta)}
    save_file(tensors, str(path), metadata=header)
    path.chmod(readable_mode())  # safetensors writes 0600; the run's other files follow the umask


def load_tt(path: Path) -> tuple[list[np.ndarray], Tensorization, dict]:
    """Read a ``tt.safetensors`` written by :func:`save_tt`, checking that it is consistent."""
    path = Path(path)
    if path.is_dir():
        path = path / TT_FILE
    if not path.is_file():
        raise ShapesearchError(f"{path} not found; point to a run's output directory or its {TT_FILE}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ShapesearchError(f"{path} is not a readable safetensors file ({exc})") from exc
    if header.get("format") != FORMAT:
        raise ShapesearchError(f"{path} was not written by shapesearch (format {header.get('format')!r})")
    try:
        shape = Tensorization.from_dict(json.loads(header["tensorization"]))
        meta = json.loads(header["meta"])
        if not isinstance(meta, dict) or meta.get("kind") not in ("image", "array"):
            raise ValueError("meta must be an object with kind 'image' or 'array'")
        if meta["kind"] == "image" and meta.get("bits") not in (8, 16):
            raise ValueError(f"an image's bits must be 8 or 16, not {meta.get('bits')!r}")
        cores = [tensors[f"core_{k}"] for k in range(len(tensors))]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # json's errors and ShapesearchError too
        raise ShapesearchError(f"{path} has a damaged header or cores ({exc}); write it again") from exc
    check_cores(cores, shape, path)
    entries = math.prod(shape.padded_shape)  # a few small cores can stand for a huge tensor
    check_readable(entries * 16, f"{path}: its {entries:,} entries", "rebuild it on a larger machine")
    return cores, shape, meta


def check_cores(cores: list[np.ndarray], shape: Tensorization, path: Path) -> None:
    """Cores [r_{k-1}, n_k, r_k] that chain (r_0 = r_d = 1), are finite, and have ``shape``'s mode sizes."""
    problem = None
    if not cores or any(c.ndim != 3 or c.size == 0 for c in cores):
        problem = "every core must be a non-empty 3-way array"
    elif cores[0].shape[0] != 1 or cores[-1].shape[2] != 1 or any(
            a.shape[2] != b.shape[0] for a, b in zip(cores, cores[1:])):
        problem = f"the ranks do not chain: {[c.shape for c in cores]}"
    elif tuple(c.shape[1] for c in cores) != shape.mode_sizes:
        problem = f"core mode sizes {tuple(c.shape[1] for c in cores)} do not match the stored tensorization"
    elif not all(np.issubdtype(c.dtype, np.floating) and np.isfinite(c).all() for c in cores):
        problem = "the cores must hold finite real numbers"
    if problem:
        raise ShapesearchError(f"{path}: {problem}; write it again")


def reconstruct(cores: list[np.ndarray], shape: Tensorization) -> np.ndarray:
    """The full tensor in its original axes (padding removed), contracted in float64 whatever
    the cores' type."""
    with tl.backend_context("numpy"):
        cores = [np.asarray(c, dtype=np.float64) for c in cores]
        return shape.invert(np.asarray(tl.tt_to_tensor(TTTensor(cores))))


DATA_SUFFIXES = (".png", ".npy", ".safetensors")


def save_data(data: np.ndarray, path: Path, meta: dict, overwrite: bool = False) -> None:
    """Write reconstructed ``data`` as ``path``'s type says: .png (images only; ``meta`` gives
    ``kind`` and ``bits``), .npy or .safetensors (under the name ``data``).  Checks first."""
    from .images import save_image

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in DATA_SUFFIXES:
        raise ArgumentError("out", f"{path}: unsupported type {suffix!r}; use {', '.join(DATA_SUFFIXES)}")
    if suffix == ".png" and meta.get("kind") != "image":
        raise ArgumentError("out", f"{path}: this TT holds an array, not an image; write .npy or .safetensors")
    check_writable_file(path, "out", overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        save_image(data, int(meta.get("bits", 8)), path)
    elif suffix == ".npy":
        with path.open("wb") as f:  # np.save would append .npy to a name that lacks it
            np.save(f, data, allow_pickle=False)
    else:
        save_file({"data": np.ascontiguousarray(data)}, str(path))
        path.chmod(readable_mode())


def write_json(path: Path, data: dict) -> None:
    """``data`` as indented JSON, replacing ``path`` atomically."""
    write_atomically(path, json.dumps(data, indent=2) + "\n")


def plot_convergence(history: list[dict], path: Path, title: str) -> None:
    """Best and mean CR per generation, against evaluations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = [h["evaluations"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(evals, [h["best_cr"] for h in history], marker="o", label="best CR")
    ax.plot(evals, [h["mean_cr"] for h in history], linestyle="--", label="population mean CR")
    ax.set_xlabel("TT-SVD evaluations")
    ax.set_ylabel("compression ratio (original entries / TT parameters)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
