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

import dataclasses
import math
from typing import Any, Optional

from rich.table import Table

from nnrecipe import atomic
from nnrecipe.checks import regularize_checks as rules
from nnrecipe.checks.data_value_checks import data_scaling, measured_trend, suspected_label_errors
from nnrecipe.checks.regularize_checks import (
    HELPED,
    NO_EFFECT,
    RegularizeMeasurements,
    effect,
    unseeded,
    versus_reference,
)
from nnrecipe.experiments import Job, SeedRuns, Trainer
from nnrecipe.handoff import data_fingerprint
from nnrecipe.losses import loss_name, make_loss
from nnrecipe.pictures import data_value as data_value_pictures
from nnrecipe.pictures import mispredictions
from nnrecipe.pictures import regularize as regularize_pictures
from nnrecipe.pictures.saver import attach
from nnrecipe.probes.data_value import measure_label_errors, measure_scaling
from nnrecipe.probes.diagnosis import val_collapse
from nnrecipe.probes.filters import measure_filters
from nnrecipe.probes.regularize import Knob, _edit, augmented_scores, build_knobs, combine
from nnrecipe.stages.base import StageContext, StageResult

STAGE = "regularize"


def reference_spec(spec, *, steps: int, every: int):
    """The overfit stage's model and training, as one full spec, without any regularizer:
    no augmentation, no early stopping, the stage's budget."""
    model = spec.stages.overfit.model or spec.model
    stages = spec.stages.model_copy(update={"overfit": spec.stages.overfit.model_copy(update={"model": None})})
    return spec.model_copy(
        update={
            "model": model,
            "data": spec.data.model_copy(update={"augment": []}),
            "train": spec.train.model_copy(update={"steps": steps, "eval_every": every, "early_stopping": None}),
            "stages": stages,
        }
    )


@dataclasses.dataclass
class Setup:
    spec: Any
    ctx: StageContext
    ref_spec: Any  # the reference: the overfit stage's model, no regularizer, the stage's budget
    data: Any
    trainer: Trainer
    seeds: list[int]
    watch: Optional[int]  # early stopping's patience, watched on the reference's own runs
    # Results trained in an earlier round than the one that asks for them, by job name
    # (`train_with_references`): taken when asked for, never otherwise.
    ahead: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def cfg(self):
        return self.spec.stages.regularize

    def collapsed(self, run, spec):
        """Whether the run's model gives every example of a fixed val batch one output (the val
        data the run was scored on: a smaller input's is downsampled)."""
        return val_collapse(run, data=self.trainer.data(spec), loss=loss_name(spec), device=self.ctx.device)

    def reference_job(self, seed: int) -> Job:
        """The reference at `seed`, watched by early stopping (which costs no extra training)."""
        name = "reference" if seed == self.seeds[0] else f"reference-seed{seed}"
        return Job(name, self.ref_spec, seed, more={"watch_patience": self.watch})

    def add_reference(self, m: RegularizeMeasurements, t) -> None:
        reference = _reference(m)
        reference.runs.append(t)
        if len(reference.runs) == 1:
            reference.collapse = self.collapsed(t, self.ref_spec)
        if m.early is not None:
            if t.early is not None:
                m.early.runs.append(t.early)
            elif not m.early.skip:
                m.early.skip = "no evaluation improved the val loss (diverged?)"

    def train_with_references(
        self, m: RegularizeMeasurements, references: list[Job], jobs: list[Job], *, ahead: tuple[Job, ...] = ()
    ) -> list:
        """`references` (added to m) and `jobs` side by side; returns the jobs' results. Those
        trained `ahead` in an earlier round are taken from there; the jobs of `ahead` are trained
        with these, for a later round that asks for them by name."""
        wanted = references + jobs
        todo = [j for j in wanted if j.name not in self.ahead] + list(ahead)
        done = dict(zip((j.name for j in todo), self.trainer.train_many(todo)))
        self.ahead.update((j.name, done.pop(j.name)) for j in ahead)
        results = [done[j.name] if j.name in done else self.ahead.pop(j.name) for j in wanted]
        for t in results[: len(references)]:
            self.add_reference(m, t)
        return results[len(references) :]

    def missing_references(self, m: RegularizeMeasurements, upto: int) -> list[Job]:
        """The reference at each of the first `upto` seeds it has not been trained at yet."""
        return [self.reference_job(seed) for seed in self.seeds[len(_reference(m).runs) : upto]]


