"""tune rules: (measurements, settings) -> Verdict.

tune-improves re-trains the best trial and the starting point with a fresh seed: the best
of N trials on one seed is flattered by that seed, and by the val examples it was picked on.
So trials are scored on one half of val (Task.val_halves) and the confirmation is judged on
the other, paired over its examples, against the seed spread: the one regularize measured on
this split, pooled with the fresh seeds' own (three or more when regularize measured none;
language models take three and, having no halves, are confirmed on all of val).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

from nnrecipe.checks.regularize_checks import compare, seed_spread
from nnrecipe.experiments import SeedRuns
from nnrecipe.probes.tune_analysis import DimCoverage, Importance, TrialRecord
from nnrecipe.spec_stages import TuneSpec
from nnrecipe.stats import SeedNoise, pool_noise
from nnrecipe.tasks import Task
from nnrecipe.verdict import Status, Verdict

STAGE = "tune"


@dataclasses.dataclass
class TuneMeasurements:
    task: Task
    n_val: int
    trials: list[TrialRecord] = dataclasses.field(default_factory=list)
    requested: int = 0
    best: Optional[TrialRecord] = None  # the best complete, finite trial
    start_trial: Optional[int] = None  # the trial that ran the starting point's values (trial 0), when it did
    reference: Optional[SeedRuns] = None  # the starting point, re-trained at the confirmation seed
    confirmed: Optional[SeedRuns] = None  # the best trial's configuration, re-trained at the confirmation seed
    coverage: list[DimCoverage] = dataclasses.field(default_factory=list)
    importance: Optional[Importance] = None
    loss_importance: Optional[Importance] = None  # the same test on the trials' val loss
    spread: Optional[float] = None  # max - min objective over complete trials
    noise: Optional[float] = None  # standard error of one trial's val metric
    prior_noise: Optional[SeedNoise] = None  # the seed spread regularize measured on this split
    confirm_examples: Optional[int] = None  # val examples the confirmation is judged on (the half not selected on)


def confirmation_z(m: TuneMeasurements) -> tuple[float, Optional[SeedNoise]]:
    """(z for "the best trial's configuration beats the start" at the fresh seeds, the seed
    spread it counted: its own fresh seeds' and regularize's, pooled; None when neither).
    Only once both are re-trained (m.reference and m.confirmed set)."""
    ref, confirmed = m.reference, m.confirmed
    assert ref is not None and confirmed is not None  # both callers check that first
    noise = pool_noise([seed_spread(m.task, [ref, confirmed]), m.prior_noise])
    return compare(m.task, ref, confirmed, noise)[0], noise


def tune_improves(m: TuneMeasurements, cfg: TuneSpec) -> Verdict:
    """The best trial against the starting point, both re-trained at a fresh seed."""
    check = "tune-improves"
    finished = [r for r in m.trials if r.value is not None]
    none_usable = _no_usable_trial(m, finished)
    if none_usable is not None:
        return none_usable
    b, metric = m.best, m.task.metric_title
    # _no_usable_trial found a complete trial that trained; the stage's best is the best of those
    assert b is not None and b.value is not None
    observed = {"best_trial": b.number, "best_val": round(b.value, 5), "best_params": b.params, "trials": len(finished)}
    expected = f"the best trial beats the starting point at a fresh seed by z >= {cfg.significance_z:g}"
    start = next((r.value for r in finished if r.number == m.start_trial), None) if m.start_trial is not None else None
    if start is not None:
        observed["start_val"] = round(start, 5)
    if m.confirmed is None or m.reference is None:  # the starting point itself was the best trial
        message = (
            f"the starting point (trial {b.number}) was the best of {len(finished)} trials: "
            f"val {metric} {b.value:.4f}; best.yaml keeps it"
        )
        return Verdict(STAGE, check, Status.PASS, observed=observed, expected=expected, message=message)
    if any(r.diverged for r in m.reference.runs + m.confirmed.runs):
        who = "the best trial's configuration" if any(r.diverged for r in m.confirmed.runs) else "the starting point"
        return Verdict(
            STAGE,
            check,
            Status.FAIL,
            observed=observed,
            expected=expected,
            message=f"{who} diverged when re-trained with a fresh seed",
            hint="it trains only on a lucky seed: lower the learning rate or narrow the space",
        )
    return _confirmation(m, cfg, observed, expected)


def _no_usable_trial(m: TuneMeasurements, finished: list[TrialRecord]) -> Optional[Verdict]:
    """tune-improves' fail when no trial finished, or none both completed and trained."""
    check = "tune-improves"
    if not finished:
        return Verdict(
            STAGE,
            check,
            Status.FAIL,
            observed={"finished_trials": 0},
            expected=f"{m.requested} finished trials",
            message="no trial finished",
            hint="look at tune/worker-*.log and the trials' TensorBoard curves",
        )
    if any(r.state == "complete" and not r.diverged for r in finished):
        return None
    diverged = sum(r.diverged for r in finished)
    return Verdict(
        STAGE,
        check,
        Status.FAIL,
        observed={"finished_trials": len(finished), "diverged": diverged},
        expected="at least one complete trial that trains",
        message=f"every trial diverged or was pruned ({diverged} diverged)",
        hint="the space holds no working setting: narrow it (lower learning rates first)",
    )


