"""Experiments on a model that measure; the rules in checks/ judge their results.

Each probe returns plain numbers and arrays (no verdicts), so rules are unit-tested on
synthetic measurements and probes are tested on tiny models.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from nnrecipe import inputs
from nnrecipe.models.init import final_linear
from nnrecipe.probes.diagnosis import Collapse
from nnrecipe.tasks import Task
from nnrecipe.tasks.base import LossFloor

# ----------------------------------------------------------------------------- at initialisation


@dataclasses.dataclass
class InitMeasure:
    task: Task
    loss_name: str  # cross_entropy | nll | bce | mse | huber | custom
    val_losses: Optional[np.ndarray]  # per val example; None for a custom loss
    n_val: int
    num_outputs: int
    builtin_bias_init: bool  # nnrecipe set the final bias (built-in model, spec switch on)
    # Task.init_statistics: class (or token) outputs measure a distribution; real ones a mean.
    train_priors: Optional[np.ndarray] = None  # class shares of train
    val_priors: Optional[np.ndarray] = None
    mean_predicted: Optional[np.ndarray] = None  # mean predicted distribution on val
    target_mean: Optional[np.ndarray] = None  # real targets (train)
    target_std: Optional[np.ndarray] = None
    mean_output: Optional[np.ndarray] = None  # real targets: mean prediction on val
    # The loss that constant outputs would give on val: "uniform" (zero logits, or uniform
    # log-probabilities for nll; zero output for regression) and "prior" (the ideal bias:
    # log-priors, or the train target mean). These are the values the loss implies at init.
    reference: dict[str, float] = dataclasses.field(default_factory=dict)
    final_bias: Optional[np.ndarray] = None  # the final linear layer's bias, when one is found
    # output form, over the val outputs
    in_unit_interval: bool = False  # every output in [0, 1]
    rows_sum_to_one: bool = False  # ... and every row sums to 1 (probabilities)
    rows_logsumexp_zero: bool = False  # every row's logsumexp is 0 (log-probabilities)


def measure_init(model: nn.Module, data, *, loss_name: str, builtin_bias_init: bool, predict: Callable) -> InitMeasure:
    out = predict(model, data.val)  # (N, C) float32 on the host, eval mode; (N, L, V) for a language model
    y = data.targets("val")
    task = data.task
    losses = task.example_loss(loss_name, out, y).double().numpy() if loss_name != "custom" else None
    rows = task.output_rows(out)  # one prediction per row (a language model: every position's)
    layer = final_linear(model, data.num_outputs)
    m = InitMeasure(
        task=task,
        loss_name=loss_name,
        val_losses=losses,
        n_val=len(out),
        num_outputs=data.num_outputs,
        builtin_bias_init=builtin_bias_init,
        final_bias=layer.bias.detach().double().cpu().numpy() if layer is not None and layer.bias is not None else None,
        in_unit_interval=bool(((rows >= 0) & (rows <= 1)).all()),
        rows_sum_to_one=bool(((rows.sum(dim=1) - 1).abs() < 1e-3).all()),
        rows_logsumexp_zero=bool((torch.logsumexp(rows, dim=1).abs() < 1e-3).all()),
        **task.init_statistics(data, rows, out, loss_name),
    )
    if loss_name != "custom":
        bias = task.ideal_bias(loss_name, priors=m.train_priors, target_mean=m.target_mean)
        uniform = torch.full_like(out, -float(np.log(out.shape[1]))) if loss_name == "nll" else torch.zeros_like(out)
        m.reference["uniform"] = float(task.example_loss(loss_name, uniform, y).double().mean())
        if bias is not None:
            prior = task.constant_output(np.asarray(bias, dtype=np.float32), out)
            m.reference["prior"] = float(task.example_loss(loss_name, prior, y).double().mean())
    return m


# ----------------------------------------------------------------------------- one batch


def batch_dependency(model: nn.Module, x: torch.Tensor, rows: list[int]) -> Optional[np.ndarray]:
    """|d sum(out[i]) / d x[j]| maximised over x[j]'s elements: a (len(rows), N) matrix.

    In eval mode (BatchNorm then uses running statistics, so it cannot mix examples).
    None when the inputs are not floating point (nothing to differentiate).
    """
    if inputs.structured(x):
        return batch_dependency_structured(model, x, rows)
    if not x.is_floating_point():
        return None
    was_training = model.training
    model.eval()
    try:
        x = x.detach().clone().requires_grad_(True)
        out = model(x)
        dep = np.zeros((len(rows), len(x)))
        for k, i in enumerate(rows):
            (g,) = torch.autograd.grad(out[i].float().sum(), x, retain_graph=True, allow_unused=True)
            if g is not None:
                dep[k] = g.detach().abs().reshape(len(x), -1).amax(dim=1).double().cpu().numpy()
    finally:
        model.train(was_training)
    return dep


def batch_dependency_structured(model: nn.Module, x, rows: list[int]) -> Optional[np.ndarray]:
    """batch_dependency of structured inputs: float leaves differentiated directly, integer
    leaves (ids) at the outputs of the nn.Embedding calls that read them. None when there is
    nothing to differentiate (no float leaf, no embedding reading an id leaf)."""
    from nnrecipe.probes.sequence_probes import embedding_tap

    floats = {name for name, t in inputs.float_leaves(x)}
    x = inputs.map_named(lambda n, t: t.detach().clone().requires_grad_(True) if n in floats else t, x)
    n = inputs.batch_len(x)
    was_training = model.training
    model.eval()
    try:
        with embedding_tap(model, x) as tap:
            out = model(x)
        sources = [t for name, t in inputs.leaves(x) if name in floats] + tap
        if not sources:
            return None
        dep = np.zeros((len(rows), n))
        for k, i in enumerate(rows):
            grads = torch.autograd.grad(out[i].float().sum(), sources, retain_graph=True, allow_unused=True)
            per = [g.detach().abs().reshape(n, -1).amax(dim=1) for g in grads if g is not None]
            if per:
                dep[k] = torch.stack(per).amax(dim=0).double().cpu().numpy()
    finally:
        model.train(was_training)
    return dep


@torch.no_grad()
def eval_twice(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """Largest absolute difference between two eval-mode passes over the same batch, and the
    mean absolute output (the scale a tolerance is relative to)."""
    was_training = model.training
    model.eval()
    a, b = model(x).float(), model(x).float()
    model.train(was_training)
    if not a.numel():
        return 0.0, 1.0
    return float((a - b).abs().max()), float(a.abs().mean())


@dataclasses.dataclass
class GradStep:
    names: list[str]
    numel: list[int]
    grad_norm: list[Optional[float]]  # None: the parameter got no gradient at all
    grad_finite: list[bool]
    changed: list[bool]  # the optimizer step moved it
    total_norm: float
    dead: dict[str, float]  # ReLU module (and call) -> fraction of units never positive on a val batch
    weight_rms: dict[str, float]  # RMS gradient of each >=2-D weight, in forward order
    # No gradient at the first step, one at the second: gated by a weight that starts at zero (the
    # last BatchNorm of a zero-init residual block, ReZero, LayerScale 0), deliberate by design
    late: list[bool] = dataclasses.field(default_factory=list)
    zero_init: list[str] = dataclasses.field(default_factory=list)  # weights (not biases) that start all zero


def gradient_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable, optimizer) -> GradStep:
    """Forward, backward and one optimizer step on one batch, in train mode."""
    model.train()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    before = [p.detach().clone() for _, p in params]
    optimizer.zero_grad(set_to_none=True)
    loss_fn(model(x), y).backward()
    norms: list[Optional[float]] = []  # None: no gradient
    finite: list[bool] = []
    for _, p in params:
        if p.grad is None:
            norms.append(None)
            finite.append(True)
        else:
            g = p.grad.detach().float()
            finite.append(bool(torch.isfinite(g).all()))
            norms.append(float(g.norm()))
    total = float(np.sqrt(sum(n**2 for n in norms if n is not None and np.isfinite(n))))
    rms = {
        n: float(p.grad.detach().float().pow(2).mean().sqrt()) for n, p in params if p.grad is not None and p.ndim >= 2
    }
    optimizer.step()
    changed = [not torch.equal(b, p.detach()) for b, (_, p) in zip(before, params)]
    late = _gradient_after_the_step(model, x, y, loss_fn, optimizer, params, norms)
    zero_init = [n for (n, _), b in zip(params, before) if not n.endswith("bias") and not bool(b.any())]
    return GradStep(
        names=[n for n, _ in params],
        numel=[p.numel() for _, p in params],
        grad_norm=norms,
        grad_finite=finite,
        changed=changed,
        total_norm=total,
        dead={},
        weight_rms=rms,
        late=late,
        zero_init=zero_init,
    )


def _gradient_after_the_step(model, x, y, loss_fn, optimizer, params, norms) -> list[bool]:
    """For each parameter without a gradient at the first step, whether it gets one at the
    second (one more backward on the same batch, no second step)."""
    if all(v for v in norms):
        return [False] * len(params)
    optimizer.zero_grad(set_to_none=True)
    loss_fn(model(x), y).backward()
    late = [not v and p.grad is not None and bool(p.grad.detach().abs().sum() > 0) for v, (_, p) in zip(norms, params)]
    optimizer.zero_grad(set_to_none=True)
    return late


@torch.no_grad()
def dead_units(model: nn.Module, x: torch.Tensor, *, after: Optional[nn.Module] = None) -> dict[str, float]:
    """Fraction of units of each ReLU module that are never positive over the batch; with
    `after` (the same model trained), of the units that are so in both: a unit dead at init
    whose input later moves (a squeeze-excitation bottleneck over globally pooled, nearly equal
    features) is not dead, one that stays so is.

    A unit is a feature of a (N, D) output or a channel of a (N, C, ...) output. Modules used
    several times (torchvision's shared `relu`) are reported per call.
    """
    dead = _dead_masks(model, x)
    if after is not None:
        later = _dead_masks(after, x)
        dead = {k: v & later[k] if k in later and later[k].shape == v.shape else v for k, v in dead.items()}
    return {k: float(v.float().mean()) for k, v in dead.items()}


def _dead_masks(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per ReLU module (and call): a bool per unit, never positive over the batch."""
    results: dict[str, torch.Tensor] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.ReLU, nn.ReLU6)):
            calls = {"n": 0}

            def hook(mod, inputs, output, name=name, calls=calls):
                calls["n"] += 1
                o = output.detach()
                alive = (
                    (o > 0).reshape(o.shape[0], o.shape[1], -1).any(dim=2).any(dim=0)
                    if o.ndim > 1
                    else (o > 0).any().reshape(1)
                )
                key = name if calls["n"] == 1 else f"{name}#{calls['n']}"
                results[key] = ~alive.cpu()

            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return results


