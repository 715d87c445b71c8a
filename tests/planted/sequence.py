"""Planted bugs for language models: models that look ahead, data whose inputs hold the
target, a loss that counts padding; and a correct plugin for comparison."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nnrecipe.models.sequence import GPT

VOCAB = [chr(c) for c in range(ord("a"), ord("a") + 12)] + [" ", "\n"]


def _gpt(input_shape, num_outputs, **kw) -> GPT:
    args = dict(n_layer=1, n_head=2, n_embd=16, dropout=0.0) | kw
    return GPT(num_outputs, input_shape[0], **args)


def gpt(input_shape, num_outputs, dropout: float = 0.0):
    return _gpt(input_shape, num_outputs, dropout=dropout)


def gpt_without_mask(input_shape, num_outputs, **kw):
    """Every position attends to every other: the future leaks into each output."""
    model = _gpt(input_shape, num_outputs, **kw)
    for block in model.blocks:
        block.attn.mask.fill_(True)
    return model


def gpt_mask_shifted_by_one(input_shape, num_outputs, **kw):
    """tril(diagonal=1): position t also sees t + 1, which is its own target."""
    model = _gpt(input_shape, num_outputs, **kw)
    L = input_shape[0]
    for block in model.blocks:
        block.attn.mask.copy_(torch.tril(torch.ones(L, L, dtype=torch.bool), diagonal=1))
    return model


class MixesTheBatch(nn.Module):
    """A causal model plus the batch mean of its embeddings: examples leak into each other."""

    def __init__(self, vocab: int):
        super().__init__()
        self.tok = nn.Embedding(vocab, 16)
        self.head = nn.Linear(16, vocab)

    def forward(self, idx):
        e = self.tok(idx)
        return self.head(e + e.mean(dim=0, keepdim=True))


def batch_mixing(input_shape, num_outputs):
    return MixesTheBatch(num_outputs)


class IgnoresItsInput(nn.Module):
    """Reads token 0 wherever it should read the input: it can only learn the token frequencies."""

    def __init__(self, vocab: int):
        super().__init__()
        self.tok = nn.Embedding(vocab, 16)
        self.head = nn.Linear(16, vocab)

    def forward(self, idx):
        return self.head(self.tok(torch.zeros_like(idx)))


def ignores_input(input_shape, num_outputs):
    return IgnoresItsInput(num_outputs)


def _text(n: int, seed: int) -> torch.Tensor:
    """A toy language: words from a fixed dictionary, so there is structure to learn."""
    g = torch.Generator().manual_seed(seed)
    words = ["abc", "def", "ghij", "kl", "bad", "face", "fig", "jab"]
    ids = {c: i for i, c in enumerate(VOCAB)}
    out = []
    while len(out) < n:
        w = words[int(torch.randint(len(words), (1,), generator=g))]
        out.extend(ids[c] for c in w)
        out.append(ids["\n"] if torch.rand(1, generator=g) < 0.1 else ids[" "])
    return torch.tensor(out[:n])


def streams(context: int = 16, n: int = 6000):
    """A correct plugin: token streams, nnrecipe cuts the windows."""
    t = _text(n, 0)
    cut = int(0.8 * n)
    return {"train": t[:cut], "val": t[cut:], "vocab": VOCAB, "context": context}


def unshifted_windows(context: int = 16, n: int = 6000):
    """Windows cut by hand with the classic off-by-one: targets = inputs (not shifted)."""
    t = _text(n, 0)
    x = t[: (len(t) // context) * context].reshape(-1, context)
    cut = int(0.8 * len(x))
    return {"train": (x[:cut], x[:cut].clone()), "val": (x[cut:], x[cut:].clone()), "vocab": VOCAB, "context": context}


def padded_windows(context: int = 16, n: int = 6000):
    """Correct hand-cut windows whose last 3 targets of every 4th window are padding (-100)."""
    t = _text(n, 0)
    w = t[: (len(t) // (context + 1)) * (context + 1)].reshape(-1, context + 1)
    x, y = w[:, :-1].clone(), w[:, 1:].clone()
    y[::4, -3:] = -100
    cut = int(0.8 * len(x))
    return {"train": (x[:cut], y[:cut]), "val": (x[cut:], y[cut:]), "vocab": VOCAB, "context": context}


class FullWindowsOnly(nn.Module):
    """A minimal GPT-like model that adds its whole (1, L, D) position table: it takes windows
    of exactly L tokens and nothing shorter."""

    def __init__(self, vocab: int, length: int):
        super().__init__()
        self.tok = nn.Embedding(vocab, 16)
        self.pos = nn.Parameter(torch.zeros(1, length, 16))
        self.head = nn.Linear(16, vocab)

    def forward(self, idx):
        return self.head(torch.cumsum(self.tok(idx) + self.pos, dim=1))  # causal: a running sum


def full_windows_only(input_shape, num_outputs):
    return FullWindowsOnly(num_outputs, input_shape[0])


def counts_padding():
    """A loss that maps ignore_index targets to token 0 instead of skipping them."""

    def loss(out, y):
        return F.cross_entropy(out.flatten(0, 1).float(), y.flatten().clamp(min=0))

    return loss


class CausalConv(nn.Module):
    """A correct next-token model that reads only the last `reach` tokens (a causal convolution,
    padded on the left): on text whose short contexts repeat with different next tokens, no
    model of its reach can take one batch's loss to zero."""

    def __init__(self, vocab: int, reach: int = 3, width: int = 64):
        super().__init__()
        self.reach = reach
        self.tok = nn.Embedding(vocab, width)
        self.conv = nn.Conv1d(width, width, reach)
        self.head = nn.Linear(width, vocab)

    def forward(self, idx):
        e = self.tok(idx).transpose(1, 2)  # (B, D, L)
        h = torch.relu(self.conv(F.pad(e, (self.reach - 1, 0))))  # output t reads tokens t - reach + 1 .. t
        return self.head(h.transpose(1, 2))


def causal_conv(input_shape, num_outputs):
    return CausalConv(num_outputs)


class OneHotGRU(nn.Module):
    """A char-RNN as it is often written: one-hot inputs (no nn.Embedding), a GRU, a head."""

    def __init__(self, vocab: int, bidirectional: bool = False):
        super().__init__()
        self.vocab = vocab
        self.rnn = nn.GRU(vocab, 32, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(64 if bidirectional else 32, vocab)

    def forward(self, idx):
        h, _ = self.rnn(F.one_hot(idx, self.vocab).float())
        return self.head(h)


def onehot_gru(input_shape, num_outputs):
    return OneHotGRU(num_outputs)


def onehot_bidirectional_gru(input_shape, num_outputs):
    """The backward direction reads every later token: each output sees its own target."""
    return OneHotGRU(num_outputs, bidirectional=True)


class OneHotMixesTheBatch(nn.Module):
    """One-hot inputs plus the batch mean of their projections: examples leak into each other."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.proj = nn.Linear(vocab, 16)
        self.head = nn.Linear(16, vocab)

    def forward(self, idx):
        e = self.proj(F.one_hot(idx, self.vocab).float())
        return self.head(e + e.mean(dim=0, keepdim=True))


def onehot_batch_mixing(input_shape, num_outputs):
    return OneHotMixesTheBatch(num_outputs)
