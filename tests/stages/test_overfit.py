"""The overfit stage end to end: a correct setup fits and passes; each planted problem is caught."""

import json

import pytest
import torch

from conftest import PLANTED, write_spec

FAST = {"optim": {"lr": 1e-3}, "train": {"steps": 300, "eval_every": 100}, "stages": {"baseline": {"steps": 200}}}


def _spec(folder, name, *, data="clean", overfit=None, optim=None, **extra):
    spec = {
        "name": name,
        "data": {"source": "python", "factory": f"{PLANTED}/data_bugs.py:{data}"},
        "model": {"arch": "mlp", "args": {"hidden": [64]}},
        "optim": {**FAST["optim"], **(optim or {})},
        "train": FAST["train"],
        "stages": {"baseline": FAST["stages"]["baseline"], "overfit": overfit or {}},
    }
    spec.update(extra)
    return write_spec(folder, spec, name=f"{name}.yaml")


def _overfit(cli, path, *args):
    result = cli("overfit", "--config", path, "--json", *args)
    assert result.exit_code in (0, 1), result.stderr
    return result.exit_code, {v["check"]: v for v in json.loads(result.stdout)}


def test_correct_setup_fits_beats_baselines_and_saves_checkpoints(cli, in_tmp):
    path = _spec(in_tmp, "good")
    assert cli("baseline", "--config", path).exit_code == 0
    code, v = _overfit(cli, path)
    assert code == 0 and [v[c]["status"] for c in ("fits-train", "beats-baselines", "lr-schedule")] == ["pass"] * 3
    assert v["lr-range"]["status"] == "skip"
    run = in_tmp / "runs" / "good" / "overfit"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final"]["train_accuracy"] >= 0.99 and summary["best_step"] in (100, 200, 300)
    best = torch.load(in_tmp / "runs" / "good" / summary["checkpoints"]["best"], weights_only=True)
    assert best["step"] == summary["best_step"] and "model" in best
    for png in ("curves.png", "lr.png"):
        assert (run / png).stat().st_size > 1000


def test_beats_baselines_skips_without_the_baseline_stage(cli, in_tmp):
    _, v = _overfit(cli, _spec(in_tmp, "alone"))
    assert v["beats-baselines"]["status"] == "skip" and "baseline stage has not run" in v["beats-baselines"]["message"]


def test_beats_baselines_skips_when_the_split_changed(cli, in_tmp):
    path = _spec(in_tmp, "moved")
    assert cli("baseline", "--config", path).exit_code == 0
    _, v = _overfit(cli, path, "data.args={seed: 5}")
    assert v["beats-baselines"]["status"] == "skip" and "other data" in v["beats-baselines"]["message"]


def test_val_encoded_differently_fails_beats_baselines(cli, in_tmp):
    path = _spec(in_tmp, "shifted", data="val_labels_shifted")
    cli("baseline", "--config", path)
    code, v = _overfit(cli, path)
    assert v["fits-train"]["status"] == "pass" and v["beats-baselines"]["status"] == "fail" and code == 1


PROBLEMS = [
    (
        "lr-stepped-per-batch",
        {"optim": {"schedule": {"factory": f"{PLANTED}/schedules.py:epoch_step_lr"}}},
        "lr-schedule",
        "fail",
    ),
    ("cosine-in-overfit", {"optim": {"schedule": "cosine"}}, "lr-schedule", "warn"),
    ("huge-weight-decay", {"optim": {"weight_decay": 5.0}}, "fits-train", "fail"),
    ("lr-diverges", {"optim": {"name": "sgd", "lr": 1e30, "momentum": 0.0}}, "fits-train", "fail"),
    ("model-too-small", {"overfit": {"model": {"arch": "linear"}}, "data": "shuffled_labels"}, "fits-train", "fail"),
]


@pytest.mark.parametrize("case, kwargs, check, status", PROBLEMS, ids=[p[0] for p in PROBLEMS])
def test_planted_problem_is_caught(cli, in_tmp, case, kwargs, check, status):
    code, v = _overfit(cli, _spec(in_tmp, case, **kwargs))
    assert v[check]["status"] == status, v[check]
    assert v[check]["hint"]
    assert code == (1 if any(x["status"] == "fail" for x in v.values()) else 0)


def test_divergence_names_the_step_and_the_last_finite_loss(cli, in_tmp):
    _, v = _overfit(cli, _spec(in_tmp, "nan", optim={"name": "sgd", "lr": 1e30, "momentum": 0.0}))
    o = v["fits-train"]["observed"]
    assert (
        1 <= o["non_finite_at_step"] <= 50
        and o["last_finite_loss"] > 0
        and "NaN/Inf at step" in v["fits-train"]["message"]
    )


