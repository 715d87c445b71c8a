"""Optimizers and learning-rate schedules from `optim` in the spec.

Schedules are stepped once per optimizer step (never per epoch): `total_steps` is in
optimizer steps, which is what makes a per-epoch default such as StepLR(30) visible.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from nnrecipe.errors import PluginError
from nnrecipe.plugins import call_factory, load_factory, user_code


def make_optimizer(optim_spec, params) -> torch.optim.Optimizer:
    o = optim_spec
    params = list(params)
    speed = _fastest(params)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay, **speed)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay, **speed)
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, **speed)


def _fastest(params: list) -> dict:
    """torch.optim's fused kernels (one call updates every parameter) where they run: floating
    parameters on a CPU or a CUDA device; else foreach (one multi-tensor kernel per operation).
    Measured on the cpu-box for the digits MLP: an Adam step 70-100 us fused, 200-250 us foreach,
    185 us with a Python loop; the numbers agree to 1e-7 (BENCHMARKS.md)."""
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return {"fused": True} if fused else {"foreach": True}


class UserSchedule:
    """A schedule from the user's factory, each step under the guard (a LambdaLR's lambda is
    user code that runs at every step); its state is the scheduler's own."""

    def __init__(self, scheduler: LRScheduler, ref: str):
        self.scheduler, self.ref = scheduler, ref

    def step(self) -> None:
        with user_code("optim.schedule.factory", self.ref):
            self.scheduler.step()

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)


def make_scheduler(optimizer: torch.optim.Optimizer, schedule_spec, *, total_steps: int, base: Path):
    s = schedule_spec
    if s.factory is not None:
        fn = load_factory(s.factory, base=base, field="optim.schedule.factory")
        sched = call_factory(fn, optimizer, total_steps, field="optim.schedule.factory", ref=s.factory, **s.args)
        if not isinstance(sched, LRScheduler):
            raise PluginError(
                f"optim.schedule.factory: {s.factory} returned {type(sched).__name__}; expected an LRScheduler"
            )
        return UserSchedule(sched, s.factory)
    if s.name == "constant":
        return None  # the recipe's default: a constant LR until the end
    if s.name == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=s.step_size or max(1, total_steps // 3), gamma=s.gamma
        )
    if s.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    warmup = s.warmup_steps

    def warmup_cosine(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return LambdaLR(optimizer, warmup_cosine)
