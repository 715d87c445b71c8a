"""Planted bugs of text models on Hugging Face style batches (configs/plugins/text_classification.py)."""

from __future__ import annotations

import torch
from torch import nn


class IgnoresMask(nn.Module):
    """Takes the attention mask and never reads it: the mean embedding over every position,
    padding included, so a sentence's prediction depends on how much padding follows it."""

    def __init__(self, vocab: int, num_outputs: int, width: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, num_outputs))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(input_ids).mean(dim=1))


def ignores_mask(input_shape, num_outputs: int, vocab: int = 64, width: int = 64) -> nn.Module:
    return IgnoresMask(vocab, num_outputs, width)


class FixedLength(nn.Module):
    """Reads the mask correctly but only takes sequences of its own length (a flatten)."""

    def __init__(self, vocab: int, num_outputs: int, length: int, width: int = 8):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.head = nn.Linear(length * width, num_outputs)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        e = self.embed(input_ids) * attention_mask.unsqueeze(-1)
        return self.head(e.reshape(len(e), -1))


class NeedsTokenTypes(nn.Module):
    """A model whose forward needs a key the batches do not carry (token_type_ids)."""

    def __init__(self, vocab: int, num_outputs: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, 8)
        self.head = nn.Linear(8, num_outputs)

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.head(self.embed(input_ids + token_type_ids).mean(dim=1))


def needs_token_types(input_shape, num_outputs: int, vocab: int = 64) -> nn.Module:
    return NeedsTokenTypes(vocab, num_outputs)


def mismatched_rows(n: int = 100):
    """A dict batch whose leaves disagree on the number of examples (a mask cut short)."""
    ids = torch.randint(1, 64, (n, 16))
    x = {"input_ids": ids, "attention_mask": torch.ones(n - 10, 16, dtype=torch.long)}
    y = torch.randint(0, 2, (n,))
    return {"train": (x, y), "val": ({k: v[:50] for k, v in x.items()}, y[:50])}