def test_warmup_then_constant_user_schedule_passes(cli, in_tmp):
    _, v = _overfit(cli, _spec(in_tmp, "const", optim={"schedule": {"factory": f"{PLANTED}/schedules.py:constant"}}))
    assert v["lr-schedule"]["status"] == "pass"


def test_lr_range_suggests_and_flags_an_lr_past_divergence(cli, in_tmp):
    code, v = _overfit(cli, _spec(in_tmp, "range"), "--lr-range")
    r = v["lr-range"]
    assert r["status"] == "pass" and 1e-5 < r["observed"]["suggested_lr"] < 1.0
    assert (in_tmp / "runs" / "range" / "overfit" / "lr_range.png").exists()
    high = write_spec(in_tmp, {"name": "range-high", "optim": {"lr": 5.0}, "train": {"steps": 100}}, name="high.yaml")
    _, v = _overfit(cli, high, "--lr-range")  # digits: Adam diverges well below lr 5
    assert v["lr-range"]["status"] == "fail"


def test_ladder_one_change_at_a_time(cli, in_tmp):
    ladder = [{"arch": "linear"}, {"arch": "mlp", "args": {"hidden": [64]}}, {"arch": "mlp", "args": {"hidden": [512]}}]
    _, v = _overfit(cli, _spec(in_tmp, "ladder", data="shuffled_labels", overfit={"ladder": ladder}))
    assert [v[f"ladder-{i}"]["status"] for i in range(3)] == ["skip", "pass", "pass"]
    assert (in_tmp / "runs" / "ladder" / "overfit" / "ladder.png").exists()
    worse = [{"arch": "mlp", "args": {"hidden": [128]}}, {"arch": "linear"}]
    _, v = _overfit(cli, _spec(in_tmp, "ladder-worse", data="shuffled_labels", overfit={"ladder": worse}))
    assert v["ladder-1"]["status"] == "fail"


def test_confusion_per_class_metrics_and_worst_examples(cli, in_tmp):
    """Val labels encoded as c+1 (a planted label mix-up): the confusion matrix puts each true
    class c+1 at predicted c, and the worst examples are confident, wrong and sorted by loss."""
    path = _spec(in_tmp, "mixup", data="val_labels_shifted")
    _overfit(cli, path)
    run = in_tmp / "runs" / "mixup" / "overfit"
    summary = json.loads((run / "summary.json").read_text())
    conf = summary["confusion"]
    n = sum(map(sum, conf))
    assert n == sum(r["support"] for r in summary["per_class"])
    assert abs(sum(conf[i][i] for i in range(len(conf))) / n - summary["final"]["val_accuracy"]) < 1e-9
    assert all(max(range(4), key=lambda j: conf[(c + 1) % 4][j]) == c for c in range(4))
    import csv

    rows = list(csv.DictReader((run / "mispredictions.csv").open()))
    assert rows and all(r["true"] != r["predicted"] for r in rows)
    losses = [float(r["loss"]) for r in rows]
    assert losses == sorted(losses, reverse=True)
    for png in ("confusion.png", "mispredictions.png"):
        assert (run / png).stat().st_size > 1000


def test_each_number_names_the_weights_it_was_measured_on(cli, in_tmp):
    """An LR that jumps for the last third wrecks the last step's model: val is judged at the
    best checkpoint (an earlier step), train at the last step, and each number says which."""
    path = _spec(
        in_tmp,
        "spike",
        optim={"schedule": {"factory": f"{PLANTED}/schedules.py:late_spike"}},
        train={"steps": 300, "eval_every": 50},
    )
    assert cli("baseline", "--config", path).exit_code in (0, 1)
    _, v = _overfit(cli, path)
    summary = json.loads((in_tmp / "runs" / "spike" / "overfit" / "summary.json").read_text())
    final, best = summary["final"], summary["best_step"]
    assert best < 300 and final["val_step"] == best and final["train_step"] == 300, (best, final)
    at_best = next(e for e in summary["evals"] if e["step"] == best)
    assert final["val_accuracy"] == pytest.approx(at_best["val_accuracy"])  # the best checkpoint's, not the last's
    b, f = v["beats-baselines"], v["fits-train"]
    assert b["observed"]["val_step"] == best and f"step {best}, the best checkpoint" in b["message"], b
    assert f["observed"]["train_step"] == 300
