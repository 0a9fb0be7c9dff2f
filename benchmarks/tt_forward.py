"""CPU forward time of TT layers (TT-matrix and plain TT) vs dense nn.Linear on SmolLM2-135M weights.

    python benchmarks/tt_forward.py [--targets 2 4 8 16] [--layer 10] [--threads 2] [--repeats 30]
    python benchmarks/tt_forward.py --quick     # smoke run: up_proj, target 4×, four families (~20 s)

For each weight (up_proj 1536×576, down_proj 576×1536, q_proj 576×576 of one decoder layer),
shape family and target compression ratio CR (dense params / TT params), ε is bisected so the
layer has the fewest TT parameters that still meet the target (params ≤ dense / CR).  Timing:
fp32, a batch of 512 tokens, ``torch.inference_mode``, eval mode (the TT-matrix's merged blocks
and the plain TT's A, B are cached, as at inference), warm-up then the median of ``--repeats``,
dense and TT calls interleaved so load from other processes hits both alike.  Rows are appended
to results/tt_forward.jsonl as they finish (a full run first drops rows of earlier --quick runs;
--fresh drops all); the markdown is rewritten from the rows of this mode and printed.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from _report import RESULTS, append_row, load_rows, machine, table
from torch import nn

from compressors.tt_linear import TTLinear, TTMatrixLinear, eps_tt_svd
from shapesearch.matrix.formats import balanced_factors, layer_tensor

JSONL = RESULTS / "tt_forward.jsonl"
MARKDOWN = Path(__file__).parent / "tt_forward.md"
LAYERS = ("mlp.up_proj", "mlp.down_proj", "self_attn.q_proj")
BATCH = 512


def families(out_f: int, in_f: int) -> dict[str, tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """name → (format, out_modes, in_modes).  TT-matrix d = 2 with m_2 = n_1 = s costs
    s × params multiply-adds (s = 1 is a rank-r factorisation); d = 3 balanced; plain TT p = q = 2."""
    fams = {}
    for s in (1, 2, 4):
        if out_f % s == 0 and in_f % s == 0:
            fams[f"ttm d=2 s={s}"] = ("ttm", (out_f // s, s), (s, in_f // s))
    fams["ttm d=3"] = ("ttm", balanced_factors(out_f, 3), balanced_factors(in_f, 3))
    fams["tt 2+2"] = ("tt", balanced_factors(out_f, 2), balanced_factors(in_f, 2))
    return fams


def build(weight: torch.Tensor, fmt: str, out_modes, in_modes, eps: float) -> nn.Module:
    if fmt == "ttm":
        return TTMatrixLinear.from_weight(weight, out_modes, in_modes, eps)
    return TTLinear.from_weight(weight, in_modes, out_modes, eps)


def tt_params(module: nn.Module) -> int:
    return sum(c.numel() for c in module.cores)


def fit(weight: torch.Tensor, fmt: str, out_modes, in_modes, budget: int, iters: int) -> tuple[nn.Module, float]:
    """Smallest ε (to bisection precision) whose TT has ≤ ``budget`` parameters.

    The bisection counts parameters with the fast Gram-matrix TT-SVD; the layer is then built
    with the SVD one (as ``from_linear`` does), nudging ε up in the rare case its ranks differ."""
    w = weight.detach().double().numpy()
    tensor = layer_tensor(w, fmt, out_modes, in_modes)

    def params(eps: float) -> int:
        return eps_tt_svd(tensor, eps, method="gram").params

    lo, hi = 0.0, 1.0
    while params(hi) > budget and hi < 64:  # even rank 1 everywhere may not fit: widen
        lo, hi = hi, 2 * hi
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if params(mid) <= budget else (mid, hi)
    layer = build(weight, fmt, out_modes, in_modes, hi)
    while tt_params(layer) > budget and hi < 64:
        hi *= 1.01
        layer = build(weight, fmt, out_modes, in_modes, hi)
    return layer, hi


def timed(dense: nn.Module, tt: nn.Module, x: torch.Tensor, repeats: int, warmup: int = 3) -> tuple[list, list]:
    """Seconds per forward of each, measured alternately."""
    ts_d, ts_t = [], []
    with torch.inference_mode():
        for _ in range(warmup):
            dense(x), tt(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            dense(x)
            t1 = time.perf_counter()
            tt(x)
            t2 = time.perf_counter()
            ts_d.append(t1 - t0)
            ts_t.append(t2 - t1)
    return ts_d, ts_t


def real_weights(layer: int) -> tuple[dict[str, nn.Linear], str]:
    """The three projections of decoder layer ``layer``, or random ones if the model fails to load."""
    try:
        from compressors import load_model

        model, _ = load_model("smollm2")
        block = model.model.layers[layer]
        return {name: getattr(getattr(block, name.split(".")[0]), name.split(".")[1]) for name in LAYERS}, \
            f"SmolLM2-135M layer {layer}"
    except Exception as exc:  # noqa: BLE001 - any failure falls back, and says so
        print(f"NOTE: SmolLM2-135M did not load ({type(exc).__name__}: {exc}); timing random N(0, 0.02²) "
              "weights instead: speeds are valid, errors are not representative", file=sys.stderr)
        g = torch.Generator().manual_seed(0)
        shapes = {"mlp.up_proj": (1536, 576), "mlp.down_proj": (576, 1536), "self_attn.q_proj": (576, 576)}
        out = {}
        for name, (o, i) in shapes.items():
            lin = nn.Linear(i, o, bias=False)
            with torch.no_grad():
                lin.weight.copy_(0.02 * torch.randn(o, i, generator=g))
            out[name] = lin
        return out, "random N(0, 0.02²) (SmolLM2-135M failed to load)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", nargs="+", type=float, default=[2, 4, 8, 16], help="compression ratios")
    p.add_argument("--layer", type=int, default=10, help="decoder layer whose projections are timed")
    p.add_argument("--layers", nargs="+", default=list(LAYERS), choices=list(LAYERS))
    p.add_argument("--families", nargs="+", default=None, help="subset of family names (default: all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--iters", type=int, default=10, help="ε bisection steps")
    p.add_argument("--quick", action="store_true",
                   help="up_proj, target 4×, families s=1, s=2, d=3 and plain TT, 25 repeats, 7 bisection steps")
    p.add_argument("--fresh", action="store_true", help="drop all earlier rows first")
    args = p.parse_args()
    if args.quick:
        args.targets, args.layers, args.repeats, args.iters = [4.0], ["mlp.up_proj"], 25, 7
        args.families = args.families or ["ttm d=2 s=1", "ttm d=2 s=2", "ttm d=3", "tt 2+2"]
    torch.set_num_threads(args.threads)
    rows = [] if args.fresh else load_rows(JSONL)
    if not args.quick:
        rows = [r for r in rows if not r.get("quick")]
    JSONL.parent.mkdir(parents=True, exist_ok=True)
    JSONL.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = {(r["layer"], r["family"], r["target_cr"], r["threads"]) for r in rows
            if r.get("quick", False) == args.quick}
    linears, source = real_weights(args.layer)
    for name in args.layers:
        lin = linears[name]
        weight = lin.weight.detach().float()
        dense = nn.Linear(lin.in_features, lin.out_features, bias=False)
        with torch.no_grad():
            dense.weight.copy_(weight)
        dense.eval()
        n_dense = weight.numel()
        x = torch.randn(BATCH, lin.in_features, generator=torch.Generator().manual_seed(0))
        fams = families(*weight.shape)
        for fam, (fmt, out_modes, in_modes) in fams.items():
            if args.families and fam not in args.families:
                continue
            for target in args.targets:
                if (name, fam, target, args.threads) in done:
                    continue
                print(f"  {name} {fam} {target:g}× ...", file=sys.stderr, flush=True)
                t0 = time.perf_counter()
                tt, eps = fit(weight, fmt, out_modes, in_modes, math.floor(n_dense / target), args.iters)
                fit_s = time.perf_counter() - t0
                tt.eval()
                with torch.no_grad():
                    rel = (torch.linalg.norm(tt.weight().double() - weight.double())
                           / torch.linalg.norm(weight.double())).item()
                ts_d, ts_t = timed(dense, tt, x, args.repeats)
                dense_ms, tt_ms = 1e3 * statistics.median(ts_d), 1e3 * statistics.median(ts_t)
                plan = str(tt.plan) if isinstance(tt, TTMatrixLinear) else "(x·A)·B"
                row = {"layer": name, "shape": list(weight.shape), "format": fmt, "family": fam,
                       "out_modes": list(tt.out_modes), "in_modes": list(tt.in_modes), "ranks": list(tt.ranks),
                       "plan": plan, "eps": eps, "target_cr": target, "params": tt_params(tt),
                       "dense_params": n_dense, "cr": n_dense / tt_params(tt), "rel_error": rel,
                       "macs": tt.macs_per_token, "dense_macs": n_dense, "dense_ms": dense_ms, "tt_ms": tt_ms,
                       "speedup": dense_ms / tt_ms, "dense_min_ms": 1e3 * min(ts_d), "tt_min_ms": 1e3 * min(ts_t),
                       "batch": BATCH, "threads": args.threads,
                       "repeats": args.repeats, "fit_seconds": fit_s, "weights": source, "quick": args.quick,
                       "torch": torch.__version__, "machine": machine()}
                append_row(JSONL, row)
                print(json.dumps({k: row[k] for k in ("layer", "family", "ranks", "plan", "cr", "rel_error",
                                                      "dense_ms", "tt_ms", "speedup")}), flush=True)
    text = report_markdown(args.quick)
    MARKDOWN.write_text(text + "\n")
    print(text)


def report_markdown(quick: bool) -> str:
    rows = [r for r in load_rows(JSONL) if r.get("quick", False) == quick]
    if not rows:
        return "# TT forward speed\n\nNo rows yet."
    rows.sort(key=lambda r: (r["threads"], LAYERS.index(r["layer"]), r["target_cr"], r["family"]))
    body = [[f"{r['layer']} {r['shape'][0]}×{r['shape'][1]}", r["family"],
             f"{tuple(r['out_modes'])}×{tuple(r['in_modes'])}", "-".join(map(str, r["ranks"])), r["plan"],
             r["params"], r["cr"], r["rel_error"], r["macs"] / r["dense_macs"], r["threads"], r["dense_ms"],
             r["tt_ms"], r["speedup"]] for r in rows]
    first = rows[0]
    return "\n".join([
        "# TT forward speed vs dense nn.Linear" + (" (--quick smoke run)" if quick else ""), "",
        f"Printed by `benchmarks/tt_forward.py` (rows in `results/tt_forward.jsonl`) on {first['machine']}, "
        f"torch {first['torch']}. Weights: {first['weights']}. fp32, batch "
        f"{first['batch']} tokens, `torch.inference_mode`, eval mode (derived TT matrices cached), median of "
        f"{first['repeats']} alternating dense/TT calls after warm-up. ε bisected to the fewest TT parameters "
        "within dense / target CR. Modes: out × in (plain TT `tt`: Wᵀ tensorized as in-modes then out-modes). "
        "Plan: the TT-matrix contraction (ltr/rtl = first/last core first; `a+b` = cores merged into blocks). "
        "Error: ‖W − W_TT‖_F / ‖W‖_F. MACs / dense: multiply-adds per token of the TT forward over the "
        "dense layer's. Speed-up = dense ms / TT ms.", "",
        table(["layer", "family", "modes", "ranks", "plan", "params", "CR", "rel. error", "MACs / dense",
               "threads", "dense ms", "TT ms", "speed-up"], body), ""])


if __name__ == "__main__":
    main()