def _confirmation(m: TuneMeasurements, cfg: TuneSpec, observed: dict, expected: str) -> Verdict:
    """tune-improves judged on the fresh seeds: the best trial's configuration against the
    starting point, z against the seed spread."""
    check = "tune-improves"
    assert m.reference is not None and m.confirmed is not None and m.best is not None
    refs, confs, number = m.reference.runs, m.confirmed.runs, m.best.number
    z, noise = confirmation_z(m)
    ref = sum(r.val_metric for r in refs) / len(refs)
    conf = sum(r.val_metric for r in confs) / len(confs)
    seeds = [r.seed for r in refs]
    observed.update(
        {
            "confirm_seeds": seeds,
            "start_val_fresh_seed": round(ref, 5),
            "best_val_fresh_seed": round(conf, 5),
            "z": round(z, 2) if math.isfinite(z) else z,
            "confirm_examples": m.confirm_examples or m.n_val,
        }
    )
    if noise is not None:
        observed.update({"seed_sd": float(f"{noise.sd:.3g}"), "seed_df": noise.df})
    at = f"at seed {seeds[0]}" if len(seeds) == 1 else f"over seeds {seeds[0]}-{seeds[-1]}"
    on = f" on the {m.confirm_examples} val examples not used to select it" if m.confirm_examples else ""
    change = f"val {m.task.metric_title} {ref:.4f} -> {conf:.4f} {at}{on}"
    if m.task.score_is_loss:  # z is computed on the per-window cross-entropy: show it
        loss = lambda runs: sum(r.val_loss for r in runs) / len(runs)  # noqa: E731
        change += f" (val loss {loss(refs):.4f} -> {loss(confs):.4f} nats)"
    if z >= cfg.significance_z:
        message = f"trial {number} beats the starting point: {change} (z = {z:.1f}); best.yaml holds it"
        return Verdict(STAGE, check, Status.PASS, message=message, observed=observed, expected=expected)
    if z <= -cfg.significance_z:
        return Verdict(
            STAGE,
            check,
            Status.WARN,
            message=f"the best trial ({number}) is worse than the starting point at a fresh seed: {change} "
            f"(z = {z:.1f}); its lead was seed luck",
            hint="trials are decided by seed noise: give each trial more steps, or use a larger val set; best.yaml keeps the start",
            observed=observed,
            expected=expected,
        )
    message = f"no gain beyond noise over the starting point: {change} (z = {z:.1f}); best.yaml keeps the start"
    return Verdict(STAGE, check, Status.PASS, message=message, observed=observed, expected=expected)


def search_coverage(m: TuneMeasurements, cfg: TuneSpec) -> Verdict:
    """Do the usable trials cover each dimension as random sampling would?"""
    check = "search-coverage"
    finished = [r for r in m.trials if r.value is not None]
    if len(finished) < 2:
        return Verdict(STAGE, check, Status.SKIP, message=f"{len(finished)} finished trial(s): nothing to cover")
    diverged = sum(r.diverged for r in finished)
    dimensions: dict[str, dict[str, object]] = {}
    observed = {"trials": len(finished), "diverged": diverged, "dimensions": dimensions}
    problems, notes = [], []
    for c in m.coverage:
        d: dict[str, object] = {"usable": c.n}
        if c.kind == "choice":
            d.update({"untried": c.untried, "untried_p": float(f"{c.untried_p:.3g}")})
            if c.untried and c.untried_p < cfg.coverage_p:
                problems.append(
                    f"{c.path}: {', '.join(map(repr, c.untried))} never tried (random sampling "
                    f"leaves that with p <= {c.untried_p:.2g})"
                )
            elif c.untried:  # as random sampling of this many trials often does: said, not judged
                notes.append(f"{c.path}: {', '.join(map(repr, c.untried))} not tried (likely with {c.n} trials)")
        else:
            # coverage() measures all three for every numeric dimension
            assert c.max_gap is not None and c.critical_gap is not None and c.gap_range is not None
            d.update(
                {"max_gap": round(c.max_gap, 3), "critical_gap": round(c.critical_gap, 3), "gap": list(c.gap_range)}
            )
            if c.max_gap > c.critical_gap:
                where = f"no usable trial in {c.path} {c.gap_range[0]:g} .. {c.gap_range[1]:g}"
                if c.diverged_values:
                    where += f" ({len(c.diverged_values)} trial(s) there diverged)"
                problems.append(
                    f"{where}: a gap of {c.max_gap:.0%} of the range, random sampling leaves at most "
                    f"{c.critical_gap:.0%} (p = {cfg.coverage_p:g})"
                )
        if c.best_position is not None and c.kind != "choice" and (c.best_position < 0.05 or c.best_position > 0.95):
            notes.append(
                f"the best {c.path} ({c.best_value:.4g}) lies at the {'low' if c.best_position < 0.5 else 'high'} "
                "edge of its range: the optimum may lie beyond it"
            )
        dimensions[c.path] = d
    if diverged * 2 > len(finished):
        problems.append(f"{diverged} of {len(finished)} trials diverged")
    expected = f"no choice untried nor gap wider than random sampling leaves (p = {cfg.coverage_p:g}); at most half the trials diverged"
    tail = ("; " + "; ".join(notes)) if notes else ""
    if problems:
        return Verdict(
            STAGE,
            check,
            Status.WARN,
            observed=observed,
            expected=expected,
            message="; ".join(problems) + tail,
            hint="narrow a range where trials diverge (it wastes trials), or raise stages.tune.trials",
        )
    return Verdict(
        STAGE,
        check,
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"{len(finished)} trials cover {len(m.coverage)} dimension(s) as random sampling should{tail}",
    )


