"""One tune worker: runs trials of the study until enough have finished, across all workers.

The tune stage runs one worker in its own process and starts `workers - 1` more as
`python -m nnrecipe.executors.tune_worker <run>/tune/worker.json <index>`; each loads the data
once, trains each trial it claims from the shared study, and reports the val metric at
every evaluation to the pruner. Every machine of a distributed study runs the same.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from nnrecipe.ledger import since

STAGE = "tune"


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a worker needs, written by the stage as tune/worker.json."""

    run_root: str
    base: str  # the spec's folder: plugins and data paths resolve against it
    start_yaml: str  # the starting spec (tune/start.yaml)
    storage: str  # journal file path or database URL, its password redacted (credentials.storage_url finds it)
    study: str
    key: str  # identifies the experiment a study belongs to
    trials: int
    seed: int
    steps: int
    every: int
    device: str
    devices: tuple[str, ...] = ()  # worker i trains on devices[i % len] (a GPU each); empty: `device`
    workers: int = 1  # processes on the study here
    run_id: str = ""  # the stage run's mark on the trials its workers train (its timeline's)
    share_startup: bool = False  # every worker starts at once: they share the start-up trials (Rounds)

    def write(self, path: Path) -> None:
        from nnrecipe import atomic

        atomic.write_json(path, dataclasses.asdict(self))

    @classmethod
    def read(cls, path: Path) -> "Plan":
        return cls(**json.loads(Path(path).read_text()))


# What trials may differ in and still train as one (experiments._group_key).
TOGETHER = frozenset({"optim.lr", "optim.weight_decay"})


NODE = ""  # the Ray node's id (8 hex digits) where this process is a Ray task's (tune_children)


def make_runner(*, start, space: dict, trainer, seed: int, data, ctx, run_id: str = "") -> Callable[[list], list]:
    """Trains a round of asked trials (as one where they share an architecture): each one's
    outcome, its objective (maximised, always finite: Task.objective) or TrialPruned.

    The objective is the task's metric on the selection half of val (Task.val_halves), so that
    tune-improves can confirm the winner on examples that did not choose it; on all of val
    where the task has no halves. The pruner compares intermediate evaluations on all of val
    (it only stops trials early)."""
    import optuna

    from nnrecipe.experiments import Job
    from nnrecipe.probes.tune_space import suggest
    from nnrecipe.spec import apply_params

    task = data.task
    halves = task.val_halves(len(data.val), seed)
    target_var = task.target_variance(data)

    def reporter(trial, pruned: dict) -> Callable:
        def report(step, model, result) -> bool:
            trial.report(task.objective(result.metric), step)
            if trial.should_prune():
                pruned[trial.number] = int(step)
                return True  # training ends here
            return False

        return report

    def outcome(trial, r, pruned_at: Optional[int]):
        if pruned_at is not None:
            trial.set_user_attr("steps", pruned_at)
            return optuna.TrialPruned(f"pruned at step {pruned_at}")
        trial.set_user_attr("steps", r.steps)
        trial.set_user_attr("diverged", bool(r.diverged))
        trial.set_user_attr("val_loss", float(r.val_loss) if math.isfinite(r.val_loss) else None)
        trial.set_user_attr("train_metric", float(r.train_metric) if math.isfinite(r.train_metric) else None)
        trial.set_user_attr("val_metric_all", float(r.val_metric) if math.isfinite(r.val_metric) else None)
        if halves is None or r.diverged:
            return task.objective(r.val_metric)
        return task.objective(task.metric_of(r.val_scores[halves[0]], target_var))

    def run(trials: list) -> list:
        pruned: dict[int, int] = {}  # trial number -> the step its pruner stopped it at
        jobs = [
            Job(
                f"trial-{t.number:03d}",
                apply_params(start, suggest(t, space)),
                seed,
                more={"on_eval": reporter(t, pruned), "keep_model": False},
            )
            for t in trials
        ]
        started = time.time()
        try:
            results = trainer.submit(jobs, parallel=False).results()
        finally:
            for job in jobs:
                ctx.close_writer(STAGE, job.name)
        # where and when, on this process's clock (Optuna's datetimes are naive local time)
        ran = dataclasses.asdict(since(started, ctx.device, together=len(trials))) | {"node": NODE, "run": run_id}
        for t in trials:
            t.set_user_attr("round_of", len(trials))
            t.set_user_attr("ran", ran)
        return [outcome(t, r, pruned.get(t.number)) for t, r in zip(trials, results)]

    return run


