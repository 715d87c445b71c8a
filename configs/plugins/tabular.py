"""A tabular model with category embeddings, for CSV data with categorical columns.

The csv source reads string columns as codes (1..K per column, 0 for a value the training
file lacks) and gives the model the tuple (codes int64 (N, k_cat), numbers float32 (N, k_num)):
nnrecipe calls model(codes, numbers). `cardinalities` is each categorical column's number of
levels in the file (inspect-data's shapes-dtypes lists the codes' range).
"""

from __future__ import annotations

import torch
from torch import nn


class EmbeddingMLP(nn.Module):
    def __init__(self, cardinalities: list[int], numeric: int, num_outputs: int, dim: int, width: int):
        super().__init__()
        # +1: code 0 is "not seen in the training file"
        self.embeddings = nn.ModuleList(nn.Embedding(k + 1, dim) for k in cardinalities)
        self.mlp = nn.Sequential(
            nn.Linear(dim * len(cardinalities) + numeric, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, num_outputs),
        )

    def forward(self, codes: torch.Tensor, numbers: torch.Tensor) -> torch.Tensor:
        parts = [e(codes[:, j]) for j, e in enumerate(self.embeddings)]
        return self.mlp(torch.cat([*parts, numbers], dim=1))


def make_model(input_shape, num_outputs: int, cardinalities: list[int], dim: int = 4, width: int = 64) -> nn.Module:
    (k_cat,), (k_num,) = input_shape  # the shapes of (codes, numbers) per example
    if k_cat != len(cardinalities):
        raise ValueError(f"cardinalities has {len(cardinalities)} entries; the data has {k_cat} categorical columns")
    return EmbeddingMLP(cardinalities, k_num, num_outputs, dim, width)
