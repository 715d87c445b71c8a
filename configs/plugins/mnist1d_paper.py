"""The models of the MNIST-1D paper (Greydanus 2020, "Scaling down deep learning"), as plugins.

They follow greydanus/mnist1d's notebooks/models.py layer for layer; only `dropout` is added
(0 by default, the paper's models have none) so that the regularize stage's dropout knob can
try it. Used by configs/mnist1d-mlp.yaml and configs/mnist1d-cnn.yaml; the logistic
regression of the table is the built-in `linear` (one nn.Linear(40, 10), as in the paper).
"""

from __future__ import annotations

import math

from torch import nn


def make_cnn(input_shape: tuple[int, ...], num_outputs: int, channels: int = 25, dropout: float = 0.0) -> nn.Module:
    """The paper's ConvBase: three strided convolutions with ReLU, the features flattened (their
    position kept, no pooling) into one linear layer. 40 samples -> 19 -> 10 -> 5 positions,
    25 channels x 5 = 125 features; 5,210 parameters at channels=25."""
    length = input_shape[-1]
    layers: list[nn.Module] = [nn.Unflatten(1, (1, length))] if len(input_shape) == 1 else []
    c_in = input_shape[0] if len(input_shape) == 2 else 1
    for kernel in (5, 3, 3):
        layers += [nn.Conv1d(c_in, channels, kernel, stride=2, padding=1), nn.ReLU()]
        length = (length + 2 - kernel) // 2 + 1
        c_in = channels
    layers.append(nn.Flatten())
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(channels * length, num_outputs))
    return nn.Sequential(*layers)


class _ResidualMLP(nn.Module):
    """The paper's MLPBase: h = relu(W1 x); h = h + relu(W2 h); logits = W3 h."""

    def __init__(self, features: int, hidden: int, num_outputs: int, dropout: float):
        super().__init__()
        self.linear1 = nn.Linear(features, hidden)
        self.linear2 = nn.Linear(hidden, hidden)
        self.linear3 = nn.Linear(hidden, num_outputs)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        h = self.linear1(x.flatten(1)).relu()
        h = h + self.linear2(self.dropout(h)).relu()
        return self.linear3(self.dropout(h))


def make_mlp(input_shape: tuple[int, ...], num_outputs: int, hidden: int = 100, dropout: float = 0.0) -> nn.Module:
    return _ResidualMLP(math.prod(input_shape), hidden, num_outputs, dropout)
