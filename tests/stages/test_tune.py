"""The tune stage end to end: verdicts both ways, local workers, a study continued after a
kill, and two processes on one PostgreSQL study (NNRECIPE_TEST_POSTGRES, started by .ci/run)."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from conftest import PLANTED, pool_workers, process_cmdline, write_spec

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
FAST = {"trials": 6, "steps": 150, "eval_every": 50}


def _spec(folder, name, *, space=None, tune=None, **extra):
    t = {**FAST, **(tune or {})}
    if space is not None:
        t["space"] = space
    spec = {"name": name, "train": {"steps": 150, "eval_every": 50}, "stages": {"tune": t}, **extra}
    return write_spec(folder, spec, name=f"{name}.yaml")


def _tune(cli, path, *args):
    result = cli("tune", "--config", path, "--json", *args)
    assert result.exit_code in (0, 1), result.stderr
    return result.exit_code, {v["check"]: v for v in json.loads(result.stdout)}


def _study(journal, name):
    from optuna.storages.journal import JournalFileBackend

    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(JournalFileBackend(str(journal))))


def _timeline(run_dir) -> list[dict]:
    with open(run_dir / "tune" / "timeline.csv", newline="") as f:
        return list(csv.DictReader(f))


def _finished(study):
    return [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def test_a_good_space_passes_and_best_yaml_holds_the_better_learning_rate(cli, in_tmp):
    path = _spec(in_tmp, "slow", optim={"lr": 1e-5}, space={"optim.lr": {"log_uniform": [1e-3, 1e-2]}})
    code, v = _tune(cli, path)
    assert code == 0 and {x["status"] for x in v.values()} == {"pass"}
    assert v["tune-improves"]["observed"]["z"] >= 3  # lr 1e-5 barely trains in 150 steps
    out = in_tmp / "runs" / "slow" / "tune"
    best = (out / "best.yaml").read_text()
    assert best.startswith("# nnrecipe run --config tune/best.yaml") and "lr: 1.0e-05" not in best
    rows = (out / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("trial,state,value,optim.lr") and len(rows) == 7
    assert all((out / f"{p}.png").stat().st_size > 5000 for p in ("history", "parameters"))
    assert any((in_tmp / "runs" / "slow" / "tb" / "tune" / "trial-005").iterdir())
    # re-running with more trials continues the study: 6 finished trials are reused, 2 more run
    code, v = _tune(cli, path, "stages.tune.trials=8")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] == 8 and summary["ran_here"] == 2


def test_a_space_where_every_trial_diverges_fails(cli, in_tmp):
    path = _spec(
        in_tmp,
        "boom",
        optim={"name": "sgd", "lr": 0.1},
        space={"optim.lr": {"log_uniform": [1e4, 1e6]}},
        tune={"pruner": "none"},
    )
    code, v = _tune(cli, path)
    assert code == 1 and v["tune-improves"]["status"] == "fail" and "diverged" in v["tune-improves"]["message"]
    assert v["search-coverage"]["status"] == "warn"


def test_a_range_half_of_which_diverges_is_poor_coverage(cli, in_tmp):
    path = _spec(
        in_tmp,
        "half",
        optim={"name": "sgd", "lr": 0.1},
        space={"optim.lr": {"log_uniform": [1e-2, 1e20]}},
        tune={"trials": 8, "pruner": "none"},
    )
    code, v = _tune(cli, path)
    cov = v["search-coverage"]
    assert cov["status"] == "warn" and cov["observed"]["diverged"] >= 2 and "diverged" in cov["message"], cov


def test_tuning_an_argument_the_model_ignores_is_flat(cli, in_tmp):
    model = {"arch": "python", "factory": f"{PLANTED}/models.py:ignores_width", "args": {"width": 64}}
    path = _spec(
        in_tmp, "flat", model=model, space={"model.args.width": {"int": [8, 256]}}, tune={"trials": 6, "pruner": "none"}
    )
    code, v = _tune(cli, path)
    s = v["sensitivity"]
    assert s["status"] == "warn" and "nothing in the space" in s["message"] and s["observed"]["spread"] == 0
    assert v["tune-improves"]["status"] == "pass"  # the same network every trial: nothing to gain, nothing lost


def test_two_local_workers_finish_exactly_the_requested_trials(cli, in_tmp):
    # trials long enough (2000 steps) that the second process is up before the first has run them
    # all: each asks for its share of the trials not yet asked (4, then 2, ...) and trains it as one
    path = _spec(in_tmp, "two", tune={"trials": 8, "workers": 2, "pruner": "none", "steps": 2000, "eval_every": 500})
    code, v = _tune(cli, path)
    assert code == 0, v
    study = _study(in_tmp / "runs" / "two" / "tune" / "study.journal", "two")
    done = _finished(study)
    assert len(done) == 8 and len({t.number for t in done}) == 8
    assert len({t.user_attrs["worker"] for t in done}) == 2  # both processes ran trials
    assert not [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    assert len({t.params["optim.lr"] for t in done}) == 8  # no trial ran twice
    # the stage's timeline has each trial once, in the process that ran it, on the stage's clock
    rows = {r["experiment"]: r for r in _timeline(in_tmp / "runs" / "two") if r["experiment"].startswith("trial-")}
    assert set(rows) == {f"trial-{t.number:03d}" for t in done}
    took = json.loads((in_tmp / "runs" / "two" / "tune" / "summary.json").read_text())["seconds"]
    for t in done:
        r, host_pid = rows[f"trial-{t.number:03d}"], t.user_attrs["worker"].rsplit(":", 1)[0]
        assert f"{r['host']}:{r['pid']}" == host_pid and r["together"] == str(t.user_attrs["round_of"])
        assert 0 <= float(r["start_s"]) and float(r["start_s"]) + float(r["seconds"]) <= took + 0.1, (r, took)
    procs = {r["process"] for r in rows.values()}  # the stage's process (the CLI runs in the test's) and its child
    assert len(procs) == 2 and "here" in procs and all(p == "here" or p.startswith("worker pid ") for p in procs)


# a starting point outside the space, far worse than it: the best trial is confirmed at fresh seeds
_CONFIRMED = {"space": {"optim.lr": {"log_uniform": [1e-3, 1e-2]}}, "optim": {"lr": 1e-5}}


def test_a_pool_worker_killed_mid_trial_has_its_trial_run_again_and_the_stage_finishes(in_tmp):
    """--workers 2 (stages.tune.workers unset): tune's worker 1 is a task in the run's worker
    processes, not a process of its own. SIGKILL to that process mid-trial: its trial is failed
    and queued again, worker 0 runs it, the study ends with every trial once, and the
    confirmation runs train in a pool started afresh."""
    path = _spec(
        in_tmp,
        "podkill",
        train={"steps": 2000, "eval_every": 250},
        tune={"trials": 6, "steps": 2000, "eval_every": 250, "confirm_seeds": 1},
        **_CONFIRMED,
    )
    journal = in_tmp / "runs" / "podkill" / "tune" / "study.journal"
    out, err = open(in_tmp / "out.json", "w+"), open(in_tmp / "err.txt", "w+")  # files: no pipe fills up
    proc = subprocess.Popen(
        [sys.executable, "-m", "nnrecipe.cli", "tune", "--config", str(path), "--workers", "2", "--json"],
        cwd=in_tmp,
        env=ENV,
        stdout=out,
        stderr=err,
    )
    victim, deadline = None, time.time() + 240
    while victim is None and time.time() < deadline and proc.poll() is None:
        if journal.exists():
            for t in _study(journal, "podkill").get_trials(deepcopy=False):
                if (
                    t.state == TrialState.RUNNING
                    and t.user_attrs.get("worker", "").endswith(":w1")
                    and t.intermediate_values
                ):
                    victim = t
        time.sleep(0.3)
    assert victim is not None, "no trial of worker 1 was seen running"
    pid = int(victim.user_attrs["worker"].split(":")[1])
    # a pool worker: forked by the stage's fork server (not a process of tune_worker's main)
    assert pid in pool_workers(proc.pid) and "tune_worker" not in process_cmdline(pid), process_cmdline(pid)
    os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=600)
    out.close()
    err.close()
    out, err = (in_tmp / "out.json").read_text(), (in_tmp / "err.txt").read_text()
    assert proc.returncode in (0, 1), err[-2000:]
    assert f"trials [{victim.number}] run again here" in " ".join(err.split()), err[-2000:]
    assert (in_tmp / "runs" / "podkill" / "tune" / "worker-1.log").exists()  # its lines (none: singles say nothing)
    study = _study(journal, "podkill")
    done = _finished(study)
    assert len(done) == 6 and len({t.params["optim.lr"] for t in done}) == 6
    [retry] = [t for t in done if t.system_attrs.get("failed_trial") == victim.number]
    assert retry.params == victim.params and retry.user_attrs["worker"].endswith(":w0")
    assert {v["stage"] for v in json.loads(out)} == {"tune"}
    confirming = {
        int(r["pid"]) for r in _timeline(in_tmp / "runs" / "podkill") if r["experiment"].startswith("confirm-")
    }
    assert confirming and pid not in confirming and proc.pid not in confirming, confirming  # a fresh pool


def test_trials_trained_as_one_give_the_values_they_give_one_at_a_time(cli, in_tmp):
    """Trials that differ in learning rate and weight decay are asked for a round at a time and
    trained as one: each trial's value and val loss are those it gets alone (float tolerance)."""
    space = {"optim.lr": {"log_uniform": [1e-4, 1e-2]}, "optim.weight_decay": {"uniform": [0.0, 0.01]}}
    studies, said = {}, {}
    for batch in (True, False):
        path = _spec(in_tmp, f"b{batch}", space=space, tune={"pruner": "none"}, batch_models=batch)
        result = cli("tune", "--config", path, "--json")
        assert result.exit_code in (0, 1), result.stderr
        said[batch] = " ".join(result.stderr.split())
        studies[batch] = {
            t.number: t
            for t in _finished(_study(in_tmp / "runs" / f"b{batch}" / "tune" / "study.journal", f"b{batch}"))
        }
    assert "6 models trained as one: trial-000, trial-001, trial-002, ..." in said[True]
    assert "trained as one" not in said[False]
    assert len(studies[True]) == len(studies[False]) == 6
    for n, a in studies[True].items():
        b = studies[False][n]
        assert a.params == b.params and a.user_attrs["round_of"] == 6 and b.user_attrs["round_of"] == 1
        assert a.value == pytest.approx(b.value, abs=1e-3)
        assert a.user_attrs["val_loss"] == pytest.approx(b.user_attrs["val_loss"], rel=1e-3)
    rows = (in_tmp / "runs" / "bTrue" / "tune" / "trials.csv").read_text().splitlines()
    assert rows[0].endswith(",seconds,round_of,worker,retry_of") and rows[1].split(",")[-3] == "6"


