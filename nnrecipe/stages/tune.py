"""Stage 5, "tune": random search over a spec'd space, on Optuna.

Trials start from regularize/best.yaml (else the spec); trial 0 is that starting point.
The study lives in the run directory (tune/study.journal) or in a database shared by many
machines (`--storage postgresql://...`): every process that runs this stage on the same
study works on it until `trials` trials have finished, then each one judges the whole
study. Re-running a stopped tune continues the study; a trial killed half-way runs again.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time

from rich.table import Table

from nnrecipe import atomic
from nnrecipe.checks.tune_checks import TuneMeasurements, confirmation_z, search_coverage, sensitivity, tune_improves
from nnrecipe.errors import NNRecipeError
from nnrecipe.probes import tune_analysis as ta
from nnrecipe.probes import tune_study as ts
from nnrecipe.probes.regularize import KnobResult
from nnrecipe.probes.training import experiment_key
from nnrecipe.probes.tune_space import apply_params, start_values
from nnrecipe.tasks import METRIC
from nnrecipe.stages.base import StageContext, StageResult, with_artifacts
from nnrecipe.stages.start import from_spec, start_spec
from nnrecipe.stages.trainer import Trainer
from nnrecipe.stages.tune_pictures import draw
from nnrecipe.stages.tune_worker import Plan, run_worker

STAGE = "tune"
JOURNAL = "study.journal"  # kept when the stage re-runs: the study continues
BEST = "best.yaml"
TPE_STARTUP = 10  # Optuna's TPE samples its first 10 trials at random


def run(spec, ctx: StageContext) -> StageResult:
    cfg = spec.stages.tune
    if cfg.start == "auto":
        start, source, note = start_spec(spec, ctx, stages=("regularize",))
    else:
        start, source, note = from_spec(spec), "the spec", ""
    steps = cfg.steps or start.train.steps
    every = min(cfg.eval_every or start.train.eval_every, steps)
    data = ctx.device_data()
    out = ctx.run.stage_dir(STAGE)
    local = cfg.storage is None
    storage_path = cfg.storage or str(out / JOURNAL)
    name = cfg.study or spec.name
    space_text = json.dumps({k: v.model_dump(mode="json", exclude_none=True) for k, v in cfg.space.items()}, sort_keys=True)
    key = experiment_key(start.model_copy(update={"seed": spec.seed}), steps=steps, every=every, extra=space_text)

    # 1. the study: created here or joined; a local one from another experiment is set aside.
    storage = ts.open_storage(storage_path, heartbeat_interval=cfg.heartbeat_interval, grace_period=cfg.grace_period)
    try:
        study = ts.open_study(storage=storage, name=name, key=key, create=True)
    except ts.StorageError:
        if not local:
            raise
        aside = out / f"study-{time.strftime('%Y%m%dT%H%M%S')}.journal.old"
        os.replace(storage_path, aside)
        note = (note + "; " if note else "") + f"the previous study (another space or starting spec) was moved to {ctx.rel(aside)}"
        storage = ts.open_storage(storage_path, heartbeat_interval=cfg.heartbeat_interval, grace_period=cfg.grace_period)
        study = ts.open_study(storage=storage, name=name, key=key, create=True)
    orphans = ts.recover_orphans(study) if local else []  # this process holds the run lock: RUNNING trials are dead
    _clear_trial_curves(ctx, keep={t.number for t in study.get_trials(deepcopy=False)})
    had = sum(1 for t in study.get_trials(deepcopy=False) if t.state in ts.FINISHED)

    # 2. the workers: this process and `workers - 1` children on the same study.
    start_yaml = out / "start.yaml"
    atomic.write_text(start_yaml, f"# the tune stage's starting point ({source})\n" + start.to_yaml())
    plan = Plan(run_root=str(ctx.run.root.resolve()), base=str(ctx.base), start_yaml=str(start_yaml), storage=storage_path,
                study=name, key=key, trials=cfg.trials, seed=spec.seed, steps=steps, every=every, device=str(ctx.device))
    plan.write(out / "worker.json")
    children = [_spawn(out, i) for i in range(1, cfg.workers)]
    ctx.console.print(f"tune: study [cyan]{name}[/] on {ts.redact(storage_path) if not local else ctx.rel(storage_path)}: "
                      f"{had} of {cfg.trials} trials finished" + (f", {len(children) + 1} workers" if children else ""))
    try:
        ran = run_worker(plan, ctx=ctx, index=0, start=start, study=study,
                         on_idle=(lambda: _watch(children, study)) if children else None)
        for proc, log in children:
            proc.wait()
        _watch(children, study)
    finally:
        for proc, log in children:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
            log.close()

    # 3. what the study says.
    recs = ta.records(study)
    _clear_trial_curves(ctx, keep={r.number for r in recs})
    m = TuneMeasurements(task=data.task, n_val=len(data.val), trials=recs, requested=cfg.trials)
    start_params = start_values(start, cfg.space)
    full_start = len(start_params) == len(cfg.space)
    m.start_trial = next((r.number for r in recs if full_start and r.params == start_params), None)
    usable = [r for r in recs if r.state == "complete" and not r.diverged and r.value is not None]
    m.best = max(usable, key=lambda r: (r.value, -r.number), default=None)
    values = [r.value for r in recs if r.state == "complete" and r.value is not None]  # diverged ones too
    if values:
        m.spread = max(values) - min(values)
        m.noise = _noise(data.task, max(values), len(data.val))
    m.coverage = ta.coverage(cfg.space, recs, p=cfg.coverage_p, random_until=TPE_STARTUP if cfg.sampler == "tpe" else None)
    m.importance = ta.importance(cfg.space, recs, permutations=cfg.permutations, seed=spec.seed)

    # 4. the best trial and the starting point at a fresh seed (the search's seed flatters its best).
    best_spec = start
    if m.best is not None and not (full_start and m.best.params == start_params):
        trainer = Trainer(ctx, stage=STAGE, steps=steps, every=every)
        candidate = apply_params(start, m.best.params)
        m.reference = KnobResult("start", f"starting point ({source})")
        m.confirmed = KnobResult("best", f"trial {m.best.number}")
        for seed in confirm_seeds(spec):
            tag = "" if seed == spec.seed + 1 else f"-seed{seed}"
            m.reference.runs.append(trainer.train(start, seed=seed, label=f"confirm-start{tag}", keep=False).run)
            m.confirmed.runs.append(trainer.train(candidate, seed=seed, label=f"confirm-best{tag}", keep=False).run)
    verdicts = [tune_improves(m, cfg), search_coverage(m, cfg), sensitivity(m, cfg)]
    confirmed = m.confirmed is not None and not any(r.diverged for r in m.confirmed.runs + m.reference.runs)
    if confirmed and confirmation_z(m)[0] >= cfg.significance_z:  # as tune-improves judged it
        best_spec = apply_params(start, m.best.params)
    why = f"trial {m.best.number}" if best_spec is not start else "the starting point (no trial beat it beyond noise)"
    atomic.write_text(out / BEST, f"# nnrecipe run --config {ctx.rel(out / BEST)}\n# tune's best configuration: {why}\n"
                                  + best_spec.model_copy(update={"stages": spec.stages}).to_yaml())

    # 5. tables, pictures, TensorBoard hparams.
    rows = _rows(recs, cfg.space)
    _write_csv(out / "trials.csv", rows, list(cfg.space))
    ctx.console.print(_table(rows, list(cfg.space), data.task, m))
    _hparams(ctx, recs, data.task)
    arts = draw(ctx, m, cfg.space, stage=STAGE)
    verdicts = [with_artifacts(v, *arts.get(v.check, [])) for v in verdicts]
    summary = {
        "study": name, "storage": "run directory journal" if local else ts.redact(storage_path), "start": source,
        "start_note": note, "steps_per_trial": steps, "requested": cfg.trials, "finished": len(recs),
        "ran_here": ran, "recovered": orphans, "sampler": cfg.sampler, "pruner": cfg.pruner,
        "best": {"trial": m.best.number, "value": m.best.value, "params": m.best.params} if m.best else None,
        "best_spec": ctx.rel(out / BEST), "best_is_start": best_spec is start,
        "importance": m.importance.share if m.importance else None,
        "importance_p": m.importance.p if m.importance else None,
    }
    return StageResult(STAGE, verdicts, summary)


def confirm_seeds(spec) -> list[int]:
    """The fresh seeds (never the search's) for re-training the best trial and the start."""
    k = spec.stages.tune.confirm_seeds or (3 if spec.task == "language-model" else 1)
    return [spec.seed + 1 + i for i in range(k)]


def _noise(task: str, value: float, n: int) -> float:
    """The standard error of one trial's val metric: binomial for accuracy; for R^2 from
    Var(MSE) ~ 2 sigma^4 / n with Gaussian residuals, (1 - R^2) sqrt(2 / n)."""
    if task in ("classification", "language-model"):  # token accuracy: each window counted as one trial (conservative)
        return math.sqrt(max(value * (1 - value), 1.0 / n) / n)
    return max(1.0 - value, 1e-6) * math.sqrt(2.0 / n)


def _spawn(out, index: int):
    log = open(out / f"worker-{index}.log", "w")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "nnrecipe.stages.tune_worker", str(out / "worker.json"), str(index)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    return proc, log


def _watch(children, study) -> None:
    """A child that failed stops the stage with its error line; one that was killed leaves its
    trial RUNNING: it is failed and queued again here."""
    for proc, log in children:
        code = proc.poll()
        if code is None or code == 0:
            continue
        log.flush()
        lines = [ln.strip() for ln in open(log.name, errors="replace").read().splitlines() if ln.strip()]
        if code < 0 or code in (137, 143):
            ts.recover_orphans(study, worker=ts.worker_name(int(proc.args[-1]), pid=proc.pid))
            continue
        last = lines[-1] if lines else f"exit code {code}"
        raise NNRecipeError(f"tune worker {proc.args[-1]} failed ({log.name}): {last.removeprefix('error: ')}")


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
    return [{"trial": r.number, "state": r.state, "value": None if r.value is None else round(r.value, 5),
             **{k: r.params.get(k) for k in space}, "steps": r.steps, "diverged": r.diverged,
             "val_loss": None if r.val_loss is None else round(r.val_loss, 5),
             "seconds": None if r.seconds is None else round(r.seconds, 1), "worker": r.worker, "retry_of": r.retry_of}
            for r in recs]


def _write_csv(path, rows: list[dict], params: list[str]) -> None:
    import csv
    import io

    cols = ["trial", "state", "value", *params, "steps", "diverged", "val_loss", "seconds", "worker", "retry_of"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for r in rows:
        w.writerow({c: "" if r.get(c) is None else r[c] for c in cols})
    atomic.write_text(path, buf.getvalue())


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _table(rows: list[dict], params: list[str], task: str, m: TuneMeasurements, top: int = 10) -> Table:
    metric = {"classification": "val acc", "language-model": "val token acc"}.get(task, "val R²")
    t = Table(title=f"tune: {len(rows)} trials, best {min(top, len(rows))} (full list: tune/trials.csv)", title_justify="left")
    for col in ("trial", "state", metric, *params, "steps"):
        t.add_column(col, justify="left" if col == "state" else "right")
    shown = sorted((r for r in rows if r["value"] is not None), key=lambda r: (-r["value"], r["trial"]))[:top]
    for r in shown:
        mark = " (start)" if r["trial"] == m.start_trial else ""
        state = "diverged" if r["diverged"] else r["state"]
        t.add_row(f"{r['trial']}{mark}", state, f"{r['value']:.4f}", *(_fmt(r[p]) for p in params), str(r["steps"]))
    return t


def _hparams(ctx, recs, task: str) -> None:
    """One hparams entry per finished trial, in that trial's TensorBoard folder (linked to its curves)."""
    metric = f"hparam/val_{METRIC[task]}"
    writer = ctx.writer(STAGE)
    for r in recs:
        if r.value is None:
            continue
        hp = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in r.params.items()}
        writer.add_hparams(hp, {metric: r.value}, run_name=f"trial-{r.number:03d}")
