"""Retraining a compressed ViT without labels: reproduce the dense model's features.

There is no offline labelled image set large enough to fine-tune a ViT on (offline-assets.md
§7), so PTNN's retraining step for a ViT is feature distillation (ours): MSE between the
model's last hidden states (every token) and the dense model's, on seeded random crops of the
training images; dev / test: the mean cosine of the [CLS] features to the dense model's on
whole held-apart images (the dense model scores 1).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from shapesearch.errors import ShapesearchError

from .classifier import TrainConfig, optimize
from .retraining import Retraining
from .vit import features, pixels


def random_crop(image: np.ndarray, rng: np.random.Generator, smallest: float = 0.3) -> np.ndarray:
    """A square crop of side ∈ [smallest, 1] × the shorter side, at a random place, flipped
    left-right half the time."""
    h, w = image.shape[:2]
    side = max(1, int(round(rng.uniform(smallest, 1.0) * min(h, w))))
    top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = image[top:top + side, left:left + side]
    return np.ascontiguousarray(crop[:, ::-1]) if rng.random() < 0.5 else crop


class ImageDistillation(Retraining):
    """Feature distillation to ``teacher`` (the dense ViT, copied and frozen) on crops of
    ``train_images``; the metric is the mean [CLS] cosine on ``dev_images`` / ``test_images``
    at ``size`` pixels; ``train_size``: the crops' size in pixels (default ``size``: smaller is
    cheaper).  ``tolerance``: the default τ (cosine a kept layer may lose)."""

    metric = "cosine"

    def __init__(self, teacher: nn.Module, train_images: list[np.ndarray], dev_images: list[np.ndarray],
                 test_images: list[np.ndarray], size: int = 224, train_size: int | None = None,
                 tolerance: float = 0.05) -> None:
        if not (train_images and dev_images and test_images):
            raise ShapesearchError("image distillation needs images to train on, and to score on (dev and test): "
                                   "give at least one of each")
        self.teacher = copy.deepcopy(teacher).eval().requires_grad_(False)
        self.train_images = [np.asarray(i) for i in train_images]
        self.train_size, self.tolerance = train_size or size, tolerance
        self.dev_batch, self.test_batch = pixels(dev_images, size), pixels(test_images, size)
        self.dev_target = features(self.teacher, self.dev_batch)
        self.test_target = features(self.teacher, self.test_batch)
        self._rng: np.random.Generator | None = None
        self.description = (f"feature distillation ({len(train_images)} / {len(dev_images)} / {len(test_images)} "
                            "images)")

    def train(self, model: nn.Module, config: TrainConfig) -> list[float]:
        if config.steps == 0:
            return []
        if self._rng is None:
            self._rng = np.random.default_rng(config.seed)
        model.eval()  # DINOv2 has no dropout; eval keeps a run reproducible either way

        def loss_at(step: int) -> torch.Tensor:
            picks = self._rng.integers(0, len(self.train_images), config.batch)
            x = pixels([random_crop(self.train_images[i], self._rng) for i in picks], self.train_size)
            with torch.no_grad():
                target = self.teacher(pixel_values=x).last_hidden_state
            return nn.functional.mse_loss(model(pixel_values=x).last_hidden_state, target)

        return optimize([p for p in model.parameters() if p.requires_grad], config, loss_at, weight_decay=0.0)

    def cosines(self, model: nn.Module, part: str) -> torch.Tensor:
        """Each ``part`` ("dev" or "test") image's [CLS] cosine to the dense model's, [n]."""
        batch, target = {"dev": (self.dev_batch, self.dev_target), "test": (self.test_batch, self.test_target)}[part]
        return torch.cosine_similarity(features(model, batch), target, dim=-1)

    def dev(self, model: nn.Module) -> float:
        return float(self.cosines(model, "dev").mean())

    def test(self, model: nn.Module) -> float:
        return float(self.cosines(model, "test").mean())

    def default_tolerance(self, dense_dev: float) -> float:
        return self.tolerance
