"""The ensemble pass: members and prefix ensembles scored batch by batch give exactly what the
whole-split outputs give, without keeping any member's outputs for the whole split."""

import numpy as np
import pytest
import torch
from torch import nn

from nnrecipe.data.bundle import TensorSplit
from nnrecipe.engine import Engine
from nnrecipe.models.sequence import GPT
from nnrecipe.probes.squeeze import combine_outputs, ensemble_pass
from nnrecipe.tasks import get_task


def _members(task):
    torch.manual_seed(0)
    if task == "language-model":
        x = torch.randint(0, 9, (23, 6))
        y = torch.roll(x, -1, dims=1)
        return [GPT(9, 6, n_layer=1, n_head=1, n_embd=8, dropout=0.0) for _ in range(3)], x, y
    x = torch.randn(23, 5)
    y = torch.randint(0, 4, (23,)) if task == "classification" else torch.randn(23, 2)
    return [nn.Linear(5, 4 if task == "classification" else 2) for _ in range(3)], x, y


@pytest.mark.parametrize("task", ["classification", "regression", "language-model"])
def test_the_batched_pass_equals_the_whole_split(task):
    models, x, y = _members(task)
    t = get_task(task)
    engine = Engine(device=torch.device("cpu"), task=t)
    loss = "cross_entropy" if task != "regression" else "mse"
    p = ensemble_pass(engine, models, TensorSplit("val", x, y), task=t, loss=loss, batch_size=5)  # 5 batches
    outs = [engine.predict(m, TensorSplit("val", x, y)) for m in models]
    for k in range(3):
        np.testing.assert_allclose(p.members[k], t.example_scores(outs[k], y).numpy(), rtol=1e-5, atol=1e-7)
        whole = t.example_scores(combine_outputs(outs[: k + 1], t, loss), y).numpy()
        np.testing.assert_allclose(p.prefixes[k], whole, rtol=1e-5, atol=1e-7)
    spread = max(float((o - outs[0]).abs().max()) for o in outs[1:]) / float(outs[0].abs().mean())
    assert abs(p.spread - spread) < 1e-5 * spread
    if task == "classification":
        preds = [o.argmax(dim=1) for o in outs]
        pairs = [(preds[i] != preds[j]).float().mean().item() for i in range(3) for j in range(i + 1, 3)]
        assert abs(p.disagreement - np.mean(pairs)) < 1e-6  # the reference is float32
    else:
        assert p.disagreement is None
    if task == "language-model":  # mixing distributions never raises a window's cross-entropy on average
        assert p.ensemble.mean() <= np.mean([s.mean() for s in p.members])
    assert p.curve() == [float(s.mean()) for s in p.prefixes]
