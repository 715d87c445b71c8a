"""--executor ray and ray://HOST:PORT: a stage's experiments as Ray tasks give the verdicts and
numbers of one process; a Ray worker killed mid-experiment is retried and counted once; a
cluster that does not answer, or Ray missing, is one line. The cluster is real: .ci/run starts a
Ray head and a second node on loopback and sets NNRECIPE_TEST_RAY (and NNRECIPE_TEST_RAY_NODES)."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
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
    deadline = time.time() + 180
    while True:  # a task process still in the middle of an experiment 0.3 s after it was seen in one
        victim = _a_task_process(proc)  # (a group of short experiments may end in between: look again)
        time.sleep(0.3)  # under way: its model partly trained
        if "ray::_ray_train" in process_cmdline(victim):
            break
        assert time.time() < deadline, "no Ray task process stayed in an experiment for 0.3 s"
    os.kill(victim, signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode in (0, 1), err
    killed = [(v["check"], v["status"], v["observed"]) for v in json.loads(out)]
    checks = [c for c, _, _ in killed]
    assert len(checks) == len(set(checks)) == 10  # every verdict once
    # every experiment trained once (the killed one's retry counted, not its start), and, on the
    # cluster's nodes (one CPU each), experiments at once on different nodes, as on machines
    with open(in_tmp / "runs" / "killed" / "regularize" / "timeline.csv", newline="") as f:
        trained = list(csv.DictReader(f))
    names = [r["experiment"] for r in trained]
    assert len(names) == len(set(names)) and {"reference", "dropout", "weight-decay"} <= set(names), names
    nodes = {r["process"].split()[1] for r in trained if r["process"].startswith("ray ")}
    assert len(nodes) == int(os.environ.get("NNRECIPE_TEST_RAY_NODES", "1")), trained
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


@needs_cluster
def test_a_file_missing_on_a_clusters_node_is_one_line_naming_the_node(in_tmp):
    """The data reads a file that exists where the stage runs, not where its tasks run (a machine
    without the spec's files): exit 2, the user's one line, and the node it failed on."""
    here = in_tmp / "here.txt"
    here.write_text("")
    data = {"source": "python", "factory": f"{PLANTED / 'data_bugs.py'}:only_on_the_drivers_machine"}
    path = write_spec(in_tmp, {"name": "missing", "data": data, **SMALL})
    proc = subprocess.run(
        [sys.executable, "-m", "nnrecipe.cli", "regularize", "--config", str(path), "--executor", CLUSTER],
        cwd=in_tmp,
        env={**ENV, "NNRECIPE_TEST_DRIVERS_FILE": str(here)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "raised FileNotFoundError: NNRECIPE_TEST_DRIVERS_FILE: no such file on this machine" in lines[0]
    assert re.search(rf"\(in a Ray task on {re.escape(socket.gethostname())}, node [0-9a-f]{{8}}\)$", lines[0]), lines[
        0
    ]


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


@pytest.mark.parametrize("failures, calls, connects", [(2, 3, True), (3, 3, False)])
def test_a_client_server_that_failed_to_start_on_the_head_is_asked_for_again(
    monkeypatch, tmp_path, failures, calls, connects
):
    """The head's proxy forks a server per client, and under load the fork can die at once (CI saw
    it: gRPC's epoll_wait error in ray_client_server_23000.err, the run's exit 2). That race cannot
    be planted on a real head, so a stand-in `ray` fails ray.init as Ray's client does then."""
    import types

    import torch

    from nnrecipe.executors import ray_pool
    from nnrecipe.runtime import plan_workers

    asked = []

    def init(**kwargs):
        asked.append(kwargs)
        if len(asked) <= failures:
            raise ConnectionAbortedError("Initialization failure from server:\nTraceback ... psutil.ZombieProcess")

    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(is_initialized=lambda: False, init=init))
    monkeypatch.setattr(ray_pool.time, "sleep", lambda s: None)
    pool = ray_pool.RayPool(base=tmp_path, workers=plan_workers(2, torch.device("cpu"), local=False), address=None)
    if connects:
        assert pool.connect() is sys.modules["ray"]
    else:
        with pytest.raises(
            NNRecipeError, match=r"^executor: cannot reach the Ray cluster at ray: Initialization failure"
        ):
            pool.connect()
    assert len(asked) == calls