def _reference(m: RegularizeMeasurements) -> SeedRuns:
    """m.reference: _measure_first_round sets it before anything trains or reads it."""
    assert m.reference is not None
    return m.reference


def _edited(knob: Knob, spec):
    """`spec` with the knob's change. Only knobs that are not skipped are trained, and those
    have an edit (build_knobs gives a knob either an edit or a skip)."""
    assert knob.edit is not None, f"the {knob.name} knob has no edit"
    return knob.edit(spec)


def run(spec, ctx: StageContext) -> StageResult:
    s = _setup(spec, ctx)
    m = RegularizeMeasurements(
        task=s.data.task,
        n_val=len(s.data.val),
        patience=s.cfg.patience,
        chance=s.data.task.chance(s.data),
        val_target_var=s.data.task.target_variance(s.data),
    )
    edits, augmented = _measure_first_round(s, m)
    _measure_more_seeds(s, m, edits)
    helped, best_spec = _choose_best(s, m, edits)
    scaling = measure_scaling(s.trainer, ref_spec=s.ref_spec, reference=_reference(m), data=s.data, cfg=s.cfg)
    m.more_data = measured_trend(scaling, s.cfg)
    labels = measure_label_errors(
        s.trainer, spec=best_spec, data=s.trainer.data(best_spec), cfg=s.cfg, loss=loss_name(best_spec)
    )
    shown = _measure_augmentation(s, m, augmented)
    _measure_filters(s, m)
    best = _best_run(s, m, best_spec)
    verdicts = [rules.knob(m, r, s.cfg) for r in m.knobs]
    verdicts += [
        rules.early_stopping(m, s.cfg),
        rules.generalization_gap(m, s.cfg),
        rules.augment_preserves_labels(m, s.cfg),
        rules.first_layer_filters(m, s.cfg),
        rules.combined(m, s.cfg, [r.name for _, r in helped]),
        data_scaling(scaling, s.cfg),
        suspected_label_errors(labels, s.cfg),
    ]
    arts = _draw(s, m, best_spec, best, scaling, labels, shown)
    summary = _record(s, m, best_spec, best, helped, verdicts, labels)
    return StageResult(STAGE, attach(verdicts, *arts), summary)


def _setup(spec, ctx: StageContext) -> Setup:
    cfg, o = spec.stages.regularize, spec.stages.overfit
    steps = cfg.steps or o.steps or spec.train.steps
    every = min(cfg.eval_every or o.eval_every or spec.train.eval_every, steps)
    return Setup(
        spec=spec,
        ctx=ctx,
        ref_spec=reference_spec(spec, steps=steps, every=every),
        data=ctx.device_data(),
        trainer=Trainer(ctx, stage=STAGE, steps=steps, every=every),
        seeds=[spec.seed + i for i in range(cfg.seeds)],
        watch=cfg.patience if cfg.knobs.early_stopping else None,
    )


def _measure_first_round(s: Setup, m: RegularizeMeasurements):
    """The reference and one experiment per knob at the first seed, side by side with --workers
    (and at the second seed, which the next round always asks for: `Setup.ahead`). Returns
    every knob's edit by name (early stopping's too) and the model trained with the
    augmentation (for augment-preserves-labels)."""
    m.reference = SeedRuns("reference", "reference (the overfit stage's model)")
    m.early = SeedRuns("early-stopping", f"early stopping (patience {s.cfg.patience})") if s.watch else None
    # Separately trained language models differ by seed far beyond the per-window noise (the
    # CPython-docs GPT: z = 12 between two seeds), so the seed spread is measured before any
    # knob is judged: the reference at every seed (the spec requires two or more).
    first = s.data.task.seed_spread_first
    references = s.missing_references(m, len(s.seeds) if first else 1)
    knobs = build_knobs(s.ref_spec, original_augment=s.spec.data.augment, data_kind=s.data.kind, base=s.ctx.base)
    trained = [k for k in knobs if not k.skip]
    # Every knob is judged without the seed spread after this round, so the next round trains
    # each one (that did not diverge) and the reference at the second seed: trained now, as one
    # with these where they share an architecture, and taken when that round asks for them.
    ahead = [] if first or len(s.seeds) < 2 else [s.reference_job(s.seeds[1])] + _seed_jobs(s, trained, s.seeds[1])
    results = s.train_with_references(m, references, _seed_jobs(s, trained, s.seeds[0]), ahead=tuple(ahead))
    knob_runs = dict(zip((k.name for k in trained), results))
    augmented = None
    for k in knobs:
        result = SeedRuns(k.name, k.description, skip=k.skip)
        if k.name in knob_runs:
            t = knob_runs[k.name]
            result.runs.append(t)
            result.collapse = s.collapsed(t, _edited(k, s.ref_spec))
            if k.name == "augmentation" and not t.diverged:
                augmented = t.model
        m.knobs.append(result)
    edits: dict[str, Knob] = {k.name: k for k in knobs}
    if m.early is not None:
        edits["early-stopping"] = Knob(
            "early-stopping", m.early.description, _edit("train", early_stopping=s.cfg.patience)
        )
    return edits, augmented


