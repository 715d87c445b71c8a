"""Built-in next-token models: (N, L) token ids -> (N, L, V) logits.

`gpt` is nanoGPT's shape at a small size: token + learned position embeddings, pre-LayerNorm
blocks of causal self-attention and an MLP, a final LayerNorm and a linear head. The causal
mask is an explicit boolean buffer (`attn.mask`, True = may attend) so what the model may see
is inspectable, and the causal-dependency check verifies it by gradients anyway.
`gru` is a recurrent baseline, causal by construction. `bigram` (a token's embedding is its
next-token logits) is the language model's "linear" baseline in the baseline stage.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class CausalSelfAttention(nn.Module):
    mask: torch.Tensor  # a buffer (register_buffer in __init__)

    def __init__(self, n_embd: int, n_head: int, context: int, dropout: float):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.dropout = dropout
        self.register_buffer("mask", torch.tril(torch.ones(context, context, dtype=torch.bool)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(n, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))  # (N, H, T, D)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=self.mask[:t, :t], dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).reshape(n, t, c))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, context: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, context, dropout)
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab: int, context: int, *, n_layer: int, n_head: int, n_embd: int, dropout: float):
        super().__init__()
        self.context = context
        self.tok = nn.Embedding(vocab, n_embd)
        self.pos = nn.Embedding(context, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, context, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab)
        # nanoGPT's init: N(0, 0.02) weights, zero biases, residual projections scaled by
        # 1/sqrt(2 * n_layer) so the residual stream's variance does not grow with depth. The
        # head's logits start within ~0.2 of each other: the loss at init is ~ln V.
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(("attn.proj.weight", "mlp.2.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        if t > self.context:
            raise ValueError(f"a sequence of {t} tokens is longer than the model's context of {self.context}")
        x = self.drop(self.tok(idx) + self.pos(torch.arange(t, device=idx.device)))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


class GRU(nn.Module):
    def __init__(self, vocab: int, *, n_embd: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.tok = nn.Embedding(vocab, n_embd)
        self.rnn = nn.GRU(n_embd, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, vocab)
        nn.init.normal_(self.tok.weight, 0.0, 0.1)
        nn.init.normal_(self.head.weight, 0.0, 0.02)  # near-uniform logits at init: loss ~ln V
        nn.init.zeros_(self.head.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.tok(idx))
        return self.head(self.drop(h))


class Bigram(nn.Module):
    """The next token from the current one alone: a V x V table of logits."""

    def __init__(self, vocab: int):
        super().__init__()
        self.table = nn.Embedding(vocab, vocab)
        nn.init.zeros_(self.table.weight)  # uniform at init, like the other built-ins

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table(idx)


def gpt(input_shape: tuple[int, ...], num_outputs: int, args) -> nn.Module:
    return GPT(
        num_outputs, input_shape[0], n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, dropout=args.dropout
    )


def gru(input_shape: tuple[int, ...], num_outputs: int, args) -> nn.Module:
    return GRU(num_outputs, n_embd=args.n_embd, hidden=args.hidden, layers=args.layers, dropout=args.dropout)
