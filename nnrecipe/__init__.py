"""nnrecipe: Karpathy's recipe for training neural networks, as experiments that say pass / warn / fail.

From Python (a notebook, a script, a test):

    import nnrecipe
    result = nnrecipe.run(model=net, data={"train": (X, y), "val": (Xv, yv)}, stages="baseline")
    assert result.ok, result.failed

`nnrecipe.run` and one function per stage (`nnrecipe.baseline(...)`, ...) are in nnrecipe.api;
`nnrecipe.testing.assert_recipe` fails a test with the failing verdicts. Imported on first use,
so that `nnrecipe --help` does not pay for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = ("run", "inspect_data", "baseline", "overfit", "regularize", "tune", "squeeze")
__all__ = [
    "run",
    "inspect_data",
    "baseline",
    "overfit",
    "regularize",
    "tune",
    "squeeze",
    "RecipeResult",
    "Spec",
    "NNRecipeError",
    "__version__",
]

if TYPE_CHECKING:
    from nnrecipe.api import baseline, inspect_data, overfit, regularize, run, squeeze, tune
    from nnrecipe.errors import NNRecipeError
    from nnrecipe.result import RecipeResult
    from nnrecipe.spec import Spec


def __getattr__(name: str) -> Any:
    import importlib

    where = {
        **dict.fromkeys(_API, "nnrecipe.api"),
        "RecipeResult": "nnrecipe.result",
        "Spec": "nnrecipe.spec",
        "NNRecipeError": "nnrecipe.errors",
    }.get(name)
    if where is None:
        raise AttributeError(f"module 'nnrecipe' has no attribute {name!r}")
    return getattr(importlib.import_module(where), name)
