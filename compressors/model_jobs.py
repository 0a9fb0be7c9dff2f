"""Model jobs: compress a model given by name into a directory, and evaluate a model.

What the command line (or any other front end) calls: each job checks its arguments, names
the bad one in an :class:`~shapesearch.errors.ArgumentError`, loads the model, runs and
returns a JSON-ready report.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from shapesearch.errors import ArgumentError, ShapesearchError
from shapesearch.paths import check_outside, check_writable_dir

from . import lm_metrics
from .accounting import recount_bytes
from .calibration import head_input_moment
from .compress import compress, handler_for
from .corpus import calibration_windows, read_text, token_ids, wikipedia
from .finetune import FinetuneConfig, finetune
from .flat_llm import FlatLLMConfig
from .layer_plans import PlanRequest
from .low_rank import SVDConfig
from .model_loading import first_line, is_causal_lm, load_model, quiet_transformers, skeleton, stored_dtype
from .serialization import save
from .targets import tied_output
from .tt_embedding import frequency_weights

REPORT = "report.json"
CALIBRATED = (FlatLLMConfig, SVDConfig)  # rank reduction, calibrated layer by layer


def _check_out(out: Path, overwrite: bool, model: str | None = None) -> None:
    """Refuse, before any work, a destination that cannot be written (a file, a path under a
    file, a directory without write permission), the input ``model`` or a path inside it, or a
    non-empty directory unless asked to."""
    if model is not None:
        check_outside(out, model)
    try:
        check_writable_dir(out, "out")
        full = out.is_dir() and any(out.iterdir())
    except OSError as exc:  # e.g. a parent we may not even look into
        raise ArgumentError("out", f"{out} cannot be checked ({exc.strerror or exc}); give a directory you "
                                   "may write to") from exc
    if full and not overwrite:
        raise ArgumentError("out", f"{out} is not empty; pick another directory or overwrite it")


COMPRESSORS = ("flat-llm", "tt", "saten")
METHODS = ("flat-llm", "svd", "svd-llm")


def parse_nm(text: str | None) -> tuple[int, int] | None:
    """``"2:4"`` → (2, 4): keep n of every m inputs."""
    if text is None:
        return None
    try:
        n, m = (int(x) for x in text.split(":"))
    except ValueError:
        raise ArgumentError("nm", f"must look like 2:4 (keep n of every m inputs), got {text!r}") from None
    return n, m


def compression_config(compressor: str, *, ratio: float = 0.2, method: str = "flat-llm", uniform: bool = False,
                       plan: str | Path | None = None, density: float | None = None, nm: str | None = None,
                       finetune_steps: int = 0, dense_inputs: bool = False, alternations: int = 0) -> object:
    """The config of a ``compressor`` job ("flat-llm": FLAT-LLM or an SVD ``method`` at its size;
    "tt" / "saten": layers from the ``plan`` file; ``dense_inputs``: an activation-aware plan's
    layers whitened by the dense model's inputs, not sequentially; ``alternations``: Saten's
    TT / sparse refits), refusing options that belong to another."""
    from .tt_compress import SatenConfig, TTConfig, read_plan

    if compressor not in COMPRESSORS:
        raise ArgumentError("compressor", f"must be one of {', '.join(COMPRESSORS)}, got {compressor!r}")
    if compressor == "flat-llm":
        if plan is not None or density is not None or nm is not None or finetune_steps or dense_inputs:
            raise ShapesearchError("plan / density / nm / finetune_steps / dense_inputs are for tt and saten, "
                                   "not flat-llm")
        if alternations:
            raise ShapesearchError("alternations are for saten, not flat-llm")
        if method not in METHODS:
            raise ArgumentError("method", f"must be one of {', '.join(METHODS)}, got {method!r}")
        if method == "flat-llm":
            return FlatLLMConfig(ratio=ratio, uniform=uniform)
        return SVDConfig(ratio=ratio, whiten=method == "svd-llm")
    if plan is None:
        raise ArgumentError("plan", f"is needed for {compressor}: a plan.json written by `shapesearch layers`")
    if compressor == "tt" and (density is not None or nm is not None or alternations):
        raise ShapesearchError("density / nm / alternations are for saten; tt has no sparse residual")
    plan = plan if isinstance(plan, dict) else read_plan(plan)  # a dict: a plan or options to search one with
    if compressor == "saten":
        return SatenConfig(plan=plan, density=density, nm=parse_nm(nm), sequential=not dense_inputs,
                           alternations=alternations)
    return TTConfig(plan=plan, sequential=not dense_inputs)


def finetune_config(*, finetune_steps: int = 0, lr: float = 1e-4, distill: bool = False,
                    lr_schedule: str = "constant", warmup: float = 0.0) -> FinetuneConfig:
    """The FinetuneConfig of a ``compress`` command or job, with a bad value named by its option."""
    renamed = {"steps": "finetune_steps", "schedule": "lr_schedule"}
    try:
        return FinetuneConfig(steps=finetune_steps, lr=lr, distill=distill, schedule=lr_schedule, warmup=warmup)
    except ArgumentError as exc:
        if exc.argument in renamed:
            raise ArgumentError(renamed[exc.argument], exc.problem) from None
        raise


RECIPE_KEYS = {"flat-llm": {"ratio", "method", "uniform"}, "tt": {"plan", "dense_inputs"},
               "saten": {"plan", "density", "nm", "dense_inputs", "alternations"}}


def read_recipe(path: str | Path) -> list[object]:
    """The configs of a recipe file: JSON ``{"steps": [{"compressor": "flat-llm", "ratio": 0.1},
    {"compressor": "saten", "density": 0.05, "plan": {"budget": 0.8, "activations": true}}]}``.
    A step's ``plan`` is a plan file (relative to the recipe's folder) or the options of a
    plan searched on the model as that step finds it (``layer_plans.PlanRequest``)."""
    path = Path(path)
    if not path.is_file():
        raise ArgumentError("recipe", f"{path} is not a file; give a recipe JSON file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArgumentError("recipe", f"{path} is not UTF-8 JSON ({exc}); give a recipe JSON file") from None
    steps = data.get("steps") if isinstance(data, dict) else None
    if not isinstance(steps, list) or not steps:
        raise ArgumentError("recipe", f"{path} needs a non-empty \"steps\" list of compression steps")
    configs = []
    for i, step in enumerate(steps, 1):
        name = step.get("compressor") if isinstance(step, dict) else None
        if name not in RECIPE_KEYS:
            raise ArgumentError("recipe", f"step {i} needs \"compressor\": one of {', '.join(RECIPE_KEYS)}")
        unknown = sorted(set(step) - {"compressor"} - RECIPE_KEYS[name])
        if unknown:
            raise ArgumentError("recipe", f"step {i} ({name}): unknown key(s) {unknown}; use "
                                          f"{sorted(RECIPE_KEYS[name])}")
        options = {k: v for k, v in step.items() if k != "compressor"}
        if isinstance(options.get("plan"), str):
            options["plan"] = path.parent / options["plan"]
        try:
            configs.append(compression_config(name, **options))
        except (ShapesearchError, TypeError) as exc:
            raise ArgumentError("recipe", f"step {i} ({name}): {exc}") from None
    return configs


def check_windows(samples: int, seqlen: int) -> None:
    """Refuse calibration windows that cannot be cut (ArgumentError naming the option)."""
    if samples < 1:
        raise ArgumentError("samples", f"must be >= 1 (calibration / fine-tuning windows), got {samples}")
    if seqlen < 2:
        raise ArgumentError("seqlen", f"must be >= 2 (tokens per window), got {seqlen}")


def model_calibration(model: str, calib: str | Path | None = None, samples: int = 32, seqlen: int = 512,
                      seed: int = 0) -> tuple[nn.Module, PreTrainedTokenizerBase, list[torch.Tensor], dict]:
    """(the loaded ``model``, its tokenizer, its calibration windows, their record for a plan): ``samples``
    windows of ``seqlen`` tokens at ``seed``-ed offsets of the text ``calib`` (default: the
    Wikipedia calibration split), as ``compress_model`` makes them."""
    check_windows(samples, seqlen)
    text = read_text(calib, "calibration", "calib")
    net, tok = load_model(model)
    lm_metrics.check_context(net, seqlen, "seqlen")
    record = _calibration_record(calib, text, samples, seqlen, seed)
    return net, tok, calibration_windows(tok, text, samples, seqlen, seed), record


def _calibration_record(calib: str | Path | None, text: str, samples: int, seqlen: int, seed: int) -> dict:
    """What a plan records of its calibration windows: the settings, the file as given and a
    digest of its text (the same path may hold another text, another path the same one)."""
    return {"samples": samples, "seqlen": seqlen, "seed": seed, "text": None if calib is None else str(calib),
            "text_sha256": hashlib.sha256(text.encode()).hexdigest()}


def _check_plan_calibration(config: object, calib: str | Path | None, text: str, samples: int, seqlen: int,
                            seed: int) -> None:
    """An activation-aware plan is whitened on the windows it was made on: refuse others
    (``text``: what ``calib`` holds)."""
    made = config.plan.calibration or {}
    given = _calibration_record(calib, text, samples, seqlen, seed)
    # the text by its digest where the plan has one (a plan from before digests: by the path given)
    keys = ("samples", "seqlen", "seed", "text_sha256" if "text_sha256" in made else "text")
    differ = ["text" if k == "text_sha256" else k for k in keys if k in made and made[k] != given[k]]
    if differ:
        flags = " ".join(f"--{'calib' if k == 'text' else k} {made[k]}" for k in differ if made[k] is not None)
        raise ArgumentError(differ[0] if differ[0] != "text" else "calib",
                            "the activation-aware plan was made on other calibration windows; give "
                            + (flags or "no --calib"))


def compress_model(model: str, config: object, out: str | Path, *, calib: str | Path | None = None,
                   samples: int = 32, seqlen: int = 512, seed: int = 0,
                   finetune_config: FinetuneConfig | None = None, overwrite: bool = False,
                   progress: bool = True, embedding_weights: bool = True, eval_windows: int = 10) -> dict:
    """Load ``model`` (``smollm2``, ``minilm``, a model directory or a .gguf file), compress it
    as ``config`` says, optionally fine-tune it, and save it to ``out`` with ``report.json``.

    FLAT-LLM and the SVD baselines calibrate on ``samples`` windows of ``seqlen`` tokens at
    ``seed``-ed offsets of the text file ``calib`` (default: the Wikipedia calibration split);
    a fine-tune with ``finetune_config.steps`` > 0 trains on the same windows.  A TT / Saten plan
    that holds the token embedding fits it to rows weighted by the tokens' frequency in that
    text and, when the embedding is tied to ``lm_head``, whitened by the head's input moment on
    the same windows — unless ``embedding_weights`` is False.  ``progress``:
    tqdm bars on stderr.  Returns the report (also written to ``out/report.json``).

    Everything that can be checked is checked before the work it would waste: the arguments
    and ``out`` before the model loads; the ratio against the method's maximum and
    ``samples`` × ``seqlen`` against the covariances to estimate right after (from the
    model's sizes), before any calibration.

    ``config`` may be a list of configs, a recipe (see ``compress``): every step gets the
    calibration windows, and the report gives each step's parameters and its perplexity on
    ``eval_windows`` windows of 512 tokens of the held-out Wikipedia articles (0: none)."""
    out = Path(out)
    recipe = isinstance(config, list | tuple)
    steps = list(config) if recipe else [config]
    for step in steps:
        handler_for(step)  # a bad config fails before the model loads
    if recipe and not steps:
        raise ArgumentError("recipe", "has no steps; give at least one compression step")
    calibrated = isinstance(steps[0], CALIBRATED)  # rank reduction can only be a recipe's first step
    tune = finetune_config is not None and finetune_config.steps > 0
    aware = any(_plans_activations(step) for step in steps)  # whitened on the calibration windows
    if calibrated or tune or aware:
        check_windows(samples, seqlen)
    planned = [s for s in steps if _plans_activations(s) and not isinstance(s.plan, PlanRequest)]
    text = read_text(calib, "calibration", "calib") if planned else None  # read once, checked against the plans
    for step in planned:
        _check_plan_calibration(step, calib, text, samples, seqlen, seed)
    _check_out(out, overwrite, model)
    if text is None and (calibrated or tune or aware):
        text = read_text(calib, "calibration", "calib")
    shape = skeleton(model)  # the architecture from config.json / the GGUF header, before any weights
    if calibrated and shape is not None:  # its parts, the ratio and calibration size: before loading
        steps[0].preflight(shape, samples * seqlen)
    net, tok = load_model(model)
    if calibrated and shape is None:  # a GGUF's parts are known only once it is loaded
        steps[0].preflight(net, samples * seqlen)
    if text is not None:
        lm_metrics.check_context(net, seqlen, "seqlen")
    windows = calibration_windows(tok, text, samples, seqlen, seed) if text is not None else None
    teacher = copy.deepcopy(net) if tune else None  # the dense model, before compress rewrites it
    if recipe:
        report = compress(net, steps, calibration=windows, after_step=_step_perplexity(tok, eval_windows))
    elif calibrated:
        report = _compress_with_bar(net, config, windows, progress)
    elif embedding_weights and _plans_embedding(config):
        text = text if text is not None else read_text(calib, "calibration", "calib")
        vocab = net.get_input_embeddings().num_embeddings
        moment = None
        if tied_output(net, net.get_input_embeddings()) is not None:
            check_windows(samples, seqlen)
            lm_metrics.check_context(net, seqlen, "seqlen")
            moment = head_input_moment(net, calibration_windows(tok, text, samples, seqlen, seed))
        report = compress(net, config, embedding_weights=frequency_weights(token_ids(tok, text), vocab),
                          head_moment=moment, **({"calibration": windows} if aware else {}))
        report["embedding_weights"] = "frequency" + ("" if moment is None else ", head-whitened")
    else:
        report = compress(net, config, **({"calibration": windows} if aware else {}))
    if tune:
        report["finetune"] = finetune(net, windows, finetune_config, teacher=teacher, progress=progress)
    check_runs(net)
    store_as_input(net, report, stored_dtype(model))
    save(net, out, tok)
    report.update(model=model, out=str(out))
    if calibrated or recipe:
        report["seqlen"] = seqlen
    (out / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    return report


@torch.no_grad()
def check_runs(net: nn.Module) -> None:
    """Refuse to write a compressed model that no longer runs: a family whose forward reads a
    layer's weight itself (Mamba's ``dt_proj.weight``) breaks when that layer is replaced."""
    vocab = getattr(net.config, "vocab_size", None) or 2
    try:
        with quiet_transformers():
            net(input_ids=torch.arange(8).unsqueeze(0) % vocab)
    except Exception as exc:  # noqa: BLE001 - whatever the family's forward raises: nothing is written
        raise ShapesearchError(f"the compressed {type(net).__name__} no longer runs ({first_line(exc)}): its forward "
                               "reads a replaced layer's weights itself; leave that layer out (layers --layers)") \
            from exc


def store_as_input(net: nn.Module, report: dict, dtype: torch.dtype) -> None:
    """Give the compressed model the input's 16-bit dtype back (it is loaded and compressed in
    float32), so the saved file is not twice the size its input was, and count its bytes so."""
    report["dtype"] = str(dtype).removeprefix("torch.")
    if dtype in (torch.float16, torch.bfloat16):
        net.to(dtype)
        recount_bytes(net, report)


def _plans_activations(config: object) -> bool:
    plan = getattr(config, "plan", None)
    if isinstance(plan, PlanRequest):
        return plan.activations
    return plan is not None and any(rec.activation_aware for rec in plan.layers.values())


def _step_perplexity(tok, windows: int):
    """What a recipe measures after each step: perplexity on the held-out Wikipedia articles."""
    text = wikipedia("evaluation")

    def measure(model: nn.Module, report: dict) -> None:
        if windows:
            report["perplexity"] = lm_metrics.perplexity(model, tok, text, 512, windows)["perplexity"]
    return measure



def _plans_embedding(config: object) -> bool:
    plan = getattr(config, "plan", None)
    return plan is not None and any(rec.type == "embedding" for rec in plan.layers.values())


def _compress_with_bar(net: nn.Module, config: FlatLLMConfig | SVDConfig, windows: list[torch.Tensor],
                       progress: bool) -> dict:
    from tqdm import tqdm

    bar = tqdm(total=net.config.num_hidden_layers, desc=f"{config.method} {config.ratio:g}", unit="layer",
               file=sys.stderr, disable=not progress)
    try:
        return compress(net, config, calibration=windows, progress=lambda i: bar.update(1))
    except BaseException:
        bar.leave = False  # erased: the error line stands alone
        raise
    finally:
        bar.close()


def evaluate_model(model: str, text: str | Path | None = None, window: int = 512, max_windows: int | None = None,
                   speed: bool = True, *, task: str | None = None, test: str | Path | None = None,
                   text_column: str = "text", label_column: str = "label") -> dict:
    """Perplexity of the causal LM ``model`` (a name, model directory or .gguf file) on the text
    file ``text`` (default: the Wikipedia evaluation split) in non-overlapping windows of
    ``window`` tokens (at most ``max_windows``); with ``speed``, also CPU prefill and decode
    throughput in tokens/s (if that measurement fails, ``speed_error`` says why and the
    perplexity is still returned).  An encoder gets its word-similarity Spearman ρ, a text
    classifier its accuracy on ``task``'s test split or the labelled ``test`` file
    (:func:`~.classifier_jobs.evaluate_encoder`).  Returns one flat dict."""
    if window < 2:
        raise ArgumentError("window", "must be at least 2 tokens")
    if max_windows is not None and max_windows < 1:
        raise ArgumentError("max_windows", f"must be >= 1, got {max_windows}")
    body = read_text(text, "evaluation", "text")
    skeleton(model)  # a config or GGUF header transformers cannot use is refused before any weights
    net, tok = load_model(model)
    if not is_causal_lm(net):
        from .classifier_jobs import evaluate_encoder

        if text is not None:
            raise ArgumentError("text", f"measures a causal LM's perplexity; {model} is an encoder: give a labelled "
                                        "--test file (or --task) for a classifier, or nothing for word similarity")
        return evaluate_encoder(model, net, tok, task, None if test is None else Path(test), text_column,
                                label_column)
    if task is not None or test is not None:
        raise ArgumentError("test" if test is not None else "task",
                            f"is for classifiers; {model} is a causal LM: eval measures its perplexity on --text")
    result = {"model": model, **lm_metrics.perplexity(net, tok, body, window, max_windows)}
    if speed:
        try:
            result.update(lm_metrics.speed(net, tok, body))
        except Exception as exc:  # noqa: BLE001 - the perplexity is measured already; never lose it to speed
            result["speed_error"] = first_line(exc)
    return result
