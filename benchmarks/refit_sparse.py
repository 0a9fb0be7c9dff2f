"""Activation-aware Saten's residual refit: the direct per-row solve against conjugate gradients.

    python benchmarks/refit_sparse.py [--layer 10] [--samples 32]

``whitening.refit_sparse`` fits the kept residual values to the activations, per output row the
least-squares Σ_JJ s_J = (Σ e)_J on the row's support J.  It used to run 40 conjugate-gradient
steps of a dense [out, in] × [in, in] product on every row; it now solves rows whose |J| is
small enough directly (Cholesky of Σ_JJ).  On every linear of one SmolLM2-135M decoder layer,
E is what the whitened two-core TT-matrix (1, M) | (N, 1) at ε = 0.3 leaves (the shape the
activation-aware search returns on most trained layers), Σ the input second moment on
``--samples`` × 512 calibration tokens, the support the top-K of |E_ij|·‖L_j‖ (as Saten picks
it).  Printed: seconds of each (one run, CG then direct on each layer), the relative activation
error ‖(E − S)L‖ / ‖W L‖ of each, and the relative difference of the values.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _report import RESULTS, append_row, load_rows, machine, main_with_report, table

import compressors
from compressors.calibration import input_moments
from compressors.corpus import calibration_windows, wikipedia
from compressors.saten import SparseResidual
from compressors.whitening import refit_sparse, whitened_tt_layer, whitening_factor

JSONL = RESULTS / "refit_sparse.jsonl"
MARKDOWN = Path(__file__).parent / "refit_sparse.md"
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
           "mlp.up_proj", "mlp.down_proj")
DENSITIES = (0.05, 0.2)  # model_pareto's Saten residual, and a dense one
EPS = 0.3


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(2)
    model, tok = compressors.load_model("smollm2")
    calib = calibration_windows(tok, wikipedia("calibration"), args.samples, 512)
    names = [f"model.layers.{args.layer}.{n}" for n in LINEARS]
    moments = input_moments(model, calib, names)
    for name in names:
        w = model.get_submodule(name).weight.detach().double()
        factor = whitening_factor(moments[name])
        moment = factor @ factor.T
        tt = whitened_tt_layer(w, "ttm", (1, w.shape[0]), (w.shape[1], 1), EPS, factor)
        e = w - tt.weight().detach().double()
        norm2 = float(((w @ moment) * w).sum())
        for density in DENSITIES:
            indices = SparseResidual.top_k(e, density, e * factor.norm(dim=1)[None, :]).indices
            row = {"layer": name, "shape": list(w.shape), "density": density, "machine": machine()}
            for label, direct in (("cg", False), ("direct", True)):
                start = time.perf_counter()
                values = refit_sparse(e, indices, factor, direct=direct)
                row[f"{label}_seconds"] = time.perf_counter() - start
                s = torch.zeros(e.numel(), dtype=torch.float64).index_put((indices,), values).reshape(e.shape)
                row[f"{label}_error"] = (float((((e - s) @ moment) * (e - s)).sum()) / norm2) ** 0.5
                row[f"{label}_values"] = values
            row["values_rel_diff"] = float((row.pop("cg_values") - row["direct_values"]).norm()
                                           / row.pop("direct_values").norm())
            append_row(JSONL, row)
            print(row, flush=True)


def report_markdown() -> str:
    rows = load_rows(JSONL)
    body = [[r["layer"].split(".", 3)[-1], "×".join(map(str, r["shape"])), r["density"], r["cg_seconds"],
             r["direct_seconds"], f"{r['cg_seconds'] / r['direct_seconds']:.1f}", f"{r['cg_error']:.8f}",
             f"{r['direct_error']:.8f}", f"{r['values_rel_diff']:.1e}"] for r in rows]
    totals = []
    for density in sorted({r["density"] for r in rows}):
        same = [r for r in rows if r["density"] == density]
        cg, direct = sum(r["cg_seconds"] for r in same), sum(r["direct_seconds"] for r in same)
        totals.append(f"density {density:g}: CG {cg:.2f} s, direct {direct:.2f} s ({cg / direct:.1f}× less)")
    return "\n".join([
        "# Saten's residual refit: direct solve against conjugate gradients", "",
        f"Printed by `benchmarks/refit_sparse.py` (rows in `results/refit_sparse.jsonl`) on "
        f"{rows[0]['machine'] if rows else '—'}, torch {torch.__version__}. E = W − TT(W) of the whitened "
        f"(1, M) | (N, 1) TT-matrix at ε = {EPS:g}; support: top-K of |E_ij|·‖L_j‖; error: ‖(E − S)L‖ / ‖W L‖ "
        "on the calibration moment; CG: 40 steps on every row (before); direct: Cholesky of Σ_JJ on rows "
        "where that costs less than the CG steps (now). Seconds from one run, the two one after the "
        "other on each layer.", "",
        table(["layer", "out × in", "density", "CG s", "direct s", "CG / direct", "error, CG", "error, direct",
               "values rel. diff"], body), "",
        "All layers: " + "; ".join(totals) + ".", ""])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layer", type=int, default=10)
    p.add_argument("--samples", type=int, default=32, help="calibration windows of 512 tokens")
    main_with_report(p, run, report_markdown, MARKDOWN)


if __name__ == "__main__":
    main()
