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


from nnrecipe import atomic
from nnrecipe.checks.squeeze_checks import SqueezeMeasurements, distillation, ensemble_gain, longer_training
from nnrecipe.engine import Engine, load_checkpoint
from nnrecipe.losses import loss_name, make_loss
from nnrecipe.models import prepare_model
from nnrecipe.probes import squeeze as sq
from nnrecipe.probes.regularize import Run
from nnrecipe.probes.training import resumable
from nnrecipe.runtime import seed_everything
from nnrecipe.stages.base import StageContext, StageResult, with_artifacts
from nnrecipe.stages.squeeze_pictures import draw
from nnrecipe.stages.start import from_spec, start_spec
from nnrecipe.stages.trainer import Trainer

STAGE = "squeeze"


def _key(start, steps: int, every: int) -> str:
    """What a saved member must match to be reused by --resume."""
    text = start.model_copy(update={"stages": None, "name": "", "output_dir": ""}).model_dump_json() + f"|{steps}|{every}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run(spec, ctx: StageContext) -> StageResult:
    cfg = spec.stages.squeeze
    if cfg.start == "auto":
        start, source, note = start_spec(spec, ctx, stages=("tune", "regularize"))
    else:
        start, source, note = from_spec(spec), "the spec", ""
    steps = cfg.steps or start.train.steps
    every = min(cfg.eval_every or start.train.eval_every, steps)
    trainer = Trainer(ctx, stage=STAGE, steps=steps, every=every)
    data = trainer.data(start)
    task, loss = data.task, loss_name(start)
    engine = Engine.for_spec(start.train, device=ctx.device, task=task)
    out = ctx.run.stage_dir(STAGE)
    members_dir = out / "members"
    key = _key(start, steps, every)
    resume = bool(ctx.options.get("resume"))
    m = SqueezeMeasurements(task=task)
    tb = ctx.run.tb_dir(STAGE)
    if resume and tb.exists():  # keep the finished members' curves; the rest is recomputed
        for entry in tb.iterdir():
            if entry.is_dir() and not entry.name.startswith("member-"):
                shutil.rmtree(entry)

    # 1. the members, one seed each, saved as they finish.
    models, metas, resumed, continued = [], [], [], []
    for i in range(cfg.members):
        seed, label = spec.seed + i, f"member-{i}"
        meta_path, weights = members_dir / f"{label}.json", members_dir / f"{label}.pt"
        meta = json.loads(meta_path.read_text()) if (resume and meta_path.exists() and weights.exists()) else None
        if meta is not None and meta.get("key") == key:
            model = prepare_model(start.model_copy(update={"seed": seed}), data, base=ctx.base).to(ctx.device)
            model.load_state_dict(load_checkpoint(weights, map_location=ctx.device)["model"])
            resumed.append(i)
        else:
            # A member killed half-way continues from its last checkpoint, exactly where it stopped.
            last, member_key = members_dir / f"{label}-last.pt", f"{key}-{seed}"
            partial = resumable(last, member_key, ctx.device) if resume else None
            if partial is None:
                shutil.rmtree(ctx.run.tb_dir(STAGE) / label, ignore_errors=True)  # a killed attempt's curves
            else:
                continued.append((i, int(partial["step"])))
            t = trainer.train(start, seed=seed, label=label, last_checkpoint=last, checkpoint_key=member_key,
                              resume_from=last if partial is not None else None,
                              purge_step=int(partial["step"]) + 1 if partial is not None else None)
            model = t.model
            atomic.torch_save(weights, {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "seed": seed})
            run_fields = {k: v for k, v in dataclasses.asdict(t.run).items() if k != "val_scores"}
            meta = {"key": key, "seed": seed, "run": run_fields}
            atomic.write_json(meta_path, meta)  # written last: the member counts as finished from here
        models.append(model)
        metas.append(meta)

    # 2. the members and their ensembles on val (and test), batch by batch.
    val = sq.ensemble_pass(engine, models, data.val, task=task, loss=loss)
    m.members = [Run(val_scores=s, **_run_fields(meta["run"])) for s, meta in zip(val.members, metas)]
    m.ensemble_scores, m.size_curve = val.ensemble, val.curve()
    m.disagreement, m.output_spread = val.disagreement, val.spread
    best = m.best_member()
    test_curve = []
    if data.test is not None and best is not None:
        test = sq.ensemble_pass(engine, models, data.test, task=task, loss=loss)
        m.test["best_member"] = round(float(test.members[best].mean()), 5)
        m.test["average_member"] = round(float(sum(s.mean() for s in test.members) / len(test.members)), 5)
        m.test["ensemble"] = round(float(test.ensemble.mean()), 5)
        test_curve = test.curve()

    # 3. distillation: the ensemble's soft targets on train -> one student.
    student_model = student_spec = None
    if cfg.distill.enabled and task == "language-model":
        m.distill_skip = ("not for language models yet: the soft targets are the ensemble's distribution at every "
                          "train position (windows x context x vocabulary), and soft against hard labels at one "
                          "seed each would be judged within a language model's seed spread, which takes "
                          "students at several seeds")
    elif cfg.distill.enabled and best is not None and not m.members[best].diverged:
        student_spec, augment = _student_spec(start, cfg, kind=data.kind, base=ctx.base)
        teacher = sq.combine_outputs([engine.predict(mm, data.train) for mm in models], task, loss)
        hard = trainer.train(student_spec, seed=spec.seed, label="student-hard-labels", steps=cfg.distill.steps or steps)
        m.hard = hard.run
        seed_everything(spec.seed)
        model = prepare_model(student_spec.model_copy(update={"seed": spec.seed}), data, base=ctx.base).to(ctx.device)
        m.student, student_model = sq.train_student(student_spec, model=model, data=data, teacher_train=teacher, device=ctx.device,
                                                    steps=cfg.distill.steps or steps, every=every, seed=spec.seed, base=ctx.base,
                                                    augment=augment, writer=ctx.writer(STAGE, "student-soft-targets"),
                                                    progress=ctx.progress)
        if data.test is not None:
            m.test["student"] = _test_score(engine, student_model, data, start, ctx.base)
            m.test["hard_label"] = _test_score(engine, hard.model, data, start, ctx.base)
    elif not cfg.distill.enabled:
        m.distill_skip = "stages.squeeze.distill.enabled is off"

    # 4. leave it training: the best member's last checkpoint, trained on.
    longer_model = None
    if cfg.longer.enabled and best is not None:
        last = members_dir / f"member-{best}-last.pt"
        if last.exists():
            extra = cfg.longer.extra_steps or steps
            longer_model = prepare_model(start.model_copy(update={"seed": spec.seed + best}), data, base=ctx.base).to(ctx.device)
            before, after = sq.continue_training(start, model=longer_model, checkpoint=last, data=data,
                                                 loss_fn=make_loss(start, base=ctx.base), device=ctx.device, steps=extra,
                                                 every=every, seed=spec.seed + 1000 + best,
                                                 writer=ctx.writer(STAGE, "longer-training"), progress=ctx.progress)
            m.longer_before, m.longer_after = before, after
            m.reloaded_val_loss = before.val_loss
            m.recorded_val_loss = sq.checkpoint_val_loss(m.members[best].evals, before.steps)
            if data.test is not None:
                m.test["longer"] = _test_score(engine, longer_model, data, start, ctx.base)
        else:
            m.longer_skip = f"{ctx.rel(last)} is missing"

    verdicts = [ensemble_gain(m, cfg), distillation(m, cfg), longer_training(m, cfg)]

    # 5. the final single network: the best on val of best member / trained on / student.
    final = _final(m, best, start, student_spec, models, longer_model, student_model, steps, cfg)
    summary = {"start": source, "start_note": note, "steps": steps, "members": cfg.members, "resumed_members": resumed,
               "continued_members": [{"member": i, "from_step": s} for i, s in continued],
               "member_val": [round(float(r.val_scores.mean()), 5) for r in m.members],
               "ensemble_val": round(float(m.ensemble_scores.mean()), 5), "size_curve_val": m.size_curve,
               "size_curve_test": test_curve, "test": m.test}
    if final is not None:
        name, final_spec, state = final
        atomic.torch_save(out / "final.pt", {k: v.detach().cpu() for k, v in state.items()})  # a plain state dict
        atomic.write_text(out / "final.yaml", f"# nnrecipe run --config {ctx.rel(out / 'final.yaml')}\n"
                                              f"# squeeze's final single network: {name} (started from {source})\n" + final_spec.to_yaml())
        summary["final"] = {"name": name, "weights": ctx.rel(out / "final.pt"), "spec": ctx.rel(out / "final.yaml"),
                            "test": m.test.get({"best member": "best_member", "trained on": "longer", "student": "student"}[name])}
    arts = draw(ctx, m, test_curve=test_curve, stage=STAGE)
    verdicts = [with_artifacts(v, *arts.get(v.check, [])) for v in verdicts]
    return StageResult(STAGE, verdicts, summary)


