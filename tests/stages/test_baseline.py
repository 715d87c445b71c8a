"""The baseline stage end to end: a correct setup passes every check; each planted bug is caught.

Planted models live in tests/planted/models.py, planted data in tests/planted/data_bugs.py.
"""

import json

import pytest

from conftest import PLANTED, write_spec

FAST = {"steps": 200, "eval_every": 100, "overfit_steps": 300}
FAST_BATCH = 64  # data.batch_size by default: the probes take one batch


def _spec(folder, *, model="mlp", data="clean", name=None, baseline=None, **extra):
    spec = {
        "name": name or f"{model}-{data}".replace("_", "-"),
        "data": {"source": "python", "factory": f"{PLANTED}/data_bugs.py:{data}"},
        "model": {"arch": "python", "factory": f"{PLANTED}/models.py:{model}"}
        if model != "builtin"
        else {"arch": "mlp"},
        "optim": {"lr": 1e-3},
        "stages": {"baseline": {**FAST, **(baseline or {})}},
    }
    spec.update(extra)
    return write_spec(folder, spec, name=f"{spec['name']}.yaml")


def _run(cli, path, *args):
    result = cli("baseline", "--config", path, "--json", *args)
    assert result.exit_code in (0, 1), result.stderr
    return result.exit_code, {v["check"]: v for v in json.loads(result.stdout)}


def test_correct_setup_passes_every_check_and_records_baselines(cli, in_tmp):
    code, v = _run(cli, _spec(in_tmp, name="good"))
    bad = {k: (x["status"], x["message"]) for k, x in v.items() if x["status"] not in ("pass", "skip")}
    assert code == 0 and not bad, bad
    assert v["human-baseline"]["status"] == "skip" and len(v) == 14
    run = in_tmp / "runs" / "good"
    summary = json.loads((run / "baseline" / "summary.json").read_text())
    assert summary["metric"] == "accuracy" and summary["baselines"]["majority-class"]["val_accuracy"] == pytest.approx(
        0.25, abs=0.05
    )
    assert summary["baselines"]["linear"]["val_accuracy"] > 0.5 and summary["model"]["val_accuracy"] > 0.9
    for png in (
        "model_input.png",
        "prediction_dynamics.png",
        "curves.png",
        "gradient_norms.png",
        "overfit_one_batch.png",
    ):
        assert (run / "baseline" / png).stat().st_size > 1000, png
    for exp in ("model", "zero-input", "linear"):  # one TensorBoard run per experiment
        assert list((run / "tb" / "baseline" / exp).glob("events.out.tfevents.*")), exp


def test_tensorboard_runs_overlay_and_hold_prediction_dynamics(cli, in_tmp):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _run(cli, _spec(in_tmp, name="tb"))
    tags = {}
    for exp in ("model", "zero-input", "linear"):
        acc = EventAccumulator(str(in_tmp / "runs" / "tb" / "tb" / "baseline" / exp), size_guidance={"images": 0})
        acc.Reload()
        tags[exp] = acc.Tags()
    assert all("train/loss" in t["scalars"] and "train/val_loss" in t["scalars"] for t in tags.values())
    assert "prediction_dynamics" in tags["model"]["images"]


