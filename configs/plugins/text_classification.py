"""Text classification with Hugging Face style batches, generated here (no download).

make_data(**data.args) returns {"train": (x, y), "val": ..., "classes": [...]}, where x is a
dict {"input_ids": (N, L) long, "attention_mask": (N, L) long}: sentences of 6 to L-4 tokens,
[CLS] first, padded with id 0 to L, the mask 1 on real tokens. A sentence is "positive" when
it holds more tokens of the positive set (ids 4-13) than of the negative set (ids 14-23); the
other tokens are neutral words. Counting matters: a sentence may
hold words of both kinds. nnrecipe calls the model with model(**x), as Hugging Face does.

Models:
- make_bert: transformers' BertForSequenceClassification from a small BertConfig (random
  init, nothing downloaded), unmodified: it returns a ModelOutput whose `logits` nnrecipe reads.
- make_bag: a plain PyTorch model of the same batch, the mean of the token embeddings where
  the mask is 1, then an MLP.
"""

from __future__ import annotations

import torch
from torch import nn

PAD, CLS = 0, 1
POSITIVE, NEGATIVE = range(4, 14), range(14, 24)


def make_data(n_train: int = 2000, n_val: int = 1000, vocab: int = 64, length: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n = n_train + n_val
    ids = torch.full((n, length), PAD, dtype=torch.long)
    mask = torch.zeros(n, length, dtype=torch.long)
    y = torch.randint(0, 2, (n,), generator=g)
    for i in range(n):
        size = int(torch.randint(6, length - 3, (1,), generator=g))
        words = torch.randint(24, vocab, (size - 1,), generator=g)  # neutral words
        own, other = (POSITIVE, NEGATIVE) if y[i] == 1 else (NEGATIVE, POSITIVE)
        k = int(torch.randint(1, 4, (1,), generator=g))  # 1-3 words of its own sentiment, fewer of the other
        j = int(torch.randint(0, k, (1,), generator=g))
        where = torch.randperm(size - 1, generator=g)[: k + j]
        words[where[:k]] = torch.randint(own.start, own.stop, (k,), generator=g)
        words[where[k:]] = torch.randint(other.start, other.stop, (j,), generator=g)
        ids[i, 0], ids[i, 1:size] = CLS, words
        mask[i, :size] = 1
    x = {"input_ids": ids, "attention_mask": mask}
    train = {k: v[:n_train] for k, v in x.items()}
    val = {k: v[n_train:] for k, v in x.items()}
    return {"train": (train, y[:n_train]), "val": (val, y[n_train:]), "classes": ["negative", "positive"]}


def make_bert(input_shape, num_outputs: int, vocab: int = 64, hidden: int = 32, layers: int = 2, heads: int = 2):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        max_position_embeddings=2 * input_shape["input_ids"][0],  # room for longer batches
        num_labels=num_outputs,
        pad_token_id=PAD,
    )
    return BertForSequenceClassification(config)


class BagOfEmbeddings(nn.Module):
    """The mean embedding of the real tokens (attention_mask 1), then an MLP."""

    def __init__(self, vocab: int, num_outputs: int, width: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, num_outputs))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        m = attention_mask.unsqueeze(-1).float()
        pooled = (self.embed(input_ids) * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
        return self.head(pooled)


def make_bag(input_shape, num_outputs: int, vocab: int = 64, width: int = 64) -> nn.Module:
    return BagOfEmbeddings(vocab, num_outputs, width)
