"""Stage 5, "tune": random search over a spec'd space, on Optuna.

Trials start from regularize/best.yaml (else the spec); trial 0 is that starting point.
The study lives in the run directory (tune/study.journal) or in a database shared by many
machines (`--storage postgresql://...`): every process that runs this stage on the same
study works on it until `trials` trials have finished, then each one judges the whole
study. Re-running a stopped tune continues the study; a trial killed half-way runs again.
The stage's process is worker 0; the others are processes on this machine or Ray tasks
(executors/tune_children.py).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Optional

from rich.table import Table

from nnrecipe import atomic
from nnrecipe.checks.tune_checks import TuneMeasurements, confirmation_z, search_coverage, sensitivity, tune_improves
from nnrecipe.credentials import redact, storage_url
from nnrecipe.executors.tune_children import PoolTasks, Processes, RayTasks, ray_count, unreachable
from nnrecipe.executors.tune_worker import Plan, run_worker
from nnrecipe.experiments import Job, SeedRuns, Trainer, experiment_key
from nnrecipe.handoff import data_fingerprint, from_spec, recorded_seed_noise, start_spec
from nnrecipe.ledger import Ran, record
from nnrecipe.pictures.saver import attach
from nnrecipe.pictures.tune import draw
from nnrecipe.probes import tune_analysis as ta
from nnrecipe.probes import tune_study as ts
from nnrecipe.probes.tune_space import start_values
from nnrecipe.spec import apply_params
from nnrecipe.stages.base import StageContext, StageResult

STAGE = "tune"
JOURNAL = "study.journal"  # kept when the stage re-runs: the study continues


@dataclasses.dataclass
class Setup:
    spec: Any
    ctx: StageContext
    start: Any  # the trials' starting point
    source: str  # where it came from
    note: str
    steps: int  # per trial
    every: int
    storage: str  # a journal in the run directory, or a database URL shared by machines
    study: str
    key: str  # identifies the experiment a study belongs to
    # this run's mark on the trials it trains (its timeline takes those: a shared study has others')
    run_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def local(self) -> bool:
        return self.spec.stages.tune.storage is None

    @property
    def out(self):
        return self.ctx.run.stage_dir(STAGE)

    @functools.cached_property
    def start_params(self) -> Optional[dict]:
        """The starting point's value of every dimension, or None when one lies outside the space
        (then no trial ran the starting point itself)."""
        space = self.spec.stages.tune.space
        params = start_values(self.start, space)
        return params if len(params) == len(space) else None


def run(spec, ctx: StageContext) -> StageResult:
    s = _setup(spec, ctx)
    study, orphans = _open_study(s)
    ran = _run_workers(s, study)
    m = _measure_study(s, study)
    _measure_confirmation(s, m)
    cfg = spec.stages.tune
    verdicts = [tune_improves(m, cfg), search_coverage(m, cfg), sensitivity(m, cfg)]
    arts = draw(ctx, m, cfg.space, stage=STAGE)
    return StageResult(STAGE, attach(verdicts, arts), _record(s, m, ran=ran, orphans=orphans))


def _setup(spec, ctx: StageContext) -> Setup:
    cfg = spec.stages.tune
    if cfg.start == "auto":
        start, source, note = start_spec(spec, ctx.run, stages=("regularize",))
    else:
        start, source, note = from_spec(spec), "the spec", ""
    steps = cfg.steps or start.train.steps
    every = min(cfg.eval_every or start.train.eval_every, steps)
    space_text = json.dumps(
        {k: v.model_dump(mode="json", exclude_none=True) for k, v in cfg.space.items()}, sort_keys=True
    )
    return Setup(
        spec=spec,
        ctx=ctx,
        start=start,
        source=source,
        note=note,
        steps=steps,
        every=every,
        storage=storage_url(cfg.storage) if cfg.storage else str(ctx.run.stage_dir(STAGE) / JOURNAL),
        study=cfg.study or spec.name,
        key=experiment_key(
            start.model_copy(update={"seed": spec.seed}), steps=steps, every=every, extra=space_text + "|select-half"
        ),
    )  # trial values on val's selection half


def _open_study(s: Setup):
    """The study, created here or joined; a local one from another experiment is set aside.
    Returns it and the trials recovered from a killed run (a local study only: this process
    holds the run lock, so RUNNING trials are dead)."""
    cfg = s.spec.stages.tune
    storage = ts.open_storage(s.storage, heartbeat_interval=cfg.heartbeat_interval, grace_period=cfg.grace_period)
    try:
        study = ts.open_study(storage=storage, name=s.study, key=s.key, create=True)
    except ts.StorageError:
        if not s.local:
            raise
        aside = s.out / f"study-{time.strftime('%Y%m%dT%H%M%S')}.journal.old"
        os.replace(s.storage, aside)
        s.note = (
            s.note + "; " if s.note else ""
        ) + f"the previous study (another space or starting spec) was moved to {s.ctx.rel(aside)}"
        storage = ts.open_storage(s.storage, heartbeat_interval=cfg.heartbeat_interval, grace_period=cfg.grace_period)
        study = ts.open_study(storage=storage, name=s.study, key=s.key, create=True)
    orphans = ts.recover_orphans(study) if s.local else []
    _clear_trial_curves(s.ctx, keep={t.number for t in study.get_trials(deepcopy=False)})
    return study, orphans


def _run_workers(s: Setup, study) -> int:
    """This process and `workers - 1` children on the same study, until `trials` have finished.
    Returns how many trials ran here."""
    cfg, ctx, spec = s.spec.stages.tune, s.ctx, s.spec
    had = sum(1 for t in study.get_trials(deepcopy=False) if t.state in ts.FINISHED)
    workers, ray = tune_workers(spec, ctx)
    start_yaml = s.out / "start.yaml"
    atomic.write_text(start_yaml, f"# the tune stage's starting point ({s.source})\n" + s.start.to_yaml())
    pool = _run_pool(s, workers, ray)
    plan = Plan(
        run_root=str(ctx.run.root.resolve()),
        base=str(ctx.base),
        start_yaml=str(start_yaml),
        storage=redact(s.storage),
        study=s.study,
        key=s.key,
        trials=cfg.trials,
        seed=spec.seed,
        steps=s.steps,
        every=s.every,
        device=str(ctx.device),
        devices=workers.devices,
        workers=workers.count,
        run_id=s.run_id,
        share_startup=pool is not None and pool.ready(),  # all start at once
    )
    plan.write(s.out / "worker.json")
    children = _children(s, plan, workers, ray, study, pool)
    ctx.console.print(
        f"tune: study [cyan]{s.study}[/] on {redact(s.storage) if not s.local else ctx.rel(Path(s.storage))}: "
        f"{had} of {cfg.trials} trials finished"
        + (f", {len(children) + 1} workers" + (" (Ray tasks but this one)" if ray else "") if len(children) else "")
    )
    try:
        ran = run_worker(
            plan, ctx=ctx, index=0, start=s.start, study=study, on_idle=children.watch if len(children) else None
        )
        children.wait()
    finally:
        children.stop()
    return ran


def _run_pool(s: Setup, workers, ray):
    """The run's worker processes, where tune's workers 1..N-1 run in them: on a CPU with
    --workers (started, and warm after earlier stages); not with Ray, nor stages.tune.workers,
    nor on GPUs (each pool process has its device, and a task cannot choose its process)."""
    spec, ctx = s.spec, s.ctx
    local = ray is None and spec.executor == "local" and spec.stages.tune.workers is None
    return ctx.pool() if local and workers.count > 1 and ctx.device.type == "cpu" else None


def _children(s: Setup, plan: Plan, workers, ray, study, pool) -> PoolTasks | Processes | RayTasks:
    """Workers 1..N-1: Ray tasks with Ray, tasks in the run's `pool`, or processes of tune's own
    (stages.tune.workers; on GPUs, worker i on GPU i)."""
    ctx = s.ctx
    if ray is not None:
        start_yaml = (s.out / "start.yaml").read_text()
        return RayTasks(ray, plan, workers.count, storage=s.storage, start_yaml=start_yaml, run_root=ctx.run.root)
    if pool is not None:
        return PoolTasks(pool, plan, workers.count, storage=s.storage, study=study, console=ctx.console)
    return Processes(s.out, workers.count, storage=s.storage, threads=workers.threads, study=study)


def _on_timeline(s: Setup, recs: list) -> None:
    """This run's trials in the stage's timeline, as the worker that trained each stamped them
    (tune_worker.make_runner: its process, device, Ray node, and its clock's start and end); a
    resumed study's earlier trials, and those other runs on a shared study trained, are not."""
    for r in recs:
        if r.ran is not None and r.ran.get("run") == s.run_id:
            ran = Ran(**{k: v for k, v in r.ran.items() if k != "run"})
            record(s.ctx, f"trial-{r.number:03d}", ran, seed=s.spec.seed, steps=r.steps)


def _measure_study(s: Setup, study) -> TuneMeasurements:
    """What the study says: its trials, the best, their spread, coverage and importance."""
    cfg, data = s.spec.stages.tune, s.ctx.device_data()
    recs = ta.records(study)
    _clear_trial_curves(s.ctx, keep={r.number for r in recs})
    _on_timeline(s, recs)
    m = TuneMeasurements(task=data.task, n_val=len(data.val), trials=recs, requested=cfg.trials)
    m.start_trial = next((r.number for r in recs if s.start_params is not None and r.params == s.start_params), None)
    usable = [r for r in recs if r.state == "complete" and not r.diverged and r.value is not None]
    m.best = max(usable, key=lambda r: (r.value, -r.number), default=None)
    values = [r.value for r in recs if r.state == "complete" and r.value is not None]  # diverged ones too
    if values:
        m.spread = max(values) - min(values)
        halves = data.task.val_halves(len(data.val), s.spec.seed)  # trials are scored on the selection half
        m.noise = data.task.metric_se(max(values), int(halves[0].sum()) if halves is not None else len(data.val))
    m.coverage = ta.coverage(
        cfg.space, recs, p=cfg.coverage_p, random_until=ts.TPE_STARTUP if cfg.sampler == "tpe" else None
    )
    m.importance = ta.importance(cfg.space, recs, permutations=cfg.permutations, seed=s.spec.seed)
    # the val loss, finer than a saturated metric: whether the knobs reach the model at all
    by_loss = [
        dataclasses.replace(r, value=-r.val_loss) for r in recs if r.val_loss is not None and math.isfinite(r.val_loss)
    ]
    m.loss_importance = ta.importance(cfg.space, by_loss, permutations=cfg.permutations, seed=s.spec.seed)
    return m


def _measure_confirmation(s: Setup, m: TuneMeasurements) -> None:
    """The best trial and the starting point at fresh seeds (the search's seed flatters its
    best), compared on the half of val the trials were not chosen on (the search's examples
    flatter it too), against the seed spread: regularize's when it measured one on this split,
    pooled with the fresh seeds' own."""
    if m.best is None or m.best.params == s.start_params:
        return
    trainer = Trainer(s.ctx, stage=STAGE, steps=s.steps, every=s.every)
    data = trainer.data(s.start)
    m.prior_noise = recorded_seed_noise(s.ctx.run, data_fingerprint(data))
    candidate = apply_params(s.start, m.best.params)
    reference = SeedRuns("start", f"starting point ({s.source})")
    confirmed = SeedRuns("best", f"trial {m.best.number}")
    jobs = []  # every seed's pair at once: they train as one group (or are dealt over the workers)
    for seed in confirm_seeds(s.spec, m.task, spread_known=m.prior_noise is not None):
        tag = "" if seed == s.spec.seed + 1 else f"-seed{seed}"
        jobs += [
            Job(f"confirm-start{tag}", s.start, seed, more={"keep_model": False}),
            Job(f"confirm-best{tag}", candidate, seed, more={"keep_model": False}),
        ]
    runs = trainer.train_many(jobs)
    reference.runs += runs[0::2]
    confirmed.runs += runs[1::2]
    halves = m.task.val_halves(len(data.val), s.spec.seed)
    if halves is not None:
        m.confirm_examples = int(halves[1].sum())
        target_var = m.task.target_variance(data)
        reference, confirmed = (_on(r, halves[1], m.task, target_var) for r in (reference, confirmed))
    m.reference, m.confirmed = reference, confirmed


def _on(runs: SeedRuns, mask, task, target_var: float) -> SeedRuns:
    """The runs as scored on the val examples of `mask` only."""
    part = [
        dataclasses.replace(r, val_scores=r.val_scores[mask], val_metric=task.metric_of(r.val_scores[mask], target_var))
        for r in runs.runs
    ]
    return SeedRuns(runs.name, runs.description, runs=part)


def _record(s: Setup, m: TuneMeasurements, *, ran: int, orphans) -> dict:
    """best.yaml (the best trial only when it beat the start at the fresh seeds, as tune-improves
    judged it), the trials table and CSV, TensorBoard hparams, the summary."""
    cfg, ctx, spec = s.spec.stages.tune, s.ctx, s.spec
    # _measure_confirmation sets both confirmation runs, and only where there is a best trial
    best, ref, confirm = m.best, m.reference, m.confirmed
    confirmed = ref is not None and confirm is not None and not any(r.diverged for r in confirm.runs + ref.runs)
    best_spec, why = s.start, "the starting point (no trial beat it beyond noise)"
    if confirmed and best is not None and confirmation_z(m)[0] >= cfg.significance_z:
        best_spec, why = apply_params(s.start, best.params), f"trial {best.number}"
    best_yaml = ctx.run.best_spec(STAGE)
    atomic.write_text(
        best_yaml,
        f"# nnrecipe run --config {ctx.rel(best_yaml)}\n# tune's best configuration: {why}\n"
        + best_spec.model_copy(update={"stages": spec.stages}).to_yaml(),
    )
    rows = _rows(m.trials, cfg.space)
    _write_csv(s.out / "trials.csv", rows, list(cfg.space))
    ctx.console.print(_table(rows, list(cfg.space), m.task, m))
    _hparams(ctx, m.trials, m.task)
    return {
        "study": s.study,
        "storage": "run directory journal" if s.local else redact(s.storage),
        "start": s.source,
        "start_note": s.note,
        "steps_per_trial": s.steps,
        "requested": cfg.trials,
        "finished": len(m.trials),
        "ran_here": ran,
        "recovered": orphans,
        "sampler": cfg.sampler,
        "pruner": cfg.pruner,
        "best": {"trial": m.best.number, "value": m.best.value, "params": m.best.params} if m.best else None,
        "best_spec": ctx.rel(best_yaml),
        "best_is_start": best_spec is s.start,
        "importance": m.importance.share if m.importance else None,
        "importance_p": m.importance.p if m.importance else None,
    }


def confirm_seeds(spec, task, *, spread_known: bool) -> list[int]:
    """The fresh seeds (never the search's) for re-training the best trial and the start: the
    task's number, and at least three when no earlier stage measured the seed spread, so that
    the confirmation measures it itself on 4 degrees of freedom (on 2, Student's t needs
    t = 14 for z = 3: a barely trained start at 9 % against a 96 % best was "within noise")."""
    k = spec.stages.tune.confirm_seeds or (task.confirm_seeds if spread_known else max(3, task.confirm_seeds))
    return [spec.seed + 1 + i for i in range(k)]


def tune_workers(spec, ctx):
    """The workers on the study and where they run: (Workers, the connected ray module or None).
    stages.tune.workers: processes on this machine; else the run's --workers, as processes with
    the local executor, as Ray tasks with Ray (a cluster's tasks only with a database storage:
    they cannot reach this machine's journal file)."""
    from nnrecipe.runtime import Workers, plan_workers

    if spec.stages.tune.workers is not None:
        return plan_workers(spec.stages.tune.workers, ctx.device, field="stages.tune.workers"), None
    if ctx.workers is None or spec.executor == "local":
        return plan_workers(ctx.workers.count if ctx.workers is not None else 1, ctx.device), None
    if ctx.workers.count == 1:
        return plan_workers(1, ctx.device), None
    if unreachable(spec.executor, spec.stages.tune.storage):
        ctx.console.print(
            "tune: the study's journal is a file on this machine, which the cluster's Ray tasks cannot reach: "
            "its trials run here (stages.tune.storage: postgresql://... spreads them over the cluster)"
        )
        return plan_workers(1, ctx.device), None
    ray = ctx.pool().connect()
    count = min(ray_count(ctx.workers.count, ray, ctx.device.type), spec.stages.tune.trials)
    return Workers(count=count, devices=(ctx.device.type,), threads=1), ray


def _clear_trial_curves(ctx, keep: set[int]) -> None:
    """Curves of trials the study does not hold (killed, surplus, a previous study) and the
    confirmation runs; the stage's own pictures and hparams (rewritten each time)."""
    tb = ctx.run.tb_dir(STAGE)
    if not tb.exists():
        return
    for entry in tb.iterdir():
        if entry.is_file():
            entry.unlink()
        if entry.is_dir() and entry.name.startswith(("trial-", "confirm-")):
            number = int(entry.name.split("-")[1]) if entry.name.startswith("trial-") else None
            if number is None or number not in keep:
                shutil.rmtree(entry, ignore_errors=True)


def _rows(recs, space) -> list[dict]:
    return [
        {
            "trial": r.number,
            "state": r.state,
            "value": None if r.value is None else round(r.value, 5),
            **{k: r.params.get(k) for k in space},
            "steps": r.steps,
            "diverged": r.diverged,
            "val_loss": None if r.val_loss is None else round(r.val_loss, 5),
            "seconds": None if r.seconds is None else round(r.seconds, 1),
            "round_of": r.round_of,
            "worker": r.worker,
            "retry_of": r.retry_of,
        }
        for r in recs
    ]


def _write_csv(path, rows: list[dict], params: list[str]) -> None:
    import csv
    import io

    cols = [
        "trial",
        "state",
        "value",
        *params,
        "steps",
        "diverged",
        "val_loss",
        "seconds",
        "round_of",
        "worker",
        "retry_of",
    ]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for r in rows:
        w.writerow({c: "" if r.get(c) is None else r[c] for c in cols})
    atomic.write_text(path, buf.getvalue())


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _table(rows: list[dict], params: list[str], task, m: TuneMeasurements, top: int = 10) -> Table:
    metric = f"val {task.metric_short}" + (" (½)" if task.val_halves(2, 0) is not None else "")  # the selection half
    t = Table(
        title=f"tune: {len(rows)} trials, best {min(top, len(rows))} (full list: tune/trials.csv)", title_justify="left"
    )
    for col in ("trial", "state", metric, *params, "steps"):
        t.add_column(col, justify="left" if col == "state" else "right")
    shown = sorted((r for r in rows if r["value"] is not None), key=lambda r: (-r["value"], r["trial"]))[:top]
    for r in shown:
        mark = " (start)" if r["trial"] == m.start_trial else ""
        state = "diverged" if r["diverged"] else r["state"]
        t.add_row(f"{r['trial']}{mark}", state, f"{r['value']:.4f}", *(_fmt(r[p]) for p in params), str(r["steps"]))
    return t


def _hparams(ctx, recs, task) -> None:
    """One hparams entry per finished trial, in that trial's TensorBoard folder (linked to its curves)."""
    metric = f"hparam/val_{task.metric}"
    writer = ctx.writer(STAGE)
    for r in recs:
        if r.value is None:
            continue
        hp = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in r.params.items()}
        writer.add_hparams(hp, {metric: r.value}, run_name=f"trial-{r.number:03d}")
