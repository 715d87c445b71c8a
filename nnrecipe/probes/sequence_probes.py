"""Experiments on next-token models and their windows; the rules in checks/sequence_checks.py judge.

Token ids cannot be differentiated, so the gradient probes differentiate with respect to
the outputs of the embedding calls that read them (found by a forward hook, every call on the
ids). A model that one-hot encodes the ids instead has no such call: those probes skip.
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

from nnrecipe.errors import PluginError
from nnrecipe.losses import IGNORE_INDEX
from nnrecipe.probes import evaluating


class NoEmbedding(Exception):
    """No nn.Embedding reads the token ids: nothing to differentiate."""


@contextlib.contextmanager
def embedding_tap(model: nn.Module, x):
    """While active, every nn.Embedding call on the token ids `x` (for structured inputs: on any
    integer leaf of them) returns a leaf tensor that requires grad (a model may read the ids
    twice: a second table, or the same one again); `tap` lists them after a forward pass, each
    (N, L, D)."""
    from nnrecipe import inputs

    ids = [t for t in inputs.tensors(x) if not t.is_floating_point()]
    tap: list[torch.Tensor] = []

    def hook(module, args, output):
        idx = args[0]
        if any(idx.shape == t.shape and torch.equal(idx, t) for t in ids):
            leaf = output.detach().requires_grad_(True)
            tap.append(leaf)
            return leaf
        return None

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Embedding)]
    try:
        yield tap
    finally:
        for h in hooks:
            h.remove()


def _forward_tapped(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    with embedding_tap(model, x) as tap:
        out = model(x)
    if not tap:
        raise NoEmbedding("no nn.Embedding of the model reads the token ids")
    return out, tap


def _grad_per_position(scalar: torch.Tensor, leaves: list[torch.Tensor], reduce_dims: tuple[int, ...]) -> torch.Tensor:
    """max |d scalar / d leaf| over every embedding call, reduced over `reduce_dims`."""
    grads = torch.autograd.grad(scalar, leaves, retain_graph=True, allow_unused=True)
    per = [g.detach().abs().amax(dim=reduce_dims) for g in grads if g is not None]
    if not per:
        return torch.zeros(leaves[0].shape[1 if reduce_dims == (0, 2) else 0])
    return torch.stack(per).amax(dim=0)


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
    g = torch.Generator().manual_seed(seed)
    with evaluating(model):
        out, leaves = _forward_tapped(model, x)
        past, future, first, reach, rows = [], [], [], [], []
        for t in positions:
            r = torch.randn(out.shape[-1], generator=g).to(out.device)
            per_pos = _grad_per_position((out[:, t].float() @ r).sum(), leaves, (0, 2)).double().cpu().numpy()
            rows.append(per_pos)
            past.append(float(per_pos[: t + 1].max()))
            later = per_pos[t + 1 :]
            future.append(float(later.max()) if len(later) else 0.0)
            nz = np.nonzero(later > 0)[0]
            first.append(int(t + 1 + nz[0]) if len(nz) else None)
            reach.append(int(nz[-1]) + 1 if len(nz) else 0)
    return CausalMeasure(
        positions=list(positions),
        past=past,
        future=future,
        first_future=first,
        reach=reach,
        matrix=np.stack(rows),
        length=int(x.shape[1]),
        windows=int(x.shape[0]),
    )


@dataclasses.dataclass
class PerturbMeasure:
    """Tokens changed, outputs watched: works for any model (no embedding needed)."""

    positions: list[int]  # t: every token after t was changed at once
    moved: list[float]  # max |change| of the outputs at positions <= t, relative to the outputs' scale (0: causal)
    first_moved: list[Optional[int]]  # the earliest output position <= t that moved
    receptive: (
        int  # how many tokens an output reads at most (itself and those before it; 0: none), from one-token changes
    )
    positional: bool  # whether an output also depends on where its tokens sit (absolute positions), not only on them
    matrix: np.ndarray  # (positions, L): relative change of output t when only input s changes (nan: not changed)
    length: int
    windows: int


@torch.no_grad()
def causal_perturbation(
    model: nn.Module,
    x: torch.Tensor,
    positions: list[int],
    vocab: int,
    *,
    rtol: float,
    seed: int = 0,
    max_inputs: int = 128,
) -> PerturbMeasure:
    """In eval mode: change every token after t, and the outputs at positions <= t must not move
    (beyond rtol of the outputs' largest value: float noise). Then change one input position at
    a time: the map of which outputs each input moves, and how far back an output reads (a
    bounded-context model's receptive field; the whole window for a full-context one). Last,
    the window moved one position later: whether outputs also read absolute positions."""
    g = torch.Generator().manual_seed(seed)
    length = int(x.shape[1])
    with evaluating(model):
        out = model(x).float()
        scale = float(out.abs().max()) or 1.0

        def change(changed: torch.Tensor) -> torch.Tensor:  # per output position: max relative change
            return ((model(changed).float() - out).abs().amax(dim=(0, 2)) / scale).cpu()

        moved, first = [], []
        for t in positions:
            changed = x.clone()
            changed[:, t + 1 :] = _other_tokens(x[:, t + 1 :], vocab, g)
            delta = change(changed)[: t + 1]
            moved.append(float(delta.max()) if len(delta) else 0.0)
            hit = torch.nonzero(delta > rtol).flatten()
            first.append(int(hit[0]) if len(hit) else None)
        matrix = np.full((len(positions), length), np.nan)
        receptive = 0  # stays 0 when no output reads any token
        inputs = range(length) if length <= max_inputs else np.linspace(0, length - 1, max_inputs).round().astype(int)
        for s in sorted(set(int(i) for i in inputs)):
            changed = x.clone()
            changed[:, s] = _other_tokens(x[:, s], vocab, g)
            delta = change(changed)
            matrix[:, s] = delta[positions].double().numpy()
            hit = torch.nonzero(delta[s:] > rtol * 1e-2).flatten()  # the faintest reach counts (an untrained RNN's)
            if len(hit):
                receptive = max(receptive, int(hit[-1]) + 1)  # output s + k moved: it reads k + 1 tokens
        # The same tokens one position later: a model without absolute positions (a convolution,
        # a recurrence) gives the same outputs there, once its whole reach lies in the window.
        later = model(torch.cat([x[:, :1], x[:, :-1]], dim=1)).float()
        j = max(receptive, 1)  # output j (and after) of the shifted window reads what output j - 1 read
        positional = j >= length or bool(((later[:, j:] - out[:, j - 1 : length - 1]).abs().max() / scale) > rtol)
    return PerturbMeasure(
        positions=list(positions),
        moved=moved,
        first_moved=first,
        receptive=receptive,
        positional=positional,
        matrix=matrix,
        length=length,
        windows=int(x.shape[0]),
    )


def _other_tokens(tokens: torch.Tensor, vocab: int, g: torch.Generator) -> torch.Tensor:
    """Each token replaced by a different one (uniform over the other vocab - 1)."""
    shift = torch.randint(1, max(vocab, 2), tokens.shape, generator=g).to(tokens.device)
    return (tokens + shift) % max(vocab, 2)


@torch.no_grad()
def batch_dependency_perturbation(
    model: nn.Module, x: torch.Tensor, rows: list[int], vocab: int, *, rtol: float, seed: int = 0
) -> np.ndarray:
    """batch-independence for any model of token windows: max |change of out[i]| when window j
    changes, relative to the outputs' scale, a (len(rows), N) matrix (0 off the diagonal when the
    examples are independent)."""
    g = torch.Generator().manual_seed(seed)
    with evaluating(model):
        out = model(x).float()
        scale = float(out.abs().max()) or 1.0
        dep = np.zeros((len(rows), len(x)))
        for j in range(len(x)):
            changed = x.clone()
            changed[j] = _other_tokens(x[j], vocab, g)
            delta = (model(changed).float() - out).abs().flatten(1).amax(dim=1) / scale
            for k, i in enumerate(rows):
                dep[k, j] = float(delta[i]) if float(delta[i]) > rtol else 0.0
    return dep


def batch_dependency_tokens(model: nn.Module, x: torch.Tensor, rows: list[int]) -> np.ndarray:
    """batch-independence for token inputs: |d sum(out[i]) / d emb[j]|, a (len(rows), N) matrix."""
    with evaluating(model):
        out, leaves = _forward_tapped(model, x)
        dep = np.zeros((len(rows), len(x)))
        for k, i in enumerate(rows):
            dep[k] = _grad_per_position(out[i].float().sum(), leaves, (1, 2)).double().cpu().numpy()
    return dep


@dataclasses.dataclass
class TargetLeak:
    lags: list[int]  # k: does y[t] equal x[t - k]? (k = -1 is the correct shift and not tested)
    rates: list[float]  # fraction of (real) target positions where it does
    natural: list[float]  # the inputs' own repeat rate at the same distance: x[t + 1] == x[t - k]
    n: list[int]  # positions compared, per lag (targets; the natural rate has about as many)
    chance: float  # two independent draws from the token frequencies


def target_leak(x: torch.Tensor, y: torch.Tensor, lags: tuple[int, ...] = (0, 1, 2)) -> TargetLeak:
    """How often the target at t is already an input at t - k. Correctly shifted windows
    (y[t] = x[t + 1]) repeat the inputs' own rate of x[t + 1] == x[t - k], however repetitive
    the text; windows not shifted (y = x) or shifted the wrong way give ~1 at one lag."""
    x, y = x.long().cpu(), y.long().cpu()
    real = y != IGNORE_INDEX
    length = x.shape[1]
    rates, natural, ns = [], [], []
    for k in lags:
        if k + 2 > length:
            rates.append(0.0)
            natural.append(0.0)
            ns.append(0)
            continue
        same = (y[:, k:] == x[:, : length - k]) & real[:, k:]
        n = int(real[:, k:].sum())
        rates.append(float(same.sum()) / max(n, 1))
        ns.append(n)
        natural.append(float((x[:, k + 1 :] == x[:, : length - k - 1]).double().mean()))
    v = int(max(x.max(), y[real].max() if real.any() else 0)) + 1
    px = torch.bincount(x.reshape(-1), minlength=v).double()
    py = torch.bincount(y[real].reshape(-1), minlength=v).double()
    chance = float((px / px.sum() * py / py.sum()).sum())
    return TargetLeak(lags=list(lags), rates=rates, natural=natural, n=ns, chance=chance)


@dataclasses.dataclass
class PaddingMeasure:
    loss_plain: float  # the loss on windows of `length` tokens
    loss_padded: float  # the same windows with `pad` tokens appended, their targets ignore_index
    length: int
    pad: int


@torch.no_grad()
def padding_change(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable, *, pad: int, pad_token: int = 0
) -> PaddingMeasure:
    """The loss of the first L - pad tokens of each window, alone and followed by `pad`
    padding positions whose targets are IGNORE_INDEX (the windows keep the model's length)."""
    with evaluating(model):
        keep = x.shape[1] - pad
        xs, ys = x[:, :keep], y[:, :keep]
        xp = torch.cat([xs, torch.full((len(x), pad), pad_token, dtype=x.dtype, device=x.device)], dim=1)
        yp = torch.cat([ys, torch.full((len(y), pad), IGNORE_INDEX, dtype=y.dtype, device=y.device)], dim=1)
        plain = float(loss_fn(model(xs), ys))
        padded = float(loss_fn(model(xp), yp))
    return PaddingMeasure(loss_plain=plain, loss_padded=padded, length=keep, pad=pad)


@torch.no_grad()
def generate(
    model: nn.Module, info, *, tokens: int, device: torch.device, seed: int = 0, temperature: float = 1.0
) -> str:
    """Sample `tokens` tokens after the prompt, each from the model's distribution at the last
    position (a fixed generator seed: samples at successive evaluations differ by the model only)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    ids = info.encode(info.prompt) or [0]
    fixed_length = False  # a model that only takes full windows gets the prompt left-padded with token 0
    with evaluating(model):
        for _ in range(tokens):
            context = ids[-info.context :]
            if fixed_length:
                context = [0] * (info.context - len(context)) + context
            window = torch.tensor([context], dtype=torch.long, device=device)
            try:
                logits = model(window)[0, -1].float().cpu() / temperature
            except (RuntimeError, PluginError):  # a user model's error arrives through the guard
                if fixed_length or len(context) == info.context:
                    raise
                fixed_length = True
                window = torch.tensor([[0] * (info.context - len(context)) + context], dtype=torch.long, device=device)
                logits = model(window)[0, -1].float().cpu() / temperature
            if not torch.isfinite(logits).all():
                break
            ids.append(int(torch.multinomial(F.softmax(logits, dim=-1), 1, generator=g)))
    return info.decode(ids)


def unigram_scores(data) -> tuple[np.ndarray, float]:
    """The unigram predictor (train token frequencies, add-one smoothed) on val: per-window mean
    cross-entropy in nats, and its next-token accuracy (always the most frequent token)."""
    v = data.num_outputs
    train = data.targets("train").long().reshape(-1)
    counts = torch.bincount(train[train != IGNORE_INDEX], minlength=v).double() + 1.0
    logp = torch.log(counts / counts.sum())
    y = data.targets("val").long()
    real = y != IGNORE_INDEX  # padding targets count neither in the loss nor in the accuracy
    per_window = ((-logp[y.clamp(min=0)]) * real).sum(dim=1) / real.sum(dim=1).clamp_min(1)
    hits = ((y == int(counts.argmax())) & real).sum(dim=1) / real.sum(dim=1).clamp_min(1)
    return per_window.double().numpy(), float(hits.double().mean())


def bits(nats: float) -> float:
    return nats / math.log(2)


def measure_wiring(m, model: nn.Module, data, xv: torch.Tensor, yv: torch.Tensor, loss_fn: Callable, cfg) -> None:
    """The baseline's wiring probes for a next-token model, on val windows (the untrained model):
    targets that copy inputs, causal dependency, batch independence through the embeddings,
    padding invariance. Fills the language-model fields of `m` (BaselineMeasurements)."""
    windows = xv[: min(4, len(xv))]
    length = windows.shape[1]
    k = min(cfg.causal_positions, length)
    # Evenly spread positions, always the first and the last but one (a mask shifted by one
    # shows at every position but the last, which has no later input).
    m.leak = target_leak(data.train.x, data.train.y) if hasattr(data.train, "x") else target_leak(xv, yv)
    positions = sorted({int(round(p)) for p in np.linspace(0, max(length - 2, 0), k)})
    vocab, small = data.num_outputs, xv[: min(8, len(xv))]
    # Any model: tokens changed, outputs watched. Where an nn.Embedding reads the ids, the
    # gradients too (exact zeros, and the same picture as before).
    m.perturb = causal_perturbation(model, windows, positions, vocab, rtol=cfg.perturb_rtol)
    try:
        m.causal = causal_gradients(model, windows, positions)
        m.dependency = batch_dependency_tokens(model, small, m.dependency_rows)
    except NoEmbedding as exc:
        m.causal_skip = str(exc)
        m.dependency = batch_dependency_perturbation(model, small, m.dependency_rows, vocab, rtol=cfg.perturb_rtol)
        m.dependency_by = "change"
    if cfg.padding_tokens < length:
        try:
            m.padding = padding_change(model, xv[:16], yv[:16], loss_fn, pad=cfg.padding_tokens)
        except (RuntimeError, PluginError) as exc:  # e.g. a position table added without slicing: only full windows fit
            cause = exc.__cause__ if isinstance(exc, PluginError) and exc.__cause__ is not None else exc
            m.padding_skip = (
                f"the model does not take windows of {length - cfg.padding_tokens} tokens "
                f"({cause.__class__.__name__}: {str(cause).splitlines()[0][:80]})"
            )
    else:
        m.padding_skip = f"windows of {length} tokens leave no room for {cfg.padding_tokens} padding tokens"


def sample(net: nn.Module, data, spec, device, writer, step: int) -> str:
    """A sample from the fixed prompt (same sampling seed each time), to TensorBoard's text tab."""
    text = generate(net, data.sequence, tokens=spec.train.sample_tokens, device=device, seed=spec.seed)
    if writer is not None:
        writer.add_text("samples", "    " + text.replace("\n", "\n    "), step)
    return text
