"""Encoder jobs: PTNN on a text classifier into a directory, and the evaluation of an encoder
(word similarity) or a classifier (accuracy).

What ``shapesearch compress ptnn`` and ``shapesearch eval`` call for models that are not causal
LMs.  Arguments are checked before the model loads; every bad one is an ArgumentError.
"""

from __future__ import annotations

import json
from pathlib import Path

from shapesearch.errors import ArgumentError

from .classifier import accuracy, classifier_from_encoder
from .compress import compress
from .model_jobs import REPORT, _check_out, store_as_input
from .model_loading import builtin_path, first_line, load_model, stored_dtype
from .ptnn import PTNNConfig
from .serialization import save
from .text_tasks import TextTask, builtin_task, read_split, read_task
from .word_similarity import word_similarity


def task_from(task: str | None = None, train: Path | None = None, dev: Path | None = None,
              test: Path | None = None, text_column: str = "text", label_column: str = "label") -> TextTask:
    """A built-in task by name, or the user's three files (all three, and no task name)."""
    files = (train, dev, test)
    if any(f is not None for f in files):
        if task is not None:
            raise ArgumentError("task", "and --train/--dev/--test exclude each other; give one or the other")
        if any(f is None for f in files):
            raise ArgumentError("train", "--dev and --test go together: give all three labelled files")
        return read_task(train, dev, test, text_column, label_column)
    return builtin_task(task or "rotten-tomatoes")


def _encoder_directory(model: str) -> str:
    if model == "minilm":
        return str(builtin_path("minilm").parent)
    if not (Path(model) / "config.json").is_file():
        raise ArgumentError("model", f"{model}: PTNN needs minilm or an encoder directory with config.json "
                                     "(a transformers BERT-style model and its tokenizer)")
    return model


def compress_classifier(model: str, config: PTNNConfig, out: str | Path, task: TextTask, *,
                        overwrite: bool = False, progress=None) -> dict:
    """Fine-tune a classifier on ``model``'s encoder for ``task``, run PTNN, save it to ``out``
    with its tokenizer and ``report.json``; returns the report."""
    out = Path(out)
    _check_out(out, overwrite, model)
    directory = _encoder_directory(model)
    _, tok = load_model(directory)
    try:
        net = classifier_from_encoder(directory, task.classes, seed=config.seed)
    except Exception as exc:  # noqa: BLE001 - a model transformers cannot give a classification head
        raise ArgumentError("model", f"{model} cannot take a classification head ({first_line(exc)}); give an "
                                     "encoder such as minilm") from exc
    if tok.pad_token is None:
        raise ArgumentError("model", f"{model}'s tokenizer has no padding token; PTNN batches texts")
    if net.config.pad_token_id is None:  # a decoder's config often has none; its head needs it to find the last token
        net.config.pad_token_id = tok.pad_token_id
    report = compress(net, config, tokenizer=tok, task=task, progress=progress)
    store_as_input(net, report, stored_dtype(directory))
    save(net, out, tok)
    report.update(model=model, task=task.name, classes=list(task.classes), out=str(out))
    (out / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    return report


def evaluate_encoder(model: str, net, tok, task: str | None = None, test: Path | None = None,
                     text_column: str = "text", label_column: str = "label") -> dict:
    """Accuracy of a sequence classifier on a task's test split (or a labelled ``test`` file);
    for a bare encoder, WordSim353 / SimLex-999 Spearman ρ."""
    labels = getattr(net.config, "id2label", None) or {}
    if type(net).__name__.endswith("ForSequenceClassification"):
        classes = tuple(labels[i] for i in range(len(labels)))
        data = (read_split(test, text_column, label_column, classes, classes_from="the model's classes")
                if test is not None else builtin_task(task or "rotten-tomatoes").test)
        if data.classes != classes:
            raise ArgumentError("task", f"has classes {list(data.classes)}; the model predicts {list(classes)}: give "
                                        "a labelled test file of its classes with --test")
        return {"model": model, "kind": "classifier", "accuracy": accuracy(net, tok, data), "examples": len(data)}
    if task is not None or test is not None:
        raise ArgumentError("test" if test is not None else "task",
                            f"needs a classifier; {model} is an encoder without a classification head "
                            "(compress ptnn makes one)")
    return {"model": model, "kind": "encoder", **word_similarity(net, tok)}
