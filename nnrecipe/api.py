"""nnrecipe from Python: the recipe on a spec file, a dict, or a model and data already in memory.

    import nnrecipe
    result = nnrecipe.run(model=net, data={"train": (X, y), "val": (Xv, yv)}, stages="baseline")
    result.ok, result.failed       # in a notebook, `result` shows the report

Every entry point goes through `run`: the command line (nnrecipe.cli) is a thin layer over it,
so both write the same run directory and verdicts. Errors in the user's spec, data or code
raise a typed nnrecipe.errors exception whose message is the line the CLI prints; nothing here
exits the interpreter.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from rich.console import Console

from nnrecipe.errors import NNRecipeError, SpecError
from nnrecipe.result import RecipeResult
from nnrecipe.spec import Spec, apply_overrides, build_spec, load_spec
from nnrecipe.stages import STAGE_NAMES

SpecLike = Union[str, Path, Mapping[str, Any], Spec, None]
Overrides = Union[Mapping[str, Any], Sequence[str], None]


def run(
    spec: SpecLike = None,
    *,
    model: Any = None,
    data: Any = None,
    loss: Any = None,
    stages: Union[str, Sequence[str], None] = None,
    first: Optional[str] = None,
    last: Optional[str] = None,
    overrides: Overrides = None,
    name: Optional[str] = None,
    task: Optional[str] = None,
    device: Optional[str] = None,
    workers: Union[int, str, None] = None,
    executor: Optional[str] = None,
    output_dir: Union[str, Path, None] = None,
    keep_going: bool = False,
    resume: bool = False,
    lr_range: bool = False,
    trained: Union[str, Path, None] = None,
    quiet: Optional[bool] = None,
    console: Optional[Console] = None,
) -> RecipeResult:
    """Run stages of the recipe and return their verdicts.

    spec: a YAML path, a dict of the same fields, a Spec, or None (the embedded digits
        experiment, or only what `model`/`data` replace).
    model: an nn.Module (deep-copied per experiment: each starts from these weights; experiments
        at other seeds re-initialise the copy with its modules' reset_parameters()), or a
        function that builds one, (input_shape, num_outputs, **model.args) or of no arguments.
    data: {"train": ..., "val": ..., "test"?: ..., "classes"?: [...]}, each split a Dataset, a
        DataLoader (its dataset and batch size are used) or a pair of tensors (X, Y); or a
        function returning that mapping.
    loss: a loss object or function(outputs, targets), used as loss.factory would be.
    stages: one stage name or several; default every stage from `first` to `last` (the CLI's
        --from/--to), stopping after a stage with a fail unless `keep_going`.
    overrides: {"optim.lr": 1e-3, ...} or ["optim.lr=1e-3", ...], applied after `spec`;
        name, task, device and output_dir are shorthands for the same.
    workers: processes that train a stage's independent experiments side by side (the CLI's
        --workers; an int or "auto"); objects handed in as model/data/loss need 1.
    executor: where they run: "local", "ray" or "ray://HOST:PORT" (the CLI's --executor).
    resume, lr_range, trained: the CLI's --resume, --lr-range and inspect-data's --model.
    quiet: print nothing but progress (default: quiet in a notebook, where the result renders
        itself; the verdict tables otherwise). console: where to print (default stdout).
    """
    from nnrecipe import objects
    from nnrecipe.recipe import run_stages

    names = stage_range(stages, first=first, last=last)
    extra = spec_overrides(overrides, name=name, task=task, device=device, output_dir=output_dir)
    for key, value in (("workers", workers), ("executor", executor)):
        if value is not None:
            extra.append(f"{key}={json.dumps(value)}")
    made = {key: value for key, value in (("model", model), ("data", data), ("loss", loss)) if value is not None}
    shown = console or Console(highlight=False)
    quiet = shown.is_jupyter if quiet is None else quiet
    factories = _factories(made)
    with objects.registered(**factories) as refs:
        resolved, base, path = resolve_spec(
            spec, [*_object_overrides(refs, made, extra), *extra], default_name=None if name else _default_name(made)
        )
        _refuse_other_processes(resolved, refs)
        if "model" in factories and isinstance(factories["model"], objects.ModuleCopies):
            factories["model"].run_seed = resolved.seed  # experiments at this seed keep the module's weights
        results = run_stages(
            spec=resolved,
            base=base,
            spec_path=path,
            stages=names,
            console=Console(quiet=True) if quiet else shown,
            progress_console=shown,
            options={"resume": resume, "lr_range": lr_range, "model": str(trained) if trained else None},
            stop_on_fail=not keep_going,
            show_tables=not quiet,
        )
    from nnrecipe.rundir import RunDir

    return RecipeResult(
        name=resolved.name, run_dir=RunDir.of(resolved.output_dir, resolved.name).root, stages=tuple(results)
    )


def stage_range(
    stages: Union[str, Sequence[str], None] = None,
    *,
    first: Optional[str] = None,
    last: Optional[str] = None,
    flags: tuple[str, str] = ("first", "last"),
) -> list[str]:
    """The stages to run, in the recipe's order: those named, or from `first` to `last` (whose
    names in messages are `flags`: the CLI's --from and --to)."""
    for flag, value in zip(flags, (first, last)):
        if value is not None and value not in STAGE_NAMES:
            raise NNRecipeError(f"{flag}: unknown stage {value!r}; one of {', '.join(STAGE_NAMES)}")
    if stages is not None:
        if first is not None or last is not None:
            raise NNRecipeError("stages: give the stages by name or by first/last, not both")
        named = [stages] if isinstance(stages, str) else list(stages)
        unknown = [s for s in named if s not in STAGE_NAMES]
        if unknown or not named:
            raise NNRecipeError(
                f"stages: unknown stage {', '.join(map(repr, unknown)) or '(none given)'}; "
                f"one of {', '.join(STAGE_NAMES)}"
            )
        return [s for s in STAGE_NAMES if s in named]
    lo = STAGE_NAMES.index(first) if first else 0
    hi = STAGE_NAMES.index(last) if last else len(STAGE_NAMES) - 1
    if lo > hi:
        raise NNRecipeError(
            f"{flags[0]} {first} comes after {flags[1]} {last} in the recipe ({' → '.join(STAGE_NAMES)})"
        )
    return list(STAGE_NAMES[lo : hi + 1])


def resolve_spec(
    spec: SpecLike, overrides: Sequence[str] = (), *, default_name: Optional[str] = None
) -> tuple[Spec, Path, Optional[Path]]:
    """The spec as it will run, the folder its relative paths resolve against, and its file."""
    if spec is None or isinstance(spec, (str, Path)):
        path = Path(spec) if spec is not None else None
        name = [f"name={default_name}"] if default_name and path is None else []
        resolved, base = load_spec(path, [*name, *overrides])
        return resolved, base, path
    if isinstance(spec, Spec):
        raw = spec.dump()
    elif isinstance(spec, Mapping):
        raw = json.loads(json.dumps(dict(spec), default=str))  # a deep copy of plain values: the caller's dict stays
        if default_name and "name" not in raw:
            raw["name"] = default_name
    else:
        raise SpecError(f"spec: got {type(spec).__name__}; expected a YAML path, a dict or an nnrecipe Spec")
    for section, tag in (("data", "source"), ("model", "arch")):
        if isinstance(raw.get(section), dict) and tag not in raw[section]:
            raw[section][tag] = getattr(Spec.model_fields[section].default, tag)
    return build_spec(apply_overrides(raw, list(overrides)), where="spec"), Path.cwd(), None


# ----------------------------------------------------------------------------- objects in memory


def spec_overrides(overrides: Overrides = None, **fields: Union[str, Path, None]) -> list[str]:
    """`overrides` as the CLI's key=value strings, then each top-level field given (name, task,
    device, output_dir): what resolve_spec applies after the spec."""
    if overrides is None:
        out = []
    elif isinstance(overrides, Mapping):
        # JSON is YAML: each value reaches the schema as the type it has here
        out = [f"{key}={json.dumps(value, default=str)}" for key, value in overrides.items()]
    else:
        out = [overrides] if isinstance(overrides, str) else [str(o) for o in overrides]
    return out + [f"{key}={json.dumps(str(value))}" for key, value in fields.items() if value is not None]


def _factories(made: dict[str, Any]) -> dict[str, Any]:
    """Each object handed in as the factory the plugin contract calls."""
    from nnrecipe import objects

    out = {}
    if "model" in made:
        out["model"] = objects.model_factory(made["model"])
    if "data" in made:
        out["data"] = objects.data_factory(made["data"])
    if "loss" in made:
        out["loss"] = objects.loss_factory(made["loss"])
    return out


def _object_overrides(refs: dict[str, str], made: dict[str, Any], extra: list[str]) -> list[str]:
    """The spec's sections pointed at the registered objects (before the user's overrides): the
    model and loss sections replaced, the data section's source and args (its batch size,
    val_fraction, augment... stay)."""
    from nnrecipe import objects

    out = []
    if "model" in refs:
        out.append("model=" + json.dumps({"arch": "python", "factory": refs["model"]}))
    if "data" in refs:
        out += ["data.source=python", f"data.factory={refs['data']}", "data.args={}"]
        size = objects.loader_batch_size(made["data"])
        if size is not None and not any(e.startswith("data.batch_size=") for e in extra):
            out.append(f"data.batch_size={size}")
    if "loss" in refs:
        out.append("loss=" + json.dumps({"factory": refs["loss"]}))
    return out


def _default_name(made: dict[str, Any]) -> Optional[str]:
    """A run directory named after the model handed in (its class or function), not digits-mlp."""
    model = made.get("model")
    if model is None:
        return "experiment" if made else None
    label = getattr(model, "__name__", None) or type(model).__name__
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-._").lower()
    return slug or "experiment"


def _refuse_other_processes(spec: Spec, refs: dict[str, str]) -> None:
    settings = (("workers", spec.workers), ("stages.tune.workers", spec.stages.tune.workers))
    for field, value in (*settings, ("executor", spec.executor)):
        if refs and value not in (None, 1, "local"):
            raise SpecError(
                f"{field}: {value} processes cannot see the objects handed to nnrecipe.run(); "
                "use workers 1, or name file.py:function factories in a spec file"
            )


# ----------------------------------------------------------------------------- one function per stage


def _one_stage(stage: str):
    import inspect

    def one(spec: SpecLike = None, **kwargs: Any) -> RecipeResult:
        return run(spec, stages=stage, **kwargs)

    one.__name__ = one.__qualname__ = stage.replace("-", "_")
    one.__doc__ = f"The {stage} stage alone: nnrecipe.run(spec, stages={stage!r}, ...); the same keywords."
    params = [p for p in inspect.signature(run).parameters.values() if p.name not in ("stages", "first", "last")]
    one.__signature__ = inspect.signature(run).replace(parameters=params)  # type: ignore[attr-defined]
    return one


inspect_data = _one_stage("inspect-data")
baseline = _one_stage("baseline")
overfit = _one_stage("overfit")
regularize = _one_stage("regularize")
tune = _one_stage("tune")
squeeze = _one_stage("squeeze")
