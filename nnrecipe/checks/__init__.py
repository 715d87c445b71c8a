"""Rules that judge: (measurements, settings) -> Verdict, pure and unit-tested on synthetic
measurements. A check that does not apply to a task skips with the task's reason."""

from __future__ import annotations

from typing import Optional

from nnrecipe.verdict import Status, Verdict


def not_for_task(stage: str, check: str, task) -> Optional[Verdict]:
    """The skip verdict of `check` when it does not apply to `task` (its `skips`), else None."""
    reason = task.skip_reason(check)
    return Verdict(stage, check, Status.SKIP, message=reason) if reason else None
