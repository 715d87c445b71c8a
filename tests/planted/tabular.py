"""Tabular data as a tuple (x_cat, x_num): category codes and numeric columns, and a model with
an embedding per categorical column (the fastai / plain PyTorch convention, called model(*x))."""

from __future__ import annotations

import torch
from torch import nn

CARDINALITY = (5, 7)  # distinct values of each categorical column (codes 0..K-1)


def mixed(n_train: int = 1500, n_val: int = 600, seed: int = 0):
    """The label: a category effect of each column plus a numeric column, through a sign."""
    g = torch.Generator().manual_seed(seed)
    n = n_train + n_val
    cat = torch.stack([torch.randint(0, k, (n,), generator=g) for k in CARDINALITY], dim=1)
    num = torch.randn(n, 3, generator=g)
    effect = [torch.randn(k, generator=g) for k in CARDINALITY]
    score = effect[0][cat[:, 0]] + effect[1][cat[:, 1]] + num[:, 0] - 0.5 * num[:, 1]
    y = (score > score.median()).long()  # a function of the inputs: a model can fit train
    split = lambda a, b: ((cat[a:b], num[a:b]), y[a:b])  # noqa: E731
    return {"train": split(0, n_train), "val": split(n_train, n), "classes": ["low", "high"]}


class CategoryEmbeddings(nn.Module):
    def __init__(self, num_outputs: int, width: int = 32):
        super().__init__()
        self.embeds = nn.ModuleList(nn.Embedding(k, 4) for k in CARDINALITY)
        self.head = nn.Sequential(nn.Linear(4 * len(CARDINALITY) + 3, width), nn.ReLU(), nn.Linear(width, num_outputs))

    def forward(self, x_cat: torch.Tensor, x_num: torch.Tensor) -> torch.Tensor:
        parts = [e(x_cat[:, j]) for j, e in enumerate(self.embeds)]
        return self.head(torch.cat([*parts, x_num], dim=1))


def embedded(input_shape, num_outputs: int, width: int = 64) -> nn.Module:
    return CategoryEmbeddings(num_outputs, width)
