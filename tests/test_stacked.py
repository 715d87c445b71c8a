"""The written-out forward of K stacked models (nnrecipe/stacked.py) and the built-in losses of K
models at once: each model's outputs and loss as alone, and None for what is not written out."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import PLANTED
from nnrecipe import stacked, together
from nnrecipe.data import build_data
from nnrecipe.experiments import Experiment, prepare_experiment, run_experiment, run_group
from nnrecipe.losses import BUILTIN, stacked_loss
from nnrecipe.models.builtin import cnn1d, cnn2d, linear, mlp
from nnrecipe.spec import Spec

CPU = torch.device("cpu")
BASE = Path(".")
K = 3


def _args(**kw):
    return type("Args", (), kw)


ARCHS = {
    "mlp": lambda: mlp((1, 8, 8), 10, _args(hidden=[16, 16], activation="gelu", dropout=0.0)),
    "linear-no-bias": lambda: linear((1, 8, 8), 10, _args(bias=False)),
    "cnn1d": lambda: cnn1d((40,), 10, _args(channels=[8, 8], kernel_size=5, stride=2, dropout=0.0)),
    "cnn2d": lambda: cnn2d((1, 8, 8), 10, _args(channels=[4, 8], kernel_size=3, batch_norm=False, dropout=0.0)),
}
INPUTS = {"cnn1d": (40,)}


@pytest.mark.parametrize("arch", list(ARCHS))
def test_the_written_out_forward_gives_each_model_what_it_gives_alone(arch):
    torch.manual_seed(0)
    models = [ARCHS[arch]() for _ in range(K)]
    forward = stacked.StackedForward.of(models[0])
    assert forward is not None
    params = {k: torch.stack([m.get_parameter(k).detach() for m in models]) for k, _ in models[0].named_parameters()}
    x = torch.randn(K, 6, *INPUTS.get(arch, (1, 8, 8)))  # each model its own batch
    out = forward(params, x.flatten(0, 1), K).reshape(K, 6, -1)
    for i, m in enumerate(models):
        assert torch.allclose(out[i], m(x[i]), atol=1e-5), i
    # the other way round: model 1's weights swapped for model 0's, its outputs are no longer its own
    params = {k: v[[0, 0, 2]] for k, v in params.items()}
    out = forward(params, x.flatten(0, 1), K).reshape(K, 6, -1)
    assert not torch.allclose(out[1], models[1](x[1]), atol=1e-3)


def test_a_layer_used_twice_runs_twice():
    relu = nn.ReLU()
    model = nn.Sequential(nn.Linear(4, 4), relu, nn.Linear(4, 4), relu, nn.Linear(4, 1))
    forward = stacked.StackedForward.of(model)
    assert forward is not None and len(forward.layers) == 5
    params = {k: v.detach().unsqueeze(0) for k, v in model.named_parameters()}
    x = torch.randn(6, 4)
    assert torch.allclose(forward(params, x, 1), model(x), atol=1e-6)


@pytest.mark.parametrize(
    "model",
    [
        nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)),  # mixes a batch, keeps statistics
        nn.Sequential(nn.Linear(4, 4), nn.Softmax(dim=0)),  # a layer not written out
        nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)),
        nn.Sequential(nn.Conv1d(2, 2, 3, padding="same")),  # padding given by name
        copy.deepcopy(nn.Linear(4, 4)),  # not a Sequential: its forward could be anything
        nn.Sequential(*[nn.Linear(4, 4)] * 2),  # one layer's weights used twice
    ],
    ids=["batchnorm", "softmax-dim0", "layernorm", "padding-same", "not-sequential", "shared-weights"],
)
def test_what_is_not_written_out_goes_to_vmap(model):
    assert stacked.StackedForward.of(model) is None


SHAPES = {"cross_entropy": "index", "nll": "index", "bce": "index", "mse": "vector", "huber": "vector"}


@pytest.mark.parametrize("name", list(BUILTIN))
def test_the_built_in_losses_of_k_models_at_once_are_each_models_batch_loss(name):
    torch.manual_seed(1)
    out = torch.randn(K, 8, 5)
    y = torch.randint(0, 5, (K, 8)) if SHAPES[name] == "index" else torch.randn(K, 8, 5)
    if name == "nll":
        out = out.log_softmax(-1)
    fn = stacked_loss(BUILTIN[name])
    assert fn is not None
    got = fn(out.flatten(0, 1), y.flatten(0, 1), K)
    want = torch.stack([BUILTIN[name](out[i], y[i]) for i in range(K)])
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(got, want.flip(0), atol=1e-6)  # three different losses, each in its place


def test_a_loss_of_its_own_is_not_written_out():
    assert stacked_loss(lambda out, y: (out - y).abs().mean()) is None


@pytest.fixture(scope="module")
def digits():
    torch.set_num_threads(1)
    data = build_data(Spec(), base=BASE)
    data.task.check_targets(data)
    return data


def _exps(model: dict, n: int = 4) -> list[Experiment]:
    spec = Spec(data={"source": "digits", "batch_size": 32, "args": {"scale": "unit"}}, model=model)
    return [Experiment(f"m{i}", spec, steps=40, eval_every=20, seed=i) for i in range(n)]


def _group_after_first_step(exps, data) -> together.Group:
    prepared = [prepare_experiment(e, data=data, device=CPU, base=BASE) for e in exps]
    group = together.Group(prepared)
    plans = [p.plan for p in prepared]
    streams = [together.BatchStream(p.train, p.batch_size, torch.Generator().manual_seed(p.seed)) for p in plans]
    group.step(*group.batch(streams), first=True)
    return group


def test_a_conv_net_trained_as_one_gives_each_model_its_numbers_alone(digits):
    exps = _exps({"arch": "cnn2d", "args": {"channels": [4, 8], "batch_norm": False}})
    assert _group_after_first_step(exps, digits).written is not None  # the written-out path, not vmap
    results, why = run_group(exps, datas=[digits] * 4, device=CPU, base=BASE, writers=[None] * 4)
    assert why == ""
    for a, b in zip(results, [run_experiment(e, data=digits, device=CPU, base=BASE) for e in exps]):
        assert a.val_loss == pytest.approx(b.val_loss, abs=1e-5)
        assert torch.allclose(a.history.losses, b.history.losses, atol=1e-5)


def test_a_written_out_forward_that_disagrees_with_vmap_is_not_used(digits, monkeypatch):
    """Planted: a softmax over dim 0 taken for a per-example layer. Run on the K batches end to
    end it mixes the models' examples; the first batch's check against vmap catches it, and the
    group trains through vmap with each model's numbers alone. Without the check they differ."""
    monkeypatch.setattr(stacked, "PER_EXAMPLE", stacked.PER_EXAMPLE + (nn.Softmax,))
    exps = _exps({"arch": "python", "factory": f"{PLANTED / 'models.py'}:softmax_over_batch"})
    model = prepare_experiment(exps[0], data=digits, device=CPU, base=BASE).plan.model
    assert stacked.StackedForward.of(model) is not None  # taken for a plain stack, the user's own
    assert _group_after_first_step(exps, digits).written is None  # but the first batch's check says no
    alone = [run_experiment(e, data=digits, device=CPU, base=BASE) for e in exps]
    checked, why = run_group(exps, datas=[digits] * 4, device=CPU, base=BASE, writers=[None] * 4)
    assert why == ""

    def gap(results):  # the largest difference from alone in any model's training loss curve
        return max(float((a.history.losses - b.history.losses).abs().max()) for a, b in zip(results, alone))

    assert gap(checked) < 1e-5
    monkeypatch.setattr(together.Group, "_written_out_agrees", lambda self, x, y: True)
    unchecked, _ = run_group(exps, datas=[digits] * 4, device=CPU, base=BASE, writers=[None] * 4)
    assert gap(unchecked) > 1e-3
