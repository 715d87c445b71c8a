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
    weight decay, so that K models batched give the numbers K optimizers give one by one: where
    every model has one learning rate and weight decay, torch's own optimizer on the stack;
    else written out with foreach ops. Each model's state can be put back into its own torch
    optimizer (`export`), for a checkpoint an unbatched run can resume."""

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer], params: dict[str, torch.Tensor]):
        group = optimizers[0].param_groups[0]
        self.kind = "sgd" if isinstance(optimizers[0], torch.optim.SGD) else "adam"
        self.decoupled = isinstance(optimizers[0], torch.optim.AdamW) or bool(group.get("decoupled_weight_decay"))
        self.betas, self.eps = group.get("betas", (0.9, 0.999)), group.get("eps", 1e-8)
        self.momentum = group.get("momentum", 0.0)
        device = next(iter(params.values())).device
        self.weight_decay = torch.tensor(
            [o.param_groups[0]["weight_decay"] for o in optimizers], dtype=torch.float32, device=device
        )
        self.device = device
        self.steps: dict[str, int] = {}  # per parameter, as torch.optim counts them (unused: none)
        self.m: dict[str, torch.Tensor] = {}  # Adam's first moment, or SGD's momentum buffer
        self.v: dict[str, torch.Tensor] = {}
        # Every model at one learning rate and weight decay (a knob's seeds, squeeze's members):
        # torch's own optimizer, of the models' class and settings, on the stacked parameters,
        # with its fused kernel where the models' have it (BENCHMARKS.md: 2-3x a foreach Adam).
        self.same: torch.optim.Optimizer | None = None
        lrs = {o.param_groups[0]["lr"] for o in optimizers}
        if len(lrs) == 1 and len({float(w) for w in self.weight_decay.tolist()}) == 1:
            settings = {k: v for k, v in group.items() if k not in ("params", "initial_lr")}
            self.same = type(optimizers[0])(list(params.values()), **settings)
            self.names = {id(t): k for k, t in params.items()}

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

    @staticmethod
    def _per_model(values: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
        return [values.reshape((-1,) + (1,) * (t.dim() - 1)) for t in like]

    @torch.no_grad()
    def update(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], lrs: Sequence[float]) -> None:
        """One step of every model, in place, for the parameters that got a gradient."""
        if self.same is not None:
            if len(set(lrs)) > 1:  # equal learning rates and equal schedules cannot part
                raise RuntimeError(f"the models' schedules parted: learning rates {sorted(set(lrs))}")
            for k, t in params.items():
                grad = grads.get(k)
                # laid out as the parameter: vmap's backward gives some gradients transposed, and
                # torch 2.14's fused CPU Adam reads a gradient's memory as if laid out like its
                # parameter (measured: a transposed gradient updates the wrong elements)
                t.grad = None if grad is None else grad.contiguous()
            self.same.param_groups[0]["lr"] = lrs[0]
            self.same.step()
            for t in params.values():
                t.grad = None
            return
        names = list(grads)
        p, g = [params[k] for k in names], [grads[k] for k in names]
        lr = self._per_model(torch.tensor(list(lrs), dtype=torch.float32, device=self.device), p)
        wd = self._per_model(self.weight_decay, p)
        decay = bool((self.weight_decay != 0).any())
        for k in names:
            self.steps[k] = self.steps.get(k, 0) + 1
        if self.kind == "sgd":
            self._sgd(names, p, g, lr, wd, decay)
            return
        if decay and self.decoupled:  # AdamW: the weights shrink first
            torch._foreach_mul_(p, [1 - a * w for a, w in zip(lr, wd)])
        elif decay:
            g = list(torch._foreach_add(g, torch._foreach_mul(p, wd)))
        for k, t in zip(names, p):
            if k not in self.m:
                self.m[k], self.v[k] = torch.zeros_like(t), torch.zeros_like(t)
        m, v = [self.m[k] for k in names], [self.v[k] for k in names]
        b1, b2 = self.betas
        torch._foreach_lerp_(m, g, 1 - b1)  # m = b1 m + (1 - b1) g
        torch._foreach_mul_(v, b2)
        torch._foreach_addcmul_(v, g, g, value=1 - b2)
        denom = torch._foreach_sqrt(v)
        steps = [self.steps[k] for k in names]
        torch._foreach_div_(denom, [(1 - b2**s) ** 0.5 for s in steps])
        torch._foreach_add_(denom, self.eps)
        step = torch._foreach_div(m, denom)
        torch._foreach_mul_(step, lr)
        torch._foreach_mul_(step, [1 / (1 - b1**s) for s in steps])
        torch._foreach_sub_(p, step)

    def _sgd(self, names, p, g, lr, wd, decay: bool) -> None:
        if decay:
            g = torch._foreach_add(g, torch._foreach_mul(p, wd))
        if self.momentum:
            for k, t in zip(names, g):
                if k in self.m:
                    self.m[k].mul_(self.momentum).add_(t)
                else:
                    self.m[k] = t.clone()
            g = [self.m[k] for k in names]
        torch._foreach_sub_(p, torch._foreach_mul(g, lr))

    def export(self, i: int, optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
        """Model i's state into `optimizer` (built on model's parameters, in their order)."""
        if self.same is not None:
            mine = dict(model.named_parameters())
            for t, state in self.same.state.items():
                one = {k: v.clone() if k == "step" else v[i].clone() for k, v in state.items()}
                optimizer.state[mine[self.names[id(t)]]] = one
            return
        for name, param in model.named_parameters():
            if name not in self.steps:
                continue
            if self.kind == "sgd":
                if name in self.m:
                    optimizer.state[param] = {"momentum_buffer": self.m[name][i].clone()}
                continue
            optimizer.state[param] = {
                "step": torch.tensor(float(self.steps[name])),
                "exp_avg": self.m[name][i].clone(),
                "exp_avg_sq": self.v[name][i].clone(),
            }


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
