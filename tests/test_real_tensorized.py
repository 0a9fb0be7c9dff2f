"""Per-layer shapes and Saten on the real models from the packages: SmolLM2-135M (decoder) and
all-MiniLM-L6-v2 (BERT encoder), through the CLI: plan → compress → save → reload."""

import json

import pytest
import torch

import compressors
from compressors import load_model
from shapesearch.cli import main


def _run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out.splitlines()[-1])


@pytest.mark.parametrize("fmt,residual", [("ttm", ["--density", "0.1"]), ("tt", ["--nm", "2:4"])])
def test_smollm2_plan_saten_fine_tune_save_reload_generate(fmt, residual, tmp_path, capsys):
    plan = tmp_path / "plan.json"
    found = _run(["layers", "--model", "smollm2", "--eps", "0.5", "--format", fmt, "--layers", "layers.29.",
                  "--generations", "2", "--population", "6", "--workers", "0", "--out", plan, "--json"], capsys)
    assert len(found["layers"]) == 7
    for rec in found["layers"].values():
        assert rec["params"] <= rec["balanced_params"] and rec["rel_error"] <= 0.5
    text = tmp_path / "train.txt"
    from compressors.corpus import wikipedia

    text.write_text(wikipedia("calibration")[:40_000])
    report = _run(["compress", "saten", "--model", "smollm2", "--plan", plan, *residual, "--finetune-steps", "3",
                   "--samples", "3", "--seqlen", "64", "--calib", text, "--out", tmp_path / "m", "--json"], capsys)
    assert report["replaced_layers"] == 7 and report["finetune"]["steps"] == 3
    if fmt == "tt":
        assert report["replaced_ratio"] >= 0.5  # the 2:4 floor
    back = compressors.load(tmp_path / "m")
    assert type(back.model.layers[29].mlp.down_proj).__name__ == "SatenLinear"
    _, tok = load_model("smollm2", tokenizer=True)
    prompt = tok("The capital of France is", return_tensors="pt")
    again = compressors.load(tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(back(**prompt).logits, again(**prompt).logits)
        out = back.generate(**prompt, max_new_tokens=6, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 6


def test_minilm_plan_tt_and_embeddings_stay_close(tmp_path, capsys):
    plan = tmp_path / "plan.json"
    _run(["layers", "--model", "minilm", "--eps", "0.2", "--generations", "2", "--population", "6",
          "--workers", "0", "--out", plan, "--json"], capsys)
    report = _run(["compress", "tt", "--model", "minilm", "--plan", plan, "--out", tmp_path / "m", "--json"], capsys)
    assert report["replaced_layers"] == 36 and report["replaced_ratio"] < 1.0
    dense, tok = load_model("minilm")
    back = compressors.load(tmp_path / "m")
    assert type(back).__name__ == "BertModel"
    enc = tok(["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell."],
              padding=True, return_tensors="pt")

    def embed(model):
        with torch.no_grad():
            h = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1)
        return (h * m).sum(1) / m.sum(1)

    a, b = embed(dense), embed(back)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    assert cos.min() > 0.6  # every layer within 20 % Frobenius error (36 of them compound)
    sim = torch.nn.functional.cosine_similarity(b[0], b[1], dim=0)
    assert sim > torch.nn.functional.cosine_similarity(b[0], b[2], dim=0)  # still a sentence encoder


def test_eval_scores_an_encoder_by_word_similarity(capsys):
    code = main(["eval", "--model", "minilm", "--json"])
    result = json.loads(capsys.readouterr().out)
    # the pre-trained sentence encoder ranks human word similarity well above chance
    assert code == 0 and result["kind"] == "encoder" and result["wordsim353"] > 0.5 and result["simlex999"] > 0.2
