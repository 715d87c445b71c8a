"""The tune stage's study on Optuna: storage, samplers, and the worker loop.

Storage follows Optuna's own guidance: processes on one machine share a journal file
(JournalFileBackend; SQLite is not safe for parallel writers, optuna#4002), machines share
an RDB (PostgreSQL) with heartbeats, so a trial whose worker died is failed and run again.

Exactly `trials` trials finish (complete + pruned), whatever the number of workers and
restarts: a worker asks for a trial only while fewer are finished or running, and a trial
that a race made one too many (another worker asked at the same moment) is given back at
once, before any training, as FAIL with the user attribute `surplus`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import time
import warnings
from typing import Any, Callable, Optional

import optuna
from optuna.trial import TrialState

from nnrecipe.credentials import redact
from nnrecipe.errors import NNRecipeError

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
ALIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
KEY_ATTR = "nnrecipe_key"
POLL_SECONDS = 2.0


class StorageError(NNRecipeError):
    """The tune study's storage cannot be opened or holds another experiment's study."""


def derive_seed(*parts: Any) -> int:
    """A 32-bit seed from any parts, equal in every process (Python's hash() is salted)."""
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:4], "little")


def is_url(storage: str) -> bool:
    return "://" in storage


def database_url(url: str) -> str:
    """postgresql:// names no driver, and SQLAlchemy's default changed (psycopg2 in 2.0,
    psycopg 3 in 2.1): name the one that is installed."""
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    for module, scheme in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return scheme + url[len("postgresql") :]
    return url


def open_storage(storage: str, *, heartbeat_interval: int, grace_period: int):
    """An Optuna storage: an RDB URL (with heartbeats and retries of dead workers' trials) or a
    journal file path."""
    if is_url(storage):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats, retries
                return _rdb_retrying(database_url(storage), heartbeat_interval, grace_period)
        except ImportError:
            raise StorageError(
                f"--storage {redact(storage)}: the database driver is not installed; for PostgreSQL: "
                "pip install 'nnrecipe[postgres]' (psycopg)"
            ) from None
        except Exception as exc:  # sqlalchemy's errors: bad URL, refused connection, bad password, unknown database
            reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
            raise StorageError(
                f"--storage {redact(storage)}: cannot open the study storage ({exc.__class__.__name__}: {reason})"
            ) from None
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    try:
        os.makedirs(os.path.dirname(os.path.abspath(storage)), exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(storage, lock_obj=JournalFileOpenLock(storage)))
    except OSError as exc:
        raise StorageError(f"--storage {storage}: cannot open the journal file ({exc.strerror or exc})") from None


def _retry(max_retry):
    """Queue a failed trial's parameters again (renamed in Optuna 4.9)."""
    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    return cls(max_retry=max_retry)


def _rdb_retrying(url: str, heartbeat_interval: int, grace_period: int, attempts: int = 4):
    """Machines starting together on a fresh database race to create Optuna's tables; the loser
    sees a duplicate-type error. The tables exist by then: try again."""
    for attempt in range(attempts):
        try:
            return _rdb(url, heartbeat_interval, grace_period)
        except ImportError:
            raise
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


def _rdb(url: str, heartbeat_interval: int, grace_period: int):
    import inspect

    # Optuna 4.9 renamed the callback argument; take whichever this version has.
    params = inspect.signature(optuna.storages.RDBStorage).parameters
    callback = (
        "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params else "failed_trial_callback"
    )
    return optuna.storages.RDBStorage(
        url,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        **{callback: _retry(max_retry=3)},
        engine_kwargs={"connect_args": {"connect_timeout": 10}} if url.startswith("postgres") else None,
    )


class TrialSeededRandomSampler(optuna.samplers.RandomSampler):
    """Random search where trial k's value of each parameter depends only on (seed, k, name):
    any number of workers, machines or restarts draws the same candidates, and a restarted
    worker never repeats the draws of trials that already ran."""

    def __init__(self, seed: int):
        super().__init__(seed=seed)
        self._base_seed = seed

    def sample_independent(self, study, trial, param_name, param_distribution):
        rng = optuna.samplers.RandomSampler(seed=derive_seed(self._base_seed, trial.number, param_name))
        return rng.sample_independent(study, trial, param_name, param_distribution)


