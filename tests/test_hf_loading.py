"""Compressed directories through transformers: with ``compressors`` imported the Auto classes
give exactly ``compressors.load``'s model; without it every plain load refuses, naming
``compressors.load``, instead of building the dense base model with the wrong weights."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, BertModel, LlamaForCausalLM

import compressors
from compressors import FlatLLMConfig, SatenConfig, SVDConfig, TTConfig
from compressors.hf_auto import CompressedConfig
from compressors.serialization import MODEL_TYPE
from shapesearch.errors import ShapesearchError

from .test_flat_llm import tiny, windows
from .test_tensorize import plan_for, tiny_bert, tiny_llama

ROOT = Path(__file__).resolve().parents[1]
IDS = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(3))


def flat_llm():
    model = tiny()
    compressors.compress(model, FlatLLMConfig(ratio=0.3), calibration=windows())
    return model


def svd_llm():
    model = tiny()
    compressors.compress(model, SVDConfig(ratio=0.3, whiten=True), calibration=windows())
    return model


def tt():
    model = tiny_llama()
    compressors.compress(model, TTConfig(plan=plan_for(model, 0.4)))
    return model


def saten():
    model = tiny_llama()
    compressors.compress(model, SatenConfig(plan=plan_for(model, 0.4), density=0.2))
    return model


COMPRESSED = [pytest.param(f, id=f.__name__) for f in (flat_llm, svd_llm, tt, saten)]


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS, use_cache=False).logits


@pytest.mark.parametrize("make", COMPRESSED)
def test_auto_model_for_causal_lm_gives_the_saved_model(make, tmp_path):
    model = make()
    ref = logits(model)
    compressors.save(model, tmp_path / "m")
    auto = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert type(auto) is type(model) and not auto.training
    assert isinstance(AutoConfig.from_pretrained(tmp_path / "m"), CompressedConfig)
    assert torch.equal(logits(auto), logits(compressors.load(tmp_path / "m")))
    attn = model.config._attn_implementation  # not saved: compare with the attention the model ran
    auto = AutoModelForCausalLM.from_pretrained(tmp_path / "m", attn_implementation=attn)
    assert torch.equal(logits(auto), ref)  # same weights, same code: bit for bit on one machine
    for name, module in model.named_modules():
        assert type(auto.get_submodule(name)) is type(module), name


def test_auto_classes_honour_dtype_attention_and_the_mismatch_flag(tmp_path):
    model = svd_llm()
    compressors.save(model, tmp_path / "m")
    single = AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype=torch.float32, attn_implementation="sdpa",
                                                ignore_mismatched_sizes=True)
    assert single.dtype == torch.float32 and single.config._attn_implementation == "sdpa"
    same = compressors.load(tmp_path / "m", dtype=torch.float32, attn_implementation="sdpa")
    assert torch.equal(logits(single), logits(same))
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "m", torch_dtype="float32").dtype == torch.float32
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "m").dtype == torch.float64  # as saved
    body = AutoModel.from_pretrained(tmp_path / "m")  # the bare decoder, as AutoModel gives for Llama
    with torch.no_grad():
        hidden = body(input_ids=IDS, use_cache=False).last_hidden_state
        full = compressors.load(tmp_path / "m").model(input_ids=IDS, use_cache=False).last_hidden_state
    assert type(body).__name__ == "LlamaModel" and torch.equal(hidden, full)
    with pytest.raises(ShapesearchError, match="compressors.load"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "m", output_loading_info=True)
    fresh = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tmp_path / "m"))
    assert [p.shape for p in fresh.parameters()] == [p.shape for p in model.parameters()]


def test_auto_model_gives_a_compressed_encoder_and_no_lm_head(tmp_path):
    model = tiny_bert()
    compressors.compress(model, SatenConfig(plan=plan_for(model, 0.4), density=0.05))
    compressors.save(model, tmp_path / "bert")
    auto = AutoModel.from_pretrained(tmp_path / "bert")
    assert type(auto) is BertModel
    with torch.no_grad():
        assert torch.equal(auto(input_ids=IDS).last_hidden_state, model(input_ids=IDS).last_hidden_state)
    with pytest.raises(ShapesearchError, match="AutoModel"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "bert")
    with pytest.raises(Exception, match="compressors.load"):  # the class's own loader refuses too
        BertModel.from_pretrained(tmp_path / "bert")


REFUSALS = """
import sys
import transformers
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
for cls_name, d in zip(sys.argv[1::2], sys.argv[2::2]):
    cls = getattr(transformers, cls_name)
    attempts = {
        "AutoConfig": lambda: AutoConfig.from_pretrained(d),
        "AutoModelForCausalLM": lambda: AutoModelForCausalLM.from_pretrained(d),
        "ignore_mismatched_sizes": lambda: AutoModelForCausalLM.from_pretrained(d, ignore_mismatched_sizes=True),
        "trust_remote_code": lambda: AutoModelForCausalLM.from_pretrained(d, trust_remote_code=True),
        "AutoModel": lambda: AutoModel.from_pretrained(d, ignore_mismatched_sizes=True),
        cls_name: lambda: cls.from_pretrained(d),
        cls_name + " ignoring sizes": lambda: cls.from_pretrained(d, ignore_mismatched_sizes=True),
    }
    assert "compressors" not in sys.modules
    for name, attempt in attempts.items():
        try:
            attempt()
        except Exception as exc:
            print(d, name, "refused", "compressors.load" in str(exc))
        else:
            print(d, name, "LOADED")