# ----------------------------------------------------------------------------- overfit one batch


@dataclasses.dataclass
class OverfitResult:
    losses: list[tuple[int, float]]  # (step, eval-mode loss on the batch)
    final_loss: float
    steps_run: int
    outputs: torch.Tensor  # final eval-mode outputs on the batch
    target_loss: float
    floor: Optional[LossFloor] = (
        None  # the batch's irreducible loss (Task.loss_floor): the target is this plus the margin
    )
    train_curve: list[tuple[int, float]] = dataclasses.field(default_factory=list)  # (step, train-mode loss) every step
    collapse: Optional[Collapse] = None  # every example got the same output (probes.diagnosis)


def overfit_batch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable,
    *,
    steps: int,
    lr: float,
    target: float,
    check_every: int = 25,
) -> OverfitResult:
    """Adam on one fixed batch until the eval-mode loss reaches `target` (checked every few steps)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses: list[tuple[int, float]] = []
    trained: list[torch.Tensor] = []  # train-mode losses, read once at the end (no sync per step)
    step = 0
    final = float("inf")
    for step in range(1, steps + 1):
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        trained.append(loss.detach())
        if step % check_every == 0 or step == steps:
            with torch.no_grad():
                model.eval()
                final = float(loss_fn(model(x), y))
            losses.append((step, final))
            if final <= target or not np.isfinite(final):
                break
    with torch.no_grad():
        model.eval()
        outputs = model(x).float().cpu()
    model.train()
    curve = [(i + 1, float(v)) for i, v in enumerate(torch.stack(trained).float().cpu())] if trained else []
    return OverfitResult(
        losses=losses, final_loss=final, steps_run=step, outputs=outputs, target_loss=target, train_curve=curve
    )


# ----------------------------------------------------------------------------- what enters the model


class InputCapture:
    """Records the first batch that enters model(x) (a forward pre-hook) and its targets
    (through the loss), exactly as the training loop produced them."""

    def __init__(self, model: nn.Module, loss_fn: Callable, keep: int = 64):
        self.x: Optional[torch.Tensor] = None
        self.y: Optional[torch.Tensor] = None
        self.keep = keep
        self._loss_fn = loss_fn
        self._hook = model.register_forward_pre_hook(self._pre)

    def _pre(self, module, args):
        # Training forwards only: the prediction dynamics call the model in eval mode on val
        # examples before the first step (they were captured, with the first step's labels).
        if self.x is None and module.training and args and not inputs.problem(args[0]):
            x = inputs.index(args[0], slice(0, self.keep))
            self.x = x.detach().float().cpu() if isinstance(x, torch.Tensor) else inputs.cpu(x)
        return None

    def loss_fn(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.y is None:
            self.y = y.detach()[: self.keep].cpu()
        return self._loss_fn(out, y)

    def remove(self) -> None:
        self._hook.remove()


def first_examples(split, n: int, *, device=None) -> tuple[inputs.Inputs, torch.Tensor]:
    """The first n examples of a split (a fixed batch), on `device` (default: the split's)."""
    xs, ys, got = [], [], 0
    for x, y in split.iterate(min(n, 512)):
        xs.append(x)
        ys.append(y)
        got += len(y)
        if got >= n:
            break
    x, y = inputs.index(inputs.cat(xs), slice(0, n)), torch.cat(ys)[:n]
    return (x, y) if device is None else (inputs.to(x, device), y.to(device))


class ZeroInput(nn.Module):
    """The same model fed zeros: what it can learn without looking at the data (the priors)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: inputs.Inputs) -> torch.Tensor:
        # every leaf: a float leaf to zeros, an integer leaf (ids, a mask) to id 0 (the usual padding)
        return self.model(inputs.map_leaves(torch.zeros_like, x))


# ----------------------------------------------------------------------------- the loss on the data's own shapes


@dataclasses.dataclass
class LossShapes:
    ours: float  # the loss on the targets as nnrecipe gives them
    theirs: Optional[float]  # on the targets exactly as the data holds them (None: the loss refused them)
    our_shape: tuple[int, ...]  # the batch's target shape, both ways
    their_shape: tuple[int, ...]
    outputs_shape: tuple[int, ...]
    refused: str = ""  # what the loss raised on the data's own shape


@torch.no_grad()
def loss_on_raw_targets(loss_fn: Callable, out: torch.Tensor, y: torch.Tensor, raw: tuple[int, ...]) -> LossShapes:
    """The user's loss called twice on one batch: with the targets nnrecipe reshaped for it
    (regression: (N, 1)) and with the data's own shape (e.g. (N,)), as a training script that
    feeds the data straight in would. A loss that broadcasts gives another value."""
    import warnings

    from nnrecipe.errors import PluginError

    theirs_y = y.reshape(len(y), *raw)
    ours = float(loss_fn(out, y))
    theirs, refused = None, ""
    with warnings.catch_warnings():  # this call is nnrecipe's probe: its warning is the finding, not the user's
        warnings.simplefilter("ignore")
        try:
            theirs = float(loss_fn(out, theirs_y))
        except PluginError as exc:
            refused = str(exc)
    return LossShapes(
        ours=ours,
        theirs=theirs,
        our_shape=tuple(y.shape),
        their_shape=tuple(theirs_y.shape),
        outputs_shape=tuple(out.shape),
        refused=refused,
    )
