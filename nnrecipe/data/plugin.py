"""`data.source: python`: the user's function returns the splits (see DESIGN.md, plugin contract).

`function(**data.args)` returns a mapping with `train` and `val` (optionally `test`), each a
Dataset yielding (x, y) or a pair (X, Y) of tensors, and optionally `classes` (names). X may be
a tuple, list or dict of tensors (nnrecipe/inputs.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from nnrecipe import inputs
from nnrecipe.data.bundle import DataBundle, LazySplit, Split, TensorSplit
from nnrecipe.data.common import tensor_bundle
from nnrecipe.errors import PluginError
from nnrecipe.plugins import call_factory, load_factory
from nnrecipe.tasks import get_task

FIELD = "data.factory"


def numeric(value: Any, what: str, ref: str) -> torch.Tensor:
    """An array the factory returned, as a tensor of numbers (bool, int or float), or one line
    naming what it returned instead (object or string arrays, complex numbers)."""
    try:
        t = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        dtype = getattr(value, "dtype", type(value).__name__)
        raise PluginError(
            f"{FIELD}: {ref} returned {what} of dtype {dtype}; expected numbers (bool, int or float)"
        ) from None
    if t.is_complex():
        raise PluginError(
            f"{FIELD}: {ref} returned {what} of dtype {str(t.dtype).removeprefix('torch.')}; "
            "expected real numbers (bool, int or float)"
        )
    return t


def _arrays(value: Any) -> bool:
    """A tensor or array, or a tuple/list/dict of them (structured inputs)."""
    named = inputs.leaves(value)
    return bool(named) and all(isinstance(v, (torch.Tensor, np.ndarray)) for _, v in named)


def _as_split(name: str, value: Any, spec, ref: str) -> Split | tuple[Any, torch.Tensor]:
    if isinstance(value, TensorDataset) and len(value.tensors) == 2:
        return numeric(value.tensors[0], f"{name!r} inputs", ref), numeric(value.tensors[1], f"{name!r} targets", ref)
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and _arrays(value[0])
        and isinstance(value[1], (torch.Tensor, np.ndarray))
    ):
        x = inputs.map_named(lambda leaf, v: numeric(v, f"{name!r} inputs {leaf}".removesuffix(" x"), ref), value[0])
        why = inputs.problem(x)
        if why:
            raise PluginError(f"{FIELD}: {ref} returned {name!r} inputs that cannot be batched: {why}")
        return x, numeric(value[1], f"{name!r} targets", ref)
    if isinstance(value, Dataset) and hasattr(value, "__len__"):
        split = LazySplit(name, value, num_workers=spec.data.num_workers, owner=FIELD)
        return split.materialize() if spec.data.in_memory == "always" else split
    raise PluginError(
        f"{FIELD}: {ref} returned {type(value).__name__} for {name!r}; expected a Dataset or a pair of tensors (X, Y)"
    )


def load(spec, base: Path) -> DataBundle:
    ref = spec.data.factory
    fn = load_factory(ref, base=base, field=FIELD)
    out = call_factory(fn, field=FIELD, ref=ref, **spec.data.args)
    if not isinstance(out, Mapping):
        raise PluginError(f"{FIELD}: {ref} returned {type(out).__name__}; expected a mapping with 'train' and 'val'")
    return get_task(spec.task).plugin_bundle(out, spec, ref)  # the task's contract: pairs, or token streams


def pairs_bundle(out: Mapping, spec, ref: str, task) -> DataBundle:
    """The contract of DESIGN.md: `train`, `val` (`test`) each a Dataset of (x, y) or a pair of
    tensors (X, Y); `classes` optional; `groups` optional: {"val": one id per val example} when
    val rows are dependent within groups (several crops of one photo, windows of one series),
    so that standard errors are taken over groups, not rows."""
    missing = [k for k in ("train", "val") if k not in out]
    unknown = sorted(set(out) - {"train", "val", "test", "classes", "groups"})
    if missing or unknown:
        what = f"missing {', '.join(missing)}" if missing else f"unknown keys {', '.join(map(str, unknown))}"
        raise PluginError(
            f"{FIELD}: {ref} returned a mapping with {what}; expected train, val, test?, classes?, groups?"
        )
    classes = [str(c) for c in out["classes"]] if out.get("classes") is not None else None
    parts = {k: _as_split(k, out[k], spec, ref) for k in ("train", "val", "test") if out.get(k) is not None}
    if out.get("groups") is not None:
        val = parts["val"]
        n_val = len(val[1]) if isinstance(val, tuple) else len(val)
        task = task.with_val_groups(_val_groups(out["groups"], n_val, ref))
    pairs = {k: p for k, p in parts.items() if isinstance(p, tuple)}
    if len(pairs) == len(parts):  # every split a pair of tensors
        return tensor_bundle(
            pairs,
            task=task,
            source="python",
            declared_classes=spec.data.num_classes,
            class_names=classes,
            description=f"your data: {ref}",
        )
    # At least one lazy split: wrap the tensor pairs too, and read labels once when C is not given.
    splits = {k: (TensorSplit(k, *p) if isinstance(p, tuple) else p) for k, p in parts.items()}
    for k, s in splits.items():
        if len(s) == 0:
            raise PluginError(f"{FIELD}: {ref} returned an empty {k!r} split")
    num_classes, target_dim = task.lazy_outputs(spec.data.num_classes, classes, splits)
    return DataBundle(
        task=task,
        source="python",
        train=splits["train"],
        val=splits["val"],
        test=splits.get("test"),
        num_classes=num_classes,
        class_names=classes,
        target_dim=target_dim,
        description=f"your data: {ref}",
    )


def _val_groups(groups: Any, n_val: int, ref: str) -> np.ndarray:
    """The `groups` entry: a mapping with "val", one group id (int or str) per val example (the
    train and test entries are accepted and not used yet)."""
    if not isinstance(groups, Mapping) or set(groups) - {"train", "val", "test"} or "val" not in groups:
        raise PluginError(
            f"{FIELD}: {ref} returned groups of type {type(groups).__name__}; expected a mapping "
            "{'val': one group id per val example}"
        )
    try:
        ids = np.asarray(groups["val"].cpu() if isinstance(groups["val"], torch.Tensor) else groups["val"])
    except (TypeError, ValueError, RuntimeError):  # ragged or unconvertible
        ids = np.asarray([], dtype=object)
    if (
        ids.ndim != 1
        or len(ids) != n_val
        or ids.dtype.kind not in "iuUSO"
        or (ids.dtype.kind == "O" and not all(isinstance(v, (str, int)) for v in ids))
    ):
        raise PluginError(
            f"{FIELD}: {ref} returned groups['val'] of shape {tuple(ids.shape)} and dtype {ids.dtype}; "
            f"expected {n_val} group ids (integers or strings), one per val example"
        )
    groups_n = len(np.unique(ids.astype(str)))
    if groups_n < 2:
        raise PluginError(
            f"{FIELD}: {ref} returned groups['val'] with {groups_n} group; standard errors over groups need two or more"
        )
    return ids.astype(str) if ids.dtype.kind == "O" else ids


def tokens_bundle(out: Mapping, ref: str) -> DataBundle:
    """The language-model contract: `train`, `val` (and `test`) are 1-D tensors of token ids
    (one stream per split, in reading order; nnrecipe cuts the windows), or pairs (X, Y) of
    (N, L) windows you cut yourself (Y: the next tokens; -100 marks padding); `vocab` the text
    of each id, `context` the window length; optional `stride` (train windows) and `prompt`."""
    from nnrecipe.data.text import SequenceInfo, sequence_bundle

    keys = {"train", "val", "test", "vocab", "context", "stride", "prompt"}
    missing = [k for k in ("train", "val", "vocab", "context") if k not in out]
    unknown = sorted(set(out) - keys)
    if missing or unknown:
        what = f"missing {', '.join(missing)}" if missing else f"unknown keys {', '.join(map(str, unknown))}"
        raise PluginError(
            f"{FIELD}: {ref} returned a mapping with {what}; a language model's data is "
            "train, val, test?, vocab, context, stride?, prompt?"
        )
    streams, windows = {}, {}
    for k in ("train", "val", "test"):
        if out.get(k) is None:
            continue
        if isinstance(out[k], (tuple, list)) and len(out[k]) == 2:
            x, y = (numeric(v, f"{k!r} windows", ref) for v in out[k])
            if (
                x.ndim != 2
                or x.shape != y.shape
                or any(t.dtype.is_floating_point or t.dtype == torch.bool for t in (x, y))
            ):
                raise PluginError(
                    f"{FIELD}: {ref} returned {k!r} windows of shapes {tuple(x.shape)} and {tuple(y.shape)}; "
                    "expected two (N, L) integer tensors (inputs, next tokens)"
                )
            windows[k] = (x.long(), y.long())
            streams[k] = x.long().reshape(-1)  # for the token counts of inspect-data
            continue
        t = numeric(out[k], repr(k), ref)
        if t.ndim != 1 or t.dtype.is_floating_point or t.dtype == torch.bool:
            raise PluginError(
                f"{FIELD}: {ref} returned {k!r} of shape {tuple(t.shape)} and dtype "
                f"{str(t.dtype).removeprefix('torch.')}; expected a 1-D tensor of integer token ids"
            )
        streams[k] = t.long()
    context, stride = out["context"], out.get("stride", None)
    if not isinstance(context, int) or isinstance(context, bool) or context < 2:
        raise PluginError(f"{FIELD}: {ref} returned context {context!r}; expected an integer >= 2")
    if stride is not None and (not isinstance(stride, int) or isinstance(stride, bool) or stride < 1):
        raise PluginError(f"{FIELD}: {ref} returned stride {stride!r}; expected an integer >= 1")
    if isinstance(out["vocab"], (str, bytes)) or not hasattr(out["vocab"], "__len__") or not len(out["vocab"]):
        raise PluginError(
            f"{FIELD}: {ref} returned vocab {type(out['vocab']).__name__}; expected a list with the "
            "text of each token id"
        )
    vocab = [str(v) for v in out["vocab"]]
    info = SequenceInfo(vocab=vocab, level="custom", context=context, prompt=str(out.get("prompt") or ""))
    return sequence_bundle(
        streams,
        info,
        stride=stride or context,
        source="python",
        description=f"your token streams: {ref}",
        field=FIELD,
        windows=windows,
    )
