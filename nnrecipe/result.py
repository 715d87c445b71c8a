"""What `nnrecipe.run()` returns: the verdicts of the stages it ran, where they are on disk,
and the questions people ask of them (did anything fail? what exactly?). In a notebook it
renders itself: the status table, every warn and fail with what to do, and the pictures, as
report.html shows them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Optional

from nnrecipe.stages.base import StageResult
from nnrecipe.verdict import Status, Verdict, exit_code


@dataclasses.dataclass(frozen=True)
class RecipeResult:
    name: str  # the spec's name
    run_dir: Path  # <output_dir>/<name>: verdicts.json, report.html, each stage's folder
    stages: tuple[StageResult, ...]  # in the order they ran (a stage after a fail did not run)

    @property
    def verdicts(self) -> list[Verdict]:
        return [v for r in self.stages for v in r.verdicts]

    @property
    def failed(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.status is Status.FAIL]

    @property
    def warned(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.status is Status.WARN]

    @property
    def by_stage(self) -> dict[str, list[Verdict]]:
        return {r.stage: list(r.verdicts) for r in self.stages}

    @property
    def ok(self) -> bool:
        """No fail (warns allowed): the CLI's exit code 0."""
        return not self.failed

    def exit_code(self, *, strict: bool = False) -> int:
        """The CLI's exit code for these verdicts: 1 on a fail (strict: on a warn too), else 0."""
        return exit_code(self.verdicts, strict=strict)

    def verdict(self, check: str, *, stage: Optional[str] = None) -> Verdict:
        """The verdict of one check, e.g. result.verdict("overfit-one-batch")."""
        found = [v for v in self.verdicts if v.check == check and stage in (None, v.stage)]
        if len(found) != 1:
            have = sorted({v.check for v in self.verdicts})
            raise KeyError(
                f"{check!r}: {len(found)} verdicts{'' if stage is None else f' in {stage}'}; checks: {', '.join(have)}"
            )
        return found[0]

    def summary(self, stage: str) -> dict[str, Any]:
        """A stage's summary.json (the numbers behind its verdicts)."""
        return json.loads((self.run_dir / stage / "summary.json").read_text())

    def counts(self) -> dict[str, int]:
        return {s.value: sum(v.status is s for v in self.verdicts) for s in Status}

    def __repr__(self) -> str:
        counts = " · ".join(f"{n} {s}" for s, n in self.counts().items())
        ran = ", ".join(r.stage for r in self.stages) or "no stage"
        return f"<RecipeResult {self.name}: {ran}: {counts}; {self.run_dir}>"

    def _repr_html_(self) -> str:
        from nnrecipe import report
        from nnrecipe.stages import STAGE_NAMES

        return report.fragment(self.run_dir, self.verdicts, STAGE_NAMES)
