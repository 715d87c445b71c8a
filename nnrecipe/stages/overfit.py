"""Stage 3, "overfit": a model large enough to fit the training set (focus on training loss).

Adam at the spec's LR with the spec's schedule (the recipe's default is constant 3e-4),
best and last checkpoints, whole-split evaluations, the LR actually applied at every step.
summary.json and checkpoints/best.pt are what the regularize stage starts from.
"""

from __future__ import annotations

import numpy as np

from nnrecipe import pictures
from nnrecipe.checks.overfit_checks import beats_baselines, fits_train, ladder, lr_range, lr_schedule
from nnrecipe.losses import loss_name, make_loss
from nnrecipe.models import prepare_model
from nnrecipe.optim import make_optimizer
from nnrecipe.probes import mispredictions
from nnrecipe.stages.misprediction_pictures import misprediction_artifacts
from nnrecipe.probes.lr_range import lr_range_test
from nnrecipe.probes.measurements import OverfitMeasurements
from nnrecipe.probes.training import Experiment, data_fingerprint, experiment_key, resumable, train_experiment
from nnrecipe.runtime import seed_everything
from nnrecipe.stages.base import FigureSaver, StageContext, StageResult, with_artifacts
from nnrecipe.stages.sequence import sample, sample_artifacts

STAGE = "overfit"
CHECKS = (fits_train, beats_baselines, lr_schedule, lr_range)
VAL_SCORES = "val_scores.npz"


def run(spec, ctx: StageContext) -> StageResult:
    cfg = spec.stages.overfit
    base, device = ctx.base, ctx.device
    data = ctx.device_data()
    loss_fn = make_loss(spec, base=base)
    model_spec = cfg.model or spec.model
    steps = cfg.steps or spec.train.steps
    every = min(cfg.eval_every or spec.train.eval_every, steps)
    fingerprint = data_fingerprint(data)
    m = OverfitMeasurements(task=data.task, lr0=spec.optim.lr,
                            schedule="custom" if spec.optim.schedule.factory else spec.optim.schedule.name)

    def fresh_model(ms):
        seed_everything(spec.seed, deterministic=spec.train.deterministic)
        return prepare_model(spec, data, base=base, model_spec=ms).to(device)

    # 1. optional: the LR range test on a fresh copy of the stage's model.
    if cfg.lr_range.enabled or ctx.options.get("lr_range"):
        r = cfg.lr_range
        model = fresh_model(model_spec)
        m.lr_range = lr_range_test(model, data.train, loss_fn, make_optimizer(spec.optim, model.parameters()), device=device,
                                   batch_size=spec.data.batch_size, seed=spec.seed, steps=r.steps, min_lr=r.min_lr,
                                   max_lr=r.max_lr, smoothing=r.smoothing, diverge_factor=r.diverge_factor)

    # 2. the stage's model, trained to fit, with best/last checkpoints.
    # --resume continues an interrupted run of this same experiment from checkpoints/last.pt.
    checkpoints = ctx.run.stage_dir(STAGE) / "checkpoints"
    key = experiment_key(spec.model_copy(update={"model": model_spec}), steps=steps, every=every, extra=STAGE)
    resume = resumable(checkpoints / "last.pt", key, device) if ctx.options.get("resume") else None
    m.resumed_from = int(resume["step"]) if resume else None
    samples: list[tuple[int, str]] = []  # language models: (step, text written from the prompt)

    def on_eval(step, net, result):
        samples.append((step, sample(net, data, spec, device, ctx.writer(STAGE, "model"), step)))

    m.model = _train(spec, ctx, data, fresh_model(model_spec), loss_fn, steps=steps, every=every, name="model",
                     last=checkpoints / "last.pt", best=checkpoints / "best.pt", histograms=spec.train.log_histograms,
                     key=key, resume=resume is not None, purge_step=(m.resumed_from + 1) if resume else None,
                     on_eval=on_eval if data.task == "language-model" else None)

    # 3. the baselines' per-example val scores, when the baseline stage ran on this same split.
    m.baseline_scores, m.baseline_skip = _baseline_scores(ctx, fingerprint)

    # 4. the ladder: one change at a time.
    for i, rung in enumerate(cfg.ladder):
        name = _describe(rung)
        m.ladder.append(_train(spec, ctx, data, fresh_model(rung), loss_fn, steps=cfg.ladder_steps or steps,
                               every=every, name=f"ladder-{i}"))
        m.ladder_names.append(name)

    verdicts = [check(m, cfg) for check in CHECKS] + ladder(m, cfg)
    arts = _pictures(ctx, m)
    # 5. what the model gets wrong on val (at the checkpoint val was judged at); for a language
    # model, what it writes from the prompt.
    wrong = None
    if data.task == "language-model":
        for check, paths in sample_artifacts(ctx, STAGE, data, samples, "fits-train").items():
            arts.setdefault(check, []).extend(paths)
    else:
        wrong = mispredictions.measure(m.model.val_eval.outputs, data.targets("val"), task=data.task,
                                       num_classes=data.num_outputs, loss=loss_name(spec), class_name=data.class_name)
        for check, paths in misprediction_artifacts(ctx, STAGE, data, wrong, "beats-baselines",
                                                    outputs=m.model.val_eval.outputs).items():
            arts.setdefault(check, []).extend(paths)
    final = [with_artifacts(v, *arts.get(v.check, [])) for v in verdicts]
    ctx.run.write_arrays(STAGE, VAL_SCORES, {"model": m.model.val_scores})
    h = m.model.history
    summary = {
        "task": data.task,
        "data_fingerprint": fingerprint,
        "loss": loss_name(spec),
        "model": model_spec.model_dump(mode="json"),
        "steps": h.steps_run,
        "resumed_from_step": m.resumed_from,
        "diverged": h.diverged,
        "final": m.model.summary(),
        "best_step": h.best_step,
        "best_val_loss": h.best_val_loss,
        "evals": [{"step": s, "val_loss": r.loss, f"val_{r.metric_name}": r.metric} for s, r in h.evals],
        "checkpoints": {"best": ctx.rel(checkpoints / "best.pt") if (checkpoints / "best.pt").exists() else None,
                        "last": ctx.rel(checkpoints / "last.pt") if (checkpoints / "last.pt").exists() else None},
        "val_scores": VAL_SCORES,
        "lr": {"first": h.lrs[0] if h.lrs else None, "last": h.lrs[-1] if h.lrs else None, "schedule": m.schedule},
        "lr_range": {"suggested_lr": m.lr_range.suggested_lr, "diverge_lr": m.lr_range.diverge_lr} if m.lr_range else None,
        "ladder": [{"model": n, **e.summary()} for n, e in zip(m.ladder_names, m.ladder)],
        "per_class": wrong.per_class if wrong else None,
        "confusion": wrong.confusion.tolist() if wrong and wrong.confusion is not None else None,
    }
    return StageResult(STAGE, final, summary)


