"""Stage 3, "overfit": a model large enough to fit the training set (focus on training loss).

Adam at the spec's LR with the spec's schedule (the recipe's default is constant 3e-4),
best and last checkpoints, whole-split evaluations, the LR actually applied at every step.
summary.json and checkpoints/best.pt are what the regularize stage starts from.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from nnrecipe.checks.overfit_checks import beats_baselines, fits_train, ladder, lr_range, lr_schedule, weights_at
from nnrecipe.experiments import Checkpoints, Experiment, Job, Pending, Result, Trainer, experiment_key, run_in_stage
from nnrecipe.handoff import baseline_scores, data_fingerprint
from nnrecipe.loop import resumable
from nnrecipe.losses import loss_name, make_loss
from nnrecipe.models import seeded_model
from nnrecipe.optim import make_optimizer
from nnrecipe.pictures import mispredictions, overfit, text
from nnrecipe.pictures.saver import attach
from nnrecipe.probes.diagnosis import trained_collapse
from nnrecipe.probes.lr_range import lr_range_test
from nnrecipe.probes.measurements import OverfitMeasurements
from nnrecipe.probes.model_probes import first_examples
from nnrecipe.stages.base import StageContext, StageResult

STAGE = "overfit"
CHECKS = (fits_train, beats_baselines, lr_schedule, lr_range)
VAL_SCORES = "val_scores.npz"


@dataclasses.dataclass
class Setup:
    spec: Any
    ctx: StageContext
    data: Any
    loss_fn: Callable
    model_spec: Any  # stages.overfit.model, else the spec's
    steps: int
    every: int
    fingerprint: str  # the split it runs on (handoff.data_fingerprint)

    def fresh_model(self, model_spec):
        return seeded_model(self.spec, self.data, base=self.ctx.base, device=self.ctx.device, model_spec=model_spec)

    def train(self, name: str, model, *, steps: int, **more) -> Result:
        """No regularizers here: the spec's optimizer and schedule on the bare model."""
        exp = Experiment(
            name,
            self.spec,
            steps=steps,
            eval_every=self.every,
            model=model,
            loss_fn=self.loss_fn,
            regularized=False,
            **more,
        )
        return run_in_stage(self.ctx, STAGE, exp, data=self.data)


def run(spec, ctx: StageContext) -> StageResult:
    s = _setup(spec, ctx)
    m = OverfitMeasurements(
        task=s.data.task,
        lr0=spec.optim.lr,
        schedule="custom" if spec.optim.schedule.factory else spec.optim.schedule.name,
    )
    if spec.stages.overfit.lr_range.enabled or ctx.options.get("lr_range"):
        _measure_lr_range(s, m)
    rungs = _start_ladder(s)  # in the run's workers (where it has them) while the model trains here
    samples = _measure_model(s, m)
    m.baseline_scores, m.baseline_skip = baseline_scores(ctx.run, s.data, s.fingerprint)  # the baselines, same split
    m.ladder, m.ladder_names = rungs.results(), [_describe(rung) for rung in spec.stages.overfit.ladder]
    cfg = spec.stages.overfit
    verdicts = [check(m, cfg) for check in CHECKS] + ladder(m, cfg)
    wrong, arts = _draw(s, m, samples)
    return StageResult(STAGE, attach(verdicts, *arts), _record(s, m, wrong))


def _setup(spec, ctx: StageContext) -> Setup:
    cfg = spec.stages.overfit
    steps, data = cfg.steps or spec.train.steps, ctx.device_data()
    return Setup(
        spec=spec,
        ctx=ctx,
        data=data,
        loss_fn=make_loss(spec, base=ctx.base),
        model_spec=cfg.model or spec.model,
        steps=steps,
        every=min(cfg.eval_every or spec.train.eval_every, steps),
        fingerprint=data_fingerprint(data),
    )


def _measure_lr_range(s: Setup, m: OverfitMeasurements) -> None:
    """The LR range test on a fresh copy of the stage's model."""
    r, spec = s.spec.stages.overfit.lr_range, s.spec
    model = s.fresh_model(s.model_spec)
    m.lr_range = lr_range_test(
        model,
        s.data.train,
        s.loss_fn,
        make_optimizer(spec.optim, model.parameters()),
        device=s.ctx.device,
        batch_size=spec.data.batch_size,
        seed=spec.seed,
        steps=r.steps,
        min_lr=r.min_lr,
        max_lr=r.max_lr,
        smoothing=r.smoothing,
        diverge_factor=r.diverge_factor,
    )