PLANTED_BUGS = [
    # (id, spec kwargs, check, status)
    ("softmax-output", {"model": "softmax_output"}, "output-form", "fail"),
    ("log-softmax-to-ce", {"model": "log_softmax_output"}, "output-form", "warn"),
    ("raw-logits-to-nll", {"model": "mlp", "loss": "nll"}, "output-form", "fail"),
    ("batch-mixing-view", {"model": "batch_mixing"}, "batch-independence", "fail"),
    ("unused-layer", {"model": "unused_layer"}, "gradients-flow", "fail"),
    ("detached-layer", {"model": "detached_layer"}, "gradients-flow", "fail"),
    ("dead-relus", {"model": "dead_relus"}, "gradients-flow", "fail"),
    ("zero-gate-frozen", {"model": "zero_gate_frozen"}, "gradients-flow", "fail"),
    ("dead-relu-modules", {"model": "dead_relu_modules"}, "gradients-flow", "fail"),
    ("ignores-input", {"model": "ignores_input"}, "input-independent", "fail"),
    ("ignores-input-overfit", {"model": "ignores_input"}, "overfit-one-batch", "fail"),
    ("x-y-shuffled-separately", {"data": "shuffled_labels"}, "input-independent", "fail"),
    ("huge-final-init", {"model": "huge_final_init"}, "loss-at-init", "fail"),
    ("huge-final-init-kl", {"model": "huge_final_init"}, "init-well", "fail"),
    ("dropout-in-eval", {"model": "dropout_in_eval"}, "eval-deterministic", "fail"),
    ("unseeded-data", {"data": "unseeded"}, "reproducible", "fail"),
    ("unseeded-model-init", {"model": "unseeded_init"}, "reproducible", "fail"),
    ("imbalanced-default-bias", {"data": "imbalanced_binary"}, "init-well", "warn"),
    ("lr-near-zero", {"optim": {"lr": 1e-9}}, "loss-decreases", "fail"),
    ("larger-model-is-not-larger", {"baseline": {"larger_model_args": {"width": 1}}}, "loss-decreases", "warn"),
    ("below-human", {"data": "shuffled_labels", "baseline": {"human_accuracy": 0.9}}, "human-baseline", "warn"),
    ("relu-on-logits-collapse", {"model": "relu_logits", "baseline": {"overfit_lr": 0.3}}, "overfit-one-batch", "fail"),
    ("batchnorm-stale-statistics", {"model": "batchnorm_stale"}, "train-eval-consistency", "fail"),
    ("batchnorm-stale-overfit", {"model": "batchnorm_stale"}, "overfit-one-batch", "fail"),
]


@pytest.mark.parametrize("case, kwargs, check, status", PLANTED_BUGS, ids=[p[0] for p in PLANTED_BUGS])
def test_planted_bug_is_caught(cli, in_tmp, case, kwargs, check, status):
    code, v = _run(cli, _spec(in_tmp, name=case, **kwargs))
    assert v[check]["status"] == status, v[check]
    assert v[check]["hint"] and v[check]["observed"] is not None and v[check]["expected"] is not None
    assert code == (1 if any(x["status"] == "fail" for x in v.values()) else 0)


PASSING_COUNTERPARTS = [
    ("log-softmax-to-nll", {"model": "log_softmax_output", "loss": "nll"}, "output-form"),
    ("ignored-unused-layer", {"model": "unused_layer", "baseline": {"ignore_params": ["extra."]}}, "gradients-flow"),
    ("imbalanced-builtin-init", {"data": "imbalanced_binary", "model": "builtin"}, "init-well"),
    ("larger-model", {"baseline": {"larger_model_args": {"width": 256}}}, "loss-decreases"),
    ("above-human", {"baseline": {"human_accuracy": 0.5}}, "human-baseline"),
    ("batchnorm-momentum-0.1", {"model": "batchnorm_good"}, "train-eval-consistency"),
    ("relu-logits-at-a-small-lr", {"model": "relu_logits"}, "train-eval-consistency"),
]


def test_failures_name_their_cause(cli, in_tmp):
    """The diagnosis, not the generic hint: a dead ReLU on the logits is named as the layer where
    every example became alike; stale BatchNorm statistics as the layer, its momentum and batch."""
    _, v = _run(cli, _spec(in_tmp, name="collapse", model="relu_logits", baseline={"overfit_lr": 0.3}))
    o = v["overfit-one-batch"]
    assert "every example gets the same output" in o["message"] and "out_act (ReLU, every output 0" in o["message"], o
    assert "activation on the logits" in o["hint"] and o["observed"]["alike_at"] == "out_act"
    _, v = _run(cli, _spec(in_tmp, name="stale", model="batchnorm_stale"))
    t = v["train-eval-consistency"]
    assert "bn1" in t["message"] and "momentum 0.001" in t["message"] and "batches of 64" in t["message"], t
    assert t["observed"]["eval_mode_loss"] > 10 * t["observed"]["train_mode_loss"]
    o, i = v["overfit-one-batch"], v["input-independent"]
    assert "memorised in train mode" in o["message"] and "train-eval-consistency" in o["hint"], o
    assert (
        i["status"] == "fail" and "eval mode loses it" in i["message"] and "val_loss_real_train_mode" in i["observed"]
    ), i


@pytest.mark.parametrize("case, kwargs, check", PASSING_COUNTERPARTS, ids=[p[0] for p in PASSING_COUNTERPARTS])
def test_passing_counterpart(cli, in_tmp, case, kwargs, check):
    _, v = _run(cli, _spec(in_tmp, name=case, **kwargs))
    assert v[check]["status"] == "pass", v[check]