def test_a_tune_killed_mid_trial_finishes_the_study_when_run_again(in_tmp):
    path = _spec(
        in_tmp,
        "killed",
        train={"steps": 3000, "eval_every": 500},
        tune={"trials": 6, "steps": 3000, "eval_every": 500},
    )  # the median pruner's 4 start-up trials in a round, then the last 2: killed as they train
    cmd = [sys.executable, "-m", "nnrecipe.cli", "tune", "--config", str(path)]
    journal = in_tmp / "runs" / "killed" / "tune" / "study.journal"
    proc = subprocess.Popen(
        cmd, cwd=in_tmp, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if journal.exists():
            trials = _study(journal, "killed").get_trials(deepcopy=False)
            if len(_finished(_study(journal, "killed"))) >= 1 and any(
                t.state == TrialState.RUNNING and t.intermediate_values for t in trials
            ):
                break
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _study(journal, "killed").get_trials(deepcopy=False)
    killed = [t.number for t in before if t.state == TrialState.RUNNING]
    assert killed and len(_finished(_study(journal, "killed"))) < 6
    again = subprocess.run(cmd + ["--json"], cwd=in_tmp, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    study = _study(journal, "killed")
    done = _finished(study)
    assert len(done) == 6 and len({t.params["optim.lr"] for t in done}) == 6
    retried = [t for t in done if t.system_attrs.get("failed_trial") in killed]
    assert retried and retried[0].params == next(t.params for t in before if t.number == killed[0])
    summary = json.loads((in_tmp / "runs" / "killed" / "tune" / "summary.json").read_text())
    assert summary["recovered"] == killed
    # the second run's timeline: the trials it trained, not those the killed run finished
    first = {f"trial-{t.number:03d}" for t in before if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    trained = {r["experiment"] for r in _timeline(in_tmp / "runs" / "killed") if r["experiment"].startswith("trial-")}
    assert trained == {f"trial-{t.number:03d}" for t in done} - first, (trained, first)


POSTGRES = os.environ.get("NNRECIPE_TEST_POSTGRES")


@pytest.mark.skipif(not POSTGRES, reason="NNRECIPE_TEST_POSTGRES is not set (.ci/run starts PostgreSQL and sets it)")
def test_two_processes_on_one_postgresql_study_finish_exactly_the_requested_trials(in_tmp):
    name = f"pg-{os.getpid()}-{int(time.time())}"
    path = _spec(in_tmp, "pg", tune={"trials": 8, "pruner": "none"})
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nnrecipe.cli",
                "tune",
                "--config",
                str(path),
                "--storage",
                POSTGRES,
                "--study",
                name,
                "--output-dir",
                f"machine{i}",
                "--json",
            ],
            cwd=in_tmp,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    from nnrecipe.probes.tune_study import database_url

    study = optuna.load_study(study_name=name, storage=database_url(POSTGRES))
    done = _finished(study)
    assert len(done) == 8 and len({t.number for t in done}) == 8 and len({t.params["optim.lr"] for t in done}) == 8
    assert len({t.user_attrs["worker"] for t in done}) == 2
    for i in range(2):  # each machine judged the whole study
        summary = json.loads((in_tmp / f"machine{i}" / "pg" / "tune" / "summary.json").read_text())
        assert summary["finished"] == 8 and summary["storage"].startswith("postgresql://")


def test_an_unreachable_storage_is_one_clear_line(cli, in_tmp):
    path = _spec(in_tmp, "nowhere")
    result = cli("tune", "--config", path, "--storage", "postgresql://nobody@127.0.0.1:1/none")
    assert result.exit_code == 2
    assert result.stderr.strip().startswith(
        "error: --storage postgresql://nobody@127.0.0.1:1/none: cannot open the study storage"
    )
    assert len(result.stderr.strip().splitlines()) == 1


def _cmdlines() -> dict[int, str]:
    """Every process's command line on this machine, as `ps` shows them to any user."""
    lines = {}
    for entry in os.listdir("/proc"):
        try:
            lines[int(entry)] = (
                open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            )
        except (ValueError, OSError):
            continue
    return lines


@pytest.mark.skipif(not POSTGRES, reason="NNRECIPE_TEST_POSTGRES is not set (.ci/run starts PostgreSQL and sets it)")
def test_a_storage_password_reaches_no_file_and_no_command_line(in_tmp):
    import re

    secret = f"pw-{os.getpid()}-s3cret"
    url = re.sub(
        r"://([^:@/]+)@", rf"://\1:{secret}@", POSTGRES, count=1
    )  # the server trusts loopback: any password works
    assert secret in url
    name = f"secret-{os.getpid()}-{int(time.time())}"
    path = _spec(in_tmp, "secret", tune={"trials": 4, "pruner": "none", "workers": 2})
    # The user keeps the URL in the environment; nnrecipe must not move it into argv or files.
    env = {**ENV, "NNRECIPE_TUNE_STORAGE": url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nnrecipe.cli", "tune", "--config", str(path), "--study", name],
        cwd=in_tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    seen = {}
    while proc.poll() is None:
        seen.update({pid: line for pid, line in _cmdlines().items() if "nnrecipe" in line})
        time.sleep(0.05)
    out, err = proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert any("tune_worker" in line for line in seen.values()), seen  # the second worker was seen running
    assert not [line for line in seen.values() if secret in line]
    assert secret.encode() not in out + err
    run = in_tmp / "runs" / "secret"
    files = [p for p in run.rglob("*") if p.is_file()]
    assert len(files) > 20 and any(p.name == "worker.json" for p in files)
    assert not [str(p) for p in files if secret.encode() in p.read_bytes()]
    assert f"{url.split(':')[0]}://postgres:***@" in (run / "spec.yaml").read_text()

    # Run again from the recorded spec: the password comes from where the user keeps it, or
    # the error says where to put it.
    again = [
        sys.executable,
        "-m",
        "nnrecipe.cli",
        "tune",
        "--config",
        str(run / "spec.yaml"),
        "--study",
        name,
        "--output-dir",
        str(in_tmp / "again"),
    ]
    missing = subprocess.run(again, cwd=in_tmp, env=ENV, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2, missing.stderr[-2000:]
    assert missing.stderr.strip().splitlines() == [
        f"error: stages.tune.storage {url.replace(secret, '***')}: the password is never kept in the run directory; "
        "give the URL again with --storage or NNRECIPE_TUNE_STORAGE, or put the password in PGPASSWORD or ~/.pgpass"
    ]
    resumed = subprocess.run(
        again, cwd=in_tmp, env={**ENV, "PGPASSWORD": secret}, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads((in_tmp / "again" / "secret" / "tune" / "summary.json").read_text())
    assert summary["finished"] == 4 and summary["ran_here"] == 0  # the study was continued, not started anew
