"""K experiments of one architecture trained as one (issue 24): the engine's loop for a group.

A stage's independent experiments often share an architecture and differ only in their seed,
their training rows (data-scaling subsets, label-error folds), their learning rate or weight
decay: squeeze's members, a knob's seeds. Small models are dispatch-bound, so one forward and
backward for all K pays the per-operator overhead once: written out for a plain stack of
layers (nnrecipe/stacked.py: one baddbmm per Linear, one grouped convolution per Conv), else
vmap over functional_call.

Everything else stays each experiment's own, exactly as `Engine.train` does it for one: its
batch stream (its seed, its rows), its augmentation drawn from its own RNG stream, its
schedule (its own LRScheduler, stepped each step), gradient clipping by its own norm, its
loss curve, TensorBoard tags, evaluations, best and last checkpoints (the same files, which an
unbatched run can resume), early stopping and divergence (a model that stops is copied out and
leaves the stack). Written out on a CPU, dropout draws each model's masks from that model's own
stream, as alone; through vmap or on a GPU it draws them from one stream for the group, so a
model with dropout gets other masks than trained alone. Everything else gives the same numbers
to float tolerance (tests/test_together.py).

`why_apart` says why a group cannot be trained so; the caller then trains one at a time.
"""

from __future__ import annotations

import copy
from typing import Any, Optional

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.utils import _pytree as pytree

from nnrecipe import distributed, inputs
from nnrecipe.batched import StackedOptimizer, batchable
from nnrecipe.data.bundle import TensorSplit
from nnrecipe.experiments import rng_state, set_rng_state
from nnrecipe.loop import BatchStream, History, RunState, StepLog
from nnrecipe.losses import stacked_loss
from nnrecipe.stacked import StackedForward

# The smallest group worth batching, per device type. On one CPU thread, shipped digits
# experiments trained as one ran 1.16x the speed of one by one at K = 2, 1.72x at K = 4 and
# 1.88x at K = 5 with the written-out forward (stacked.py), but through vmap 0.76x at K = 2,
# 1.12x at K = 4 (bench/together.py, BENCHMARKS.md). Each at its own learning rate (tune's
# trials, regularize's weight-decay knob beside its reference), 1.13x at K = 2 and 1.37x at
# K = 3 (`--own-lr`). Below SMALL_MIN_CPU models on a CPU, only written-out models train as
# one. On a GPU such models are launch-bound and two already share the launches.
MIN_GROUP = {"cpu": 2, "cuda": 2}
SMALL_MIN_CPU = 4
MAX_GROUP = 16  # memory: a group holds K models' weights, gradients and optimizer state at once


class Apart(Exception):
    """The group's first step failed (vmap cannot take the model or its loss, or memory is
    short): nothing was trained or written; the caller trains them one at a time."""


def why_apart(prepared: list) -> str:
    """Why these prepared experiments (experiments.Prepared) cannot train as one ("" if they can)."""
    first = prepared[0]
    if distributed.current() is not None:
        return "torchrun trains one experiment on many processes"
    why = batchable(first.plan.model)
    if why:
        return why
    optimizers = [p.plan.optimizer for p in prepared]
    small = first.engine.device.type == "cpu" and len(prepared) < SMALL_MIN_CPU
    if small and StackedForward.of(first.plan.model) is None:
        return f"through vmap, fewer than {SMALL_MIN_CPU} models on a CPU train faster one at a time"
    if any(p.engine.compile or p.engine.channels_last for p in prepared):
        return "train.compile and train.channels_last train one model at a time"
    if any(not isinstance(p.plan.train, TensorSplit) for p in prepared):
        return "the training data is read by a DataLoader, batch by batch"
    if len({min(len(p.plan.train), p.plan.batch_size) for p in prepared}) > 1:
        return "their batches differ in size (a training subset smaller than one batch)"
    shape = [(k, v.shape, v.dtype) for k, v in first.plan.model.state_dict().items()]
    text, classes = repr(first.plan.model), _classes(first.plan.model)
    for p in prepared[1:]:
        if _classes(p.plan.model) != classes:
            return "their models are of different classes"
        if repr(p.plan.model) != text or [(k, v.shape, v.dtype) for k, v in p.plan.model.state_dict().items()] != shape:
            return "their models differ in structure"
    return StackedOptimizer.why_not(optimizers)