def test_regression_baseline(cli, in_tmp):
    result = cli(
        "baseline", "data.source=synthetic", "task=regression", "name=reg", "stages.baseline.steps=200", "--json"
    )
    assert result.exit_code == 0, result.stderr
    v = {x["check"]: x for x in json.loads(result.stdout)}
    assert v["output-form"]["status"] == "skip" and v["dumb-baselines"]["status"] == "pass"
    assert "mean" in json.loads((in_tmp / "runs" / "reg" / "baseline" / "summary.json").read_text())["baselines"]


def test_lazy_data_through_a_dataloader(cli, in_tmp):
    code, v = _run(cli, _spec(in_tmp, name="lazy", data="lazy_clean"), "data.num_workers=0")
    bad = {k: (x["status"], x["message"]) for k, x in v.items() if x["status"] not in ("pass", "skip")}
    assert code == 0 and not bad, bad


def _regression(folder, name, *, model="mlp", loss=None):
    spec = {
        "name": name,
        "task": "regression",
        "data": {"source": "python", "factory": f"{PLANTED}/regression.py:data"},
        "model": {"arch": "python", "factory": f"{PLANTED}/regression.py:{model}"},
        "optim": {"lr": 1e-3},
        "stages": {"baseline": FAST},
    }
    if loss:
        spec["loss"] = {"factory": f"{PLANTED}/regression.py:{loss}"}
    return write_spec(folder, spec, name=f"{name}.yaml")


def test_a_loss_that_broadcasts_the_data_s_own_targets_fails_loss_broadcasting(cli, in_tmp):
    """nnrecipe gives a regression loss (N, 1) targets, so nn.MSELoss trains correctly here; on
    the data's own (N,) targets, as the user's script feeds them, it averages an (N, N) matrix."""
    _, v = _run(cli, _regression(in_tmp, "broadcast", loss="mse_module"))
    b = v["loss-broadcasting"]
    assert b["status"] == "fail" and "broadcasts" in b["message"], b
    assert b["observed"]["targets_data"] == [FAST_BATCH] and b["observed"]["targets_nnrecipe"] == [FAST_BATCH, 1]
    assert b["observed"]["relative_difference"] > 0.01  # an (N, N) mean, not N differences
    _, v = _run(cli, _regression(in_tmp, "reshaped", loss="mse_reshaped"))
    assert v["loss-broadcasting"]["status"] == "pass" and "both ways" in v["loss-broadcasting"]["message"]
    _, v = _run(cli, _regression(in_tmp, "builtin"))
    assert v["loss-broadcasting"]["status"] == "skip" and "built-in" in v["loss-broadcasting"]["message"]
    assert "user-warnings" not in v  # nnrecipe's own probe call of the loss is not the user's warning


def test_warnings_from_the_user_s_code_are_a_verdict_with_their_origin(cli, in_tmp):
    code, v = _run(cli, _regression(in_tmp, "warns", model="warns_in_forward"))
    w = v["user-warnings"]
    assert w["status"] == "warn" and w["observed"]["count"] == 1, w
    assert "regression.py:" in w["observed"]["origin"] and "torch.tensor(sourceTensor)" in w["observed"]["first"]
    assert w["observed"]["raised_in"].startswith("model.factory") and "forward" in w["observed"]["raised_in"]
    # the same run again in this process: the warning is reported again (Python shows one once per place)
    _, again = _run(cli, _regression(in_tmp, "warns", model="warns_in_forward"))
    assert again["user-warnings"]["observed"]["count"] == 1


def test_a_zero_init_residual_branch_is_not_a_missing_gradient(cli, in_tmp):
    """timm's and torchvision's zero_init_residual: the last BatchNorm of a block starts at 0, so
    the block's layers get their first gradient at step 2 (a false 'no gradient' before; timm's
    resnet10t failed gradients-flow so). Frozen at 0 (zero_gate_frozen above) it is a real fail."""
    code, v = _run(cli, _spec(in_tmp, model="zero_init_residual", name="zero-init"))
    g = v["gradients-flow"]
    assert g["status"] == "pass" and "from the second step on" in g["message"], g
    assert "branch.3.weight" in g["observed"]["zero_init_weights"] and g["observed"]["gradient_from_step_2"]
