"""The same search on 1 and 2 Ray workers: speed-up and identical results.

    python benchmarks/ray_scaling.py [--image astronaut] [--generations 25]

The stall stop is off so both runs do exactly the same generations; the time compared is
the search itself (surrogate spectra, GA, float64 confirmation), after Ray has started.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import skimage.data
from _report import machine, table

from shapesearch.engine.search import SearchConfig
from shapesearch.jobs.search_job import Job, run_job

MARKDOWN = Path(__file__).parent / "ray_scaling.md"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", default="astronaut")
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--generations", type=int, default=25)
    args = p.parse_args()
    img = getattr(skimage.data, args.image)().astype(np.float64) / 255.0
    rows, results = [], {}
    for workers in (1, 2):
        ray.shutdown()
        with tempfile.TemporaryDirectory() as tmp:
            config = SearchConfig(eps=args.eps, generations=args.generations, stall=10**6)
            job = Job(data=img, name=args.image, out=Path(tmp) / "run", kind="image", workers=workers)
            t0 = time.perf_counter()
            r = run_job(job, config)
            wall = time.perf_counter() - t0
        results[workers] = r
        rows.append([workers, r["search_seconds"], wall, r["evaluations"], r["cr"], r["shape"]["text"]])
        print(f"{workers} worker(s): search {r['search_seconds']:.1f} s, job {wall:.1f} s, "
              f"{r['evaluations']} evaluations, CR {r['cr']:.2f}", flush=True)
    ray.shutdown()
    same = all(results[1][k] == results[2][k] for k in ("params", "ranks", "evaluations", "cache_hits"))
    speedup = results[1]["search_seconds"] / results[2]["search_seconds"]
    text = "\n".join([
        "# Ray scaling", "",
        f"Printed by `benchmarks/ray_scaling.py`: {args.image}, ε = {args.eps}, "
        f"{args.generations} generations (no stall stop), population {SearchConfig().population}, "
        f"on {machine()}. 'search s' excludes "
        "Ray start-up; 'job s' is the whole job including it and the written artifacts.", "",
        table(["workers", "search s", "job s", "evaluations", "CR", "shape"], rows), "",
        f"Speed-up of the search with 2 workers: **{speedup:.2f}×**; identical result on both: {same}.", ""])
    MARKDOWN.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