def _test_score(engine, model, data, spec, base) -> float:
    """The model's mean per-example score on the test split (accuracy, squared error, nats)."""
    result = engine.evaluate(model, data.test, make_loss(spec, base=base), keep_scores=True)
    return round(float(result.scores.mean()), 5)


def _run_fields(d: dict) -> dict:
    d = dict(d)
    d["evals"] = [tuple(e) for e in d.get("evals", [])]
    return d


def _student_spec(start, cfg, *, kind: str, base):
    """The student: the distill model (or the members'), no early stopping (the hard-label
    student is trained the same way); augmentation only when every entry is a built-in (they
    leave targets alone, so soft targets pass through)."""
    from nnrecipe.augment import build_augment

    student = start.model_copy(update={"model": cfg.distill.model or start.model,
                                       "train": start.train.model_copy(update={"early_stopping": None})})
    if any(a.factory for a in start.data.augment):
        student = student.model_copy(update={"data": student.data.model_copy(update={"augment": []})})
    return student, build_augment(student.data.augment, kind=kind, base=base)


def _final(m, best, start, student_spec, models, longer_model, student_model, steps, cfg):
    if best is None:
        return None
    sign = 1 if m.task == "classification" else -1
    cands = [("best member", float(m.members[best].val_scores.mean()), start.model_copy(update={"seed": start.seed + best}),
              models[best].state_dict())]
    if m.longer_after is not None and not m.longer_after.diverged and longer_model is not None:
        extra = cfg.longer.extra_steps or steps
        longer_spec = start.model_copy(update={"train": start.train.model_copy(update={"steps": steps + extra})})
        cands.append(("trained on", float(m.longer_after.val_scores.mean()), longer_spec, longer_model.state_dict()))
    if m.student is not None and not m.student.diverged and student_model is not None:
        cands.append(("student", float(m.student.val_scores.mean()), student_spec, student_model.state_dict()))
    name, _, spec, state = max(cands, key=lambda c: sign * c[1])
    return name, spec, state
