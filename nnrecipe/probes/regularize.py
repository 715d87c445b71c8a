"""The regularize stage's experiments: each knob is one change to the reference spec.

A knob is a plain edit of the spec (dropout in model.args, optim.weight_decay, data.augment,
...), so the knobs that helped combine into a full spec (best.yaml) by applying their edits
in turn. Every experiment trains with the same seed(s) and budget as the reference.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
import torch

from nnrecipe.probes import evaluating

if TYPE_CHECKING:
    from nnrecipe.spec import Spec

Edit = Callable[["Spec"], "Spec"]


@dataclasses.dataclass
class Knob:
    name: str  # the check id, e.g. "dropout"
    description: str  # what changed, e.g. "dropout 0.2"
    edit: Optional[Edit] = None  # None: not applicable here (see skip)
    skip: str = ""


def _set_args(model_spec, **changes):
    args = model_spec.args
    new_args = {**args, **changes} if isinstance(args, dict) else args.model_copy(update=changes)
    return model_spec.model_copy(update={"args": new_args})


def _scale_widths(model_spec, factor: float):
    """Built-in widths x factor (at least 1 unit); None for architectures without widths."""
    if model_spec.arch == "mlp":
        return _set_args(model_spec, hidden=[max(1, round(h * factor)) for h in model_spec.args.hidden])
    if model_spec.arch in ("cnn1d", "cnn2d"):
        return _set_args(model_spec, channels=[max(1, round(c * factor)) for c in model_spec.args.channels])
    if model_spec.arch == "gpt":  # the width stays a multiple of the head count
        heads = model_spec.args.n_head
        return _set_args(model_spec, n_embd=heads * max(1, round(model_spec.args.n_embd * factor / heads)))
    if model_spec.arch == "gru":
        return _set_args(model_spec, hidden=max(1, round(model_spec.args.hidden * factor)))
    return None


def _accepts(factory_fn, name: str) -> bool:
    try:
        return name in inspect.signature(factory_fn).parameters
    except (TypeError, ValueError):
        return False


def _edit(section: str, **changes) -> Edit:
    def apply(spec):
        part = getattr(spec, section)
        return spec.model_copy(update={section: part.model_copy(update=changes)})

    return apply


def _model_edit(new_model) -> Edit:
    return lambda spec: spec.model_copy(update={"model": new_model(spec.model)})


def build_knobs(spec, *, original_augment, data_kind: str, base: Path) -> list[Knob]:
    """The knobs set in stages.regularize.knobs, each an edit of `spec` (the reference), or a
    skip saying why it cannot apply to this model or data, in the order below. Early stopping
    is measured on the reference run itself and is not in this list."""
    cfg = spec.stages.regularize.knobs
    knobs = [
        _augmentation(original_augment, data_kind) if cfg.augment else None,
        _dropout(spec.model, cfg.dropout, base) if cfg.dropout is not None else None,
        _weight_decay(spec, cfg.weight_decay) if cfg.weight_decay is not None else None,
        _smaller_batch(spec, cfg.batch_size) if cfg.batch_size is not None else None,
        _smaller_input(spec, cfg.downsample, data_kind) if cfg.downsample is not None else None,
        _resized("smaller-model", spec, cfg.smaller_model, cfg.smaller_model_args),
        _resized("larger-model", spec, cfg.larger_model, cfg.larger_model_args),
    ]
    if cfg.pretrained is not None:
        knobs.append(
            Knob(
                "pretrained",
                f"pretrained weights {Path(cfg.pretrained).name}",
                _model_edit(lambda ms: ms.model_copy(update={"pretrained": cfg.pretrained})),
            )
        )
    return [k for k in knobs if k is not None]


def _augmentation(original_augment, data_kind: str) -> Knob:
    if original_augment:
        names = ", ".join(a.name or a.factory for a in original_augment)
        return Knob("augmentation", f"augment: {names}", _edit("data", augment=list(original_augment)))
    if data_kind == "sequence":
        return Knob(
            "augmentation",
            "augmentation",
            skip="data.augment is empty (token windows have no built-in augmentation; a factory can add one)",
        )
    return Knob(
        "augmentation",
        "augmentation",
        skip="data.augment is empty: list built-ins (e.g. {name: crop, "
        "args: {padding: 1}}) or your factory to measure it",
    )


def _dropout(m, p: float, base: Path) -> Knob:
    """Dropout `p` where the model has a dropout argument (a factory's parameter, a built-in's arg)."""
    skip = ""
    if m.arch == "python":
        from nnrecipe.plugins import load_factory

        if not _accepts(load_factory(m.factory, base=base, field="model.factory"), "dropout"):
            skip = f"{m.factory} takes no `dropout` argument"
    elif not hasattr(m.args, "dropout"):
        skip = f"the built-in {m.arch} model has no dropout"
    elif m.args.dropout >= p:
        skip = f"the model already has dropout {m.args.dropout:g}"
    return Knob(
        "dropout", f"dropout {p:g}", None if skip else _model_edit(lambda ms: _set_args(ms, dropout=p)), skip=skip
    )


def _weight_decay(spec, wd: float) -> Knob:
    if spec.optim.weight_decay >= wd:
        return Knob(
            "weight-decay", f"weight decay {wd:g}", skip=f"optim.weight_decay is already {spec.optim.weight_decay:g}"
        )
    return Knob("weight-decay", f"weight decay {wd:g}", _edit("optim", weight_decay=wd))


def _smaller_batch(spec, b: int) -> Knob:
    if b >= spec.data.batch_size:
        return Knob("smaller-batch", f"batch size {b}", skip=f"not smaller than data.batch_size {spec.data.batch_size}")
    return Knob("smaller-batch", f"batch size {b}", _edit("data", batch_size=b))


def _smaller_input(spec, f: int, data_kind: str) -> Knob:
    if data_kind in ("tabular", "sequence"):
        return Knob("smaller-input", f"downsample x{f}", skip=f"{data_kind} inputs have no resolution to reduce")
    return Knob("smaller-input", f"downsample x{f}", _edit("data", downsample=spec.data.downsample * f))


def _resized(name: str, spec, factor: Optional[float], extra: Optional[dict]) -> Optional[Knob]:
    """smaller-model / larger-model: built-in widths x factor, or a user model's args merged in;
    a larger model only pays with early stopping (the recipe's "larger model + early stopping")."""
    if factor is None and extra is None:
        return None
    m = spec.model
    if m.arch == "python":
        if extra is None:
            return Knob(name, name, skip=f"user models need stages.regularize.knobs.{name.replace('-', '_')}_args")
        new = lambda ms: ms.model_copy(update={"args": {**ms.args, **extra}})  # noqa: E731
        what = ", ".join(f"{k}={v}" for k, v in extra.items())
    else:
        if factor is None or _scale_widths(m, factor) is None:
            return Knob(name, name, skip=f"the built-in {m.arch} model has no widths to scale")
        new = lambda ms: _scale_widths(ms, factor)  # noqa: E731
        what = f"widths x{factor:g}"
    edit = _model_edit(new)
    if name == "larger-model":
        patience = spec.stages.regularize.patience
        edit = (lambda e: lambda s: _edit("train", early_stopping=patience)(e(s)))(edit)
        what += f" + early stopping (patience {patience})"
    return Knob(name, what, edit)


def combine(spec, knobs: list[Knob]):
    for k in knobs:
        assert k.edit is not None  # only knobs that ran (and helped) are combined; a skip has no edit
        spec = k.edit(spec)
    return spec


@torch.inference_mode()
def augmented_scores(model, *, data, spec, base: Path, device, seed: int, passes: int = 1):
    """The model on val passed through data.augment: per-example correctness / squared error
    (against the labels the augmentation returns), and one batch, clean and augmented, with
    the model's predictions. Its clean-val scores are the experiment's own val_scores."""
    from nnrecipe.augment import build_augment
    from nnrecipe.runtime import seed_everything

    augment = build_augment(spec.data.augment, kind=data.kind, base=base)
    assert augment is not None  # measured only for a non-empty data.augment, which builds a callable
    seed_everything(seed)
    augmented, shown, preds = [], None, None
    with evaluating(model):
        for _ in range(passes):
            outs, ys = [], []
            for x, y in data.val.iterate(512):
                xa, ya = augment(x.to(device), y.to(device))  # a user augmentation may change labels too
                out = model(xa).float().cpu()
                if shown is None:
                    shown = (x[:16].cpu(), xa[:16].cpu(), ya[:16].cpu())
                    preds = data.task.augmented_predictions(out[:16])
                outs.append(out)
                ys.append(ya.cpu())
            augmented.append(data.task.example_scores(torch.cat(outs), torch.cat(ys)).cpu().numpy())
    return np.mean(augmented, axis=0), shown, preds
