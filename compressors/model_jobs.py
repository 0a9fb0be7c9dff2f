"""Model jobs: compress a model given by name into a directory, and evaluate a model.

What the command line (or any other front end) calls: each job checks its arguments, names
the bad one in an :class:`~shapesearch.errors.ArgumentError`, loads the model, runs and
returns a JSON-ready report.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
from torch import nn

from shapesearch.errors import ArgumentError, ShapesearchError
from shapesearch.paths import check_writable_dir

from . import lm_metrics
from .calibration import head_input_moment
from .compress import compress, handler_for
from .corpus import calibration_windows, read_text, token_ids
from .finetune import FinetuneConfig, finetune
from .flat_llm import FlatLLMConfig
from .low_rank import SVDConfig
from .model_loading import first_line, is_causal_lm, load_model, skeleton
from .serialization import save
from .targets import tied_output
from .tt_embedding import frequency_weights

REPORT = "report.json"
CALIBRATED = (FlatLLMConfig, SVDConfig)  # rank reduction, calibrated layer by layer


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse, before any work, a destination that cannot be written (a file, a path under a
    file, a directory without write permission) or a non-empty directory unless asked to."""
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
                       finetune_steps: int = 0) -> object:
    """The config of a ``compressor`` job ("flat-llm": FLAT-LLM or an SVD ``method`` at its size;
    "tt" / "saten": layers from the ``plan`` file), refusing options that belong to another."""
    from .tt_compress import SatenConfig, TTConfig, read_plan

    if compressor not in COMPRESSORS:
        raise ArgumentError("compressor", f"must be one of {', '.join(COMPRESSORS)}, got {compressor!r}")
    if compressor == "flat-llm":
        if plan is not None or density is not None or nm is not None or finetune_steps:
            raise ShapesearchError("plan / density / nm / finetune_steps are for tt and saten, not flat-llm")
        if method not in METHODS:
            raise ArgumentError("method", f"must be one of {', '.join(METHODS)}, got {method!r}")
        if method == "flat-llm":
            return FlatLLMConfig(ratio=ratio, uniform=uniform)
        return SVDConfig(ratio=ratio, whiten=method == "svd-llm")
    if plan is None:
        raise ArgumentError("plan", f"is needed for {compressor}: a plan.json written by `shapesearch layers`")
    if compressor == "tt" and (density is not None or nm is not None):
        raise ShapesearchError("density / nm are for saten; tt has no sparse residual")
    if compressor == "saten":
        return SatenConfig(plan=read_plan(plan), density=density, nm=parse_nm(nm))
    return TTConfig(plan=read_plan(plan))


def _check_windows(samples: int, seqlen: int) -> None:
    if samples < 1:
        raise ArgumentError("samples", f"must be >= 1 (calibration / fine-tuning windows), got {samples}")
    if seqlen < 2:
        raise ArgumentError("seqlen", f"must be >= 2 (tokens per window), got {seqlen}")


def compress_model(model: str, config: object, out: str | Path, *, calib: str | Path | None = None,
                   samples: int = 32, seqlen: int = 512, seed: int = 0,
                   finetune_config: FinetuneConfig | None = None, overwrite: bool = False,
                   progress: bool = True, embedding_weights: bool = True) -> dict:
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
    model's sizes), before any calibration."""
    out = Path(out)
    handler_for(config)  # a bad config fails before the model loads
    calibrated = isinstance(config, CALIBRATED)
    tune = finetune_config is not None and finetune_config.steps > 0
    if calibrated or tune:
        _check_windows(samples, seqlen)
    _check_out(out, overwrite)
    text = read_text(calib, "calibration", "calib") if calibrated or tune else None
    shape = skeleton(model)  # the architecture from config.json / the GGUF header, before any weights
    if calibrated and shape is not None:  # its parts, the ratio and calibration size: before loading
        config.preflight(shape, samples * seqlen)
    net, tok = load_model(model)
    if calibrated and shape is None:  # a GGUF's parts are known only once it is loaded
        config.preflight(net, samples * seqlen)
    windows = calibration_windows(tok, text, samples, seqlen, seed) if text is not None else None
    teacher = copy.deepcopy(net) if tune else None  # the dense model, before compress rewrites it
    if calibrated:
        report = _compress_with_bar(net, config, windows, progress)
    elif embedding_weights and _plans_embedding(config):
        text = text if text is not None else read_text(calib, "calibration", "calib")
        vocab = net.get_input_embeddings().num_embeddings
        moment = None
        if tied_output(net, net.get_input_embeddings()) is not None:
            _check_windows(samples, seqlen)
            moment = head_input_moment(net, calibration_windows(tok, text, samples, seqlen, seed))
        report = compress(net, config, embedding_weights=frequency_weights(token_ids(tok, text), vocab),
                          head_moment=moment)
        report["embedding_weights"] = "frequency" + ("" if moment is None else ", head-whitened")
    else:
        report = compress(net, config)
    if tune:
        report["finetune"] = finetune(net, windows, finetune_config, teacher=teacher, progress=progress)
    save(net, out, tok)
    report.update(model=model, out=str(out))
    if calibrated:
        report["seqlen"] = seqlen
    (out / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    return report


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

        return evaluate_encoder(model, net, tok, task, None if test is None else Path(test), text_column,
                                label_column)
    if task is not None or test is not None:
        raise ArgumentError("task", f"{model} is a causal LM: eval measures its perplexity on --text")
    result = {"model": model, **lm_metrics.perplexity(net, tok, body, window, max_windows)}
    if speed:
        try:
            result.update(lm_metrics.speed(net, tok, body))
        except Exception as exc:  # noqa: BLE001 - the perplexity is measured already; never lose it to speed
            result["speed_error"] = first_line(exc)
    return result
