"""K models of one architecture trained as one (issue 24): the pieces, used by together.py (which
runs the engine's loop for a group of a stage's experiments) and by the ManyModels verb here.

Small models are launch- and dispatch-bound: a digits MLP's step is a few microseconds of
arithmetic under a few hundred microseconds of per-operator overhead. Stacking K models'
parameters and running one forward with torch.func.vmap over functional_call pays that
overhead once for all K. Each model keeps its own batch (folds and subsets differ in data),
its own learning rate and weight decay, its own optimizer state (`StackedOptimizer`), so that
K models batched give the numbers K models trained one by one give (tests/test_batched.py and
tests/test_together.py, float tolerance).

Not every model can be vmapped: BatchNorm updating running statistics in training mode writes
to its buffers in place (`batchable` says why, and the caller trains one at a time).
"""

from __future__ import annotations

import copy
import inspect
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


class StackedOptimizer:
    """torch.optim's Adam, AdamW and SGD (momentum, L2 weight decay) for stacked parameters
    (K, ...), each model with its own learning rate (given at each step: its schedule's) and
    weight decay, so that K models batched give the numbers K optimizers give one by one.

    It is always torch's own optimizer, of the models' class and settings, with its fused kernel
    where theirs have it (2-3x a foreach Adam, BENCHMARKS.md). Where every model has one
    learning rate and weight decay, it steps the stacked weights themselves. Otherwise it steps
    a zeroed buffer at learning rate 1 and without weight decay, which leaves each model's
    update direction there: the moments do not depend on either. Each model then moves by its
    own learning rate times that buffer, after its own decay: L2 is added to its gradient
    (Adam, SGD), AdamW's shrinks its weights by lr_k * wd_k. Each model's state can be put back
    into its own torch optimizer (`export`), for a checkpoint an unbatched run can resume."""

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer], params: dict[str, torch.Tensor]):
        group = optimizers[0].param_groups[0]
        kind = type(optimizers[0])
        self.decoupled = issubclass(kind, torch.optim.AdamW) or bool(group.get("decoupled_weight_decay"))
        self.device = next(iter(params.values())).device
        self.decay = [float(o.param_groups[0]["weight_decay"]) for o in optimizers]
        lrs = {o.param_groups[0]["lr"] for o in optimizers}
        # one learning rate and weight decay (a knob's seeds, squeeze's members): torch's
        # optimizer on the weights themselves, bit for bit what each gets alone
        self.direct = len(lrs) == 1 and len(set(self.decay)) == 1
        accepted = inspect.signature(kind.__init__).parameters
        self.kind = kind
        self.settings = {k: v for k, v in group.items() if k in accepted and k != "params"}
        if not self.direct:
            self.settings.update(lr=1.0, weight_decay=0.0)
        self._build(params)

    def _build(self, params: dict[str, torch.Tensor]) -> None:
        """The reference optimizer on what it steps: the weights, or a buffer of each one's update."""
        self.stepped = dict(params) if self.direct else {k: torch.zeros_like(t) for k, t in params.items()}
        self.reference = self.kind(list(self.stepped.values()), **self.settings)
        self.names = {id(t): k for k, t in self.stepped.items()}

    @torch.no_grad()
    def keep(self, rows: Sequence[int], params: dict[str, torch.Tensor]) -> None:
        """Only the models at `rows` of the stack go on, `params` theirs (stacked anew): each one's
        optimizer state goes with it (the others stopped: early stopping, pruning)."""
        index = torch.tensor(list(rows), device=self.device)
        state = {self.names[id(t)]: s for t, s in self.reference.state.items()}
        self.decay = [self.decay[i] for i in rows]
        self._build(params)
        for name, t in self.stepped.items():
            if name in state:  # "step" is one count for all (every model steps each step)
                self.reference.state[t] = {k: _rows(k, v, index) for k, v in state[name].items()}

    @staticmethod
    def why_not(optimizers: Sequence[torch.optim.Optimizer]) -> str:
        """Why these optimizers' updates cannot be stacked ("" when they can)."""
        kinds = {type(o) for o in optimizers}
        if len(kinds) > 1:
            return "their optimizers differ"
        kind = kinds.pop()
        if kind not in (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD):
            return f"the optimizer {kind.__name__} is not one of Adam, AdamW, SGD"
        if any(len(o.param_groups) != 1 for o in optimizers):
            return "an optimizer with several parameter groups"
        first = optimizers[0].param_groups[0]
        if any(first.get(k) for k in ("amsgrad", "maximize", "nesterov", "dampening", "capturable")):
            return "an optimizer setting batched training does not implement (amsgrad, nesterov, ...)"
        own = {"params", "lr", "initial_lr", "weight_decay"}
        for o in optimizers[1:]:
            g = o.param_groups[0]
            if {k: v for k, v in g.items() if k not in own} != {k: v for k, v in first.items() if k not in own}:
                return "their optimizers' settings differ beyond the learning rate and weight decay"
        return ""

    def _per_model(self, values: Sequence[float], like: list[torch.Tensor]) -> list[torch.Tensor]:
        t = torch.tensor(list(values), dtype=torch.float32, device=self.device)
        return [t.reshape((-1,) + (1,) * (x.dim() - 1)) for x in like]

    @torch.no_grad()
    def update(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], lrs: Sequence[float]) -> None:
        """One step of every model, in place, for the parameters that got a gradient."""
        names = list(grads)
        p = [params[k] for k in names]
        # laid out as the parameter: batched backward gives some gradients transposed, and torch
        # 2.14's fused CPU Adam reads a gradient's memory as if laid out like its parameter
        # (measured: a transposed gradient updates the wrong elements)
        g = [grads[k].contiguous() for k in names]
        if self.direct:
            if len(set(lrs)) > 1:  # equal learning rates and equal schedules cannot part
                raise RuntimeError(f"the models' schedules parted: learning rates {sorted(set(lrs))}")
            for t, grad in zip(p, g):
                t.grad = grad
            self.reference.param_groups[0]["lr"] = lrs[0]
            self.reference.step()
        else:
            if any(self.decay) and self.decoupled:  # AdamW: each model's weights shrink first
                torch._foreach_mul_(p, self._per_model([1 - a * w for a, w in zip(lrs, self.decay)], p))
            elif any(self.decay):  # L2: into each model's gradient
                torch._foreach_add_(g, torch._foreach_mul(p, self._per_model(self.decay, p)))
            buf = [self.stepped[k] for k in names]
            torch._foreach_zero_(buf)
            for t, grad in zip(buf, g):
                t.grad = grad
            self.reference.step()  # buf = -(each model's update direction), at learning rate 1
            torch._foreach_mul_(buf, self._per_model(lrs, buf))
            torch._foreach_add_(p, buf)
        for t in self.stepped.values():  # unused parameters kept none: no update, as torch.optim
            t.grad = None

    def export(self, i: int, optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
        """Model i's state into `optimizer` (built on model's parameters, in their order)."""
        mine = dict(model.named_parameters())
        for t, state in self.reference.state.items():
            one = {k: v.clone() if k == "step" else v[i].clone() for k, v in state.items()}
            optimizer.state[mine[self.names[id(t)]]] = one


def _rows(key: str, value, index: torch.Tensor):
    """An optimizer state entry of the models at `index`: their rows of a per-model tensor."""
    per_model = isinstance(value, torch.Tensor) and value.dim() > 0 and key != "step"
    return value.index_select(0, index) if per_model else value


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
        opts = [torch.optim.Adam(m.parameters(), lr=a, weight_decay=w) for m, a, w in zip(models, lr, weight_decay)]
        self.opt, self.lr = StackedOptimizer(opts, self.params), list(lr)
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
        self.opt.update(self.params, dict(zip(self.params, grads)), self.lr)
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
