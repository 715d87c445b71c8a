"""--workers: a stage's independent experiments trained side by side in worker processes give the
verdicts, numbers, TensorBoard curves and saved members of one process; bad settings are one
line; Ctrl-C stops every worker."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import PLANTED, close_numbers, parent_of, pool_workers, process_cmdline, write_spec
from nnrecipe.errors import DeviceError
from nnrecipe.runtime import plan_workers, usable_cores

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
PLANTED_MODELS = PLANTED / "models.py"
# digits at a small budget, two seeds: regularize has every kind of round (the reference and the
# knobs, a second seed, data-scaling subsets at both seeds, label-error folds); squeeze 3 members
SMALL = {
    "batch_models": False,  # here: the pool's own mechanics, bit for bit (groups: the test below)
    "train": {"steps": 150, "eval_every": 50},
    "stages": {
        "regularize": {"seeds": 2, "label_errors": {"folds": 3}},
        "squeeze": {"members": 3, "longer": {"enabled": False}},  # the hard-label twin trains beside the student
    },
}


def _run(cli, path, stage: str, *args):
    result = cli(stage, "--config", path, "--json", *args)
    assert result.exit_code in (0, 1), result.stderr
    if "2" in args:  # the experiments really went to the pool
        assert "2 workers" in " ".join(result.stderr.split()), result.stderr
    return json.loads(result.stdout)


def _scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_two_workers_give_the_verdicts_numbers_curves_and_members_of_one_process(cli, in_tmp):
    runs = {}
    for workers in ("1", "2"):
        path = write_spec(in_tmp, {"name": f"w{workers}", **SMALL}, name=f"w{workers}.yaml")
        runs[workers] = [_run(cli, path, stage, "--workers", workers) for stage in ("regularize", "squeeze")]
    one, two = runs["1"], runs["2"]
    assert [len(v) for v in one] == [10, 3] and one[0][0]["check"] == "augmentation"
    for stage_one, stage_two in zip(one, two):
        for a, b in zip(stage_one, stage_two, strict=True):
            assert (a["check"], a["status"], a["observed"]) == (b["check"], b["status"], b["observed"])
    root1, root2 = in_tmp / "runs" / "w1", in_tmp / "runs" / "w2"
    for stage in ("regularize", "squeeze"):
        s1, s2 = (json.loads((r / stage / "summary.json").read_text()) for r in (root1, root2))
        s1.pop("seconds"), s2.pop("seconds")  # where and when differ; what was trained does not
        assert s1.pop("timeline")["experiments"] == s2.pop("timeline")["experiments"], stage
        assert s1 == s2, stage
    # squeeze's student trains here while its hard-label twin trains in a worker (the timeline says)
    trained = {r["experiment"]: r["process"] for r in _timeline(root2, "squeeze")}
    assert trained["student-soft-targets"] == "here" and trained["student-hard-labels"].startswith("worker"), trained
    assert {"member-0", "member-1", "member-2"} <= set(trained) and "here" not in {
        trained[f"member-{i}"] for i in range(3)
    }
    # every experiment's TensorBoard curve, written by the stage's process from the worker's calls
    folders = sorted(p.name for p in (root1 / "tb" / "regularize").iterdir() if p.is_dir())
    assert "label-errors-fold2" in folders and "data-25pct-seed1" in folders and "dropout-seed1" in folders
    assert folders == sorted(p.name for p in (root2 / "tb" / "regularize").iterdir() if p.is_dir())
    for name in ("reference", "dropout-seed1", "data-50pct-seed1"):
        a, b = _scalars(root1 / "tb" / "regularize" / name), _scalars(root2 / "tb" / "regularize" / name)
        assert a == b and len(a["train/loss"]) >= 3 and "final/val_accuracy" in a, name
    # squeeze's members, saved by the stage's process, weight for weight
    for i in range(3):
        w1, w2 = (torch.load(r / "squeeze" / "members" / f"member-{i}.pt", weights_only=True) for r in (root1, root2))
        assert all(torch.equal(w1["model"][k], w2["model"][k]) for k in w1["model"])


def _timeline(run_dir, stage: str) -> list[dict]:
    with open(run_dir / stage / "timeline.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_baselines_and_the_ladder_train_in_the_workers_beside_the_model_with_the_numbers_of_one_process(cli, in_tmp):
    """baseline's zero-input, larger and linear runs, and overfit's ladder, are independent of the
    stage's model: with --workers they train in the workers while the model trains in the
    stage's process (the planted model says which processes trained it), with the verdicts and
    numbers of one process (its dropout: train mode's numbers too, which draw from the seed
    whichever process trained the others)."""
    runs, where, rungs = {}, {}, {}
    for workers in ("1", "2"):
        folder, ladder = in_tmp / f"pids-{workers}", in_tmp / f"ladder-{workers}"
        folder.mkdir(), ladder.mkdir()
        says = {"arch": "python", "factory": f"{PLANTED_MODELS}:says_where_it_trains"}
        spec = {
            "name": f"b{workers}",
            "model": {**says, "args": {"folder": str(folder), "dropout": 0.3}},
            "train": {"steps": 150, "eval_every": 50},
            "stages": {
                "baseline": {"steps": 150, "eval_every": 50, "larger_model_args": {"width": 128}},
                "overfit": {"ladder": [{**says, "args": {"folder": str(ladder), "width": 32}}]},
            },
        }
        path = write_spec(in_tmp, spec, name=f"b{workers}.yaml")
        runs[workers] = [_run(cli, path, stage, "--workers", workers) for stage in ("baseline", "overfit")]
        where[workers], rungs[workers] = ({int(p.name) for p in f.iterdir()} for f in (folder, ladder))

    def numbers(verdicts):  # (the rung's description names its pid folder, which differs)
        return [
            (v["check"], v["status"], {k: x for k, x in (v["observed"] or {}).items() if k != "model"})
            for v in verdicts
        ]

    for one, two in zip(runs["1"], runs["2"], strict=True):
        assert numbers(one) == numbers(two)
    assert {v["check"]: v["status"] for v in runs["1"][0]}["loss-decreases"] == "pass"  # the larger model trained
    assert "ladder-0" in {v["check"] for v in runs["1"][1]}
    assert where["1"] == rungs["1"] == {os.getpid()}  # the stage's process (the CLI runs in the test's)
    assert os.getpid() in where["2"] and len(where["2"]) >= 2, where  # the model here, the others in workers
    assert rungs["2"] and os.getpid() not in rungs["2"], rungs  # the rung in a worker
    # the stage's timeline says which process trained what, as the planted models do
    for workers in ("1", "2"):
        trained = {r["experiment"]: r for r in _timeline(in_tmp / "runs" / f"b{workers}", "baseline")}
        assert set(trained) == {"model", "zero-input", "larger", "linear"}
        assert {int(r["pid"]) for r in trained.values()} == where[workers], (trained, where)
        assert trained["model"]["process"] == "here" and int(trained["model"]["pid"]) == os.getpid()
        [rung] = [r for r in _timeline(in_tmp / "runs" / f"b{workers}", "overfit") if r["experiment"] == "ladder-0"]
        assert {int(rung["pid"])} == rungs[workers], (rung, rungs)
    assert (in_tmp / "runs" / "b2" / "baseline" / "timeline.png").stat().st_size > 0
    for name in ("model", "zero-input", "larger", "linear"):  # every run's curves, the workers' written here
        assert list((in_tmp / "runs" / "b2" / "tb" / "baseline" / name).glob("events.*")), name
    assert list((in_tmp / "runs" / "b2" / "tb" / "overfit" / "ladder-0").glob("events.*"))


def test_groups_are_dealt_over_the_workers_with_the_numbers_of_one_process(cli, in_tmp):
    """8 data-scaling runs of one architecture: one group of 8 here, two of 4 in two workers
    (trained as one inside each): the same statuses and numbers to float tolerance."""
    spec = {
        "train": {"steps": 100, "eval_every": 50},
        "stages": {
            "regularize": {
                "seeds": 2,
                "knobs": {"dropout": None, "weight_decay": None},
                "label_errors": {"enabled": False},
                "data_scaling": {"fractions": [0.2, 0.4, 0.6, 0.8]},
            }
        },
    }
    runs, said = {}, {}
    for workers in ("1", "2"):
        path = write_spec(in_tmp, {"name": f"g{workers}", **spec}, name=f"g{workers}.yaml")
        result = cli("regularize", "--config", path, "--json", "--workers", workers)
        assert result.exit_code in (0, 1), result.stderr
        said[workers] = " ".join(result.stderr.split())
        runs[workers] = json.loads(result.stdout)
    assert "8 models trained as one" in said["1"] and "2 workers" not in said["1"]
    assert said["2"].count("4 models trained as one") == 2 and "2 workers" in said["2"]
    for a, b in zip(runs["1"], runs["2"], strict=True):
        assert (a["check"], a["status"]) == (b["check"], b["status"])
        assert close_numbers(a["observed"], b["observed"]), (a["check"], a["observed"], b["observed"])
    # the timeline: the 8 runs as one group here; as two groups of 4, one in each worker
    for workers, processes in (("1", {"here"}), ("2", None)):
        scaling = [
            r for r in _timeline(in_tmp / "runs" / f"g{workers}", "regularize") if r["experiment"][:5] == "data-"
        ]
        assert len(scaling) == 8 and {r["together"] for r in scaling} == {"8" if workers == "1" else "4"}, scaling
        where = {r["process"] for r in scaling}
        assert where == processes if processes else (len(where) == 2 and "here" not in where), where


@pytest.mark.parametrize(
    "value, says",
    [
        ("0", "workers: 0 is not a worker count: give 1 to 256 processes, or auto"),
        ("many", "--workers: 'many' is not a whole number or auto"),
        (str(usable_cores() + 1), f"workers: {usable_cores() + 1} processes on a CPU with {usable_cores()} usable"),
    ],
)
def test_a_bad_worker_count_is_one_line_and_exit_2(cli, in_tmp, value, says):
    result = cli("regularize", "--workers", value)
    assert result.exit_code == 2 and says in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (in_tmp / "runs").exists()


def test_an_error_in_the_users_code_in_a_worker_is_the_same_one_line(cli, in_tmp):
    """The user's forward calls sys.exit mid-training, inside a worker process: the same line and
    exit code as in one process, nothing written as if the stage had finished."""
    model = f"model={{arch: python, factory: {PLANTED_MODELS}:exits_in_forward}}"
    said = {}
    for workers in ("1", "2"):
        result = cli("regularize", model, "train.steps=200", f"name=x{workers}", "--workers", workers)
        said[workers] = (result.exit_code, result.stderr.strip().splitlines())
        assert not (in_tmp / "runs" / f"x{workers}" / "regularize" / "summary.json").exists()
    assert said["1"] == said["2"] and said["2"][0] == 2 and len(said["2"][1]) == 1
    assert "forward raised SystemExit: 3" in said["2"][1][0]


def test_warnings_of_the_users_code_in_a_worker_reach_the_stages_verdict(cli, in_tmp):
    model = f"model={{arch: python, factory: {PLANTED_MODELS}:warns_in_forward}}"
    said = {}
    for workers in ("1", "2"):
        small = ("stages.regularize.seeds=1", "stages.regularize.label_errors.enabled=false")  # the knobs go to workers
        result = cli("regularize", model, "train.steps=100", *small, f"name=u{workers}", "--workers", workers, "--json")
        said[workers] = [v for v in json.loads(result.stdout) if v["check"] == "user-warnings"]
    assert said["1"] == said["2"] and len(said["2"]) == 1
    assert said["2"][0]["observed"]["first"] == "UserWarning: planted: this forward warns"


def test_objects_in_memory_cannot_go_to_other_processes(in_tmp):
    import nnrecipe
    from nnrecipe.errors import SpecError

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with pytest.raises(SpecError, match="workers: 2 processes cannot see the objects"):
        nnrecipe.run(model=model, stages="regularize", workers=2, quiet=True)


def test_workers_split_the_cores_and_never_exceed_them(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr("nnrecipe.runtime.usable_cores", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert plan_workers(1, cpu).threads == 8 and plan_workers(2, cpu).threads == 4
    assert plan_workers(3, cpu).threads == 2 and plan_workers("auto", cpu).count == 8
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's setting is kept where it is lower
    assert plan_workers(2, cpu).threads == 1
    with pytest.raises(DeviceError, match="stages.tune.workers: 9 processes on a CPU with 8"):
        plan_workers(9, cpu, field="stages.tune.workers")


def test_sigint_stops_every_worker_and_records_the_stage_interrupted(in_tmp):
    proc = _long_regularize(in_tmp, "intw", as_from_a_terminal=True)
    workers = _wait_for_workers(proc, 2)
    time.sleep(0.2)  # forked: still starting, or training
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group: the workers ignore it
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "interrupted", err
    assert "Traceback" not in err and "Error" not in err, err
    verdicts = json.loads((in_tmp / "runs" / "intw" / "verdicts.json").read_text())
    assert [(v["stage"], v["check"], v["status"]) for v in verdicts] == [("regularize", "interrupted", "skip")]
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)


def test_a_worker_killed_mid_experiment_is_one_line(in_tmp):
    """A worker process dies (the OOM killer's SIGKILL): the stage stops with one line, exit 2."""
    proc = _long_regularize(in_tmp, "killw")
    victim, *_ = _wait_for_workers(proc, 2)
    time.sleep(2.0)  # training under way
    os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    lines = err.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: regularize: a worker process died mid-experiment"), err


def _long_regularize(in_tmp, name: str, *, as_from_a_terminal: bool = False):
    """`nnrecipe regularize --workers 2` on experiments far too long to finish, in the background;
    as from a terminal: SIGINT at its default and a process group of its own (a foreground job)."""
    spec = {"name": name, "train": {"steps": 100000, "eval_every": 1000}, "stages": {"regularize": {"seeds": 1}}}
    path = write_spec(in_tmp, spec)
    terminal = {
        "preexec_fn": lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        "start_new_session": True,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "nnrecipe.cli", "regularize", "--config", str(path), "--workers", "2"],
        cwd=in_tmp,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **(terminal if as_from_a_terminal else {}),
    )


