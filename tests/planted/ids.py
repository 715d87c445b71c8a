"""Integer inputs, first-class: category codes of a table (N, F) and token ids (N, L), with
models that read them through embeddings; one correct setup each and the bugs of their kind."""

from __future__ import annotations

import torch
from torch import nn


def codes(n_train: int = 1500, n_val: int = 500, features: int = 12, cardinality: int = 10, seed: int = 0):
    """A table of category codes, each column's categories as unequally frequent as real ones
    (Zipf-like): the class is which third the sum of the codes' effects falls in (learnable by
    a linear model on one-hot codes)."""
    g = torch.Generator().manual_seed(seed)
    freq = 1.0 / torch.arange(1, cardinality + 1)
    x = torch.multinomial(freq, (n_train + n_val) * features, replacement=True, generator=g).reshape(-1, features)
    effect = torch.randn(features, cardinality, generator=g)
    score = effect[torch.arange(features), x].sum(dim=1)
    y = torch.bucketize(score, torch.quantile(score, torch.tensor([1 / 3, 2 / 3])))
    return {"train": (x[:n_train], y[:n_train]), "val": (x[n_train:], y[n_train:])}


def codes_reencoded(**kw):
    """Val encoded by its own encoder: each column's categories numbered in another order (the
    classic: LabelEncoder / astype('category') fitted per split)."""
    d = codes(**kw)
    (x, y) = d["val"]
    g = torch.Generator().manual_seed(1)
    card = int(d["train"][0].max()) + 1
    perms = torch.stack([torch.randperm(card, generator=g) for _ in range(x.shape[1])])  # (F, C)
    x = perms[torch.arange(x.shape[1]), x]
    return {"train": d["train"], "val": (x, y)}


def negative_ids(**kw):
    """Missing values coded -1, as pandas' category codes do."""
    d = codes(**kw)
    x, y = d["train"]
    x = x.clone()
    x[:20, 0] = -1
    return {"train": (x, y), "val": d["val"]}


def tokens(n_train: int = 1500, n_val: int = 500, length: int = 16, vocab: int = 40, seed: int = 0):
    """Token windows: the class is how many of two marker tokens occur (0, 1 or 2 of them)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(2, vocab, (n_train + n_val, length), generator=g)
    y = (x == 2).any(dim=1).long() + (x == 3).any(dim=1).long()
    return {"train": (x[:n_train], y[:n_train]), "val": (x[n_train:], y[n_train:])}


class _Embedded(nn.Module):
    """Each position's id through one embedding table, mean-pooled, then an MLP."""

    def __init__(self, input_shape, num_outputs, vocab: int = 64, dim: int = 32):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(input_shape[0], dim))
        self.head = nn.Sequential(nn.Linear(dim * input_shape[0], 64), nn.ReLU(), nn.Linear(64, num_outputs))

    def features(self, x):
        return (self.emb(x) + self.pos).flatten(1)

    def forward(self, x):
        return self.head(self.features(x))


def embedded(input_shape, num_outputs, vocab: int = 64):
    return _Embedded(input_shape, num_outputs, vocab)


class _MixesBatch(_Embedded):
    def features(self, x):
        e = self.emb(x) + self.pos  # (N, L, D)
        return e.transpose(0, 1).reshape(len(x), -1)  # planted: a reshape where flatten(1) was meant mixes examples


def mixes_batch(input_shape, num_outputs, vocab: int = 64):
    return _MixesBatch(input_shape, num_outputs, vocab)