def sensitivity(m: TuneMeasurements, cfg: TuneSpec) -> Verdict:
    """Which parameters change the val metric beyond what shuffling the results explains."""
    check = "sensitivity"
    imp = m.importance
    if imp is None:
        complete = sum(r.state == "complete" and r.value is not None for r in m.trials)
        return Verdict(
            STAGE,
            check,
            Status.SKIP,
            observed={"complete_trials": complete},
            message=f"{complete} complete trial(s): too few to tell which parameters matter (5 or more, "
            "with a parameter that varies)",
        )
    matters = sorted((k for k, p in imp.p.items() if p <= cfg.sensitivity_p), key=lambda k: -imp.explained[k])
    flat = [k for k in imp.p if k not in matters]
    observed = {
        "importance": {k: round(v, 3) for k, v in imp.share.items()},
        "loo_r2": {k: round(v, 3) for k, v in imp.explained.items()},
        "p": {k: round(v, 3) for k, v in imp.p.items()},
        "complete_trials": imp.n,
        "spread": round(m.spread, 5) if m.spread is not None else None,
        "noise_se": round(m.noise, 5) if m.noise is not None else None,
    }
    expected = (
        f"a parameter matters at permutation p <= {cfg.sensitivity_p:g} ({imp.permutations} shuffles of the val metric)"
    )
    fmt = lambda ks: ", ".join(f"{k} ({imp.share[k]:.0%}, p = {imp.p[k]:.3g})" for k in ks)  # noqa: E731
    if matters:
        msg = f"matter: {fmt(matters)}"
        if flat:
            msg += f"; no detectable effect: {fmt(flat)}"
        return Verdict(
            STAGE,
            check,
            Status.PASS,
            observed=observed,
            expected=expected,
            message=msg,
            hint="fix the parameters without effect at a sensible value and spend the trials on the rest"
            if flat
            else "",
        )
    within_noise = (
        m.spread is not None and m.noise is not None and m.spread <= cfg.significance_z * m.noise * math.sqrt(2)
    )
    loss_p = m.loss_importance.p if m.loss_importance is not None else {}  # p per parameter, on the val loss
    moves_loss = sorted(k for k, p in loss_p.items() if p <= cfg.sensitivity_p)
    if within_noise and moves_loss:  # an easy task saturates the metric; the loss still sees the knobs
        observed["p_val_loss"] = {k: round(v, 3) for k, v in loss_p.items()}
        return Verdict(
            STAGE,
            check,
            Status.PASS,
            observed=observed,
            expected=expected,
            message=f"the val metric is saturated (every complete trial within {m.spread:.4f} of the others, "
            f"noise SE {m.noise:.4f}), but the val loss moves with "
            + ", ".join(f"{k} (p = {loss_p[k]:.3g})" for k in moves_loss)
            + ": the knobs reach the model",
            hint="the metric cannot rank these trials: a harder val set, or judge by the val loss",
        )
    if within_noise:
        return Verdict(
            STAGE,
            check,
            Status.WARN,
            observed=observed,
            expected=expected,
            message=f"nothing in the space changes the val metric: every complete trial lies within "
            f"{m.spread:.4f} of the others (noise SE {m.noise:.4f})",
            hint="the tuned fields may not reach the model (a factory that ignores an argument?), or the "
            "ranges are too narrow: widen them or tune other fields",
        )
    return Verdict(
        STAGE,
        check,
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"the trials differ (spread {m.spread or 0:.4f}) but no single parameter explains it: {fmt(flat)}",
        hint="interactions or too few trials: raise stages.tune.trials",
    )
