"""Experiments of one architecture trained as one (nnrecipe/together.py, issue 24): each gives the
numbers, curves, checkpoints and stops it gives trained alone; what vmap cannot take trains
one at a time, and the stage says why once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import PLANTED, close_numbers, write_spec
from nnrecipe.data import build_data
from nnrecipe.experiments import Checkpoints, Experiment, run_experiment, run_group
from nnrecipe.loop import load_checkpoint
from nnrecipe.spec import Spec

CPU = torch.device("cpu")
BASE = Path(".")


@pytest.fixture(scope="module")
def digits():
    torch.set_num_threads(1)
    spec = Spec()
    data = build_data(spec, base=BASE)
    data.task.check_targets(data)
    return data


def _spec(**optim) -> Spec:
    return Spec(
        optim={"name": "adam", "lr": 1e-3, **optim},
        data={"source": "digits", "batch_size": 32, "args": {"scale": "unit"}},
        model={"arch": "mlp", "args": {"hidden": [32, 32]}},
    )


def _alone(exps, datas):
    return [run_experiment(e, data=d, device=CPU, base=BASE) for e, d in zip(exps, datas)]


def _together(exps, datas):
    results, why = run_group(exps, datas=datas, device=CPU, base=BASE, writers=[None] * len(exps))
    assert why == ""  # they really trained as one
    return results


def _same(a, b, tol=1e-5):
    assert (a.steps, a.diverged, a.stopped_at, a.val_step) == (b.steps, b.diverged, b.stopped_at, b.val_step), a.name
    for field in ("val_loss", "val_metric", "train_loss", "train_metric"):
        assert getattr(a, field) == pytest.approx(getattr(b, field), abs=tol, nan_ok=True), (a.name, field)
    assert [s for s, _, _ in a.evals] == [s for s, _, _ in b.evals]
    for (_, la, ma), (_, lb, mb) in zip(a.evals, b.evals):
        assert la == pytest.approx(lb, abs=tol, nan_ok=True) and ma == pytest.approx(mb, abs=tol)
    assert torch.allclose(a.history.losses, b.history.losses, atol=tol, equal_nan=True), a.name
    assert a.history.lrs == pytest.approx(b.history.lrs)


@pytest.mark.parametrize(
    "optim",
    [
        {"name": "adam", "grad_clip": 0.5, "schedule": {"name": "warmup_cosine", "warmup_steps": 20}},
        {"name": "adamw", "schedule": {"name": "step", "step_size": 30, "gamma": 0.5}},
        {"name": "sgd", "lr": 0.05, "momentum": 0.9, "schedule": {"name": "cosine"}},
    ],
    ids=["adam", "adamw", "sgd"],
)
def test_a_group_gives_each_experiment_the_numbers_it_gives_alone(digits, optim):
    """Seeds, training rows, learning rates, weight decays, a schedule and clipping: per model."""
    rows = [None, torch.arange(0, 1400), torch.arange(200, 1437), None]
    lrs, wds = [1.0, 0.5, 2.0, 1.0], [0.0, 1e-3, 1e-2, 0.0]
    exps, datas = [], []
    for i in range(4):
        spec = _spec(**optim)
        spec = spec.model_copy(
            update={"optim": spec.optim.model_copy(update={"lr": spec.optim.lr * lrs[i], "weight_decay": wds[i]})}
        )
        exps.append(Experiment(f"m{i}", spec, steps=90, eval_every=30, seed=i, watch_patience=2 if i == 0 else None))
        datas.append(digits if rows[i] is None else digits.with_train(digits.train.subset(rows[i])))
    batched = _together(exps, datas)
    rng_after_group = torch.get_rng_state()
    alone = _alone(exps, datas)
    assert torch.equal(rng_after_group, torch.get_rng_state())  # the next draw is the same either way
    for a, b in zip(batched, alone):
        _same(a, b)
        for (name, wa), wb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
            assert torch.allclose(wa, wb, atol=1e-5), name
    assert batched[0].early is not None and batched[0].early.val_loss == pytest.approx(
        alone[0].early.val_loss, abs=1e-5
    )
    assert len({round(r.val_loss, 4) for r in batched}) == 4  # four different experiments, not one four times


def test_dropout_written_out_on_a_cpu_draws_each_models_masks_as_alone(digits, monkeypatch):
    """Each model's dropout masks from its own stream, after its augmentation's draws: the
    numbers of alone, and the RNG where one at a time leaves it. From one stream for the group
    (as through vmap) the same experiments give other numbers."""
    from nnrecipe import together

    def exps():
        out = []
        for i, lr in enumerate([1e-3, 2e-3, 5e-4, 1e-3]):
            spec = Spec(
                optim={"name": "adam", "lr": lr},
                data={"source": "digits", "batch_size": 32, "augment": [{"name": "noise", "args": {"std": 0.05}}]},
                model={"arch": "mlp", "args": {"hidden": [32, 32], "dropout": 0.3}},
            )
            out.append(Experiment(f"m{i}", spec, steps=60, eval_every=30, seed=i))
        return out

    batched = _together(exps(), [digits] * 4)
    rng_after_group = torch.get_rng_state()
    alone = _alone(exps(), [digits] * 4)
    assert torch.equal(rng_after_group, torch.get_rng_state())
    for a, b in zip(batched, alone):
        _same(a, b)
    monkeypatch.setattr(together.Group, "_own_draws", lambda self, x: False)
    shared = _together(exps(), [digits] * 4)
    assert max(abs(a.train_loss - b.train_loss) for a, b in zip(shared, alone)) > 1e-3


def test_a_model_that_diverges_or_stops_early_stops_where_it_would_alone(digits, monkeypatch):
    """One model blows up (a huge learning rate), one runs out of early stopping's patience: the
    others train on; each stops at the step it stops at alone, with the weights it has there.
    Each one that stops leaves the stack, and the others' weights and optimizer state go on."""
    from nnrecipe import together

    base = _spec()
    blow = base.model_copy(update={"optim": base.optim.model_copy(update={"lr": 1e30})})
    stop = base.model_copy(update={"train": base.train.model_copy(update={"early_stopping": 1})})
    overfit = stop.model_copy(update={"optim": stop.optim.model_copy(update={"lr": 3e-2})})
    exps = [Experiment(f"m{i}", s, steps=200, eval_every=20, seed=i) for i, s in enumerate([base, blow, overfit, stop])]
    stacks, keep = [], together.Group.keep

    def spy(group, alive):
        keep(group, alive)
        stacks.append((list(alive), next(iter(group.params.values())).shape[0]))

    monkeypatch.setattr(together.Group, "keep", spy)
    batched, alone = _together(exps, [digits] * 4), _alone(exps, [digits] * 4)
    assert stacks == [([0, 2, 3], 3), ([0, 3], 2)]  # the diverged one left first, then the stopped one
    for a, b in zip(batched, alone):
        _same(a, b, tol=1e-4)
    assert batched[1].diverged and batched[1].steps < 200
    assert batched[2].history.stopped_early and batched[2].steps < 200 and batched[0].steps == 200


