"""The regularize stage end to end: each verdict passes on a correct setup and catches its bug."""

import json

from conftest import PLANTED, write_spec
from nnrecipe.spec import load_spec

OFF = {"dropout": None, "weight_decay": None, "early_stopping": False}  # knobs a test does not need
OFF_DATA = {"data_scaling": {"enabled": False}, "label_errors": {"enabled": False}}  # tests/stages/test_data_value.py


def _spec(folder, name, data, *, knobs=None, augment=None, steps=300, regularize=None, source="python", **extra):
    d = {
        "source": source,
        **({"factory": f"{PLANTED}/regularize_data.py:{data}"} if source == "python" else {"args": data}),
    }
    if augment is not None:
        d["augment"] = augment
    spec = {
        "name": name,
        "data": d,
        "train": {"steps": steps, "eval_every": max(1, steps // 10)},
        "stages": {"regularize": {"seeds": 1, "knobs": {**OFF, **(knobs or {})}, **OFF_DATA, **(regularize or {})}},
    }
    spec.update(extra)
    return write_spec(folder, spec, name=f"{name}.yaml")


def _regularize(cli, path, *args):
    result = cli("regularize", "--config", path, "--json", *args)
    assert result.exit_code in (0, 1), result.stderr
    return result.exit_code, {v["check"]: v for v in json.loads(result.stdout)}


def test_a_flip_of_direction_dependent_labels_fails_and_a_label_aware_flip_passes(cli, in_tmp):
    code, v = _regularize(
        cli, _spec(in_tmp, "flip", "left_right", augment=[{"name": "hflip"}], knobs={"augment": True})
    )
    assert code == 1 and v["augment-preserves-labels"]["status"] == "fail"
    assert v["augment-preserves-labels"]["observed"]["retention"] < 0.5
    assert v["augmentation"]["status"] == "warn" and v["augmentation"]["observed"]["effect"] == "hurt"
    assert (in_tmp / "runs" / "flip" / "regularize" / "augment.png").stat().st_size > 1000
    aware = [{"factory": f"{PLANTED}/regularize_data.py:flip_labels"}]  # flips the image and swaps the label with it
    code, v = _regularize(cli, _spec(in_tmp, "aware", "left_right", augment=aware, knobs={"augment": True}))
    assert code == 0 and v["augment-preserves-labels"]["status"] == "pass"
    assert v["augment-preserves-labels"]["observed"]["retention"] > 0.9


def test_scrambled_pixels_leave_filters_like_noise_and_real_digits_do_not(cli, in_tmp):
    code, v = _regularize(cli, _spec(in_tmp, "scrambled", "scrambled_digits", steps=600))
    f = v["first-layer-filters"]
    assert f["status"] == "warn" and "no smoother than random init" in f["message"]
    code, v = _regularize(cli, _spec(in_tmp, "digits", {}, source="digits", steps=600))
    f = v["first-layer-filters"]
    assert code == 0 and f["status"] == "pass" and f["observed"]["z"] > 10
    assert (in_tmp / "runs" / "digits" / "regularize" / "filters.png").stat().st_size > 1000


def test_early_stopping_helps_on_noisy_labels_and_best_yaml_runs(cli, in_tmp):
    """A small training set with 40% wrong labels: the MLP memorises them; stopping early is a real gain."""
    noisy = {
        "num_train": 300,
        "num_val": 1000,
        "num_features": 20,
        "num_classes": 4,
        "class_sep": 1.5,
        "label_noise": 0.4,
    }
    path = _spec(
        in_tmp,
        "noisy",
        noisy,
        source="synthetic",
        knobs={"early_stopping": True},
        model={"arch": "mlp", "args": {"hidden": [256, 256]}},
        optim={"lr": 1e-3},
        train={"steps": 1500, "eval_every": 100},
    )
    code, v = _regularize(cli, path)
    es = v["early-stopping"]
    assert code == 0 and es["status"] == "pass" and es["observed"]["effect"] == "helped" and es["observed"]["z"] >= 3
    assert es["observed"]["kept_step"] < 1500 and es["observed"]["val_loss_at_kept"] < es["observed"]["val_loss_at_end"]
    assert (
        v["generalization-gap"]["status"] == "pass"
        and v["generalization-gap"]["observed"]["gap_after"] < v["generalization-gap"]["observed"]["gap_before"]
    )
    run = in_tmp / "runs" / "noisy" / "regularize"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["helped"] == ["early-stopping"] and summary["best"]["name"] == "early-stopping"
    assert (run / "best.yaml").read_text().startswith("# nnrecipe run --config ")
    best, _ = load_spec(run / "best.yaml")
    assert best.train.early_stopping == 3 and best.train.steps == 1500
    assert cli("validate", "--config", run / "best.yaml").exit_code == 0
    import torch

    kept = torch.load(run / "checkpoints" / "best.pt", weights_only=True)  # the weights early stopping kept
    assert summary["best"]["checkpoint"].endswith("regularize/checkpoints/best.pt") and "model" in kept
    for png in ("experiments.png", "val_curves.png"):
        assert (run / png).stat().st_size > 1000


def test_a_knob_that_changes_nothing_is_no_effect_even_after_more_seeds(cli, in_tmp):
    path = _spec(
        in_tmp,
        "noop",
        {"class_sep": 3.0},
        source="synthetic",
        knobs={"weight_decay": 1e-12},
        steps=200,
        regularize={"seeds": 2},
    )
    code, v = _regularize(cli, path)
    wd = v["weight-decay"]
    assert (
        code == 0
        and wd["status"] == "pass"
        and wd["observed"]["effect"] == "no effect"
        and wd["observed"]["seeds"] == 2
    )
    assert abs(wd["observed"]["z"]) < 3 and v["combined"]["status"] == "skip"
    tb = in_tmp / "runs" / "noop" / "tb" / "regularize"
    assert {"reference", "reference-seed1", "weight-decay", "weight-decay-seed1"} <= {p.name for p in tb.iterdir()}


def test_the_second_seed_trained_ahead_is_used_only_where_the_next_round_asks_for_it(cli, in_tmp):
    """The first round trains every knob and the reference at the first two seeds (the second
    round always asks for the second), as one where they share an architecture. A knob that
    diverged at the first seed gets no more seeds: its second run, trained ahead, is not used."""
    path = _spec(
        in_tmp,
        "ahead",
        {"class_sep": 3.0},
        source="synthetic",
        knobs={"weight_decay": 1e4, "dropout": 0.2},
        steps=100,
        regularize={"seeds": 3},
        optim={"name": "sgd", "lr": 0.1},
    )
    result = cli("regularize", "--config", path, "--json")
    assert result.exit_code in (0, 1), result.stderr
    v = {x["check"]: x for x in json.loads(result.stdout)}
    said = " ".join(result.stderr.split())
    assert "4 models trained as one: reference, weight-decay, reference-seed1, ..." in said, said
    assert v["weight-decay"]["status"] == "fail" and v["weight-decay"]["observed"] == {"diverged_seeds": [0]}
    assert v["dropout"]["observed"]["seeds"] == 3  # no effect after 2 seeds: the third
    summary = json.loads((in_tmp / "runs" / "ahead" / "regularize" / "summary.json").read_text())
    rows = {r["name"]: r for r in summary["experiments"]}
    assert rows["weight-decay"]["diverged"] and rows["weight-decay"]["val_loss"] is None  # a diverged knob's row
    assert rows["reference"]["seeds"] == 3 and rows["weight-decay"]["effect"] == "diverged"


def test_every_knob_runs_and_pretrained_weights_help(cli, in_tmp):
    donor = _spec(in_tmp, "donor", "left_right", steps=300)
    assert cli("overfit", "--config", donor).exit_code == 0
    weights = in_tmp / "runs" / "donor" / "overfit" / "checkpoints" / "last.pt"
    knobs = {
        "batch_size": 16,
        "downsample": 2,
        "smaller_model": 0.5,
        "larger_model": 2.0,
        "pretrained": str(weights),
        "dropout": 0.2,
        "weight_decay": 1e-3,
        "early_stopping": True,
    }
    code, v = _regularize(cli, _spec(in_tmp, "knobs", "left_right", knobs=knobs, steps=10))
    for check in (
        "smaller-batch",
        "smaller-input",
        "smaller-model",
        "larger-model",
        "pretrained",
        "dropout",
        "weight-decay",
    ):
        assert v[check]["status"] in ("pass", "warn") and v[check]["observed"]["seeds"] == 1, v[check]
    assert v["pretrained"]["observed"]["effect"] == "helped" and v["pretrained"]["observed"]["val_accuracy"] > 0.95
    assert v["augmentation"]["status"] == "skip"


def test_a_knob_that_collapses_the_model_is_named_with_the_layer(cli, in_tmp):
    """Dropout on: the planted model's logits pass a ReLU whose bias starts at -100, so every
    output is 0. The knob hurts, and its verdict says why (the layer where outputs are alike);
    the reference (dropout off) is the plain MLP and does not collapse."""
    model = {"arch": "python", "factory": f"{PLANTED}/models.py:collapses_with_dropout"}
    path = _spec(in_tmp, "dead", {}, source="digits", knobs={"dropout": 0.2}, model=model, optim={"lr": 1e-3})
    code, v = _regularize(cli, path)
    d = v["dropout"]
    assert d["status"] == "warn" and "every example gets the same output" in d["message"], d
    assert d["observed"]["alike_at"] and "outputs 0" in d["hint"], d
    assert v["generalization-gap"]["status"] != "fail"