def _measure_more_seeds(s: Setup, m: RegularizeMeasurements, edits: dict[str, Knob]) -> None:
    """Another seed for every knob judged without the seed spread (all of them, the first time),
    and more while a difference is within noise (the reference gets them too); the spread is
    re-measured after each round, and its last value judges every knob. A round's experiments
    train side by side with --workers."""
    m.seed_noise = m.measure_noise()
    for i in range(1, len(s.seeds)):
        pending = [
            r
            for r in m.knobs + ([m.early] if m.early is not None else [])
            if not r.skip
            and r.runs
            and not any(x.diverged for x in r.runs)
            and len(r.runs) <= i
            and (unseeded(m, r) or effect(versus_reference(m, r)[0], s.cfg) == NO_EFFECT)
        ]
        if not pending or _reference(m).runs[0].diverged:
            break
        references = s.missing_references(m, i + 1)
        # a knob within noise only now catches up: every seed it lacks up to this round's
        more = [
            (r, job)
            for r in pending
            if r is not m.early
            for seed in s.seeds[len(r.runs) : i + 1]
            for job in _seed_jobs(s, [edits[r.name]], seed)
        ]
        results = s.train_with_references(m, references, [job for _, job in more])
        for (r, _), t in zip(more, results):
            r.runs.append(t)
        m.seed_noise = m.measure_noise()


def _seed_jobs(s: Setup, knobs: list[Knob], seed: int) -> list[Job]:
    """Each knob's experiment at `seed`, named as the stage names it there."""
    return [Job(k.name if seed == s.seeds[0] else f"{k.name}-seed{seed}", _edited(k, s.ref_spec), seed) for k in knobs]


def _choose_best(s: Setup, m: RegularizeMeasurements, edits: dict[str, Knob]):
    """The knobs that helped, best first, and best.yaml's spec: the best knob, or all of them
    together when that run (at as many seeds) helps too."""
    candidates = m.knobs + ([m.early] if m.early is not None and m.early.runs else [])
    scored = [
        (versus_reference(m, r)[0], r)
        for r in candidates
        if not r.skip and r.runs and not any(x.diverged for x in r.runs)
    ]
    helped = sorted(((z, r) for z, r in scored if effect(z, s.cfg) == HELPED), key=lambda t: -t[0])
    best_spec, m.best = s.ref_spec, None
    if helped:
        best_spec, m.best = _edited(edits[helped[0][1].name], s.ref_spec), helped[0][1]
    if len(helped) > 1 and s.cfg.verify_combined:
        comb_spec = combine(s.ref_spec, [edits[r.name] for _, r in helped])
        m.combined = SeedRuns("combined", " + ".join(r.name for _, r in helped))
        seeds = s.seeds[: max(len(r.runs) for _, r in helped)]
        references = s.missing_references(m, len(seeds))
        names = ["combined" if seed == s.seeds[0] else f"combined-seed{seed}" for seed in seeds]
        m.combined.runs = s.train_with_references(
            m, references, [Job(n, comb_spec, seed) for n, seed in zip(names, seeds)]
        )
        if not any(r.diverged for r in m.combined.runs) and effect(versus_reference(m, m.combined)[0], s.cfg) == HELPED:
            best_spec, m.best = comb_spec, m.combined
    return helped, best_spec


