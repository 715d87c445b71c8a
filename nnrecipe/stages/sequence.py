"""The language-model parts of the stages: the baseline probes only a next-token model has
(causal dependency, padding, batch independence through the embeddings), samples from the
prompt at each evaluation (the prediction dynamics of text), and text in place of image grids."""

from __future__ import annotations

import numpy as np
import torch

from nnrecipe.models.sequence import Bigram
from nnrecipe.probes.measurements import BaselineMeasurements
from nnrecipe.probes.sequence_probes import (NoEmbedding, batch_dependency_tokens, causal_gradients, generate,
                                             padding_change, target_leak)
from nnrecipe.runtime import seed_everything
from nnrecipe.stages.base import FigureSaver
from nnrecipe.stages.sequence_pictures import causal_map, text_panel


def measure(m: BaselineMeasurements, model, data, xv: torch.Tensor, yv: torch.Tensor, loss_fn, cfg) -> None:
    """Fill the language-model fields of `m` with the untrained model on val windows."""
    windows = xv[: min(4, len(xv))]
    length = windows.shape[1]
    k = min(cfg.causal_positions, length)
    # Evenly spread positions, always the first and the last but one (a mask shifted by one
    # shows at every position but the last, which has no later input).
    m.leak = target_leak(data.train.x, data.train.y) if hasattr(data.train, "x") else target_leak(xv, yv)
    positions = sorted({int(round(p)) for p in np.linspace(0, max(length - 2, 0), k)})
    try:
        m.causal = causal_gradients(model, windows, positions)
        small = xv[: min(8, len(xv))]
        m.dependency = batch_dependency_tokens(model, small, m.dependency_rows)
    except NoEmbedding as exc:
        m.causal_skip = m.dependency_skip = f"{exc}; nnrecipe differentiates through the embedding of the ids"
    if cfg.padding_tokens < length:
        try:
            m.padding = padding_change(model, xv[:16], yv[:16], loss_fn, pad=cfg.padding_tokens)
        except RuntimeError as exc:  # e.g. a position table added without slicing: only full windows fit
            m.padding_skip = (f"the model does not take windows of {length - cfg.padding_tokens} tokens "
                              f"({exc.__class__.__name__}: {str(exc).splitlines()[0][:80]})")
    else:
        m.padding_skip = f"windows of {length} tokens leave no room for {cfg.padding_tokens} padding tokens"


def bigram(spec, data) -> Bigram:
    seed_everything(spec.seed, deterministic=spec.train.deterministic)
    return Bigram(data.num_outputs)


def sample(net, data, spec, device, writer, step: int) -> str:
    """A sample from the fixed prompt (same sampling seed each time), to TensorBoard's text tab."""
    text = generate(net, data.sequence, tokens=spec.train.sample_tokens, device=device, seed=spec.seed)
    if writer is not None:
        writer.add_text("samples", "    " + text.replace("\n", "\n    "), step)
    return text


def pictures(ctx, stage: str, data, m: BaselineMeasurements, capture, dynamics, xo, yo) -> dict[str, list[str]]:
    save = FigureSaver(ctx, stage)
    info = data.sequence
    if capture.x is not None:
        rows = [(f"x[{i}] -> y[{i}]", f"{info.decode(capture.x[i].long())}\n{info.decode(capture.y[i].long())}")
                for i in range(min(6, len(capture.x)))]
        save(text_panel(rows, title="the exact windows entering model(x) in the first training step (input, then target)"),
             "model_input", "dumb-baselines", "input-independent")
        save.text("\n\n".join(f"{label}\n{body}" for label, body in rows), "model_input")
    if dynamics:
        blocks = [(f"step {s}", t) for s, t in dynamics]
        save(text_panel(blocks, title=f"samples from the prompt {info.prompt!r} over training (same sampling seed)"),
             "prediction_dynamics", "loss-decreases")
        save.text("\n\n".join(f"--- step {s}\n{t}" for s, t in dynamics), "samples", "loss-decreases")
    if m.causal is not None:
        save(causal_map(m.causal.matrix, m.causal.positions,
                        title="what each output position may see: gradient on each input position (red: the diagonal)"),
             "causal_dependency", "causal-dependency")
    o = m.overfit
    if o is not None:
        pred = o.outputs.argmax(dim=-1)
        rows = [(f"window {i}: target, then prediction", f"{info.decode(yo[i])}\n{info.decode(pred[i])}")
                for i in range(min(4, len(yo)))]
        save(text_panel(rows, title=f"overfit one batch: targets vs greedy predictions after {o.steps_run} steps"),
             "overfit_one_batch", "overfit-one-batch")
    series = {e.name: (np.arange(1, len(e.history.losses) + 1), e.history.losses.numpy())
              for e in (m.model, m.zero_input, m.larger, m.linear) if e is not None}
    from nnrecipe import pictures as pics

    save(pics.curves(series, title="training loss of each baseline experiment (nats per token)", ylabel="loss", logy=True),
         "curves", "loss-decreases", "input-independent", "dumb-baselines")
    save(pics.hbars(dict(zip(m.grad.names, m.grad.grad_norm)), xlabel="gradient L2 norm",
                    title="gradient norm per parameter after one batch (red: none or zero)"),
         "gradient_norms", "gradients-flow")
    return save.arts


def sample_artifacts(ctx, stage: str, data, samples: list[tuple[int, str]], *checks: str) -> dict[str, list[str]]:
    """samples.txt and its picture: what the model wrote from the prompt at each evaluation."""
    save = FigureSaver(ctx, stage)
    if samples:
        save(text_panel([(f"step {s}", t) for s, t in samples[-6:]],
                        title=f"samples from the prompt {data.sequence.prompt!r} (same sampling seed)"),
             "samples", *checks)
        save.text("\n\n".join(f"--- step {s}\n{t}" for s, t in samples), "samples", *checks)
    return save.arts
