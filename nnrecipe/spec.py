"""The experiment spec: one pydantic schema, YAML loading, and `key=value` overrides.

The schema's defaults *are* the embedded default experiment (`configs/digits.yaml`):
`nnrecipe run` with no `--config` runs `Spec()`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Sequence, Union

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from nnrecipe.credentials import redact_tree
from nnrecipe.errors import SpecError
from nnrecipe.spec_paths import PathError, grow_args, set_path, space_problems
from nnrecipe.spec_sections import (
    DATA_SOURCES,
    MODEL_ARCHS,
    SEQUENCE_ARCHS,
    DataSpec,
    DigitsData,
    LossSpec,
    MlpModel,
    ModelSpec,
    OptimSpec,
    Section,
    TrainSpec,
)
from nnrecipe.spec_stages import StagesSpec

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"  # one path component: a run name cannot escape output_dir
DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:\d+)?)$"
CLASSIFICATION_ONLY_SOURCES = ("digits", "mnist1d", "image-folder", "torchvision")


class Spec(Section):
    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=100)] = "digits-mlp"
    seed: int = 0
    device: Annotated[str, Field(pattern=DEVICE_PATTERN)] = "auto"
    # Processes that train a stage's independent experiments side by side (--workers): one
    # device each (cuda:i round-robin), or on a CPU an equal share of the cores; "auto": one
    # per GPU, else one per core. 1 trains them one after another in this process.
    workers: Union[int, Literal["auto"]] = 1
    # Where those experiments run (--executor): local (processes on this machine), ray (a Ray
    # started here for the run) or ray://HOST:PORT (a Ray cluster's client address; every task
    # asks for one GPU where there are GPUs, else one core, and the cluster decides how many run).
    executor: Annotated[str, Field(pattern=r"^(local|ray|ray://[^\s/]+)$")] = "local"
    # Train a stage's experiments that share an architecture (squeeze's members, label-error
    # folds, data-scaling subsets, a knob's seeds) as one vmapped model: the same numbers, faster
    # for small models. Their dropout masks differ from training each alone; false: one at a time.
    batch_models: bool = True

    @field_validator("workers", mode="before")
    @classmethod
    def _worker_count(cls, value):
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 256):
            return value
        raise ValueError(f"{value!r} is not a worker count: give 1 to 256 processes, or auto")

    output_dir: str = "runs"  # the run directory is <output_dir>/<name>, relative to the working directory
    task: Literal["classification", "multi-label", "regression", "language-model", "segmentation"] = "classification"
    data: DataSpec = DigitsData()
    model: ModelSpec = MlpModel()
    loss: LossSpec = LossSpec()
    optim: OptimSpec = OptimSpec()
    train: TrainSpec = TrainSpec()
    stages: StagesSpec = StagesSpec()

    @model_validator(mode="after")
    def _task_fits(self):
        lm = self.task == "language-model"
        if lm and self.data.source not in ("text", "python"):
            raise ValueError(
                f"task: language-model needs token sequences (data.source: text or python); got {self.data.source}"
            )
        if not lm and self.data.source == "text":
            raise ValueError(f"data.source: text makes next-token examples; set task: language-model (got {self.task})")
        models = [
            ("model", self.model),
            ("stages.overfit.model", self.stages.overfit.model),
            ("stages.squeeze.distill.model", self.stages.squeeze.distill.model),
        ]
        models += [(f"stages.overfit.ladder.{i}", m) for i, m in enumerate(self.stages.overfit.ladder)]
        for where, m in models:
            if m is None:
                continue
            if lm and m.arch not in SEQUENCE_ARCHS + ("python",):
                raise ValueError(
                    f"{where}.arch: {m.arch} is not a sequence model; task language-model takes "
                    f"{', '.join(SEQUENCE_ARCHS)} or python"
                )
            if not lm and m.arch in SEQUENCE_ARCHS:
                raise ValueError(f"{where}.arch: {m.arch} is a next-token model; set task: language-model")
        if lm and self.data.num_classes is not None:
            raise ValueError(
                "data.num_classes: a language model's outputs are its vocabulary (data.args.level or "
                "your plugin's vocab)"
            )
        if lm and any(a.name for a in self.data.augment):
            raise ValueError(
                "data.augment: the built-in augmentations transform images and signals, not token windows; "
                "give a factory"
            )
        if lm and self.stages.regularize.seeds < 2:
            raise ValueError(
                "stages.regularize.seeds: a language model needs 2 or more (its seeds differ far beyond the "
                "per-window noise; the spread between them is measured before any knob is judged)"
            )
        if lm and self.stages.tune.confirm_seeds == 1:
            raise ValueError(
                "stages.tune.confirm_seeds: a language model needs 2 or more (its seeds differ far beyond "
                "the per-window noise; the spread between them is measured), or null for 3"
            )
        if lm and self.loss.name not in ("auto", "cross_entropy"):
            raise ValueError(f"loss: {self.loss.name} does not fit task language-model (cross_entropy over tokens)")
        from nnrecipe.tasks import get_task  # the task's own rules for the spec (imported here: torch)

        if problem := get_task(self.task).spec_problem(source=self.data.source, loss=self.loss.name):
            raise ValueError(problem)
        if self.task == "regression" and self.data.source in CLASSIFICATION_ONLY_SOURCES:
            raise ValueError(f"task: regression does not fit data.source: {self.data.source}, which has class labels")
        if self.task == "regression" and self.loss.name in ("cross_entropy", "nll", "bce"):
            raise ValueError(f"loss: {self.loss.name} is a classification loss; task is regression")
        if self.task == "classification" and getattr(self.data.args, "standardize_targets", False):
            raise ValueError("data.args.standardize_targets is for regression targets; task is classification")
        if self.task == "classification" and self.loss.name in ("mse", "huber"):
            raise ValueError(f"loss: {self.loss.name} is a regression loss; task is classification")
        return self

    @model_validator(mode="after")
    def _tune_space_fits(self, info: ValidationInfo):
        # Every path of stages.tune.space must name a field that accepts each of its values.
        if not (info.context or {}).get("skip_space_check"):
            problems = space_problems(self, validate=_validate_raw_space, explain=_explain)
            if problems:
                raise ValueError("; ".join(problems))
        return self

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        """The spec as recorded (run directory, `nnrecipe show-spec`): URLs without their passwords."""
        return yaml.safe_dump(redact_tree(self.dump()), sort_keys=False)


# ----------------------------------------------------------------------------- loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML silently keeps the last of two equal keys; a spec must not."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(f"{path}: spec file not found") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read the spec ({exc.__class__.__name__})") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"{where}: malformed YAML: {problem}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: the spec must be a YAML mapping, got {type(raw).__name__}")
    return raw


def parse_override(text: str) -> tuple[list[str], Any]:
    """`optim.lr=1e-3` -> (["optim", "lr"], 0.001). The value is parsed as YAML."""
    key, sep, value = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not key.strip() or any(not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", p) for p in parts):
        raise SpecError(f"override {text!r}: expected key=value with a dotted key, e.g. optim.lr=1e-3")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value  # not YAML (e.g. "a: b: c"): keep the raw string; the schema decides
    return parts, parsed


def _grow_override(part: str, child) -> Optional[dict]:
    """A missing section becomes a mapping; a shorthand like `loss: mse` becomes {name: mse} so
    that `loss.args.x=1` can extend it."""
    if child is None:
        return {}
    return {"name": child} if isinstance(child, str) and part in ("loss", "schedule") else None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        parts, value = parse_override(text)
        try:
            set_path(raw, parts, value, grow=_grow_override)
        except PathError as exc:
            raise SpecError(f"override {text!r}: {exc.prefix} is not a mapping") from None
    return raw


def apply_params(spec: Spec, params: dict[str, Any]) -> Spec:
    """The spec with each dotted path set to its value (a tune trial's parameters), validated."""
    raw = spec.dump()
    for path, value in params.items():
        set_path(raw, path.split("."), value, grow=grow_args)
    return Spec.model_validate(raw)


def _validate_raw_space(raw: dict) -> None:
    Spec.model_validate(raw, context={"skip_space_check": True})  # the space itself is being checked


def _explain(exc: ValueError) -> str:
    lines = format_validation_error(exc) if isinstance(exc, ValidationError) else [str(exc)]
    return lines[0] if lines else str(exc)


def _format_loc(loc: tuple[Any, ...]) -> str:
    # Tagged unions insert the tag into the path (data.csv.args.path); users wrote data.args.path.
    parts = [str(p) for p in loc]
    kept = [
        p
        for i, p in enumerate(parts)
        if not (
            i > 0 and p in DATA_SOURCES + MODEL_ARCHS and (parts[i - 1] in ("data", "model") or parts[i - 1].isdigit())
        )
    ]
    return ".".join(kept) or "spec"


def format_validation_error(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors(include_url=False):
        loc = _format_loc(tuple(err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "union_tag_invalid":
            field = "source" if loc.split(".")[-1] == "data" else "arch"
            loc = f"{loc}.{field}"
            msg = f"must be one of {', '.join(err['ctx']['expected_tags'].replace(chr(39), '').split(', '))}; got {err['ctx']['tag']!r}"
        elif err["type"] == "union_tag_not_found":
            continue  # the default source/arch applies when the key is absent; not reached in practice
        lines.append(f"{loc}: {msg}" if err["loc"] else msg)  # a cross-field rule names its fields itself
    return lines


def build_spec(raw: dict[str, Any], *, where: str = "spec") -> Spec:
    try:
        return Spec.model_validate(raw)
    except ValidationError as exc:
        lines = format_validation_error(exc)
        first = lines[0] if lines else str(exc)
        more = f" (and {len(lines) - 1} more; run `nnrecipe validate`)" if len(lines) > 1 else ""
        raise SpecError(f"{where}: {first}{more}", errors=lines) from None


def load_spec(path: Optional[Path], overrides: Sequence[str] = ()) -> tuple[Spec, Path]:
    """Load, override and validate a spec; return it with the folder plugin paths resolve against."""
    if path is None:
        raw: dict[str, Any] = {}
        base = Path.cwd()
        where = "default spec"
    else:
        path = Path(path)
        raw = read_yaml(path)
        base = path.resolve().parent
        where = str(path)
        if "name" not in raw:
            # A spec without a name is named after its file: exp.yaml runs in runs/exp.
            raw["name"] = re.sub(r"[^A-Za-z0-9._-]", "-", path.stem).lstrip("._-") or "experiment"
    raw = apply_overrides(raw, list(overrides))
    # The tagged unions need their tag; when a section omits it, the schema's default applies.
    for section, tag in (("data", "source"), ("model", "arch")):
        if isinstance(raw.get(section), dict) and tag not in raw[section]:
            raw[section][tag] = getattr(Spec.model_fields[section].default, tag)
    return build_spec(raw, where=where), base
