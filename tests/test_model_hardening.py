"""Bad inputs to `compress` / `eval` and the limits of the rank-reduction compressors.

Every refusal is one `shapesearch: error: …` line and exit code 2, before the expensive work;
ratios are always delivered or refused with the method's maximum.  The command-line tests
use a tiny random Llama saved with a small byte-level BPE tokenizer (no downloads).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import compressors
from compressors import FlatLLMConfig, SVDConfig, SVDLLMConfig, lm_metrics, model_jobs
from compressors.flat_llm import max_ratio, min_keep, rounding_step
from compressors.iprs import allocate
from shapesearch.cli.main import build_parser, main
from shapesearch.errors import ArgumentError, ShapesearchError

from .test_flat_llm import tiny, windows

SENTENCE = "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun. "


class Reached(BaseException):
    """Raised by a stub of an expensive step that a refusal must come before (no handler catches it)."""


def _boom(*args, **kwargs):
    raise Reached


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A tiny random Llama (hidden 32, MLP width 48, 2 layers, 2 KV heads) with its tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([SENTENCE * 20], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=48,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         head_dim=8, max_position_embeddings=512)).eval()
    path = tmp_path_factory.mktemp("models") / "tiny"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Text, plan and model files, good and bad."""
    d = tmp_path_factory.mktemp("files")
    (d / "text.txt").write_text(SENTENCE * 60)
    (d / "small.txt").write_text(SENTENCE * 3)  # one 64-token window, far fewer than 4 × 256 tokens
    (d / "short.txt").write_text("a few words")
    (d / "empty.txt").write_text("  \n")
    (d / "binary.txt").write_bytes(bytes(range(256)) * 4)
    (d / "latin1.txt").write_bytes("café naïve ".encode("latin-1") * 50)
    (d / "afile.txt").write_text("x")
    (d / "plan_empty.json").write_text("")
    (d / "plan_notjson.json").write_text("{not json")
    (d / "plan_list.json").write_text("[1, 2]")
    (d / "plan_noshape.json").write_text('{"layers": {"model.layers.0.mlp.gate_proj": {"eps": 0.3}}}')
    layer = {"format": "ttm", "out_modes": [6, 8], "in_modes": [4, 8], "eps": 0.3}
    (d / "plan.json").write_text(json.dumps({"layers": {"model.layers.0.mlp.gate_proj": layer}}))
    other = {"format": "ttm", "out_modes": [64, 24], "in_modes": [24, 24], "eps": 0.3}
    (d / "plan_other.json").write_text(json.dumps({"layers": {"model.layers.0.mlp.gate_proj": other}}))
    (d / "noconfig").mkdir()
    (d / "brokencfg").mkdir()
    (d / "brokencfg" / "config.json").write_text("{broken")
    (d / "empty.gguf").write_bytes(b"")
    (d / "random.gguf").write_bytes(random.Random(0).randbytes(4096))
    return d


