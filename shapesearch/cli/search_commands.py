"""``shapesearch image|tensor|reconstruct``: tensor searches and reconstruction from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..engine.search import SearchConfig
from ..errors import ArgumentError, ShapesearchError
from .output import LazyBar, path_arg, table

if TYPE_CHECKING:
    from ..jobs.sources import Source


# search settings a flag can set; left out, a fresh run takes SearchConfig's default and a
# resumed run the checkpointed value
_SETTINGS = ("eps", "seed", "generations", "population", "stall", "restarts", "time_limit")


def search_settings(p: argparse.ArgumentParser) -> None:
    """The search settings (also what a submitted job takes); left out, they are None."""
    d = SearchConfig()
    p.add_argument("--eps", type=float, help=f"relative Frobenius error bound (default {d.eps})")
    p.add_argument("--seed", type=int, help=f"makes a run reproducible (default {d.seed})")
    p.add_argument("--generations", type=int, help=f"at most this many (default {d.generations})")
    p.add_argument("--population", type=int, help=f"shapes kept (default {d.population})")
    p.add_argument("--stall", type=int, help=f"stop after this many generations without gain (default {d.stall})")
    p.add_argument("--restarts", type=int,
                   help="when the search stalls, re-diversify around its best shapes this many times before "
                        f"stopping (default {d.restarts})")
    p.add_argument("--time-limit", type=float, help="stop the search after this many wall seconds")
    p.add_argument("--no-carry-over", dest="carry_over", action="store_const", const=False, default=None,
                   help="uniform per-cut error budget (as in the seed paper's code)")


def _search_options(p: argparse.ArgumentParser) -> None:
    search_settings(p)
    p.add_argument("--workers", type=int, default=None,
                   help="Ray workers (default: one per CPU; 0 = in this process)")
    p.add_argument("--address", default=None,
                   help="join the Ray cluster whose head is at HOST:PORT (or set RAY_ADDRESS)")
    p.add_argument("--out", type=path_arg, default=None,
                   help="result directory (default shapesearch-out/NAME-epsEPS)")
    p.add_argument("--resume", type=path_arg, default=None, metavar="DIR",
                   help="continue the checkpointed run in DIR, on its input and with its settings")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out (its files are removed)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    p.add_argument("--pareto", default=None, metavar="LOW:HIGH[:POINTS]",
                   help="the CR–ε front from one search: the best shape at POINTS values of ε from LOW to "
                        "HIGH (default 6, evenly spaced in log), each verified; instead of --eps")


def add_parsers(sub) -> None:
    img = sub.add_parser("image", help="find the TT shape that compresses an image most at error ≤ ε")
    img.add_argument("path", nargs="?", default=None,
                     help="PNG/JPEG (default: the bundled astronaut, or with --resume the run's own input)")
    _search_options(img)
    img.set_defaults(run=_search)
    ten = sub.add_parser("tensor", help="the same for an array in .npy or .safetensors")
    ten.add_argument("path", nargs="?", default=None,
                     help="FILE.npy or FILE.safetensors (with --resume: default the run's own input)")
    ten.add_argument("--key", default=None, help="tensor name inside a .safetensors file")
    _search_options(ten)
    ten.set_defaults(run=_search)
    rec = sub.add_parser("reconstruct", help="rebuild the data from a run's tt.safetensors alone")
    rec.add_argument("dir", type=path_arg, help="a run's --out directory (or its tt.safetensors)")
    rec.add_argument("--out", type=path_arg, required=True, help="FILE.png, FILE.npy or FILE.safetensors")
    rec.add_argument("--eps", type=float, default=None,
                     help="from a --pareto run: the point with the largest ε at most this")
    rec.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    rec.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    rec.set_defaults(run=_reconstruct)


def _given(args: argparse.Namespace) -> dict:
    """The search settings given as flags (left out: None, so they are not passed on)."""
    return {k: getattr(args, k) for k in (*_SETTINGS, "carry_over") if getattr(args, k) is not None}


def _source(args: argparse.Namespace) -> Source:
    """The input: the path given, else (resuming) the run's recorded input, else the default image."""
    from ..jobs.sources import Source

    if args.path is None and args.resume is not None:
        source = Source.saved_in(args.resume)
        if source.kind != ("image" if args.command == "image" else "array"):
            command = "tensor" if source.kind == "array" else "image"
            raise ShapesearchError(f"{args.resume} holds a `{command}` run; resume it with "
                                   f"`shapesearch {command} --resume {args.resume}`")
        return source
    if args.command == "image":
        return Source("image", args.path)
    if args.path is None:
        raise ShapesearchError("tensor needs a FILE.npy or FILE.safetensors (or --resume DIR)")
    return Source("array", args.path, args.key)