"""


def test_without_compressors_every_load_refuses_naming_compressors_load(tmp_path):
    """One interpreter that never imported compressors (importing transformers is most of its
    time) tries every way to load an SVD-LLM, a TT and a TT-compressed BERT directory."""
    args = []
    for name, make in (("svd-llm", svd_llm), ("tt", tt), ("bert", tiny_bert)):
        model = make()
        if isinstance(model, BertModel):
            compressors.compress(model, TTConfig(plan=plan_for(model, 0.4)))
        directory = tmp_path / name / "runs" / "llama-20"  # a name that must not be taken for the base model type
        compressors.save(model, directory)
        args += [type(model).__name__, str(directory)]
    out = subprocess.run([sys.executable, "-c", REFUSALS, *args], capture_output=True,
                         text=True, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 3 * 7 and all(line.endswith("refused True") for line in lines), out.stdout
    assert {line.split()[0] for line in lines} == set(args[1::2])


def test_old_style_and_dense_directories_still_load(tmp_path):
    model = saten()
    compressors.save(model, tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    config = json.loads(path.read_text())
    assert config["model_type"] == MODEL_TYPE
    record = config["shapesearch_compression"]
    config["model_type"] = record.pop("base_model_type")  # what save wrote before
    del config["layer_types"]
    path.write_text(json.dumps(config))
    again = compressors.load(tmp_path / "m")
    assert type(again) is LlamaForCausalLM and torch.equal(logits(again), logits(model))
    assert "base_model_type" not in again.config.shapesearch_compression
    compressors.save(again, tmp_path / "resaved")  # re-saving marks it
    assert json.loads((tmp_path / "resaved" / "config.json").read_text())["model_type"] == MODEL_TYPE
    assert torch.equal(logits(AutoModelForCausalLM.from_pretrained(tmp_path / "resaved")), logits(model))
    dense = tiny_llama()  # a dense model's directory is a plain transformers one, as before
    compressors.save(dense, tmp_path / "dense")
    assert json.loads((tmp_path / "dense" / "config.json").read_text())["model_type"] == "llama"
    plain = LlamaForCausalLM.from_pretrained(tmp_path / "dense")
    assert torch.equal(logits(compressors.load(tmp_path / "dense")), logits(plain))


def test_saved_files_get_the_umask_modes_and_other_files_keep_theirs(tmp_path):
    (tmp_path / "m").mkdir()
    private = tmp_path / "m" / "notes.txt"
    private.write_text("mine")
    private.chmod(0o600)
    old = os.umask(0o027)
    try:
        compressors.save(svd_llm(), tmp_path / "m")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "m").iterdir()}
    assert {"config.json", "model.safetensors", "notes.txt"} <= set(modes)
    assert modes.pop("notes.txt") == 0o600
    assert set(modes.values()) == {0o640}, modes