def _error(args: list, capsys) -> str:
    """Run the command line; it must print exactly one error line and exit 2; returns the line."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured
    assert len(lines) == 1 and lines[0].startswith("shapesearch: error:"), lines
    return lines[0]


def _ok(args: list, capsys) -> dict:
    code = main([str(a) for a in args] + ["--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out.strip().splitlines()[-1])


# --- defect 1: eval on a text shorter than the speed prompts -------------------------------------------


def test_eval_measures_speed_on_a_text_shorter_than_the_speed_prompts(tiny_dir, files, capsys):
    result = _ok(["eval", "--model", tiny_dir, "--text", files / "small.txt", "--window", "64"], capsys)
    assert result["windows"] == 1 and result["perplexity"] > 1
    assert result["prefill_tokens_per_s"] > 0 and result["decode_tokens_per_s"] > 0
    # what was measured is said: 4 prompts of 256 tokens, the text repeated to fill them
    assert result["batch"] == 4 and result["prompt_tokens"] == 256 and result["prompt_repeated"] is True
    assert result["text_tokens"] < 4 * 256
    assert main(["eval", "--model", str(tiny_dir), "--text", str(files / "small.txt"), "--window", "64"]) == 0
    assert "text repeated" in capsys.readouterr().out


def test_speed_fits_the_prompt_into_the_model_and_reports_it(tiny_dir):
    model, tok = compressors.load_model(str(tiny_dir))
    model.config.max_position_embeddings = 100
    out = lm_metrics.speed(model, tok, "two words", batch=2, prompt=256, new_tokens=4, repeats=1)
    assert out["prompt_tokens"] == 96 and out["batch"] == 2 and out["prompt_repeated"]


def test_a_failing_speed_measurement_never_loses_the_perplexity(tiny_dir, files, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("stack expects each tensor to be equal size")

    monkeypatch.setattr(lm_metrics, "speed", broken)
    result = compressors.evaluate_model(str(tiny_dir), files / "text.txt", window=64, max_windows=1)
    assert result["perplexity"] > 1 and "equal size" in result["speed_error"]


# --- defect 2: ratios beyond what a method can remove ---------------------------------------------------


def test_flat_llm_maximum_for_smollm2_dims():
    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, head_dim=64)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    per_layer = 576 * 576 * 2 + 576 * 192 * 2 + 3 * 576 * 1536
    kept = 576 * 576 + 576 * 192 + 576 * 3 + 576 * 9 + 3 * 576  # q, k, one V dim per KV head (v and o), one neuron
    assert max_ratio(model) == pytest.approx(1 - kept / per_layer) == pytest.approx(0.872559, abs=1e-6)


@pytest.mark.parametrize("method", ["flat-llm", "svd", "svd-llm"])
def test_ratio_above_the_maximum_is_refused_before_calibration(tiny_dir, files, tmp_path, capsys, monkeypatch,
                                                               method):
    monkeypatch.setattr(model_jobs, "calibration_windows", _boom)
    line = _error(["compress", "flat-llm", "--method", method, "--model", tiny_dir, "--ratio", "0.99",
                   "--calib", files / "text.txt", "--samples", "4", "--seqlen", "32", "--out", tmp_path / "o"],
                  capsys)
    assert line.startswith("shapesearch: error: --ratio 0.99 ") and "at most 0.7625" in line
    assert "leaves q/k whole" in line and not (tmp_path / "o").exists()


def test_library_refuses_a_ratio_above_the_maximum_with_the_maximum():
    model = tiny(4, layers=2)
    top = max_ratio(model)
    with pytest.raises(ArgumentError) as caught:
        compressors.compress(model, FlatLLMConfig(ratio=top + 1e-3), calibration=windows())
    assert caught.value.argument == "ratio" and f"at most {math.floor(top * 1e4) / 1e4:.4f}" in str(caught.value)
    assert not getattr(model.config, "shapesearch_compression", None)  # nothing was rewritten


@pytest.mark.parametrize("kv", [4, 2])
@pytest.mark.parametrize("uniform", [False, True])
def test_flat_llm_near_the_maximum_keeps_valid_widths_and_delivers_the_ratio(kv, uniform):
    top = max_ratio(tiny(kv, layers=4))
    for ratio in (0.3, 0.6, top - 0.05, top - 1e-3, top - 1e-9, top):
        model = tiny(kv, layers=4)
        report = compressors.compress(model, FlatLLMConfig(ratio=ratio, uniform=uniform), calibration=windows(8))
        for layer in report["layers"]:
            assert 0 < layer["keep"] <= 1 and 1 <= layer["v_head_dim"] <= 8 and 1 <= layer["mlp_width"] <= 48
        assert abs(report["decoder_linear_removed"] - ratio) <= max(0.005, rounding_step(tiny(kv, layers=4))), ratio


@pytest.mark.parametrize("config", [SVDConfig, SVDLLMConfig])
def test_svd_baselines_near_the_maximum_deliver_the_ratio(config):
    top = max_ratio(tiny(2, layers=3))
    # matched to FLAT-LLM's count, which floors its widths as the authors' code does: a tiny
    # model cannot be cut finer than about one row per layer
    tolerance = max(0.005, rounding_step(tiny(2, layers=3))) + 0.01
    for ratio in (0.3, top - 1e-3, top):
        report = compressors.compress(tiny(2, layers=3), config(ratio), calibration=windows(8))
        assert abs(report["decoder_linear_removed"] - ratio) <= tolerance, ratio
        assert all(r >= 1 for layer in report["layers"] for r in layer["ranks"].values())


def test_allocation_floor_keeps_every_layer_in_range():
    t = [0.3, 0.05, 0.1, 0.2, 0.02, 0.9]
    for mean in (0.02, 0.05, 0.3, 0.8):
        w = allocate(t, mean, floor=0.04)
        assert all(0.04 <= x <= 1 for x in w)
        assert sum(w) == pytest.approx(len(t) * max(mean, 0.04))
    d = compressors.architectures.dims(tiny(2))
    assert 0 < min_keep(d) < 1


# --- defect 3: calibration too small for the covariances ------------------------------------------------


@pytest.mark.parametrize("method", ["flat-llm", "svd-llm"])
def test_calibration_smaller_than_the_covariances_is_refused(tiny_dir, files, tmp_path, capsys, monkeypatch,
                                                             method):
    monkeypatch.setattr(model_jobs, "calibration_windows", _boom)
    line = _error(["compress", "flat-llm", "--method", method, "--model", tiny_dir, "--samples", "1",
                   "--seqlen", "2", "--calib", files / "text.txt", "--out", tmp_path / "o"], capsys)
    assert "calibration has 2 tokens (samples × seqlen)" in line and "needs at least 48" in line
    assert "MLP width 48" in line


def test_library_refuses_small_calibration_but_plain_svd_needs_none():
    few = windows(1, 8)
    for config in (FlatLLMConfig(0.2), FlatLLMConfig(0.2, uniform=True), SVDLLMConfig(0.2)):
        with pytest.raises(ShapesearchError, match="calibration has 8 tokens"):
            compressors.compress(tiny(2), config, calibration=few)
    report = compressors.compress(tiny(2), SVDConfig(0.2), calibration=few)  # weights only; data just for IPRS
    assert abs(report["decoder_linear_removed"] - 0.2) < rounding_step(tiny(2)) + 0.01


# --- defect 4 and 5: eval --max-windows 0, unusable --out -----------------------------------------------


def test_max_windows_zero_names_max_windows(tiny_dir, files, capsys):
    line = _error(["eval", "--model", tiny_dir, "--text", files / "small.txt", "--max-windows", "0"], capsys)
    assert "--max-windows must be >= 1" in line


@contextlib.contextmanager
def _unprivileged():
    """Run as a user that permission bits apply to (root's writes ignore them)."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.mark.parametrize("where", ["file", "under_file", "read_only", "under_read_only"])
def test_unusable_out_is_refused_before_the_model_loads(tiny_dir, files, capsys, monkeypatch, where):
    monkeypatch.setattr(model_jobs, "load_model", _boom)
    base = Path(tempfile.mkdtemp())
    try:
        base.chmod(0o755)  # others may look in: the unprivileged user must reach the read-only folder
        (base / "afile.txt").write_text("x")
        (base / "ro").mkdir(mode=0o500)
        (base / "ro").chmod(0o500)
        out = {"file": base / "afile.txt", "under_file": base / "afile.txt" / "sub",
               "read_only": base / "ro", "under_read_only": base / "ro" / "sub"}[where]
        with _unprivileged():
            line = _error(["compress", "flat-llm", "--model", tiny_dir, "--calib", files / "text.txt",
                           "--out", out], capsys)
        assert line.startswith(f"shapesearch: error: --out {out}")
        assert not (base / "ro" / "sub").exists() and (base / "afile.txt").read_text() == "x"
    finally:
        (base / "ro").chmod(0o700)
        shutil.rmtree(base)


@pytest.mark.parametrize("command", [
    ["compress", "flat-llm", "--ratio", "0.2", "--overwrite", "--out", "{model}"],
    ["compress", "flat-llm", "--method", "svd", "--ratio", "0.2", "--out", "{model}/sub"],
    ["layers", "--eps", "0.3", "--overwrite", "--out", "{model}/config.json"],
    ["pareto", "--budgets", "0.5", "--methods", "svd-llm", "--overwrite", "--out", "{model}"],
])
def test_an_output_inside_the_input_model_is_refused_before_anything_is_written(tiny_dir, files, capsys,
                                                                                 monkeypatch, command):
    monkeypatch.setattr(model_jobs, "load_model", _boom)
    before = {p.name: p.read_bytes() for p in tiny_dir.iterdir()}
    args = [a.format(model=tiny_dir) for a in command]
    line = _error([*args[:1 + (args[0] == "compress")], "--model", tiny_dir, *args[1 + (args[0] == "compress"):]],
                  capsys)
    assert "the input" in line and "write over" in line
    assert {p.name: p.read_bytes() for p in tiny_dir.iterdir()} == before


# --- defect 6: every bad input is one line and exit 2 ---------------------------------------------------


BAD_COMPRESS = [
    (["--samples", "0"], "--samples must be >= 1"),
    (["--seqlen", "1"], "--seqlen must be >= 2"),
    (["--calib", "{f}/missing.txt"], "--calib"),
    (["--calib", "{f}/empty.txt"], "is empty"),
    (["--calib", "{f}/binary.txt"], "not UTF-8"),
    (["--calib", "{f}/latin1.txt"], "not UTF-8"),
    (["--calib", "{f}"], "is a directory"),
    (["--calib", "{f}/short.txt"], "give a longer text or a smaller seqlen"),
    (["--ratio", "0"], "--ratio must be in (0, 1)"),
    (["--ratio", "nan"], "--ratio must be in (0, 1)"),
    (["--model", "{f}/nothing"], "--model"),
    (["--model", "{f}/noconfig"], "--model"),
    (["--model", "{f}/brokencfg"], "--model"),
    (["--model", "{f}/empty.gguf"], "--model"),
    (["--model", "{f}/random.gguf"], "--model"),
]

BAD_TENSORIZE = [
    (["saten", "--density", "0.1", "--finetune-steps", "2", "--lr", "-1"], "--lr must be positive"),
    (["saten", "--density", "0.1", "--finetune-steps", "-3"], "--finetune-steps must be >= 0"),
    (["saten", "--density", "0.1", "--finetune-steps", "2", "--warmup", "1"], "--warmup must be in [0, 1)"),
    (["saten", "--density", "0.1", "--lr-schedule", "linear"], "--lr-schedule"),
    (["saten", "--density", "2"], "--density must be in [0, 1]"),
    (["saten", "--nm", "4:2"], "--nm must be"),
    (["saten", "--nm", "0:4"], "--nm must be"),
    (["saten", "--nm", "a:b"], "--nm must look like 2:4"),
    (["tt", "--plan", "{f}/missing.json"], "not found"),
    (["tt", "--plan", "{f}/plan_empty.json"], "not JSON"),
    (["tt", "--plan", "{f}/plan_notjson.json"], "not JSON"),
    (["tt", "--plan", "{f}/plan_list.json"], "not a JSON object"),
    (["tt", "--plan", "{f}/plan_noshape.json"], "lacks"),
    (["tt", "--plan", "{f}/plan_other.json"], "make the plan from the same model"),
]

BAD_EVAL = [
    (["--text", "{f}/missing.txt"], "--text"),
    (["--text", "{f}/empty.txt"], "is empty"),
    (["--text", "{f}/binary.txt"], "not UTF-8"),
    (["--text", "{f}/latin1.txt"], "not UTF-8"),
    (["--text", "{f}/short.txt"], "fewer than one window"),
    (["--window", "1"], "--window must be at least 2"),
    (["--model", "{f}/noconfig"], "--model"),
    (["--model", "{f}/brokencfg"], "--model"),
    (["--model", "{f}/empty.gguf"], "--model"),
    (["--model", "{f}/random.gguf"], "--model"),
]


def _fill(args: list[str], f: Path) -> list[str]:
    return [a.replace("{f}", str(f)) for a in args]


@pytest.mark.parametrize("args,message", BAD_COMPRESS)
def test_bad_compress_inputs(tiny_dir, files, tmp_path, capsys, args, message):
    base = ["compress", "flat-llm", "--model", str(tiny_dir), "--calib", str(files / "text.txt"),
            "--samples", "2", "--seqlen", "32", "--out", str(tmp_path / "o")]
    assert message in _error(base + _fill(args, files), capsys)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args,message", BAD_TENSORIZE)
def test_bad_tensorize_inputs(tiny_dir, files, tmp_path, capsys, args, message):
    args = _fill(args, files)
    plan = [] if "--plan" in args else ["--plan", str(files / "plan.json")]
    base = ["compress", args[0], "--model", str(tiny_dir), *plan, "--calib", str(files / "text.txt"),
            "--samples", "2", "--seqlen", "16", "--out", str(tmp_path / "o")]
    assert message in _error(base + args[1:], capsys)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args,message", BAD_EVAL)
def test_bad_eval_inputs(tiny_dir, files, capsys, args, message):
    base = ["eval", "--model", str(tiny_dir), "--text", str(files / "text.txt"), "--window", "64"]
    assert message in _error(base + _fill(args, files), capsys)


# --- defect 7: every option explains itself -------------------------------------------------------------


def test_every_compress_and_eval_option_has_help():
    sub = next(a for a in build_parser()._actions if a.choices and "compress" in a.choices)
    for command in ("compress", "eval"):
        for action in sub.choices[command]._actions:
            assert action.help and action.help.strip(), (command, action.option_strings or action.dest)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_16_bit_model_is_saved_and_counted_in_its_own_dtype(tiny_dir, files, tmp_path, capsys, dtype):
    """Compression runs in float32; the result goes back to the input's dtype, so its file is not
    twice the input's, and the bytes reported are the ones stored."""
    half = tmp_path / "half"
    compressors.save(compressors.load(tiny_dir).to(dtype), half,
                     __import__("transformers").AutoTokenizer.from_pretrained(tiny_dir))
    report = _ok(["compress", "tt", "--model", half, "--plan", files / "plan.json", "--out", tmp_path / "tt"], capsys)
    assert report["dtype"] == str(dtype).removeprefix("torch.")
    assert report["replaced_bytes_before"] == 48 * 32 * 2  # the dense gate_proj at 2 bytes a value
    assert report["replaced_bytes_after"] == 2 * report["replaced_params_after"]
    back = compressors.load(tmp_path / "tt")
    assert {p.dtype for p in back.parameters()} == {dtype}
    size = sum(f.stat().st_size for f in (tmp_path / "tt").glob("*.safetensors"))
    assert size < 1.1 * sum(f.stat().st_size for f in half.glob("*.safetensors"))


def test_a_front_with_no_point_made_is_an_error_not_an_empty_front(tiny_dir, files, tmp_path, capsys):
    from tests.tiny_models import tiny_bert_dir

    common = ["--calib", files / "text.txt", "--text", files / "text.txt", "--samples", "4", "--seqlen", "64",
              "--windows", "1", "--workers", "0"]
    bert = tiny_bert_dir(tmp_path / "bert")
    capsys.readouterr()
    line = _error(["pareto", "--model", bert, "--budgets", "0.9", "--methods", "flat-llm", *common,
                   "--out", tmp_path / "f1"], capsys)
    assert "is not a causal LM" in line
    line = _error(["pareto", "--model", tiny_dir, "--budgets", "0.05", "--methods", "flat-llm", *common,
                   "--out", tmp_path / "f2"], capsys)
    assert "no point of the front could be made (flat-llm @ 0.05" in line
    assert not (tmp_path / "f1").exists() and not (tmp_path / "f2").exists()


def test_weights_only_as_pickles_are_never_read(tiny_dir, files, tmp_path, capsys, monkeypatch):
    """A pytorch_model.bin is a pickle: refused by name, before transformers would unpickle it."""
    binary = tmp_path / "bin"
    shutil.copytree(tiny_dir, binary)
    for f in binary.glob("*.safetensors"):
        f.unlink()
    torch.save({}, binary / "pytorch_model.bin")
    monkeypatch.setattr(torch, "load", _boom)  # reading it at all fails the test
    for command in (["eval", "--model", binary, "--text", files / "text.txt", "--no-speed"],
                    ["compress", "flat-llm", "--model", binary, "--calib", files / "text.txt",
                     "--out", tmp_path / "o"]):
        assert "PyTorch pickles (.bin), which shapesearch never reads" in _error(command, capsys)


def test_windows_longer_than_the_models_context_are_refused(tiny_dir, files, tmp_path, capsys):
    """Past max_position_embeddings a learned position table (GPT-2) has no row: it was a traceback."""
    assert "longer than the model's context of 512" in _error(
        ["eval", "--model", tiny_dir, "--text", files / "text.txt", "--window", "600", "--no-speed"], capsys)
    assert "--seqlen 600 tokens is longer than the model's context of 512" in _error(
        ["compress", "flat-llm", "--model", tiny_dir, "--calib", files / "text.txt", "--samples", "2", "--seqlen",
         "600", "--out", tmp_path / "o"], capsys)
    assert not (tmp_path / "o").exists()
