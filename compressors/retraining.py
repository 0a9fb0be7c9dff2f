"""What PTNN retrains on and how it scores a candidate: one role, one subclass per task.

``TextClassification``: a sequence classifier on labelled texts, scored by accuracy.
``compressors.image_distillation.ImageDistillation``: a ViT retrained to reproduce the dense
model's features on unlabelled images, scored by feature cosine.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import torch
from torch import nn

from .classifier import TrainConfig, accuracy, batches, train_classifier
from .targets import input_embedding
from .text_tasks import TextTask
from .tt_embedding import frequency_weights

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class Retraining(ABC):
    """A task to retrain on (``train``) and its metric on the dev and test data, higher is
    better; ``metric`` names it in reports (``dev_<metric>``, ``dense_test_<metric>``, …)."""

    metric: str
    description: str

    @abstractmethod
    def train(self, model: nn.Module, config: TrainConfig) -> list[float]:
        """Retrain every parameter of ``model`` for ``config.steps`` steps; the losses.  Calls
        continue one another (one pass order over the data for the whole run)."""

    @abstractmethod
    def dev(self, model: nn.Module) -> float:
        """The metric on the dev data."""

    @abstractmethod
    def test(self, model: nn.Module) -> float:
        """The metric on the test data."""

    @abstractmethod
    def default_tolerance(self, dense_dev: float) -> float:
        """τ when the config gives none: how much dev metric a kept layer may lose."""

    def embedding_weights(self, model: nn.Module) -> torch.Tensor | None:
        """Row weights for the token embedding's TT fit (None: a plain fit)."""
        return None


class TextClassification(Retraining):
    """A sequence classifier on ``task``'s texts: cross-entropy, accuracy; the embedding's TT
    weighted by each token's frequency in the training texts."""

    metric = "accuracy"

    def __init__(self, tokenizer: PreTrainedTokenizerBase, task: TextTask) -> None:
        self.tokenizer, self.task, self._draw = tokenizer, task, None
        self.description = f"{task.name} ({len(task.train)} / {len(task.dev)} / {len(task.test)} texts)"

    def train(self, model: nn.Module, config: TrainConfig) -> list[float]:
        if self._draw is None:
            self._draw = batches(self.task.train, config.batch, config.seed)
        return train_classifier(model, self.tokenizer, self.task.train, config, self._draw)

    def dev(self, model: nn.Module) -> float:
        return accuracy(model, self.tokenizer, self.task.dev)

    def test(self, model: nn.Module) -> float:
        return accuracy(model, self.tokenizer, self.task.test)

    def default_tolerance(self, dense_dev: float) -> float:
        # two standard errors: the smallest drop a single dev measurement can tell from noise
        return 2 * math.sqrt(dense_dev * (1 - dense_dev) / len(self.task.dev))

    def embedding_weights(self, model: nn.Module) -> torch.Tensor | None:
        vocab = input_embedding(model)[1].num_embeddings
        ids = self.tokenizer(list(self.task.train.texts), add_special_tokens=True)["input_ids"]
        return frequency_weights(torch.tensor([i for row in ids for i in row]), vocab)