def _measure_augmentation(s: Setup, m: RegularizeMeasurements, augmented):
    """The reference model (never augmented) and the model trained with the augmentation, on
    augmented val. Returns (a batch clean and augmented, the predictions) for the picture."""
    first, spec = s.trainer.kept.get("reference"), s.spec
    if not (spec.data.augment and first is not None and not first.diverged):
        m.augment_skip = "data.augment is empty" if not spec.data.augment else "the reference did not train"
        return None
    if s.data.task.skip_reason("augment-preserves-labels"):  # the check skips: nothing to measure
        m.augment_skip = s.data.task.skip_reason("augment-preserves-labels")
        return None
    m.augment_clean = first.val_scores  # the reference at its last step: the model scored below
    kw = dict(data=s.data, spec=spec, base=s.ctx.base, device=s.ctx.device, seed=spec.seed)
    m.augment_reference, shown, preds = augmented_scores(first.model, **kw)
    if augmented is not None:
        m.augment_trained, shown, preds = augmented_scores(augmented, **kw)
    return shown, preds


def _measure_filters(s: Setup, m: RegularizeMeasurements) -> None:
    """First-layer filters of the reference model against their own random init."""
    first = s.trainer.kept.get("reference")
    model = first.model if first is not None else None  # kept results keep their model
    if model is None or s.data.task.skip_reason("first-layer-filters"):  # e.g. a token embedding
        return
    from nnrecipe.models import prepare_model
    from nnrecipe.runtime import seed_everything

    seed_everything(s.seeds[0])
    init = prepare_model(s.ref_spec.model_copy(update={"seed": s.seeds[0]}), s.data, base=s.ctx.base)
    m.filters = measure_filters(model, init, s.data.input_shape, seed=s.spec.seed)


def _best_run(s: Setup, m: RegularizeMeasurements, best_spec):
    """(weights, val EvalResult) of best.yaml's configuration at the first seed (early stopping:
    the weights it kept), or None. The run's own val evaluation is reused; only early stopping's
    weights are evaluated here (on best.yaml's data: a smaller-input best sees downsampled
    inputs; the pictures show the originals, same indices)."""
    name = m.best.name if m.best else "reference"
    early = name == "early-stopping"
    t = s.trainer.kept.get("reference" if early else name)
    if t is None:
        return None
    state = t.early_state if early else (t.model.state_dict() if t.model is not None else None)
    if state is None:
        return None
    if not early and t.val_eval is not None:
        return state, t.val_eval
    from nnrecipe.engine import Engine
    from nnrecipe.models import prepare_model

    best_data = s.trainer.data(best_spec)
    model = prepare_model(best_spec, best_data, base=s.ctx.base)
    model.load_state_dict(state)
    return state, Engine.for_spec(best_spec.train, device=s.ctx.device, task=s.data.task).evaluate(
        model, best_data.val, make_loss(best_spec, base=s.ctx.base), keep_outputs=s.data.task.keeps_val_outputs
    )


def _draw(s: Setup, m: RegularizeMeasurements, best_spec, best, scaling, labels, shown) -> list:
    """The experiments compared, curves, the augmented batch, filters; the data's pictures; what
    best.yaml's configuration gets wrong on val."""
    ctx, data = s.ctx, s.data
    shown, preds = shown or (None, None)
    arts = [
        regularize_pictures.draw(ctx, m, data=data, shown=shown, preds=preds, stage=STAGE),
        data_value_pictures.draw(ctx, STAGE, scaling, labels, data=data, cfg=s.cfg),
    ]
    outputs = best[1].outputs if best is not None else None
    wrong = (
        None
        if outputs is None
        else data.task.mispredictions(
            outputs,
            data.targets("val"),
            num_classes=data.num_outputs,
            loss=loss_name(best_spec),
            class_name=data.class_name,
        )
    )
    if wrong is not None:  # no confusion matrix over a vocabulary: overfit and squeeze write samples
        arts.append(mispredictions.draw(ctx, STAGE, data, wrong, "generalization-gap", outputs=outputs))
    return arts


