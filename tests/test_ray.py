"""--executor ray and ray://HOST:PORT: a stage's experiments as Ray tasks give the verdicts and
numbers of one process; a Ray worker killed mid-experiment is retried and counted once; a
cluster that does not answer, or Ray missing, is one line. The cluster is real: .ci/run starts a
Ray head on loopback and sets NNRECIPE_TEST_RAY."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import PLANTED, process_cmdline, write_spec
from nnrecipe.errors import NNRecipeError

CLUSTER = os.environ.get("NNRECIPE_TEST_RAY", "")
# one Ray client at a time (the head's client proxy once failed to start a second one alongside)
pytestmark = pytest.mark.xdist_group("ray")
needs_cluster = pytest.mark.skipif(
    not CLUSTER, reason="NNRECIPE_TEST_RAY is not set (.ci/run starts a Ray head and sets it)"
)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SMALL = {  # regularize on digits, small: the reference and two knobs, the data-scaling subsets
    "train": {"steps": 150, "eval_every": 50},
    "stages": {"regularize": {"seeds": 1, "label_errors": {"enabled": False}}},
}


def _verdicts(cli, path, *args):
    result = cli("regularize", "--config", path, "--json", *args)
    assert result.exit_code in (0, 1), result.stderr
    return [(v["check"], v["status"], v["observed"]) for v in json.loads(result.stdout)]


def test_a_ray_started_here_gives_the_verdicts_of_one_process(cli, in_tmp):
    here = _verdicts(cli, write_spec(in_tmp, {"name": "one", **SMALL}, name="one.yaml"))
    ray = _verdicts(cli, write_spec(in_tmp, {"name": "ray", **SMALL}, name="ray.yaml"), "--executor", "ray")
    assert len(here) == 10 and ray == here
    folders = {p.name for p in (in_tmp / "runs" / "ray" / "tb" / "regularize").iterdir() if p.is_dir()}
    assert {"reference", "dropout", "weight-decay", "data-25pct", "data-50pct"} <= folders


@needs_cluster
def test_a_ray_worker_killed_mid_experiment_is_retried_and_counted_once(in_tmp):
    """On the cluster .ci/run started: its verdicts are one process's, even with a worker lost."""
    spec = {
        "name": "killed",
        "train": {"steps": 600, "eval_every": 300},
        "stages": {"regularize": SMALL["stages"]["regularize"]},
    }
    path = write_spec(in_tmp, spec)
    cmd = [sys.executable, "-m", "nnrecipe.cli", "regularize", "--config", str(path), "--json"]
    proc = subprocess.Popen(
        [*cmd, "--executor", CLUSTER], cwd=in_tmp, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    victim = _a_task_process(proc)
    time.sleep(0.3)  # under way: its model partly trained
    assert "ray::_ray_train" in process_cmdline(victim)  # still in the middle of an experiment
    os.kill(victim, signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode in (0, 1), err
    killed = [(v["check"], v["status"], v["observed"]) for v in json.loads(out)]
    checks = [c for c, _, _ in killed]
    assert len(checks) == len(set(checks)) == 10  # every verdict once
    # the same verdicts and numbers as one process: the retried experiment started over
    path2 = write_spec(in_tmp, {**spec, "name": "here"}, name="here.yaml")
    here = subprocess.run(
        [sys.executable, "-m", "nnrecipe.cli", "regularize", "--config", str(path2), "--json"],
        cwd=in_tmp,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed == [(v["check"], v["status"], v["observed"]) for v in json.loads(here.stdout)]


def test_a_cluster_that_does_not_answer_is_one_line(cli, in_tmp):
    started = time.monotonic()
    result = cli("regularize", "train.steps=100", "--executor", "ray://127.0.0.1:9")
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: executor: cannot reach the Ray cluster at ray://127.0.0.1:9")
    assert time.monotonic() - started < 15  # said at once, not after Ray's own retries
    assert not (in_tmp / "runs" / "digits-mlp" / "regularize" / "summary.json").exists()


def test_an_error_in_the_users_code_in_a_ray_task_is_the_same_one_line(cli, in_tmp):
    """The user's forward calls sys.exit mid-training inside a Ray task: the line of one process
    (not Ray's wrapped traceback), exit 2."""
    model = f"model={{arch: python, factory: {PLANTED / 'models.py'}:exits_in_forward}}"
    said = []
    for extra in ([], ["--executor", "ray"]):
        result = cli("regularize", model, "train.steps=200", *extra)
        said.append((result.exit_code, result.stderr.strip().splitlines()))
    assert said[0] == said[1] and said[1][0] == 2 and len(said[1][1]) == 1, said
    assert "forward raised SystemExit: 3" in said[1][1][0]


def test_an_executor_that_is_not_one_is_one_line(cli, in_tmp):
    result = cli("regularize", "--executor", "spark://x")
    assert result.exit_code == 2 and "executor" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_ray_missing_is_one_line(monkeypatch, tmp_path):
    import torch

    from nnrecipe.executors.ray_pool import RayPool
    from nnrecipe.runtime import plan_workers

    monkeypatch.setitem(sys.modules, "ray", None)  # as where it is not installed: import fails
    pool = RayPool(base=tmp_path, workers=plan_workers(2, torch.device("cpu"), local=False), address=None)
    with pytest.raises(NNRecipeError, match=r"executor: ray needs Ray, which is not installed here \(pip install"):
        pool.submit([])


def _a_task_process(proc, timeout: float = 180.0) -> int:
    """The pid of a Ray worker process running one of nnrecipe's experiments (Ray names it so)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        out = subprocess.run(["pgrep", "-f", "ray::_ray_train"], capture_output=True, text=True).stdout.split()
        if out:
            return int(out[0])
        time.sleep(0.1)
    raise AssertionError("no Ray task process appeared")
