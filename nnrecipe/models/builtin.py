"""Built-in models. Plain and small: the recipe says start simple ("don't be a hero").

Every constructor takes (input_shape, num_outputs, args) and returns a module whose
forward maps a batch (N, *input_shape) to logits or predictions (N, num_outputs).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from nnrecipe.errors import SpecError

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def linear(input_shape: Sequence[int], num_outputs: int, args) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_outputs, bias=args.bias))


class IdLinear(nn.Module):
    """A linear model of integer inputs (token ids, category codes): a linear layer on their
    one-hot encoding, one weight vector per (position, id), as an EmbeddingBag sum; where that
    table would pass `max_weights`, one vector per id wherever it occurs (a bag of ids: the
    mean, position-free, linear in the id counts)."""

    offsets: torch.Tensor  # a buffer (register_buffer in __init__)

    def __init__(self, positions: int, vocab: int, num_outputs: int, *, max_weights: int = 4_000_000):
        super().__init__()
        self.vocab = vocab
        self.per_position = positions * vocab * num_outputs <= max_weights
        self.table = nn.EmbeddingBag(
            positions * vocab if self.per_position else vocab, num_outputs, mode="sum" if self.per_position else "mean"
        )
        nn.init.zeros_(self.table.weight)  # a linear layer on one-hot inputs, started at zero as a bias-only model
        self.bias = nn.Parameter(torch.zeros(num_outputs))
        offsets = torch.arange(positions) * vocab if self.per_position else torch.zeros(positions, dtype=torch.long)
        self.register_buffer("offsets", offsets, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = x.reshape(len(x), -1).long().clamp(0, self.vocab - 1) + self.offsets
        return self.table(ids) + self.bias


def largest_ids(data) -> dict[str, int]:
    """The largest id of each integer input leaf over every split (so no held-out id falls
    outside a table sized by it), by leaf name (inputs.leaves: "x" for one tensor)."""
    from nnrecipe import inputs

    top: dict[str, int] = {}
    for split in data.splits().values():
        for x, _ in split.iterate(4096):
            for name, t in inputs.leaves(x):
                if not t.is_floating_point() and t.numel():
                    top[name] = max(top.get(name, 0), int(t.max()))
    return top


def id_linear(data) -> IdLinear:
    """The linear baseline of integer inputs, its vocabulary from every split and its bias at
    the task's ideal (as built-in models start)."""
    vocab = 1 + max(largest_ids(data).values(), default=0)
    return IdLinear(math.prod(data.input_shape), max(vocab, 1), data.num_outputs)


class StructuredLinear(nn.Module):
    """The linear baseline of structured inputs (a dict or tuple of tensors): one linear part
    per leaf, summed: float leaves flattened through a linear layer, integer leaves through
    IdLinear (their one-hot encoding). Every weight starts at zero (a bias-only model), so the
    baseline is the same at any seed; the loss is convex in the weights."""

    def __init__(self, parts: dict[str, nn.Module], num_outputs: int):
        super().__init__()
        self.names = list(parts)
        self.parts = nn.ModuleList(parts.values())
        self.bias = nn.Parameter(torch.zeros(num_outputs))

    def forward(self, x) -> torch.Tensor:
        from nnrecipe import inputs

        out = self.bias
        for part, (_, leaf) in zip(self.parts, inputs.leaves(x)):
            out = out + part(leaf.reshape(len(leaf), -1).float() if isinstance(part, nn.Linear) else leaf)
        return out


def structured_linear(data) -> StructuredLinear:
    from nnrecipe import inputs

    top = largest_ids(data)
    parts: dict[str, nn.Module] = {}
    for name, leaf in inputs.leaves(data.train.example(0)[0]):
        if leaf.is_floating_point():
            layer = nn.Linear(max(1, leaf.numel()), data.num_outputs, bias=False)
            nn.init.zeros_(layer.weight)
            parts[name] = layer
        else:
            parts[name] = IdLinear(max(1, leaf.numel()), top.get(name, 0) + 1, data.num_outputs)
            parts[name].bias.requires_grad_(False)  # one bias: the model's own
    return StructuredLinear(parts, data.num_outputs)


