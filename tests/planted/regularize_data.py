"""Planted data for the regularize stage (data.source: python).

- `left_right`: the label says on which side of the image a bar stands; a horizontal flip
  swaps the meaning of the labels (the bug augment-preserves-labels exists to catch).
- `scrambled_digits`: scikit-learn's digits with the 64 pixels in a fixed random order, as
  when a view()/reshape() stands where a permute() was meant: a model still learns (an MLP
  does not care about pixel order) but its first-layer filters are noise in the image's layout.
- `flip_labels`: an augmentation factory that flips images AND swaps left/right labels with
  them (the correct way to flip direction-dependent data).
"""

from __future__ import annotations

import torch


def left_right(n_train: int = 400, n_val: int = 400, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n = n_train + n_val
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.2 * torch.rand(n, 1, 8, 8, generator=g)
    col = torch.randint(0, 3, (n,), generator=g) + torch.where(y == 1, 5, 0)  # label 0: columns 0-2, label 1: 5-7
    top = torch.randint(0, 4, (n,), generator=g)
    for i in range(n):
        x[i, 0, top[i] : top[i] + 4, col[i]] += 0.8
    return {"train": (x[:n_train], y[:n_train]), "val": (x[n_train:], y[n_train:]), "classes": ["left", "right"]}


def scrambled_digits(seed: int = 1):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(64, generator=g)
    x = x[:, perm].reshape(-1, 1, 8, 8)  # the bug: pixels in the wrong places, consistently
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    return {"train": (x[:1400], y[:1400]), "val": (x[1400:], y[1400:])}


def flip_labels(p: float = 0.5):
    def augment(x, y):
        flip = torch.rand(len(x), device=x.device) < p
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x, torch.where(flip, 1 - y, y)

    return augment


def crop_to_half():
    """A broken augmentation: it changes the input shape the model was built for."""
    return lambda x, y: (x[..., : x.shape[-1] // 2], y)


def single_class(n: int = 200):
    """Every label is 0: nothing to classify."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = torch.zeros(n, dtype=torch.int64)
    return {"train": (x[:150], y[:150]), "val": (x[150:], y[150:])}