class StartFirstSampler(optuna.samplers.BaseSampler):
    """Trial 0 is the starting point (where its values lie inside the space); every other
    trial is the inner sampler's. Deterministic by trial number, so it needs no coordination
    between workers."""

    def __init__(self, inner: optuna.samplers.BaseSampler, start: dict[str, Any]):
        self.inner, self.start = inner, dict(start)

    def infer_relative_search_space(self, study, trial):
        return {} if trial.number == 0 else self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return {} if trial.number == 0 else self.inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        if trial.number == 0 and param_name in self.start:
            return self.start[param_name]
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial):
        self.inner.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


def make_sampler(kind: str, *, seed: int, start: dict[str, Any], worker: str):
    inner: optuna.samplers.BaseSampler
    if kind == "tpe":
        # TPE's own start-up trials are random; its seed differs per worker so they differ too.
        inner = optuna.samplers.TPESampler(seed=derive_seed(seed, worker))
    else:
        inner = TrialSeededRandomSampler(seed)
    return StartFirstSampler(inner, start)


def make_pruner(kind: str, *, steps: int, warmup: float):
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP, n_warmup_steps=int(steps * warmup))
    if kind == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def open_study(*, storage, name: str, key: str, sampler=None, pruner=None, create: bool):
    """Create (or load) the study; a study holding another experiment's trials is refused."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if create:
        study = optuna.create_study(
            study_name=name, storage=storage, direction="maximize", load_if_exists=True, sampler=sampler, pruner=pruner
        )
        if KEY_ATTR not in study.user_attrs:
            study.set_user_attr(KEY_ATTR, key)
    else:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    if study.user_attrs.get(KEY_ATTR) not in (None, key):
        raise StorageError(
            f"study {name!r} already holds trials of another experiment (a different starting spec, "
            "space or budget): give another --study (stages.tune.study), or delete that study"
        )
    return study


def counts(study) -> dict[TrialState, int]:
    out = {s: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state] += 1
    return out


def recover_orphans(study, worker: Optional[str] = None, *, earlier_than: Optional[str] = None) -> list[int]:
    """Trials left RUNNING by a process that was killed (all of them, one worker's, or those of
    the earlier processes of worker `earlier_than`: its host and index, another pid: a Ray task
    run again after its process died). Only for a storage no one else uses (the run directory's
    own journal): each is failed and its parameters queued again, so no trial is lost."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = _retry(max_retry=None)
    orphans = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if worker is not None and t.user_attrs.get("worker") != worker:
            continue
        if earlier_than is not None and not _earlier(t.user_attrs.get("worker"), earlier_than):
            continue
        retry(study, study.tell(t.number, state=TrialState.FAIL))
        orphans.append(t.number)
    return orphans


class Surplus(Exception):
    """This trial would be one more than requested: given back before any work."""


MEDIAN_STARTUP = 4  # the median pruner prunes once this many trials have completed
TPE_STARTUP = 10  # Optuna's TPE samples its first 10 trials at random


