"""The baseline probes on tiny models: what they measure, before any rule judges it."""

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nnrecipe.data import build_data
from nnrecipe.engine import Engine
from nnrecipe.models import larger_model_spec, prepare_model
from nnrecipe.models.init import final_linear
from nnrecipe.probes.model_probes import (
    InputCapture,
    batch_dependency,
    dead_units,
    eval_twice,
    gradient_step,
    measure_init,
    overfit_batch,
)
from nnrecipe.spec import load_spec
from nnrecipe.tasks import CLASSIFICATION, REGRESSION
from planted import models as planted


def _data(*overrides):
    spec, base = load_spec(None, ["data.source=synthetic", *overrides])
    return spec, build_data(spec, base=base)


def test_prepare_model_puts_the_final_bias_at_the_log_priors():
    spec, data = _data("data.args.imbalance=9", "data.args.num_classes=2")
    model = prepare_model(spec, data, base=Path("."))
    assert np.allclose(final_linear(model, 2).bias.detach().numpy(), np.log(data.priors()), atol=1e-6)
    off, _ = load_spec(None, ["data.source=synthetic", "model.init_final_bias=false"])
    assert not np.allclose(
        final_linear(prepare_model(off, data, base=Path(".")), 2).bias.detach().numpy(), np.log(data.priors())
    )


def test_regression_init_predicts_the_target_mean():
    spec, data = _data("task=regression")
    model = prepare_model(spec, data, base=Path("."))
    with torch.no_grad():
        mean_pred = model(data.train.x).mean().item()
    assert abs(mean_pred - data.train.y.mean().item()) < 0.02 * data.train.y.std().item()  # fitted on 1024 of 2000


def test_measure_init_reference_values():
    spec, data = _data()
    model = prepare_model(spec, data, base=Path("."))
    m = measure_init(
        model,
        data,
        loss_name="cross_entropy",
        builtin_bias_init=True,
        predict=Engine(device=torch.device("cpu"), task=CLASSIFICATION).predict,
    )
    assert m.reference["uniform"] == np.float64(math.log(4)) or abs(m.reference["uniform"] - math.log(4)) < 1e-6
    assert abs(m.val_losses.mean() - math.log(4)) < 0.2 and not m.in_unit_interval
    soft = nn.Sequential(model, nn.Softmax(dim=1))
    s = measure_init(
        soft,
        data,
        loss_name="cross_entropy",
        builtin_bias_init=False,
        predict=Engine(device=torch.device("cpu"), task=CLASSIFICATION).predict,
    )
    assert s.in_unit_interval and s.rows_sum_to_one


def test_ideal_bias_per_loss():
    p = np.array([0.75, 0.25])
    assert np.allclose(CLASSIFICATION.ideal_bias("cross_entropy", priors=p), np.log(p))
    assert np.allclose(CLASSIFICATION.ideal_bias("bce", priors=p), np.log(p / (1 - p)))
    assert np.allclose(REGRESSION.ideal_bias("mse", target_mean=np.array([3.0])), [3.0])
    assert CLASSIFICATION.ideal_bias("custom", priors=p) is None


def test_batch_dependency_sees_the_view_bug():
    x = torch.randn(8, 1, 8, 8)
    good = batch_dependency(planted.mlp((1, 8, 8), 4), x, [0, 7])
    assert good[0, 0] > 0 and good[0, 1:].max() == 0 and good[1, :7].max() == 0
    bad = batch_dependency(planted.batch_mixing((1, 8, 8), 4), x, [0])
    assert (bad[0, 1:] > 0).any()
    assert batch_dependency(planted.mlp((4,), 2), torch.zeros(4, 4, dtype=torch.long), [0]) is None


def test_eval_twice():
    x = torch.randn(16, 1, 8, 8)
    assert eval_twice(planted.mlp((1, 8, 8), 4), x)[0] == 0.0
    assert eval_twice(planted.dropout_in_eval((1, 8, 8), 4), x)[0] > 0


