"""Plugins that do what they are told: `how` (a plain mapping the property test draws) says what
the data factory, the model or the loss returns, raises or exits with. tests/test_plugin_fuzz.py
drives the plugin contract through them; none of it is a sensible plugin."""

from __future__ import annotations

import sys

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

N = 24


def _misbehave(how: dict) -> None:
    """Raise or exit when told to."""
    if how.get("raise"):
        raise {
            "value": ValueError,
            "key": KeyError,
            "type": TypeError,
            "runtime": RuntimeError,
            "index": IndexError,
            "zero": ZeroDivisionError,
        }[how["raise"]]("told to")
    if "exit" in how:
        sys.exit(how["exit"])


def _array(spec: dict, n: int):
    """An array of `n` rows as `spec` says: shape after the rows, dtype, values."""
    shape = (n, *spec.get("shape", []))
    g = np.random.default_rng(spec.get("seed", 0))
    kind = spec.get("dtype", "float32")
    if kind == "object":
        return np.array(
            [[("a" if j % 2 else 1.5) for j in range(int(np.prod(shape[1:])) or 1)] for _ in range(n)], dtype=object
        ).reshape(n, -1)
    if kind in ("int64", "uint8"):
        a = g.integers(spec.get("low", 0), spec.get("high", 3), size=shape).astype(kind)
    elif kind == "bool":
        a = g.random(shape) > 0.5
    elif kind == "complex64":
        a = (g.random(shape) + 1j * g.random(shape)).astype(np.complex64)
    else:
        a = g.normal(size=shape).astype(kind)
        if spec.get("nan"):
            a.reshape(-1)[0] = np.nan
    return torch.as_tensor(a) if spec.get("tensor", True) and kind != "object" else a


class _Items(Dataset):
    def __init__(self, how: dict):
        self.how = how

    def __len__(self):
        if self.how.get("len_misbehaves"):
            _misbehave(self.how["len_misbehaves"])
        return self.how.get("len", N)

    def __getitem__(self, i):
        if self.how.get("item_misbehaves"):
            _misbehave(self.how["item_misbehaves"])
        item = self.how.get("item", "pair")
        if item == "pair":
            return torch.randn(4), int(i % 2)
        if item == "single":
            return torch.randn(4)
        if item == "triple":
            return torch.randn(4), 0, 1
        if item == "none":
            return None
        return "text", "label"


def data(how: dict):
    _misbehave(how)
    ret = how.get("returns", "splits")
    if ret == "none":
        return None
    if ret == "list":
        return [1, 2]
    if ret == "dataset":
        return {"train": _Items(how), "val": _Items({**how, "item_misbehaves": None})}
    n_train, n_val = how.get("n_train", N), how.get("n_val", N)
    x, y = how.get("x", {}), how.get("y", {"dtype": "int64", "high": 2})
    out = {"train": (_array(x, n_train), _array(y, n_train)), "val": (_array(x, n_val), _array(y, n_val))}
    for key in how.get("drop", []):
        out.pop(key, None)
    if how.get("extra_key"):
        out["surprise"] = 1
    return out


class _Told(nn.Module):
    def __init__(self, how: dict, input_shape, num_outputs):
        super().__init__()
        self.how, self.num_outputs = how, num_outputs
        self.linear = nn.Linear(int(np.prod(input_shape)), num_outputs)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls > self.how.get("after", 0):
            _misbehave(self.how.get("misbehaves", {}))
            out = self.how.get("outputs", "logits")
            if out == "tuple":
                return self.linear(x.flatten(1)), 0
            if out == "none":
                return None
            if out == "int":
                return 3
            if out == "wrong_shape":
                return self.linear(x.flatten(1))[:, :1].repeat(1, self.num_outputs + 1)
            if out == "nan":
                return self.linear(x.flatten(1)) * float("nan")
            if out == "long":
                return self.linear(x.flatten(1)).long()
        return self.linear(x.flatten(1))


def model(input_shape, num_outputs, how: dict):
    _misbehave(how.get("factory", {}))
    if how.get("returns") == "not_a_module":
        return "a model"
    return _Told(how, input_shape, num_outputs)


def loss(how: dict):
    _misbehave(how.get("factory", {}))
    if how.get("returns") == "not_callable":
        return 42
    calls = {"n": 0}

    def told(out, y):
        calls["n"] += 1
        if calls["n"] > how.get("after", 0):
            _misbehave(how.get("misbehaves", {}))
            value = how.get("value", "scalar")
            if value == "per_example":
                return torch.nn.functional.cross_entropy(out, y.long(), reduction="none")
            if value == "float":
                return 1.5
            if value == "none":
                return None
            if value == "int":
                return torch.tensor(3)
            if value == "nan":
                return torch.nn.functional.cross_entropy(out, y.long()) * float("nan")
            if value == "detached":
                return torch.nn.functional.cross_entropy(out.detach(), y.long())
        return torch.nn.functional.cross_entropy(out, y.long())

    return told
