"""The tune stage's search space: spec paths -> Optuna distributions, and back into a spec.

A dimension is a dotted path into the spec (`optim.lr`, `model.args.dropout`,
`data.batch_size`); a trial's parameters are applied to the starting spec by editing
those paths and validating the result with the one schema, so a path that does not exist
or a value the field refuses is an error naming `stages.tune.space.<path>`.
"""

from __future__ import annotations

import math
from typing import Any

# Trials must share the data and its val split to be comparable: of `data`, only these may vary.
TUNABLE_DATA = ("batch_size", "downsample")
TUNABLE_ROOTS = ("data", "model", "loss", "optim", "train")


def distribution(dim):
    """The Optuna distribution of one SpaceDim."""
    import optuna.distributions as d

    kind = dim.kind
    if kind == "uniform":
        return d.FloatDistribution(*dim.uniform)
    if kind == "log_uniform":
        return d.FloatDistribution(*dim.log_uniform, log=True)
    if kind == "int":
        return d.IntDistribution(*dim.int)
    if kind == "log_int":
        return d.IntDistribution(*dim.log_int, log=True)
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
    (log for log_uniform/log_int); a choice maps to its index / (k - 1)."""
    kind = dim.kind
    if kind == "choice":
        k = len(dim.choice)
        return dim.choice.index(value) / (k - 1) if k > 1 else 0.5
    low, high = getattr(dim, kind)
    if kind.startswith("log"):
        return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
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


_MISSING = object()


def read_path(raw: dict, path: str):
    node: Any = raw
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def start_values(spec, space: dict) -> dict[str, Any]:
    """The starting spec's value of each dimension, where it lies inside the space."""
    raw = spec.dump()
    out = {}
    for path, dim in space.items():
        value = read_path(raw, path)
        if value is not _MISSING and contains(dim, value):
            out[path] = int(value) if dim.kind in ("int", "log_int") else value
    return out


def set_path(raw: dict, path: str, value) -> None:
    parts = path.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part) if isinstance(node, dict) else None
        if child is None and isinstance(node, dict) and part == "args":
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ValueError(f"{'.'.join(parts[: i + 1])} is not a mapping")
        node = child
    node[parts[-1]] = value


def apply_params(spec, params: dict[str, Any]):
    """The spec with each dotted path set to its value, validated by the schema."""
    from nnrecipe.spec import Spec

    raw = spec.dump()
    for path, value in params.items():
        set_path(raw, path, value)
    return Spec.model_validate(raw)


def path_problem(path: str) -> str:
    """Why a path cannot be tuned, or "" when it may be."""
    parts = path.split(".")
    if parts[0] not in TUNABLE_ROOTS:
        return f"only fields under {', '.join(TUNABLE_ROOTS)} can be tuned"
    if parts[0] == "data" and (len(parts) != 2 or parts[1] not in TUNABLE_DATA):
        return f"changes the data or its val split, so trials would not be comparable; of data only {', '.join(TUNABLE_DATA)} may be tuned"
    return ""


def check_space(spec) -> list[str]:
    """Problems of stages.tune.space against the rest of the spec: each path must name a field
    the schema accepts every value of the dimension for (both ends of a range, every choice)."""
    from pydantic import ValidationError

    from nnrecipe.spec import Spec, format_validation_error

    problems = []
    for path, dim in spec.stages.tune.space.items():
        where = f"stages.tune.space.{path}"
        why = path_problem(path)
        if why:
            problems.append(f"{where}: {why}")
            continue
        base = spec.dump()
        if read_path(base, path) is _MISSING and not _free_mapping(base, path):
            problems.append(f"{where}: no such field in the spec")
            continue
        for value in (list(dim.choice) if dim.kind == "choice" else list(getattr(dim, dim.kind))):
            raw = spec.dump()
            try:
                set_path(raw, path, value)
                Spec.model_validate(raw, context={"skip_space_check": True})  # the space itself is being checked
            except ValueError as exc:
                lines = format_validation_error(exc) if isinstance(exc, ValidationError) else [str(exc)]
                problems.append(f"{where}: {value!r} is refused ({lines[0] if lines else exc})")
                break
    return problems


def _free_mapping(raw: dict, path: str) -> bool:
    """A user factory's args (model.args, loss.args, ...) is a free mapping: any key may be new."""
    parent, _, _ = path.rpartition(".")
    section, _, last = parent.rpartition(".")
    return last == "args" and read_path(raw, f"{section}.factory") not in (_MISSING, None)