def test_an_evaluation_hook_that_ends_a_model_ends_it_there_alone_and_in_a_group(digits):
    """tune's pruner: a hook returning True after an evaluation ends that model's training there
    (steps, weights, curve as alone); the others train on without it."""
    seen: dict[str, list[int]] = {}

    def hook(name: str, end_at: int):
        def on_eval(step, model, result) -> bool:
            seen.setdefault(name, []).append(step)
            return step >= end_at

        return on_eval

    def exps():
        lrs = [1e-3, 3e-3, 2e-4, 5e-4]
        return [
            Experiment(f"m{i}", _spec(lr=lr), steps=120, eval_every=20, seed=i, on_eval=hook(f"m{i}", end))
            for i, (lr, end) in enumerate(zip(lrs, [200, 40, 200, 80]))
        ]

    batched = _together(exps(), [digits] * 4)
    steps_seen, seen = dict(seen), {}
    alone = _alone(exps(), [digits] * 4)
    assert steps_seen == seen and seen["m1"] == [20, 40] and seen["m0"][-1] == 120
    assert [r.steps for r in batched] == [120, 40, 120, 80]
    for a, b in zip(batched, alone):
        _same(a, b)


def test_checkpoints_of_a_group_hold_what_an_unbatched_run_writes(digits, tmp_path):
    """The best and last checkpoints (weights, optimizer state in torch's format, schedule, batch
    order, RNG): what an unbatched run writes and resumes exactly."""
    spec = _spec(schedule={"name": "cosine"})
    ckpts = {
        mode: [
            Checkpoints(last=tmp_path / f"{mode}{i}-last.pt", best=tmp_path / f"{mode}{i}-best.pt", key="k")
            for i in range(2)
        ]
        for mode in ("together", "alone")
    }
    exps = {
        mode: [Experiment(f"m{i}", spec, steps=60, eval_every=30, seed=i, checkpoints=c) for i, c in enumerate(cs)]
        for mode, cs in ckpts.items()
    }
    _together(exps["together"], [digits] * 2)
    _alone(exps["alone"], [digits] * 2)
    for i in range(2):
        a, b = (load_checkpoint(ckpts[m][i].last) for m in ("together", "alone"))
        assert a.keys() == b.keys() and a["step"] == b["step"] == 60 and a["key"] == "k"
        assert a["scheduler"] == b["scheduler"]
        oa, ob = a["optimizer"], b["optimizer"]
        assert oa["param_groups"] == ob["param_groups"] and oa["state"].keys() == ob["state"].keys()
        for k in ob["state"]:
            assert oa["state"][k].keys() == ob["state"][k].keys()
            for name, value in ob["state"][k].items():
                assert torch.allclose(oa["state"][k][name], value, atol=1e-5), (k, name)
        for name, value in b["model"].items():
            assert torch.allclose(a["model"][name], value, atol=1e-5), name
        ra, rb = a["resume"], b["resume"]
        assert ra.keys() == rb.keys() and ra["batches"]["taken"] == rb["batches"]["taken"]
        assert torch.equal(ra["batches"]["epoch_generator"], rb["batches"]["epoch_generator"])
        assert torch.equal(ra["rng"], rb["rng"])  # no augmentation, no dropout: no draws
        assert torch.allclose(ra["losses"], rb["losses"], atol=1e-5) and ra["best_step"] == rb["best_step"]
        best_a, best_b = (load_checkpoint(ckpts[m][i].best) for m in ("together", "alone"))
        assert best_a["step"] == best_b["step"]


