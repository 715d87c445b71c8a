"""Multi-label data through the plugin contract: scikit-learn's make_multilabel_classification
(documents as bags of words, each with a random set of topics), and an MLP with one logit per
label.

make_data(**data.args) returns {"train": (X, Y), "val": ..., "classes": [...]}, Y multi-hot
(N, K) of 0/1. No softmax at the end of the model: binary cross-entropy with logits applies
one sigmoid per label (a softmax would make the labels compete).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.datasets import make_multilabel_classification
from torch import nn


def make_data(n_train: int = 2000, n_val: int = 1000, features: int = 40, labels: int = 6, per_example: int = 2,
              seed: int = 0):
    x, y = make_multilabel_classification(n_samples=n_train + n_val, n_features=features, n_classes=labels,
                                          n_labels=per_example, length=60, allow_unlabeled=True, random_state=seed)
    x = np.log1p(x)  # word counts: log, then standardized with train's statistics
    mean, std = x[:n_train].mean(axis=0), x[:n_train].std(axis=0) + 1e-6
    x = torch.tensor((x - mean) / std, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.float32)
    return {"train": (x[:n_train], y[:n_train]), "val": (x[n_train:], y[n_train:]),
            "classes": [f"topic{k}" for k in range(labels)]}


def make_model(input_shape: tuple[int, ...], num_outputs: int, width: int = 128) -> nn.Module:
    return nn.Sequential(nn.Linear(math.prod(input_shape), width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, num_outputs))
