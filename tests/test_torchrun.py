"""torchrun: one experiment on several processes (DistributedDataParallel, gloo on the CPU) gives
the verdicts of one process; rank 0 alone writes; --nproc launches it; ranks that disagree, and
settings that cannot go with it, are one line. Real torchrun, real process groups, no mocks."""

from __future__ import annotations

import glob
import json
import os
import socket
import subprocess
import sys
import tempfile

import pytest

from conftest import PLANTED, write_spec

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SMALL = {"train": {"steps": 400, "eval_every": 100}}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
NNRECIPE = [sys.executable, "-m", "nnrecipe.cli"]


def _verdicts(stdout: str):
    return [(v["check"], v["status"], v["observed"]) for v in json.loads(stdout)]


def _scratch() -> list[str]:
    return glob.glob(os.path.join(tempfile.gettempdir(), "nnrecipe-rank*"))


def test_two_processes_train_the_model_of_one_and_rank_0_alone_writes(in_tmp):
    one = subprocess.run(
        [*NNRECIPE, "overfit", "--config", str(write_spec(in_tmp, {"name": "one", **SMALL}, "one.yaml")), "--json"],
        cwd=in_tmp,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    before = set(_scratch())
    two = subprocess.run(
        [
            *TORCHRUN,
            "-m",
            "nnrecipe.cli",
            "overfit",
            "--config",
            str(write_spec(in_tmp, {"name": "two", **SMALL}, "two.yaml")),
            "--json",
        ],
        cwd=in_tmp,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == two.returncode == 1, two.stderr  # 400 steps do not fit train: a fail
    assert "torchrun: 2 processes train each model" in " ".join(two.stderr.split())  # rich wraps lines
    a, b = _verdicts(one.stdout), _verdicts(two.stdout)  # one JSON document: rank 1 prints nothing
    assert [(c, s) for c, s, _ in a] == [(c, s) for c, s, _ in b] and len(a) == 4
    # each rank's half of every batch, gradients averaged: the whole batch's step, up to float sums
    fit_a, fit_b = a[0][2], b[0][2]
    assert abs(fit_a["train_accuracy"] - fit_b["train_accuracy"]) < 0.01, (fit_a, fit_b)
    assert abs(fit_a["train_loss"] - fit_b["train_loss"]) < 0.02 * fit_a["train_loss"]
    runs = sorted(p.name for p in (in_tmp / "runs").iterdir())
    assert runs == ["one", "two"]  # rank 1's run directory was a scratch folder, now gone
    assert set(_scratch()) == before
    assert (in_tmp / "runs" / "two" / "overfit" / "checkpoints" / "last.pt").exists()


def test_nproc_launches_torchrun_and_exits_with_rank_0s_code(in_tmp):
    path = write_spec(in_tmp, {"name": "np", **SMALL})
    proc = subprocess.run(
        [*NNRECIPE, "overfit", "--config", str(path), "--json", "--nproc", "2"],
        cwd=in_tmp,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr  # the fail verdict's code, not torchrun's "crash"
    assert [c for c, _, _ in _verdicts(proc.stdout)][0] == "fits-train"
    assert "ChildFailedError" not in proc.stderr


def _two_ranks(in_tmp, argv_of_rank):
    """Two processes joined as torchrun would join them (its environment variables)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = {**ENV, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(
            subprocess.Popen(
                argv_of_rank(rank), cwd=in_tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    return [(p.wait(timeout=300), p.stderr.read()) for p in procs]


def test_ranks_that_disagree_on_the_spec_stop_with_one_line(in_tmp):
    said = _two_ranks(in_tmp, lambda rank: [*NNRECIPE, "overfit", f"optim.lr={0.001 * (rank + 1)}"])
    for code, err in said:
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "torchrun: the 2 processes disagree on the spec (ranks [1] differ from rank 0)" in err


def test_a_model_with_an_unused_layer_is_one_line_under_torchrun(in_tmp):
    model = f"model={{arch: python, factory: {PLANTED / 'models.py'}:unused_layer}}"
    said = _two_ranks(in_tmp, lambda rank: [*NNRECIPE, "overfit", model, "train.steps=50"])
    for code, err in said:
        assert code == 2 and len(err.strip().splitlines()) == 1 and "get no gradient in forward" in err, err


@pytest.mark.parametrize(
    "args, says",
    [
        (["--workers", "2"], "workers: torchrun already trains each model on several processes"),
        (["--resume"], "--resume: not under torchrun"),
        (["data.batch_size=1"], "data.batch_size: 1 examples cannot be shared by 2 processes"),
    ],
)
def test_what_cannot_go_with_torchrun_is_one_line(in_tmp, args, says):
    env = {**ENV, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}  # refused before joining any group
    proc = subprocess.run(
        [*NNRECIPE, "overfit", *args], cwd=in_tmp, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and says in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
