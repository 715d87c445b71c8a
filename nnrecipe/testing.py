"""The recipe in the user's own test suite: a stage that fails fails the test, with each failing
verdict's message and what to do.

    from nnrecipe.testing import assert_recipe

    def test_my_model_passes_the_baseline_stage(tmp_path):
        assert_recipe(model=make_model, data=load_splits(), stages="baseline", output_dir=tmp_path)

With pytest, the `nnrecipe_recipe` fixture (nnrecipe.pytest_plugin) does the same with the run
directory under the test's tmp_path. No pytest import here: any test runner can use it.
"""

from __future__ import annotations

from typing import Any

from nnrecipe.result import RecipeResult
from nnrecipe.verdict import Status, Verdict


class RecipeFailed(AssertionError):
    """The recipe's verdicts did not hold: its message lists them, one per line."""

    def __init__(self, result: RecipeResult, bad: list[Verdict], *, strict: bool):
        self.result, self.verdicts = result, bad
        what = "fail or warn" if strict else "fail"
        lines = [
            f"nnrecipe: {len(bad)} check(s) {what} in {', '.join(r.stage for r in result.stages)} "
            f"(run directory {result.run_dir}; report.html there shows the pictures)"
        ]
        for v in bad:
            lines.append(f"  {v.stage}/{v.check}: {v.status.value}: {v.message}")
            if v.hint:
                lines.append(f"      what to do: {v.hint}")
        super().__init__("\n".join(lines))


def assert_recipe(spec: Any = None, *, stages: Any = "baseline", strict: bool = False, **kwargs: Any) -> RecipeResult:
    """Run `stages` (default: baseline) as nnrecipe.run(spec, stages=..., **kwargs) does, quietly,
    and raise RecipeFailed listing every fail (with strict=True, every warn too). Returns the
    result when the verdicts hold. Wrong input raises the nnrecipe error, as the CLI's exit 2."""
    __tracebackhide__ = True  # pytest shows the assertion, not this frame
    from nnrecipe.api import run

    kwargs.setdefault("quiet", True)
    result = run(spec, stages=stages, **kwargs)
    bad_status = {Status.FAIL, Status.WARN} if strict else {Status.FAIL}
    bad = [v for v in result.verdicts if v.status in bad_status]
    if bad:
        raise RecipeFailed(result, bad, strict=strict)
    return result