def _wait_for_workers(proc, n: int, timeout: float = 120.0) -> list[int]:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        found = pool_workers(proc.pid)
        if len(found) >= n:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{n} worker processes never started")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_a_worker_that_died_between_two_batches_is_one_line_at_the_next(tmp_path):
    """The pool broke while idle (a worker killed between two stages): the next batch of
    experiments is refused with the stage's one line, not an internal error."""
    import torch

    from nnrecipe.errors import DeviceError
    from nnrecipe.executors.pool import Pool
    from nnrecipe.spec import Spec

    pool = Pool(base=tmp_path, workers=plan_workers(2, torch.device("cpu")))
    try:
        assert not pool.ready()
        pool.warm(Spec())  # both workers started (and the digits loaded)
        deadline = time.time() + 60
        while not pool.ready() and time.time() < deadline:
            time.sleep(0.05)
        assert pool.ready()  # what tune asks before its workers share the start-up trials
        executor = pool._start()
        victim = next(iter(executor._processes.values()))  # type: ignore[union-attr]
        os.kill(victim.pid, signal.SIGKILL)
        deadline = time.time() + 30
        while not getattr(executor, "_broken", False) and time.time() < deadline:
            time.sleep(0.05)  # the executor's thread notices within milliseconds
        with pytest.raises(DeviceError, match=r"^regularize: a worker process died mid-experiment"):
            pool.submit([[]], label="regularize")
        with pytest.raises(DeviceError, match=r"^workers: a worker process died mid-experiment"):
            pool.call(time.sleep, 0)  # tune's tasks: the same one line
        assert len(pool.terminate()) == 2 and not pool.ready()  # every process, stopped; a fresh pool next
        assert pool.call(time.sleep, 0).result(timeout=120) is None
    finally:
        pool.terminate()


