"""The tasks nnrecipe knows, one object each (see tasks/base.py for what a task owns).

`get_task(spec.task)` is how the rest of the package turns the spec's name into the object;
from there on, everything asks the object (`data.task`, `m.task`) and no code outside this
package compares task names (tests/test_tasks.py keeps it so).
"""

from __future__ import annotations

from nnrecipe.tasks.base import Task, TrainGoal
from nnrecipe.tasks.classification import CLASSIFICATION
from nnrecipe.tasks.language_model import LANGUAGE_MODEL
from nnrecipe.tasks.multi_label import MULTI_LABEL
from nnrecipe.tasks.regression import REGRESSION
from nnrecipe.tasks.segmentation import SEGMENTATION

TASKS: dict[str, Task] = {t.name: t for t in (CLASSIFICATION, MULTI_LABEL, REGRESSION, LANGUAGE_MODEL, SEGMENTATION)}


def get_task(name: str) -> Task:
    """The task object of a spec's `task:` (the schema admits only these names)."""
    return TASKS[name]


__all__ = [
    "CLASSIFICATION",
    "LANGUAGE_MODEL",
    "MULTI_LABEL",
    "REGRESSION",
    "SEGMENTATION",
    "TASKS",
    "Task",
    "TrainGoal",
    "get_task",
]
