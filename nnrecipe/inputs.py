"""Model inputs of any structure: a tensor, or a tuple/list/dict of them, nested.

A Hugging Face batch `{"input_ids", "attention_mask"}` and a tabular `(x_cat, x_num)` travel
through nnrecipe like one tensor: every part that moves, batches, hashes or draws inputs uses
these few verbs (DESIGN.md, "Any model, any batch"). A leaf is a tensor with a row per
example; its name is its path: `input_ids`, `[0]`, `[1].ids`, and `x` for a plain tensor.

The model is called by the structure (the model's guard, plugins.guard_module): `model(x)` for
a tensor, `model(*x)` for a tuple or list, `model(**x)` for a dict; `model.call` overrides.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Iterator, Sequence

import torch

Inputs = Any  # a tensor, or a tuple / list / dict of Inputs
CALLS = ("single", "positional", "keywords")  # model(x), model(*x), model(**x)


def structured(x: Inputs) -> bool:
    return not isinstance(x, torch.Tensor)


def _children(x: Inputs) -> Iterator[tuple[str, Inputs]]:
    if isinstance(x, Mapping):
        for k, v in x.items():
            yield str(k), v
    elif isinstance(x, (tuple, list)):
        for i, v in enumerate(x):
            yield f"[{i}]", v


def leaves(x: Inputs, prefix: str = "", *, is_leaf: Callable[[Any], bool] | None = None) -> list[tuple[str, Any]]:
    """(name, leaf) in a fixed order (dict insertion order, then position)."""
    if not isinstance(x, (Mapping, tuple, list)) or (is_leaf is not None and is_leaf(x)):
        return [(prefix or "x", x)]
    out: list[tuple[str, Any]] = []
    for name, child in _children(x):
        joined = f"{prefix}{name}" if name.startswith("[") or not prefix else f"{prefix}.{name}"
        out.extend(leaves(child, joined, is_leaf=is_leaf))
    return out


def tensors(x: Inputs) -> list[torch.Tensor]:
    return [t for _, t in leaves(x)]


def map_leaves(fn: Callable[[Any], Any], x: Inputs) -> Inputs:
    """The same structure with fn applied to every leaf (a mapping comes back a dict)."""
    if isinstance(x, Mapping):
        return {k: map_leaves(fn, v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return _rebuild(x, [map_leaves(fn, v) for v in x])
    return fn(x)


def map_named(fn: Callable[[str, Any], Any], x: Inputs, prefix: str = "") -> Inputs:
    """map_leaves with the leaf's name as the first argument."""
    if isinstance(x, Mapping):
        return {k: map_named(fn, v, f"{prefix}.{k}" if prefix else str(k)) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return _rebuild(x, [map_named(fn, v, f"{prefix}[{i}]") for i, v in enumerate(x)])
    return fn(prefix or "x", x)


def _rebuild(like: Any, items: list) -> Any:
    if hasattr(like, "_fields"):  # a namedtuple
        return type(like)(*items)
    return list(items) if isinstance(like, list) else tuple(items)


def zip_leaves(fn: Callable[[list[Any]], Any], xs: Sequence[Inputs]) -> Inputs:
    """Combine several inputs of one structure leaf by leaf (fn gets the list of leaves)."""
    first = xs[0]
    if isinstance(first, Mapping):
        return {k: zip_leaves(fn, [x[k] for x in xs]) for k in first}
    if isinstance(first, (tuple, list)):
        return _rebuild(first, [zip_leaves(fn, [x[i] for x in xs]) for i in range(len(first))])
    return fn(list(xs))


def batch_len(x: Inputs) -> int:
    """Examples in a batch: the rows of its first leaf (`check` makes all leaves agree)."""
    return len(tensors(x)[0])


def index(x: Inputs, idx: Any) -> Inputs:
    return map_leaves(lambda t: t[idx], x)


def to(x: Inputs, device: torch.device | str, *, non_blocking: bool = False) -> Inputs:
    return map_leaves(lambda t: t.to(device, non_blocking=non_blocking), x)


def cpu(x: Inputs) -> Inputs:
    return map_leaves(lambda t: t.detach().cpu(), x)


def device(x: Inputs) -> torch.device:
    return tensors(x)[0].device


def cat(xs: Sequence[Inputs]) -> Inputs:
    return zip_leaves(torch.cat, xs)


def stack(examples: Sequence[Inputs]) -> Inputs:
    """Single examples into a batch (as the default collate does)."""
    return zip_leaves(lambda ts: torch.stack([torch.as_tensor(t) for t in ts]), examples)


def shape(example: Inputs) -> Any:
    """An example's shape: a tuple for a tensor, the structure of tuples otherwise (what a
    model factory receives as `input_shape`)."""
    return map_leaves(lambda t: tuple(torch.as_tensor(t).shape), example)


def describe(x: Inputs, *, batch: bool = True) -> str:
    """`long (8, 32)` for a tensor; `input_ids long (8, 32), attention_mask long (8, 32)`."""
    parts = []
    for name, t in leaves(x):
        text = (
            f"{str(t.dtype).removeprefix('torch.')} {tuple(t.shape)}"
            if isinstance(t, torch.Tensor)
            else type(t).__name__
        )
        parts.append(text if not structured(x) else f"{name} {text}")
    return ", ".join(parts)


def problem(x: Inputs) -> str:
    """Why a batch cannot be fed to a model (empty when it can): a leaf that is not a tensor,
    leaves with different numbers of rows, an empty structure."""
    named = leaves(x)
    if not named:
        return f"an empty {type(x).__name__}"
    for name, t in named:
        if not isinstance(t, torch.Tensor):
            return f"{name} is a {type(t).__name__}, not a tensor"
        if t.ndim == 0:
            return f"{name} is a single number, not a row per example"
    rows = {name: len(t) for name, t in named}
    if len(set(rows.values())) > 1:
        listed = ", ".join(f"{k} {v}" for k, v in list(rows.items())[:6])
        return f"its leaves have different numbers of rows ({listed})"
    return ""


def float_leaves(x: Inputs) -> list[tuple[str, torch.Tensor]]:
    return [(n, t) for n, t in leaves(x) if t.is_floating_point()]


def row_bytes(x: Inputs) -> list[bytes]:
    """One byte string per example over all leaves (duplicates, leakage, conflicts)."""
    parts = [t.detach().cpu().reshape(len(t), -1).contiguous().numpy() for t in tensors(x)]
    return [b"".join(p[i].tobytes() for p in parts) for i in range(len(parts[0]))]


def default_call(x: Inputs) -> str:
    if isinstance(x, Mapping):
        return "keywords"
    if isinstance(x, (tuple, list)):
        return "positional"
    return "single"


def call(forward: Callable[..., Any], x: Inputs, how: str | None) -> Any:
    """forward(x), forward(*x) or forward(**x), by `how` (model.call) or by the structure."""
    how = how or default_call(x)
    if how == "keywords":
        if not isinstance(x, Mapping):
            raise TypeError(f"model.call: keywords needs dict inputs; these are a {type(x).__name__}")
        return forward(**x)
    if how == "positional":
        if not isinstance(x, (tuple, list, Mapping)):
            return forward(x)
        return forward(*(x.values() if isinstance(x, Mapping) else x))
    return forward(x)
