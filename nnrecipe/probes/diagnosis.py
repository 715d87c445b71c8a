"""Why a training run failed, where its own measurements can tell (measurements only; the
rules that use them are in checks/).

- **Collapsed outputs**: the trained model gives every example the same output, so its loss
  is that of a constant prediction (ln C at best for balanced classes, Var(y) for regression),
  often after having been lower. The first module, in forward order, whose output is the same
  for every example says where: often a ReLU on the logits that died (torchvision's SqueezeNet).
- **Train/eval mode**: the same trained model on the same training examples, with gradients
  off, in train mode and in eval mode. BatchNorm's running statistics that do not match the
  batch statistics the model learnt with (a low momentum, small batches, 1x1 feature maps)
  make the eval-mode model much worse: the layers whose running statistics are furthest from
  the batch's are named, with their momentum, batch size and spatial size.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from nnrecipe import inputs
from nnrecipe.probes import evaluating

SETTLED_RTOL = 0.01  # within 1% of where the curve ends: the final stretch
LEARNT_BELOW = 0.9  # below 90% of that before: it had learnt something first
SAME_RTOL = 1e-4  # rows equal to this relative tolerance: one output for every example
ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.Hardtanh,
    nn.Hardswish,
    nn.SiLU,
    nn.GELU,
    nn.ELU,
    nn.LeakyReLU,
    nn.Sigmoid,
    nn.Tanh,
)


@dataclasses.dataclass(frozen=True)
class Collapse:
    final_loss: float  # where the curve ends: the loss of the one output every example gets
    constant_loss: float  # the loss of the best constant prediction on these targets (0: unknown)
    settled_at: int  # the first step of the final stretch at that loss
    lowest: Optional[tuple[int, float]] = None  # (step, loss) it had reached before, when well below
    layer: str = ""  # the first module whose output is the same for every example ("" when none is)
    layer_kind: str = ""  # its type, and "every output 0" when it is an activation that died
    alike: tuple[int, int] = (0, 0)  # (examples that get one and the same output, examples looked at)

    @property
    def dead_activation(self) -> bool:
        return "every output 0" in self.layer_kind

    @property
    def partial(self) -> bool:
        return 0 < self.alike[0] < self.alike[1]

    def words(self) -> str:
        before = f" after reaching {self.lowest[1]:.4g} at step {self.lowest[0]}" if self.lowest else ""
        where = f"; they are already alike at {self.layer} ({self.layer_kind})" if self.layer else ""
        if self.partial:
            return (
                f"{self.alike[0]} of {self.alike[1]} examples get one and the same output{where}; the loss stays at "
                f"{self.final_loss:.4g} from step {self.settled_at}{before}"
            )
        best = f" (the best constant prediction: {self.constant_loss:.4g})" if self.constant_loss > 0 else ""
        where = f"; every example is already alike at {self.layer} ({self.layer_kind})" if self.layer else ""
        return (
            f"every example gets the same output: the loss sits at {self.final_loss:.4g}{best} from step "
            f"{self.settled_at}{before}{where}"
        )

    def hint(self) -> str:
        if self.dead_activation:
            whom = "these examples" if self.partial else "every example"
            return (
                f"{self.layer} outputs 0 for {whom} and passes no gradient: an activation on the logits "
                "(logits must be free to go negative) or after a too large step; drop it, or lower the LR "
                "(the LR-range test, nnrecipe overfit --lr-range, shows where training breaks down)"
            )
        if self.lowest:
            return (
                "a too large step threw the model to a constant: lower the LR (the LR-range test, nnrecipe overfit "
                "--lr-range, shows where training breaks down)"
            )
        where = f" from {self.layer} on" if self.layer else ""
        return (
            f"the output does not depend on the input{where}: is x overwritten, detached or multiplied by zero there?"
        )


def same_for_every_row(t, rtol: float = SAME_RTOL) -> bool:
    """Whether every example (row) of a batch output is the same, to a relative tolerance (of
    structured inputs: every leaf's rows)."""
    if inputs.structured(t):
        return all(same_for_every_row(leaf, rtol) for leaf in inputs.tensors(t))
    rows = t.detach().float().reshape(len(t), -1)
    if len(rows) < 2 or rows.numel() == 0:
        return False
    return bool((rows - rows[0]).abs().max() <= rtol * (1.0 + rows.abs().max()))


def final_stretch(curve: list[tuple[int, float]]) -> tuple[int, Optional[tuple[int, float]]]:
    """(first step of the final stretch within 1% of where the curve ends, the lowest point
    before it when it was well below)."""
    end = curve[-1][1]
    near = [abs(v - end) <= SETTLED_RTOL * abs(end) for _, v in curve]
    start = len(near) - 1
    while start > 0 and near[start - 1]:
        start -= 1
    before = [p for p in curve[:start] if np.isfinite(p[1])]
    lowest = min(before, key=lambda p: p[1]) if before else None
    return curve[start][0], (lowest if lowest is not None and lowest[1] < LEARNT_BELOW * end else None)


def first_constant_module(model: nn.Module, x: torch.Tensor) -> tuple[str, str]:
    """(name, kind) of the first leaf module, in forward order, whose output is exactly the same
    for every example of x (eval mode); ("", "") when none is before the output. Exactly: a
    layer whose large outputs differ in their last digits (the logits before a ReLU that kills
    them all) is not where the examples became alike."""
    seen: list[tuple[str, str]] = []  # (name, kind) of each leaf whose output is alike, in call order

    def look(module, inputs, out, name):
        # judged here, at once: a later in-place op (ReLU(inplace=True)) would change `out`
        if not seen and isinstance(out, torch.Tensor) and out.is_floating_point() and same_for_every_row(out, rtol=0.0):
            dead = isinstance(module, ACTIVATIONS) and bool((out == 0).all())
            seen.append((name, type(module).__name__ + (", every output 0" if dead else "")))

    hooks = [
        module.register_forward_hook(lambda mod, inp, out, name=name: look(mod, inp, out, name))
        for name, module in model.named_modules()
        if name and not list(module.children())
    ]
    try:
        with evaluating(model), torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen[0] if seen else ("", "")


def alike_rows(out: torch.Tensor) -> torch.Tensor:
    """Indices of the largest group of examples whose outputs are exactly equal (a dead ReLU on
    the logits gives its victims all-zero rows; a healthy model gives every example its own)."""
    rows = out.detach().float().reshape(len(out), -1)
    _, inverse, counts = torch.unique(rows, dim=0, return_inverse=True, return_counts=True)
    return torch.nonzero(inverse == int(counts.argmax())).flatten()


def collapse(
    curve: list[tuple[int, float]],
    *,
    constant: float,
    model: nn.Module,
    x: torch.Tensor,
    earlier: Optional[list[tuple[int, float]]] = None,
) -> Optional[Collapse]:
    """A Collapse when the trained model gives every example of x (which differ) the same
    output, or a group of two or more (which differ) exactly one output; its loss curve read for
    when. None otherwise. `earlier`: a finer curve (every step's training loss) to find how low
    it had been before."""
    if not curve or not np.isfinite(curve[-1][1]) or same_for_every_row(x):
        return None
    with evaluating(model), torch.no_grad():
        out = model(x)
    n = inputs.batch_len(x)
    group = torch.arange(n) if same_for_every_row(out) else alike_rows(out).cpu()
    if len(group) < 2 or same_for_every_row(inputs.index(x, group.to(inputs.device(x)))):
        return None
    settled, lowest = final_stretch(curve)
    if earlier:
        before = [p for p in earlier if p[0] < settled and np.isfinite(p[1])]
        low = min(before, key=lambda p: p[1]) if before else None
        lowest = low if low is not None and low[1] < LEARNT_BELOW * curve[-1][1] else None
    layer, kind = first_constant_module(model, inputs.index(x, group.to(inputs.device(x))))
    return Collapse(
        final_loss=curve[-1][1],
        constant_loss=constant,
        settled_at=settled,
        lowest=lowest,
        layer=layer,
        layer_kind=kind,
        alike=(len(group), n),
    )


def constant_loss(task, x: torch.Tensor, y: torch.Tensor, loss: str) -> float:
    """The loss of the best prediction that is the same for every example of (x, y): the
    batch's floor as if every input were alike (Task.loss_floor); 0 where the task cannot say."""
    return task.loss_floor(inputs.map_leaves(torch.zeros_like, x), y, loss).value


def trained_collapse(result, *, task, loss: str, x: torch.Tensor, y: torch.Tensor, model=None) -> Optional[Collapse]:
    """collapse() of a trained run (experiments.Result): its val loss at each evaluation
    (Result.evals), its model (or `model`, for a run recorded without it) on (x, y)."""
    curve = [(int(e[0]), float(e[1])) for e in result.evals]
    return collapse(curve, constant=constant_loss(task, x, y, loss), model=model or result.model, x=x)


VAL_EXAMPLES = 64  # val examples a trained run's outputs are compared on (every one alike: collapsed)


def val_collapse(result, *, data, loss: str, device, model=None) -> Optional[Collapse]:
    """trained_collapse on the first val examples; None for a run that diverged or kept no model."""
    from nnrecipe.probes.model_probes import first_examples

    if result.diverged or (model or result.model) is None:
        return None
    x, y = first_examples(data.val, VAL_EXAMPLES, device=device)
    return trained_collapse(result, task=data.task, loss=loss, x=x, y=y, model=model)


# ----------------------------------------------------------------------------- train vs eval mode


@dataclasses.dataclass(frozen=True)
class NormDrift:
    """One normalisation layer: how far its running statistics lie from the batch's."""

    layer: str
    drift: float  # mean over channels of |mean_b - mean_r| / sd_r + |log(var_b / var_r)| / 2
    momentum: Optional[float]
    spatial: int  # positions per channel (H x W, L; 1 for a vector)

    def words(self, batch_size: int) -> str:
        """With the training batch size: the batch statistics were taken over batch x spatial values."""
        mom = "a cumulative average" if self.momentum is None else f"momentum {self.momentum:g}"
        return (
            f"{self.layer} (drift {self.drift:.2g} SD; {mom}, batches of {batch_size} x {self.spatial} "
            f"position(s) per channel)"
        )


@dataclasses.dataclass(frozen=True)
class ModeGap:
    train_mode: np.ndarray  # per-example loss, train mode, no gradient step
    eval_mode: np.ndarray  # the same examples in eval mode
    constant_loss: float  # the best constant prediction's loss on these targets
    norms: list[NormDrift]  # normalisation layers, largest drift first
    dropouts: list[str]  # dropout layers (their train-mode noise makes train mode the worse one)


def mode_gap(model: nn.Module, x: torch.Tensor, y: torch.Tensor, per_example: Callable, *, constant: float) -> ModeGap:
    """The trained model on (x, y) in train mode and in eval mode (on a copy: a train-mode
    forward updates BatchNorm's running statistics)."""
    twin = copy.deepcopy(model)
    drifts: list[NormDrift] = []
    # a pre-hook: the running statistics before this forward moves them toward the batch's
    hooks = [
        m.register_forward_pre_hook(lambda mod, inp, name=name: drifts.append(_drift(name, mod, inp[0])))
        for name, m in twin.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    try:
        twin.train()
        with torch.no_grad():
            train_loss = per_example(twin(x), y)
    finally:
        for h in hooks:
            h.remove()
    with evaluating(model), torch.no_grad():
        eval_loss = per_example(model(x), y)
    dropouts = [name for name, m in model.named_modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]
    return ModeGap(
        train_mode=train_loss.detach().double().cpu().numpy(),
        eval_mode=eval_loss.detach().double().cpu().numpy(),
        constant_loss=constant,
        norms=sorted(drifts, key=lambda d: -d.drift),
        dropouts=dropouts,
    )


def _drift(name: str, bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> NormDrift:
    """The batch statistics BatchNorm is about to normalise with in train mode, against the
    running ones eval mode would use."""
    dims = [0] + list(range(2, x.dim()))
    mean_b, var_b = x.detach().float().mean(dim=dims), x.detach().float().var(dim=dims, unbiased=False)
    spatial = int(np.prod(x.shape[2:])) if x.dim() > 2 else 1
    if bn.running_mean is None or bn.running_var is None:
        return NormDrift(name, 0.0, bn.momentum, spatial)
    mean_r, var_r = bn.running_mean.float(), bn.running_var.float().clamp_min(bn.eps)
    drift = ((mean_b - mean_r).abs() / var_r.sqrt() + 0.5 * (var_b.clamp_min(bn.eps) / var_r).log().abs()).mean()
    return NormDrift(name, float(drift), bn.momentum, spatial)
