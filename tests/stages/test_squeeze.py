"""The squeeze stage end to end: ensembles, distillation, training on, final artefacts, --resume."""

import json
import os
import signal
import subprocess
import sys
import time

import torch

from conftest import PLANTED, write_spec
from nnrecipe.spec import load_spec

QUICK = {"members": 3, "longer": {"enabled": False}, "distill": {"enabled": False}}


def _spec(folder, name, *, data, model=None, train=None, squeeze=None, task="classification", optim=None, **top):
    spec = {
        **top,
        "name": name,
        "task": task,
        "data": data,
        "model": model or {"arch": "mlp", "args": {"hidden": [64]}},
        "optim": optim or {"lr": 1e-3},
        "train": train or {"steps": 300, "eval_every": 100},
        "stages": {"squeeze": squeeze or QUICK},
    }
    return write_spec(folder, spec, name=f"{name}.yaml")


def _squeeze(cli, path, *args):
    result = cli("squeeze", "--config", path, "--json", *args)
    assert result.exit_code in (0, 1), result.stderr
    return result.exit_code, {v["check"]: v for v in json.loads(result.stdout)}


def test_seeded_members_beat_their_members_on_a_small_noisy_task(cli, in_tmp):
    """Regression from 200 noisy examples with a wide MLP: each seed overfits the noise its own way."""
    data = {
        "source": "synthetic",
        "args": {"num_train": 200, "num_val": 5000, "num_test": 1000, "num_features": 16, "noise_std": 1.0},
    }
    path = _spec(
        in_tmp,
        "noisy",
        data=data,
        task="regression",
        model={"arch": "mlp", "args": {"hidden": [256, 256]}},
        optim={"lr": 3e-3},
        train={"steps": 800, "eval_every": 100},
        squeeze={**QUICK, "members": 5},
    )
    code, v = _squeeze(cli, path)
    e = v["ensemble-gain"]
    assert code == 0 and e["status"] == "pass" and "gains beyond noise" in e["message"]
    assert e["observed"]["z_vs_average_member"] >= 3 and e["observed"]["z_vs_best_member"] > 0
    assert e["observed"]["test_ensemble"] < e["observed"]["test_average_member"]  # mse on the test split agrees
    run = in_tmp / "runs" / "noisy" / "squeeze"
    assert (run / "ensemble_size.png").stat().st_size > 1000
    summary = json.loads((run / "summary.json").read_text())
    assert summary["size_curve_val"][-1] < summary["size_curve_val"][0]


def test_members_that_ignore_the_seed_are_caught(cli, in_tmp):
    """A factory that reseeds torch, and full-batch training: every member is the same network."""
    data = {"source": "python", "factory": f"{PLANTED}/data_bugs.py:clean", "args": {"n_train": 200}, "batch_size": 256}
    model = {"arch": "python", "factory": f"{PLANTED}/models.py:fixed_seed"}
    code, v = _squeeze(cli, _spec(in_tmp, "copies", data=data, model=model))
    assert v["ensemble-gain"]["status"] == "warn" and "identical" in v["ensemble-gain"]["message"]
    good = {"arch": "python", "factory": f"{PLANTED}/models.py:mlp"}  # the same, seeded by nnrecipe
    code, v = _squeeze(cli, _spec(in_tmp, "seeded", data=data, model=good))
    assert v["ensemble-gain"]["status"] == "pass" and v["ensemble-gain"]["observed"]["output_spread"] > 0.01


def test_soft_targets_beat_hard_labels_when_the_labels_are_noisy(cli, in_tmp):
    """30% wrong train labels; members stop early, so their predictions on train are cleaner than
    the labels: a student on their soft targets beats the same student on the hard labels."""
    data = {
        "source": "synthetic",
        "args": {
            "num_train": 500,
            "num_val": 1000,
            "num_test": 1000,
            "num_features": 20,
            "num_classes": 4,
            "class_sep": 3.0,
            "label_noise": 0.3,
        },
    }
    path = _spec(
        in_tmp,
        "distill",
        data=data,
        model={"arch": "mlp", "args": {"hidden": [256, 256]}},
        train={"steps": 1500, "eval_every": 50, "early_stopping": 3},
        squeeze={"members": 5, "longer": {"enabled": False}},
    )
    code, v = _squeeze(cli, path)
    d = v["distillation"]
    assert code == 0 and d["status"] == "pass" and "beats" in d["message"] and d["observed"]["z_soft_vs_hard"] >= 3
    assert d["observed"]["test_student"] > d["observed"]["test_hard_label"]
    assert (in_tmp / "runs" / "distill" / "squeeze" / "distillation.png").stat().st_size > 1000


