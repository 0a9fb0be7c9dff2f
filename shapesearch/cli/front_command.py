"""``shapesearch pareto --model``: perplexity against parameters over a grid of budgets.

Parses, calls ``compressors.model_front.model_front`` and prints its table; the points, the
front and the files are the library's."""

from __future__ import annotations

import argparse

from ..errors import ArgumentError
from .output import path_arg, table

FRONT_METHODS = ("flat-llm", "svd-llm", "tt", "saten")  # compressors.model_front.FRONT_METHODS, without torch


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated fractions such as 0.9,0.8,0.6, got {text!r}") \
            from None


def _names(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [n for n in names if n not in FRONT_METHODS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"must be comma-separated names from {','.join(FRONT_METHODS)}, "
                                         f"got {text!r}")
    return names


def add_parser(sub) -> None:
    p = sub.add_parser("pareto", help="perplexity against parameters of a model over a grid of budgets "
                                      "(FLAT-LLM, SVD-LLM, activation-aware TT and Saten), one Ray task per point")
    p.add_argument("--model", required=True, help="smollm2, a model directory, or a .gguf file (a causal LM)")
    p.add_argument("--budgets", type=_floats, required=True,
                   help="fractions of the decoder-linear parameters kept, comma-separated (e.g. 0.9,0.8,0.7)")
    p.add_argument("--methods", type=_names, default=list(FRONT_METHODS),
                   help=f"comma-separated, from {','.join(FRONT_METHODS)} (default: all); tt and saten are "
                        "activation-aware with a sensitivity budget, searched once for every budget")
    p.add_argument("--eps-grid", type=float, nargs="+", default=None,
                   help="tt/saten: per-layer ε choices (relative error on the activations; default 0.04 … 0.6)")
    p.add_argument("--text", type=path_arg, default=None,
                   help="held-out text for perplexity (default: gensim's Wikipedia articles, evaluation split)")
    p.add_argument("--windows", type=int, default=10, help="perplexity windows of 512 tokens (default %(default)s)")
    p.add_argument("--calib", type=path_arg, default=None,
                   help="calibration text file (default: gensim's Wikipedia articles, calibration split)")
    p.add_argument("--samples", type=int, default=32, help="calibration windows (default %(default)s)")
    p.add_argument("--seqlen", type=int, default=512, help="tokens per calibration window (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration windows' offsets (default 0)")
    p.add_argument("--workers", type=int, default=None, help="Ray workers (default: one per CPU; 0 = in this process)")
    p.add_argument("--address", default=None, help="join the Ray cluster whose head is at HOST:PORT")
    p.add_argument("--out", type=path_arg, required=True, help="directory for front.json, front.md and front.png")
    p.add_argument("--overwrite", action="store_true", help="write into --out even if it is not empty")
    p.add_argument("--json", action="store_true", help="print the rows as one JSON object")
    p.set_defaults(run=front_command)


def front_command(args: argparse.Namespace) -> tuple[dict, str]:
    from compressors.model_front import model_front

    if args.workers is not None and args.workers < 0:
        raise ArgumentError("workers", f"must be >= 0 (0 = in process), got {args.workers}")
    rows = model_front(args.model, args.budgets, args.out, args.methods, text=args.text, calib=args.calib,
                       samples=args.samples, seqlen=args.seqlen, seed=args.seed, windows=args.windows,
                       workers=args.workers, address=args.address, overwrite=args.overwrite,
                       **({} if args.eps_grid is None else {"eps_grid": args.eps_grid}))
    body = [(f"{r['method']} @ {r['budget']:g}", f"not made: {r['error']}" if "error" in r else
             f"perplexity {r['perplexity']:.2f}, {r['params']:,} parameters "
             f"({r['decoder_fraction']:.3f} of the decoder linears){'  ← front' if r['front'] else ''}")
            for r in sorted(rows, key=lambda r: (-r["budget"], r.get("perplexity", float("inf"))))]
    body.append(("saved", f"{args.out}/front.json, front.md, front.png"))
    return {"rows": rows, "out": str(args.out)}, table(body)