def test_a_stage_killed_outright_takes_its_workers_and_their_fork_server_with_it(in_tmp):
    """SIGKILL to the stage's process (the OOM killer, kill -9): its workers, forked by the fork
    server rather than by it, end too, and the server with them: nothing trains on for nobody."""
    proc = _long_regularize(in_tmp, "kill9")
    workers = _wait_for_workers(proc, 2)
    server = {parent_of(pid) for pid in workers}
    assert len(server) == 1 and parent_of(next(iter(server))) == proc.pid
    proc.kill()
    proc.communicate(timeout=60)
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(pid) for pid in [*workers, *server]):
        time.sleep(0.1)
    assert not [pid for pid in [*workers, *server] if _alive(pid)]


def test_each_pool_gets_the_environment_of_its_start_from_one_fork_server(tmp_path, monkeypatch):
    """A process's later pools (a notebook's next run) are forked by the same server, which
    imported torch once; each worker sees the environment of the stage's process as it is when
    its pool starts, not as it was when the server started."""
    from nnrecipe.executors.pool import Pool

    seen = []
    for value in ("first", "second"):
        monkeypatch.setenv("NNRECIPE_TEST_PROBE", value)
        pool = Pool(base=tmp_path, workers=plan_workers(1, torch.device("cpu")))
        try:
            assert pool.call(os.getenv, "NNRECIPE_TEST_PROBE").result(timeout=120) == value
            seen.append(parent_of(pool.call(os.getpid).result(timeout=60)))
        finally:
            pool.close()
    assert seen[0] == seen[1] and "multiprocessing.forkserver" in process_cmdline(seen[0])


