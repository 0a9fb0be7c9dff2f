"""``shapesearch compress`` and ``shapesearch eval``: model compression from the command line.

Parsing, the checks that are about the flags themselves, and the printed table; the work is
:func:`compressors.compress_model` / :func:`compressors.evaluate_model`.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..errors import ArgumentError
from .output import path_arg, table

if TYPE_CHECKING:
    from compressors import FinetuneConfig

# compressors is imported inside the commands: torch and transformers take seconds to load,
# which the other commands should not pay

METHODS = ("flat-llm", "svd", "svd-llm")  # compressors.model_jobs.METHODS, without importing torch here
SCHEDULES = ("constant", "cosine")  # compressors.finetune.SCHEDULES, likewise


def compress_options(comp: argparse.ArgumentParser, for_job: bool = False) -> None:
    """What ``compress`` takes (``for_job``: as a service job, with no defaults filled in here:
    the service fills them, and the job's directory is its --out)."""
    def dflt(value: object) -> object:
        return None if for_job else value

    families = ["flat-llm", "tt", "saten"] + ([] if for_job else ["ptnn", "recipe"])
    comp.add_argument("compressor", choices=families, help="the compressor family, or recipe: several in order")
    if not for_job:
        comp.add_argument("recipe", nargs="?", type=path_arg, default=None,
                          help="recipe: the recipe JSON, e.g. {\"steps\": [{\"compressor\": \"flat-llm\", "
                               "\"ratio\": 0.1}, {\"compressor\": \"saten\", \"density\": 0.05, \"plan\": "
                               "{\"budget\": 0.8, \"activations\": true}}]}")
    comp.add_argument("--model", required=True,
                      help="smollm2, minilm (tt/saten/ptnn), a model directory, or a .gguf file")
    comp.add_argument("--plan", type=path_arg, default=None, help="tt/saten: the plan.json from `shapesearch layers`")
    comp.add_argument("--density", type=float, default=None,
                      help="saten: fraction of each layer's entries kept in the sparse residual (exact top-K)")
    comp.add_argument("--nm", default=None, help="saten: structured residual, n of every m inputs (e.g. 2:4)")
    comp.add_argument("--alternations", type=int, default=dflt(0),
                      help="saten: after the first fit, refit the TT part to what the sparse residual leaves and "
                           "pick the residual again, this many times, keeping the best; same parameters "
                           "(default 0)")
    comp.add_argument("--finetune-steps", type=int, default=dflt(0),
                      help="tt/saten: optimizer steps of fine-tuning in compressed space (default 0)")
    comp.add_argument("--lr", type=float, default=None,
                      help="fine-tuning learning rate, positive (default 1e-4 for tt/saten, 5e-5 for ptnn)")
    comp.add_argument("--lr-schedule", choices=SCHEDULES, default=dflt("constant"),
                      help="fine-tuning learning rate: constant, or cosine decay toward zero (default constant)")
    comp.add_argument("--warmup", type=float, default=dflt(0.0),
                      help="fraction of the fine-tuning steps with a linear learning-rate warmup, in [0, 1) "
                           "(default 0)")
    comp.add_argument("--plain-embedding", action="store_true", default=dflt(False),
                      help="tt/saten: fit a planned token embedding by plain Frobenius error (default: rows "
                           "weighted by each token's frequency in the --calib text)")
    comp.add_argument("--dense-inputs", action="store_true", default=dflt(False),
                      help="tt/saten with an activation-aware plan: whiten each layer by the dense model's "
                           "inputs, the ones the plan's errors were measured on (default: by the inputs it "
                           "receives once the layers before it are compressed, as SVD-LLM and FLAT-LLM do)")
    comp.add_argument("--distill", action="store_true", default=dflt(False),
                      help="fine-tune by distillation from the dense model (always so for encoders)")
    comp.add_argument("--ratio", type=float, default=dflt(0.2),
                      help="flat-llm: fraction of decoder-linear parameters removed, in (0, 1); a ratio above "
                           "what the method can remove from the model is refused with its maximum (default 0.2)")
    comp.add_argument("--method", choices=METHODS, default=dflt("flat-llm"),
                      help="flat-llm, or svd / svd-llm at FLAT-LLM's parameter count (default flat-llm)")
    comp.add_argument("--uniform", action="store_true", default=dflt(False),
                      help="same keep ratio in every layer (no IPRS)")
    comp.add_argument("--calib", type=path_arg, default=None,
                      help="calibration text file (default: gensim's Wikipedia articles, calibration split)")
    comp.add_argument("--samples", type=int, default=dflt(32),
                      help="calibration / fine-tuning windows; flat-llm and svd-llm need samples × seqlen at "
                           "least the model's MLP width (default 32)")
    comp.add_argument("--seqlen", type=int, default=dflt(512), help="tokens per window (default 512)")
    comp.add_argument("--seed", type=int, default=dflt(0),
                      help="seed of the calibration windows' offsets in the text (default 0)")


def task_options(parser: argparse.ArgumentParser) -> None:
    """The labelled data of a classifier: a built-in task or the user's files."""
    parser.add_argument("--task", default=None, help="built-in labelled task: rotten-tomatoes (the default)")
    for split in ("train", "dev", "test"):
        parser.add_argument(f"--{split}", type=path_arg, default=None,
                            help=f"your own {split} split, CSV (with a header) or JSONL; instead of --task")
    parser.add_argument("--text-column", default="text", help="column of the texts (default %(default)s)")
    parser.add_argument("--label-column", default="label", help="column of the labels (default %(default)s)")


def ptnn_options(comp: argparse.ArgumentParser) -> None:
    """PTNN's own flags (see compressors.ptnn.PTNNConfig)."""
    task_options(comp)
    comp.add_argument("--budget", type=float, default=0.6,
                      help="ptnn: stop once the whole model holds this fraction of its parameters (default 0.6)")
    comp.add_argument("--tolerance", type=float, default=None,
                      help="ptnn: dev accuracy a kept layer may lose against the dense model (default: two "
                           "standard errors of the dense model's dev accuracy)")
    comp.add_argument("--eps", type=float, default=0.5,
                      help="ptnn: relative Frobenius error of each tensorized linear (default 0.5)")
    comp.add_argument("--embedding-keep", type=float, default=0.3,
                      help="ptnn: the token embedding's TT keeps this fraction of the table's parameters "
                           "(default 0.3)")
    comp.add_argument("--embedding-eps", type=float, default=0.6,
                      help="ptnn: relative error the embedding's TT shape is searched at (default 0.6)")
    comp.add_argument("--no-embeddings", action="store_true", help="ptnn: leave the token embedding dense")
    comp.add_argument("--steps", type=int, default=30, help="ptnn: retraining steps after each layer (default 30)")
    comp.add_argument("--dense-steps", type=int, default=300,
                      help="ptnn: dense fine-tuning steps before tensorizing (default 300)")
    comp.add_argument("--final-steps", type=int, default=0,
                      help="ptnn: retraining steps on the final model after the last layer (default 0)")


def add_parsers(sub) -> None:
    comp = sub.add_parser("compress", help="compress a model: FLAT-LLM (or a low-rank baseline at matched size), "
                                           "TT / Saten layers from a `shapesearch layers` plan, or PTNN on a "
                                           "text classifier")
    compress_options(comp)
    ptnn_options(comp)
    comp.add_argument("--out", type=path_arg, required=True,
                      help="directory for the compressed model and report.json (new or empty)")
    comp.add_argument("--overwrite", action="store_true", help="write into --out even if it is not empty")
    comp.add_argument("--json", action="store_true", help="print the report as one JSON object instead of a table")
    comp.set_defaults(run=compress_command)
    ev = sub.add_parser("eval", help="perplexity and CPU speed of a causal LM; accuracy of a classifier; "
                                     "word similarity of an encoder")
    ev.add_argument("--model", required=True, help="smollm2, minilm, a model directory, or a .gguf file")
    task_options(ev)
    ev.add_argument("--text", type=path_arg, default=None,
                    help="evaluation text (default: gensim's Wikipedia articles, evaluation split)")
    ev.add_argument("--window", type=int, default=512, help="tokens per perplexity window (default %(default)s)")
    ev.add_argument("--max-windows", type=int, default=None,
                    help="evaluate at most this many windows, >= 1 (default: every whole window of the text)")
    ev.add_argument("--no-speed", action="store_true",
                    help="skip the speed measurement (4 prompts of 256 tokens, the text repeated if shorter)")
    ev.add_argument("--json", action="store_true", help="print the result as one JSON object instead of a table")
    ev.set_defaults(run=eval_command)


def _finetune_config(args: argparse.Namespace) -> FinetuneConfig:
    from compressors.model_jobs import finetune_config

    return finetune_config(finetune_steps=args.finetune_steps, lr=1e-4 if args.lr is None else args.lr,
                           distill=args.distill, lr_schedule=args.lr_schedule, warmup=args.warmup)


def _config(args: argparse.Namespace) -> object:
    from compressors.model_jobs import compression_config

    return compression_config(args.compressor, ratio=args.ratio, method=args.method, uniform=args.uniform,
                              plan=args.plan, density=args.density, nm=args.nm, finetune_steps=args.finetune_steps,
                              dense_inputs=args.dense_inputs, alternations=args.alternations)


def tensorize_command(args: argparse.Namespace) -> tuple[dict, str]:
    from compressors import compress_model

    config = _config(args)
    plan = config.plan
    report = compress_model(args.model, config, args.out, calib=args.calib, samples=args.samples,
                            seqlen=args.seqlen, seed=args.seed, finetune_config=_finetune_config(args),
                            overwrite=args.overwrite, embedding_weights=not args.plain_embedding)
    rows = [
        ("method", f"{report['method']} ({plan.format} shapes from {args.plan}"
                   + (f", residual {'density ' + str(args.density) if args.density is not None else args.nm})"
                      if args.compressor == "saten" else ")")),
        ("replaced layers", f"{report['replaced_layers']}: {report['replaced_params_before']:,} → "
                            f"{report['replaced_params_after']:,} parameters ({report['replaced_ratio']:.3f} kept), "
                            f"{report['replaced_bytes_after']:,} bytes with indices "
                            f"({report['replaced_bytes_ratio']:.3f} of dense)"),
        ("whole model", f"{report['params_before']:,} → {report['params_after']:,} ({report['model_ratio']:.3f} kept)"),
    ]
    if report["replaced_bytes_ratio"] > 1:  # allowed (a dense residual, a small ε), but never silently
        rows.append(("note", f"the replaced layers now take {report['replaced_bytes_ratio']:.2f}× their dense bytes: "
                             "raise ε in the plan or lower --density"))
    if "finetune" in report:
        f = report["finetune"]
        rows.append(("fine-tune", f"{f['steps']} steps ({f['loss']}), loss {f['loss_start']:.4f} → "
                                  f"{f['loss_end']:.4f}, {f['seconds']:.0f} s"))
    rows.append(("saved", str(args.out)))
    return report, table(rows)


def ptnn_command(args: argparse.Namespace) -> tuple[dict, str]:
    from compressors import PTNNConfig
    from compressors.classifier_jobs import compress_classifier, task_from

    # tt / saten / flat-llm options PTNN would ignore
    _refuse_flags(args, _NOT_PTNN, "is not a ptnn option; see `shapesearch compress ptnn --help`")
    config = PTNNConfig(budget=args.budget, tolerance=args.tolerance, eps=args.eps, embedding_eps=args.embedding_eps,
                        embedding_keep=args.embedding_keep, embeddings=not args.no_embeddings, steps=args.steps,
                        dense_steps=args.dense_steps, final_steps=args.final_steps,
                        lr=5e-5 if args.lr is None else args.lr, seed=args.seed)
    task = task_from(args.task, args.train, args.dev, args.test, args.text_column, args.label_column)
    report = compress_classifier(args.model, config, args.out, task, overwrite=args.overwrite)
    kept = [d["name"] for d in report["decisions"] if d["kept"]]
    rows = [
        ("method", f"ptnn on {task.name} ({len(task.train)} / {len(task.dev)} / {len(task.test)} texts, "
                   f"{len(task.classes)} classes)"),
        ("dense fine-tuned", f"dev {report['dense_dev_accuracy']:.4f}, test {report['dense_test_accuracy']:.4f}"),
        ("compressed", f"dev {report['dev_accuracy']:.4f}, test {report['test_accuracy']:.4f}"),
        ("layers", f"{len(kept)} of {len(report['decisions'])} tried kept ({', '.join(kept[:3])}"
                   f"{', …' if len(kept) > 3 else ''})"),
        ("whole model", f"{report['params_before']:,} → {report['params_after']:,} ({report['model_ratio']:.3f} kept"
                        f"{'' if report['budget_met'] else ', budget not reached'})"),
        ("saved", str(args.out)),
    ]
    return report, table(rows)


def recipe_command(args: argparse.Namespace) -> tuple[dict, str]:
    from compressors import compress_model
    from compressors.model_jobs import read_recipe

    if args.recipe is None:
        raise ArgumentError("recipe", "file is missing: shapesearch compress recipe FILE.json --model M --out DIR")
    _refuse_flags(args, _RECIPE_ONLY, "goes into the recipe file's steps, not on the command line")
    report = compress_model(args.model, read_recipe(args.recipe), args.out, calib=args.calib, samples=args.samples,
                            seqlen=args.seqlen, seed=args.seed, overwrite=args.overwrite)
    rows = [("recipe", f"{len(report['steps'])} steps from {args.recipe}")]
    for i, step in enumerate(report["steps"], 1):
        ppl = f", perplexity {step['perplexity']:.2f}" if "perplexity" in step else ""
        rows.append((f"step {i}: {step['method']}", f"decoder linears now {step['decoder_linear_params_now']:,}, "
                                                    f"whole model {step['params_now']:,}{ppl}"))
    rows += [("decoder linears", f"{report['decoder_linear_params_before']:,} → "
                                 f"{report['decoder_linear_params_after']:,} "
                                 f"(−{100 * report['decoder_linear_removed']:.1f} %)"),
             ("whole model", f"{report['params_before']:,} → {report['params_after']:,} "
                             f"(−{100 * report['total_removed']:.1f} %)"),
             ("saved", str(args.out))]
    return report, table(rows)


_RECIPE_ONLY = {"plan": None, "density": None, "nm": None, "ratio": 0.2, "method": "flat-llm", "uniform": False,
                "finetune_steps": 0, "dense_inputs": False, "alternations": 0}
# PTNN trains on its labelled texts with its own schedule: no calibration windows, no warmup
_NOT_PTNN = {**_RECIPE_ONLY, "calib": None, "samples": 32, "seqlen": 512, "warmup": 0.0, "lr_schedule": "constant",
             "plain_embedding": False}


def compress_command(args: argparse.Namespace) -> tuple[dict, str]:
    if args.compressor != "recipe" and args.recipe is not None:
        raise ArgumentError("recipe", f"{args.recipe}: a file argument is for `compress recipe FILE.json` only")
    if args.compressor == "ptnn":
        return ptnn_command(args)
    _refuse_flags(args, _PTNN_FLAGS, f"is a ptnn option; {args.compressor} does not take it")
    if args.compressor == "recipe":
        return recipe_command(args)
    if args.compressor in ("tt", "saten"):
        return tensorize_command(args)
    from compressors import compress_model

    config = _config(args)
    report = compress_model(args.model, config, args.out, calib=args.calib, samples=args.samples,
                            seqlen=args.seqlen, seed=args.seed, overwrite=args.overwrite)
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
    return report, table(rows)


_PTNN_FLAGS = {"task": None, "train": None, "dev": None, "test": None, "budget": 0.6, "tolerance": None, "eps": 0.5,
               "embedding_eps": 0.6, "embedding_keep": 0.3, "no_embeddings": False, "steps": 30, "dense_steps": 300,
               "final_steps": 0}


def _refuse_flags(args: argparse.Namespace, flags: dict[str, object], problem: str) -> None:
    """A one-line error naming the first of ``flags`` (name → default) given a value here."""
    for name, default in flags.items():
        if getattr(args, name) != default:
            raise ArgumentError(name, problem)


def eval_command(args: argparse.Namespace) -> tuple[dict, str]:
    from compressors import evaluate_model

    if args.train is not None or args.dev is not None:
        raise ArgumentError("train", "eval measures the test split only: give --test FILE (or --task)")
    result = evaluate_model(args.model, args.text, args.window, args.max_windows, speed=not args.no_speed,
                            task=args.task, test=args.test, text_column=args.text_column,
                            label_column=args.label_column)
    if result.get("kind") == "classifier":
        return result, table([("accuracy", f"{result['accuracy']:.4f} ({result['examples']} test texts)")])
    if result.get("kind") == "encoder":
        return result, table([("WordSim353 Spearman ρ", f"{result['wordsim353']:.4f}"),
                              ("SimLex-999 Spearman ρ", f"{result['simlex999']:.4f}")])
    rows = [("perplexity", f"{result['perplexity']:.3f} ({result['windows']} windows × {result['window']} "
                           f"tokens, {result['tokens']} predicted)")]
    if "speed_error" in result:
        rows.append(("speed", f"not measured ({result['speed_error']})"))
    elif not args.no_speed:
        repeated = ", text repeated to fill them" if result["prompt_repeated"] else ""
        rows += [("prefill", f"{result['prefill_tokens_per_s']:.0f} tokens/s ({result['batch']} prompts × "
                             f"{result['prompt_tokens']} tokens{repeated})"),
                 ("decode", f"{result['decode_tokens_per_s']:.1f} tokens/s (batch {result['batch']})")]
    return result, table(rows)

