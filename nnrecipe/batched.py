"""K models of one architecture trained as one (issue 24): the first piece, the engine verb.

Small models are launch- and dispatch-bound: a digits MLP's step is a few microseconds of
arithmetic under a few hundred microseconds of per-operator overhead. Stacking K models'
parameters (torch.func.stack_module_state) and running one forward with torch.func.vmap over
functional_call pays that overhead once for all K. Each model keeps its own batch (folds and
subsets differ in data), its own learning rate and weight decay, its own Adam state; the
update is torch.optim.Adam's, written out per model so that K models batched give the numbers
K models trained one by one give (tests/test_batched.py, float tolerance).

Not every model can be vmapped: BatchNorm updating running statistics in training mode writes
to its buffers in place (`batchable` says why, and the caller trains one at a time).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def batchable(model: nn.Module) -> str:
    """Why `model` cannot be trained batched ("" when it can)."""
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            return f"{name} ({type(m).__name__}) updates its running statistics in place"
    return ""


@dataclasses.dataclass
class Adam:
    """torch.optim.Adam's update (L2 weight decay added to the gradient, bias-corrected moments)
    for stacked parameters, one learning rate and weight decay per model: tensors of shape (K,)."""

    lr: torch.Tensor
    weight_decay: torch.Tensor
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    step: int = 0

    def __post_init__(self) -> None:
        self.m: dict[str, torch.Tensor] = {}
        self.v: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def update(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor]) -> None:
        """In place, with foreach ops over every parameter (one pass each, no temporaries per tensor)."""
        self.step += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1**self.step, 1 - b2**self.step
        p, g = list(params.values()), list(grads.values())
        if not self.m:
            self.m = {k: torch.zeros_like(v) for k, v in params.items()}
            self.v = {k: torch.zeros_like(v) for k, v in params.items()}
            # per-model scalars shaped to broadcast against (K, ...) parameters
            self._lr = [self.lr.reshape((-1,) + (1,) * (t.dim() - 1)) for t in p]
            self._wd = [self.weight_decay.reshape((-1,) + (1,) * (t.dim() - 1)) for t in p]
        if bool((self.weight_decay != 0).any()):
            g = torch._foreach_add(g, torch._foreach_mul(p, self._wd))
        m, v = list(self.m.values()), list(self.v.values())
        torch._foreach_lerp_(m, g, 1 - b1)  # m = b1 m + (1 - b1) g
        torch._foreach_mul_(v, b2)
        torch._foreach_addcmul_(v, g, g, value=1 - b2)
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, c2**0.5)
        torch._foreach_add_(denom, self.eps)
        step = torch._foreach_div(m, denom)
        torch._foreach_mul_(step, self._lr)
        torch._foreach_mul_(step, 1 / c1)
        torch._foreach_sub_(p, step)


class ManyModels:
    """K models of one architecture, stacked: `losses(x, y)` is one forward and backward for all
    of them (x (K, B, ...), y (K, B, ...): each model its own batch), `step` one Adam update;
    `unstack()` gives the K trained models back as ordinary modules."""

    def __init__(self, models: Sequence[nn.Module], *, lr: Sequence[float], weight_decay: Sequence[float]):
        why = batchable(models[0])
        if why:
            raise ValueError(f"cannot train these models batched: {why}")
        self.template = copy.deepcopy(models[0]).to("meta")
        params, self.buffers = stack_module_state(list(models))
        self.params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        device = next(iter(self.params.values())).device
        self.opt = Adam(
            torch.tensor(lr, dtype=torch.float32, device=device),
            torch.tensor(weight_decay, dtype=torch.float32, device=device),
        )
        self.k = len(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The K models' outputs (K, B, ...) on their own batches x (K, B, ...)."""

        def one(params, buffers, xb):
            return functional_call(self.template, (params, buffers), (xb,))

        return vmap(one, randomness="different")(self.params, self.buffers, x)

    def step(self, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
        """One training step of every model on its own batch; each model's loss (K,)."""
        losses = vmap(loss_fn)(self.forward(x), y)
        # The sum: each model's parameters get the gradient of its own loss alone.
        grads = torch.autograd.grad(losses.sum(), list(self.params.values()))
        self.opt.update(self.params, dict(zip(self.params, grads)))
        return losses.detach()

    def unstack(self, like: nn.Module) -> list[nn.Module]:
        """The K models as modules shaped like `like` (a copy each), with the trained weights."""
        out = []
        for i in range(self.k):
            model = copy.deepcopy(like)
            state = {k: v[i].detach().clone() for k, v in {**self.params, **self.buffers}.items()}
            model.load_state_dict(state)
            out.append(model)
        return out


def train_many(
    models: Sequence[nn.Module],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: LossFn,
    *,
    lr: Sequence[float],
    weight_decay: Sequence[float] | None = None,
) -> tuple[list[nn.Module], torch.Tensor]:
    """Train K models on their own batches (x (K, B, ...), y (K, B, ...) per step) at once:
    (the trained models, the losses (steps, K))."""
    many = ManyModels(models, lr=lr, weight_decay=weight_decay or [0.0] * len(models))
    curve = [many.step(x, y, loss_fn) for x, y in batches]
    return many.unstack(models[0]), torch.stack(curve) if curve else torch.zeros(0, len(models))
