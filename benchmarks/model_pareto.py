"""Perplexity against parameters on SmolLM2-135M: FLAT-LLM, SVD-LLM, TT / Saten with
weight-space vs activation-aware shapes and energy vs sensitivity budgets, and a recipe.

    python benchmarks/model_pareto.py [--fractions 0.9 0.8 0.7 0.6 0.5] [--methods …] [--finetune 0.75]

Budget: the fraction of SmolLM2's decoder-linear parameters kept (FLAT-LLM at ratio 1 − f;
SVD-LLM at FLAT-LLM's count, its own rule; TT / Saten plans fit f × the dense count, a
Saten residual of density d taking d of it).  Calibration: 32 windows of 512 tokens of the
gensim Wikipedia calibration articles (as benchmarks/flat_llm.py); an activation-aware plan
fits on the first 24 and measures its errors on the last 8.  Perplexity: 512-token windows of
the held-out articles.  Weight-space shapes: the committed per-layer search of every linear
(results/layer_shapes-smollm2-ttm.jsonl, benchmarks/layer_shapes.py); activation-aware
shapes: searched here, once for every budget, at the ε grid below.  ``--finetune F``: the
same short fine-tune for the methods at budget F: next-token loss on windows of the first 85 %
of the calibration text, every decoder linear trained, at each learning rate of ``--lrs``; the
model kept is the one with the lowest perplexity on the last 15 % (the dev text, never the
held-out articles); ``--distill``: the loss is KL to the dense model's next-token distribution;
``--schedule cosine --warmup W``: the learning rate rises over the share W of the steps, then
decays along a cosine; ``--balance``: every TT layer's cores rescaled to equal norms first.
Rows are appended to results/model_pareto.jsonl as they finish.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _report import RESULTS, append_row, load_rows, machine, main_with_report, table
from layer_shapes import found_layers

import compressors
from compressors import FinetuneConfig, FlatLLMConfig, SatenConfig, SVDLLMConfig, TTConfig
from compressors.architectures import decoder_linear_params, decoder_weight_params, total_params
from compressors.corpus import calibration_windows, wikipedia
from compressors.finetune import SCHEDULES
from compressors.layer_plans import LayerOptions, PlanRequest, search_options
from compressors.lm_metrics import perplexity, speed
from compressors.targets import layer_type, target_linears

JSONL = RESULTS / "model_pareto.jsonl"
MARKDOWN = Path(__file__).parent / "model_pareto.md"
GRID = (0.04, 0.06, 0.08, 0.12, 0.16, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6)  # activation-relative ε choices per layer
DENSITY = 0.05  # the Saten rows' residual: 5 % of each layer's entries
# the "alternating" Saten rows' TT / sparse refits: fixed from the activation errors of single
# layers (most of the gain comes in the first few) and the compression time, not from perplexity
ALTERNATIONS = 3
RECIPE_RATIO = 0.1  # the first recipe's FLAT-LLM step; activation-aware Saten takes the rest of the budget
# the second recipe's FLAT-LLM step removes this share of what is removed, Saten the rest. Fixed
# once, before any recipe ran at 60 %, from FLAT-LLM's and Saten's own curves (FLAT-LLM loses
# less per parameter removed deep into a budget, Saten less at first), not tuned on the rows.
RECIPE_SHARE = 0.75
DEV_SHARE = 0.15  # the tail of the calibration text that picks the fine-tune's learning rate
DEV_WINDOWS = 8
ONE_EPS = 0.2  # the ε of the timed one-ε activation-aware search


def weight_space_options(model: torch.nn.Module) -> LayerOptions:
    """The committed weight-space search of every linear, as the options plans pick from."""
    linears = target_linears(model)
    return LayerOptions(found=found_layers("smollm2", "ttm"),
                        norms2={n: float(m.weight.detach().double().pow(2).sum()) for n, m in linears.items()},
                        layer_types={n: layer_type(n) for n in linears}, biases=dict.fromkeys(linears, False),
                        model_name="smollm2")


def methods(weight: LayerOptions, aware: Callable[[], LayerOptions], grid: tuple[float, ...]) -> dict[str, Callable]:
    """name → f ↦ the config (or recipe) that keeps the fraction f of the decoder linears;
    ``aware()`` gives the activation-aware options (searched when a row first needs them).
    "dense inputs": each layer whitened by the dense model's inputs (``sequential=False``);
    "sequential": by the inputs it gets once the layers before it are compressed (the default)."""
    def saten(f: float, sequential: bool, alternations: int = 0) -> SatenConfig:
        return SatenConfig(aware().plan(f - DENSITY, sensitivity=True), density=DENSITY, sequential=sequential,
                           alternations=alternations)

    def recipe(f: float, ratio: float, sequential: bool) -> list:
        # Saten's budget as a fraction of what FLAT-LLM left, its residual included
        rest = (f - DENSITY * (1 - ratio)) / (1 - ratio) - 1e-9
        return [FlatLLMConfig(ratio),
                SatenConfig(PlanRequest(budget=rest, activations=True, sensitivity=True, eps_grid=grid, generations=2,
                                        population=4, workers=2), density=DENSITY, sequential=sequential)]

    return {
        "flat-llm": lambda f: FlatLLMConfig(1 - f),
        "svd-llm": lambda f: SVDLLMConfig(1 - f),
        "tt weight-space": lambda f: TTConfig(weight.plan(f)),
        "tt activation-aware": lambda f: TTConfig(aware().plan(f), sequential=False),
        "tt activation-aware, sensitivity": lambda f: TTConfig(aware().plan(f, sensitivity=True), sequential=False),
        "tt activation-aware, sensitivity, sequential": lambda f: TTConfig(aware().plan(f, sensitivity=True)),
        "saten weight-space": lambda f: SatenConfig(weight.plan(f - DENSITY), density=DENSITY),
        "saten activation-aware, sensitivity": lambda f: saten(f, False),
        "saten activation-aware, sensitivity, sequential": lambda f: saten(f, True),
        "saten activation-aware, sensitivity, sequential, alternating": lambda f: saten(f, True, ALTERNATIONS),
        "recipe flat-llm → saten activation-aware": lambda f: recipe(f, RECIPE_RATIO, False),
        "recipe flat-llm 3/4 → saten activation-aware, sequential": lambda f: recipe(f, RECIPE_SHARE * (1 - f), True),
    }


def state_bytes(model: torch.nn.Module) -> int:
    """Bytes of the saved tensors (parameters and index buffers; a tied table once)."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() not in seen and not t.dtype.is_complex:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def finetune_picked_on_dev(model: torch.nn.Module, train: list[torch.Tensor], dev: Callable[[torch.nn.Module], float],
                           steps: int, lrs: list[float], schedule: dict,
                           teacher: torch.nn.Module | None = None) -> dict:
    """Fine-tune ``model`` once per learning rate from the same start; keep the lowest ``dev``.
    With a ``teacher`` the loss is distillation (KL to its next-token distribution), else next-token;
    ``schedule``: FinetuneConfig's schedule, warmup and balance."""
    start, trials, best = copy.deepcopy(model.state_dict()), [], None
    config = {"steps": steps, "train": "decoder-linears", "distill": teacher is not None, **schedule}
    for lr in lrs:
        model.load_state_dict(start)
        out = compressors.finetune(model, train, FinetuneConfig(lr=lr, **config), teacher=teacher, progress=False)
        trials.append({**out, "dev_perplexity": dev(model)})
        if best is None or trials[-1]["dev_perplexity"] < best[0]:
            best = (trials[-1]["dev_perplexity"], lr, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    return {"lr": best[1], "trials": trials}


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(2)
    dense, tok = compressors.load_model("smollm2")
    calib_text = wikipedia("calibration")
    calib = calibration_windows(tok, calib_text, args.samples, 512)
    text = wikipedia("evaluation")
    cut = round((1 - DEV_SHARE) * len(calib_text))
    rows = load_rows(JSONL)
    done = {(r["method"], r["fraction"], r.get("finetune_steps", 0), r.get("lr_picked_on"), finetune_kind(r),
             tried_lrs(r)) for r in rows}
    linear_dense = decoder_linear_params(dense)

    def measure(model: torch.nn.Module, with_speed: bool = True) -> dict:
        ppl = perplexity(model, tok, text, 512, args.windows)
        out = {"perplexity": ppl["perplexity"], "windows": ppl["windows"],
               "decoder_fraction": decoder_weight_params(model) / linear_dense, "params": total_params(model),
               "bytes": state_bytes(model)}
        if args.speed and with_speed:
            s = speed(model, tok, text)
            out.update(prefill_tokens_per_s=s["prefill_tokens_per_s"], decode_tokens_per_s=s["decode_tokens_per_s"])
        return out

    # speed is a ratio to the dense model on the same machine: measure it here if this machine has none
    if not any(r["method"] == "dense" and r["machine"] == machine() for r in rows):
        append_row(JSONL, {"method": "dense", "fraction": 1.0, **measure(dense), "machine": machine()})
    aware = functools.cache(lambda: search_activation_aware(dense, calib, rows))
    table_of = methods(weight_space_options(dense), aware, GRID)
    train = calibration_windows(tok, calib_text[:cut], args.steps, 256, seed=1)

    def dev(model: torch.nn.Module) -> float:
        return perplexity(model, tok, calib_text[cut:], 512, DEV_WINDOWS)["perplexity"]

    if not any(r["method"] == "dense, dev text" for r in rows):
        append_row(JSONL, {"method": "dense, dev text", "fraction": None, "perplexity": dev(dense),
                           "windows": DEV_WINDOWS, "machine": machine()})
    schedule = {"schedule": args.schedule, "warmup": args.warmup, "balance": args.balance}
    jobs = [(f, m, args.steps) for f in args.finetune for m in args.finetune_methods]
    jobs += [(f, m, 0) for f in args.fractions for m in args.methods]
    for fraction, method, steps in jobs:
        kind = kind_label("distillation" if args.distill else "next-token", **schedule) if steps else None
        if (method, fraction, steps, "dev" if steps else None, kind, tuple(args.lrs) if steps else ()) in done \
                and not args.rerun:
            continue
        print(f"  {method} @ {fraction} ({steps} fine-tune steps) ...", file=sys.stderr, flush=True)
        model = copy.deepcopy(dense)
        config = table_of[method](fraction)  # the first activation-aware config runs the search: not timed here
        start = time.perf_counter()
        report = compressors.compress(model, config, calibration=calib)
        row = {"method": method, "fraction": fraction, "finetune_steps": steps,
               "compress_seconds": time.perf_counter() - start, **measure(model, with_speed=not steps)}
        if "steps" in report:
            row["steps"] = [{k: s.get(k) for k in ("method", "decoder_linear_params_now", "plan_seconds")}
                            for s in report["steps"]]
        if steps:
            row.update(perplexity_before_finetune=row["perplexity"], lr_picked_on="dev",
                       finetune=finetune_picked_on_dev(model, train, dev, steps, args.lrs, schedule,
                                                       teacher=dense if args.distill else None))
            row["perplexity"] = perplexity(model, tok, text, 512, args.windows)["perplexity"]
        append_row(JSONL, {**row, "machine": machine()})
        print(json.dumps(row), flush=True)
    # timed once per machine: the "≤ 5 min here" depends on the CPU
    if args.time_search or not any(r["method"] == "activation-aware search, one ε" and r["machine"] == machine()
                                   for r in rows):
        start = time.perf_counter()
        one = search_options(dense, (ONE_EPS,), "ttm", calibration=calib, sensitivity=True, workers=2,
                             model_name="smollm2")
        append_row(JSONL, {"method": "activation-aware search, one ε", "fraction": None, "grid": [ONE_EPS],
                           "seconds": time.perf_counter() - start, "layers": len(one.found), "machine": machine()})


def search_activation_aware(dense: torch.nn.Module, calib: list[torch.Tensor], rows: list[dict]) -> LayerOptions:
    """The activation-aware options at every ε of GRID (sensitivity included); the first search
    is timed into the rows."""
    start = time.perf_counter()
    aware = search_options(dense, GRID, "ttm", calibration=calib, sensitivity=True, workers=2, model_name="smollm2")
    if not any(r["method"] == "activation-aware search" for r in rows):
        append_row(JSONL, {"method": "activation-aware search", "fraction": None,
                           "seconds": time.perf_counter() - start, "grid": list(GRID), "layers": len(aware.found),
                           "machine": machine()})
    return aware


def finetune_kind(row: dict) -> str | None:
    """The fine-tune's loss ("next-token" or "distillation") and a learning-rate schedule other
    than constant; None for a row without a fine-tune."""
    if not row.get("finetune_steps"):
        return None
    ft = row["finetune"]
    first = ft["trials"][0] if "trials" in ft else ft
    return kind_label(first["loss"], first.get("schedule", "constant"), first.get("warmup", 0.0),
                      first.get("balance", False))


def kind_label(loss: str, schedule: str, warmup: float, balance: bool = False) -> str:
    """"next-token", or e.g. "next-token (cosine lr, 5% warmup, balanced cores)" for a schedule
    other than constant or balanced TT cores."""
    notes = ([] if schedule == "constant" and not warmup else [f"{schedule} lr, {warmup:.0%} warmup"]) + \
        (["balanced cores"] if balance else [])
    return f"{loss} ({', '.join(notes)})" if notes else loss


def tried_lrs(row: dict) -> tuple[float, ...]:
    """The learning rates a fine-tune row ran (a run at other rates is another row)."""
    if not row.get("finetune_steps"):
        return ()
    ft = row["finetune"]
    return tuple(t["lr"] for t in ft["trials"]) if "trials" in ft else (ft["lr"],)


def finetune_lr(row: dict) -> str:
    ft = row["finetune"]
    if row.get("lr_picked_on") != "dev":
        return f"lr {ft['lr']:g}"
    tried = ", ".join(f"{t['lr']:g}: {t['dev_perplexity']:.1f}" for t in ft["trials"])
    return f"lr {ft['lr']:g} picked on dev ({tried})"


def report_markdown() -> str:
    rows = load_rows(JSONL)
    dense = next(r for r in rows if r["method"] == "dense")
    search = next((r for r in rows if r["method"] == "activation-aware search"), None)
    body = []
    speed_cols = "prefill_tokens_per_s" in dense
    # speed against the dense model measured on the same machine: the last such row before it
    # (the run's own), else the first after it (a run that found none measured it later)
    reference, last, first = {}, {}, {}
    for r in rows:
        if r["method"] == "dense" and "prefill_tokens_per_s" in r:
            last[r["machine"]] = r
            first.setdefault(r["machine"], r)
        reference[id(r)] = last.get(r["machine"])
    for r in rows:
        reference[id(r)] = reference[id(r)] or first.get(r["machine"])
    machines = sorted({r["machine"] for r in rows if r.get("fraction")})

    def line(r: dict, label: str) -> list:
        cells = [label, f"{r['decoder_fraction']:.3f}", f"{r['params']:,}", f"{r['bytes']:,}", r["perplexity"],
                 f"{r['perplexity'] / dense['perplexity']:.2f}"]
        ref = reference.get(id(r))
        if speed_cols and "prefill_tokens_per_s" in r and ref is not None:
            cells += [f"{r['prefill_tokens_per_s'] / ref['prefill_tokens_per_s']:.2f}",
                      f"{r['decode_tokens_per_s'] / ref['decode_tokens_per_s']:.2f}"]
        elif speed_cols:
            cells += ["—", "—"]  # fine-tuned: the structure (and speed) of its row without; or no dense reference
        seconds = f"{r.get('compress_seconds', 0):.0f}"
        cells.append(f"{seconds} (search included)" if r.get("compress_seconds_include_search") else seconds)
        return cells + ([r["machine"].split(",")[0]] if len(machines) > 1 else [])

    dense["decoder_fraction"] = 1.0
    body.append(line(dense, "dense"))
    schedules = sorted({(r.get("finetune_steps", 0), finetune_kind(r) or "") for r in rows if r["fraction"]})
    for steps, loss in schedules:
        same = [r for r in rows if r["fraction"] and r.get("finetune_steps", 0) == steps
                and (finetune_kind(r) or "") == loss]
        for fraction in sorted({r["fraction"] for r in same if r["fraction"] < 1}, reverse=True):
            group = [r for r in same if r["fraction"] == fraction]
            best = min(r["perplexity"] for r in group)
            for r in group:
                label = f"{r['method']} @ {fraction:g}" + (f", {steps}-step {loss} fine-tune, {finetune_lr(r)} "
                                                           f"(before: {r['perplexity_before_finetune']:.1f})"
                                                           if steps else "")
                body.append(line(r, f"**{label}**" if r["perplexity"] == best else label))
    headers = ["method @ budget", "decoder linears kept", "whole-model parameters", "bytes", "perplexity", "× dense"]
    if speed_cols:
        headers += ["prefill × dense", "decode × dense"]
    headers.append("compression s")
    if len(machines) > 1:
        headers.append("CPU")
    search_note = (f"The activation-aware search of all {search['layers']} linears at {len(search['grid'])} ε "
                   f"({', '.join(f'{e:g}' for e in search['grid'])}; whitened, every input digit in one core, "
                   f"the spectra and sensitivity included) took {search['seconds']:.0f} s once on "
                   f"{search['machine'].split(',')[0]}; every activation-aware "
                   "plan below is picked from it.") if search else ""
    dense_dev = next((r for r in rows if r["method"] == "dense, dev text"), None)
    dev_note = f"; dense: {dense_dev['perplexity']:.2f}" if dense_dev else ""
    ones = [r for r in rows if r["method"] == "activation-aware search, one ε"]
    if ones:
        times = "; ".join(f"{r['seconds']:.0f} s on {r['machine'].split(',')[0]}" for r in ones)
        search_note += (f" The same search at the one ε {ones[0]['grid'][0]:g} (whitening and sensitivity included) "
                        f"took {times}.")
    return "\n".join([
        "# Perplexity against parameters on SmolLM2-135M", "",
        f"Printed by `benchmarks/model_pareto.py` (rows in `results/model_pareto.jsonl`) on {dense['machine']}, "
        f"torch {torch.__version__}. Budget = fraction of the decoder-linear parameters kept (what replaced them "
        "counted: TT cores, sparse values, low-rank factors); bytes = every saved tensor, sparse indices included. "
        f"Saten rows: a top-K residual of density {DENSITY:g} plus a TT plan for the rest of the budget. "
        "Activation-aware rows without \"sequential\" whiten each layer by the dense model's inputs at the plan's ε; "
        "\"sequential\" rows by the inputs it gets once the layers (and stages: q/k/v, o, gate/up, down) before it "
        "are compressed, at the ranks the plan's search found. Recipes: FLAT-LLM first, then activation-aware Saten "
        "(sensitivity budget) searched on what FLAT-LLM left; the first at FLAT-LLM ratio "
        f"{RECIPE_RATIO:g}, the second with FLAT-LLM removing {RECIPE_SHARE:g} of what is removed. "
        "Fine-tune rows: one 256-token window of the calibration text per step, AdamW, every decoder linear "
        "trained, the learning rate constant unless the row names a schedule (cosine: a linear rise over the "
        "warmup share of the steps, then a cosine decay toward zero; \"balanced cores\": every TT layer's cores "
        "rescaled to equal norms before training, the function unchanged); the loss is next-token, or distillation "
        "(KL to the dense model's next-token distribution on the same windows). \"Picked on dev\" rows train on "
        f"the first {1 - DEV_SHARE:.0%} of that text, run at each learning rate listed, with its perplexity on "
        f"{DEV_WINDOWS} windows of the last {DEV_SHARE:.0%} (the dev text{dev_note}), and keep the lowest (a method "
        "with two such rows at one budget and schedule ran its rates in two runs: the lower dev perplexity is the "
        "pick); the lr "
        "1e-4 rows (an earlier run) train on windows of the whole text. "
        f"Perplexity: {dense['windows']} windows of 512 tokens of the held-out articles; speed: "
        "batch 4, prompt 256, 32 new tokens, median of 3, relative to the dense model measured on the same machine "
        "(— where that machine has no dense row). Compression seconds compare only within one CPU. Best of each "
        "budget in bold. " + search_note, "",
        table(headers, body), ""])


def main() -> None:
    names = list(methods(None, None, GRID))  # type: ignore[arg-type]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fractions", nargs="+", type=float, default=[0.9, 0.8, 0.7, 0.6, 0.5])
    p.add_argument("--methods", nargs="+", default=[n for n in names if n != "saten weight-space"], choices=names)
    p.add_argument("--finetune", nargs="*", type=float, default=[0.75], help="budgets that also get the fine-tune")
    p.add_argument("--finetune-methods", nargs="+",
                   default=["flat-llm", "saten activation-aware, sensitivity, sequential"],
                   choices=names)
    p.add_argument("--steps", type=int, default=60, help="fine-tune steps (256-token windows)")
    p.add_argument("--lrs", nargs="+", type=float, default=[3e-6, 1e-5, 3e-5, 1e-4],
                   help="fine-tune learning rates; the one with the lowest dev perplexity is kept")
    p.add_argument("--schedule", choices=SCHEDULES, default="constant", help="the fine-tune's learning-rate schedule")
    p.add_argument("--warmup", type=float, default=0.0, help="the fraction of fine-tune steps of linear lr warmup")
    p.add_argument("--balance", action="store_true",
                   help="rescale every TT layer's cores to equal norms before the fine-tune")
    p.add_argument("--distill", action="store_true",
                   help="fine-tune by distillation from the dense model instead of the next-token loss")
    p.add_argument("--samples", type=int, default=32, help="calibration windows of 512 tokens")
    p.add_argument("--windows", type=int, default=30, help="perplexity windows of 512 tokens")
    p.add_argument("--no-speed", dest="speed", action="store_false")
    p.add_argument("--time-search", action="store_true",
                   help="time the one-ε search even where this machine has a row (a new row beside the old)")
    p.add_argument("--rerun", action="store_true",
                   help="measure the asked rows even where stored (a new row beside the old: another CPU, or code "
                        "changed since)")
    main_with_report(p, run, report_markdown, MARKDOWN)


if __name__ == "__main__":
    main()