def test_training_on_and_the_final_artefacts(cli, in_tmp):
    data = {"source": "synthetic", "args": {"num_test": 300}}
    path = _spec(
        in_tmp, "final", data=data, squeeze={"members": 2, "distill": {"enabled": True}, "longer": {"extra_steps": 200}}
    )
    code, v = _squeeze(cli, path)
    lt = v["longer-training"]
    assert (
        code == 0
        and lt["status"] == "pass"
        and lt["observed"]["recorded_val_loss"] == lt["observed"]["reloaded_val_loss"]
    )
    assert lt["observed"]["extra_steps"] == 200 and lt["observed"]["steps_before"] == 300
    run = in_tmp / "runs" / "final" / "squeeze"
    summary = json.loads((run / "summary.json").read_text())
    state = torch.load(run / "final.pt", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(t, torch.Tensor) for t in state.values())
    final, _ = load_spec(run / "final.yaml")
    assert summary["final"]["test"] is not None and set(summary["test"]) >= {
        "best_member",
        "ensemble",
        "student",
        "longer",
    }
    assert final.task == "classification" and summary["start"] == "the spec"


def test_a_checkpoint_that_does_not_restore_the_model_fails(cli, in_tmp):
    data = {"source": "python", "factory": f"{PLANTED}/data_bugs.py:clean"}
    model = {"arch": "python", "factory": f"{PLANTED}/models.py:unregistered_state"}
    code, v = _squeeze(
        cli, _spec(in_tmp, "state", data=data, model=model, squeeze={"members": 2, "distill": {"enabled": False}})
    )
    assert (
        code == 1 and v["longer-training"]["status"] == "fail" and "does not restore" in v["longer-training"]["message"]
    )


def test_squeeze_starts_from_regularize_best_yaml(cli, in_tmp):
    data = {"source": "synthetic", "args": {"class_sep": 4.0}}
    path = _spec(in_tmp, "chain", data=data)
    spec = json.loads(json.dumps(load_spec(path)[0].dump()))
    spec["stages"]["regularize"] = {"seeds": 1, "knobs": {"dropout": None, "weight_decay": None}}
    write_spec(in_tmp, spec, name="chain.yaml")
    assert cli("regularize", "--config", path).exit_code == 0
    _squeeze(cli, path)
    summary = json.loads((in_tmp / "runs" / "chain" / "squeeze" / "summary.json").read_text())
    assert summary["start"] == "regularize/best.yaml"


def test_resume_after_a_kill_mid_member_skips_finished_members_and_matches(cli, in_tmp):
    data = {"source": "synthetic", "args": {"num_train": 2000}}
    sq = {"members": 3, "distill": {"enabled": False}, "longer": {"enabled": False}}
    # members one at a time (a group's members checkpoint side by side, and a group is never
    # resumed as one: each member resumes alone from its own last checkpoint)
    path = _spec(in_tmp, "resume", data=data, train={"steps": 1500, "eval_every": 500}, squeeze=sq, batch_models=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nnrecipe.cli", "squeeze", "--config", str(path)],
        cwd=in_tmp,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    members = in_tmp / "runs" / "resume" / "squeeze" / "members"
    deadline = time.time() + 120
    while not (members / "member-1-last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # member 0 is finished, member 1 has a checkpoint and is training on
    proc.wait()
    assert (members / "member-0.json").exists() and not (members / "member-1.json").exists()
    code, resumed = _squeeze(cli, path, "--resume")
    summary = json.loads((in_tmp / "runs" / "resume" / "squeeze" / "summary.json").read_text())
    assert summary["resumed_members"] == [0]
    assert [c["member"] for c in summary["continued_members"]] == [1] and summary["continued_members"][0][
        "from_step"
    ] >= 500
    code, fresh = _squeeze(cli, path, "--output-dir", "fresh")
    assert resumed["ensemble-gain"]["observed"] == fresh["ensemble-gain"]["observed"]
    a = torch.load(in_tmp / "runs" / "resume" / "squeeze" / "final.pt", weights_only=True)
    b = torch.load(in_tmp / "fresh" / "resume" / "squeeze" / "final.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
