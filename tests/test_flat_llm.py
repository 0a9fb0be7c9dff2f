"""FLAT-LLM on tiny random Llama-family models in float64 (MHA and GQA)."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

import compressors
from compressors import FlatLLMConfig, SVDConfig, SVDLLMConfig
from compressors.architectures import attention_parts, decoder_layers, dims, mlp_parts
from compressors.calibration import Accumulator, first_layer_inputs, run_layer
from compressors.flat_llm import absorb_values, kept_decoder_params, nystrom_select, prune_mlp, value_bases
from shapesearch.errors import ArgumentError, ShapesearchError


def tiny(kv_heads=4, attn="eager", family="llama", layers=2, seed=0):
    torch.manual_seed(seed)
    kw = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
              num_attention_heads=4, num_key_value_heads=kv_heads, head_dim=8, max_position_embeddings=256,
              attn_implementation=attn)
    if family == "mistral":
        return MistralForCausalLM(MistralConfig(**kw)).double().eval()
    return LlamaForCausalLM(LlamaConfig(**kw, tie_word_embeddings=True)).double().eval()


def windows(n=6, length=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 96, (1, length), generator=g) for _ in range(n)]


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


GQA = [pytest.param(4, id="MHA"), pytest.param(2, id="GQA")]


@pytest.mark.parametrize("kv", GQA)
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_full_rank_rotation_gives_identical_logits(kv, attn):
    model = tiny(kv, attn)
    ids = windows(1)[0]
    ref = logits(model, ids)
    d = dims(model)
    for layer in decoder_layers(model):
        q, _ = torch.linalg.qr(torch.randn(kv, 8, 8, dtype=torch.float64))  # any orthogonal basis
        absorb_values(layer, attention_parts(layer, d), d, q)
    assert torch.allclose(logits(model, ids), ref, atol=1e-10)


@pytest.mark.parametrize("kv", GQA)
def test_absorption_equals_projecting_the_value_output(kv):
    model = tiny(kv)
    ids = windows(1)[0]
    rank = 3
    bases = [torch.linalg.qr(torch.randn(kv, 8, 8, dtype=torch.float64))[0][..., :rank] for _ in range(2)]
    hooks = []
    for layer, q in zip(decoder_layers(model), bases):
        proj = q @ q.transpose(1, 2)  # [G, dh, dh]

        def project(m, a, out, proj=proj):
            y = out.reshape(*out.shape[:-1], kv, 8)
            return torch.einsum("...gd,gde->...ge", y, proj).reshape(out.shape)

        hooks.append(layer.self_attn.v_proj.register_forward_hook(project))
    ref = logits(model, ids)
    for h in hooks:
        h.remove()
    d = dims(model)
    for layer, q in zip(decoder_layers(model), bases):
        absorb_values(layer, attention_parts(layer, d), d, q)
        assert layer.self_attn.v_proj.out_features == kv * rank
        assert layer.self_attn.o_proj.in_features == 4 * rank
    assert torch.allclose(logits(model, ids), ref, atol=1e-10)


def test_truncation_error_equals_discarded_eigenvalue_mass():
    model = tiny(2)
    layer = decoder_layers(model)[0]
    inputs = first_layer_inputs(model, windows())
    acc = Accumulator(layer.self_attn.v_proj, output=True, groups=2)
    outs = []
    h = layer.self_attn.v_proj.register_forward_hook(lambda m, a, o: outs.append(o.reshape(-1, 2, 8)))
    run_layer(layer, inputs)
    h.remove()
    cov = acc.close()
    y = torch.cat(outs)
    eig = torch.linalg.eigvalsh(cov).flip(-1)
    for r in range(0, 9):
        q = value_bases(cov, r)
        err = sum(((y[:, g] - y[:, g] @ q[g] @ q[g].T) ** 2).sum() for g in range(2))
        assert float(err) == pytest.approx(float(eig[:, r:].sum()), rel=1e-10, abs=1e-10)


def test_nystrom_full_width_is_a_permutation_and_least_squares():
    model = tiny(4)
    layer = decoder_layers(model)[0]
    inputs = first_layer_inputs(model, windows(8, 32))
    zs = []
    h = layer.mlp.down_proj.register_forward_pre_hook(lambda m, a: zs.append(a[0].reshape(-1, 48)))
    acc = Accumulator(layer.mlp.down_proj)
    run_layer(layer, inputs)
    h.remove()
    cov, z = acc.close(), torch.cat(zs)
    w_down = layer.mlp.down_proj.weight.detach().clone()
    keep = nystrom_select(cov, 48, 1.0)
    assert sorted(keep.tolist()) == list(range(48))
    x = torch.randn(5, 32, dtype=torch.float64)
    ref = layer.mlp(x)
    import copy

    full = copy.deepcopy(layer.mlp)
    prune_mlp(full, mlp_parts(layer, dims(model)), keep, cov)
    assert torch.allclose(full(x), ref, atol=1e-8)
    # partial width: the refit down_proj is the least-squares solution and its residual is the
    # Schur complement trace
    keep = nystrom_select(cov, 20, 1.0)
    part = copy.deepcopy(layer.mlp)
    prune_mlp(part, mlp_parts(layer, dims(model)), keep, cov)
    target = z @ w_down.T
    lstsq = torch.linalg.lstsq(z[:, keep], target).solution.T
    assert torch.allclose(part.down_proj.weight, lstsq, rtol=1e-7, atol=1e-9)
    resid = ((target - z[:, keep] @ part.down_proj.weight.detach().T) ** 2).sum()
    c_s = cov[keep][:, keep]
    schur = cov - cov[:, keep] @ torch.linalg.solve(c_s, cov[keep])
    assert float(resid) == pytest.approx(float(torch.trace(w_down @ schur @ w_down.T)), rel=1e-8)


@pytest.mark.parametrize("kv", GQA)
def test_compress_save_load_and_generate(kv, tmp_path):
    model = tiny(kv, layers=3)
    report = compressors.compress(model, FlatLLMConfig(ratio=0.4), calibration=windows())
    assert report["decoder_linear_params_after"] < report["decoder_linear_params_before"]
    assert 0.3 < report["decoder_linear_removed"] < 0.5
    assert report["params_after"] < report["params_before"]
    ids = windows(1)[0]
    ref = logits(model, ids)
    compressors.save(model, tmp_path / "m")
    assert not list((tmp_path / "m").glob("*.bin")) and not list((tmp_path / "m").glob("*.pt"))
    back = compressors.load(tmp_path / "m", attn_implementation="eager")
    assert next(back.parameters()).dtype == torch.float64
    assert torch.equal(logits(back, ids), ref)
    # cached greedy generation equals the full forward
    out = back.generate(ids[:, :8], max_new_tokens=6, do_sample=False, use_cache=True)
    full = back.generate(ids[:, :8], max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(out, full)
    last = logits(back, out[:, :-1])[:, -1]
    assert int(last.argmax()) == int(out[0, -1])


def test_uniform_option_and_layer_accounting():
    model = tiny(2, layers=3)
    report = compressors.compress(model, FlatLLMConfig(ratio=0.3, uniform=True), calibration=windows())
    # the count the baselines are matched to is what FLAT-LLM really leaves
    keeps = [layer["keep"] for layer in report["layers"]]
    assert kept_decoder_params(tiny(2, layers=3), keeps) == report["decoder_linear_params_after"]
    keeps = {layer["keep"] for layer in report["layers"]}
    assert len(keeps) == 1
    for layer, spec in zip(decoder_layers(model), report["layers"]):
        assert layer.self_attn.v_proj.weight.shape == (2 * spec["v_head_dim"], 32)
        assert layer.mlp.down_proj.weight.shape == (32, spec["mlp_width"])


@pytest.mark.parametrize("config", [SVDConfig(ratio=0.3), SVDLLMConfig(ratio=0.3)])
def test_low_rank_baselines_match_flat_llm_parameters(config, tmp_path):
    model = tiny(2, layers=3)
    flat = tiny(2, layers=3)
    target = compressors.compress(flat, FlatLLMConfig(ratio=0.3), calibration=windows())
    report = compressors.compress(model, config, calibration=windows())
    assert report["decoder_linear_params_after"] <= target["decoder_linear_params_after"]
    assert report["decoder_linear_params_after"] > 0.97 * target["decoder_linear_params_after"]
    ids = windows(1)[0]
    ref = logits(model, ids)
    compressors.save(model, tmp_path / "m")
    assert torch.equal(logits(compressors.load(tmp_path / "m", attn_implementation="eager"), ids), ref)


def test_svd_llm_beats_plain_svd_on_the_calibration_loss():
    calib = windows(8, 32)
    losses = {}
    for name, cfg in [("svd", SVDConfig(0.5)), ("svd-llm", SVDLLMConfig(0.5))]:
        model = tiny(4, layers=2, seed=3)
        dense = logits(model, calib[0])
        compressors.compress(model, cfg, calibration=calib)
        losses[name] = float(((logits(model, calib[0]) - dense) ** 2).mean())
    assert losses["svd-llm"] < losses["svd"]


def test_bad_inputs():
    model = tiny()
    with pytest.raises(ShapesearchError, match=r"ratio must be in \(0, 1\)"):
        compressors.compress(model, FlatLLMConfig(ratio=1.2), calibration=windows())
    with pytest.raises(ShapesearchError, match="calibration data is empty"):
        compressors.compress(model, FlatLLMConfig(ratio=0.2), calibration=[])


@pytest.mark.parametrize("make,argument", [
    (lambda: FlatLLMConfig(ratio=0.0), "ratio"),
    (lambda: FlatLLMConfig(ridge=-1.0), "ridge"),
    (lambda: SVDConfig(ratio=1.0), "ratio"),
    (lambda: SVDLLMConfig(ratio=-0.1), "ratio"),
    (lambda: compressors.FinetuneConfig(steps=-1), "steps"),
    (lambda: compressors.FinetuneConfig(lr=0.0), "lr"),
    (lambda: compressors.FinetuneConfig(batch=0), "batch"),
    (lambda: compressors.FinetuneConfig(schedule="linear"), "schedule"),
    (lambda: compressors.FinetuneConfig(warmup=1.0), "warmup"),
])
def test_configs_name_the_bad_argument(make, argument):
    with pytest.raises(ArgumentError) as caught:
        make()
    assert caught.value.argument == argument and str(caught.value).startswith(f"{argument} must be")


def test_model_jobs_check_arguments_before_loading(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    bad = [(lambda: compressors.compress_model("nowhere", FlatLLMConfig(), tmp_path / "o", samples=0), "samples"),
           (lambda: compressors.compress_model("nowhere", FlatLLMConfig(), tmp_path / "o", seqlen=1), "seqlen"),
           (lambda: compressors.compress_model("nowhere", FlatLLMConfig(), tmp_path / "full"), "out"),
           (lambda: compressors.compress_model("nowhere", object(), tmp_path / "o"), "config"),
           (lambda: compressors.evaluate_model("nowhere", window=1), "window"),
           (lambda: compressors.evaluate_model("nowhere", max_windows=0), "max_windows"),
           (lambda: compressors.evaluate_model(str(tmp_path / "nothing")), "model")]
    for job, argument in bad:
        with pytest.raises(ArgumentError) as caught:
            job()
        assert caught.value.argument == argument
    assert not (tmp_path / "o").exists() and (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_mistral_family_works():
    model = tiny(2, family="mistral")
    report = compressors.compress(model, FlatLLMConfig(ratio=0.3), calibration=windows())
    assert report["decoder_linear_removed"] > 0.2
    assert torch.isfinite(logits(model, windows(1)[0])).all()