def test_the_errors_of_tasks_after_the_first_are_not_logged_as_unhandled(monkeypatch, tmp_path):
    """The stage stops on the first task's error, as one line; the other tasks' errors, never
    fetched, are logged by Ray as "Unhandled error" with their tracebacks when it frees them: by
    this process (the variable silences it), or on a cluster by the client's server, whose lines
    Ray's client logs here (filtered). Seen in a local run of the two-node cluster tests: a second traceback after the line.
    When Ray frees them cannot be planted, so a stand-in `ray` connects and the line is logged."""
    import logging
    import types

    import torch

    from nnrecipe.executors import ray_pool
    from nnrecipe.runtime import plan_workers

    monkeypatch.delenv("RAY_IGNORE_UNHANDLED_ERRORS", raising=False)
    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(is_initialized=lambda: False, init=lambda **k: None))
    streamed = logging.getLogger("ray.util.client.logsclient")
    monkeypatch.setattr(streamed, "filters", [])
    seen: list[str] = []

    class Kept(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    monkeypatch.setattr(streamed, "handlers", [Kept()])
    pool = ray_pool.RayPool(base=tmp_path, workers=plan_workers(2, torch.device("cpu"), local=False), address=None)
    pool.connect()
    pool.connect()  # a second stage's: one filter, not two
    assert os.environ["RAY_IGNORE_UNHANDLED_ERRORS"] == "1" and len(streamed.filters) == 1
    streamed.error("Unhandled error (suppress with 'RAY_IGNORE_UNHANDLED_ERRORS=1'): ray::_ray_train() ...")
    streamed.error("Log channel dropped")  # Ray's other lines still reach the log
    assert seen == ["Log channel dropped"]


def test_a_client_that_cannot_connect_is_not_asked_again(monkeypatch, tmp_path):
    import types

    import torch

    from nnrecipe.executors import ray_pool
    from nnrecipe.runtime import plan_workers

    asked = []

    def init(**kwargs):
        asked.append(kwargs)
        raise ConnectionError("ray client connection timeout")

    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(is_initialized=lambda: False, init=init))
    pool = ray_pool.RayPool(base=tmp_path, workers=plan_workers(2, torch.device("cpu"), local=False), address=None)
    with pytest.raises(NNRecipeError, match=r"ray client connection timeout"):
        pool.connect()
    assert len(asked) == 1


