"""Saten vs TT-only vs plain SVD on SmolLM2-135M at matched parameter budgets: perplexity
before and after the same short fine-tune in compressed space.

    python benchmarks/saten.py [--fractions 0.75] [--density 0.25] [--steps 60]

Shapes: the searched per-layer TT shapes in results/layer_shapes-smollm2-<format>.jsonl (run
benchmarks/layer_shapes.py first); each method gets the same budget over the decoder linears
(see _budgets.py).  Fine-tune: next-token loss on the gensim Wikipedia calibration articles,
AdamW, same steps / learning rate / windows for every method; only the compressed layers
train.  Perplexity: non-overlapping 512-token windows of the held-out articles.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from _budgets import run_grid
from _report import RESULTS, append_row, load_rows, machine, table
from layer_shapes import found_layers

import compressors
from compressors import load_model
from compressors.corpus import calibration_windows, wikipedia
from compressors.lm_metrics import perplexity

JSONL = RESULTS / "saten.jsonl"
MARKDOWN = Path(__file__).parent / "saten.md"
METHODS = ("saten", "saten-2:4", "tt", "svd")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fractions", nargs="+", type=float, default=[0.75])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--format", default="ttm", choices=["ttm", "tt"])
    p.add_argument("--density", type=float, default=0.25, help="Saten top-K residual density")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--windows", type=int, default=20, help="perplexity windows of 512 tokens")
    p.add_argument("--fresh", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(2)
    if args.fresh and JSONL.exists():
        JSONL.unlink()
    found = found_layers("smollm2", args.format)
    if not found:
        sys.exit("no searched shapes: run benchmarks/layer_shapes.py --model smollm2 first")
    dense, tok = load_model("smollm2")
    train = calibration_windows(tok, wikipedia("calibration"), args.steps, args.seqlen, seed=1)
    text = wikipedia("evaluation")
    done = {(r["method"], r["fraction"]) for r in load_rows(JSONL)}
    if ("dense", 1.0) not in done:
        row = {"method": "dense", "fraction": 1.0, **perplexity(dense, tok, text, 512, args.windows)}
        append_row(JSONL, {**row, "machine": machine()})
    ft = compressors.FinetuneConfig(steps=args.steps, lr=args.lr)

    def score(model) -> dict:
        before = perplexity(model, tok, text, 512, args.windows)["perplexity"]
        tuned = compressors.finetune(model, train, ft)
        after = perplexity(model, tok, text, 512, args.windows)
        return {"perplexity_before": before, "perplexity": after["perplexity"], "finetune": tuned,
                "windows": after["windows"]}

    run_grid(JSONL, dense, args.fractions, args.methods, found, args.format, args.density, score)
    text = report_markdown()
    MARKDOWN.write_text(text + "\n")
    print(text)


def report_markdown() -> str:
    rows = load_rows(JSONL)
    dense = next(r for r in rows if r["method"] == "dense")
    body = [["dense", "—", "—", "—", dense["perplexity"], "—"]]
    for fraction in sorted({r["fraction"] for r in rows if r["method"] != "dense"}, reverse=True):
        for method in METHODS:
            r = next((x for x in rows if x["method"] == method and x["fraction"] == fraction), None)
            if r is None:
                continue
            if "error" in r:
                body.append([f"{method} @ {fraction:g}", "does not fit", "", "", "", r["error"]])
                continue
            label = method + (f" (density {r['density']:g})" if r.get("density") else "")
            eps = f"ε {r['eps_min']:g}–{r['eps_max']:g}" if "eps_mean" in r else "—"
            share = f"{r['params']:,} / {r['dense']:,} = {r['params'] / r['dense']:.3f}"
            body.append([f"{label} @ {fraction:g}", share,
                         eps, r["perplexity_before"], r["perplexity"],
                         f"{r['finetune']['loss_start']:.3f} → {r['finetune']['loss_end']:.3f}"])
    ft = next((r["finetune"] for r in rows if "finetune" in r), {})
    return "\n".join([
        "# Saten vs TT-only vs SVD on SmolLM2-135M at matched parameters", "",
        f"Printed by `benchmarks/saten.py` (rows in `results/saten.jsonl`) on {dense['machine']}, torch "
        f"{torch.__version__}. Budget = fraction × the dense parameters of the 210 decoder linears; every method "
        "stays within it (its exact count is shown; residual values count one parameter each, indices are "
        "not parameters — see the bytes in the jsonl). TT shapes: searched per layer "
        "(`benchmarks/layer_shapes.py`), per-layer ε chosen from the searched grid to fit the budget. "
        f"Fine-tune: {ft.get('steps', '?')} AdamW steps (lr {ft.get('lr', '?')}) of next-token loss on "
        "windows of the gensim Wikipedia calibration articles, compressed layers only, the same for every "
        f"method. Perplexity: {dense['windows']} × 512-token windows of the held-out articles.", "",
        table(["method @ budget", "parameters (replaced layers)", "TT ε", "perplexity before fine-tune",
               "perplexity after", "train loss"], body), ""])


if __name__ == "__main__":
    main()