def _planted(factory: str) -> Spec:
    return _spec().model_copy(
        update={"model": Spec(model={"arch": "python", "factory": f"{PLANTED / 'models.py'}:{factory}"}).model}
    )


def test_what_vmap_cannot_take_trains_one_at_a_time_with_the_numbers_of_alone(digits):
    """Data-dependent control flow: the group's first step fails under vmap, nothing is changed,
    and each experiment trains alone from its own start (bit for bit what alone gives)."""
    exps = [Experiment(f"m{i}", _planted("branches_on_data"), steps=40, eval_every=20, seed=i) for i in range(4)]
    results, why = run_group(exps, datas=[digits] * 4, device=CPU, base=BASE, writers=[None] * 4)
    assert why.startswith("vmap could not train them as one (") and ".item()" in why and "\n" not in why
    for a, b in zip(results, _alone(exps, [digits] * 4)):
        assert a.val_loss == b.val_loss and torch.equal(a.history.losses, b.history.losses)


def test_batchnorm_is_trained_one_at_a_time_and_says_why(digits):
    exps = [Experiment(f"m{i}", _planted("batchnorm_good"), steps=20, eval_every=20, seed=i) for i in range(2)]
    results, why = run_group(exps, datas=[digits] * 2, device=CPU, base=BASE, writers=[None, None])
    assert why == "bn1 (BatchNorm1d) updates its running statistics in place" and len(results) == 2
    # each its own training time (the stage's timeline), one after the other
    (a0, a1), (b0, b1) = (r.wall for r in results)
    assert a0 < a1 <= b0 < b1


# squeeze's 4 members and regularize's label-error folds and data-scaling subsets form groups
STAGES = {
    "train": {"steps": 200, "eval_every": 100},
    "stages": {
        "regularize": {"seeds": 2, "label_errors": {"folds": 4}},
        "squeeze": {"members": 4, "longer": {"enabled": False}},
    },
}


@pytest.mark.parametrize("stage", ["regularize", "squeeze"])
def test_stages_that_batch_give_the_verdicts_of_one_at_a_time(cli, in_tmp, stage):
    runs = {}
    for batch in (True, False):
        path = write_spec(in_tmp, {"name": f"b{batch}", "batch_models": batch, **STAGES}, name=f"b{batch}.yaml")
        result = cli(stage, "--config", path, "--json")
        assert result.exit_code in (0, 1), result.stderr
        said = " ".join(result.stderr.split())
        assert ("4 models trained as one" in said) is batch, said
        runs[batch] = json.loads(result.stdout)
    for a, b in zip(runs[True], runs[False], strict=True):
        assert (a["check"], a["status"]) == (b["check"], b["status"])
        assert close_numbers(a["observed"], b["observed"]), (a["check"], a["observed"], b["observed"])
    assert sum(v["status"] == "pass" for v in runs[True]) >= 2


def test_two_models_train_as_one_where_written_out_and_apart_through_vmap_on_a_cpu(digits):
    """On one CPU thread two written-out MLPs ran 1.16x one by one, two through vmap 0.76x
    (BENCHMARKS.md): a pair trains as one only where the forward is written out."""
    written = [Experiment(f"m{i}", _spec(), steps=20, eval_every=20, seed=i) for i in range(2)]
    assert run_group(written, datas=[digits] * 2, device=CPU, base=BASE, writers=[None] * 2)[1] == ""
    vmapped = [Experiment(f"m{i}", _planted("mlp"), steps=20, eval_every=20, seed=i) for i in range(2)]
    _, why = run_group(vmapped, datas=[digits] * 2, device=CPU, base=BASE, writers=[None] * 2)
    assert why == "through vmap, fewer than 4 models on a CPU train faster one at a time"
    assert run_group(vmapped * 2, datas=[digits] * 4, device=CPU, base=BASE, writers=[None] * 4)[1] == ""
    own = [  # a pair that differs in learning rate and weight decay: 1.13x as one, written out
        Experiment("m0", _spec(), steps=20, eval_every=20, seed=0),
        Experiment("m1", _spec(lr=3e-3, weight_decay=1e-3), steps=20, eval_every=20, seed=1),
    ]
    together_, why = run_group(own, datas=[digits] * 2, device=CPU, base=BASE, writers=[None] * 2)
    assert why == ""
    for a, b in zip(together_, _alone(own, [digits] * 2)):
        _same(a, b)
