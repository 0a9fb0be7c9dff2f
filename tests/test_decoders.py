"""Every current decoder family transformers ships, found by structure: FLAT-LLM, SVD-LLM and
Saten on tiny random models built from configs (no download), in float64.

Full-rank rewrites leave the logits unchanged, FLAT-LLM at 20 % runs, save → load gives the
same logits, and the KV-cached decode equals the full forward — the families differ in
fused projections, QK-norms, pre/post norms, sliding windows, soft-capping, embedding
scaling and head sizes that are not hidden / heads.
"""

from __future__ import annotations

import json
import struct
import time

import pytest
import torch
import transformers as hf

import compressors
from compressors import FlatLLMConfig, SatenConfig, SVDLLMConfig
from compressors.architectures import attention_parts, decoder_layers, decoder_linear_params, dims, mlp_parts
from compressors.calibration import Accumulator, first_layer_inputs, run_layer
from compressors.conv1d_linear import Conv1DLinear, as_linears
from compressors.flat_llm import absorb_values, nystrom_select, prune_mlp
from compressors.layer_plans import plan_layers
from compressors.low_rank import factorize
from shapesearch.errors import ShapesearchError

COMMON = dict(vocab_size=96, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=12, max_position_embeddings=256, pad_token_id=0, bos_token_id=1,
              eos_token_id=2)
SLIDING = {"sliding_window": 8}  # shorter than the test windows, so the local layers really are local
FAMILIES = {
    "llama": (hf.LlamaConfig, {}),
    "llama-1kv-biases": (hf.LlamaConfig, {"num_key_value_heads": 1, "attention_bias": True, "mlp_bias": True}),
    "mistral": (hf.MistralConfig, SLIDING),
    "qwen2": (hf.Qwen2Config, {"head_dim": 8}),  # its rotary assumes hidden / heads
    "qwen3": (hf.Qwen3Config, {}),  # QK-norm
    "gemma": (hf.GemmaConfig, {}),  # embedding scaling, head size ≠ hidden / heads
    "gemma2": (hf.Gemma2Config, {**SLIDING, "attn_implementation": "eager"}),  # pre/post norms, soft-capping
    "gemma3": (hf.Gemma3TextConfig, {**SLIDING, "layer_types": ["sliding_attention", "full_attention"]}),
    "phi3": (hf.Phi3Config, {"head_dim": 8}),  # fused qkv and gate_up
    "olmo2": (hf.Olmo2Config, {}),  # QK-norm over all heads, post-norms only
    "olmo3": (hf.Olmo3Config, {}),
    "granite": (hf.GraniteConfig, {}),  # multipliers
    "cohere2": (hf.Cohere2Config, {}),  # parallel attention and MLP, interleaved rotary
    "glm4": (hf.Glm4Config, {"head_dim": 8}),  # fused gate_up, partial rotary
    "stablelm": (hf.StableLmConfig, {"head_dim": 8, "num_key_value_heads": 4}),
    "helium": (hf.HeliumConfig, {"head_dim": 8}),
    "smollm3": (hf.SmolLM3Config, {}),
    # Conv1D projections ([in, out] weights), fused [q | k | v], learned positions, no GQA
    "gpt2": (hf.GPT2Config, {"num_key_value_heads": 4, "head_dim": 8, "n_inner": 40}),
    "gptj": (hf.GPTJConfig, {"num_key_value_heads": 4, "head_dim": 8, "n_inner": 40, "rotary_dim": 4}),  # k, v, q order
}


def tiny(family: str, seed: int = 0) -> torch.nn.Module:
    config_class, extra = FAMILIES[family]
    torch.manual_seed(seed)
    config = config_class(**{**COMMON, **extra})
    model = hf.AutoModelForCausalLM.from_config(config).double().eval()
    as_linears(model)  # what loading a model does (GPT-2's Conv1D; no other family has one)
    return model


def windows(n: int = 4, length: int = 24, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 96, (1, length), generator=g) for _ in range(n)]


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-9) -> bool:
    return bool((a - b).abs().max() <= rel * b.abs().max())


def cached_step_equals_full_forward(model: torch.nn.Module, ids: torch.Tensor) -> bool:
    """The last token's logits from a KV cache of the others equal the full forward's."""
    with torch.no_grad():
        prefix = model(input_ids=ids[:, :-1], use_cache=True)
        step = model(input_ids=ids[:, -1:], cache=prefix.past_key_values, use_cache=True).logits[0, -1]
    return close(step, logits(model, ids)[0, -1], 1e-6)  # eager attention takes its softmax in float32


