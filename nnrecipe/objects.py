"""Objects handed to `nnrecipe.run()` (a model, a dataset, a loss already in memory), as the
factories of the plugin contract: the spec names them `nnrecipe.objects:<name>`, and every
part of nnrecipe that builds a model or loads data goes through the one path it already has.

They live here for the duration of the call only (`registered`): a spec.yaml that names one
records what ran, but runs again only from a file.py:function (another process never saw the
object), and a notebook that runs the recipe many times keeps no copies of old models.

A module is deep-copied for every experiment, so each one starts from the weights the user
handed in and none changes them. Experiments at another seed than the run's (the seed spread
of regularize and tune, squeeze's ensemble members) need fresh weights: the copy is
re-initialised by every submodule's `reset_parameters()` under that experiment's seed, as a
factory would draw them. Parameters no `reset_parameters()` reaches keep the user's values.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import itertools
import re
from collections.abc import Mapping
from typing import Any, Callable, Iterator

MODULE = "nnrecipe.objects"
_OBJECTS: dict[str, Callable[..., Any]] = {}
_COUNTER = itertools.count(1)


def __getattr__(name: str) -> Callable[..., Any]:  # load_factory's getattr(module, name)
    try:
        return _OBJECTS[name]
    except KeyError:
        raise AttributeError(name) from None


def gone_message(field: str, ref: str) -> str:
    """What a spec naming an object no longer here gets (a recorded spec.yaml run again)."""
    return (
        f"{field}: {ref} was an object handed to nnrecipe.run() in another Python session; "
        "to run this spec again, name a file.py:function instead"
    )


@contextlib.contextmanager
def registered(**objects: Callable[..., Any]) -> Iterator[dict[str, str]]:
    """Register factories under fresh names for the block; yields {keyword: 'nnrecipe.objects:name'}."""
    refs = {}
    for key, fn in objects.items():
        label = re.sub(r"[^A-Za-z0-9_]", "_", getattr(fn, "__name__", key))[:40] or key
        name = f"{key}_{label}_{next(_COUNTER)}"
        _OBJECTS[name] = fn
        refs[key] = f"{MODULE}:{name}"
    try:
        yield refs
    finally:
        for ref in refs.values():
            _OBJECTS.pop(ref.rpartition(":")[2], None)


# ----------------------------------------------------------------------------- models


class ModuleCopies:
    """The factory for a module handed in: a deep copy per call; re-initialised unless the
    experiment runs at the run's seed (torch's generator is seeded by the experiment:
    seed_everything comes before every model is built)."""

    def __init__(self, module):
        self.module = module
        self.run_seed: int | None = None  # set once the spec is resolved
        self.__name__ = type(module).__name__

    def __call__(self, input_shape, num_outputs):
        import torch

        out = copy.deepcopy(self.module)
        if torch.initial_seed() != self.run_seed:
            for sub in out.modules():
                reset = getattr(sub, "reset_parameters", None)
                if callable(reset):
                    reset()
        return out


def model_factory(model: Any) -> Callable[..., Any]:
    """The model factory for what the user handed in: a module (copied per experiment) or a
    factory, either of the contract (input_shape, num_outputs, **args) or of no arguments."""
    from torch import nn

    if isinstance(model, nn.Module):
        return ModuleCopies(model)
    if not callable(model):
        from nnrecipe.errors import PluginError

        raise PluginError(
            f"model: got {type(model).__name__}; expected a torch.nn.Module or a function that builds one"
        )
    if _takes_no_arguments(model):

        @functools.wraps(model)
        def no_arguments(input_shape, num_outputs):
            return model()

        del no_arguments.__wrapped__  # its signature is (input_shape, num_outputs): args are refused
        return no_arguments
    return model


def _takes_no_arguments(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: assume the contract
        return False
    return not any(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


# ----------------------------------------------------------------------------- data and loss


def data_factory(data: Any) -> Callable[[], Mapping[str, Any]]:
    """The data factory for a mapping of splits (each a Dataset, a DataLoader or a pair of
    tensors, as the plugin contract's), or for a function that returns one."""

    def splits():
        out = data() if callable(data) and not isinstance(data, Mapping) else data
        if not isinstance(out, Mapping):
            return out  # the plugin loader names what came instead
        return {k: dataset_of(k, v) for k, v in out.items()}

    splits.__name__ = getattr(data, "__name__", "splits")
    return splits


def dataset_of(key: str, value: Any) -> Any:
    """A DataLoader's Dataset: nnrecipe batches by itself (data.batch_size). A loader whose
    collate_fn is not PyTorch's default would be batched differently here: refused."""
    from torch.utils.data import DataLoader
    from torch.utils.data._utils.collate import default_collate

    if not isinstance(value, DataLoader):
        return value
    if value.collate_fn is not default_collate:
        from nnrecipe.errors import DataError

        raise DataError(
            f"data[{key!r}]: a DataLoader with its own collate_fn; nnrecipe batches the Dataset itself "
            "with the default collate: hand the Dataset, or tensors (X, Y)"
        )
    return value.dataset


def loader_batch_size(data: Any) -> int | None:
    """The batch size of a train DataLoader handed in, so that nnrecipe trains as the user would."""
    from torch.utils.data import DataLoader

    train = data.get("train") if isinstance(data, Mapping) else None
    return train.batch_size if isinstance(train, DataLoader) else None


def loss_factory(loss: Callable[..., Any]) -> Callable[[], Callable[..., Any]]:
    """The loss factory for a loss object (e.g. nn.CrossEntropyLoss()) or function(outputs, targets)."""

    def make():
        return loss

    make.__name__ = getattr(loss, "__name__", type(loss).__name__)
    return make
