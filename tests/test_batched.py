"""K models trained as one (nnrecipe/batched.py, issue 24): the same numbers as one by one."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnrecipe.batched import ManyModels, batchable, train_many


def _mlp(seed: int, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 4))


def _batches(k: int, steps: int, b: int = 16):
    """Each model its own batches (as folds and subsets have): different data per model."""
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(k, b, 12, generator=g), torch.randint(0, 4, (k, b), generator=g)) for _ in range(steps)]


@pytest.mark.parametrize(
    "lrs, wds",
    [([1e-3, 3e-3, 1e-2], [0.0, 1e-4, 1e-2]), ([3e-3] * 3, [1e-4] * 3)],
    ids=["own-settings", "one-setting"],  # one setting: torch's own (fused) Adam on the stack
)
def test_k_models_batched_end_where_k_models_trained_one_by_one_end(lrs, wds):
    batches = _batches(3, 40)
    trained, curve = train_many([_mlp(s) for s in range(3)], batches, F.cross_entropy, lr=lrs, weight_decay=wds)
    assert curve.shape == (40, 3)
    for i in range(3):
        model = _mlp(i)
        opt = torch.optim.Adam(model.parameters(), lr=lrs[i], weight_decay=wds[i])
        for step, (x, y) in enumerate(batches):
            loss = F.cross_entropy(model(x[i]), y[i])
            assert loss.item() == pytest.approx(float(curve[step, i]), abs=1e-5)
            opt.zero_grad()
            loss.backward()
            opt.step()
        for (name, a), b in zip(model.state_dict().items(), trained[i].state_dict().values()):
            assert torch.allclose(a, b, atol=1e-5), (i, name)
        assert not torch.allclose(model[0].weight, _mlp(i)[0].weight)  # it did train


def test_dropout_draws_differently_per_model():
    many = ManyModels([_mlp(0, dropout=0.5)] * 2, lr=[1e-3] * 2, weight_decay=[0.0] * 2)
    x = torch.randn(1, 8, 12).expand(2, 8, 12)  # the same weights, the same inputs
    out = many.forward(x)
    assert not torch.allclose(out[0], out[1])


def test_batchnorm_updating_running_statistics_is_refused_with_the_reason():
    bn = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    assert batchable(bn) == "1 (BatchNorm1d) updates its running statistics in place"
    assert batchable(_mlp(0)) == ""
    with pytest.raises(ValueError, match="running statistics"):
        ManyModels([bn, bn], lr=[1e-3] * 2, weight_decay=[0.0] * 2)