def _classes(model: nn.Module) -> list[str]:
    """Each module's class by its qualified name: a user's model file is imported afresh for each
    model built (plugins.load_factory), so equal code gives classes equal by name only."""
    return [f"{type(m).__module__}.{type(m).__qualname__}" for m in model.modules()]


class Group:
    """The prepared experiments' models stacked, their optimizer, and one training step."""

    def __init__(self, prepared: list):
        self.prepared = prepared
        self.plans = [p.plan for p in prepared]
        self.engine = prepared[0].engine
        models = [p.model for p in self.plans]
        self.template = copy.deepcopy(models[0]).to("meta").train()  # as Engine.train sets it
        # torch.func.stack_module_state, less its check that every model is of one class object
        self.params = {
            k: torch.stack([m.get_parameter(k).detach() for m in models]).requires_grad_(True)
            for k, _ in models[0].named_parameters()
        }
        self.buffers = {k: torch.stack([m.get_buffer(k) for m in models]) for k, _ in models[0].named_buffers()}
        self.opt = StackedOptimizer([p.optimizer for p in self.plans], self.params)
        self.clip = self.plans[0].grad_clip
        first = self.plans[0].train
        self.one_split = isinstance(first, TensorSplit) and all(
            p.train is first and p.augment is None for p in self.plans
        )
        self.rngs = [p.rng for p in prepared]  # each model's augmentation stream
        self.shared = prepared[0].rng  # the stacked forward's (dropout) stream
        # A plain stack of layers runs written out (stacked.py), else through vmap; the built-in
        # losses as the mean of each model's per-example losses, else through vmap. The first
        # batch checks both against vmap's (`_written_out_agrees`).
        self.written = StackedForward.of(self.template)  # None: vmap
        self.written_loss = stacked_loss(self.plans[0].loss_fn)
        self.slots = list(range(len(prepared)))  # the experiments in the stack, row by row (`keep`)

    @torch.no_grad()
    def keep(self, alive: list[int]) -> None:
        """Only the experiments `alive` (indices into `prepared`) go on in the stack: the others
        stopped (early stopping, a pruned trial, a diverged loss) and were copied out, and a
        smaller stack steps faster than one that carries idle models."""
        rows = [self.slots.index(i) for i in alive]
        index = torch.tensor(rows, device=self.engine.device)
        self.params = {k: v.index_select(0, index).requires_grad_(True) for k, v in self.params.items()}
        self.buffers = {k: v.index_select(0, index) for k, v in self.buffers.items()}
        self.opt.keep(rows, self.params)
        self.slots = list(alive)

    def batch(self, streams: list[BatchStream]) -> tuple[Any, torch.Tensor]:
        """Each model's next batch (of those in the stack; `streams`: every experiment's),
        augmented from its own RNG stream, stacked: (K, B, ...)."""
        split = self.plans[0].train
        if self.one_split:  # K streams on one in-memory split (seeds, members): one gather
            idx = torch.cat([_index(streams[i].next_rows(), split.device) for i in self.slots])
            x, y = self.engine._to_device(split.take(idx))
            k = len(self.slots)
            return inputs.map_leaves(lambda t: t.reshape(k, -1, *t.shape[1:]), x), y.reshape(k, -1, *y.shape[1:])
        xs, ys = [], []
        device = self.engine.device
        for i in self.slots:
            plan = self.plans[i]
            x, y = self.engine._to_device(next(streams[i]))
            if plan.augment is not None:
                set_rng_state(self.rngs[i], device)
                with torch.no_grad():
                    x, y = plan.augment(x, y)
                self.rngs[i] = rng_state(device)
            xs.append(x)
            ys.append(y)
        return pytree.tree_map(lambda *t: torch.stack(t), *xs), torch.stack(ys)

    def step(self, x: Any, y: torch.Tensor, *, first: bool = False) -> tuple[torch.Tensor, list[float]]:
        """One optimizer step of every model in the stack on its own batch: (each one's loss (K,),
        the LRs applied). On the `first`, an error of the vmapped forward and backward (vmap cannot take
        the model or its loss; memory) is raised as Apart, before anything changed."""
        try:
            if first and (self.written is not None or self.written_loss is not None):
                if not self._written_out_agrees(x, y):
                    self.written = self.written_loss = None
            losses, grads = self._backward(x, y)
        except Exception as exc:
            if not first:
                raise
            line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise Apart(f"vmap could not train them as one ({type(exc).__name__}: {line[:160]})") from exc
        if self.clip is not None:
            _clip_per_model(list(grads.values()), self.clip)
        plans = [self.plans[i] for i in self.slots]
        lrs = [p.optimizer.param_groups[0]["lr"] for p in plans]
        self.opt.update(self.params, grads, lrs)
        for p in plans:
            if p.scheduler is not None:
                p.optimizer._opt_called = True  # type: ignore[attr-defined]  # its step, taken here
                p.scheduler.step()
        return losses.detach(), lrs

    def _forward(self, x: Any, *, written: bool, draws: Optional[list[torch.Generator]] = None) -> torch.Tensor:
        """The K models' outputs (K, B, ...) on their batches x (K, B, ...); `draws`: each
        model's generator for the written-out dropout (None: the global stream)."""
        k = len(self.slots)
        with self.engine._autocast():
            if written and self.written is not None and isinstance(x, torch.Tensor):
                out = self.written(self.params, x.flatten(0, 1), k, draws)
                return out.reshape(k, -1, *out.shape[1:])

            def one(params, buffers, xb):
                return functional_call(self.template, (params, buffers), (xb,))

            return vmap(one, randomness="different")(self.params, self.buffers, x)

    def _losses(self, out: torch.Tensor, y: torch.Tensor, *, written: bool) -> torch.Tensor:
        """Each model's loss (K,) of its outputs (K, B, ...) and targets (K, B, ...)."""
        if written and self.written_loss is not None:
            return self.written_loss(out.flatten(0, 1), y.flatten(0, 1), len(self.slots))
        return vmap(self.plans[0].loss_fn)(out, y)

    @torch.no_grad()
    def _written_out_agrees(self, x: Any, y: torch.Tensor) -> bool:
        """Whether the written-out forward and loss give vmap's outputs and losses on the first
        batch, to float rounding (dropout off: the two draw their masks differently)."""
        self.template.eval()
        try:
            want = self._forward(x, written=False)
            got = self._forward(x, written=True) if self.written is not None else want
            want_loss, got_loss = self._losses(want, y, written=False), self._losses(want, y, written=True)
        finally:
            self.template.train()
        return _close(got, want) and _close(got_loss, want_loss)

    def _backward(self, x: Any, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The K losses (K,) and each parameter's gradient (K, ...), of those that got one."""
        device = self.engine.device
        if self._own_draws(x):  # each model's dropout from its own stream, where it is after its augmentation
            draws = [torch.Generator().set_state(self.rngs[i]["cpu"]) for i in self.slots]
            out = self._forward(x, written=True, draws=draws)
            for i, g in zip(self.slots, draws):
                self.rngs[i] = {"cpu": g.get_state(), "cuda": None}
        else:
            set_rng_state(self.shared, device)
            out = self._forward(x, written=True)
            self.shared = rng_state(device)
        losses = self._losses(out, y, written=True)
        if not losses.requires_grad:
            raise RuntimeError("the loss does not depend on the parameters")  # alone, the engine says whose
        names = list(self.params)
        grads = torch.autograd.grad(losses.sum(), [self.params[k] for k in names], allow_unused=True)
        return losses, {k: g for k, g in zip(names, grads) if g is not None}  # unused: no update, as torch.optim

    def _own_draws(self, x: Any) -> bool:
        """Whether the forward draws each model's dropout masks from its own generator: written
        out, on a CPU (where F.dropout's masks are bernoulli_ draws a generator can repeat)."""
        cpu = self.engine.device.type == "cpu"
        return cpu and self.written is not None and self.written.draws and isinstance(x, torch.Tensor)

    @torch.no_grad()
    def copy_out(self, i: int) -> nn.Module:
        """Model i's module with its current weights (and, for its last checkpoint, its
        optimizer's state in torch.optim's format)."""
        model, row = self.plans[i].model, self.slots.index(i)
        for name, p in model.named_parameters():
            p.copy_(self.params[name][row])
        for name, b in model.named_buffers():
            if name in self.buffers:
                b.copy_(self.buffers[name][row])
        if self.plans[i].checkpoints.last is not None:
            self.opt.export(row, self.plans[i].optimizer, model)
        return model


def _index(rows: torch.Tensor | slice, device: torch.device) -> torch.Tensor:
    return torch.arange(rows.start, rows.stop, device=device) if isinstance(rows, slice) else rows


def _close(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Equal to the rounding of the outputs' dtype, relative to their largest magnitude: the
    two ways sum in other orders (float32: ~1e-6 relative; half precision under autocast ~1e-3)."""
    if got.shape != want.shape or got.dtype != want.dtype:
        return False
    tol = 1e-4 if want.dtype in (torch.float32, torch.float64) else 3e-2
    if not want.numel():
        return True
    scale = max(float(want.abs().max()), 1e-3)
    return bool(torch.isfinite(got).all()) and float((got - want).abs().max()) <= tol * scale


def _clip_per_model(grads: list[torch.Tensor], max_norm: float) -> None:
    """nn.utils.clip_grad_norm_ for each model of the stack: its gradients scaled by
    max_norm / (its total norm + 1e-6), at most 1."""
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads])  # (P, K)
    total = torch.linalg.vector_norm(norms, dim=0)  # (K,)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.reshape((-1,) + (1,) * (g.dim() - 1)))


def train_together(prepared: list) -> list[History]:
    """Train the prepared experiments as one (why_apart(prepared) == ""): each one's History,
    its model left at the weights it ended with, as Engine.train leaves one."""
    plans = [p.plan for p in prepared]
    streams = [
        BatchStream(p.train, p.batch_size, torch.Generator(device=p.train.device).manual_seed(p.seed)) for p in plans
    ]
    group = Group(prepared)
    group.engine._settle_threads(plans[0])  # the process's torch threads, where not yet chosen
    first = group.step(*group.batch(streams), first=True)  # Apart: vmap cannot take them
    engine, k, steps = group.engine, len(prepared), plans[0].steps
    losses = torch.zeros(steps, k, device=engine.device)
    states = [RunState(steps, engine.device) for _ in plans]
    for i, state in enumerate(states):
        state.losses = losses[:, i]  # a view: each model's curve, read at its log steps
    logs = [StepLog(p.log, steps=steps, start=0) for p in plans]
    every, evals = logs[0].every, plans[0].eval_every if plans[0].val is not None else 0
    ended: list[Optional[int]] = [None] * k  # the step each model stopped at (None: still training)
    in_stack = torch.arange(k, device=engine.device)  # group.slots: whose losses the stack's rows are
    step = 0
    for step in range(1, steps + 1):
        loss, lrs = first if step == 1 else group.step(*group.batch(streams))
        losses[step - 1].index_copy_(0, in_stack, loss)
        for row, i in enumerate(group.slots):
            states[i].lrs.append(lrs[row])
        if step % every == 0 or step == steps:
            for i in _training(ended):
                logs[i].losses(states[i], step)
                if states[i].nonfinite_step is not None:
                    group.copy_out(i)
                    ended[i] = step  # its weights are NaN from here on, as alone
        if evals and (step % evals == 0 or step == steps):
            for i in _training(ended):
                if _evaluate(group, i, states[i], logs[i], streams[i], step):
                    ended[i] = step
        alive = _training(ended)
        if not alive:
            break
        if len(alive) < len(group.slots):
            group.keep(alive)
            in_stack = torch.tensor(alive, device=engine.device)
    for i in _training(ended):
        group.copy_out(i)
        ended[i] = step
    for log in logs:
        log.done()
    set_rng_state(group.rngs[-1], engine.device)  # where one at a time leaves it: after the last one's draws
    return [
        s.history(e or step, steps=p.steps, early_stopping=p.early_stopping, stop_early=p.stop_early)
        for p, s, e in zip(plans, states, ended)
    ]


def _training(ended: list[Optional[int]]) -> list[int]:
    return [i for i, e in enumerate(ended) if e is None]


def _evaluate(group: Group, i: int, state: RunState, log: StepLog, stream: BatchStream, step: int) -> bool:
    """Model i's evaluation at `step`, as Engine's (best and last checkpoints, early stopping),
    its RNG stream current for the resume state the last checkpoint keeps."""
    device = group.engine.device
    group.copy_out(i)
    here = rng_state(device)
    set_rng_state(group.rngs[i], device)
    try:
        return group.prepared[i].engine._evaluate_during(group.plans[i], state, log, stream, step)
    finally:
        set_rng_state(here, device)
