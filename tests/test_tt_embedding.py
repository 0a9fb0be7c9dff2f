"""TT embeddings and Saten(e): lookups equal the reconstructed table's rows, padded ids never
come out, a tied lm_head gives h·Eᵀ over the real vocabulary, and a compressed model
survives transformers' weight tying and a save → load."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import compressors
from compressors.accounting import dense_params, layer_params
from compressors.layer_plans import plan_layers
from compressors.tt_embedding import TiedLMHead, TTEmbedding, frequency_weights, padded_vocab
from tests.tiny_models import tiny_llama_dir

SHAPES = {"tt": ((4, 6, 4), (3, 4)), "ttm": ((12, 8), (3, 4))}
RESIDUALS = ({}, {"density": 0.1}, {"nm": (2, 4)})


@pytest.fixture(scope="module")
def table() -> torch.Tensor:
    return torch.randn(90, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def test_padded_vocab_is_the_smallest_seven_smooth_size_at_least_v():
    assert padded_vocab(49152) == 49152
    assert padded_vocab(30522) == 30618  # 2·3⁶·7
    assert padded_vocab(1) == 1 and padded_vocab(11) == 12
    with pytest.raises(ValueError):
        padded_vocab(0)


@pytest.mark.parametrize("fmt", SHAPES)
@pytest.mark.parametrize("kw", RESIDUALS, ids=["tt", "topk", "nm"])
def test_lookup_and_tied_logits_equal_the_reconstructed_table(table, fmt, kw):
    emb = TTEmbedding.from_table(table, fmt, *SHAPES[fmt], eps=0.3, **kw)
    full = emb.weight().detach()
    assert full.shape == (90, 12)  # the padded rows are not part of the table
    ids = torch.tensor([[0, 5, 89], [17, 17, 3]])
    torch.testing.assert_close(emb(ids), full[ids], rtol=0, atol=1e-12)
    hidden = torch.randn(2, 5, 12, dtype=torch.float64)
    logits = emb.logits(hidden)
    assert logits.shape == (2, 5, 90)
    torch.testing.assert_close(logits, hidden @ full.T, rtol=0, atol=1e-12)
    error = float((full - table).norm() / table.norm())
    assert error <= 0.3 + 1e-9
    if kw:  # the residual only lowers the error of the TT part alone
        assert error < float((emb.tt.weight().detach()[:90] - table).norm() / table.norm())


@pytest.mark.parametrize("fmt", SHAPES)
def test_exact_tt_gives_the_table_and_padded_ids_are_refused(table, fmt):
    emb = TTEmbedding.from_table(table, fmt, *SHAPES[fmt], eps=0.0)
    torch.testing.assert_close(emb(torch.arange(90)), table, rtol=0, atol=1e-12)
    for bad in (90, 95, -1):  # 90..95 are padded rows
        with pytest.raises(IndexError):
            emb(torch.tensor([bad]))


def test_gradients_reach_the_cores_and_the_residual_values(table):
    emb = TTEmbedding.from_table(table.float(), "tt", *SHAPES["tt"], eps=0.3, density=0.1)
    emb(torch.tensor([1, 2, 3])).sum().backward()
    assert all(c.grad is not None and c.grad.abs().sum() > 0 for c in emb.tt.cores)
    grad = emb.residual.values.grad
    rows = emb.residual.rows_cols()[0]
    assert grad is not None and (grad[~torch.isin(rows, torch.tensor([1, 2, 3]))] == 0).all()


def test_accounting_counts_cores_and_kept_entries_against_the_real_table(table):
    emb = TTEmbedding.from_table(table, "tt", *SHAPES["tt"], eps=0.3, density=0.1)
    assert dense_params(emb) == 90 * 12
    assert layer_params(emb) == sum(c.numel() for c in emb.tt.cores) + emb.residual.nnz
    assert emb.residual.nnz == round(0.1 * 90 * 12)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return tiny_llama_dir(tmp_path_factory.mktemp("tiny-llama"))


def _plan(model, eps: float) -> dict:
    return plan_layers(model, eps=eps, fmt="tt", layers="embed", embeddings=True, generations=2, population=4,
                       workers=0).to_dict()


@pytest.mark.parametrize("kind", ["tt", "saten"])
def test_tied_model_compresses_survives_tie_weights_and_save_load(llama_dir, tmp_path, kind):
    model = compressors.load(llama_dir).double()
    ids = torch.tensor([[1, 5, 9, 30, 200, 7]])
    plan = _plan(model, 0.3)
    (entry,) = plan["layers"].values()  # the padded vocabulary is searched; its zero rows are not dense entries
    vocab, dim = model.get_input_embeddings().weight.shape
    assert entry["out_features"] > vocab and entry["rows"] == vocab and entry["dense_params"] == vocab * dim
    assert plan["summary"]["dense_params"] == vocab * dim
    config = compressors.TTConfig(plan) if kind == "tt" else compressors.SatenConfig(plan, density=0.05)
    report = compressors.compress(model, config)
    emb = model.get_input_embeddings()
    assert isinstance(emb, TTEmbedding) and isinstance(model.lm_head, TiedLMHead)
    assert model.lm_head.embedding is emb
    assert report["replaced_layers"] == 1 and report["replaced_ratio"] < 1
    # the compressed table serves both roles, and is counted once
    table = emb.weight().detach()
    hidden = model.model(ids).last_hidden_state
    with torch.no_grad():
        logits = model(ids).logits
    torch.testing.assert_close(logits, hidden.detach() @ table.T, rtol=1e-10, atol=1e-10)
    assert logits.shape[-1] == model.config.vocab_size
    assert sum(p.numel() for p in model.parameters()) == report["params_after"]
    model.tie_weights()  # transformers' tying must not put a dense table back
    assert isinstance(model.lm_head, TiedLMHead)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, logits, rtol=0, atol=0)
    compressors.save(model, tmp_path / "out")
    loaded = compressors.load(tmp_path / "out")
    assert loaded.lm_head.embedding is loaded.get_input_embeddings()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, logits, rtol=1e-12, atol=1e-12)
        # cached generation equals the full forward's greedy continuation
        out = loaded.generate(ids, max_new_tokens=5, do_sample=False, use_cache=True)
        seq = ids
        for _ in range(5):
            seq = torch.cat([seq, loaded(seq).logits[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(out, seq)


def test_full_rank_embedding_leaves_the_logits_unchanged(llama_dir):
    dense = compressors.load(llama_dir).double()
    model = compressors.load(llama_dir).double()
    compressors.compress(model, compressors.TTConfig(_plan(model, 1e-9)))
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, dense(ids).logits, rtol=1e-9, atol=1e-9)


def test_untied_embedding_leaves_the_head_dense(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).eval()
    compressors.compress(model, compressors.TTConfig(_plan(model, 0.3)))
    assert isinstance(model.get_input_embeddings(), TTEmbedding) and isinstance(model.lm_head, nn.Linear)
    assert "tied_head" not in model.config.shapesearch_compression


def test_command_line_plans_and_compresses_the_tied_embedding(llama_dir, tmp_path, capsys):
    from shapesearch.cli.main import main

    plan = tmp_path / "plan.json"
    code = main(["layers", "--model", str(llama_dir), "--embeddings", "--layers", "embed", "--format", "tt", "--eps",
                 "0.3", "--generations", "2", "--population", "4", "--workers", "0", "--out", str(plan), "--json"])
    assert code == 0, capsys.readouterr().err
    layers = json.loads(capsys.readouterr().out)["layers"]
    assert list(layers) == ["model.embed_tokens"] and layers["model.embed_tokens"]["type"] == "embedding"
    out = tmp_path / "saten-e"
    code = main(["compress", "saten", "--model", str(llama_dir), "--plan", str(plan), "--density", "0.05",
                 "--finetune-steps", "2", "--lr-schedule", "cosine", "--warmup", "0.5", "--samples", "2", "--seqlen",
                 "16", "--out", str(out), "--json"])
    assert code == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert report["replaced_layers"] == 1 and report["finetune"]["steps"] == 2
    assert report["finetune"]["schedule"] == "cosine" and report["finetune"]["warmup"] == 0.5
    assert report["embedding_weights"] == "frequency, head-whitened"  # the head is tied: its input counts
    loaded = compressors.load(out)
    assert isinstance(loaded.lm_head, TiedLMHead) and loaded.lm_head.embedding is loaded.get_input_embeddings()
    assert loaded.get_input_embeddings().mix is not None
    code = main(["eval", "--model", str(out), "--no-speed", "--max-windows", "1", "--window", "32", "--json"])
    assert code == 0 and math.isfinite(json.loads(capsys.readouterr().out)["perplexity"])


def test_frequency_weighted_rows_bound_the_weighted_error_and_read_back_scaled(table):
    ids = torch.tensor([3, 3, 3, 3, 7, 7, 50, 89, 89, 89])
    weights = frequency_weights(ids, 90)
    assert weights[3] == pytest.approx(5 ** 0.5) and weights[0] == 1.0
    emb = TTEmbedding.from_table(table, "tt", *SHAPES["tt"], eps=0.3, density=0.05, row_weights=weights)
    full = emb.weight().detach()
    rows = torch.tensor([[0, 3, 89]])
    torch.testing.assert_close(emb(rows), full[rows], rtol=0, atol=1e-12)
    hidden = torch.randn(4, 12, dtype=torch.float64)
    torch.testing.assert_close(emb.logits(hidden), hidden @ full.T, rtol=0, atol=1e-12)
    tt_only = emb.tt.weight().detach()[:90] * emb.row_scale.detach()[:, None]
    weighted = ((tt_only - table) * weights[:, None]).norm() / (table * weights[:, None]).norm()
    assert float(weighted) <= 0.3 + 1e-9
    assert layer_params(emb) == sum(c.numel() for c in emb.tt.cores) + emb.residual.nnz + 90
    # frequent rows come out closer than with the plain fit at the same ε
    plain = TTEmbedding.from_table(table, "tt", *SHAPES["tt"], eps=0.3).weight().detach()
    frequent = torch.tensor([3, 7, 89])
    assert (tt_only[frequent] - table[frequent]).norm() < (plain[frequent] - table[frequent]).norm()
    with pytest.raises(ValueError):
        TTEmbedding.from_table(table, "tt", *SHAPES["tt"], eps=0.3, row_weights=torch.zeros(90))


def _anisotropic_moment(dim: int = 12) -> torch.Tensor:
    """E[h hᵀ] of hidden states with two loud directions and ten quiet ones, like an LM's."""
    basis = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64,
                                        generator=torch.Generator().manual_seed(1)))[0]
    return (basis * torch.tensor([100.0, 50.0] + [0.01] * (dim - 2), dtype=torch.float64)) @ basis.T


