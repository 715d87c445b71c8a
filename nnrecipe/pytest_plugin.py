"""A pytest plugin (registered by the package's `pytest11` entry point): the `nnrecipe_recipe`
fixture, nnrecipe.testing.assert_recipe with each test's run directory under its tmp_path.

    def test_baseline(nnrecipe_recipe):
        nnrecipe_recipe(model=make_model, data=load_splits(), stages="baseline")
"""

from __future__ import annotations

from typing import Any, Callable

import pytest


@pytest.fixture
def nnrecipe_recipe(tmp_path) -> Callable[..., Any]:
    from nnrecipe.testing import assert_recipe

    def check(spec: Any = None, **kwargs: Any):
        __tracebackhide__ = True
        kwargs.setdefault("output_dir", tmp_path / "runs")
        return assert_recipe(spec, **kwargs)

    return check
