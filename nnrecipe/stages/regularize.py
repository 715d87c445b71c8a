"""Stage 4, "regularize": give up some training loss for validation loss, one knob at a time.

The reference is the overfit stage's model, re-trained here with the stage's budget and
seed and scored at its last step. Each knob set in `stages.regularize.knobs` is one change
to the reference spec, trained with the same seed and budget; a knob whose difference is
within noise on the first seed gets more seeds (the reference too), up to `seeds`, and is
then judged against the spread between seeds too (a language model's reference trains at
every seed first and every knob is judged so: its seeds differ far beyond the per-window
noise). The knobs that helped are combined into regularize/best.yaml, checked by one more
run when there are several, and the tune stage starts from that file.
"""

from __future__ import annotations

import math

from rich.table import Table

from nnrecipe.atomic import write_text
from nnrecipe.checks import regularize_checks as rules
from nnrecipe.checks.regularize_checks import HELPED, NO_EFFECT, RegularizeMeasurements, effect, versus_reference
from nnrecipe.probes.filters import measure_filters
from nnrecipe.probes.regularize import Knob, KnobResult, _edit, augmented_scores, build_knobs, combine
from nnrecipe.checks.data_value_checks import data_scaling, suspected_label_errors
from nnrecipe.losses import loss_name, make_loss
from nnrecipe.probes.sequence_probes import unigram_scores
from nnrecipe.stages import data_value
from nnrecipe.stages.base import StageContext, StageResult, with_artifacts
from nnrecipe.stages.misprediction_pictures import misprediction_artifacts
from nnrecipe.probes.training import keeps_outputs
from nnrecipe.stages.trainer import Trainer
from nnrecipe.stages.regularize_pictures import draw

STAGE = "regularize"
BEST = "best.yaml"


def reference_spec(spec, *, steps: int, every: int):
    """The overfit stage's model and training, as one full spec, without any regularizer:
    no augmentation, no early stopping, the stage's budget."""
    model = spec.stages.overfit.model or spec.model
    stages = spec.stages.model_copy(update={"overfit": spec.stages.overfit.model_copy(update={"model": None})})
    return spec.model_copy(update={
        "model": model,
        "data": spec.data.model_copy(update={"augment": []}),
        "train": spec.train.model_copy(update={"steps": steps, "eval_every": every, "early_stopping": None}),
        "stages": stages,
    })


