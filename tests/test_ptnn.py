"""PTNN on a tiny random BERT classifier: the layer-by-layer decisions, reverts that restore the
model exactly, the report, save → load, the command line, and labelled files of one's own."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoTokenizer

import compressors
from compressors import retraining as retraining_module
from compressors.classifier import accuracy, classifier_from_encoder
from compressors.ptnn import PTNNConfig, candidate_order
from compressors.text_tasks import LabelledText, TextTask, read_split
from compressors.tt_embedding import TTEmbedding
from shapesearch.cli.main import main
from shapesearch.errors import ArgumentError
from tests.tiny_models import tiny_bert_dir

POSITIVE = ["good great fine movie", "wonderful film, loved it", "great acting, superb", "a delight"]
NEGATIVE = ["bad awful boring movie", "terrible film, hated it", "poor acting, dull", "a mess"]
FAST = dict(steps=2, dense_steps=20, lr=1e-3, batch=8, search_generations=1)


def _part(n: int, seed: int) -> LabelledText:
    rng = random.Random(seed)
    items = [(f"{rng.choice(POSITIVE)} {rng.randint(0, 9)}", 1) for _ in range(n)]
    items += [(f"{rng.choice(NEGATIVE)} {rng.randint(0, 9)}", 0) for _ in range(n)]
    return LabelledText(tuple(t for t, _ in items), tuple(label for _, label in items), ("neg", "pos"))


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    return tiny_bert_dir(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def task() -> TextTask:
    return TextTask("toy", _part(48, 0), _part(12, 1), _part(12, 2))


def _classifier(bert_dir: Path):
    return classifier_from_encoder(str(bert_dir), ("neg", "pos")), AutoTokenizer.from_pretrained(bert_dir)


def test_order_is_embedding_then_ffn_then_attention_top_down(bert_dir):
    model, _ = _classifier(bert_dir)
    order = candidate_order(model)
    assert order[0] == "bert.embeddings.word_embeddings"
    assert order[1:5] == ["bert.encoder.layer.1.output.dense", "bert.encoder.layer.1.intermediate.dense",
                          "bert.encoder.layer.0.output.dense", "bert.encoder.layer.0.intermediate.dense"]
    assert all("attention" in n for n in order[5:]) and order[5].startswith("bert.encoder.layer.1.")
    assert candidate_order(model, embeddings=False) == order[1:]


def test_ptnn_keeps_layers_until_the_budget_and_reports_both_models(bert_dir, task, tmp_path):
    model, tok = _classifier(bert_dir)
    report = compressors.compress(model, PTNNConfig(budget=0.8, tolerance=0.5, **FAST), tokenizer=tok, task=task)
    kept = [d for d in report["decisions"] if d["kept"]]
    assert kept and report["budget_met"] and report["model_ratio"] <= 0.8
    # it stopped as soon as the budget was met: the one before the last decision was still above it
    ratios = [d["model_ratio"] for d in report["decisions"]]
    assert all(r > 0.8 for r in ratios[:-1]) and ratios[-1] <= 0.8
    assert isinstance(model.get_submodule("bert.embeddings.word_embeddings"), TTEmbedding)
    assert report["params_after"] == sum(p.numel() for p in model.parameters())
    for key in ("dense_dev_accuracy", "dense_test_accuracy", "dev_accuracy", "test_accuracy", "replaced_ratio"):
        assert 0 <= report[key] <= 1
    assert report["test_accuracy"] == accuracy(model, tok, task.test)
    compressors.save(model, tmp_path / "out", tok)
    loaded = compressors.load(tmp_path / "out")
    enc = tok(["good movie 3", "bad film 7"], return_tensors="pt", padding=True)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**enc).logits, model(**enc).logits, rtol=1e-6, atol=1e-6)
    from transformers import AutoModelForSequenceClassification  # the Auto class gives the same classifier

    auto = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    with torch.no_grad():
        torch.testing.assert_close(auto(**enc).logits, model(**enc).logits, rtol=1e-6, atol=1e-6)


def test_a_layer_that_costs_dev_accuracy_is_reverted_exactly(bert_dir, task, monkeypatch):
    model, tok = _classifier(bert_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scores = iter([0.9, 0.9] + [0.1] * 50)  # dense dev, dense test, then every candidate's dev
    monkeypatch.setattr(retraining_module, "accuracy", lambda *a, **k: next(scores))
    report = compressors.compress(model, PTNNConfig(tolerance=0.01, final_steps=3, **{**FAST, "dense_steps": 0}),
                                  tokenizer=tok, task=task)
    assert report["decisions"] and not any(d["kept"] for d in report["decisions"])
    assert report["final_steps"] == 0  # nothing kept: no final retraining of the dense model
    assert len(report["decisions"]) == len(candidate_order(model)) and not report["budget_met"]
    assert isinstance(model.get_submodule("bert.embeddings.word_embeddings"), nn.Embedding)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_final_retraining_runs_once_after_the_last_decision(bert_dir, task, monkeypatch):
    model, tok = _classifier(bert_dir)
    calls = []
    train = retraining_module.TextClassification.train
    dev = retraining_module.TextClassification.dev

    def spy_train(self, m, config):
        calls.append(("train", config.steps))
        return train(self, m, config)

    def spy_dev(self, m):
        calls.append(("dev", None))
        return dev(self, m)

    monkeypatch.setattr(retraining_module.TextClassification, "train", spy_train)
    monkeypatch.setattr(retraining_module.TextClassification, "dev", spy_dev)
    config = PTNNConfig(budget=0.8, tolerance=0.5, final_steps=3, **FAST)
    report = compressors.compress(model, config, tokenizer=tok, task=task)
    decisions = len(report["decisions"])
    assert [c for c in calls if c[0] == "train"] == [("train", 20)] + [("train", 2)] * decisions + [("train", 3)]
    assert calls[-2:] == [("train", 3), ("dev", None)]  # after the last decision, and its dev is the report's
    assert report["final_steps"] == 3 and report["train_steps"] == 20 + 2 * decisions + 3
    assert report["dev_accuracy"] == accuracy(model, tok, task.dev)


def test_bad_configs_name_the_argument():
    for kwargs, name in (({"budget": 0}, "budget"), ({"eps": 1.5}, "eps"), ({"tolerance": -0.1}, "tolerance"),
                         ({"steps": -1}, "steps"), ({"final_steps": -1}, "final_steps"), ({"lr": 0}, "lr"),
                         ({"format": "xyz"}, "format")):
        with pytest.raises(ArgumentError) as err:
            PTNNConfig(**kwargs)
        assert err.value.argument == name


def _write(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return path


def _files(tmp_path: Path, suffix: str = ".csv") -> list[Path]:
    out = []
    for split, data in (("train", _part(24, 0)), ("dev", _part(6, 1)), ("test", _part(6, 2))):
        rows = [{"review": t, "stars": ["neg", "pos"][label]} for t, label in zip(data.texts, data.labels)]
        out.append(_write(tmp_path / f"{split}{suffix}", rows))
    return out


def test_command_line_ptnn_then_eval_on_own_files(bert_dir, tmp_path, capsys):
    train, dev, test = _files(tmp_path, ".jsonl")
    out = tmp_path / "ptnn"
    code = main(["compress", "ptnn", "--model", str(bert_dir), "--train", str(train), "--dev", str(dev), "--test",
                 str(test), "--text-column", "review", "--label-column", "stars", "--budget", "0.9", "--steps", "1",
                 "--dense-steps", "5", "--tolerance", "0.9", "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert report["classes"] == ["neg", "pos"] and (out / "report.json").is_file()
    code = main(["eval", "--model", str(out), "--test", str(test), "--text-column", "review", "--label-column",
                 "stars", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["kind"] == "classifier" and result["accuracy"] == pytest.approx(
        report["test_accuracy"])
    code = main(["eval", "--model", str(bert_dir), "--json"])  # a bare encoder: word similarity
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["kind"] == "encoder" and -1 <= result["wordsim353"] <= 1


@pytest.mark.parametrize("problem, message", [
    ("missing column", "'review' is missing"),
    ("one class", "has one class"),
    ("empty", "has no rows"),
    ("not utf-8", "is not UTF-8"),
    ("unseen label", "labels the training file lacks ('meh'); every label must be one of 'neg', 'pos'"),
    ("broken jsonl", "is not JSON"),
    ("empty label", "has an empty label"),
    ("short line", "row 2 has no label"),
    ("long line", "row 2 has 3 fields, the header 2"),
    ("doubled header", "names 'stars' twice"),
    ("list label", "has a list as its label"),
])
def test_bad_labelled_files_get_one_line(bert_dir, tmp_path, capsys, problem, message):
    train, dev, test = _files(tmp_path)
    if problem == "missing column":
        train.write_text(train.read_text().replace("review", "body", 1))
    elif problem == "one class":
        _write(train, [{"review": "fine", "stars": "pos"}] * 3)
    elif problem == "empty":
        train.write_text("")
    elif problem == "not utf-8":
        train.write_bytes("review,stars\ncaf\xe9,pos\nbad,neg\n".encode("latin-1"))
    elif problem == "unseen label":
        dev.write_text(dev.read_text() + "odd one,meh\n")
    elif problem == "short line":
        train.write_text("review,stars\ngood,pos\nno label here\nbad,neg\n")
    elif problem == "empty label":
        test.write_text(test.read_text() + "no stars given,\n")
    elif problem == "long line":  # an unquoted comma: the text's tail would be taken as the label
        train.write_text("review,stars\ngood,pos\ngood, I think,pos\nbad,neg\n")
    elif problem == "doubled header":
        train.write_text("review,stars,stars\ngood,pos,x\nbad,neg,y\n")
    elif problem == "list label":
        train = _write(tmp_path / "train.jsonl", [{"review": "x", "stars": "pos"}, {"review": "y", "stars": ["neg"]}])
    else:
        train = _write(tmp_path / "train.jsonl", [{"review": "x", "stars": "pos"}])
        train.write_text(train.read_text() + "{not json\n")
    out = tmp_path / "never"
    code = main(["compress", "ptnn", "--model", str(bert_dir), "--train", str(train), "--dev", str(dev), "--test",
                 str(test), "--text-column", "review", "--label-column", "stars", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("shapesearch: error: ")
    assert message in err and not out.exists()


def test_read_split_keeps_the_training_class_order(tmp_path):
    train, dev, _ = _files(tmp_path)
    first = read_split(train, "review", "stars")
    assert first.classes == ("neg", "pos")
    assert read_split(dev, "review", "stars", ("pos", "neg")).classes == ("pos", "neg")


def test_a_csv_saved_with_a_byte_order_mark_reads_its_first_column(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_text("review,stars\ngood film,pos\nbad film,neg\n", encoding="utf-8-sig")
    split = read_split(path, "review", "stars")
    assert split.texts == ("good film", "bad film") and split.classes == ("neg", "pos")


def test_a_decoder_whose_config_names_no_padding_token_is_trained_with_the_tokenizers(tmp_path, capsys):
    """LlamaConfig has no pad_token_id by default; the classification head needs one to find
    each text's last token in a padded batch (transformers raised for batches above 1)."""
    from tests.tiny_models import tiny_llama_dir

    model = tiny_llama_dir(tmp_path / "llama")
    config = json.loads((model / "config.json").read_text())
    config.pop("pad_token_id", None)
    (model / "config.json").write_text(json.dumps(config))
    train, dev, test = _files(tmp_path)
    code = main(["compress", "ptnn", "--model", str(model), "--train", str(train), "--dev", str(dev), "--test",
                 str(test), "--text-column", "review", "--label-column", "stars", "--budget", "0.9", "--steps", "1",
                 "--dense-steps", "2", "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
