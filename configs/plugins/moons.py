"""An example of the plugin contract: your data and your model, in plain PyTorch.

make_data(**data.args) returns {"train": Dataset or (X, Y), "val": ..., "classes": [...]}.
make_model(input_shape, num_outputs, **model.args) returns an nn.Module mapping a batch
(N, *input_shape) to (N, num_outputs) logits.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import TensorDataset


def _moons(n: int, noise: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaving half circles (the classic 'two moons'), with Gaussian noise."""
    y = torch.arange(n) % 2
    t = torch.rand(n, generator=generator) * math.pi
    x = torch.stack([torch.cos(t), torch.sin(t)], dim=1)
    x[y == 1] = torch.stack([1 - torch.cos(t[y == 1]), 0.5 - torch.sin(t[y == 1])], dim=1)
    x = x + noise * torch.randn(n, 2, generator=generator)
    x = (x - torch.tensor([0.5, 0.25])) / torch.tensor([0.87, 0.5])  # roughly standardized
    return x.float(), y.long()


def make_data(n_train: int = 1000, n_val: int = 300, noise: float = 0.2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    train = TensorDataset(*_moons(n_train, noise, g))
    val = _moons(n_val, noise, g)  # a pair of tensors works too
    return {"train": train, "val": val, "classes": ["upper", "lower"]}


def make_model(input_shape: tuple[int, ...], num_outputs: int, width: int = 64) -> nn.Module:
    (features,) = input_shape
    return nn.Sequential(
        nn.Linear(features, width), nn.ReLU(),
        nn.Linear(width, width), nn.ReLU(),
        nn.Linear(width, num_outputs),
    )
