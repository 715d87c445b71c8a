"""A model's output of any structure, and the one prediction tensor the checks read from it.

Library models return more than logits: a tuple `(logits, aux)`, a dict (torchvision's
segmentation models: {"out", "aux"}), an object with `logits` (Hugging Face's ModelOutput, an
OrderedDict). The prediction is chosen by the conventions of those libraries, or by the
spec's `model.output` (a key, an attribute name or an index):

- a tensor is the prediction;
- a tuple or list: its first element;
- a mapping or an object: its `logits`, else its `out`.

The model's guard (plugins.guard_module) makes the choice at every forward, so the engine and
every probe see one tensor. A user loss still gets the whole output: the prediction carries it
(`whole`), and losses.make_loss hands it over.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional, Union

import torch

OutputKey = Optional[Union[int, str]]
CONVENTIONAL = ("logits", "out")  # Hugging Face, torchvision segmentation
_WHOLE = "_nnrecipe_whole_output"


def prediction(raw: Any, key: OutputKey, *, field: str, ref: str) -> torch.Tensor:
    """The prediction tensor of one forward's output, carrying the whole output when it is
    more than the tensor; a PluginError (one line) when there is none to take."""
    if isinstance(raw, torch.Tensor):
        return raw
    chosen = _choose(raw, key, field=field, ref=ref)
    if not isinstance(chosen, torch.Tensor):
        where = f"[{key!r}]" if key is not None else ""
        raise _error(
            field,
            f"{ref}: forward returned {_describe(raw)} whose prediction{where} is a "
            f"{type(chosen).__name__}, not a tensor; name the tensor with model.output",
        )
    pred = chosen.view_as(chosen)  # a new tensor object: carrying `raw` makes no reference cycle through it
    setattr(pred, _WHOLE, raw)
    return pred


def whole(out: Any) -> Any:
    """What the model returned, for a user loss: the whole output behind a prediction."""
    return getattr(out, _WHOLE, out)


def _choose(raw: Any, key: OutputKey, *, field: str, ref: str) -> Any:
    if key is not None:
        try:
            if isinstance(raw, Mapping):
                return raw[key]
            if isinstance(raw, (tuple, list)) and isinstance(key, int):
                return raw[key]
            return getattr(raw, str(key))  # an object's attribute, a namedtuple's field
        except (KeyError, IndexError, AttributeError, ValueError, TypeError):
            raise _error(
                field, f"{ref}: forward returned {_describe(raw)}; model.output {key!r} is not in it"
            ) from None
    if isinstance(raw, (tuple, list)) and raw:
        return raw[0]
    for name in CONVENTIONAL:
        found = raw.get(name) if isinstance(raw, Mapping) else getattr(raw, name, None)
        if found is not None:
            return found
    raise _error(
        field,
        f"{ref}: forward returned {_describe(raw)} with no {' or '.join(CONVENTIONAL)}; name the "
        "prediction with model.output (a key, attribute or index)",
    )


def _describe(raw: Any) -> str:
    if isinstance(raw, Mapping):
        keys = ", ".join(map(str, list(raw)[:8]))
        return f"a {type(raw).__name__} with keys {keys}" if keys else f"an empty {type(raw).__name__}"
    if isinstance(raw, (tuple, list)):
        return f"a {type(raw).__name__} of {len(raw)}" + (
            f" ({', '.join(type(r).__name__ for r in raw[:4])})" if raw else ""
        )
    return f"a {type(raw).__name__}"


def _error(field: str, text: str):
    from nnrecipe.errors import PluginError

    return PluginError(f"{field}: {text}")