def test_head_whitened_fit_bounds_the_logit_error_and_serves_both_uses(table):
    moment = _anisotropic_moment()
    emb = TTEmbedding.from_table(table, "tt", *SHAPES["tt"], eps=0.3, density=0.05,
                                 row_weights=torch.linspace(1, 3, 90, dtype=torch.float64), head_moment=moment)
    full = emb.weight().detach()
    ids = torch.tensor([[0, 3, 89]])
    torch.testing.assert_close(emb(ids), full[ids], rtol=0, atol=1e-10)
    hidden = torch.randn(4, 12, dtype=torch.float64)
    torch.testing.assert_close(emb.logits(hidden), hidden @ full.T, rtol=0, atol=1e-10)
    assert layer_params(emb) == sum(c.numel() for c in emb.tt.cores) + emb.residual.nnz + 90 + 12 * 12
    # at one parameter budget, the whitened fit's logits on hidden states of that moment are closer
    chol = torch.linalg.cholesky(moment + 1e-9 * torch.eye(12, dtype=torch.float64))
    states = torch.randn(2000, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) @ chol.T

    def logit_error(e: TTEmbedding) -> float:
        return float((states @ (e.weight().detach() - table).T).norm())

    plain, _ = TTEmbedding.within(table, 700, "tt", (90,), (12,))
    whitened, _ = TTEmbedding.within(table, 700, "tt", (90,), (12,), head_moment=moment)
    assert layer_params(whitened) <= 700 and logit_error(whitened) < 0.5 * logit_error(plain)
    with pytest.raises(ValueError):
        TTEmbedding.from_table(table, "tt", *SHAPES["tt"], eps=0.3, head_moment=torch.eye(5))
    with pytest.raises(ValueError):
        TTEmbedding.from_table(table, "tt", *SHAPES["tt"], eps=0.3, head_moment=torch.zeros(12, 12))


