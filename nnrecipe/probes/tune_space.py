"""The tune stage's search space: spec paths -> Optuna distributions, and where values lie.

A dimension is a dotted path into the spec (`optim.lr`, `model.args.dropout`,
`data.batch_size`); a trial's parameters go back into the starting spec through
`spec.apply_params` (validated by the one schema), and the space itself is checked against
the schema when the spec loads (spec_paths.space_problems).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nnrecipe.spec_paths import MISSING, read_path


def distribution(dim):
    """The Optuna distribution of one SpaceDim."""
    import optuna.distributions as d

    kind = dim.kind
    if kind == "uniform":
        low, high = dim.uniform
        return d.FloatDistribution(low, high)
    if kind == "log_uniform":
        low, high = dim.log_uniform
        return d.FloatDistribution(low, high, log=True)
    if kind == "int":
        low, high = dim.int
        return d.IntDistribution(low, high)
    if kind == "log_int":
        low, high = dim.log_int
        return d.IntDistribution(low, high, log=True)
    return d.CategoricalDistribution(list(dim.choice))


def suggest(trial, space: dict) -> dict[str, Any]:
    """A trial's parameters, one per dimension, in the space's order."""
    return {path: _suggest(trial, path, dim) for path, dim in space.items()}


def _suggest(trial, path: str, dim):
    kind = dim.kind
    if kind in ("uniform", "log_uniform"):
        low, high = getattr(dim, kind)
        return trial.suggest_float(path, low, high, log=kind == "log_uniform")
    if kind in ("int", "log_int"):
        low, high = getattr(dim, kind)
        return trial.suggest_int(path, low, high, log=kind == "log_int")
    return trial.suggest_categorical(path, list(dim.choice))


def unit(dim, value) -> float:
    """Where a value lies in its dimension, in [0, 1] on the scale it is sampled on
    (log for log_uniform/log_int); a choice maps to its index / (k - 1). Numeric values may
    be a NumPy array (elementwise)."""
    kind = dim.kind
    if kind == "choice":
        k = len(dim.choice)
        return dim.choice.index(value) / (k - 1) if k > 1 else 0.5
    low, high = getattr(dim, kind)
    if kind.startswith("log"):
        return (np.log(value) - math.log(low)) / (math.log(high) - math.log(low))
    return (value - low) / (high - low)


def contains(dim, value) -> bool:
    kind = dim.kind
    if kind == "choice":
        return any(value == c and type(value) is type(c) for c in dim.choice)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    low, high = getattr(dim, kind)
    if kind in ("int", "log_int") and not float(value).is_integer():
        return False
    return low <= value <= high


def start_values(spec, space: dict) -> dict[str, Any]:
    """The starting spec's value of each dimension, where it lies inside the space."""
    raw = spec.dump()
    out = {}
    for path, dim in space.items():
        value = read_path(raw, path)
        if value is not MISSING and contains(dim, value):
            out[path] = int(value) if dim.kind in ("int", "log_int") else value
    return out