def _a_task_process(proc, timeout: float = 180.0) -> int:
    """The pid of a Ray worker process running one of nnrecipe's experiments (Ray names it so)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        out = subprocess.run(["pgrep", "-f", "ray::_ray_train"], capture_output=True, text=True).stdout.split()
        if out:
            return int(out[0])
        time.sleep(0.1)
    said = proc.communicate(timeout=60)[1] if proc.poll() is not None else ""
    raise AssertionError(f"no Ray task process appeared (exit {proc.returncode}): {said[-2000:]}")


TRIALS = 4


def _tune(folder, name: str, *, steps: int = 400) -> dict:
    """4 trials; the stage's process waits at its first step for a Ray task to train (its model
    says so), so that it cannot run every trial while Ray starts (seconds, longer on a loaded
    machine)."""
    flag = folder / f"{name}.ray-task-trains"
    model = {"arch": "python", "factory": f"{PLANTED / 'models.py'}:waits_for_a_ray_task", "args": {"flag": str(flag)}}
    # one fresh seed to confirm the best trial on (3 by default): these tests are about the study
    tune = {"trials": TRIALS, "pruner": "none", "steps": steps, "eval_every": steps // 4, "confirm_seeds": 1}
    return {"name": name, "model": model, "train": {"steps": 150, "eval_every": 50}, "stages": {"tune": tune}}


def _trials(run_dir):
    import csv

    return list(csv.DictReader((run_dir / "tune" / "trials.csv").read_text().splitlines()))


def test_a_ray_tune_worker_killed_mid_trial_is_run_again_and_so_are_its_trials(in_tmp):
    """The Ray task's process is killed while it trains: Ray runs the task again, whose first act
    is to fail and queue again the trials its earlier process left RUNNING in the journal; the
    study ends with every trial finished once, the killed ones' parameters run again."""
    import optuna
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    path = write_spec(in_tmp, _tune(in_tmp, "tune-killed", steps=2000))  # long enough to be killed mid-trial
    cmd = [sys.executable, "-m", "nnrecipe.cli", "tune", "--config", str(path), "--json"]
    proc = subprocess.Popen(
        [*cmd, "--executor", "ray", "--workers", "2"],
        cwd=in_tmp,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    journal = in_tmp / "runs" / "tune-killed" / "tune" / "study.journal"

    def study():
        return optuna.load_study(
            study_name="tune-killed", storage=optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
        )

    victim, deadline = None, time.time() + 240
    while victim is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        pids = subprocess.run(["pgrep", "-f", "ray::_ray_worker"], capture_output=True, text=True).stdout.split()
        if not pids or not journal.exists():
            continue
        mid = [
            t
            for t in study().get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.intermediate_values and f":{pids[0]}:w1" in t.user_attrs.get("worker", "")
        ]
        victim = int(pids[0]) if mid else None
    assert victim is not None, "the Ray task never trained a trial"
    os.kill(victim, signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode in (0, 1), err
    trials = study().get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == TRIALS and len({t.params["optim.lr"] for t in done}) == TRIALS  # none lost, none twice
    killed = [t for t in trials if t.state == TrialState.FAIL and f":{victim}:w1" in t.user_attrs["worker"]]
    assert killed and len(trials) == TRIALS + len(killed)
    for t in killed:  # each run again, with its parameters
        (again,) = [d for d in done if d.system_attrs.get("failed_trial") == t.number]
        assert again.params == t.params


POSTGRES = os.environ.get("NNRECIPE_TEST_POSTGRES", "")


def test_a_clusters_tasks_never_get_the_journal_study_its_trials_run_here(tmp_path):
    """ray://HOST:PORT with the run directory's journal file, which a cluster's machines cannot
    reach: the study's workers are this process alone, decided before anything connects (the
    address here answers nothing), and the stage says why."""
    import io

    import torch
    from rich.console import Console

    from nnrecipe.rundir import RunDir
    from nnrecipe.runtime import plan_workers
    from nnrecipe.spec import load_spec
    from nnrecipe.stages.base import StageContext
    from nnrecipe.stages.tune import tune_workers

    said = io.StringIO()
    for storage, connects in ((None, False), ("postgresql://nobody@127.0.0.1:1/none", True)):
        spec, base = load_spec(
            None, ["executor=ray://127.0.0.1:1"] + ([f"stages.tune.storage={storage}"] if storage else [])
        )
        ctx = StageContext(
            spec=spec,
            base=base,
            run=RunDir(tmp_path / "run"),
            device=torch.device("cpu"),
            console=Console(file=said, width=400),
            workers=plan_workers(2, torch.device("cpu"), local=False),
        )
        if connects:  # a database: the cluster's tasks share the study, so it connects (here: nothing answers)
            with pytest.raises(NNRecipeError, match=r"^executor: cannot reach the Ray cluster at ray://127.0.0.1:1"):
                tune_workers(spec, ctx)
        else:
            workers, ray = tune_workers(spec, ctx)
            assert workers.count == 1 and ray is None
    assert said.getvalue().count("which the cluster's Ray tasks cannot reach: its trials run here") == 1


@needs_cluster
@pytest.mark.skipif(not POSTGRES, reason="NNRECIPE_TEST_POSTGRES is not set (.ci/run starts PostgreSQL and sets it)")
def test_tune_workers_as_tasks_on_a_cluster_share_a_database_study(in_tmp):
    """ray://HOST:PORT with a PostgreSQL study: the stage's process and a task on the cluster run
    its trials, and every trial's curves are in the run directory (a task's sent back by it and
    written by the stage)."""
    from nnrecipe.probes.tune_study import database_url

    study = f"ray-{os.getpid()}-{int(time.time())}"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nnrecipe.cli",
            "tune",
            "--config",
            str(write_spec(in_tmp, _tune(in_tmp, "postgres"))),
            "--json",
        ]
        + ["--executor", CLUSTER, "--workers", "2", "--storage", POSTGRES, "--study", study],
        cwd=in_tmp,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode in (0, 1), proc.stderr
    rows = _trials(in_tmp / "runs" / "postgres")
    assert sorted(int(r["trial"]) for r in rows) == list(range(TRIALS))
    assert {r["worker"].rsplit(":", 1)[1] for r in rows} == {"w0", "w1"}, rows
    for r in rows:
        assert list((in_tmp / "runs" / "postgres" / "tb" / "tune" / f"trial-{int(r['trial']):03d}").glob("events.*"))
    assert "2 workers (Ray tasks but this one)" in " ".join(proc.stderr.split())
    import optuna

    done = [
        t for t in optuna.load_study(study_name=study, storage=database_url(POSTGRES)).trials if t.state.is_finished()
    ]
    assert len(done) == TRIALS and len({t.params["optim.lr"] for t in done}) == TRIALS