def test_gradient_step_finds_unused_and_detached_parameters():
    x, y = torch.randn(16, 1, 8, 8), torch.arange(16) % 4
    loss = nn.functional.cross_entropy
    for factory, expected_missing in (
        (planted.unused_layer, {"extra.weight", "extra.bias"}),
        (planted.detached_layer, {"fc1.weight", "fc1.bias"}),
    ):
        model = factory((1, 8, 8), 4)
        g = gradient_step(model, x, y, loss, torch.optim.Adam(model.parameters(), lr=1e-3))
        assert {n for n, v in zip(g.names, g.grad_norm) if v is None} == expected_missing
        assert all(c for n, c in zip(g.names, g.changed) if n not in expected_missing)


def test_dead_units_counts_relu_modules():
    x = torch.randn(64, 1, 8, 8)
    dead = dead_units(planted.dead_relu_modules((1, 8, 8), 4), x)
    assert dead["act2"] == 1.0 and dead["act1"] < 0.5
    assert dead_units(planted.good((1, 8, 8), 4), x)["2"] < 0.5  # nn.Sequential names its ReLU "2"


def test_overfit_batch_reaches_the_target_or_reports_the_loss():
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8) % 4
    torch.manual_seed(0)
    r = overfit_batch(planted.mlp((1, 8, 8), 4), x, y, nn.functional.cross_entropy, steps=500, lr=1e-3, target=0.05)
    assert r.final_loss <= 0.05 and r.steps_run < 500 and r.outputs.shape == (8, 4)
    r = overfit_batch(
        planted.ignores_input((1, 8, 8), 4), x, y, nn.functional.cross_entropy, steps=100, lr=1e-3, target=0.05
    )
    assert r.final_loss > 1.0 and r.steps_run == 100


def test_input_capture_records_the_first_batch_and_its_targets():
    model = planted.mlp((3,), 2)
    cap = InputCapture(model, nn.functional.cross_entropy, keep=4)
    x, y = torch.randn(10, 3), torch.arange(10) % 2
    cap.loss_fn(model(x), y)
    cap.loss_fn(model(x + 1), y)
    cap.remove()
    assert torch.equal(cap.x, x[:4]) and torch.equal(cap.y, y[:4])


def test_input_capture_skips_eval_forwards_before_training():
    """The baseline draws prediction dynamics (eval mode, val examples) before the first step:
    those inputs were captured and shown with the first training batch's labels."""
    model = planted.mlp((3,), 2)
    cap = InputCapture(model, nn.functional.cross_entropy, keep=32)
    model.eval()
    model(torch.randn(16, 3))  # prediction dynamics on 16 val examples
    model.train()
    x, y = torch.randn(8, 3), torch.arange(8) % 2
    cap.loss_fn(model(x), y)
    cap.remove()
    assert torch.equal(cap.x, x) and torch.equal(cap.y, y)


def test_larger_model_spec():
    spec, _ = load_spec(None, [])
    assert larger_model_spec(spec).args.hidden == [256, 256]
    cnn, _ = load_spec(None, ["model.arch=cnn1d"])
    assert larger_model_spec(cnn).args.channels == [64, 128, 128]
    user, _ = load_spec(None, ["model.arch=python", "model.factory=m.py:f", "model.args.width=8"])
    assert larger_model_spec(user) is None
    user2, _ = load_spec(
        None,
        [
            "model.arch=python",
            "model.factory=m.py:f",
            "model.args.width=8",
            "stages.baseline.larger_model_args={width: 16}",
        ],
    )
    assert larger_model_spec(user2).args == {"width": 16}


def test_a_unit_dead_at_init_that_trains_back_to_life_is_not_dead():
    """regnet_y_400mf's squeeze-excitation bottleneck: over globally pooled, nearly equal
    features 62 % of its units are negative for every val image at init, and not after training.
    Only the units dead in both count; the planted bias of -100 stays dead in both."""
    import copy

    x = torch.randn(32, 1, 8, 8)
    net = planted.dead_relu_modules((1, 8, 8), 4)
    trained = copy.deepcopy(net)
    assert dead_units(net, x, after=trained)["act2"] == 1.0  # still dead: counted
    with torch.no_grad():
        trained.fc2.bias.fill_(0.0)  # as if training had moved the units' inputs back above zero
    assert dead_units(net, x)["act2"] == 1.0 and dead_units(net, x, after=trained)["act2"] < 0.5
