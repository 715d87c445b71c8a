"""The six stages of the recipe, in order: a registry (data), not a class hierarchy.

Each implemented stage is one module with `run(spec, ctx) -> StageResult`. A stage whose
module is None is not implemented yet: asking for it exits 2 and says so; it never passes.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Optional


@dataclasses.dataclass(frozen=True)
class StageInfo:
    name: str  # command and run-directory folder, e.g. "inspect-data"
    key: str  # its settings under `stages:` in the spec, e.g. "inspect_data"
    module: Optional[str]  # the module with run(spec, ctx); None while not implemented
    recipe: str  # the recipe's own words for the stage
    keep: tuple[str, ...] = ()  # files of the stage folder that survive a re-run (tune's study continues)


STAGES: tuple[StageInfo, ...] = (
    StageInfo("inspect-data", "inspect_data", "nnrecipe.stages.inspect_data", "Become one with the data"),
    StageInfo("baseline", "baseline", "nnrecipe.stages.baseline", "Set up the end-to-end training/evaluation skeleton + get dumb baselines"),
    StageInfo("overfit", "overfit", "nnrecipe.stages.overfit", "Overfit: a model large enough to fit the training set"),
    StageInfo("regularize", "regularize", "nnrecipe.stages.regularize", "Regularize: give up some training loss for validation loss"),
    StageInfo("tune", "tune", "nnrecipe.stages.tune", "Tune: random search over hyperparameters", keep=("study.journal",)),
    StageInfo("squeeze", "squeeze", "nnrecipe.stages.squeeze", "Squeeze out the juice: ensembles, distillation, leave it training"),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def get_stage(name: str) -> StageInfo:
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(name)


def implemented() -> list[StageInfo]:
    return [s for s in STAGES if s.module is not None]


def load_runner(info: StageInfo):
    from nnrecipe.errors import StageNotImplemented

    if info.module is None:
        raise StageNotImplemented(f"stage {info.name}: not implemented yet in this version of nnrecipe (no verdicts, no pass)")
    return importlib.import_module(info.module).run
