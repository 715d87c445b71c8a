"""Loss functions by name (`loss: auto | cross_entropy | nll | bce | mse | huber`) or the user's factory."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from nnrecipe.errors import PluginError
from nnrecipe.outputs import whole
from nnrecipe.plugins import call_factory, load_factory, user_code

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
IGNORE_INDEX = -100  # a target no loss reads: padding, a mask's void (PyTorch's cross_entropy default)


def _cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # (N, C) logits; the dense tasks (language models, segmentation) have their own (Task.loss_fn)
    return F.cross_entropy(out.float(), y.long())


def _nll(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.nll_loss(out.float(), y.long())  # expects log-probabilities


def _bce_target(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One sigmoid per output: targets already of the outputs' shape (multi-hot) as they are,
    class indices as one-hot rows."""
    return y.float() if y.shape == out.shape else F.one_hot(y.long(), out.shape[1]).float()


def _bce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # Mean over outputs, so a zero-logit start is log 2.
    return F.binary_cross_entropy_with_logits(out.float(), _bce_target(out, y))


def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(out.float(), y.float())


def _huber(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.huber_loss(out.float(), y.float())


BUILTIN: dict[str, LossFn] = {
    "cross_entropy": _cross_entropy,
    "nll": _nll,
    "bce": _bce,
    "mse": _mse,
    "huber": _huber,
}


def loss_name(spec) -> str:
    """The built-in loss the spec resolves to ('auto' by task), or 'custom'."""
    if spec.loss.factory is not None:
        return "custom"
    if spec.loss.name == "auto":
        from nnrecipe.tasks import get_task

        return get_task(spec.task).default_loss
    return spec.loss.name


def make_loss(spec, *, base: Path) -> LossFn:
    name = loss_name(spec)
    if name != "custom":
        from nnrecipe.tasks import get_task

        return get_task(spec.task).loss_fn(name)
    ref = spec.loss.factory
    fn = load_factory(ref, base=base, field="loss.factory")
    loss = call_factory(fn, field="loss.factory", ref=ref, **spec.loss.args)
    if not callable(loss):
        raise PluginError(f"loss.factory: {ref} returned {type(loss).__name__}; expected a callable(outputs, targets)")
    return _checked_loss(loss, ref)


def _checked_loss(loss: LossFn, ref: str) -> LossFn:
    """The user's loss under the guard, its value checked where it is returned: one number
    (a tensor of shape ()) that backward can start from."""

    def checked(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with user_code("loss.factory", ref):
            value = loss(whole(out), y)  # the model's whole output: auxiliary heads keep their loss
        if not isinstance(value, torch.Tensor) or value.ndim != 0:
            got = f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
            raise PluginError(
                f"loss.factory: {ref} returned {got}; expected one number, a tensor of shape () "
                "(reduce the per-example losses, e.g. with .mean())"
            )
        if not value.is_floating_point():
            raise PluginError(
                f"loss.factory: {ref} returned a {str(value.dtype).removeprefix('torch.')} tensor; "
                "expected a floating-point loss"
            )
        if torch.is_grad_enabled() and isinstance(out, torch.Tensor) and out.requires_grad and not value.requires_grad:
            raise PluginError(
                f"loss.factory: {ref} returned a loss that does not depend on the model's outputs: no "
                "gradient can reach the model (.item(), .detach() or numpy inside the loss?)"
            )
        return value

    return checked


def stacked_loss(loss_fn: LossFn) -> Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor] | None:
    """For a built-in loss (a batch mean of per-example losses): K models' losses (K,) from
    their outputs and targets laid end to end, (K * B, ...), in one call instead of K. None for
    any other loss (a task's own, the user's)."""
    name = next((n for n, fn in BUILTIN.items() if fn is loss_fn), None)
    if name is None:
        return None
    return lambda out, y, k: per_example_loss(name, out, y).reshape(k, -1).mean(dim=1)


def per_example_loss(name: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The built-in loss of each example (N,), averaged over outputs where the loss is."""
    out = out.float()
    if name == "cross_entropy":
        return F.cross_entropy(out, y.long(), reduction="none")
    if name == "nll":
        return F.nll_loss(out, y.long(), reduction="none")
    if name == "bce":
        return F.binary_cross_entropy_with_logits(out, _bce_target(out, y), reduction="none").mean(dim=1)
    y = y.float().reshape(out.shape)
    if name == "mse":
        return F.mse_loss(out, y, reduction="none").reshape(len(out), -1).mean(dim=1)
    if name == "huber":
        return F.huber_loss(out, y, reduction="none").reshape(len(out), -1).mean(dim=1)
    raise ValueError(f"no per-example form for loss {name!r}")