def mlp(input_shape: Sequence[int], num_outputs: int, args) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in args.hidden:
        layers += [nn.Linear(width, h), ACTIVATIONS[args.activation]()]
        if args.dropout > 0:
            layers.append(nn.Dropout(args.dropout))
        width = h
    layers.append(nn.Linear(width, num_outputs))
    return nn.Sequential(*layers)


def _need_rank(input_shape: Sequence[int], ranks: tuple[int, ...], arch: str, what: str) -> None:
    if len(input_shape) not in ranks:
        raise SpecError(f"model.arch: {arch} needs inputs of shape {what}; the data gives {tuple(input_shape)}")


class _AddChannel(nn.Module):
    """(N, L) -> (N, 1, L), so a 1-D CNN also takes plain sequences."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1)


def cnn1d(input_shape: Sequence[int], num_outputs: int, args) -> nn.Module:
    _need_rank(input_shape, (1, 2), "cnn1d", "(C, L) or (L,)")
    layers: list[nn.Module] = [] if len(input_shape) == 2 else [_AddChannel()]
    c_in = input_shape[0] if len(input_shape) == 2 else 1
    for c in args.channels:
        layers += [nn.Conv1d(c_in, c, args.kernel_size, stride=args.stride, padding=args.kernel_size // 2), nn.ReLU()]
        c_in = c
    layers += [nn.AdaptiveAvgPool1d(1), nn.Flatten()]
    if args.dropout > 0:
        layers.append(nn.Dropout(args.dropout))
    layers.append(nn.Linear(c_in, num_outputs))
    return nn.Sequential(*layers)


def cnn2d(input_shape: Sequence[int], num_outputs: int, args) -> nn.Module:
    _need_rank(input_shape, (3,), "cnn2d", "(C, H, W)")
    c_in, h, w = input_shape
    layers: list[nn.Module] = []
    for c in args.channels:
        layers.append(nn.Conv2d(c_in, c, args.kernel_size, padding=args.kernel_size // 2, bias=not args.batch_norm))
        if args.batch_norm:
            layers.append(nn.BatchNorm2d(c))
        layers.append(nn.ReLU())
        if min(h, w) >= 2:  # halve the resolution while there is any left (8x8 digits allow 3 halvings)
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        c_in = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if args.dropout > 0:
        layers.append(nn.Dropout(args.dropout))
    layers.append(nn.Linear(c_in, num_outputs))
    return nn.Sequential(*layers)


def _resnet(depth: int, input_shape: Sequence[int], num_outputs: int, args, base) -> nn.Module:
    import torchvision

    _need_rank(input_shape, (3,), f"resnet{depth}", "(C, H, W)")
    c_in, h, w = input_shape
    model = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=num_outputs)
    small = args.small_input if args.small_input is not None else max(h, w) <= 64
    if small or c_in != 3:
        # CIFAR-style stem for small images: a 7x7/2 conv and a max-pool would leave 32x32 inputs 8x8.
        k, s, p = (3, 1, 1) if small else (7, 2, 3)
        model.conv1 = nn.Conv2d(c_in, 64, k, stride=s, padding=p, bias=False)
    if small:
        model.maxpool = nn.Identity()
    if args.dropout > 0:
        model.fc = nn.Sequential(nn.Dropout(args.dropout), model.fc)
    if args.weights_path:
        _load_local_weights(model, args.weights_path, base)
    return model


def _load_local_weights(model: nn.Module, path: str, base) -> None:
    from nnrecipe.models.init import load_matching_weights

    load_matching_weights(model, path, base=base, field="model.args.weights_path")


def resnet18(input_shape, num_outputs, args, base=None) -> nn.Module:
    return _resnet(18, input_shape, num_outputs, args, base)


def resnet50(input_shape, num_outputs, args, base=None) -> nn.Module:
    return _resnet(50, input_shape, num_outputs, args, base)
