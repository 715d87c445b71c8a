"""The torch thread count of a CPU run (nnrecipe/threads.py): the fewest threads within 10 % of
the fastest measured, the user's OMP_NUM_THREADS never overridden, the run's RNG untouched."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import torch
from torch import nn

from conftest import write_spec
from nnrecipe import threads


def test_the_fewest_threads_within_ten_percent_of_the_fastest():
    assert threads.choose({1: 0.50, 2: 0.47, 4: 0.46}) == 1  # 2 and 4 threads barely faster: 1
    assert threads.choose({1: 0.50, 2: 0.30, 4: 0.29}) == 2  # 2 really faster, 4 not beyond it
    assert threads.choose({1: 0.90, 2: 0.50, 4: 0.20}) == 4  # a model whose products scale
    assert threads.choose({1: 0.30, 2: 0.60}) == 1  # contention: more threads slower
    assert threads.candidates(16) == [1, 2, 4, 8, 16] and threads.candidates(6) == [1, 2, 4, 6]


def test_measuring_leaves_the_rng_and_the_model_as_they_were(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before_threads = torch.get_num_threads()
    model = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5), nn.Linear(8, 2))
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        threads.enable(most=2)
        x = torch.randn(4, 8)
        rng = torch.get_rng_state()
        threads.settle(model, x)
        assert torch.equal(rng, torch.get_rng_state())  # dropout's draws were on a forked stream
        assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
        assert all(p.grad is None for p in model.parameters())  # measured on a copy
        line = threads.note()
        assert line.startswith(f"torch threads: {torch.get_num_threads()} of 2 (") and "1: " in line
        assert threads.note() == ""  # said once
    finally:
        threads.enable(most=0)
        torch.set_num_threads(before_threads)


def test_a_large_model_keeps_every_thread_unmeasured_further(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    seen = []

    def slow(model, x):  # every step 50 ms: arithmetic enough to split
        seen.append(torch.get_num_threads())
        return 0.05

    monkeypatch.setattr(threads, "_step_seconds", slow)
    try:
        threads.enable(most=4)
        threads.settle(nn.Linear(2, 2), torch.randn(3, 2))
        assert seen == [4] and torch.get_num_threads() == 4 and " of 4 (" in threads.note()
    finally:
        threads.enable(most=0)
        torch.set_num_threads(before)


def test_the_users_omp_num_threads_stands(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads.enable(most=8)
    threads.settle(nn.Linear(2, 2), torch.randn(3, 2))
    assert threads.note() == ""


def test_a_run_without_omp_num_threads_measures_and_says_so(in_tmp):
    """The CLI as a user calls it, with no OMP_NUM_THREADS: the first training measures, and the
    stage log names the count; with it set, nothing is measured."""
    path = write_spec(in_tmp, {"name": "t", "train": {"steps": 50, "eval_every": 50}})
    said = {}
    for env_threads in (None, "1"):
        env = env_free()
        if env_threads:
            env["OMP_NUM_THREADS"] = env_threads
        proc = subprocess.run(
            [sys.executable, "-m", "nnrecipe.cli", "overfit", "--config", str(path)],
            cwd=in_tmp,
            env={**env, "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode in (0, 1), proc.stderr
        said[env_threads] = " ".join((proc.stdout + proc.stderr).split())
    most = int(
        subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
            env=env_free(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    # torch's own count without OMP_NUM_THREADS: above 1, the run chose among 1 .. that many
    assert (re.search(rf"overfit: torch threads: \d+ of {most} \(", said[None]) is not None) is (most > 1), said[None]
    assert "torch threads:" not in said["1"]


def env_free() -> dict:
    return {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
