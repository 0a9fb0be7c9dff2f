"""TT / Saten compression of whole models from a plan: swap, accounting, save/load, generate,
fine-tuning in compressed space, on tiny random Llama (GQA) and BERT models."""

import json

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

import compressors
from compressors import FinetuneConfig, FlatLLMConfig, SatenConfig, TTConfig
from compressors.architectures import decoder_weight_params
from compressors.finetune import trainable_parameters
from compressors.saten import SatenLinear
from compressors.targets import target_linears
from compressors.tt_linear import TTLinear, TTMatrixLinear
from shapesearch.errors import ArgumentError, ShapesearchError
from shapesearch.matrix import LayerSearchConfig, Plan, make_plan, search_layers

FAST = LayerSearchConfig(population=6, generations=2, stall=2, polish_rounds=1)


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=24, intermediate_size=36, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=6, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def tiny_bert(seed=0):
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=64, hidden_size=24, intermediate_size=48, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=64)
    return BertModel(cfg).eval()


def plan_for(model, eps, fmt="ttm"):
    weights = {n: m.weight.detach().double().numpy() for n, m in target_linears(model).items()}
    found = search_layers(weights, [eps], fmt, FAST, workers=0)
    norms2 = {n: float(np.sum(w ** 2)) for n, w in weights.items()}
    return json.loads(json.dumps(make_plan(found, norms2, None).to_dict()))  # as read back from plan.json


IDS = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(3))


def assert_same_logits(a: torch.Tensor, b: torch.Tensor) -> None:
    """Float32 logits of the same weights: equal up to the reassociation a BLAS may choose
    (kernel and blocking differ by CPU, memory alignment and thread count), i.e. a few ulp of
    values of order 1 accumulated over two layers, never a different model."""
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fmt", ["ttm", "tt"])
def test_full_rank_tt_and_density_one_saten_leave_the_model_unchanged(fmt):
    for build in (tiny_llama, tiny_bert):
        dense = build()
        out = lambda m: m(input_ids=IDS).logits if hasattr(m, "lm_head") else m(input_ids=IDS).last_hidden_state  # noqa: E731
        ref = out(dense).detach()
        plan = plan_for(dense, 0.999, fmt)
        for rec in plan["layers"].values():
            rec["eps"] = 0.0  # same shapes, full ranks
        saten = build()
        compressors.compress(saten, SatenConfig(plan=plan, density=1.0))
        assert torch.allclose(out(saten), ref, atol=1e-5)
        tt = build()
        compressors.compress(tt, TTConfig(plan=plan))
        assert torch.allclose(out(tt), ref, atol=1e-4)


def test_plan_params_are_the_built_layers_params_and_accounting_adds_up():
    model = tiny_llama()
    plan = plan_for(model, 0.5)
    total = sum(p.numel() for p in model.parameters())
    report = compressors.compress(model, SatenConfig(plan=plan, density=0.1))
    assert report["replaced_layers"] == 14
    for row in report["layers"]:
        layer = model.get_submodule(row["name"])
        assert isinstance(layer, SatenLinear)
        rec = plan["layers"][row["name"]]
        nnz = round(0.1 * rec["dense_params"])
        assert layer.residual.nnz == nnz
        assert row["params"] == rec["params"] + nnz + (0 if layer.bias is None else layer.bias.numel())
        assert row["bytes"] > 4 * row["params"]  # indices are counted
    assert report["replaced_params_after"] == sum(r["params"] for r in report["layers"])
    removed = report["replaced_params_before"] - report["replaced_params_after"]
    assert report["params_after"] == total - removed == sum(p.numel() for p in model.parameters())
    assert 0 < report["replaced_ratio"] < 1 and report["replaced_ratio"] < report["model_ratio"] < 1


@pytest.mark.parametrize("config", [lambda p: TTConfig(plan=p), lambda p: SatenConfig(plan=p, density=0.2),
                                    lambda p: SatenConfig(plan=p, nm=(2, 4))], ids=["tt", "saten", "saten-2:4"])
