"""MiniLM (all-MiniLM-L6-v2, BERT): sentence-embedding cosine to the dense model for Saten,
TT-only and plain SVD at matched parameter budgets, before and after a short distillation.

    python benchmarks/minilm.py [--fractions 0.75 0.6] [--density 0.25] [--steps 100]

Shapes: results/layer_shapes-minilm-<format>.jsonl (benchmarks/layer_shapes.py --model minilm).
Sentences: the held-out gensim Wikipedia articles split into sentences (real prose the
model never saw in this project); embeddings are mean-pooled over the attention mask, as the
model's sentence-transformers config does.  Distillation: MSE to the dense model's last
hidden states on sentences of the calibration articles, compressed layers only.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import torch
from _budgets import run_grid
from _report import RESULTS, load_rows, table
from layer_shapes import found_layers

import compressors
from compressors import load_model
from compressors.corpus import wikipedia

JSONL = RESULTS / "minilm.jsonl"
MARKDOWN = Path(__file__).parent / "minilm.md"
METHODS = ("saten", "saten-2:4", "tt", "svd")


def sentences(n: int, part: str = "evaluation") -> list[str]:
    text = re.sub(r"\s+", " ", wikipedia(part))
    out = [s.strip() for s in re.split(r"(?<=[.!?]) ", text) if 40 <= len(s.strip()) <= 300 and "|" not in s]
    return out[:: max(1, len(out) // n)][:n]


@torch.no_grad()
def embed(model, tok, texts: list[str], batch: int = 32) -> torch.Tensor:
    outs = []
    for i in range(0, len(texts), batch):
        enc = tok(texts[i:i + batch], padding=True, truncation=True, max_length=128, return_tensors="pt")
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        outs.append((hidden * mask).sum(1) / mask.sum(1))
    return torch.cat(outs)


def cosine(a: torch.Tensor, b: torch.Tensor) -> dict:
    c = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    return {"cosine_mean": float(c.mean()), "cosine_min": float(c.min())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fractions", nargs="+", type=float, default=[0.75, 0.6])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--format", default="ttm", choices=["ttm", "tt"])
    p.add_argument("--density", type=float, default=0.25)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch", type=int, default=8, help="sentences per distillation step")
    p.add_argument("--sentences", type=int, default=256)
    p.add_argument("--fresh", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(2)
    if args.fresh and JSONL.exists():
        JSONL.unlink()
    found = found_layers("minilm", args.format)
    if not found:
        sys.exit("no searched shapes: run benchmarks/layer_shapes.py --model minilm first")
    dense, tok = load_model("minilm")
    texts = sentences(args.sentences)
    reference = embed(dense, tok, texts)
    # distillation inputs look like the evaluation inputs: single sentences with [CLS] … [SEP]
    train = [tok(t, truncation=True, max_length=128, return_tensors="pt")["input_ids"]
             for t in sentences(args.steps * args.batch, "calibration")]
    ft = compressors.FinetuneConfig(steps=args.steps, lr=args.lr, batch=args.batch, distill=True)

    def score(model) -> dict:
        before = cosine(embed(model, tok, texts), reference)
        tuned = compressors.finetune(model, train, ft, teacher=copy.deepcopy(dense))
        return {"before": before, "after": cosine(embed(model, tok, texts), reference), "finetune": tuned,
                "sentences": len(texts)}

    run_grid(JSONL, dense, args.fractions, args.methods, found, args.format, args.density, score)
    text = report_markdown()
    MARKDOWN.write_text(text + "\n")
    print(text)


def report_markdown() -> str:
    rows = [r for r in load_rows(JSONL)]
    body = []
    for fraction in sorted({r["fraction"] for r in rows}, reverse=True):
        for method in METHODS:
            r = next((x for x in rows if x["method"] == method and x["fraction"] == fraction), None)
            if r is None:
                continue
            if "error" in r:
                body.append([f"{method} @ {fraction:g}", "does not fit", "", "", "", "", r["error"]])
                continue
            label = method + (f" (density {r['density']:g})" if r.get("density") else "")
            share = f"{r['params']:,} / {r['dense']:,} = {r['params'] / r['dense']:.3f}"
            body.append([f"{label} @ {fraction:g}", share, r["before"]["cosine_mean"], r["before"]["cosine_min"],
                         r["after"]["cosine_mean"], r["after"]["cosine_min"],
                         f"{r['finetune']['loss_start']:.2e} → {r['finetune']['loss_end']:.2e}"])
    first = next(r for r in rows if "finetune" in r)
    ft = first["finetune"]
    return "\n".join([
        "# MiniLM sentence embeddings at matched parameters", "",
        f"Printed by `benchmarks/minilm.py` (rows in `results/minilm.jsonl`) on {first['machine']}, torch "
        f"{torch.__version__}. Model: all-MiniLM-L6-v2 (BertModel, 36 encoder linears). Score: cosine between "
        f"the compressed and the dense model's mean-pooled embeddings of {first['sentences']} sentences of the "
        "held-out gensim Wikipedia articles (mean and worst sentence). Budget = fraction × the dense parameters "
        "(weights + biases) of the encoder linears; embeddings stay dense. Distillation: "
        f"{ft['steps']} AdamW steps (lr {ft['lr']}, {ft['batch']} sentences each) of MSE to the dense last hidden "
        "states on sentences of the calibration articles (with [CLS]/[SEP], as evaluated), compressed layers only, "
        "the same for every method.", "",
        table(["method @ budget", "parameters (replaced layers)", "cosine before", "worst before",
               "cosine after distillation", "worst after", "distillation loss"], body), ""])


if __name__ == "__main__":
    main()
