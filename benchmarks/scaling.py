"""Search time, peak memory and CR against tensor size, from 0.25 M to 100 M entries.

    python benchmarks/scaling.py [--cases retina-0.25M retina-1M ...] [--eps 0.1]

Every case runs the CLI as a user would (``image`` for PNGs, ``tensor`` for .npy), with the
default budget and 2 Ray workers, except the 100 M-entry case, whose search is bounded by
``--time-limit``.  Peak memory is the largest sum of the proportional set sizes (PSS) of the
CLI and every process under it (the Ray head, raylet, object store and workers), sampled every
0.25 s.  Inputs: crops and resizes of scikit-image's ``retina`` (1411 × 1411 × 3), a smooth 3-D
volume and a video (a camera pan across ``retina``, frames × H × W × C).  Rows go to
results/scaling.jsonl, the table and the fitted slope of time against entries to scaling.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import skimage.data
import skimage.transform
from _report import RESULTS, append_row, load_rows, machine, main_with_report, table
from PIL import Image

from shapesearch.jobs.memory import DRIVER_BYTES, RAY_BYTES, WORKER_BYTES, PeakMemory, search_memory

JSONL = RESULTS / "scaling.jsonl"
MARKDOWN = Path(__file__).parent / "scaling.md"
BOUNDED_LIMIT = 420  # seconds of search for the case the default budget would not finish in time


def _retina() -> np.ndarray:
    return skimage.data.retina()


def _crop(side: int):
    def make() -> np.ndarray:
        img = _retina()
        top = (img.shape[0] - side) // 2
        return img[top:top + side, top:top + side]
    return make


def _resize(side: int):
    def make() -> np.ndarray:
        big = skimage.transform.resize(_retina(), (side, side), order=1, anti_aliasing=False, preserve_range=True)
        return np.rint(big).astype(np.uint8)
    return make


def _volume() -> np.ndarray:
    """A smooth 3-D density: Gaussian-blurred random blobs, 128 × 192 × 256 (6.3 M entries)."""
    from scipy.ndimage import gaussian_filter

    blobs = skimage.data.binary_blobs(length=256, n_dim=3, volume_fraction=0.3, rng=0)[:128, :192]
    return gaussian_filter(blobs.astype(np.float32), sigma=2.0)


def _video() -> np.ndarray:
    """A camera pan across retina: 48 frames of 360 × 480 × 3 (24.9 M entries), 8-bit."""
    img = _retina()
    frames = [img[200 + 6 * i:560 + 6 * i, 150 + 12 * i:630 + 12 * i] for i in range(48)]
    return np.stack(frames)


# name -> (builder, written as, bounded search)
CASES = {
    "retina crop 0.25M": (_crop(289), "png", False),
    "retina crop 1M": (_crop(577), "png", False),
    "retina crop 4M": (_crop(1155), "png", False),
    "retina 6M": (_crop(1411), "png", False),
    "retina resize 25M": (_resize(2887), "png", False),
    "retina resize 100M": (_resize(5774), "png", True),
    "volume 6.3M": (_volume, "npy", False),
    "video 24.9M": (_video, "npy", False),
}


def run_case(name: str, eps: float) -> dict:
    build, kind, bounded = CASES[name]
    data = build()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("input.png" if kind == "png" else "input.npy")
        if kind == "png":
            Image.fromarray(data).save(path)
        else:
            np.save(path, data)
        cmd = [sys.executable, "-m", "shapesearch.cli", "image" if kind == "png" else "tensor", str(path),
               "--eps", str(eps), "--workers", "2", "--out", f"{tmp}/run", "--json"]
        if bounded:
            cmd += ["--time-limit", str(BOUNDED_LIMIT)]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        memory = PeakMemory(every=0.25, pid=proc.pid)
        out, err = proc.communicate()
        wall = time.perf_counter() - t0
        peak = memory.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{name}: the CLI failed:\n{err[-2000:]}")
    r = json.loads(out)
    return {"case": name, "entries": int(data.size), "shape": list(data.shape), "eps": eps,
            "bounded_s": BOUNDED_LIMIT if bounded else None, "cr": r["cr"], "rel_error": r["rel_error"],
            "evaluations": r["evaluations"], "generations": r["generations"], "search_s": r["search_seconds"],
            "wall": wall, "peak_tree_bytes": peak, "reported_memory": r["memory"], "tt_shape": r["shape"]["text"],
            "machine": machine()}


def run(args) -> None:
    for name in args.cases:
        print(f"  {name} ...", file=sys.stderr, flush=True)
        row = run_case(name, args.eps)
        append_row(JSONL, row)
        print(json.dumps(row), flush=True)


def report() -> str:
    stored = load_rows(JSONL)
    rows = {r["case"]: r for r in stored}  # the newest row of each case
    gib = 2**30
    body = [[name, r["entries"] / 1e6, "×".join(map(str, r["shape"])), r["cr"], r["rel_error"], r["evaluations"],
             r["generations"], r["search_s"], r["wall"], r["peak_tree_bytes"] / gib,
             search_memory(r["entries"], r["reported_memory"]["workers"]) / gib,
             f"≤ {r['bounded_s']} s search" if r["bounded_s"] else "default"]
            for name in CASES if (r := rows.get(name))]
    first = next(iter(rows.values()), {"eps": 0.1, "machine": machine()})
    out = ["# Scaling with tensor size", "",
           "Printed by `benchmarks/scaling.py` (rows in `results/scaling.jsonl`). One CLI run per row, 2 Ray workers, "
           f"ε = {first['eps']}; wall = the whole CLI run (reading, Ray start, "
           "search, float64 confirmation, writing); peak GiB = the largest summed PSS of the CLI and every "
           "process under it, sampled every 0.25 s; estimate = what the memory check assumes "
           f"({DRIVER_BYTES} + {WORKER_BYTES} bytes an entry per worker, plus {RAY_BYTES // 2**20} MiB for a local "
           f"Ray). The newest row of each case is shown, earlier runs below. Machine: {first['machine']}.",
           "", table(["case", "M entries", "shape", "CR", "error", "evaluations", "generations", "search s",
                      "wall s", "peak GiB", "estimate GiB", "budget"], body), ""]
    earlier = [[r["case"], r["cr"], r["search_s"], r["wall"], r["peak_tree_bytes"] / gib] for r in stored
               if r is not rows[r["case"]]]
    if earlier:
        out += ["Earlier runs of the same cases (older code):", "",
                table(["case", "CR", "search s", "wall s", "peak GiB"], earlier), ""]
    fit = [(r["entries"], r["search_s"] / max(r["evaluations"], 1)) for n, r in rows.items()
           if n.startswith("retina") and not r["bounded_s"]]
    if len(fit) >= 2:
        x, y = np.log([f[0] for f in fit]), np.log([f[1] for f in fit])
        slope = float(np.polyfit(x, y, 1)[0])
        out += [f"Search seconds per evaluation against entries on the retina rows with the default budget: "
                f"slope **{slope:.2f}** in log–log (1 = linear in the entries).", ""]
        wall = [(r["entries"], r["wall"]) for n, r in rows.items() if n.startswith("retina") and not r["bounded_s"]]
        x, y = np.log([w[0] for w in wall]), np.log([w[1] for w in wall])
        out += [f"Whole-run wall time against entries (same rows): slope **{float(np.polyfit(x, y, 1)[0]):.2f}**.", ""]
    return "\n".join(out)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--eps", type=float, default=0.1)
    main_with_report(p, run, report, MARKDOWN)