@pytest.mark.parametrize("fmt", ["ttm", "tt"])
def test_save_load_gives_identical_logits_and_generates(config, fmt, tmp_path):
    model = tiny_llama()
    plan = plan_for(model, 0.4, fmt)
    compressors.compress(model, config(plan))
    compressors.save(model, tmp_path / "m")
    again = compressors.load(tmp_path / "m")
    assert type(again.get_submodule("model.layers.1.mlp.up_proj")) is type(
        model.get_submodule("model.layers.1.mlp.up_proj"))
    with torch.no_grad():
        assert_same_logits(again(input_ids=IDS).logits, model(input_ids=IDS).logits)
        out = again.generate(IDS[:1, :4], max_new_tokens=6, do_sample=False)
        full = again(input_ids=out[:, :-1]).logits[0, -1].argmax()
    assert out.shape == (1, 10) and int(full) == int(out[0, -1])  # cached decoding = full forward


def test_encoder_save_load(tmp_path):
    model = tiny_bert()
    compressors.compress(model, SatenConfig(plan=plan_for(model, 0.4), density=0.05))
    compressors.save(model, tmp_path / "bert")
    again = compressors.load(tmp_path / "bert")
    assert type(again).__name__ == "BertModel"
    with torch.no_grad():
        assert_same_logits(again(input_ids=IDS).last_hidden_state, model(input_ids=IDS).last_hidden_state)


def test_finetune_trains_only_compressed_layers_keeps_masks_and_lowers_the_loss():
    model, dense = tiny_llama(), tiny_llama()
    compressors.compress(model, SatenConfig(plan=plan_for(model, 0.6), nm=(2, 4)))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = {n: b.clone() for n, b in model.named_buffers() if "indices" in n}
    windows = [torch.randint(0, 64, (1, 16), generator=torch.Generator().manual_seed(i)) for i in range(4)]
    for distill in (False, True):
        rep = compressors.finetune(model, windows, FinetuneConfig(steps=25, lr=3e-3, distill=distill),
                                   teacher=dense, progress=False)
        assert rep["loss_end"] < rep["loss_start"]
    trainable = {id(p) for p in trainable_parameters(model)}
    for n, p in model.named_parameters():
        changed = not torch.equal(p, before[n])
        assert changed == (id(p) in trainable), n
        assert p.requires_grad  # flags restored
    assert all(torch.equal(b, masks[n]) for n, b in model.named_buffers() if n in masks)


def test_decoder_linears_finetune_trains_what_flat_llm_left():
    model = tiny_llama()
    windows = [torch.randint(0, 64, (1, 16), generator=torch.Generator().manual_seed(i)) for i in range(4)]
    compressors.compress(model, FlatLLMConfig(0.3), calibration=windows * 8)
    with pytest.raises(ShapesearchError, match="no compressed layers"):
        compressors.finetune(model, windows, FinetuneConfig(steps=1), progress=False)
    trainable = trainable_parameters(model, "decoder-linears")
    # every decoder-linear weight the budget counts, and nothing outside the decoder stack
    assert sum(p.numel() for p in trainable if p.dim() == 2) == decoder_weight_params(model)
    assert all(id(p) not in {id(q) for q in trainable} for p in model.get_input_embeddings().parameters())
    rep = compressors.finetune(model, windows, FinetuneConfig(steps=20, lr=3e-3, train="decoder-linears"),
                               progress=False)
    assert rep["loss_end"] < rep["loss_start"] and rep["trainable_params"] == sum(p.numel() for p in trainable)
    with pytest.raises(ArgumentError, match="train"):
        FinetuneConfig(train="everything")


def test_finetune_follows_the_learning_rate_schedule(monkeypatch):
    model = tiny_llama()
    compressors.compress(model, TTConfig(plan=plan_for(model, 0.5)))
    windows = [torch.randint(0, 64, (1, 16), generator=torch.Generator().manual_seed(i)) for i in range(4)]
    used, step = [], torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        used.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    config = FinetuneConfig(steps=20, lr=1e-3, schedule="cosine", warmup=0.2)
    rep = compressors.finetune(model, windows, config, progress=False)
    assert rep["schedule"] == "cosine" and len(used) == 20
    peak = used.index(max(used))
    assert peak == 4 and used[peak] == pytest.approx(1e-3)  # 4 warmup steps climb to lr at the 5th
    assert all(a < b for a, b in zip(used[:peak], used[1:peak + 1]))
    assert all(a > b > 0 for a, b in zip(used[peak:], used[peak + 1:]))  # then decays, never to zero
    assert used[-1] < 0.05 * 1e-3
    used.clear()
    compressors.finetune(model, windows, FinetuneConfig(steps=5, lr=1e-3), progress=False)
    assert used == [pytest.approx(1e-3)] * 5