def rounds(start, plan: Plan, ctx):
    """How many trials this worker asks for at once (tune_study.Rounds): as many as train as one
    (together.MAX_GROUP) where the space holds only what trials of one architecture may differ
    in; one at a time for an RDB study (Optuna's heartbeat thread watches one trial) or where
    the spec turns batched training off."""
    from nnrecipe import together
    from nnrecipe.probes import tune_study as ts

    cfg = start.stages.tune
    one = ts.is_url(plan.storage) or not set(cfg.space) <= TOGETHER or not ctx.spec.batch_models
    return ts.Rounds(
        batch=1 if one else together.MAX_GROUP,
        sampler=cfg.sampler,
        pruner=cfg.pruner,
        workers=plan.workers,
        share_startup=plan.share_startup,
    )


def run_worker(
    plan: Plan,
    *,
    ctx,
    index: int,
    start,
    on_idle: Optional[Callable[[], None]] = None,
    study=None,
    rerun: bool = False,
) -> int:
    """Run trials until the study has `plan.trials` finished; returns how many this worker ran.
    `rerun`: this worker may be a Ray task run again, whose earlier process died mid-trial: with
    the journal, that process's trials left RUNNING are failed and queued again first."""
    from nnrecipe.credentials import storage_url
    from nnrecipe.experiments import Trainer
    from nnrecipe.probes import tune_study as ts
    from nnrecipe.probes.tune_space import start_values

    cfg = start.stages.tune
    worker = ts.worker_name(index)
    sampler = ts.make_sampler(cfg.sampler, seed=plan.seed, start=start_values(start, cfg.space), worker=worker)
    pruner = ts.make_pruner(cfg.pruner, steps=plan.steps, warmup=cfg.prune_warmup)
    if study is None:
        storage = ts.open_storage(
            storage_url(plan.storage), heartbeat_interval=cfg.heartbeat_interval, grace_period=cfg.grace_period
        )
        study = ts.open_study(
            storage=storage, name=plan.study, key=plan.key, sampler=sampler, pruner=pruner, create=False
        )
        if rerun and not ts.is_url(plan.storage):  # a database's heartbeats do this for it
            ts.recover_orphans(study, earlier_than=worker)
    else:
        study.sampler, study.pruner = sampler, pruner
    # record=False: the trials reach the stage's timeline from the study (make_runner stamps them)
    trainer = Trainer(ctx, stage=STAGE, steps=plan.steps, every=plan.every, record=False)
    run = make_runner(
        start=start,
        space=cfg.space,
        trainer=trainer,
        seed=plan.seed,
        data=trainer.data(start),
        ctx=ctx,
        run_id=plan.run_id,
    )
    return ts.work(study, run, trials=plan.trials, worker=worker, rounds=rounds(start, plan, ctx), on_idle=on_idle)


def die_with_parent() -> None:
    """Linux: this worker gets SIGTERM when the stage's process dies (even by SIGKILL)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv: list[str]) -> int:
    import os
    import signal

    from rich.console import Console

    from nnrecipe.errors import NNRecipeError

    die_with_parent()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    plan, index = Plan.read(Path(argv[0])), int(argv[1])
    try:
        import torch

        from nnrecipe.rundir import RunDir
        from nnrecipe.runtime import resolve_device
        from nnrecipe.spec import load_spec
        from nnrecipe.stages.base import StageContext

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
        start, _ = load_spec(Path(plan.start_yaml))
        ctx = StageContext(
            spec=start,
            base=Path(plan.base),
            run=RunDir(Path(plan.run_root)),
            device=resolve_device(plan.devices[index % len(plan.devices)] if plan.devices else plan.device),
            console=Console(stderr=True),
        )
        try:
            run_worker(plan, ctx=ctx, index=index, start=start)
        finally:
            ctx.close()
    except NNRecipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