def _train(spec, ctx, data, model, loss_fn, *, steps: int, every: int, name: str, last=None, best=None,
           histograms: bool = False, key: str = "", resume: bool = False, purge_step=None, on_eval=None) -> Experiment:
    # Val is judged at the best checkpoint: this stage drives train loss down and may pass
    # val's optimum on the way; regularize starts from that checkpoint too.
    return train_experiment(name, spec=spec, data=data, model=model, loss_fn=loss_fn, device=ctx.device, steps=steps,
                            base=ctx.base, writer=ctx.writer(STAGE, name, purge_step=purge_step), progress=ctx.progress,
                            eval_every=every, last_checkpoint=last, best_checkpoint=best, histograms=histograms,
                            checkpoint_key=key, resume_from=last if resume else None, on_eval=on_eval)


def _baseline_scores(ctx: StageContext, fingerprint: str):
    summary = ctx.run.read_summary("baseline")
    if summary is None:
        return None, "the baseline stage has not run in this run directory (nnrecipe baseline)"
    if summary.get("data_fingerprint") != fingerprint:
        return None, "the baseline stage ran on other data or another split; re-run nnrecipe baseline"
    arrays = ctx.run.read_arrays("baseline", summary.get("val_scores", "val_scores.npz"))
    if not arrays:
        return None, "baseline/val_scores.npz is missing; re-run nnrecipe baseline"
    dumb = [k for k in arrays if k in ("majority-class", "mean", "unigram")]
    return {k: arrays[k] for k in dumb + [k for k in ("linear", "bigram") if k in arrays]}, ""


def _describe(model_spec) -> str:
    args = model_spec.args if isinstance(model_spec.args, dict) else model_spec.args.model_dump()
    brief = ", ".join(f"{k}={v}" for k, v in args.items() if k in ("hidden", "channels", "width", "dropout") or model_spec.arch == "python")
    return f"{model_spec.arch}({brief})"


def _pictures(ctx: StageContext, m: OverfitMeasurements) -> dict[str, list[str]]:
    save = FigureSaver(ctx, STAGE)

    h = m.model.history
    losses = h.losses.numpy()
    series = {"train (per step)": (np.arange(1, len(losses) + 1), losses)}
    if h.evals:
        series["val (whole split)"] = (np.array([s for s, _ in h.evals]), np.array([r.loss for _, r in h.evals]))
    finite = np.isfinite(losses)
    save(pictures.curves(series, title="overfit: training and validation loss", ylabel="loss",
                         logy=bool(finite.all() and (losses > 0).all())), "curves", "fits-train", "beats-baselines")
    lrs = np.asarray(h.lrs)
    save(pictures.curves({"applied lr": (np.arange(1, len(lrs) + 1), lrs)}, title="the LR the optimizer applied at each step",
                         ylabel="lr", logy=bool((lrs > 0).all())), "lr", "lr-schedule")
    if m.lr_range is not None:
        r = m.lr_range
        ok = np.isfinite(r.smoothed)
        fig = pictures.curves({"smoothed loss": (r.lrs[ok], r.smoothed[ok]), "batch loss": (r.lrs[np.isfinite(r.losses)], r.losses[np.isfinite(r.losses)])},
                              title=f"LR range test (suggested {r.suggested_lr:.2g})" if r.suggested_lr else "LR range test",
                              ylabel="loss", logy=False)
        ax = fig.axes[0]
        ax.set_xscale("log")
        ax.set_xlabel("learning rate", fontsize=8)
        if r.suggested_lr:
            ax.axvline(r.suggested_lr, color="tab:green", linestyle="--", linewidth=1, label="suggested lr")
        ax.axvline(m.lr0, color="tab:red", linestyle=":", linewidth=1, label="spec lr")
        ax.legend(fontsize=7)
        save(fig, "lr_range", "lr-range")
    if m.ladder:
        series = {n: (np.arange(1, len(e.history.losses) + 1), e.history.losses.numpy()) for n, e in zip(m.ladder_names, m.ladder)}
        fig = pictures.curves(series, title="the ladder: one change at a time (training loss)", ylabel="loss",
                              logy=all((v[1] > 0).all() for v in series.values()))
        save(fig, "ladder", *[f"ladder-{i}" for i in range(len(m.ladder))])
    return save.arts
