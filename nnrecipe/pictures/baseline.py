"""The baseline stage's pictures for tensors (images, signals, tables): the exact batch that
enters the model, prediction dynamics, the experiments' curves, gradient norms, and the batch
overfit-one-batch memorised (labels vs predictions). Text has its own (pictures/text.py)."""

from __future__ import annotations

import numpy as np

from nnrecipe import inputs, pictures
from nnrecipe.pictures.saver import Artifacts, FigureSaver


def draw(ctx, stage: str, data, m, loss: str) -> Artifacts:
    """Every picture (PNG + TensorBoard image) from BaselineMeasurements `m`; the artifacts of each check."""
    kind, task = data.kind, data.task
    save = FigureSaver(ctx, stage)
    if m.input_x is not None:
        shown = min(inputs.batch_len(m.input_x), 32)
        rows = [
            (
                f"batch[{r}:]",
                [
                    (inputs.index(m.input_x, i), f"y={task.label_text(data, m.input_y[i])}")
                    for i in range(r, min(shown, r + 8))
                ],
            )
            for r in range(0, shown, 8)
        ]
        scale = None
        if kind == "tabular" and hasattr(data.train, "x"):
            x = data.train.x.float()
            scale = (x.mean(0).flatten().cpu().numpy(), x.std(0).flatten().cpu().numpy())
        save(
            pictures.example_grid(
                rows, kind, title="the exact input entering model(x) in the first training step", scale=scale
            ),
            "model_input",
            "dumb-baselines",
            "input-independent",
        )
    save(
        task.dynamics_picture([s for s, _ in m.dynamics], [q for _, q in m.dynamics], m.dynamics_y.cpu().numpy()),
        "prediction_dynamics",
        "loss-decreases",
    )
    series = {
        e.name: (np.arange(1, len(e.history.losses) + 1), e.history.losses.numpy())
        for e in (m.model, m.zero_input, m.larger, m.linear)
        if e is not None
    }
    positive = all((v[1] > 0).all() for v in series.values())
    save(
        pictures.curves(series, title="training loss of each baseline experiment", ylabel="loss", logy=bool(positive)),
        "curves",
        "loss-decreases",
        "input-independent",
        "dumb-baselines",
    )
    save(
        pictures.hbars(
            dict(zip(m.grad.names, m.grad.grad_norm)),
            xlabel="gradient L2 norm",
            title="gradient norm per parameter after one batch (red: none or zero)",
        ),
        "gradient_norms",
        "gradients-flow",
    )
    o, xo, yo = m.overfit, m.overfit_x, m.overfit_y
    o_rows = [
        (
            "batch",
            [
                (
                    inputs.cpu(inputs.index(xo, i)),
                    f"y={task.label_text(data, yo[i])} ŷ={task.prediction_text(data, o.outputs[i], loss)}",
                )
                for i in range(len(yo))
            ],
        )
    ]
    save(
        pictures.example_grid(
            o_rows, kind, title=f"overfit one batch: labels vs predictions after {o.steps_run} steps"
        ),
        "overfit_one_batch",
        "overfit-one-batch",
    )
    return save.arts
