"""`inspect-data --model RUN_DIR`: this spec's data seen through a model trained in RUN_DIR
(handoff.find_model): its val outputs and scores, for what it gets wrong (confusion matrix,
per-class metrics, the most confidently wrong examples; residual plots for real targets) and
`model-on-data`: does it still score here what it scored when it was trained? A drop beyond
noise means the data it sees now is not the data it learned from (other preprocessing or
normalisation, a changed label mapping, another split)."""

from __future__ import annotations


def evaluate(spec, ctx, trained):
    """(the data the model sees, its EvalResult on val with outputs and scores, the spec it is
    evaluated with); exit 2 when it cannot take this data."""
    from nnrecipe.data import build_data
    from nnrecipe.engine import Engine
    from nnrecipe.errors import NNRecipeError
    from nnrecipe.losses import make_loss
    from nnrecipe.models import prepare_model

    eval_spec = spec.model_copy(
        update={
            "model": trained.spec.model,
            "loss": trained.spec.loss,
            "data": spec.data.model_copy(update={"downsample": trained.spec.data.downsample}),
        }
    )
    data = ctx.data() if eval_spec.data.downsample == spec.data.downsample else build_data(eval_spec, base=ctx.base)
    model = prepare_model(eval_spec, data, base=ctx.base)
    try:
        model.load_state_dict(trained.state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise NNRecipeError(f"--model: {trained.source} does not fit a model built for this data ({first})") from None
    result = Engine.for_spec(eval_spec.train, device=ctx.device, task=data.task).evaluate(
        model, data.val, make_loss(eval_spec, base=ctx.base), keep_outputs=True, keep_scores=True
    )
    return data, result, eval_spec
