"""``shapesearch image|tensor|reconstruct``: tensor searches and reconstruction from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..engine.search import SearchConfig
from ..errors import ShapesearchError
from .output import LazyBar, table


def _search_options(p: argparse.ArgumentParser) -> None:
    d = SearchConfig()
    dflt = " (default %(default)s)"
    p.add_argument("--eps", type=float, default=d.eps, help="relative Frobenius error bound" + dflt)
    p.add_argument("--seed", type=int, default=d.seed, help="makes a run reproducible" + dflt)
    p.add_argument("--generations", type=int, default=d.generations, help="at most this many" + dflt)
    p.add_argument("--population", type=int, default=d.population, help="shapes kept" + dflt)
    p.add_argument("--stall", type=int, default=d.stall,
                   help="stop after this many generations without gain" + dflt)
    p.add_argument("--time-limit", type=float, default=d.time_limit,
                   help="stop the search after this many wall seconds")
    p.add_argument("--workers", type=int, default=None,
                   help="Ray workers (default: one per CPU; 0 = in this process)")
    p.add_argument("--address", default=None, help="join this Ray cluster (or set RAY_ADDRESS)")
    p.add_argument("--no-carry-over", action="store_true",
                   help="uniform per-cut error budget (as in the seed paper's code)")
    p.add_argument("--out", type=Path, default=None, help="result directory")
    p.add_argument("--resume", type=Path, default=None, metavar="DIR",
                   help="continue the checkpointed run in DIR")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")


def add_parsers(sub) -> None:
    img = sub.add_parser("image", help="find the TT shape that compresses an image most at error ≤ ε")
    img.add_argument("path", nargs="?", default=None, help="PNG/JPEG (default: the bundled astronaut)")
    _search_options(img)
    img.set_defaults(run=_search)
    ten = sub.add_parser("tensor", help="the same for an array in .npy or .safetensors")
    ten.add_argument("path", help="FILE.npy or FILE.safetensors")
    ten.add_argument("--key", default=None, help="tensor name inside a .safetensors file")
    _search_options(ten)
    ten.set_defaults(run=_search)
    rec = sub.add_parser("reconstruct", help="rebuild the data from a run's tt.safetensors alone")
    rec.add_argument("dir", type=Path, help="a run's --out directory (or its tt.safetensors)")
    rec.add_argument("--out", type=Path, required=True, help="FILE.png, FILE.npy or FILE.safetensors")
    rec.add_argument("--overwrite", action="store_true")
    rec.add_argument("--json", action="store_true")
    rec.set_defaults(run=_reconstruct)


def _search(args: argparse.Namespace) -> tuple[dict, str]:
    from ..jobs import Job, load_array, load_image, run_job

    if args.resume is not None and args.out is not None and args.out != args.resume:
        raise ShapesearchError("--resume DIR continues in DIR; drop --out or make it the same directory")
    if args.command == "image":
        image = load_image(args.path)
        data, name, kind, bits = image.pixels, image.name, "image", image.bits
    else:
        path = Path(args.path)
        data, name, kind, bits = load_array(path, args.key), path.stem, "array", 0
    out = args.resume or args.out or Path("shapesearch-out") / f"{name}-eps{args.eps:g}"
    config = SearchConfig(eps=args.eps, population=args.population, generations=args.generations,
                          stall=args.stall, time_limit=args.time_limit, seed=args.seed,
                          carry_over=not args.no_carry_over)
    job = Job(data=data, name=name, out=out, kind=kind, bits=bits, resume=args.resume is not None,
              overwrite=args.overwrite, workers=args.workers, address=args.address)
    with LazyBar(desc=f"{name} ε={config.eps:g}", unit="gen", dynamic_ncols=True) as bar:
        def progress(h: dict) -> None:
            b = bar.open(config.generations)
            b.n = h["generation"]
            b.set_postfix(best_cr=f"{h['best_cr']:.2f}", evals=h["evaluations"], hits=h["cache_hits"])

        result = run_job(job, config, on_generation=progress)
    result["out"] = str(out)
    return result, _summary(result)


def _summary(r: dict) -> str:
    rows = [
        ("input", f"{r['input']} {tuple(r['input_shape'])}"),
        ("TT modes", r["shape"]["text"]),
        ("mode digits", " | ".join(r["shape"]["composition"])),
        ("padding", ", ".join(f"{a['size']}→{a['padded']}" for a in r["shape"]["axes"])),
        ("ranks", "-".join(map(str, r["ranks"]))),
        ("parameters", f"{r['params']:,} (of {r['original_entries']:,} entries)"),
        ("CR", f"{r['cr']:.2f}"),
        ("rel. error", f"{r['rel_error']:.5f} (bound {r['eps']:g}, measured)"),
        ("PSNR", "exact" if r["psnr"] is None else f"{r['psnr']:.2f} dB"),
    ]
    for name, ref in r["reference"].items():
        rows.append((f"CR {name.replace('_', ' ')}", f"{ref['cr']:.2f} ({ref['modes']})"))
    if r["surrogate"]:
        best = min(r["surrogate"], key=lambda s: s["bound_params"])
        rows.append(("CR surrogate", f"≥ {r['original_entries'] / best['bound_params']:.2f} "
                                     f"({best['shape']}, guaranteed)"))
    rows += [
        ("evaluations", f"{r['evaluations']} TT-SVDs, {r['cache_hits']} cache hits, "
                        f"{r['generations']} generations, {r['workers']} worker(s)"),
        ("wall time", f"{r['wall_seconds']:.1f} s"),
        ("output", r["out"]),
    ]
    return table(rows)


def _reconstruct(args: argparse.Namespace) -> tuple[dict, str]:
    from ..jobs import artifacts
    from ..jobs.images import save_image

    cores, shape, meta = artifacts.load_tt(args.dir)
    if args.out.exists() and not args.overwrite:
        raise ShapesearchError(f"{args.out} exists; choose another --out or pass --overwrite")
    data = artifacts.reconstruct(cores, shape)
    suffix = args.out.suffix.lower()
    if suffix == ".png":
        if meta.get("kind") != "image":
            raise ShapesearchError("this TT holds an array, not an image; write .npy or .safetensors")
        save_image(data, int(meta["bits"]), args.out)
    elif suffix == ".npy":
        np.save(args.out, data, allow_pickle=False)
    elif suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file({"data": np.ascontiguousarray(data)}, str(args.out))
    else:
        raise ShapesearchError(f"--out {args.out}: unsupported type {suffix!r}; use .png, .npy or .safetensors")
    result = {"output": str(args.out), "shape": list(data.shape), "kind": meta.get("kind"),
              "tt_modes": shape.describe(), "params": int(sum(c.size for c in cores))}
    return result, f"wrote {args.out} {tuple(data.shape)} from {result['params']:,} TT parameters"
