"""Models: the built-in architectures and the user's factory, behind one `build_model`."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from nnrecipe.errors import PluginError, SpecError
from nnrecipe.models import builtin
from nnrecipe.plugins import call_factory, load_factory

ARCHS = {
    "linear": builtin.linear,
    "mlp": builtin.mlp,
    "cnn1d": builtin.cnn1d,
    "cnn2d": builtin.cnn2d,
}


def build_model(spec, *, input_shape: Sequence[int], num_outputs: int, base: Path) -> nn.Module:
    m = spec.model
    if m.arch in ARCHS:
        return ARCHS[m.arch](tuple(input_shape), num_outputs, m.args)
    if m.arch in ("resnet18", "resnet50"):
        return getattr(builtin, m.arch)(tuple(input_shape), num_outputs, m.args, base)
    fn = load_factory(m.factory, base=base, field="model.factory")
    model = call_factory(fn, tuple(input_shape), num_outputs, field="model.factory", ref=m.factory, **m.args)
    if not isinstance(model, nn.Module):
        raise PluginError(f"model.factory: {m.factory} returned {type(model).__name__}; expected a torch.nn.Module")
    return model


def check_output_shape(model: nn.Module, x: torch.Tensor, num_outputs: int, *, field: str = "model") -> None:
    """One forward pass on a small batch: the model must return (N, num_outputs)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:
        cls = PluginError if field == "model.factory" else SpecError
        raise cls(f"{field}: forward on a batch of shape {tuple(x.shape)} raised {exc.__class__.__name__}: {exc}") from exc
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(x), num_outputs):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise PluginError(f"{field}: the model returns {got} for a batch of {len(x)}; expected ({len(x)}, {num_outputs})")
