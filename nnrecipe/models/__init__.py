"""Models: the built-in architectures and the user's factory, behind one `build_model`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from nnrecipe.errors import NNRecipeError, PluginError, SpecError
from nnrecipe.models import builtin, sequence
from nnrecipe.plugins import call_factory, guard_module, load_factory

ARCHS = {
    "linear": builtin.linear,
    "mlp": builtin.mlp,
    "cnn1d": builtin.cnn1d,
    "cnn2d": builtin.cnn2d,
    "gpt": sequence.gpt,
    "gru": sequence.gru,
}


def build_model(spec, *, input_shape: Any, num_outputs: int, base: Path) -> nn.Module:
    """input_shape: an example's shape; for structured inputs the structure of shapes, which
    only a user model (model.factory) can take."""
    m = spec.model
    if m.arch != "python" and not _is_shape(input_shape):
        raise SpecError(
            f"model.arch: {m.arch} takes one tensor per example; these inputs are {_shapes(input_shape)}: "
            "give your own model (model.arch: python, model.factory)"
        )
    if m.arch in ARCHS:
        return ARCHS[m.arch](tuple(input_shape), num_outputs, m.args)
    if m.arch in ("resnet18", "resnet50"):
        return getattr(builtin, m.arch)(tuple(input_shape), num_outputs, m.args, base)
    fn = load_factory(m.factory, base=base, field="model.factory")
    shape = tuple(input_shape) if _is_shape(input_shape) else input_shape
    model = call_factory(fn, shape, num_outputs, field="model.factory", ref=m.factory, **m.args)
    if not isinstance(model, nn.Module):
        raise PluginError(f"model.factory: {m.factory} returned {type(model).__name__}; expected a torch.nn.Module")
    return guard_module(
        model, field="model.factory", ref=m.factory, output=m.output, call=m.call
    )  # its forward is user code


def _shapes(input_shape: Any) -> str:
    from nnrecipe import inputs

    return ", ".join(f"{name} {shape}" for name, shape in inputs.leaves(input_shape, is_leaf=_is_shape))


def _is_shape(v: Any) -> bool:
    return isinstance(v, tuple) and all(isinstance(d, int) for d in v)


def check_output_shape(model: nn.Module, x: Any, want: tuple[int, ...], *, field: str = "model") -> None:
    """One forward pass on a small batch: the model must return the shape the task wants,
    (N, num_outputs), or for a language model (N, L, V) on (N, L) token windows."""
    from nnrecipe import inputs

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except (torch.OutOfMemoryError, NNRecipeError):
        raise  # out of memory: the stage runner turns it into advice; a user model's: already one line
    except Exception as exc:
        cls = PluginError if field == "model.factory" else SpecError
        raise cls(
            f"{field}: forward on a batch of {inputs.describe(x)} raised {exc.__class__.__name__}: {exc}"
        ) from exc
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(want):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        tokens = len(want) == 3 and isinstance(x, torch.Tensor) and x.dim() == 2
        what = f"{len(x)} windows of {x.shape[1]} tokens" if tokens else str(inputs.batch_len(x))
        raise PluginError(f"{field}: the model returns {got} for a batch of {what}; expected {want}")
    if not out.is_floating_point():
        raise PluginError(
            f"{field}: the model returns {str(out.dtype).removeprefix('torch.')} outputs; expected "
            "floating point (logits or values) that gradients can flow through"
        )


BUILTIN_ARCHS = ("linear", "mlp", "cnn1d", "cnn2d", "resnet18", "resnet50")


def prepare_model(spec, data, *, base: Path, model_spec=None) -> nn.Module:
    """Build the model for the data, check its output shape, and (built-ins) init the final bias."""
    from nnrecipe import inputs
    from nnrecipe.losses import loss_name
    from nnrecipe.models.init import load_matching_weights

    if model_spec is not None:
        spec = spec.model_copy(update={"model": model_spec})
    model = build_model(spec, input_shape=data.input_shape, num_outputs=data.num_outputs, base=base)
    field = "model.factory" if spec.model.arch == "python" else "model"
    x = inputs.stack([data.train.example(i)[0] for i in range(min(2, len(data.train)))])
    x = inputs.cpu(x)
    check_output_shape(model, x, data.task.output_shape(x, data.num_outputs), field=field)
    if not any(p.requires_grad for p in model.parameters()):
        raise (PluginError if field == "model.factory" else SpecError)(
            f"{field}: the model has no trainable parameters (all frozen, or none): nothing can be trained"
        )
    if spec.model.arch in BUILTIN_ARCHS and spec.model.init_final_bias:
        data.task.init_output_layer(model, data, loss_name(spec))  # the final bias at the task's ideal
    if spec.model.pretrained:  # after the bias init: a pretrained head keeps its own bias
        load_matching_weights(model, spec.model.pretrained, base=base, field="model.pretrained")
    return model


def seeded_model(spec, data, *, base: Path, device, model_spec=None) -> nn.Module:
    """prepare_model from the spec's seed, on the device: experiments that must start alike do."""
    from nnrecipe.runtime import seed_everything

    seed_everything(spec.seed, deterministic=spec.train.deterministic)
    return prepare_model(spec, data, base=base, model_spec=model_spec).to(device)


def larger_model_spec(spec):
    """A slightly larger version of the spec's model: built-ins twice as wide; user models get
    stages.baseline.larger_model_args merged into model.args. None when there is no such model."""
    m = spec.model
    if m.arch == "mlp":
        return m.model_copy(update={"args": m.args.model_copy(update={"hidden": [2 * h for h in m.args.hidden]})})
    if m.arch in ("cnn1d", "cnn2d"):
        return m.model_copy(update={"args": m.args.model_copy(update={"channels": [2 * c for c in m.args.channels]})})
    if m.arch == "gpt":
        return m.model_copy(update={"args": m.args.model_copy(update={"n_embd": 2 * m.args.n_embd})})
    if m.arch == "gru":
        return m.model_copy(update={"args": m.args.model_copy(update={"hidden": 2 * m.args.hidden})})
    if m.arch == "python" and spec.stages.baseline.larger_model_args is not None:
        return m.model_copy(update={"args": {**m.args, **spec.stages.baseline.larger_model_args}})
    return None
