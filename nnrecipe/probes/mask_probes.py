"""Masked inputs: appending padding must not move the prediction.

Hugging Face style batches carry an attention mask beside the token ids: 1 on real tokens, 0 on
padding. A model that reads it gives an example the same prediction however much padding
follows it; a model that does not (the mask never passed on, a mean over every position) moves
with the padding, so its predictions depend on the longest sentence in the batch.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from torch import nn

from nnrecipe import inputs
from nnrecipe.errors import PluginError
from nnrecipe.probes import evaluating

MASK_NAMES = ("attention_mask", "padding_mask", "mask")  # the conventional names of a mask leaf


def mask_leaf(x, named: Optional[str] = None) -> Optional[str]:
    """The name of the mask among structured inputs: the leaf `named` (data.mask), which must be
    one of 0/1 values with a row of positions per example (else DataError, one line); or a leaf
    named as masks are (attention_mask, padding_mask, mask, or ending in _mask) that is."""
    if named is not None:
        from nnrecipe.errors import DataError

        found = dict(inputs.leaves(x)) if inputs.structured(x) else {}
        t = found.get(named)
        if t is None:
            raise DataError(f"data.mask: no input leaf {named!r} (the leaves: {', '.join(found) or 'one tensor'})")
        if t.ndim != 2 or t.is_floating_point() or not bool(((t == 0) | (t == 1)).all()):
            raise DataError(
                f"data.mask: leaf {named!r} is {str(t.dtype).removeprefix('torch.')} {tuple(t.shape[1:])} per "
                "example; a padding mask holds integer 0/1, one per position (N, L)"
            )
        return named
    for name, t in inputs.leaves(x) if inputs.structured(x) else []:
        last = name.rsplit(".", 1)[-1]
        if (last in MASK_NAMES or last.endswith("_mask")) and t.ndim == 2 and not t.is_floating_point():
            if bool(((t == 0) | (t == 1)).all()):
                return name
    return None


@dataclasses.dataclass
class MaskPadding:
    mask: str  # the mask leaf
    padded: list[str]  # the leaves extended with it (the mask's shape: ids, token types)
    how: str  # "appended" (pad positions after each example) or "removed" (trailing padding cut off)
    pad: int  # positions appended or removed
    examples: int
    change: float  # the largest |prediction change| over examples and outputs
    scale: float  # the predictions' spread across examples (mean std per output): the unit of change
    worst: int  # the example that moved most


def _pad_value(t: torch.Tensor, mask: torch.Tensor) -> int:
    """What a leaf holds where the mask is 0 (its padding id), 0 when nothing is padded."""
    under = t[mask == 0]
    return int(torch.mode(under.reshape(-1)).values) if under.numel() else 0


@torch.no_grad()
def mask_padding(model: nn.Module, x, key: str, *, pad: int) -> tuple[Optional[MaskPadding], str]:
    """(the measurement, or None and why not). Eval mode. `pad` padding positions are appended
    to every leaf shaped like the mask; a model that only takes its own length gets the trailing
    `pad` positions of fully padded examples removed instead."""
    leaves = dict(inputs.leaves(x))
    mask = leaves[key]
    n, length = mask.shape
    shaped = [name for name, t in leaves.items() if t.shape[:2] == mask.shape]
    values = {name: (0 if name == key else _pad_value(leaves[name], mask)) for name in shaped}

    def extend(name: str, t: torch.Tensor) -> torch.Tensor:
        if name not in values:
            return t
        tail = torch.full((n, pad, *t.shape[2:]), values[name], dtype=t.dtype, device=t.device)
        return torch.cat([t, tail], dim=1)

    with evaluating(model):
        plain = model(x).float()
        try:
            moved, how, rows = model(inputs.map_named(extend, x)).float(), "appended", torch.arange(n)
        except PluginError:  # a model of one length (a position table of L entries, a flatten)
            rows = torch.nonzero(mask[:, length - pad :].sum(dim=1) == 0).flatten().to("cpu")
            if len(rows) < 2:
                return None, f"the model takes only {length} positions and too few examples end in {pad} padding ones"
            cut = inputs.map_named(lambda name, t: t[:, : length - pad] if name in values else t, x)
            try:
                moved, how = model(inputs.index(cut, rows.to(mask.device))).float(), "removed"
            except PluginError:
                return None, f"the model takes only sequences of {length} positions: padding cannot be added or removed"
            plain = plain[rows.to(plain.device)]
    delta = (moved - plain).abs().reshape(len(plain), -1)
    per_example = delta.amax(dim=1)
    # the unit: how much predictions differ between examples, at least a thousandth of their size
    # (an untrained model may predict almost alike for every example; float32 noise is ~1e-7 of it)
    rows_ = plain.reshape(len(plain), -1)
    spread = rows_.std(dim=0).mean() if len(plain) > 1 else torch.zeros(())
    spread = torch.maximum(spread, 1e-3 * rows_.square().mean().sqrt())
    return (
        MaskPadding(
            mask=key,
            padded=shaped,
            how=how,
            pad=pad,
            examples=len(plain),
            change=float(per_example.max()),
            scale=float(spread),
            worst=int(rows[int(per_example.argmax())]),
        ),
        "",
    )