@pytest.mark.parametrize("family", FAMILIES)
def test_full_rank_rewrites_leave_the_logits_unchanged(family):
    model = tiny(family)
    ids = windows(1)[0]
    ref = logits(model, ids)
    d = dims(model)
    inputs = first_layer_inputs(model, windows(6, 32))
    for layer in decoder_layers(model):
        parts, mlp = attention_parts(layer, d), mlp_parts(layer, d)
        block = layer.get_submodule(mlp.path)
        stats = Accumulator(block.get_submodule(mlp.down))
        inputs = run_layer(layer, inputs)
        cov = stats.close()
        basis = torch.linalg.qr(torch.randn(d.kv_heads, d.head_dim, d.head_dim, dtype=torch.float64))[0]
        absorb_values(layer, parts, d, basis, narrow=False)  # the family's own forward, padded values
        prune_mlp(block, mlp, nystrom_select(cov, d.intermediate, 1.0), cov)
    assert close(logits(model, ids), ref, 1e-8)
    # SVD at full rank of every linear, through the same structural walk
    for layer in decoder_layers(model):
        for path, m in list(layer.named_modules()):
            if isinstance(m, torch.nn.Linear) and not path.endswith(".linear"):
                layer.set_submodule(path, factorize(m, min(m.weight.shape)))
    assert close(logits(model, ids), ref, 1e-8)


@pytest.mark.parametrize("family", FAMILIES)
def test_flat_llm_compresses_saves_loads_and_decodes_with_a_cache(family, tmp_path):
    model = tiny(family)
    report = compressors.compress(model, FlatLLMConfig(ratio=0.2), calibration=windows())
    assert 0.15 < report["decoder_linear_removed"] < 0.25
    assert all(layer["v_head_dim"] < dims(tiny(family)).head_dim for layer in report["layers"])
    ids = windows(1, seed=7)[0]
    ref = logits(model, ids)
    assert torch.isfinite(ref).all()
    assert cached_step_equals_full_forward(model, ids)
    compressors.save(model, tmp_path / "m")
    back = compressors.load(tmp_path / "m", torch.float64).eval()
    assert close(logits(back, ids), ref, 1e-6)  # some families keep float32 buffers (rotary, norms)
    cached = back.generate(ids[:, :8], max_new_tokens=6, do_sample=False, use_cache=True)
    full = back.generate(ids[:, :8], max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(cached, full)


@pytest.mark.parametrize("family", FAMILIES)
def test_svd_llm_and_saten_work_and_reload(family, tmp_path):
    model = tiny(family)
    keep = int(0.8 * decoder_linear_params(model))  # a budget: tiny layers cannot meet every ratio exactly
    compressors.compress(model, SVDLLMConfig(ratio=0.2), calibration=windows(), budget=keep)
    ids = windows(1, seed=7)[0]
    compressors.save(model, tmp_path / "svd")
    assert close(logits(compressors.load(tmp_path / "svd", torch.float64), ids), logits(model, ids), 1e-6)
    model = tiny(family)
    plan = plan_layers(model, eps=0.3, fmt="tt", generations=1, population=4, workers=0, model_name=family)
    report = compressors.compress(model, SatenConfig(plan=plan, density=0.05))
    assert report["replaced_layers"] == len(plan.layers) > 0
    assert cached_step_equals_full_forward(model, ids)
    compressors.save(model, tmp_path / "saten")
    assert close(logits(compressors.load(tmp_path / "saten", torch.float64), ids), logits(model, ids), 1e-6)


def test_a_fused_attention_that_does_not_keep_values_last_is_refused_for_flat_llm_only():
    """GPT-NeoX interleaves q, k, v per head in one projection: FLAT-LLM finds that out on the
    layer itself and says so; the methods that keep every shape still work."""
    torch.manual_seed(0)
    config = hf.GPTNeoXConfig(**{**COMMON, "head_dim": 8, "num_key_value_heads": 4})
    model = hf.AutoModelForCausalLM.from_config(config).double().eval()
    with pytest.raises(ShapesearchError, match="FLAT-LLM cannot find the values of this GPTNeoXLayer"):
        compressors.compress(model, FlatLLMConfig(ratio=0.2), calibration=windows())
    model = hf.AutoModelForCausalLM.from_config(config).double().eval()
    report = compressors.compress(model, SVDLLMConfig(ratio=0.2), calibration=windows())
    assert report["decoder_linear_removed"] > 0.1 and torch.isfinite(logits(model, windows(1)[0])).all()


@pytest.mark.parametrize("family", ["gpt-neox", "mixtral"])
def test_families_saved_under_old_checkpoint_names_reload(family, tmp_path):
    """transformers writes GPT-NeoX's lm_head as embed_out and Mixtral's fused experts as
    per-expert w1/w2/w3; a compressed model is written under its modules' names, so it reloads."""
    torch.manual_seed(0)
    if family == "gpt-neox":
        config = hf.GPTNeoXConfig(**{**COMMON, "head_dim": 8, "num_key_value_heads": 4})
    else:
        config = hf.MixtralConfig(**COMMON, num_local_experts=4, num_experts_per_tok=2)
    dtype = torch.float64 if family == "gpt-neox" else torch.float32  # the grouped expert kernel: no float64
    model = hf.AutoModelForCausalLM.from_config(config).to(dtype).eval()
    plan = plan_layers(model, eps=0.3, fmt="tt", generations=1, population=4, workers=0, model_name=family)
    compressors.compress(model, SatenConfig(plan=plan, density=0.05))
    compressors.save(model, tmp_path / "m")
    ids = windows(1, seed=7)[0]
    # not bit for bit: the reloaded model keeps its rotary buffers in float32 where .to(dtype) cast them
    assert close(logits(compressors.load(tmp_path / "m", dtype), ids), logits(model, ids),
                 1e-6 if dtype == torch.float64 else 1e-4)


def _config_only(tmp_path, config: hf.PreTrainedConfig):
    """A model directory with a config.json and no weights at all: a refusal that reads them fails."""
    directory = tmp_path / "cfg"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config.to_dict()))
    return directory


