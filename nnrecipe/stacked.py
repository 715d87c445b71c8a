"""K models of a plain stack of torch.nn layers run as one, without vmap (issue 24).

`torch.func.vmap` over `functional_call` takes any model, but on a small one its wrapping costs
more than the arithmetic: a digits MLP's group step at K = 5 spent 1.4 of 2.5 ms in vmap's
machinery (cProfile, the cpu-box). Most models the recipe trains many of are a
`nn.Sequential` of a few layer kinds (the built-in mlp, cnn1d, cnn2d without BatchNorm), and
for those the stacked arithmetic is short to write out:

- a Linear layer of K models is one `baddbmm` of (K, rows, in) by the K weights (K, in, out);
- a Conv1d/Conv2d of K models is one grouped convolution, the K models' channels side by side;
- a layer without parameters that treats each example alone (activations, dropout, pooling,
  flatten) runs once on the K batches laid end to end, (K * B, ...);
- dropout, given a generator per model (`draws`, on a CPU), draws each model's mask from its
  own, as F.dropout draws it there alone: the same masks, so the same numbers as alone.

`StackedForward.of(model)` is None for any other model (the caller vmaps it). The caller
checks the first batch against vmap's outputs before trusting it (together.Group).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from nnrecipe.plugins import own_class

# Layers without parameters that see each example alone: run on (K * B, ...) they give each
# model's batch what they give it alone. (BatchNorm without running statistics mixes the
# examples of a batch, so it is not here.)
PER_EXAMPLE = (
    nn.Identity,
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.Tanh,
    nn.Sigmoid,
    nn.SiLU,
    nn.Mish,
    nn.LeakyReLU,
    nn.ELU,
    nn.Softplus,
    nn.Hardswish,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Flatten,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
)
# nnrecipe's own per-example layers, by qualified name (a layer class defined in a module)
OWN = {"nnrecipe.models.builtin._AddChannel"}

# (params, x (K * B, ...), k, draws: a generator per model or None) -> (K * B, ...)
Layer = Callable[[dict[str, torch.Tensor], torch.Tensor, int, Optional[list[torch.Generator]]], torch.Tensor]


class StackedForward:
    """The forward of K stacked models of one plain architecture: `(params, x, k) -> out`,
    params {name: (K, ...)} as `named_parameters` names them, x (K * B, ...) the K batches end
    to end, out (K * B, ...)."""

    def __init__(self, layers: list[Layer], draws: bool = False):
        self.layers = layers
        self.draws = draws  # whether a layer draws random numbers in training (dropout)

    @classmethod
    def of(cls, model: nn.Module) -> Optional["StackedForward"]:
        """The stacked forward of `model`, or None where it is not a plain stack of the layers
        written out here (any other model: vmap)."""
        if own_class(model) is not nn.Sequential:  # a user's Sequential under plugins.guard too
            return None
        layers: list[Layer] = []
        draws = False
        owned = {name for name, _ in model.named_parameters()}  # a shared layer's, under its first name
        for name, m in model.named_modules(remove_duplicate=False):  # a layer used twice runs twice
            if m is model or type(m) is nn.Sequential:
                continue  # its children follow in the order it calls them
            layer = _layer(name, m)
            if layer is None or any(f"{name}.{p}" not in owned for p, _ in m.named_parameters()):
                return None  # not written out, or its weights shared with another layer: vmap
            layers.append(layer)
            draws = draws or (isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0)
        return cls(layers, draws)

    def __call__(
        self, params: dict[str, torch.Tensor], x: torch.Tensor, k: int, draws: Optional[list[torch.Generator]] = None
    ) -> torch.Tensor:
        """`draws`: each model's generator, which its dropout masks are drawn from (None: one
        draw for all K from the global stream)."""
        for layer in self.layers:
            x = layer(params, x, k, draws)
        return x


def _layer(name: str, m: nn.Module) -> Optional[Layer]:
    prefix = f"{name}." if name else ""
    own = f"{type(m).__module__}.{type(m).__qualname__}" in OWN
    if type(m) in PER_EXAMPLE or own:
        if any(True for _ in m.parameters()) or any(True for _ in m.buffers()):
            return None
        if type(m) is nn.Dropout:
            return _dropout(m)
        return lambda params, x, k, draws: m(x)
    if type(m) is nn.Linear:
        return _linear(prefix, m.bias is not None)
    if isinstance(m, (nn.Conv1d, nn.Conv2d)) and type(m) in (nn.Conv1d, nn.Conv2d):
        if m.padding_mode == "zeros" and isinstance(m.padding, tuple):
            return _conv(prefix, m)
    return None


def _dropout(m: nn.Dropout) -> Layer:
    def dropout(params: dict[str, torch.Tensor], x: torch.Tensor, k: int, draws) -> torch.Tensor:
        if draws is None or not m.training or not 0 < m.p < 1 or x.device.type != "cpu":
            return m(x)
        # at::native::dropout on a CPU: noise = empty_like(input).bernoulli_(1 - p) / (1 - p);
        # input * noise. Each model's noise from its own generator, in its own shape.
        keep = 1.0 - m.p
        parts = x.reshape(k, -1, *x.shape[1:])
        noise = torch.stack([torch.empty_like(parts[0]).bernoulli_(keep, generator=g) for g in draws])
        return (parts * noise.div_(keep)).reshape(x.shape)

    return dropout


def _linear(prefix: str, bias: bool) -> Layer:
    weight_name, bias_name = prefix + "weight", prefix + "bias"

    def linear(params: dict[str, torch.Tensor], x: torch.Tensor, k: int, draws=None) -> torch.Tensor:
        w = params[weight_name]  # (K, out, in)
        rows = x.reshape(k, -1, x.shape[-1])  # (K, B * ..., in)
        if bias:
            out = torch.baddbmm(params[bias_name].unsqueeze(1), rows, w.transpose(1, 2))
        else:
            out = torch.bmm(rows, w.transpose(1, 2))
        return out.reshape(*x.shape[:-1], w.shape[1])

    return linear


def _conv(prefix: str, m: nn.Conv1d | nn.Conv2d) -> Layer:
    weight_name, bias_name = prefix + "weight", prefix + "bias"
    one_d, has_bias = isinstance(m, nn.Conv1d), m.bias is not None
    stride, dilation, groups = m.stride, m.dilation, m.groups
    padding = m.padding if isinstance(m.padding, tuple) else ()  # a name ("same"): not written out

    def stacked_conv(params: dict[str, torch.Tensor], x: torch.Tensor, k: int, draws=None) -> torch.Tensor:
        w = params[weight_name]  # (K, out, in / groups, *kernel)
        b = x.shape[0] // k
        # (K * B, C, *space) -> (B, K * C, *space): each model's channels one group of K
        side = x.reshape(k, b, *x.shape[1:]).transpose(0, 1).reshape(b, k * x.shape[1], *x.shape[2:])
        weight, bias = w.reshape(-1, *w.shape[2:]), params[bias_name].reshape(-1) if has_bias else None
        if one_d:
            out = F.conv1d(side, weight, bias, stride, padding, dilation, groups * k)
        else:
            out = F.conv2d(side, weight, bias, stride, padding, dilation, groups * k)
        return out.reshape(b, k, -1, *out.shape[2:]).transpose(0, 1).reshape(k * b, -1, *out.shape[2:])

    return stacked_conv
