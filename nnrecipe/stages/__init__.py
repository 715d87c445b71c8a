"""The six stages of the recipe, in order: a registry (data), not a class hierarchy.

Each stage is one module with `run(spec, ctx) -> StageResult` that reads top to bottom:
set up, measure (probes), judge (checks), draw (pictures), record (summary).
"""

from __future__ import annotations

import dataclasses
import importlib


@dataclasses.dataclass(frozen=True)
class StageInfo:
    name: str  # command and run-directory folder, e.g. "inspect-data"
    key: str  # its settings under `stages:` in the spec, e.g. "inspect_data"
    module: str  # the module with run(spec, ctx)
    recipe: str  # the recipe's own words for the stage
    keep: tuple[str, ...] = ()  # files of the stage folder that survive a re-run (tune's study continues)
    trains_many: bool = False  # trains independent experiments: --workers pays off (the pool starts early)


STAGES: tuple[StageInfo, ...] = (
    StageInfo("inspect-data", "inspect_data", "nnrecipe.stages.inspect_data", "Become one with the data"),
    StageInfo(
        "baseline",
        "baseline",
        "nnrecipe.stages.baseline",
        "Set up the end-to-end training/evaluation skeleton + get dumb baselines",
        trains_many=True,
    ),
    StageInfo("overfit", "overfit", "nnrecipe.stages.overfit", "Overfit: a model large enough to fit the training set"),
    StageInfo(
        "regularize",
        "regularize",
        "nnrecipe.stages.regularize",
        "Regularize: give up some training loss for validation loss",
        trains_many=True,
    ),
    StageInfo(
        "tune",
        "tune",
        "nnrecipe.stages.tune",
        "Tune: random search over hyperparameters",
        keep=("study.journal",),
        trains_many=True,
    ),
    StageInfo(
        "squeeze",
        "squeeze",
        "nnrecipe.stages.squeeze",
        "Squeeze out the juice: ensembles, distillation, leave it training",
        trains_many=True,
    ),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def get_stage(name: str) -> StageInfo:
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(name)


def load_runner(info: StageInfo):
    return importlib.import_module(info.module).run
