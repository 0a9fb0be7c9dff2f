"""``shapesearch compress`` and ``shapesearch eval``: model compression from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import UsageError

METHODS = ("flat-llm", "svd", "svd-llm")


def add_parsers(sub) -> None:
    comp = sub.add_parser("compress", help="compress a causal LM (FLAT-LLM, or a baseline at matched size)")
    comp.add_argument("compressor", choices=["flat-llm"], help="the compressor family")
    comp.add_argument("--model", required=True, help="smollm2, a model directory, or a .gguf file")
    comp.add_argument("--ratio", type=float, default=0.2,
                      help="fraction of decoder-linear parameters removed (default %(default)s)")
    comp.add_argument("--method", choices=METHODS, default="flat-llm",
                      help="flat-llm, or svd / svd-llm at FLAT-LLM's parameter count (default %(default)s)")
    comp.add_argument("--uniform", action="store_true", help="same keep ratio in every layer (no IPRS)")
    comp.add_argument("--calib", type=Path, default=None,
                      help="calibration text file (default: gensim's Wikipedia articles, calibration split)")
    comp.add_argument("--samples", type=int, default=32, help="calibration windows (default %(default)s)")
    comp.add_argument("--seqlen", type=int, default=512, help="tokens per window (default %(default)s)")
    comp.add_argument("--seed", type=int, default=0)
    comp.add_argument("--out", type=Path, required=True, help="directory for the compressed model")
    comp.add_argument("--overwrite", action="store_true")
    comp.add_argument("--json", action="store_true")
    ev = sub.add_parser("eval", help="perplexity and CPU speed of a model")
    ev.add_argument("--model", required=True, help="smollm2, a model directory, or a .gguf file")
    ev.add_argument("--text", type=Path, default=None,
                    help="evaluation text (default: gensim's Wikipedia articles, evaluation split)")
    ev.add_argument("--window", type=int, default=512, help="tokens per perplexity window (default %(default)s)")
    ev.add_argument("--max-windows", type=int, default=None)
    ev.add_argument("--no-speed", action="store_true", help="skip the speed measurement")
    ev.add_argument("--json", action="store_true")


def compress_command(args: argparse.Namespace) -> tuple[dict, str]:
    from tqdm import tqdm

    import compressors
    from compressors.architectures import check_supported
    from compressors.models import load_model
    from compressors.text import calibration_windows, read_text

    if not 0.0 < args.ratio < 1.0:
        raise UsageError(f"--ratio must be in (0, 1) (fraction of decoder-linear parameters removed), "
                         f"got {args.ratio}")
    if args.samples < 1 or args.seqlen < 2:
        raise UsageError("--samples must be >= 1 and --seqlen >= 2")
    if args.out.exists() and any(args.out.iterdir()) and not args.overwrite:
        raise UsageError(f"--out {args.out} is not empty; pick another directory or pass --overwrite")
    text = read_text(args.calib, "calibration")
    model, tok = load_model(args.model)
    check_supported(model)
    windows = calibration_windows(tok, text, args.samples, args.seqlen, args.seed)
    if args.method == "flat-llm":
        config = compressors.FlatLLMConfig(ratio=args.ratio, uniform=args.uniform)
    else:
        config = compressors.SVDConfig(ratio=args.ratio, whiten=args.method == "svd-llm")
    bar = tqdm(total=model.config.num_hidden_layers, desc=f"{args.method} {args.ratio:g}", unit="layer",
               file=sys.stderr)
    try:
        report = compressors.compress(model, config, calibration=windows, progress=lambda i: bar.update(1))
    finally:
        bar.close()
    compressors.save(model, args.out, tok)
    report.update(model=args.model, out=str(args.out), seqlen=args.seqlen)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    rows = [
        ("method", f"{report['method']} (ratio {args.ratio:g} of decoder-linear parameters)"),
        ("decoder linears", f"{report['decoder_linear_params_before']:,} → "
                            f"{report['decoder_linear_params_after']:,} "
                            f"(−{100 * report['decoder_linear_removed']:.1f} %)"),
        ("whole model", f"{report['params_before']:,} → {report['params_after']:,} "
                        f"(−{100 * report['total_removed']:.1f} %)"),
        ("calibration", f"{report['calibration_windows']} × {args.seqlen} tokens, "
                        f"{report['calibration_seconds']:.1f} s"),
        ("saved", str(args.out)),
    ]
    return report, _table(rows)


def eval_command(args: argparse.Namespace) -> tuple[dict, str]:
    from compressors.evaluation import perplexity, speed
    from compressors.models import load_model
    from compressors.text import read_text

    if args.window < 2:
        raise UsageError("--window must be at least 2 tokens")
    text = read_text(args.text, "evaluation")
    model, tok = load_model(args.model)
    try:
        result = {"model": args.model, **perplexity(model, tok, text, args.window, args.max_windows)}
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if not args.no_speed:
        result.update(speed(model, tok, text))
    rows = [("perplexity", f"{result['perplexity']:.3f} ({result['windows']} windows × {result['window']} "
                           f"tokens, {result['tokens']} predicted)")]
    if not args.no_speed:
        rows += [("prefill", f"{result['prefill_tokens_per_s']:.0f} tokens/s"),
                 ("decode", f"{result['decode_tokens_per_s']:.1f} tokens/s (batch {result['batch']})")]
    return result, _table(rows)


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