def _search(args: argparse.Namespace) -> tuple[dict, str]:
    from ..engine.search import checkpointed_config
    from ..jobs import Job, artifacts, run_job

    if args.pareto is not None:
        return _pareto(args)
    if args.resume is not None and (args.resume / artifacts.PARETO_FILE).is_file():
        raise ArgumentError("resume", f"{args.resume} holds a --pareto run, which cannot be resumed; run it "
                                      "again (--overwrite replaces it)")
    if args.resume is not None and args.out is not None and args.out != args.resume:
        raise ShapesearchError("--resume DIR continues in DIR; drop --out or make it the same directory")
    given = _given(args)
    config = checkpointed_config(args.resume, **given) if args.resume is not None else SearchConfig(**given)
    source = _source(args)
    data, name, bits = source.load()
    out = args.resume or args.out or Path("shapesearch-out") / f"{name}-eps{config.eps:g}"
    job = Job(data=data, name=name, out=out, kind=source.kind, bits=bits, resume=args.resume is not None,
              overwrite=args.overwrite, workers=args.workers, address=args.address, source=source)
    with LazyBar(desc=f"{name} ε={config.eps:g}", unit="gen", dynamic_ncols=True) as bar:
        def progress(h: dict) -> None:
            b = bar.open(config.generations)
            b.n = h["generation"]
            b.set_postfix(best_cr=f"{h['best_cr']:.2f}", evals=h["evaluations"], hits=h["cache_hits"])

        result = run_job(job, config, on_generation=progress)
    result["out"] = str(out)
    return result, _summary(result)


def _pareto(args: argparse.Namespace) -> tuple[dict, str]:
    from ..engine.pareto import parse_pareto
    from ..jobs import Job
    from ..jobs.pareto_job import run_pareto_job

    if args.eps is not None:
        raise ArgumentError("pareto", "searches a range of ε; drop --eps")
    if args.resume is not None:
        raise ArgumentError("pareto", "runs cannot be resumed yet; drop --resume")
    grid = parse_pareto(args.pareto)
    given = _given(args)
    config = SearchConfig(**{**given, "eps": grid[-1]})
    source = _source(args)
    data, name, bits = source.load()
    out = args.out or Path("shapesearch-out") / f"{name}-pareto{grid[0]:g}-{grid[-1]:g}"
    job = Job(data=data, name=name, out=out, kind=source.kind, bits=bits, overwrite=args.overwrite,
              workers=args.workers, address=args.address, source=source)
    with LazyBar(desc=f"{name} ε={grid[0]:g}…{grid[-1]:g}", unit="gen", dynamic_ncols=True) as bar:
        def progress(h: dict) -> None:
            b = bar.open(config.generations)
            b.n = h["generation"]
            b.set_postfix(evals=h["evaluations"], hits=h["cache_hits"])

        result = run_pareto_job(job, config, grid, on_generation=progress)
    result["out"] = str(out)
    rows = [("input", f"{result['input']} {tuple(result['input_shape'])}")]
    for p in result["points"]:
        quality = "exact" if p["psnr"] is None else f"{p['psnr']:.2f} dB"
        rows.append((f"ε = {p['eps']:g}", f"CR {p['cr']:.2f}, error {p['rel_error']:.5f}, PSNR {quality}, "
                                         f"{p['shape']['text']}{'' if p['front'] else ' (dominated)'}"))
    rows += [("evaluations", f"{result['evaluations']} TT-SVDs over {len(grid)} islands, "
                             f"{result['cache_hits']} cache hits, {result['generations']} generations, "
                             f"{result['workers']} worker(s)"),
             ("wall time", f"{result['wall_seconds']:.1f} s"),
             ("output", f"{out} (pick a point with `shapesearch reconstruct {out} --eps E --out FILE`)")]
    return result, table(rows)


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

    source = args.dir
    pareto_run = args.dir.is_dir() and (args.dir / artifacts.PARETO_FILE).is_file()
    if args.eps is not None:
        if not pareto_run:
            raise ArgumentError("eps", f"picks a point of a --pareto run; {args.dir} is not one (no "
                                       f"{artifacts.PARETO_FILE}); drop --eps")
        from ..jobs.pareto_job import pick_point

        source = pick_point(args.dir, args.eps)
    elif pareto_run:
        raise ArgumentError("eps", f"is needed: {args.dir} is a --pareto run with one TT per ε "
                                   f"(see its {artifacts.PARETO_FILE})")
    cores, shape, meta = artifacts.load_tt(source)
    data = artifacts.reconstruct(cores, shape)
    artifacts.save_data(data, args.out, meta, overwrite=args.overwrite)
    result = {"output": str(args.out), "shape": list(data.shape), "kind": meta.get("kind"),
              "tt_modes": shape.describe(), "params": int(sum(c.size for c in cores)), "eps": meta.get("eps")}
    eps = meta.get("eps")
    point = f" (the point at ε = {eps:g})" if pareto_run and isinstance(eps, (int, float)) else ""
    return result, f"wrote {args.out} {tuple(data.shape)} from {result['params']:,} TT parameters{point}"
