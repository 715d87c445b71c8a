"""The training engine on tiny models: it learns, it is bit-reproducible, it evaluates whole splits."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nnrecipe.data import build_data
from nnrecipe.data.bundle import LazySplit, TensorSplit
from nnrecipe.engine import Engine
from nnrecipe.experiments import Checkpoints, Logging, TrainPlan
from nnrecipe.loop import load_checkpoint
from nnrecipe.losses import make_loss
from nnrecipe.models import build_model
from nnrecipe.optim import make_optimizer, make_scheduler
from nnrecipe.runtime import seed_everything
from nnrecipe.spec import load_spec
from nnrecipe.tasks import LANGUAGE_MODEL, get_task

CPU = torch.device("cpu")


def _train(overrides, *, steps=300, checkpoint=None, lazy=False):
    """Everything built afresh from the spec, as a new process would."""
    spec, base = load_spec(
        None, ["data.source=synthetic", "data.args.class_sep=4", "model.args.hidden=[32]", "optim.lr=3e-3", *overrides]
    )
    seed_everything(spec.seed)
    data = build_data(spec, base=base)
    train = (
        LazySplit("train", torch.utils.data.TensorDataset(data.train.x, data.train.y), num_workers=0)
        if lazy
        else data.train
    )
    model = build_model(spec, input_shape=data.input_shape, num_outputs=data.num_outputs, base=base)
    engine = Engine.for_spec(spec.train, device=CPU, task=get_task(spec.task))
    opt = make_optimizer(spec.optim, model.parameters())
    sched = make_scheduler(opt, spec.optim.schedule, total_steps=steps, base=base)
    history = engine.train(
        TrainPlan(
            model=model,
            train=train,
            val=data.val,
            loss_fn=make_loss(spec, base=base),
            optimizer=opt,
            scheduler=sched,
            steps=steps,
            batch_size=spec.data.batch_size,
            seed=spec.seed,
            eval_every=100,
            checkpoints=Checkpoints(last=checkpoint),
            log=Logging(every=25),
        )
    )
    return history, model, data, engine, spec


def test_loss_goes_down_and_val_accuracy_rises():
    h, *_ = _train([])
    first, last = h.losses[:25].mean().item(), h.losses[-25:].mean().item()
    assert last < 0.5 * first, (first, last)
    assert h.evals[-1][1].metric > 0.8 and h.evals[-1][1].n == 500  # the entire val split
    assert len(h.losses) == 300 and len(h.lrs) == 300 and [s for s, _ in h.evals] == [100, 200, 300]


def test_two_runs_with_one_seed_are_bitwise_equal_on_cpu():
    h1, m1, *_ = _train([])
    h2, m2, *_ = _train([])
    assert torch.equal(h1.losses, h2.losses)
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


def test_another_seed_gives_another_run():
    h1, *_ = _train([])
    h2, *_ = _train(["seed=1"])
    assert not torch.equal(h1.losses, h2.losses)


def test_lazy_split_trains_through_a_dataloader_reproducibly():
    h1, *_ = _train([], steps=100, lazy=True)
    h2, *_ = _train([], steps=100, lazy=True)
    assert torch.equal(h1.losses, h2.losses) and h1.losses[-20:].mean() < h1.losses[:20].mean()


def test_regression_r2_is_zero_for_the_mean_and_high_when_trained():
    h, model, data, engine, spec = _train(["task=regression"])
    assert h.evals[-1][1].metric_name == "r2" and h.evals[-1][1].metric > 0.9

    class Mean(nn.Module):
        def __init__(self, value):
            super().__init__()
            self.value = value

        def forward(self, x):
            return self.value.expand(len(x), 1)

    mean_model = Mean(data.val.y.float().mean().reshape(1, 1))
    r = engine.evaluate(mean_model, data.val, make_loss(spec, base=Path(".")))
    assert abs(r.metric) < 1e-6
    assert r.loss == pytest.approx(data.val.y.var(unbiased=False).item(), rel=1e-5)  # MSE of the mean = Var(y)


def test_lr_is_recorded_per_step_from_the_schedule():
    h, *_ = _train(["optim.schedule=cosine"], steps=100)
    assert h.lrs[0] == pytest.approx(3e-3) and h.lrs[-1] < 3e-3 * 0.01
    assert all(a >= b for a, b in zip(h.lrs, h.lrs[1:]))


def test_checkpoint_is_written_and_loads_with_weights_only(tmp_path):
    path = tmp_path / "ckpt" / "last.pt"
    h, model, *_ = _train([], steps=100, checkpoint=path)
    state = load_checkpoint(path)
    assert state["step"] == 100
    assert all(torch.equal(state["model"][k], v) for k, v in model.state_dict().items())
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_non_finite_loss_stops_training_and_is_reported():
    h, *_ = _train(["optim.lr=1e6", "optim.name=sgd", "optim.momentum=0.0"], steps=200)
    assert (
        h.diverged
        and h.steps_run < 200
        and h.steps_run % 25 == 0
        and h.steps_run - 25 < h.nonfinite_step <= h.steps_run
    )
    assert torch.isfinite(h.losses[: h.nonfinite_step - 1]).all() and not torch.isfinite(h.losses[h.nonfinite_step - 1])


def test_in_memory_batches_come_from_a_device_permutation():
    split = TensorSplit("train", torch.arange(10).float()[:, None], torch.arange(10))
    g = torch.Generator().manual_seed(0)
    seen = torch.cat([y for _, y in split.iterate(3, shuffle=True, generator=g)])
    assert sorted(seen.tolist()) == list(range(10)) and seen.tolist() != list(range(10))


def test_compile_trains_the_same_model_and_saves_plain_weights(monkeypatch):
    # Dynamo traces the engine's forward for real; the eager backend skips inductor's C++ build
    # (~20 s on this CPU), which the CUDA benchmark exercises (bench/engine_overhead.py --compile).
    compiled = []
    real = torch.compile

    def eager_compile(model, **kw):
        compiled.append(model)
        return real(model, backend="eager", **kw)

    monkeypatch.setattr(torch, "compile", eager_compile)
    h1, m1, *_ = _train([], steps=100)
    h2, m2, *_ = _train(["train.compile=true"], steps=100)
    assert compiled == [m2]
    assert list(m2.state_dict()) == list(m1.state_dict())  # no `_orig_mod.` prefixes in checkpoints
    assert torch.allclose(h1.losses, h2.losses, atol=1e-5), (h1.losses[-3:], h2.losses[-3:])
    assert h2.evals[-1][1].metric == pytest.approx(h1.evals[-1][1].metric, abs=0.01)


def test_channels_last_converts_conv_weights_and_inputs_and_learns_the_same():
    def run(extra):
        spec, base = load_spec(None, ["data.source=digits", "model.arch=cnn2d", "optim.lr=3e-3", *extra])
        seed_everything(spec.seed)
        data = build_data(spec, base=base)
        model = build_model(spec, input_shape=data.input_shape, num_outputs=data.num_outputs, base=base)
        engine = Engine.for_spec(spec.train, device=CPU, task=get_task(spec.task))
        h = engine.train(
            TrainPlan(
                model=model,
                train=data.train,
                val=data.val,
                loss_fn=make_loss(spec, base=base),
                optimizer=make_optimizer(spec.optim, model.parameters()),
                steps=60,
                batch_size=spec.data.batch_size,
                seed=spec.seed,
                eval_every=60,
                log=Logging(every=25),
            )
        )
        return h, model

    h1, m1 = run([])
    h2, m2 = run(["train.channels_last=true"])

    def last_conv(m):  # the first conv has one input channel: its weight is both layouts at once
        return [c for c in m.modules() if isinstance(c, nn.Conv2d)][-1].weight

    assert last_conv(m2).is_contiguous(memory_format=torch.channels_last)
    assert not last_conv(m1).is_contiguous(memory_format=torch.channels_last)
    # The same arithmetic in another memory order: equal up to float summation order.
    assert torch.allclose(h1.losses, h2.losses, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("schedule,max_points", [("constant", 1 + 300 // 25), ("warmup_cosine", 250)])
def test_tensorboard_lr_curve_keeps_the_schedule_shape_with_few_points(tmp_path, schedule, max_points):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    spec, base = load_spec(
        None,
        [
            "data.source=synthetic",
            "model.args.hidden=[16]",
            "optim.lr=1e-2",
            f"optim.schedule.name={schedule}",
            "optim.schedule.warmup_steps=30",
        ],
    )
    data = build_data(spec, base=base)
    model = build_model(spec, input_shape=data.input_shape, num_outputs=data.num_outputs, base=base)
    opt = make_optimizer(spec.optim, model.parameters())
    with SummaryWriter(str(tmp_path)) as writer:
        h = Engine(device=CPU, task=get_task(spec.task)).train(
            TrainPlan(
                model=model,
                train=data.train,
                loss_fn=make_loss(spec, base=base),
                optimizer=opt,
                scheduler=make_scheduler(opt, spec.optim.schedule, total_steps=300, base=base),
                steps=300,
                batch_size=64,
                seed=0,
                log=Logging(writer=writer, every=25),
            )
        )
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    points = [(e.step, e.value) for e in acc.Scalars("train/lr")]
    assert len(points) <= max_points and points[0][0] == 1 and points[-1][0] == 300
    steps, values = zip(*points)
    # every written value is the LR the optimizer applied at that step
    assert all(v == pytest.approx(h.lrs[s - 1], rel=1e-6) for s, v in points)
    if schedule == "warmup_cosine":
        # the shape survives: the warm-up's peak near step 30, the end near zero
        peak = steps[values.index(max(values))]
        assert 25 <= peak <= 35 and values[-1] < 0.01 * max(values)
        # between written points the LR never moved by more than ~1% of the last written one
        for (s0, v0), (s1, _) in zip(points, points[1:]):
            assert all(abs(h.lrs[i] - v0) <= 0.0101 * v0 for i in range(s0, s1 - 1))


def test_per_example_scores_are_computed_batch_by_batch_without_keeping_outputs():
    """A language model's val scores (per-window cross-entropy) come out of the evaluation
    itself: its (N, L, V) logits need not be kept on the host for them."""
    import torch.nn.functional as F

    from nnrecipe.data.bundle import TensorSplit
    from nnrecipe.engine import Engine
    from nnrecipe.losses import IGNORE_INDEX
    from nnrecipe.models.sequence import GPT

    torch.manual_seed(0)
    x = torch.randint(0, 11, (37, 8))
    y = torch.roll(x, -1, dims=1)
    y[:5, -3:] = IGNORE_INDEX  # padding targets are left out of each window's mean
    model = GPT(11, 8, n_layer=1, n_head=2, n_embd=16, dropout=0.0)
    loss = lambda out, t: F.cross_entropy(out.transpose(1, 2), t, ignore_index=IGNORE_INDEX)  # noqa: E731
    engine = Engine(device=torch.device("cpu"), task=LANGUAGE_MODEL)
    lean = engine.evaluate(model, TensorSplit("val", x, y), loss, batch_size=10, keep_scores=True)
    full = engine.evaluate(model, TensorSplit("val", x, y), loss, batch_size=10, keep_outputs=True)
    assert lean.outputs is None and lean.scores.shape == (37,)
    np.testing.assert_allclose(lean.scores, LANGUAGE_MODEL.example_scores(full.outputs, y).numpy(), rtol=1e-6)
    real = y[0] != IGNORE_INDEX
    by_hand = F.cross_entropy(full.outputs[0][real], y[0][real]).item()
    assert abs(lean.scores[0] - by_hand) < 1e-5


def test_a_split_that_fits_in_one_batch_is_taken_whole_and_in_order():
    """Shuffling one batch changes only the summation order: two seeds would differ by float
    rounding alone (members that ignore the seed would look independent)."""
    from nnrecipe.loop import BatchStream

    split = TensorSplit("train", torch.arange(10).float()[:, None], torch.arange(10))
    g = torch.Generator().manual_seed(0)
    before = g.get_state()
    stream = BatchStream(split, 16, g)
    assert [next(stream)[1].tolist() for _ in range(3)] == [list(range(10))] * 3
    assert torch.equal(g.get_state(), before)  # nothing drawn
    two = BatchStream(split, 4, torch.Generator().manual_seed(0))  # several batches: shuffled, last short one dropped
    seen = [next(two)[1] for _ in range(2)]
    assert all(len(b) == 4 for b in seen) and torch.cat(seen).tolist() != list(range(8))