def test_finetune_with_balance_rescales_every_tt_layer_without_changing_the_model():
    model = tiny_llama()
    compressors.compress(model, SatenConfig(plan=plan_for(model, 0.5), density=0.1))
    ids = torch.randint(0, 64, (1, 16), generator=torch.Generator().manual_seed(0))
    tts = [m for m in model.modules() if isinstance(m, TTMatrixLinear)]
    assert tts and any(max(c.norm() for c in m.cores) > 1.5 * min(c.norm() for c in m.cores) for m in tts)
    with torch.no_grad():
        before = model(input_ids=ids).logits
    rep = compressors.finetune(model, [ids], FinetuneConfig(steps=0, balance=True), progress=False)
    assert rep["balance"] is True
    for m in tts:
        norms = torch.stack([c.norm() for c in m.cores])
        assert torch.allclose(norms, norms[0].expand_as(norms), rtol=1e-4)
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, before, rtol=1e-4, atol=1e-4)


def test_encoder_finetune_distills():
    model, dense = tiny_bert(), tiny_bert()
    compressors.compress(model, TTConfig(plan=plan_for(model, 0.5, "tt")))
    assert isinstance(model.get_submodule("encoder.layer.0.intermediate.dense"), TTLinear)
    windows = [torch.randint(0, 64, (1, 16), generator=torch.Generator().manual_seed(i)) for i in range(4)]
    rep = compressors.finetune(model, windows, FinetuneConfig(steps=20, lr=3e-3), teacher=dense, progress=False)
    assert rep["loss"] == "distillation" and rep["loss_end"] < rep["loss_start"]


def test_configs_take_a_plan_a_dict_or_a_path_and_compress_alike(tmp_path):
    plan = Plan.from_dict(plan_for(tiny_llama(), 0.5))
    path = plan.save(tmp_path / "plan.json")
    configs = [TTConfig(plan=plan), TTConfig(plan=plan.to_dict()), TTConfig(plan=path), TTConfig(plan=str(path))]
    assert all(c.plan == plan for c in configs)
    logits = []
    for config in configs[::3]:
        model = tiny_llama()
        compressors.compress(model, config)
        assert not model.get_submodule("model.layers.0.mlp.up_proj").training  # the model's mode is kept
        with torch.no_grad():
            logits.append(model(input_ids=IDS).logits)
    assert torch.equal(*logits)  # same plan, same code path
    with pytest.raises(ArgumentError, match="^nm must be"):
        SatenConfig(plan=plan, nm=(5, 4))


def test_bad_inputs(tmp_path):
    model = tiny_llama()
    plan = plan_for(model, 0.5)
    with pytest.raises(ShapesearchError, match="exactly one of density"):
        compressors.compress(model, SatenConfig(plan=plan))
    with pytest.raises(ShapesearchError, match="density must be in"):
        compressors.compress(model, SatenConfig(plan=plan, density=1.5))
    for bad in (-1, 0.5, True, 11):
        with pytest.raises(ArgumentError, match=r"^alternations must be an integer in \[0, 10\]"):
            SatenConfig(plan=plan, density=0.1, alternations=bad)
    with pytest.raises(ShapesearchError, match="not found"):
        compressors.compress(model, TTConfig(plan=tmp_path / "none.json"))
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(ShapesearchError, match="not JSON"):
        compressors.compress(model, TTConfig(plan=tmp_path / "bad.json"))
    bert_plan = plan_for(tiny_bert(), 0.5)
    with pytest.raises(ShapesearchError, match="make the plan from the same model"):
        compressors.compress(model, TTConfig(plan=bert_plan))
    with pytest.raises(ShapesearchError, match="2:4|N_in|group|divis"):
        odd = {**plan, "layers": {"model.layers.0.self_attn.q_proj": plan["layers"]["model.layers.0.self_attn.q_proj"]}}
        m = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=24, intermediate_size=36, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2, head_dim=6))
        compressors.compress(m, SatenConfig(plan=odd, nm=(2, 5)))
    compressors.compress(model, TTConfig(plan=plan))
    assert isinstance(model.get_submodule("model.layers.0.mlp.down_proj"), TTMatrixLinear)
    with pytest.raises(ShapesearchError, match="already compressed"):
        compressors.compress(model, TTConfig(plan=plan))
    with pytest.raises(ShapesearchError, match="teacher"):
        compressors.finetune(model, [IDS[:1]], FinetuneConfig(steps=1, distill=True))
