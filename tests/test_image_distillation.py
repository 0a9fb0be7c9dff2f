"""PTNN on a ViT without labels: feature distillation to the dense model on crops of training
images, scored by [CLS] cosine on held-apart images (a tiny random DINOv2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Dinov2Config, Dinov2Model

import compressors
from compressors.classifier import TrainConfig
from compressors.image_distillation import ImageDistillation, random_crop
from compressors.ptnn import PTNNConfig, candidate_order
from compressors.tt_linear import TTLinear, TTMatrixLinear, tt_layer


def _vit(seed: int = 0) -> Dinov2Model:
    torch.manual_seed(seed)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=4, patch_size=8,
                          image_size=32, layerscale_value=1.0)
    return Dinov2Model(config).eval()


def _images(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    # smooth images with structure: sums of random low-frequency waves, RGB, uint8
    y, x = np.mgrid[0:48, 0:56] / 48
    out = []
    for _ in range(n):
        img = sum(np.sin(rng.uniform(1, 6) * x + rng.uniform(1, 6) * y + rng.uniform(0, 6))[..., None]
                  * rng.uniform(0, 1, 3) for _ in range(3))
        out.append(np.uint8(255 * (img - img.min()) / (img.max() - img.min())))
    return out


@pytest.fixture(scope="module")
def data() -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    return _images(12, 0), _images(4, 1), _images(4, 2)


def test_random_crop_is_a_square_inside_the_image():
    rng = np.random.default_rng(0)
    image = np.arange(48 * 56 * 3).reshape(48, 56, 3)
    for _ in range(50):
        crop = random_crop(image, rng)
        assert crop.shape[0] == crop.shape[1] and 0.3 * 48 - 1 <= crop.shape[0] <= 48 and crop.shape[2] == 3


def test_the_dense_model_scores_one_and_distillation_recovers_cosine(data):
    dense = _vit()
    task = ImageDistillation(dense, *data, size=32)
    assert task.dev(dense) == pytest.approx(1.0, abs=1e-6) and task.test(dense) == pytest.approx(1.0, abs=1e-6)
    model = _vit()
    name = "encoder.layer.1.mlp.fc1"
    old = model.get_submodule(name)
    with torch.no_grad():
        model.set_submodule(name, tt_layer(old.weight, "ttm", (8, 16), (4, 8), 0.6, False, old.bias))
    before = task.dev(model)
    losses = task.train(model, TrainConfig(steps=40, lr=3e-3, batch=4))
    assert before < 0.999 and task.dev(model) > before
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_ptnn_on_a_vit_keeps_layers_and_reports_cosine(data):
    dense = _vit()
    model = _vit()
    task = ImageDistillation(dense, *data, size=32)
    config = PTNNConfig(budget=0.85, tolerance=0.5, eps=0.5, embeddings=False, steps=2, dense_steps=0, lr=1e-3,
                        batch=4, search_generations=1)
    order = candidate_order(model, embeddings=False)
    assert order[:2] == ["encoder.layer.1.mlp.fc2", "encoder.layer.1.mlp.fc1"]  # FFN first, top block first
    report = compressors.compress(model, config, retraining=task)
    assert report["metric"] == "cosine" and report["dense_dev_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert [d["name"] for d in report["decisions"]] == order[:len(report["decisions"])]
    kept = [d["name"] for d in report["decisions"] if d["kept"]]
    assert kept and report["budget_met"] and report["model_ratio"] <= 0.85
    assert all(isinstance(model.get_submodule(n), TTLinear | TTMatrixLinear) for n in kept)
    assert report["test_cosine"] == task.test(model) and all("dev_cosine" in d for d in report["decisions"])
    assert "dev_accuracy" not in report


def test_a_vit_has_no_token_embedding_to_tensorize(data):
    from shapesearch.errors import ShapesearchError

    with pytest.raises(ShapesearchError, match="no token embedding"):
        compressors.compress(_vit(), PTNNConfig(embeddings=True, dense_steps=0, steps=1),
                             retraining=ImageDistillation(_vit(), *data, size=32))
