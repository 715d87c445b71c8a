"""`nnrecipe inspect-data --model RUN_DIR`: this spec's data seen through a model trained in
RUN_DIR (regularize's best configuration, else the overfit stage's model): what it gets wrong
on val (confusion matrix, per-class metrics, the most confidently wrong examples; residual
plots for regression), and `model-on-data`: does it still score here what it scored when it
was trained? A drop beyond noise means the data it sees now is not the data it learned from
(other preprocessing or normalisation, a changed label mapping, another split)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional


from nnrecipe.errors import RunDirError

STAGE = "inspect-data"


@dataclasses.dataclass
class TrainedModel:
    spec: object  # the full spec the model was trained with (its model and data.downsample matter)
    state: dict
    source: str  # which checkpoint, for messages
    val_metric: Optional[float]  # what it scored on val when it was trained
    metric_name: str
    n_val: int


def find_model(run_dir: Path) -> TrainedModel:
    """regularize/checkpoints/best.pt (+ best.yaml), else overfit/checkpoints/best.pt (+ spec.yaml)."""
    from nnrecipe.engine import load_checkpoint
    from nnrecipe.spec import load_spec
    from nnrecipe.stages.start import from_spec

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"--model: {run_dir} is not a run directory")
    reg = run_dir / "regularize" / "checkpoints" / "best.pt"
    if reg.exists() and (run_dir / "regularize" / "best.yaml").exists():
        ckpt = load_checkpoint(reg)
        spec, _ = load_spec(run_dir / "regularize" / "best.yaml")
        return TrainedModel(spec, ckpt["model"], str(reg), ckpt.get("val_metric"), ckpt.get("metric_name", ""),
                            int(ckpt.get("n_val") or 0))
    ovf = run_dir / "overfit" / "checkpoints" / "best.pt"
    if ovf.exists() and (run_dir / "spec.yaml").exists():
        spec, _ = load_spec(run_dir / "spec.yaml")
        summary_path = run_dir / "overfit" / "summary.json"
        final = json.loads(summary_path.read_text()).get("final", {}) if summary_path.exists() else {}
        name = next((k[4:] for k in final if k.startswith("val_") and k != "val_loss"), "")
        # the overfit stage scored the same val split size (n_val 0: take this run's)
        return TrainedModel(from_spec(spec), load_checkpoint(ovf)["model"], str(ovf), final.get(f"val_{name}"), name, 0)
    raise RunDirError(f"--model: {run_dir} holds no trained model (regularize/checkpoints/best.pt or "
                      f"overfit/checkpoints/best.pt); run nnrecipe overfit or regularize on it first")


def evaluate(spec, ctx, trained: TrainedModel):
    """(the data the model sees, its EvalResult on val with outputs); exit 2 when it cannot take this data."""
    from nnrecipe.data import build_data
    from nnrecipe.engine import Engine
    from nnrecipe.errors import NNRecipeError
    from nnrecipe.losses import make_loss
    from nnrecipe.models import prepare_model

    eval_spec = spec.model_copy(update={"model": trained.spec.model, "loss": trained.spec.loss,
                                        "data": spec.data.model_copy(update={"downsample": trained.spec.data.downsample})})
    data = ctx.data() if eval_spec.data.downsample == spec.data.downsample else build_data(eval_spec, base=ctx.base)
    model = prepare_model(eval_spec, data, base=ctx.base)
    try:
        model.load_state_dict(trained.state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise NNRecipeError(f"--model: {trained.source} does not fit a model built for this data ({first})") from None
    result = Engine.for_spec(eval_spec.train, device=ctx.device, task=data.task).evaluate(
        model, data.val, make_loss(eval_spec, base=ctx.base), keep_outputs=True)
    return data, result, eval_spec
