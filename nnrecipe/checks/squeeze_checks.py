"""squeeze rules: (measurements, settings) -> Verdict. Paired over val examples, as everywhere."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import numpy as np

from nnrecipe.experiments import Result
from nnrecipe.spec_stages import SqueezeSpec
from nnrecipe.stats import SeedNoise, paired_z, seeded_z
from nnrecipe.tasks import Task
from nnrecipe.verdict import Status, Verdict

STAGE = "squeeze"
IDENTICAL_SPREAD = 1e-4  # relative: float rounding from a changed summation order stays far below this


@dataclasses.dataclass
class SqueezeMeasurements:
    task: Task
    members: list[Result] = dataclasses.field(default_factory=list)
    ensemble_scores: Optional[np.ndarray] = None  # per val example: ensemble correct (0/1) or squared error
    disagreement: Optional[float] = None  # classification: mean pairwise fraction of differing predictions
    output_spread: Optional[float] = (
        None  # max |member output - member 0 output| on val, relative to the outputs' scale
    )
    size_curve: list[float] = dataclasses.field(default_factory=list)  # val metric of the first k members
    test: dict = dataclasses.field(default_factory=dict)  # name -> test metric, when a test split exists
    student: Optional[Result] = None  # distilled from the ensemble's soft targets
    hard: Optional[Result] = None  # the same student trained on hard labels only
    distill_skip: str = ""
    longer_before: Optional[Result] = None  # the member that was trained on
    longer_after: Optional[Result] = None
    reloaded_val_loss: Optional[float] = None  # val loss of the reloaded checkpoint
    recorded_val_loss: Optional[float] = None  # val loss recorded when that checkpoint was written
    longer_skip: str = ""
    collapsed: dict = dataclasses.field(default_factory=dict)  # member index -> diagnosis.Collapse
    longer_collapse: Any = None  # diagnosis.Collapse of the model trained on, after the extra steps
    seed_noise: Optional[SeedNoise] = None  # the members' seed spread, pooled with regularize's (distillation)

    def best_member(self) -> Optional[int]:
        ok = [i for i, r in enumerate(self.members) if not r.diverged]
        if not ok:
            return None
        return max(ok, key=lambda i: self.task.rank(float(self.members[i].val_scores.mean())))


def _metric(scores: np.ndarray) -> float:
    return float(scores.mean())


def ensemble_gain(m: SqueezeMeasurements, cfg: SqueezeSpec) -> Verdict:
    """The ensemble against a single member, paired on val. The gain is judged against the
    average member (per example, the mean of the members' scores): an unbiased stand-in for
    "one model trained with another seed". The best member is reported too, but picking the
    best of K on the same val set flatters it by about one member-to-member spread."""
    check = "ensemble-gain"
    unusable = _members_unusable(m)
    if unusable is not None:
        return unusable
    best = m.best_member()
    if best is None or m.ensemble_scores is None or len(m.members) < 2:
        return Verdict(STAGE, check, Status.SKIP, message="fewer than two members")
    name = m.task.score
    average = np.mean([r.val_scores for r in m.members], axis=0)
    z = paired_z(m.task.errors(m.ensemble_scores), m.task.errors(average), blocks=m.task.blocks(len(average)))
    z_best = m.task.better_z(m.ensemble_scores, m.members[best].val_scores)
    observed = {
        f"ensemble_val_{name}": round(_metric(m.ensemble_scores), 5),
        f"average_member_val_{name}": round(float(average.mean()), 5),
        f"best_member_val_{name}": round(_metric(m.members[best].val_scores), 5),
        "best_member": best,
        f"member_val_{name}": [round(_metric(r.val_scores), 5) for r in m.members],
        "members": len(m.members),
        "z_vs_average_member": round(z, 2) if math.isfinite(z) else z,
        "z_vs_best_member": round(z_best, 2) if math.isfinite(z_best) else z_best,
    }
    if m.disagreement is not None:
        observed["disagreement"] = round(m.disagreement, 4)
    observed.update({f"test_{k}": v for k, v in m.test.items()})
    if m.output_spread is not None:
        observed["output_spread"] = float(f"{m.output_spread:.3g}")
    expected = f"the ensemble beats the average member by z >= {cfg.significance_z:g} (paired on val)"
    change = (
        f"val {name} {observed[f'average_member_val_{name}']:.4f} (average member; best "
        f"{observed[f'best_member_val_{name}']:.4f}) -> {observed[f'ensemble_val_{name}']:.4f}"
    )
    # Members that agree on every prediction can all be right; members whose OUTPUTS agree to
    # float rounding are one network trained K times.
    if m.output_spread is not None and m.output_spread < IDENTICAL_SPREAD:
        return Verdict(
            STAGE,
            check,
            Status.WARN,
            message="the members are identical: changing the seed changes nothing in training",
            hint="the seed does not reach the model init or the data order (a fixed seed inside your "
            "factory? full-batch training?); an ensemble of copies gains nothing",
            observed=observed,
            expected=expected,
        )
    if z <= -cfg.significance_z:
        return Verdict(
            STAGE,
            check,
            Status.WARN,
            message=f"the ensemble is worse than its average member ({change}, z = {z:.1f})",
            hint="averaging probabilities should not lose: are the outputs on one scale (logits for the loss)?",
            observed=observed,
            expected=expected,
        )
    word = "gains beyond noise" if z >= cfg.significance_z else "no gain beyond noise"
    message = f"ensemble of {len(m.members)}: {word}, {change} (z = {z:.1f}; vs best member {z_best:.1f})"
    return Verdict(STAGE, check, Status.PASS, message=message, observed=observed, expected=expected)


def _members_unusable(m: SqueezeMeasurements) -> Optional[Verdict]:
    """ensemble-gain's fail for a diverged member, its warn for a collapsed one (a member that
    gives every example one output: averaging it in only blurs the others)."""
    check = "ensemble-gain"
    diverged = [i for i, r in enumerate(m.members) if r.diverged]
    if diverged:
        return Verdict(
            STAGE,
            check,
            Status.FAIL,
            observed={"diverged_members": diverged},
            expected="every member trains",
            message=f"members {diverged} diverged (NaN/Inf loss)",
            hint="training is unstable across seeds: lower the LR or clip gradients (optim.grad_clip)",
        )
    if not m.collapsed:
        return None
    i, c = next(iter(m.collapsed.items()))
    return Verdict(
        STAGE,
        check,
        Status.WARN,
        observed={
            "collapsed_members": sorted(m.collapsed),
            "collapsed_from_step": c.settled_at,
            "alike_at": c.layer or None,
        },
        expected="every member gives different examples different outputs",
        message=f"member(s) {sorted(m.collapsed)} collapsed (member {i}: {c.words()})",
        hint=c.hint(),
    )


def distillation(m: SqueezeMeasurements, cfg: SqueezeSpec) -> Verdict:
    if m.student is None or m.hard is None:
        return Verdict(
            STAGE, "distillation", Status.SKIP, message=m.distill_skip or "stages.squeeze.distill.enabled is off"
        )
    if m.student.diverged or m.hard.diverged:
        return Verdict(
            STAGE,
            "distillation",
            Status.FAIL,
            observed={"student_diverged": m.student.diverged, "hard_diverged": m.hard.diverged},
            expected="finite losses",
            message="a student diverged",
            hint="lower distill.temperature or the LR",
        )
    name = m.task.score
    s, h = _metric(m.student.val_scores), _metric(m.hard.val_scores)
    e = _metric(m.ensemble_scores) if m.ensemble_scores is not None else math.nan
    # Two trainings, one seed each: the seed spread counts (a student a seed's luck behind the
    # twin is not "worse"); without a measured spread, paired over val examples only.
    if m.seed_noise is not None:
        z = seeded_z(
            m.task.errors(m.student.val_scores),
            m.task.errors(m.hard.val_scores),
            m.seed_noise,
            blocks=m.task.blocks(len(m.hard.val_scores)),
        )
    else:
        z = m.task.better_z(m.student.val_scores, m.hard.val_scores)
    gain = m.task.rank(e) - m.task.rank(h)
    kept = (m.task.rank(s) - m.task.rank(h)) / gain if gain > 0 else math.nan
    observed = {
        f"student_val_{name}": round(s, 5),
        f"hard_label_val_{name}": round(h, 5),
        f"ensemble_val_{name}": round(e, 5),
        "z_soft_vs_hard": round(z, 2) if math.isfinite(z) else z,
        "fraction_of_ensemble_gain_kept": round(kept, 3) if math.isfinite(kept) else None,
        "temperature": cfg.distill.temperature,
        "alpha": cfg.distill.alpha,
        "seed_sd": float(f"{m.seed_noise.sd:.3g}") if m.seed_noise else None,
        "seed_df": m.seed_noise.df if m.seed_noise else None,
    }
    observed.update({f"test_{k}": v for k, v in m.test.items() if k in ("student", "hard_label")})
    expected = f"soft targets not worse than hard labels by z >= {cfg.significance_z:g}"
    z_gain = m.task.better_z(m.ensemble_scores, m.hard.val_scores) if m.ensemble_scores is not None else 0.0
    # A share of a gain that is itself noise means nothing: say it only when the gain is real.
    kept_text = (
        f"; keeps {kept:.0%} of the ensemble's gain" if math.isfinite(kept) and z_gain >= cfg.significance_z else ""
    )
    if z <= -cfg.significance_z:
        return Verdict(
            STAGE,
            "distillation",
            Status.WARN,
            observed=observed,
            expected=expected,
            message=f"the distilled student is worse than hard-label training (val {name} {s:.4f} vs {h:.4f}, z = {z:.1f})",
            hint="a temperature bug (softmax twice?) or too high a distill.alpha; soft targets should not hurt",
        )
    word = "beats" if z >= cfg.significance_z else "is on par with"
    return Verdict(
        STAGE,
        "distillation",
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"the student on soft targets {word} hard-label training (val {name} {s:.4f} vs {h:.4f}, "
        f"z = {z:.1f}; ensemble {e:.4f}){kept_text}",
    )


def longer_training(m: SqueezeMeasurements, cfg: SqueezeSpec) -> Verdict:
    if m.longer_after is None or m.longer_before is None:
        return Verdict(
            STAGE, "longer-training", Status.SKIP, message=m.longer_skip or "stages.squeeze.longer.enabled is off"
        )
    rec, rel = m.recorded_val_loss, m.reloaded_val_loss
    gap = abs(rel - rec) / max(abs(rec), 1e-12) if rec is not None and rel is not None else math.inf
    observed = {
        "recorded_val_loss": rec,
        "reloaded_val_loss": rel,
        "steps_before": m.longer_before.steps,
        "extra_steps": m.longer_after.steps,
    }
    if not gap <= cfg.longer.reload_rtol:
        return Verdict(
            STAGE,
            "longer-training",
            Status.FAIL,
            observed=observed,
            expected=f"the reloaded checkpoint reproduces the recorded val loss (rtol {cfg.longer.reload_rtol:g})",
            message="the last checkpoint does not restore the model it was written from",
            hint="state that is not in state_dict (a plain tensor attribute, not a registered buffer), or "
            "a model that changes after construction; register buffers so checkpoints carry them",
        )
    if m.longer_after.diverged:
        return Verdict(
            STAGE,
            "longer-training",
            Status.FAIL,
            observed=observed,
            expected="finite losses",
            message="training on from the checkpoint diverged",
            hint="lower the LR for the extra budget",
        )
    if m.longer_collapse is not None:
        c = m.longer_collapse
        return Verdict(
            STAGE,
            "longer-training",
            Status.WARN,
            observed={**observed, "collapsed_from_step": c.settled_at, "alike_at": c.layer or None},
            expected="a model that still tells examples apart",
            message=f"training on collapsed the model: {c.words()}",
            hint=c.hint(),
        )
    name = m.task.score
    before, after = m.longer_before.val_scores, m.longer_after.val_scores
    z = m.task.better_z(after, before)
    observed.update(
        {
            f"val_{name}_before": round(_metric(before), 5),
            f"val_{name}_after": round(_metric(after), 5),
            "val_loss_before": round(m.longer_before.val_loss, 5),
            "val_loss_after": round(m.longer_after.val_loss, 5),
            "z": round(z, 2) if math.isfinite(z) else z,
        }
    )
    expected = f"a change counts at z >= {cfg.significance_z:g} (paired on val)"
    change = f"val {name} {observed[f'val_{name}_before']:.4f} -> {observed[f'val_{name}_after']:.4f} after {m.longer_after.steps} more steps"
    if z >= cfg.significance_z:
        msg = f"still improving: {change} (z = {z:.1f}): leave it training"
    elif z <= -cfg.significance_z:
        msg = f"training on made val worse: {change} (z = {z:.1f}); the budget was already past the best point"
    else:
        msg = f"no further gain beyond noise: {change} (z = {z:.1f})"
    return Verdict(STAGE, "longer-training", Status.PASS, observed=observed, expected=expected, message=msg)