def run(spec, ctx: StageContext) -> StageResult:
    cfg = spec.stages.regularize
    o = spec.stages.overfit
    steps = cfg.steps or o.steps or spec.train.steps
    every = min(cfg.eval_every or o.eval_every or spec.train.eval_every, steps)
    ref_spec = reference_spec(spec, steps=steps, every=every)
    data = ctx.device_data()
    trainer = Trainer(ctx, stage=STAGE, steps=steps, every=every)
    seeds = [spec.seed + i for i in range(cfg.seeds)]
    watch = cfg.patience if cfg.knobs.early_stopping else None

    m = RegularizeMeasurements(task=data.task, n_val=len(data.val), patience=cfg.patience)
    if data.task == "classification":
        m.chance = float(data.priors("val").max())
    elif data.task == "language-model":  # always the most frequent token
        m.chance = unigram_scores(data)[1]
    else:
        m.val_target_var = float(data.targets("val").double().reshape(len(data.val), -1).var(dim=0).mean())

    # 1. the reference, watched by early stopping (which costs no extra training).
    m.reference = KnobResult("reference", "reference (the overfit stage's model)")
    m.early = KnobResult("early-stopping", f"early stopping (patience {cfg.patience})") if watch else None
    first = None

    def train_reference(seed: int):
        nonlocal first
        t = trainer.train(ref_spec, seed=seed, label="reference" if seed == seeds[0] else f"reference-seed{seed}",
                          watch_patience=watch)
        m.reference.runs.append(t.run)
        if m.early is not None:
            if t.early is not None:
                m.early.runs.append(t.early)
            elif not m.early.skip:
                m.early.skip = "no evaluation improved the val loss (diverged?)"
        first = first or t

    train_reference(seeds[0])
    if data.task == "language-model":
        # Separately trained language models differ by seed far beyond the per-window noise
        # (the CPython-docs GPT: z = 12 between two seeds), so the seed spread is measured
        # before any knob is judged: the reference at every seed (the spec requires two or more).
        for seed in seeds[1:]:
            train_reference(seed)

    # 2. one experiment per knob, first seed.
    knobs = build_knobs(ref_spec, original_augment=spec.data.augment, data_kind=data.kind, base=ctx.base)
    edits: dict[str, Knob] = {k.name: k for k in knobs}
    if m.early is not None:
        edits["early-stopping"] = Knob("early-stopping", m.early.description, _edit("train", early_stopping=cfg.patience))
    augmented_model = None
    for k in knobs:
        result = KnobResult(k.name, k.description, skip=k.skip)
        if not k.skip:
            t = trainer.train(k.edit(ref_spec), seed=seeds[0], label=k.name)
            result.runs.append(t.run)
            if k.name == "augmentation" and not t.run.diverged:
                augmented_model = t.model  # for augment-preserves-labels
        m.knobs.append(result)

    # 3. more seeds while a difference is within noise (the reference gets them too); the seed
    # spread is re-measured after each round, and its last value judges every knob below.
    m.seed_spread_first = data.task == "language-model"
    m.seed_noise = m.measure_noise()
    for i in range(1, len(seeds)):
        pending = [r for r in m.knobs + ([m.early] if m.early is not None else [])
                   if not r.skip and r.runs and not any(x.diverged for x in r.runs) and len(r.runs) <= i
                   and effect(versus_reference(m, r)[0], cfg) == NO_EFFECT]
        if not pending or m.reference.runs[0].diverged:
            break
        while len(m.reference.runs) <= i:
            train_reference(seeds[len(m.reference.runs)])
        for r in pending:
            while r is not m.early and len(r.runs) <= i:  # a knob within noise only now catches up
                seed = seeds[len(r.runs)]
                r.runs.append(trainer.train(edits[r.name].edit(ref_spec), seed=seed, label=f"{r.name}-seed{seed}").run)
        m.seed_noise = m.measure_noise()

    # 4. the knobs that helped, together; best.yaml.
    candidates = m.knobs + ([m.early] if m.early is not None and m.early.runs else [])
    scored = [(versus_reference(m, r)[0], r) for r in candidates if not r.skip and r.runs
              and not any(x.diverged for x in r.runs)]
    helped = [(z, r) for z, r in scored if effect(z, cfg) == HELPED]
    helped.sort(key=lambda t: -t[0])
    best_spec, m.best = ref_spec, None
    if helped:
        best_spec, m.best = edits[helped[0][1].name].edit(ref_spec), helped[0][1]
    if len(helped) > 1 and cfg.verify_combined:
        comb_spec = combine(ref_spec, [edits[r.name] for _, r in helped])
        names = " + ".join(r.name for _, r in helped)
        m.combined = KnobResult("combined", names)
        for seed in seeds[: max(len(r.runs) for _, r in helped)]:
            if len(m.reference.runs) < seeds.index(seed) + 1:
                train_reference(seed)
            m.combined.runs.append(trainer.train(comb_spec, seed=seed, label="combined" if seed == seeds[0] else f"combined-seed{seed}").run)
        if not any(r.diverged for r in m.combined.runs) and effect(versus_reference(m, m.combined)[0], cfg) == HELPED:
            best_spec, m.best = comb_spec, m.combined

    # 5. what the models say about the data: would more data help (nested subsets), which training
    # labels look wrong to models that never saw them (best.yaml's configuration, out of fold).
    scaling = data_value.measure_scaling(ctx, ref_spec=ref_spec, reference=m.reference, data=data, cfg=cfg,
                                         steps=steps, every=every)
    labels = data_value.measure_label_errors(ctx, spec=best_spec, data=trainer.data(best_spec), cfg=cfg, steps=steps,
                                             every=every, loss=loss_name(best_spec))

    # 6. augmentation: the reference model (never augmented) and the model trained with it, on
    # augmented val; first-layer filters of the reference model.
    if spec.data.augment and first is not None and not first.run.diverged:
        m.augment_clean = first.run.val_scores  # the reference at its last step: the model scored below
        m.augment_reference, shown, preds = augmented_scores(
            first.model, data=data, spec=spec, base=ctx.base, device=ctx.device, seed=spec.seed)
        if augmented_model is not None:
            m.augment_trained, shown, preds = augmented_scores(
                augmented_model, data=data, spec=spec, base=ctx.base, device=ctx.device, seed=spec.seed)
    else:
        shown = preds = None
        m.augment_skip = "data.augment is empty" if not spec.data.augment else "the reference did not train"
    if first is not None and data.task != "language-model":  # a token embedding is no filter bank to look at
        from nnrecipe.models import prepare_model
        from nnrecipe.runtime import seed_everything

        seed_everything(seeds[0])
        init = prepare_model(ref_spec.model_copy(update={"seed": seeds[0]}), data, base=ctx.base)
        m.filters = measure_filters(first.model, init, data.input_shape, seed=spec.seed)

    scaling_verdict = data_scaling(scaling, cfg)
    verdicts = [rules.knob(m, r, cfg) for r in m.knobs]
    verdicts += [rules.early_stopping(m, cfg), rules.generalization_gap(m, cfg), rules.augment_preserves_labels(m, cfg),
                 rules.first_layer_filters(m, cfg), rules.combined(m, cfg, [r.name for _, r in helped]),
                 scaling_verdict, suspected_label_errors(labels, cfg)]

    out = ctx.run.stage_dir(STAGE)
    write_text(out / BEST, f"# nnrecipe run --config {ctx.rel(out / BEST)}\n"
                           f"# regularize's best configuration: {m.best.description if m.best else 'the reference (no knob helped)'}\n"
                           + best_spec.to_yaml())
    best_ckpt = None
    state = _best_state(trainer, m.best.name if m.best else "reference")
    arts = draw(ctx, m, data=data, shown=shown, preds=preds, stage=STAGE)
    wrong_arts, best_val = _mispredictions(ctx, trainer, best_spec, m.best.name if m.best else "reference", state, data)
    for more in (data_value.draw(ctx, scaling, labels, data=data, cfg=cfg), wrong_arts):
        for check, paths in more.items():
            arts.setdefault(check, []).extend(paths)
    if state is not None:  # the first seed's weights of best.yaml's configuration (early stopping: the kept ones)
        from nnrecipe.atomic import torch_save

        best_ckpt = out / "checkpoints" / "best.pt"
        # with its val metric, so `inspect-data --model` can tell whether the data it sees later is the same
        torch_save(best_ckpt, {"model": {k: v.detach().cpu() for k, v in state.items()}, "spec": BEST,
                               "val_metric": best_val.metric, "metric_name": best_val.metric_name, "n_val": best_val.n})
    verdicts = [with_artifacts(v, *arts.get(v.check, [])) for v in verdicts]
    rows = _rows(m, cfg)
    ctx.console.print(_table(rows, m.task))
    summary = {
        "task": data.task, "steps": steps, "eval_every": every, "seeds": cfg.seeds,
        "experiments": rows,
        "helped": [r.name for _, r in helped],
        "data_scaling": scaling_verdict.observed,
        "label_errors": {"suspects": len(labels.errors.ranked), "csv": "suspected_label_errors.csv"} if labels.errors else None,
        "best": {"name": m.best.name if m.best else "reference", "description": m.best.description if m.best else "reference",
                 "spec": ctx.rel(out / BEST), "checkpoint": ctx.rel(best_ckpt) if best_ckpt else None},
    }
    return StageResult(STAGE, verdicts, summary)