@pytest.mark.parametrize("kw", [{}, {"density": 0.1}, {"nm": (2, 4)}, {"density": 0.1, "head_moment": "moment"}],
                         ids=["tt", "topk", "nm", "whitened"])
def test_spec_and_state_dict_rebuild_identical_lookups(table, kw):
    if "head_moment" in kw:
        kw = {**kw, "head_moment": _anisotropic_moment()}
    weights = torch.linspace(1, 3, 90, dtype=torch.float64)
    emb = TTEmbedding.from_table(table.float(), "ttm", *SHAPES["ttm"], eps=0.3, row_weights=weights, **kw)
    copy_ = TTEmbedding.from_spec(json.loads(json.dumps(emb.spec())))
    copy_.load_state_dict(emb.state_dict())
    ids = torch.tensor([0, 44, 89])
    torch.testing.assert_close(copy_(ids), emb(ids), rtol=0, atol=0)


@pytest.mark.parametrize("kw", [{}, {"density": 0.1}, {"row_weights": torch.linspace(1, 4, 90)}],
                         ids=["tt", "saten", "weighted"])
def test_within_fits_a_parameter_budget_with_the_smallest_eps_it_finds(table, kw):
    budget = 400
    emb, eps = TTEmbedding.within(table, budget, "tt", (90,), (12,), **kw)
    assert layer_params(emb) <= budget
    looser = TTEmbedding.from_table(table, "tt", (90,), (12,), eps * 0.9, **{k: v for k, v in kw.items()})
    assert layer_params(looser) > budget  # a clearly smaller ε no longer fits
    with pytest.raises(ValueError):
        TTEmbedding.within(table, 50, "tt", (90,), (12,), density=0.1)  # the residual alone is 108
