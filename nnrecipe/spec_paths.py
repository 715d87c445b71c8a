"""Dotted paths into a spec's raw mapping (`optim.lr`, `model.args.dropout`): read one, set one,
and the tune space's rules for which paths may vary. The one key walk that `key=value`
overrides and tune's trial parameters share; it needs nothing from the schema (spec.py passes
its validator in), so spec.py and the tune stage's modules import this, never each other."""

from __future__ import annotations

from typing import Any, Callable, Optional

MISSING = object()

# Trials must share the data and its val split to be comparable: of `data`, only these may vary.
TUNABLE_DATA = ("batch_size", "downsample")
TUNABLE_ROOTS = ("data", "model", "loss", "optim", "train")


class PathError(ValueError):
    """An intermediate key of a path holds something other than a mapping."""

    def __init__(self, prefix: str):
        super().__init__(f"{prefix} is not a mapping")
        self.prefix = prefix


def read_path(raw: dict, path: str):
    """The value at `path`, or MISSING."""
    node: Any = raw
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def set_path(raw: dict, parts: list[str], value, *, grow: Callable[[str, Any], Optional[dict]]) -> None:
    """Set raw[parts[0]]...[parts[-1]] = value. `grow(key, child)` may put a new mapping where
    a child is missing or a shorthand (returns it), or leave the child (None); a child that is
    still not a mapping raises PathError naming the path up to it."""
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        new = grow(part, child)
        if new is not None:
            child = node[part] = new
        if not isinstance(child, dict):
            raise PathError(".".join(parts[: i + 1]))
        node = child
    node[parts[-1]] = value


def grow_args(part: str, child) -> Optional[dict]:
    """Tune's trial parameters: a factory's missing `args` becomes an empty mapping."""
    return {} if child is None and part == "args" else None


def path_problem(path: str) -> str:
    """Why a path cannot be tuned, or "" when it may be."""
    parts = path.split(".")
    if parts[0] not in TUNABLE_ROOTS:
        return f"only fields under {', '.join(TUNABLE_ROOTS)} can be tuned"
    if parts[0] == "data" and (len(parts) != 2 or parts[1] not in TUNABLE_DATA):
        return f"changes the data or its val split, so trials would not be comparable; of data only {', '.join(TUNABLE_DATA)} may be tuned"
    return ""


def space_problems(spec, *, validate: Callable[[dict], Any], explain: Callable[[ValueError], str]) -> list[str]:
    """Problems of stages.tune.space against the rest of the spec: each path must name a field
    the schema accepts every value of the dimension for (both ends of a range, every choice).
    `validate(raw)` raises ValueError where the schema refuses; `explain` says why in one line."""
    problems = []
    for path, dim in spec.stages.tune.space.items():
        where = f"stages.tune.space.{path}"
        why = path_problem(path)
        if why:
            problems.append(f"{where}: {why}")
            continue
        base = spec.dump()
        if read_path(base, path) is MISSING and not _free_mapping(base, path):
            problems.append(f"{where}: no such field in the spec")
            continue
        for value in list(dim.choice) if dim.kind == "choice" else list(getattr(dim, dim.kind)):
            raw = spec.dump()
            try:
                set_path(raw, path.split("."), value, grow=grow_args)
                validate(raw)
            except ValueError as exc:
                problems.append(f"{where}: {value!r} is refused ({explain(exc)})")
                break
    return problems


def _free_mapping(raw: dict, path: str) -> bool:
    """A user factory's args (model.args, loss.args, ...) is a free mapping: any key may be new."""
    parent, _, _ = path.rpartition(".")
    section, _, last = parent.rpartition(".")
    return last == "args" and read_path(raw, f"{section}.factory") not in (MISSING, None)