def _mispredictions(ctx, trainer: Trainer, best_spec, name: str, state, data):
    """What best.yaml's configuration (first seed) gets wrong on val: confusion matrix, per-class
    metrics and the most confidently wrong examples; residual plots for regression. Returns
    (artifacts by check, the model's EvalResult on val). The run's own val evaluation is reused;
    only early stopping's kept weights are evaluated here (on best.yaml's data: a smaller-input
    best sees downsampled inputs; the pictures show the originals, same indices)."""
    if state is None:
        return {}, None
    from nnrecipe.probes import mispredictions

    t = trainer.first_seed.get(name)
    if name != "early-stopping" and t is not None and t.experiment is not None:
        result = t.experiment.val_eval
    else:
        from nnrecipe.engine import Engine
        from nnrecipe.models import prepare_model

        best_data = trainer.data(best_spec)
        model = prepare_model(best_spec, best_data, base=ctx.base)
        model.load_state_dict(state)
        result = Engine.for_spec(best_spec.train, device=ctx.device, task=data.task).evaluate(
            model, best_data.val, make_loss(best_spec, base=ctx.base), keep_outputs=keeps_outputs(data.task))
    if data.task == "language-model":  # no confusion matrix over a vocabulary; overfit and squeeze write samples
        return {}, result
    wrong = mispredictions.measure(result.outputs, data.targets("val"), task=data.task, num_classes=data.num_outputs,
                                   loss=loss_name(best_spec), class_name=data.class_name)
    return misprediction_artifacts(ctx, STAGE, data, wrong, "generalization-gap", outputs=result.outputs), result