def _measure_model(s: Setup, m: OverfitMeasurements) -> list[tuple[int, str]]:
    """The stage's model, trained to fit, with best and last checkpoints; val is judged at the
    best one (this stage drives train loss down and may pass val's optimum on the way).
    --resume continues an interrupted run of this same experiment from checkpoints/last.pt.
    Returns what a next-token model wrote from its prompt at each evaluation."""
    spec, ctx = s.spec, s.ctx
    key = experiment_key(spec.model_copy(update={"model": s.model_spec}), steps=s.steps, every=s.every, extra=STAGE)
    last = ctx.run.checkpoint(STAGE, "last.pt")
    resume = resumable(last, key, ctx.device) if ctx.options.get("resume") else None
    m.resumed_from = int(resume["step"]) if resume else None
    samples: list[tuple[int, str]] = []
    sampler = s.data.task.sampler(spec, s.data, ctx.device)

    def on_eval(step, net, result):
        samples.append((step, sampler(net, ctx.writer(STAGE, "model"), step)))

    checkpoints = Checkpoints(last=last, best=ctx.run.checkpoint(STAGE, "best.pt"), key=key, resume=resume)
    m.model = s.train(
        "model",
        s.fresh_model(s.model_spec),
        steps=s.steps,
        checkpoints=checkpoints,
        histograms=spec.train.log_histograms,
        on_eval=on_eval if sampler is not None else None,
    )
    outputs = m.model.val_eval.outputs if m.model.val_eval is not None else None
    if outputs is not None and not m.model.diverged:
        y = s.data.targets("val")
        m.per_output = s.data.task.per_output(outputs, y, s.data.target_mean("train"), s.data.task.blocks(len(y)))
    if m.model.model is not None and not m.model.diverged:  # why it may not fit: every output alike?
        xt, yt = first_examples(s.data.train, 256, device=ctx.device)
        m.collapse = trained_collapse(m.model, task=s.data.task, loss=loss_name(spec), x=xt, y=yt)
    return samples


def _start_ladder(s: Setup) -> Pending:
    """The ladder: one change at a time, each rung trained the same way (no regularizers), from
    the spec's seed; independent of the stage's model, so started before it."""
    cfg, spec = s.spec.stages.overfit, s.spec
    jobs = [
        Job(f"ladder-{i}", spec.model_copy(update={"model": rung}), spec.seed, more={"regularized": False})
        for i, rung in enumerate(cfg.ladder)
    ]
    trainer = Trainer(s.ctx, stage=STAGE, steps=cfg.ladder_steps or s.steps, every=s.every)
    return trainer.submit(jobs, parallel=bool(jobs))  # no ladder: no workers started for it


def _describe(model_spec) -> str:
    args = model_spec.args if isinstance(model_spec.args, dict) else model_spec.args.model_dump()
    brief = ", ".join(
        f"{k}={v}"
        for k, v in args.items()
        if k in ("hidden", "channels", "width", "dropout") or model_spec.arch == "python"
    )
    return f"{model_spec.arch}({brief})"


def _draw(s: Setup, m: OverfitMeasurements, samples):
    """The curves; what the model gets wrong on val (at the checkpoint val was judged at), or
    for a next-token model what it writes from the prompt."""
    ctx, data = s.ctx, s.data
    assert m.model is not None  # run() trains it (_measure_model) before drawing
    outputs = m.model.val_eval.outputs if m.model.val_eval is not None else None
    wrong = (
        None
        if outputs is None
        else data.task.mispredictions(
            outputs,
            data.targets("val"),
            num_classes=data.num_outputs,
            loss=loss_name(s.spec),
            class_name=data.class_name,
        )
    )
    arts = [overfit.draw(ctx, STAGE, m), text.samples(ctx, STAGE, data, samples, "fits-train")]
    if wrong is not None:
        arts.append(
            mispredictions.draw(
                ctx,
                STAGE,
                data,
                wrong,
                "beats-baselines",
                outputs=outputs,
                at=weights_at(m.model.val_step, m.model.steps),
            )
        )
    return wrong, arts


def _record(s: Setup, m: OverfitMeasurements, wrong) -> dict:
    ctx, data = s.ctx, s.data
    # run() trains the model (_measure_model) first; trained here, its result keeps its history
    assert m.model is not None and m.model.history is not None
    ctx.run.write_arrays(STAGE, VAL_SCORES, {"model": m.model.val_scores})
    h = m.model.history
    best, last = ctx.run.checkpoint(STAGE, "best.pt"), ctx.run.checkpoint(STAGE, "last.pt")
    return {
        "task": data.task.name,
        "data_fingerprint": s.fingerprint,
        "loss": loss_name(s.spec),
        "model": s.model_spec.model_dump(mode="json"),
        "steps": h.steps_run,
        "resumed_from_step": m.resumed_from,
        "diverged": h.diverged,
        "final": m.model.summary(),
        "best_step": h.best_step,
        "best_val_loss": h.best_val_loss,
        "evals": [{"step": st, "val_loss": r.loss, f"val_{r.metric_name}": r.metric} for st, r in h.evals],
        "checkpoints": {
            "best": ctx.rel(best) if best.exists() else None,
            "last": ctx.rel(last) if last.exists() else None,
        },
        "val_scores": VAL_SCORES,
        "lr": {"first": h.lrs[0] if h.lrs else None, "last": h.lrs[-1] if h.lrs else None, "schedule": m.schedule},
        "lr_range": {"suggested_lr": m.lr_range.suggested_lr, "diverge_lr": m.lr_range.diverge_lr}
        if m.lr_range
        else None,
        "ladder": [{"model": n, **e.summary()} for n, e in zip(m.ladder_names, m.ladder)],
        "per_class": wrong.per_class if wrong else None,
        "overall": wrong.overall if wrong and wrong.overall else None,  # multi-label: micro-F1, mean average precision
        "confusion": wrong.confusion.tolist() if wrong and wrong.confusion is not None else None,
    }