@dataclasses.dataclass(frozen=True)
class Rounds:
    """How many trials a worker asks for at once (and trains as one, together.py, where they
    share an architecture: trials that differ only in learning rate and weight decay).

    A round never holds trials that should have seen each other's results: the median pruner
    compares a trial with completed ones only, so the first round holds its start-up trials
    alone; TPE samples from the trials finished before it, so after its random start-up it
    asks one at a time. With several workers on the study, a round is a worker's share of the
    trials not yet asked, so that none is left idle while another holds them all."""

    batch: int = 1  # the most at once; 1: Optuna's own loop (an RDB study's heartbeats need it)
    sampler: str = "random"
    pruner: str = "none"
    workers: int = 1  # processes on this study
    # each worker asks for its share of the start-up trials: only when all start at once (the
    # run's warm pool). Else the first would train its share, then the rest as a second round,
    # while the others still start (bench/tune_startup.py: -1.4 s warm, +2.0 s cold)
    share_startup: bool = False

    def size(self, *, finished: int, running: int, trials: int) -> int:
        n = min(self.batch, -(-(trials - finished - running) // self.workers))
        share = self.workers if self.share_startup else 1
        if self.pruner == "median" and finished < MEDIAN_STARTUP:
            n = min(n, MEDIAN_STARTUP - finished - running, -(-MEDIAN_STARTUP // share))
        if self.sampler == "tpe":
            n = min(n, TPE_STARTUP - finished - running, -(-TPE_STARTUP // share))
        return max(n, 1)


# A round's trainer: each asked trial's outcome, its value or TrialPruned (set its attributes).
RunTrials = Callable[[list], list]


def work(
    study, run: RunTrials, *, trials: int, worker: str, rounds: Rounds = Rounds(), on_idle: Optional[Callable] = None
) -> int:
    """Run trials of `study` until `trials` have finished (complete or pruned), across all
    workers, a round of them at a time (`rounds`); then wait for the ones still running
    elsewhere. Returns how many this worker ran."""
    ran = 0
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # RDB heartbeats: dead workers' trials failed and queued again
        c = counts(study)
        finished, running, waiting = sum(c[s] for s in FINISHED), c[TrialState.RUNNING], c[TrialState.WAITING]
        if finished >= trials and not waiting and running == 0:
            return ran
        if waiting or finished + running < trials:
            if rounds.batch == 1:
                ran += _one(study, run, trials=trials, worker=worker)
            else:
                n = rounds.size(finished=finished, running=running, trials=trials)
                ran += _round(study, run, n, trials=trials, worker=worker)
            continue
        if on_idle is not None:
            on_idle()
        time.sleep(POLL_SECONDS)  # the last trials run elsewhere: wait for them (or their heartbeats to stop)


def _surplus(study, trial, trials: int) -> bool:
    """Whether `trial` is one more than requested (then it is marked so)."""
    alive_before = sum(1 for t in study.get_trials(deepcopy=False) if t.number < trial.number and t.state in ALIVE)
    if alive_before >= trials:
        trial.set_user_attr("surplus", True)
        return True
    return False


def _one(study, run: RunTrials, *, trials: int, worker: str) -> int:
    """One trial through Optuna's loop (its heartbeat thread keeps an RDB trial alive)."""
    ran = 0

    def objective(trial):
        nonlocal ran
        if _surplus(study, trial, trials):
            raise Surplus()
        trial.set_user_attr("worker", worker)
        ran += 1
        outcome = run([trial])[0]
        if isinstance(outcome, optuna.TrialPruned):
            raise outcome
        return outcome

    study.optimize(objective, n_trials=1, catch=(Surplus,), gc_after_trial=False, show_progress_bar=False)
    return ran


def _round(study, run: RunTrials, n: int, *, trials: int, worker: str) -> int:
    """Up to `n` trials asked at once and trained by one `run`; told as Optuna's loop tells them
    (a failure, an interrupt too, fails every trial of the round and is raised)."""
    asked = []
    for _ in range(n):
        trial = study.ask()
        if _surplus(study, trial, trials):
            study.tell(trial, state=TrialState.FAIL)
            break
        trial.set_user_attr("worker", worker)
        asked.append(trial)
    if not asked:
        return 0
    try:
        outcomes = run(asked)
    except (Exception, KeyboardInterrupt):
        for trial in asked:
            study.tell(trial, state=TrialState.FAIL)
        raise
    for trial, outcome in zip(asked, outcomes):
        pruned = isinstance(outcome, optuna.TrialPruned)
        study.tell(trial, None if pruned else outcome, state=TrialState.PRUNED if pruned else None)
    return len(asked)


def _earlier(name: Optional[str], mine: str) -> bool:
    """Whether worker `name` is an earlier process of worker `mine` (host:pid:w<index> each)."""
    if not name or name.count(":") < 2:
        return False
    (host, pid, index), (my_host, my_pid, my_index) = name.rsplit(":", 2), mine.rsplit(":", 2)
    return host == my_host and index == my_index and pid != my_pid


def worker_name(index: int, pid: Optional[int] = None) -> str:
    """host:pid:w<index>, recorded on each trial a worker runs (the stage finds a dead child's trials by it)."""
    return f"{socket.gethostname()}:{pid or os.getpid()}:w{index}"
