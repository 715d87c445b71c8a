"""`nnrecipe validate` beyond the schema: do the files and functions the spec names exist?

Importing a plugin runs its module code, as a run would; calling it is left to the run.
"""

from __future__ import annotations

from pathlib import Path

from nnrecipe.data.common import resolve_path
from nnrecipe.errors import NNRecipeError
from nnrecipe.plugins import load_factory

PATH_FIELDS = {
    "csv": ("path", "val_path", "test_path"),
    "npz": ("path",),
    "image-folder": ("root", "val_root", "test_root"),
}


def check_references(spec, base: Path) -> list[str]:
    problems: list[str] = []
    refs = [
        ("data.factory", spec.data.factory),
        ("model.factory", spec.model.factory),
        ("loss.factory", spec.loss.factory),
        ("optim.schedule.factory", spec.optim.schedule.factory),
    ]
    refs += [(f"data.augment.{i}.factory", a.factory) for i, a in enumerate(spec.data.augment)]
    for field, ref in refs:
        if ref is not None:
            try:
                load_factory(ref, base=base, field=field)
            except NNRecipeError as exc:
                problems.append(str(exc))
    for key in PATH_FIELDS.get(spec.data.source, ()):
        value = getattr(spec.data.args, key)
        if value is not None:
            try:
                resolve_path(value, base, field=f"data.args.{key}")
            except NNRecipeError as exc:
                problems.append(str(exc))
    return problems


def check_one_batch(spec, base: Path) -> list[str]:
    """What a run would meet first, without training: the data loaded, its targets as the task
    trains on them, the model built, one batch through it and through the loss. One line for
    the first problem (later steps need the earlier ones), or none."""
    import torch

    from nnrecipe.data import build_data
    from nnrecipe.losses import make_loss
    from nnrecipe.models import prepare_model
    from nnrecipe.probes.model_probes import first_examples

    try:
        data = build_data(spec, base=base)
        data.task.check_targets(data)
        model = prepare_model(spec, data, base=base)
        x, y = first_examples(data.train, min(spec.data.batch_size, len(data.train)))
        with torch.no_grad():
            loss = make_loss(spec, base=base)(model(x), y)
        if not torch.isfinite(loss):
            return [f"loss: {float(loss)} on the first training batch of the untrained model"]
    except NNRecipeError as exc:
        return [str(exc)]
    return []