def _fake_gguf(path, architecture: str):
    key, value = b"general.architecture", architecture.encode()
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
                     + struct.pack("<I", 8) + struct.pack("<Q", len(value)) + value)
    return path


@pytest.mark.parametrize("case", ["encoder", "unknown-type", "gguf-rwkv"])
def test_an_unusable_model_is_refused_in_one_line_before_any_weights_load(case, tmp_path, capsys):
    from shapesearch.cli.main import main

    if case == "encoder":  # no LM head: nothing for a decoder compressor to rewrite
        model = _config_only(tmp_path, hf.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                     intermediate_size=40, vocab_size=96, architectures=["BertModel"]))
        message = "not a causal LM"
    elif case == "unknown-type":
        model = tmp_path / "cfg"
        model.mkdir()
        (model / "config.json").write_text(json.dumps({"model_type": "no-such-model", "hidden_size": 8}))
        message = "cannot be read"
    else:
        model = _fake_gguf(tmp_path / "m.gguf", "rwkv")
        message = "GGUF of architecture 'rwkv'"
    start = time.perf_counter()
    code = main(["compress", "flat-llm", "--model", str(model), "--ratio", "0.2", "--out", str(tmp_path / "out")])
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("shapesearch: error:") and message in err[0], err
    assert seconds < 5.0 and not (tmp_path / "out").exists()


def test_the_gguf_header_is_read_up_to_the_architecture_only():
    from compressors.model_loading import builtin_path, gguf_architecture

    start = time.perf_counter()
    assert gguf_architecture(builtin_path("smollm2")) == "llama"  # the tokenizer arrays after it are skipped
    assert time.perf_counter() - start < 1.0


def test_gpt2_conv1d_is_a_linear_that_keeps_gpt2s_checkpoint_layout(tmp_path):
    """Every command loads GPT-2 with its Conv1D projections as nn.Linear (the same function);
    a model saved after the swap is still a GPT-2 checkpoint transformers reads as it was."""
    torch.manual_seed(0)
    config = hf.GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_inner=40, bos_token_id=1, eos_token_id=2)
    model = hf.GPT2LMHeadModel(config).double().eval()
    ids = windows(1)[0]
    ref = logits(model, ids)
    assert as_linears(model) == 8 and as_linears(model) == 0
    assert all(isinstance(m, torch.nn.Linear) for m in decoder_layers(model)[0].modules()
               if "Conv1D" in type(m).__name__ or isinstance(m, Conv1DLinear))
    assert close(logits(model, ids), ref, 1e-12)
    model.save_pretrained(tmp_path / "dense")
    reread = hf.GPT2LMHeadModel.from_pretrained(tmp_path / "dense", dtype=torch.float64).eval()
    assert torch.equal(logits(reread, ids), ref)  # the file is the original checkpoint, bit for bit
    loaded = compressors.load(tmp_path / "dense", torch.float64)
    assert isinstance(loaded.transformer.h[0].attn.c_attn, Conv1DLinear)
    assert close(logits(loaded, ids), ref, 1e-12)
    # "embed" names the token table whatever the family calls it (GPT-2: transformer.wte)
    plan = plan_layers(loaded, eps=0.5, fmt="tt", layers="embed", embeddings=True, generations=1, population=4,
                       workers=0)
    assert list(plan.layers) == ["transformer.wte"]


def test_a_family_without_attention_is_refused_by_flat_llm_and_a_broken_rewrite_is_not_written():
    """Mamba has no attention (FLAT-LLM: one line, not an AttributeError) and its forward reads
    dt_proj.weight itself, which a TT layer does not have: compress_model checks the result runs."""
    from compressors.model_jobs import check_runs

    torch.manual_seed(0)
    config = hf.MambaConfig(vocab_size=96, hidden_size=32, state_size=8, num_hidden_layers=2)
    model = hf.AutoModelForCausalLM.from_config(config).double().eval()
    with pytest.raises(ShapesearchError, match="has no attention heads in its config"):
        compressors.compress(model, FlatLLMConfig(ratio=0.2), calibration=windows())
    plan = plan_layers(model, eps=0.3, fmt="tt", generations=1, population=4, workers=0, model_name="mamba")
    compressors.compress(model, compressors.TTConfig(plan))
    with pytest.raises(ShapesearchError, match="no longer runs"):
        check_runs(model)