def _armed() -> bool:
    from nnrecipe.executors import forkserver

    return forkserver.ARMED


def test_the_fork_server_preloads_its_quick_exit_which_does_nothing_elsewhere(tmp_path):
    """The server imported torch and the module that makes its exit skip Python's teardown (it
    holds the stage's stdout: a pipe's reader waits for it); imported elsewhere, that module
    registers nothing."""
    import atexit
    import importlib

    from nnrecipe.executors import forkserver
    from nnrecipe.executors.pool import Pool

    before = atexit._ncallbacks()
    importlib.reload(forkserver)
    assert atexit._ncallbacks() == before and not forkserver.ARMED
    pool = Pool(base=tmp_path, workers=plan_workers(1, torch.device("cpu")))
    try:
        assert pool.call(_armed).result(timeout=120)  # armed in the server, whose value it inherited
    finally:
        pool.close()


def test_a_pool_stopped_as_it_warms_leaves_no_worker(tmp_path):
    """warm() starts the workers from a thread and returns at once (the fork server may still be
    importing torch); a Ctrl-C or an error right then stops every worker that thread starts."""
    from nnrecipe.executors.pool import Pool
    from nnrecipe.spec import Spec

    pool = Pool(base=tmp_path, workers=plan_workers(2, torch.device("cpu")))
    pool.warm(Spec())
    stopped = pool.terminate()
    assert len(stopped) == 2
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(pid) for pid in stopped):
        time.sleep(0.05)
    assert not [pid for pid in stopped if _alive(pid)]
