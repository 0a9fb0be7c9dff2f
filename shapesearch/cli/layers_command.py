"""``shapesearch layers``: a TT shape for every attention/MLP linear of a model, as a plan file.

Parses, checks ``--out``, calls ``compressors.layer_plans.plan_layers`` and prints its table;
the search and the plan's contents are the library's."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from ..errors import ArgumentError
from ..matrix.formats import Format
from ..matrix.layer_search import DEFAULT_EPS_GRID
from ..matrix.plan import LayerPlan, Plan
from ..paths import check_outside, check_writable_file
from .output import LazyBar, path_arg

_OPTIONS: list[tuple[str, dict]] = [
    ("--model", {"required": True, "help": "smollm2, minilm, a model directory, or a .gguf file"}),
    ("--eps", {"type": float, "default": 0.3,
               "help": "relative Frobenius error bound per layer (default %(default)s)"}),
    ("--format", {"choices": [f.value for f in Format], "default": Format.TTM.value,
                  "help": "ttm: TT-matrix cores [r, m, n, r']; tt: the Saten code's TT of Wᵀ (default %(default)s)"}),
    ("--budget", {"type": float, "default": None,
                  "help": "TT parameters for all searched layers together: a count (e.g. 20e6) or, below 1, "
                          "a fraction of their dense parameters; picks each layer's ε from --eps-grid"}),
    ("--eps-grid", {"type": float, "nargs": "+", "default": list(DEFAULT_EPS_GRID),
                    "help": "per-layer ε choices with --budget (default %(default)s)"}),
    ("--layers", {"default": None, "help": "only layers whose name contains this text (e.g. 'layers.0.')"}),
    ("--embeddings", {"action": "store_true",
                      "help": "also the token embedding table (padded to a product of small factors; a tied "
                              "lm_head is served by the same compressed table); with --layers embed, only it"}),
    ("--activations", {"action": "store_true",
                       "help": "activation-aware: ε is the relative error on the layers' calibration inputs "
                               "(whitened search; every input digit in one core); errors are re-measured on held-back "
                               "windows"}),
    ("--sensitivity", {"action": "store_true",
                       "help": "with --activations and --budget: share the budget by each layer's measured "
                               "sensitivity (loss gradient on its output) as well as its error energy"}),
    ("--calib", {"type": path_arg, "default": None,
                 "help": "--activations: calibration text file (default: gensim's Wikipedia articles, calibration "
                         "split); compress with the same --calib/--samples/--seqlen/--seed"}),
    ("--samples", {"type": int, "default": 32, "help": "--activations: calibration windows (default %(default)s)"}),
    ("--seqlen", {"type": int, "default": 512, "help": "--activations: tokens per window (default %(default)s)"}),
    ("--calib-seed", {"type": int, "default": 0,
                      "help": "--activations: seed of the windows' offsets in the text (compress's --seed; "
                              "default %(default)s)"}),
    ("--generations", {"type": int, "default": 20, "help": "GA generations per layer (default %(default)s)"}),
    ("--population", {"type": int, "default": 16, "help": "GA population per layer (default %(default)s)"}),
    ("--seed", {"type": int, "default": 0, "help": "makes the plan reproducible (default %(default)s)"}),
    ("--workers", {"type": int, "default": None, "help": "Ray workers (default: one per CPU; 0 = in this process)"}),
    ("--address", {"default": None, "help": "join the Ray cluster whose head is at HOST:PORT (or set RAY_ADDRESS)"}),
    ("--out", {"type": path_arg, "required": True, "help": "plan file to write (JSON)"}),
    ("--overwrite", {"action": "store_true", "help": "replace --out if it exists"}),
    ("--json", {"action": "store_true", "help": "print the plan as one JSON object on stdout"}),
]


def add_parser(sub) -> None:
    lay = sub.add_parser("layers", help="search a TT shape for every attention/MLP linear of a model")
    for flag, options in _OPTIONS:
        lay.add_argument(flag, **options)
    lay.set_defaults(run=layers_command)


def layers_command(args: argparse.Namespace) -> tuple[dict, str]:
    from compressors.layer_plans import plan_layers

    if args.out.suffix != ".json":
        raise ArgumentError("out", f"{args.out}: the plan is JSON; name it FILE.json")
    check_outside(args.out, args.model)
    check_writable_file(args.out, "out", args.overwrite)  # before the search, not after it
    if args.sensitivity and not (args.activations and args.budget is not None):
        raise ArgumentError("sensitivity", "needs --activations and --budget")
    for name, default in (("calib", None), ("samples", 32), ("seqlen", 512), ("calib_seed", 0)):
        if getattr(args, name) != default and not args.activations:
            raise ArgumentError(name, "is for --activations (the calibration windows of an activation-aware plan)")
    model, calibration, record = args.model, None, None
    if args.activations:
        from compressors.model_jobs import model_calibration

        model, _, calibration, record = model_calibration(args.model, args.calib, args.samples, args.seqlen,
                                                       args.calib_seed)
    with LazyBar(desc=f"layers {args.format}", unit="search") as bar:
        plan = plan_layers(model, eps=args.eps, fmt=args.format, budget=args.budget, eps_grid=args.eps_grid,
                           layers=args.layers, generations=args.generations, population=args.population,
                           seed=args.seed, workers=args.workers, address=args.address, embeddings=args.embeddings,
                           progress=lambda n, total: bar.open(total).update(n), model_name=args.model,
                           calibration=calibration, sensitivity=args.sensitivity)
        if record is not None:
            plan = replace(plan, calibration={**plan.calibration, **record})
        plan.save(args.out)  # inside: a failed write erases the bar, leaving one error line
    return plan.to_dict(), _plan_table(plan, args.out)


def _plan_table(plan: Plan, out: Path) -> str:
    by_type: dict[str, list[LayerPlan]] = {}
    for rec in plan.layers.values():
        by_type.setdefault(rec.type, []).append(rec)
    held = all(r.held_out_error is not None for r in plan.layers.values())
    ref = "rank factorization" if plan.calibration else "balanced"  # the search's reference shape
    lines = [f"| layer type | layers | dense | searched | {ref} | searched/{ref} | max error |"
             + (" max held-out error |" if held else ""), "|---|---|---|---|---|---|---|" + ("---|" if held else "")]
    for t, recs in by_type.items():
        d, p, b = (sum(getattr(r, k) for r in recs) for k in ("dense_params", "params", "balanced_params"))
        lines.append(f"| {t} | {len(recs)} | {d:,} | {p:,} | {b:,} | {p / b:.3f} | "
                     f"{max(r.rel_error for r in recs):.4f} |"
                     + (f" {max(r.held_out_error for r in recs):.4f} |" if held else ""))
    s = plan.summary
    budget = "" if s.budget is None else f" (budget {s.budget:,}: {'fits' if s.fits_budget else 'MISSED'})"
    space = "; errors are on the layers' calibration inputs" if plan.calibration else ""
    lines.append(f"\nTT parameters {s.params:,} of {s.dense_params:,} dense ({s.compression:.2f}×), "
                 f"{ref} shapes {s.balanced_params:,}{budget}{space}; plan written to {out}")
    return "\n".join(lines)
