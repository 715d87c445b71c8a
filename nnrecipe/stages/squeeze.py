"""Stage 6, "squeeze out the juice": an ensemble of seeds, distillation, and training on.

Starts from tune/best.yaml when it exists, else regularize/best.yaml, else the spec.
Members are saved as they finish (squeeze/members/), and checkpointed at each evaluation
while they train: `nnrecipe squeeze --resume` after an interruption loads the finished
members, continues the interrupted one from its last checkpoint (batch order and RNG
included) and trains the rest; on the CPU the result equals an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
from torch import nn

from nnrecipe import atomic
from nnrecipe.checks.squeeze_checks import SqueezeMeasurements, distillation, ensemble_gain, longer_training
from nnrecipe.engine import Engine
from nnrecipe.experiments import Checkpoints, Job, Result, Trainer, experiment_text, kept_scores
from nnrecipe.handoff import data_fingerprint, from_spec, recorded_seed_noise, start_spec
from nnrecipe.ledger import record, since
from nnrecipe.loop import load_checkpoint, resumable
from nnrecipe.losses import loss_name, make_loss
from nnrecipe.models import prepare_model
from nnrecipe.pictures import squeeze as squeeze_pictures
from nnrecipe.pictures.saver import attach
from nnrecipe.probes import squeeze as sq
from nnrecipe.probes.diagnosis import val_collapse
from nnrecipe.runtime import seed_everything
from nnrecipe.stages.base import StageContext, StageResult
from nnrecipe.stats import pool_noise, seed_noise

STAGE = "squeeze"


@dataclasses.dataclass
class Setup:
    spec: Any
    ctx: StageContext
    start: Any  # the spec the members train with
    source: str  # where it came from
    note: str
    steps: int
    every: int
    trainer: Trainer
    data: Any
    engine: Engine
    members_dir: Path
    key: str  # what a saved member must match to be reused by --resume

    @property
    def loss(self) -> str:
        return loss_name(self.start)


def run(spec, ctx: StageContext) -> StageResult:
    s = _setup(spec, ctx)
    m = SqueezeMeasurements(task=s.data.task)
    models, records, resumed, continued = _measure_members(s)
    test_curve = _measure_ensemble(s, m, models, records)
    student_spec = _measure_distillation(s, m, models)
    _measure_longer(s, m)
    cfg = spec.stages.squeeze
    verdicts = [ensemble_gain(m, cfg), distillation(m, cfg), longer_training(m, cfg)]
    arts = squeeze_pictures.draw(ctx, m, test_curve=test_curve, stage=STAGE)
    assert m.ensemble_scores is not None  # _measure_ensemble always sets it
    summary = {
        "start": s.source,
        "start_note": s.note,
        "steps": s.steps,
        "members": cfg.members,
        "resumed_members": resumed,
        "continued_members": [{"member": i, "from_step": st} for i, st in continued],
        "member_val": [round(float(r.val_scores.mean()), 5) for r in m.members],
        "ensemble_val": round(float(m.ensemble_scores.mean()), 5),
        "size_curve_val": m.size_curve,
        "size_curve_test": test_curve,
        "test": m.test,
        **_record_final(s, m, models, student_spec),
    }
    return StageResult(STAGE, attach(verdicts, arts), summary)


def _setup(spec, ctx: StageContext) -> Setup:
    cfg = spec.stages.squeeze
    if cfg.start == "auto":
        start, source, note = start_spec(spec, ctx.run, stages=("tune", "regularize"))
    else:
        start, source, note = from_spec(spec), "the spec", ""
    steps = cfg.steps or start.train.steps
    every = min(cfg.eval_every or start.train.eval_every, steps)
    trainer = Trainer(ctx, stage=STAGE, steps=steps, every=every)
    data = trainer.data(start)
    text = experiment_text(start) + f"|{steps}|{every}"
    return Setup(
        spec=spec,
        ctx=ctx,
        start=start,
        source=source,
        note=note,
        steps=steps,
        every=every,
        trainer=trainer,
        data=data,
        engine=Engine.for_spec(start.train, device=ctx.device, task=data.task),
        members_dir=ctx.run.stage_dir(STAGE) / "members",
        key=hashlib.sha256(text.encode()).hexdigest()[:16],
    )


def _measure_members(s: Setup):
    """The members, one seed each, saved as they finish; with --resume the finished ones are
    loaded and an interrupted one continues from its last checkpoint. Returns their models,
    their records (Result.record), which were loaded and which continued (from which step)."""
    ctx, resume = s.ctx, bool(s.ctx.options.get("resume"))
    tb = ctx.run.tb_dir(STAGE)
    if resume and tb.exists():  # keep the finished members' curves; the rest is recomputed
        for entry in tb.iterdir():
            if entry.is_dir() and not entry.name.startswith("member-"):
                shutil.rmtree(entry)
    n = s.spec.stages.squeeze.members
    models: list[Optional[nn.Module]] = [None] * n  # each member's: loaded below, or trained (`finished`)
    records: list[Optional[dict]] = [None] * n
    resumed, continued = [], []
    jobs, todo = [], []
    for i in range(n):
        seed, label = s.spec.seed + i, f"member-{i}"
        meta_path, weights = s.members_dir / f"{label}.json", s.members_dir / f"{label}.pt"
        meta = json.loads(meta_path.read_text()) if (resume and meta_path.exists() and weights.exists()) else None
        if meta is not None and meta.get("key") == s.key:
            model = prepare_model(s.start.model_copy(update={"seed": seed}), s.data, base=ctx.base).to(ctx.device)
            model.load_state_dict(load_checkpoint(weights, map_location=ctx.device)["model"])
            models[i], records[i] = model, meta["run"]
            resumed.append(i)
        else:
            job, partial = _member_job(s, label, seed, resume)
            jobs.append(job)
            todo.append(i)
            if partial is not None:
                continued.append((i, int(partial["step"])))

    def finished(j: int, t) -> None:
        """A member saved as soon as it is trained: --resume loads it instead of training it."""
        i = todo[j]
        label, seed = f"member-{i}", s.spec.seed + i
        state = {k: v.detach().cpu() for k, v in t.model.state_dict().items()}
        atomic.torch_save(s.members_dir / f"{label}.pt", {"model": state, "seed": seed})
        meta = {"key": s.key, "seed": seed, "run": t.record()}
        atomic.write_json(
            s.members_dir / f"{label}.json", meta
        )  # written last: the member counts as finished from here
        models[i], records[i] = t.model, meta["run"]

    s.trainer.train_many(jobs, done=finished)  # side by side with --workers
    return models, records, resumed, sorted(continued)


def _member_job(s: Setup, label: str, seed: int, resume: bool):
    """(the member's Job, the checkpoint it continues from or None). A member killed half-way
    continues from its last checkpoint, exactly where it stopped."""
    last, member_key = s.members_dir / f"{label}-last.pt", f"{s.key}-{seed}"
    partial = resumable(last, member_key, s.ctx.device) if resume else None
    if partial is None:
        shutil.rmtree(s.ctx.run.tb_dir(STAGE) / label, ignore_errors=True)  # a killed attempt's curves
    checkpoints = Checkpoints(last=last, key=member_key, resume=partial)
    return Job(label, s.start, seed, more={"checkpoints": checkpoints}), partial


def _collapses(s: Setup, models, results) -> list:
    """diagnosis.val_collapse of each trained model (with its recorded val curve)."""
    return [val_collapse(r, data=s.data, loss=s.loss, device=s.ctx.device, model=mm) for mm, r in zip(models, results)]


def _measure_ensemble(s: Setup, m: SqueezeMeasurements, models, records) -> list[float]:
    """The members and their ensembles on val (and test), batch by batch; returns the test curve."""
    data = s.data
    val = sq.ensemble_pass(s.engine, models, data.val, task=data.task, loss=s.loss)
    m.members = [Result.from_record(r, scores) for r, scores in zip(records, val.members)]
    m.collapsed = {i: c for i, c in enumerate(_collapses(s, models, m.members)) if c is not None}
    m.ensemble_scores, m.size_curve = val.ensemble, val.curve()
    m.disagreement, m.output_spread = val.disagreement, val.spread
    best = m.best_member()
    if data.test is None or best is None:
        return []
    test = sq.ensemble_pass(s.engine, models, data.test, task=data.task, loss=s.loss)
    m.test["best_member"] = round(float(test.members[best].mean()), 5)
    m.test["average_member"] = round(float(sum(t.mean() for t in test.members) / len(test.members)), 5)
    m.test["ensemble"] = round(float(test.ensemble.mean()), 5)
    return test.curve()


def _measure_distillation(s: Setup, m: SqueezeMeasurements, models):
    """The ensemble's soft targets on train -> one student, against the same student trained on
    hard labels. Returns the student's spec (None when none was trained)."""
    cfg, data, ctx, spec = s.spec.stages.squeeze, s.data, s.ctx, s.spec
    best = m.best_member()
    if not cfg.distill.enabled:
        m.distill_skip = "stages.squeeze.distill.enabled is off"
        return None
    if data.task.skip_reason("distillation"):
        m.distill_skip = data.task.skip_reason("distillation")
        return None
    if best is None or m.members[best].diverged:
        return None
    student_spec, augment = _student_spec(s.start, cfg, kind=data.kind, base=ctx.base)
    teacher = sq.combine_outputs([s.engine.predict(mm, data.train) for mm in models], data.task, s.loss)
    steps = cfg.distill.steps or s.steps
    # the seed spread the student is judged against: the members' (one configuration, K seeds)
    # pooled with regularize's when it measured one on this split
    members = [r for r in m.members if not r.diverged]
    own = seed_noise([np.stack([data.task.errors(r.val_scores) for r in members])]) if len(members) > 1 else None
    m.seed_noise = pool_noise([own, recorded_seed_noise(ctx.run, data_fingerprint(data))])
    # the hard-label twin trains in a worker (with --workers) while the student trains here
    hard = s.trainer.submit([Job("student-hard-labels", student_spec, spec.seed, steps=steps)])
    seed_everything(spec.seed)
    model = prepare_model(student_spec.model_copy(update={"seed": spec.seed}), data, base=ctx.base).to(ctx.device)
    started = time.time()
    m.student = sq.train_student(
        student_spec,
        model=model,
        data=data,
        teacher_train=teacher,
        device=ctx.device,
        steps=steps,
        every=s.every,
        seed=spec.seed,
        base=ctx.base,
        augment=augment,
        writer=ctx.writer(STAGE, "student-soft-targets"),
        progress=ctx.progress,
    )
    record(ctx, "student-soft-targets", since(started, ctx.device), seed=spec.seed, steps=steps)
    (m.hard,) = hard.results()
    if data.test is not None:
        m.test["student"] = _test_score(s, m.student.model)
        m.test["hard_label"] = _test_score(s, m.hard.model)
    return student_spec


def _measure_longer(s: Setup, m: SqueezeMeasurements) -> None:
    """Leave it training: the best member's last checkpoint, trained on."""
    cfg, ctx, spec = s.spec.stages.squeeze, s.ctx, s.spec
    best = m.best_member()
    if not cfg.longer.enabled or best is None:
        return
    last = s.members_dir / f"member-{best}-last.pt"
    if not last.exists():
        m.longer_skip = f"{ctx.rel(last)} is missing"
        return
    model = prepare_model(s.start.model_copy(update={"seed": spec.seed + best}), s.data, base=ctx.base).to(ctx.device)
    started, extra = time.time(), cfg.longer.extra_steps or s.steps
    m.longer_before, m.longer_after = sq.continue_training(
        s.start,
        model=model,
        checkpoint=last,
        data=s.data,
        loss_fn=make_loss(s.start, base=ctx.base),
        device=ctx.device,
        steps=extra,
        every=s.every,
        seed=spec.seed + 1000 + best,
        writer=ctx.writer(STAGE, "longer-training"),
        progress=ctx.progress,
    )
    record(ctx, "longer-training", since(started, ctx.device), seed=spec.seed + 1000 + best, steps=extra)
    m.longer_collapse = _collapses(s, [model], [m.longer_after])[0]
    m.reloaded_val_loss = m.longer_before.val_loss
    m.recorded_val_loss = sq.checkpoint_val_loss(m.members[best].evals, m.longer_before.steps)
    if s.data.test is not None:
        m.test["longer"] = _test_score(s, model)


def _test_score(s: Setup, model) -> float:
    """The model's mean per-example score on the test split (accuracy, squared error, nats)."""
    result = s.engine.evaluate(model, s.data.test, make_loss(s.start, base=s.ctx.base), keep_scores=True)
    return round(float(kept_scores(result).mean()), 5)


def _student_spec(start, cfg, *, kind: str, base):
    """The student: the distill model (or the members'), no early stopping (the hard-label
    student is trained the same way); augmentation only when every entry is a built-in (they
    leave targets alone, so soft targets pass through)."""
    from nnrecipe.augment import build_augment

    student = start.model_copy(
        update={
            "model": cfg.distill.model or start.model,
            "train": start.train.model_copy(update={"early_stopping": None}),
        }
    )
    if any(a.factory for a in start.data.augment):
        student = student.model_copy(update={"data": student.data.model_copy(update={"augment": []})})
    return student, build_augment(student.data.augment, kind=kind, base=base)


def _record_final(s: Setup, m: SqueezeMeasurements, models, student_spec) -> dict:
    """The final single network, the best on val of: the best member, it trained on, the student
    (final.pt, final.yaml)."""
    best = m.best_member()
    if best is None:
        return {}
    start, ctx, cfg = s.start, s.ctx, s.spec.stages.squeeze
    cands = [
        (
            "best member",
            float(m.members[best].val_scores.mean()),
            start.model_copy(update={"seed": start.seed + best}),
            models[best].state_dict(),
        )
    ]
    after = m.longer_after
    if after is not None and not after.diverged and after.model is not None:
        longer_spec = start.model_copy(
            update={"train": start.train.model_copy(update={"steps": s.steps + (cfg.longer.extra_steps or s.steps)})}
        )
        cands.append(("trained on", float(after.val_scores.mean()), longer_spec, after.model.state_dict()))
    if m.student is not None and not m.student.diverged and m.student.model is not None:
        cands.append(("student", float(m.student.val_scores.mean()), student_spec, m.student.model.state_dict()))
    name, _, final_spec, state = max(cands, key=lambda c: m.task.rank(c[1]))
    out = ctx.run.stage_dir(STAGE)
    atomic.torch_save(out / "final.pt", {k: v.detach().cpu() for k, v in state.items()})  # a plain state dict
    atomic.write_text(
        out / "final.yaml",
        f"# nnrecipe run --config {ctx.rel(out / 'final.yaml')}\n"
        f"# squeeze's final single network: {name} (started from {s.source})\n" + final_spec.to_yaml(),
    )
    return {
        "final": {
            "name": name,
            "weights": ctx.rel(out / "final.pt"),
            "spec": ctx.rel(out / "final.yaml"),
            "test": m.test.get({"best member": "best_member", "trained on": "longer", "student": "student"}[name]),
        }
    }
