"""Where a late stage starts: the best spec an earlier stage wrote to the run directory.

tune starts from regularize/best.yaml; squeeze from tune/best.yaml, else regularize's. A
best.yaml made from other data settings (another source, split or val set) cannot be
compared with this run and is refused with a note; the spec is used instead.
"""

from __future__ import annotations

import json
from typing import Sequence

DATA_KEYS_THAT_MAY_DIFFER = ("augment", "downsample", "batch_size")  # what regularize/tune may change in data


def start_spec(spec, ctx, *, stages: Sequence[str]):
    """(the starting spec, where it came from, a note when a best.yaml was refused)."""
    from nnrecipe.spec import load_spec

    for stage in stages:
        path = ctx.run.stage_dir(stage) / "best.yaml"
        if not path.exists():
            continue
        loaded, _ = load_spec(path)
        if _data_key(loaded) == _data_key(spec) and loaded.task == spec.task:
            keep = {k: getattr(spec, k) for k in ("name", "output_dir", "device", "seed", "stages")}
            return loaded.model_copy(update=keep), ctx.rel(path), ""
        note = f"{ctx.rel(path)} was made from other data settings than this spec; starting from the spec"
        return from_spec(spec), "the spec", note
    return from_spec(spec), "the spec", ""


def from_spec(spec):
    """The spec with the overfit stage's model, when it names one (regularize's reference)."""
    model = spec.stages.overfit.model or spec.model
    return spec.model_copy(update={"model": model})


def _data_key(spec) -> str:
    d = spec.data.model_dump(mode="json", exclude=set(DATA_KEYS_THAT_MAY_DIFFER))
    return json.dumps(d, sort_keys=True)
