"""Multi-label data (multi-hot targets) and models: one correct setup and the bugs of its kind."""

from __future__ import annotations

import torch
from torch import nn


def clean(n_train: int = 800, n_val: int = 400, features: int = 12, labels: int = 5, seed: int = 0):
    """Label k is on where a fixed linear score of the inputs passes its own threshold:
    prevalences from about 0.15 to 0.5, learnable, independent of each other."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_val, features, generator=g)
    w = torch.randn(features, labels, generator=g)
    shift = torch.linspace(0.0, 1.0, labels) * 3.0
    y = ((x @ w) > shift).float()
    return {"train": (x[:n_train], y[:n_train]), "val": (x[n_train:], y[n_train:])}


def class_indices(**kw):
    """One class index per example where multi-hot rows were meant."""
    d = clean(**kw)
    return {k: (x, y.argmax(dim=1)) for k, (x, y) in d.items()}


def soft_labels(**kw):
    """Label smoothing baked into the data: 0.9 and 0.1 where 1 and 0 were meant."""
    d = clean(**kw)
    return {k: (x, y * 0.8 + 0.1) for k, (x, y) in d.items()}


def never_on(**kw):
    d = clean(**kw)
    (x, y), val = d["train"], d["val"]
    y = y.clone()
    y[:, -1] = 0.0  # the last label: no positive train example
    return {"train": (x, y), "val": val}


def mlp(input_shape, num_outputs, width: int = 64):
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[-1], width), nn.ReLU(), nn.Linear(width, num_outputs))


class _SoftmaxHead(nn.Module):
    def __init__(self, input_shape, num_outputs):
        super().__init__()
        self.body = mlp(input_shape, num_outputs)

    def forward(self, x):
        return torch.softmax(self.body(x), dim=1)  # planted: the labels compete; sigmoid per label was meant


def softmax_head(input_shape, num_outputs):
    return _SoftmaxHead(input_shape, num_outputs)
