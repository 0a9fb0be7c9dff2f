"""FLAT-LLM on SmolLM2-135M against uniform allocation, plain SVD and SVD-LLM at matched
decoder-linear parameters; perplexity, calibration time, CPU prefill/decode speed vs dense.

    python benchmarks/flat_llm.py [--ratios 0.1 0.2 0.3 0.5] [--samples 32] [--windows 40]

Calibration: gensim Wikipedia, calibration articles; evaluation: the held-out articles
(disjoint), non-overlapping windows.  Rows are appended to results/flat_llm.jsonl as they
finish (rows already there are kept); the markdown is rewritten from all rows and printed.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
from _report import RESULTS, append_row, load_rows, machine, table

import compressors
from compressors.corpus import calibration_windows, wikipedia
from compressors.lm_metrics import perplexity, speed

JSONL = RESULTS / "flat_llm.jsonl"
MARKDOWN = Path(__file__).parent / "flat_llm.md"
METHODS = {"flat-llm": lambda r: compressors.FlatLLMConfig(r),
           "uniform": lambda r: compressors.FlatLLMConfig(r, uniform=True),
           "svd": lambda r: compressors.SVDConfig(r),
           "svd-llm": lambda r: compressors.SVDLLMConfig(r)}


def measure(model, tok, text, windows: int) -> dict:
    out = perplexity(model, tok, text, window=512, max_windows=windows)
    out.update(speed(model, tok, text))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratios", nargs="+", type=float, default=[0.1, 0.2, 0.3, 0.5])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--windows", type=int, default=40, help="perplexity windows of 512 tokens")
    p.add_argument("--fresh", action="store_true")
    args = p.parse_args()
    if args.fresh and JSONL.exists():
        JSONL.unlink()
    done = {(r["method"], r["ratio"]) for r in load_rows(JSONL)}
    dense, tok = compressors.load_model("smollm2")
    calib = calibration_windows(tok, wikipedia("calibration"), args.samples, args.seqlen)
    text = wikipedia("evaluation")
    if ("dense", 0.0) not in done:
        row = {"method": "dense", "ratio": 0.0, **measure(dense, tok, text, args.windows)}
        append_row(JSONL, {**row, "machine": machine()})
        print(json.dumps(row), flush=True)
    for ratio in args.ratios:
        for method in args.methods:
            if (method, ratio) in done:
                continue
            print(f"  {method} {ratio} ...", file=sys.stderr, flush=True)
            model = copy.deepcopy(dense)
            t0 = time.perf_counter()
            report = compressors.compress(model, METHODS[method](ratio), calibration=calib)
            wall = time.perf_counter() - t0
            row = {"method": method, "ratio": ratio, "calibration_seconds": report["calibration_seconds"],
                   "compress_seconds": wall, "calibration_tokens": report["calibration_tokens"],
                   **{k: report[k] for k in ("decoder_linear_params_after", "decoder_linear_removed",
                                             "params_after", "total_removed")},
                   **measure(model, tok, text, args.windows)}
            append_row(JSONL, {**row, "machine": machine()})
            print(json.dumps(row), flush=True)
            del model
    text = report_markdown()
    MARKDOWN.write_text(text + "\n")
    print(text)


def report_markdown() -> str:
    rows = load_rows(JSONL)
    dense = next(r for r in rows if r["method"] == "dense")
    body = [["dense", "—", "—", dense["perplexity"], "—", 1.0, 1.0]]
    for ratio in sorted({r["ratio"] for r in rows if r["method"] != "dense"}):
        for method in METHODS:
            r = next((x for x in rows if x["method"] == method and x["ratio"] == ratio), None)
            if r:
                body.append([f"{method} @ {ratio:g}", f"{100 * r['decoder_linear_removed']:.1f} %",
                             f"{100 * r['total_removed']:.1f} %", r["perplexity"], r["calibration_seconds"],
                             r["prefill_tokens_per_s"] / dense["prefill_tokens_per_s"],
                             r["decode_tokens_per_s"] / dense["decode_tokens_per_s"]])
    return "\n".join([
        "# FLAT-LLM on SmolLM2-135M", "",
        "Printed by `benchmarks/flat_llm.py` (rows in `results/flat_llm.jsonl`) on "
        f"{rows[0]['machine']}, torch {torch.__version__}, {dense['threads']} threads. "
        "Dense = the Q4_1 GGUF weights dequantized to fp32. Calibration: "
        f"{rows[-1].get('calibration_tokens', '?')} tokens of the gensim Wikipedia calibration articles; "
        f"perplexity: {dense['windows']} non-overlapping windows of {dense['window']} tokens of the held-out "
        f"articles ({dense['tokens']} predicted tokens). Speed: batch {dense['batch']}, prompt "
        f"{dense['prompt_tokens']} tokens, {dense['new_tokens']} greedy new tokens, median of 3. "
        "SVD and SVD-LLM get FLAT-LLM's decoder-linear parameter count at the same ratio (never more).", "",
        table(["method", "decoder linears removed", "whole model removed", "perplexity", "calibration s",
               "prefill × dense", "decode × dense"], body), ""])


if __name__ == "__main__":
    main()
