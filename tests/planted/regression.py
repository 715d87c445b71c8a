"""Planted bugs in the user's own code for regression: a loss that broadcasts (N, 1) outputs
against the data's (N,) targets, a model that warns in forward; and correct controls."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def data(n_train: int = 600, n_val: int = 200, features: int = 8, seed: int = 0):
    """y = x·w + noise with targets of shape (N,): as most scripts load a regression target."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(features, generator=g) / features**0.5
    x = torch.randn(n_train + n_val, features, generator=g)
    y = x @ w + 0.1 * torch.randn(n_train + n_val, generator=g)
    return {"train": (x[:n_train], y[:n_train]), "val": (x[n_train:], y[n_train:])}


def mse_module():
    """The classic: nn.MSELoss on outputs (N, 1) and targets (N,) averages an (N, N) matrix."""
    return nn.MSELoss()


def mse_reshaped():
    """The same loss made shape-safe: the targets take the outputs' shape first."""

    def loss(out, y):
        return F.mse_loss(out, y.view_as(out))

    return loss


class _Copies(nn.Module):
    """Copy-constructs its input with torch.tensor (PyTorch warns: use clone().detach())."""

    def __init__(self, features: int, outputs: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, 32), nn.ReLU(), nn.Linear(32, outputs))

    def forward(self, x):
        return self.net(torch.tensor(x))


def warns_in_forward(input_shape, num_outputs):
    return _Copies(input_shape[0], num_outputs)


def mlp(input_shape, num_outputs):
    return nn.Sequential(nn.Linear(input_shape[0], 32), nn.ReLU(), nn.Linear(32, num_outputs))


def two_outputs(n_train: int = 1200, n_val: int = 400, features: int = 8, seed: int = 0, misaligned: bool = False):
    """Two real targets, each a linear function of the inputs plus noise; `misaligned`: the
    second column shuffled on its own (joined to the inputs by the wrong key), so nothing in
    the inputs predicts it while the first keeps the overall R^2 high."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_val, features, generator=g)
    w = torch.randn(features, 2, generator=g) / features**0.5
    y = x @ w + 0.1 * torch.randn(n_train + n_val, 2, generator=g)
    if misaligned:
        y[:, 1] = y[torch.randperm(len(y), generator=g), 1]  # planted
    return {"train": (x[:n_train], y[:n_train]), "val": (x[n_train:], y[n_train:])}


def two_outputs_misaligned(**kw):
    return two_outputs(misaligned=True, **kw)