def _record(s: Setup, m: RegularizeMeasurements, best_spec, best, helped, verdicts, labels) -> dict:
    """best.yaml; the best checkpoint (with its val metric, so `inspect-data --model` can tell
    whether the data it sees later is the same); the table; the summary."""
    ctx, run = s.ctx, s.ctx.run
    best_yaml = run.best_spec(STAGE)
    atomic.write_text(
        best_yaml,
        f"# nnrecipe run --config {ctx.rel(best_yaml)}\n"
        f"# regularize's best configuration: {m.best.description if m.best else 'the reference (no knob helped)'}\n"
        + best_spec.to_yaml(),
    )
    best_ckpt = None
    if best is not None:
        (state, val), best_ckpt = best, run.checkpoint(STAGE, "best.pt")
        atomic.torch_save(
            best_ckpt,
            {
                "model": {k: v.detach().cpu() for k, v in state.items()},
                "spec": best_yaml.name,
                "val_metric": val.metric,
                "metric_name": val.metric_name,
                "n_val": val.n,
            },
        )
    rows = _rows(m, s.cfg)
    ctx.console.print(_table(rows, m.task))
    return {
        "task": s.data.task.name,
        "steps": s.trainer.steps,
        "eval_every": s.trainer.every,
        "seeds": s.cfg.seeds,
        # the seed spread the knobs were judged against, for tune's and squeeze's single-seed comparisons
        "seed_noise": dataclasses.asdict(m.seed_noise) if m.seed_noise is not None else None,
        "data_fingerprint": data_fingerprint(s.data),
        "experiments": rows,
        "helped": [r.name for _, r in helped],
        "data_scaling": next(v.observed for v in verdicts if v.check == "data-scaling"),
        "label_errors": {
            "suspects": labels.errors.confirmed,
            "listed": len(labels.errors.ranked),
            "temperature": round(labels.errors.temperature, 3),
            "csv": "suspected_label_errors.csv",
        }
        if labels.errors
        else None,
        "best": {
            "name": m.best.name if m.best else "reference",
            "description": m.best.description if m.best else "reference",
            "spec": ctx.rel(best_yaml),
            "checkpoint": ctx.rel(best_ckpt) if best_ckpt else None,
        },
    }


def _rows(m: RegularizeMeasurements, cfg) -> list[dict]:
    rows: list[dict] = []
    for r in (
        [_reference(m)] + m.knobs + ([m.early] if m.early is not None else []) + ([m.combined] if m.combined else [])
    ):
        if r.skip or not r.runs:
            rows.append({"name": r.name, "description": r.description, "effect": "skipped", "reason": r.skip})
            continue
        z, seeds = versus_reference(m, r) if r is not m.reference else (0.0, len(r.runs))
        used = r.runs[: seeds or len(r.runs)]  # no finite run compared (every one diverged): all of them
        means = {a: _mean([getattr(x, a) for x in used]) for a in ("val_metric", "val_loss", "train_metric")}
        rows.append(
            {
                "name": r.name,
                "description": r.description,
                "seeds": seeds,
                "effect": "reference" if r is m.reference else ("diverged" if not seeds else effect(z, cfg)),
                "z": round(z, 2) if math.isfinite(z) else None,
                **means,
                "diverged": any(x.diverged for x in r.runs),
            }
        )
    return rows


def _mean(values: list[float]) -> Optional[float]:
    """The mean to 5 places; None where a run diverged (a NaN or infinite number)."""
    mean = float(sum(values) / len(values))
    return round(mean, 5) if math.isfinite(mean) else None


def _num(value: Optional[float], fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _table(rows: list[dict], task) -> Table:
    metric = task.metric_short
    t = Table(
        title="regularize: one knob at a time (vs the reference, paired on val; seed spread counted once measured)",
        title_justify="left",
    )
    for col in ("experiment", f"val {metric}", "val loss", f"train {metric}", "z", "seeds", "effect"):
        t.add_column(col, justify="left" if col in ("experiment", "effect") else "right")
    for r in rows:
        if "val_metric" not in r:
            t.add_row(r["description"], "", "", "", "", "", f"skipped: {r['reason']}")
            continue
        colour = {"helped": "green", "hurt": "yellow", "diverged": "red"}.get(r["effect"], "")
        t.add_row(
            r["description"],
            _num(r["val_metric"], ".4f"),
            _num(r["val_loss"], ".4g"),
            _num(r["train_metric"], ".4f"),
            "" if r["effect"] == "reference" else _num(r["z"], ".1f"),
            str(r["seeds"]),
            f"[{colour}]{r['effect']}[/]" if colour else r["effect"],
        )
    return t
