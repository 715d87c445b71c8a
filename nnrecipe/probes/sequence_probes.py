"""Experiments on next-token models and their windows; the rules in checks/sequence_checks.py judge.

Token ids cannot be differentiated, so the gradient probes differentiate with respect to
the output of the embedding layer that reads them (found by a forward hook): for a model
that one-hot encodes instead, the first layer's input is the one-hot, and the same holds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nnrecipe.losses import IGNORE_INDEX


class NoEmbedding(Exception):
    """No nn.Embedding reads the token ids: nothing to differentiate."""


@contextlib.contextmanager
def embedding_tap(model: nn.Module, x: torch.Tensor):
    """While active, the nn.Embedding called on `x` returns a leaf tensor that requires grad;
    `tap["emb"]` holds it after a forward pass. (N, L, D): gradients per example and position."""
    tap: dict[str, torch.Tensor] = {}

    def hook(module, inputs, output):
        idx = inputs[0]
        if "emb" not in tap and idx.shape == x.shape and torch.equal(idx, x):
            leaf = output.detach().requires_grad_(True)
            tap["emb"] = leaf
            return leaf
        return None

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Embedding)]
    try:
        yield tap
    finally:
        for h in hooks:
            h.remove()


def _forward_tapped(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with embedding_tap(model, x) as tap:
        out = model(x)
    if "emb" not in tap:
        raise NoEmbedding("no nn.Embedding of the model reads the token ids")
    return out, tap["emb"]


@dataclasses.dataclass
class CausalMeasure:
    positions: list[int]  # the output positions t that were backpropagated
    past: list[float]  # max |d out[:, t] / d emb[:, <= t]|
    future: list[float]  # max |d out[:, t] / d emb[:, > t]| (0 for a causal model)
    first_future: list[Optional[int]]  # the first later position that got gradient, per t
    reach: list[int]  # how many positions ahead the furthest gradient came from (0: none)
    matrix: np.ndarray  # (positions, L): max |gradient| of output t on the embedding of each input position
    length: int
    windows: int


def causal_gradients(model: nn.Module, x: torch.Tensor, positions: list[int], *, seed: int = 0) -> CausalMeasure:
    """Backprop a random projection of the outputs at position t to the input embeddings of
    every position (eval mode: no dropout). A causal model gives exactly zero after t."""
    was = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    try:
        out, emb = _forward_tapped(model, x)
        past, future, first, reach, rows = [], [], [], [], []
        for t in positions:
            r = torch.randn(out.shape[-1], generator=g).to(out.device)
            (grad,) = torch.autograd.grad((out[:, t].float() @ r).sum(), emb, retain_graph=True, allow_unused=True)
            per_pos = grad.detach().abs().amax(dim=(0, 2)).double().cpu().numpy() if grad is not None else np.zeros(x.shape[1])
            rows.append(per_pos)
            past.append(float(per_pos[: t + 1].max()))
            later = per_pos[t + 1 :]
            future.append(float(later.max()) if len(later) else 0.0)
            nz = np.nonzero(later > 0)[0]
            first.append(int(t + 1 + nz[0]) if len(nz) else None)
            reach.append(int(nz[-1]) + 1 if len(nz) else 0)
    finally:
        model.train(was)
    return CausalMeasure(positions=list(positions), past=past, future=future, first_future=first, reach=reach, matrix=np.stack(rows),
                         length=int(x.shape[1]), windows=int(x.shape[0]))


def batch_dependency_tokens(model: nn.Module, x: torch.Tensor, rows: list[int]) -> np.ndarray:
    """batch-independence for token inputs: |d sum(out[i]) / d emb[j]|, a (len(rows), N) matrix."""
    was = model.training
    model.eval()
    try:
        out, emb = _forward_tapped(model, x)
        dep = np.zeros((len(rows), len(x)))
        for k, i in enumerate(rows):
            (grad,) = torch.autograd.grad(out[i].float().sum(), emb, retain_graph=True, allow_unused=True)
            if grad is not None:
                dep[k] = grad.detach().abs().reshape(len(x), -1).amax(dim=1).double().cpu().numpy()
    finally:
        model.train(was)
    return dep


@dataclasses.dataclass
class TargetLeak:
    lags: list[int]  # k: does y[t] equal x[t - k]? (k = -1 is the correct shift and not tested)
    rates: list[float]  # fraction of positions where it does
    chance: float  # the rate two independent draws from the token frequencies would match
    n: int  # positions compared per lag (about)


def target_leak(x: torch.Tensor, y: torch.Tensor, lags: tuple[int, ...] = (0, 1, 2)) -> TargetLeak:
    """How often the target at t is already an input at t or before: near 1 when the windows
    were not shifted (y = x) or shifted the wrong way; natural text repeats a character at a
    lag at about the rate of its frequency (chance)."""
    x, y = x.long().cpu(), y.long().cpu()
    real = y != IGNORE_INDEX
    rates = []
    n = 0
    for k in lags:
        if k >= x.shape[1]:
            rates.append(0.0)
            continue
        same = (y[:, k:] == x[:, : x.shape[1] - k]) & real[:, k:]
        n = int(real[:, k:].sum())
        rates.append(float(same.sum()) / max(n, 1))
    v = int(max(x.max(), y[real].max() if real.any() else 0)) + 1
    px = torch.bincount(x.reshape(-1), minlength=v).double()
    py = torch.bincount(y[real].reshape(-1), minlength=v).double()
    chance = float((px / px.sum() * py / py.sum()).sum())
    return TargetLeak(lags=list(lags), rates=rates, chance=chance, n=n)


@dataclasses.dataclass
class PaddingMeasure:
    loss_plain: float  # the loss on windows of `length` tokens
    loss_padded: float  # the same windows with `pad` tokens appended, their targets ignore_index
    length: int
    pad: int


@torch.no_grad()
def padding_change(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable, *, pad: int,
                   pad_token: int = 0) -> PaddingMeasure:
    """The loss of the first L - pad tokens of each window, alone and followed by `pad`
    padding positions whose targets are IGNORE_INDEX (the windows keep the model's length)."""
    was = model.training
    model.eval()
    try:
        keep = x.shape[1] - pad
        xs, ys = x[:, :keep], y[:, :keep]
        xp = torch.cat([xs, torch.full((len(x), pad), pad_token, dtype=x.dtype, device=x.device)], dim=1)
        yp = torch.cat([ys, torch.full((len(y), pad), IGNORE_INDEX, dtype=y.dtype, device=y.device)], dim=1)
        plain = float(loss_fn(model(xs), ys))
        padded = float(loss_fn(model(xp), yp))
    finally:
        model.train(was)
    return PaddingMeasure(loss_plain=plain, loss_padded=padded, length=keep, pad=pad)


@torch.no_grad()
def generate(model: nn.Module, info, *, tokens: int, device: torch.device, seed: int = 0,
             temperature: float = 1.0) -> str:
    """Sample `tokens` tokens after the prompt, each from the model's distribution at the last
    position (a fixed generator seed: samples at successive evaluations differ by the model only)."""
    was = model.training
    model.eval()
    g = torch.Generator(device="cpu").manual_seed(seed)
    ids = info.encode(info.prompt) or [0]
    try:
        for _ in range(tokens):
            window = torch.tensor([ids[-info.context :]], dtype=torch.long, device=device)
            logits = model(window)[0, -1].float().cpu() / temperature
            if not torch.isfinite(logits).all():
                break
            ids.append(int(torch.multinomial(F.softmax(logits, dim=-1), 1, generator=g)))
    finally:
        model.train(was)
    return info.decode(ids)


def unigram_scores(data) -> tuple[np.ndarray, float]:
    """The unigram predictor (train token frequencies, add-one smoothed) on val: per-window mean
    cross-entropy in nats, and its next-token accuracy (always the most frequent token)."""
    v = data.num_outputs
    counts = torch.bincount(data.targets("train").long().reshape(-1), minlength=v).double() + 1.0
    logp = torch.log(counts / counts.sum())
    y = data.targets("val").long()
    per_window = (-logp[y]).mean(dim=1).numpy()
    accuracy = float((y == int(counts.argmax())).double().mean())
    return per_window, accuracy


def bits(nats: float) -> float:
    return nats / math.log(2)