def _best_state(trainer: Trainer, name: str):
    """The weights best.yaml's configuration trained to at the first seed."""
    if name == "early-stopping":
        return trainer.first_seed["reference"].early_state
    t = trainer.first_seed.get(name)
    return t.model.state_dict() if t is not None else None


def _rows(m: RegularizeMeasurements, cfg) -> list[dict]:
    rows = []
    for r in [m.reference] + m.knobs + ([m.early] if m.early is not None else []) + ([m.combined] if m.combined else []):
        if r.skip or not r.runs:
            rows.append({"name": r.name, "description": r.description, "effect": "skipped", "reason": r.skip})
            continue
        z, seeds = versus_reference(m, r) if r is not m.reference else (0.0, len(r.runs))
        mean = lambda a: float(sum(getattr(x, a) for x in r.runs[:seeds]) / seeds)  # noqa: E731
        rows.append({"name": r.name, "description": r.description, "seeds": seeds,
                     "effect": "reference" if r is m.reference else effect(z, cfg),
                     "z": round(z, 2) if math.isfinite(z) else None,
                     "val_metric": round(mean("val_metric"), 5), "val_loss": round(mean("val_loss"), 5),
                     "train_metric": round(mean("train_metric"), 5), "diverged": any(x.diverged for x in r.runs)})
    return rows


def _table(rows: list[dict], task: str) -> Table:
    metric = {"classification": "acc", "language-model": "token acc"}.get(task, "R²")
    t = Table(title="regularize: one knob at a time (vs the reference, paired on val; seed spread counted once measured)", title_justify="left")
    for col in ("experiment", f"val {metric}", "val loss", f"train {metric}", "z", "seeds", "effect"):
        t.add_column(col, justify="left" if col in ("experiment", "effect") else "right")
    for r in rows:
        if "val_metric" not in r:
            t.add_row(r["description"], "", "", "", "", "", f"skipped: {r['reason']}")
            continue
        colour = {"helped": "green", "hurt": "yellow"}.get(r["effect"], "")
        t.add_row(r["description"], f"{r['val_metric']:.4f}", f"{r['val_loss']:.4g}", f"{r['train_metric']:.4f}",
                  "" if r["effect"] == "reference" else f"{r['z']:.1f}", str(r["seeds"]),
                  f"[{colour}]{r['effect']}[/]" if colour else r["effect"])
    return t
