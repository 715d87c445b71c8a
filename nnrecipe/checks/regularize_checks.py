"""regularize rules: (measurements, settings) -> Verdict.

A knob "helped" when its val metric beats the reference's beyond noise: a paired test over
the val examples (McNemar's z on one seed's 0/1 correctness, a paired z on per-example error
otherwise), on scores averaged over the seeds both were trained with. Within noise is
"no effect", never a gain.

Every knob is judged against the spread between seeds too once it is measured (`stats.seeded_z`,
the spread pooled over the reference and the knobs after each more-seeds round): a difference
must stand out against "another seed", not only against which examples are in val. So every
knob gets a second seed (a first-seed "helped" or "hurt" is re-tested, not only a "no effect"),
and the ones still within noise get more. Language models need the spread from the start (two
seeds of one GPT differ by z = 12 over val windows), so their reference trains at every seed
before any knob is judged. With `seeds: 1` nothing measures the spread: single-seed verdicts
are then paired over val examples only, and say so.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np

from nnrecipe.checks import not_for_task
from nnrecipe.experiments import SeedRuns
from nnrecipe.probes.filters import FilterMeasure
from nnrecipe.spec_stages import RegularizeSpec
from nnrecipe.stats import SeedNoise, paired_z, seed_noise, seeded_z
from nnrecipe.tasks import Task
from nnrecipe.verdict import Status, Verdict

STAGE = "regularize"
HELPED, NO_EFFECT, HURT = "helped", "no effect", "hurt"
FILTERS_MIN_SIZE = (
    16  # positions per filter below which smoothness says nothing (3x3 or 5-tap edge detectors are rough)
)


@dataclasses.dataclass
class RegularizeMeasurements:
    task: Task
    n_val: int
    chance: float = 0.0  # the val metric without the input (Task.chance): the majority share, 0 for R^2
    val_target_var: float = 1.0  # Var(y) on val where the metric divides by it (R^2; Task.target_variance)
    reference: Optional[SeedRuns] = None  # the overfit stage's model, retrained with the stage's budget
    early: Optional[SeedRuns] = None  # the reference runs' early-stopping points
    patience: int = 3
    knobs: list[SeedRuns] = dataclasses.field(default_factory=list)
    combined: Optional[SeedRuns] = None  # the knobs that helped, together (when more than one)
    best: Optional[SeedRuns] = None  # what best.yaml holds
    augment_clean: Optional[np.ndarray] = None  # the reference model on clean val (per-example scores)
    augment_reference: Optional[np.ndarray] = None  # ... the reference model on augmented val
    augment_trained: Optional[np.ndarray] = None  # the model trained with the augmentation, on augmented val
    augment_skip: str = ""
    filters: Optional[FilterMeasure] = None
    # data-scaling's trend (rising | plateau | falling), None when it did not run: whether more
    # of the same data would narrow the generalization gap
    more_data: Optional[str] = None
    # The seed spread the knobs are judged against: set by the stage (after the reference's seeds,
    # each more-seeds round, and once more at the end of them), so that best.yaml and the verdicts
    # use the same number. None until some configuration has two seeds.
    seed_noise: Optional[SeedNoise] = None

    def measure_noise(self) -> Optional[SeedNoise]:
        """The seed spread pooled over the separately trained configurations so far (the
        reference and each knob; early stopping's runs are the reference's own)."""
        return seed_spread(self.task, [self.reference, *self.knobs])


def _finite_errors(task: Task, result: SeedRuns) -> np.ndarray:
    """(seeds, examples) errors of the runs that did not diverge."""
    runs = [r for r in result.runs if not r.diverged]
    return np.stack([task.errors(r.val_scores) for r in runs]) if runs else np.zeros((0, 0))


def seed_spread(task: Task, results) -> Optional[SeedNoise]:
    """The seed spread (stats.SeedNoise) pooled over `results` (SeedRuns or None) with two
    finite runs or more; None when there is none."""
    return seed_noise(_finite_errors(task, res) for res in results if res is not None and not res.skip)


def compare(task: Task, ref: SeedRuns, other: SeedRuns, noise: Optional[SeedNoise] = None) -> tuple[float, int]:
    """z for "other beats ref" on val, and the number of `other`'s seeds it used. Without
    `noise`: over the seeds both have, paired over val examples. With it: every finite run of
    each side (they may have different seed counts), the seed spread counted too; NaN when a
    side has no finite run."""
    if noise is not None:
        mine, theirs = _finite_errors(task, other), _finite_errors(task, ref)
        if not len(mine) or not len(theirs):
            return math.nan, len(mine)
        return seeded_z(mine, theirs, noise, blocks=task.blocks(mine.shape[1])), len(mine)
    seeds = min(len(ref.runs), len(other.runs))
    return task.better_z(other.scores(seeds), ref.scores(seeds), seeds=seeds), seeds


def noise_for(m: RegularizeMeasurements, other: SeedRuns) -> Optional[SeedNoise]:
    """The seed spread `other` is judged against: none for early stopping (its weights are the
    reference's own runs, stopped earlier: no seed separates them), the measured spread for
    every knob once there is one, whatever its own number of seeds (a single seed's lead over
    the reference is partly that seed's luck: 1.4-9 % false "helped"/"hurt" when it was
    ignored, issue 25)."""
    if other is m.early:
        return None
    return m.seed_noise


def unseeded(m: RegularizeMeasurements, other: SeedRuns) -> bool:
    """Whether `other` would be judged without the seed spread it needs (a knob, before any is
    measured: with `seeds: 1` for good)."""
    return other is not m.early and noise_for(m, other) is None


def _reference(m: RegularizeMeasurements) -> SeedRuns:
    """m.reference where something is compared with it: the stage sets it before it trains any
    knob or early stopping's runs, so a knob or early stopping with runs implies it is set."""
    assert m.reference is not None
    return m.reference


def versus_reference(m: RegularizeMeasurements, other: SeedRuns) -> tuple[float, int]:
    """compare() of `other` against the reference, with the seed spread where it applies."""
    return compare(m.task, _reference(m), other, noise_for(m, other))


def effect(z: float, cfg: RegularizeSpec) -> str:
    return HELPED if z >= cfg.significance_z else (HURT if z <= -cfg.significance_z else NO_EFFECT)


def _mean(runs, attr: str, seeds: int) -> float:
    return float(np.mean([getattr(r, attr) for r in runs[:seeds]]))


def _versus(m: RegularizeMeasurements, other: SeedRuns, cfg: RegularizeSpec) -> tuple[dict, str, float]:
    ref = _reference(m)
    noise = noise_for(m, other)
    z, seeds = compare(m.task, ref, other, noise)
    ref_runs = [r for r in ref.runs if not r.diverged] if noise is not None else ref.runs  # what compare() used
    ref_seeds = len(ref_runs) if noise is not None else seeds
    metric = m.task.metric
    deltas = [round(o.val_metric - r.val_metric, 5) for r, o in zip(ref.runs[:seeds], other.runs[:seeds])]
    observed = {
        f"reference_val_{metric}": round(_mean(ref_runs, "val_metric", ref_seeds), 5),
        f"val_{metric}": round(_mean(other.runs, "val_metric", seeds), 5),
        "delta_per_seed": deltas,
        "z": round(z, 2) if math.isfinite(z) else z,
        "seeds": seeds,
        "reference_seeds": ref_seeds,
        "reference_val_loss": round(_mean(ref_runs, "val_loss", ref_seeds), 5),
        "val_loss": round(_mean(other.runs, "val_loss", seeds), 5),
        f"train_{metric}": round(_mean(other.runs, "train_metric", seeds), 5),
        "effect": effect(z, cfg),
    }
    if noise is not None:  # error units: 1 - accuracy, squared error, nats per token
        observed["seed_sd"] = float(f"{noise.sd:.3g}")  # SD across seeds of a run's mean val error
        observed["seed_df"] = noise.df
    return observed, effect(z, cfg), z


def knob(m: RegularizeMeasurements, result: SeedRuns, cfg: RegularizeSpec) -> Verdict:
    """One knob against the reference: helped (pass), no effect (pass), hurt (warn), diverged (fail)."""
    check = result.name
    expected = f"val better than the reference by z >= {cfg.significance_z:g} to count as a gain"
    if result.skip:
        return Verdict(STAGE, check, Status.SKIP, message=f"{result.description}: {result.skip}")
    if any(r.diverged for r in result.runs):
        return Verdict(
            STAGE,
            check,
            Status.FAIL,
            observed={"diverged_seeds": [r.seed for r in result.runs if r.diverged]},
            expected="finite losses",
            message=f"{result.description}: training diverged (NaN/Inf loss)",
            hint="this setting breaks training: lower it, or look for a bug in your augmentation/model code",
        )
    observed, eff, z = _versus(m, result, cfg)
    metric = m.task.metric_title
    key = m.task.metric
    if not math.isfinite(z):
        return Verdict(
            STAGE,
            check,
            Status.SKIP,
            observed=observed,
            message=f"{result.description}: the reference has no finite run to compare with",
        )
    change = f"val {metric} {observed[f'reference_val_{key}']:.4f} -> {observed[f'val_{key}']:.4f}"
    if m.task.score_is_loss:  # z is computed on the per-window cross-entropy: show it
        change += f", val loss {observed['reference_val_loss']:.4f} -> {observed['val_loss']:.4f} nats"
    seeds = f" over {observed['seeds']} seeds" if observed["seeds"] > 1 else ""
    if observed["reference_seeds"] != observed["seeds"]:
        seeds = f" over {observed['seeds']} seed(s) vs the reference's {observed['reference_seeds']}"
    if unseeded(m, result):
        seeds += "; one seed: the seed spread is not counted"
    c = result.collapse if m.reference is None or m.reference.collapse is None else None
    if eff == HURT:
        if c is not None:  # the most specific cause: the knob made every output alike
            observed["collapsed_from_step"], observed["alike_at"] = c.settled_at, c.layer or None
        return Verdict(
            STAGE,
            check,
            Status.WARN,
            observed=observed,
            expected=expected,
            message=f"{result.description} hurt: {change} (z = {z:.1f}{seeds})" + (f"; {c.words()}" if c else ""),
            hint=(
                f"with it the model collapsed: {c.hint()}; or weaken the knob"
                if c
                else "too strong for this model and data: weaken it"
            )
            + "; best.yaml leaves it out",
        )
    word = "helped" if eff == HELPED else "no effect beyond noise"
    return Verdict(
        STAGE,
        check,
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"{result.description}: {word}, {change} (z = {z:.1f}{seeds})",
    )


def early_stopping(m: RegularizeMeasurements, cfg: RegularizeSpec) -> Verdict:
    """What training past the best val loss cost: the weights early stopping keeps vs the end."""
    if m.early is None or not m.early.runs:
        return Verdict(
            STAGE,
            "early-stopping",
            Status.SKIP,
            message=m.early.skip if m.early is not None else "stages.regularize.knobs.early_stopping is off",
        )
    observed, eff, z = _versus(m, m.early, cfg)
    first, ref = m.early.runs[0], _reference(m).runs[0]
    observed.update(
        {
            "kept_step": first.stopped_at,
            "steps": ref.steps,
            "patience": m.patience,
            "val_loss_at_kept": round(first.val_loss, 5),
            "val_loss_at_end": round(ref.val_loss, 5),
        }
    )
    expected = f"patience {m.patience} evaluations on val loss; a gain counts at z >= {cfg.significance_z:g}"
    cost = f"val loss {first.val_loss:.4g} at step {first.stopped_at} vs {ref.val_loss:.4g} at step {ref.steps}"
    if first.stopped_at == ref.steps and eff != HURT:
        return Verdict(
            STAGE,
            "early-stopping",
            Status.PASS,
            observed=observed,
            expected=expected,
            message=f"the val loss was lowest at the last evaluation (step {ref.steps}): nothing to stop; "
            "a longer budget may still help",
        )
    if eff == HURT:
        return Verdict(
            STAGE,
            "early-stopping",
            Status.WARN,
            observed=observed,
            expected=expected,
            message=f"stopping early hurt the val metric (z = {z:.1f}); {cost}",
            hint="val loss and the metric disagree here: raise stages.regularize.patience, or stop on the metric",
        )
    if eff == HELPED:
        return Verdict(
            STAGE,
            "early-stopping",
            Status.PASS,
            observed=observed,
            expected=expected,
            message=f"training past step {first.stopped_at} cost val metric (z = {z:.1f}): early stopping helped; {cost}",
        )
    return Verdict(
        STAGE,
        "early-stopping",
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"training past the best val loss cost nothing beyond noise (z = {z:.1f}); {cost}",
    )


def _paired_se(m: RegularizeMeasurements, a, b) -> float:
    """SE of (a's val metric - b's) on the same val examples: each side's SE, less their
    covariance, estimated by the correlation of the two runs' per-example scores."""
    se_a, se_b = (
        m.task.metric_se(r.val_metric, m.n_val, scores=r.val_scores, target_var=m.val_target_var) for r in (a, b)
    )
    sa, sb = np.asarray(a.val_scores, dtype=float), np.asarray(b.val_scores, dtype=float)
    ok = np.isfinite(sa) & np.isfinite(sb)
    rho = float(np.corrcoef(sa[ok], sb[ok])[0, 1]) if ok.sum() > 2 and sa[ok].std() > 0 and sb[ok].std() > 0 else 0.0
    rho = min(max(rho, 0.0), 1.0)  # a negative estimate would widen it: keep the independent SE at most
    return math.sqrt(max(se_a * se_a + se_b * se_b - 2 * rho * se_a * se_b, 0.0))


def generalization_gap(m: RegularizeMeasurements, cfg: RegularizeSpec) -> Verdict:
    """Train minus val metric, for the reference and for best.yaml's configuration.

    A gap is a problem to fight only where something measured here can still narrow it: a
    knob (best.yaml narrows it, paired over val examples) or more data (data-scaling still
    rising). On a hard task a correct model keeps a gap no knob and no more of the same data
    closes (an MLP on MNIST-1D: ~0.35): said, not warned."""
    check = "generalization-gap"
    unusable = _reference_unusable(m)
    if unusable is not None:
        return unusable
    assert m.reference is not None  # _reference_unusable said so
    ref = m.reference.runs[0]
    best = m.best.runs[0] if (m.best is not None and m.best.runs) else ref
    z = cfg.significance_z
    gap_b, gap_a = ref.train_metric - ref.val_metric, best.train_metric - best.val_metric
    se_b = m.task.metric_se(ref.val_metric, m.n_val, scores=ref.val_scores, target_var=m.val_target_var)
    se_d = _paired_se(m, ref, best) if best is not ref else 0.0
    metric, name = m.task.metric_title, (m.best.description if m.best is not None else "reference")
    observed = {
        "gap_before": round(gap_b, 5),
        "gap_after": round(gap_a, 5),
        "se_before": round(se_b, 5),
        "se_narrowing": round(se_d, 5),
        "best": name,
        "more_data": m.more_data,
    }
    expected = (
        f"train - val {metric} <= {cfg.max_gap:g} (beyond {z:g} SE), or narrowed beyond noise, or "
        "nothing measured (knobs, more data) narrows it"
    )
    if gap_b - cfg.max_gap <= z * se_b:
        message = (
            f"train - val {metric} gap {gap_b:.3f} is not beyond {cfg.max_gap:g} (± noise): little overfitting to fight"
        )
        return Verdict(
            STAGE,
            check,
            Status.PASS,
            message=message + (f"; {gap_a:.3f} with {name}" if m.best is not None else ""),
            observed=observed,
            expected=expected,
        )
    if best is not ref and gap_b - gap_a > z * se_d:  # paired: both val metrics on the same examples
        return Verdict(
            STAGE,
            check,
            Status.PASS,
            message=f"the gap went from {gap_b:.3f} to {gap_a:.3f} with {name}",
            observed=observed,
            expected=expected,
        )
    gap = f"train - val {metric} gap {gap_b:.3f} -> {gap_a:.3f} ({name})"
    if m.more_data == "rising" or m.more_data is None:
        why = (
            "and more data still raises val (data-scaling): the gap is reducible"
            if m.more_data
            else "and data-scaling did not run to say whether more data would narrow it"
        )
        return Verdict(
            STAGE,
            check,
            Status.WARN,
            message=f"the model still overfits: {gap} {why}",
            hint="more data is the best regularizer; then stronger augmentation, dropout, weight decay or a smaller model",
            observed=observed,
            expected=expected,
        )
    return Verdict(
        STAGE,
        check,
        Status.PASS,
        message=f"{gap} is beyond {cfg.max_gap:g}, but nothing measured narrows it: no knob beyond noise, and more "
        "of the same data is on a plateau (data-scaling); the rest is this model's on this task",
        hint="a model with a better prior for this data (e.g. convolutions for signals and images) is the lever",
        observed=observed,
        expected=expected,
    )


def _reference_unusable(m: RegularizeMeasurements) -> Optional[Verdict]:
    """generalization-gap's skip or fail where the reference gives no gap to judge: it did not
    train, diverged at a seed, or collapsed to one output for every example."""
    check = "generalization-gap"
    if m.reference is None or not m.reference.runs:
        return Verdict(STAGE, check, Status.SKIP, message="the reference did not train")
    diverged = [r.seed for r in m.reference.runs if r.diverged]
    if diverged:  # the reference's own verdict; the knobs are compared with its finite seeds
        return Verdict(
            STAGE,
            check,
            Status.FAIL,
            observed={"diverged_seeds": diverged},
            expected="the reference trains at every seed",
            message=f"the reference diverged (NaN/Inf loss) at seed(s) {diverged}",
            hint="training is unstable across seeds: lower the LR or clip gradients (optim.grad_clip)",
        )
    c = m.reference.collapse
    if c is not None:  # nothing to regularize: the reference learnt one output for every example
        return Verdict(
            STAGE,
            check,
            Status.FAIL,
            observed={"collapsed_from_step": c.settled_at, "alike_at": c.layer or None},
            expected="a reference that gives different examples different outputs",
            message=f"the reference collapsed at this stage's budget: {c.words()}",
            hint=c.hint(),
        )
    return None


def _retention(m: RegularizeMeasurements, clean: np.ndarray, aug: np.ndarray) -> tuple[float, float, float]:
    """(clean metric, augmented metric, retention of the above-chance part)."""
    c, a = m.task.metric_of(clean, m.val_target_var), m.task.metric_of(aug, m.val_target_var)
    return c, a, (a - m.chance) / (c - m.chance) if c > m.chance else math.nan


def augment_preserves_labels(m: RegularizeMeasurements, cfg: RegularizeSpec) -> Verdict:
    """Do labels survive the augmentation? The reference model (never trained on augmented
    data) on augmented vs clean val says how much the augmentation moves the inputs; but a
    model that is merely not invariant (an MLP and a 1-pixel shift) also drops there. So the
    judgement uses the model trained WITH the augmentation, on augmented val, against the
    reference on clean val: when even that model cannot recover the accuracy, the augmented
    inputs no longer determine their labels (a flip of left/right images)."""
    # the stage measures the clean scores together with the augmented ones: both or neither
    clean, augmented = m.augment_clean, m.augment_reference
    if clean is None or augmented is None:
        return Verdict(STAGE, "augment-preserves-labels", Status.SKIP, message=m.augment_skip or "no augmentation")
    if skip := not_for_task(STAGE, "augment-preserves-labels", m.task):
        return skip
    metric = m.task.metric_title
    c, a_ref, r_ref = _retention(m, clean, augmented)
    observed = {
        f"clean_val_{metric}": round(c, 5),
        f"reference_on_augmented_{metric}": round(a_ref, 5),
        "reference_retention": round(r_ref, 4) if math.isfinite(r_ref) else None,
        "chance": round(m.chance, 4),
    }
    if not math.isfinite(r_ref):
        return Verdict(
            STAGE,
            "augment-preserves-labels",
            Status.SKIP,
            observed=observed,
            message="the reference model is at chance on clean val: nothing to retain",
        )
    judged = m.augment_trained if m.augment_trained is not None else augmented
    _, a, r = _retention(m, clean, judged)
    z = paired_z(
        m.task.errors(clean), m.task.errors(judged), blocks=m.task.blocks(len(clean))
    )  # z for "clean beats augmented"
    who = "model trained with it" if m.augment_trained is not None else "reference model"
    if m.augment_trained is not None:
        observed.update({f"augmented_model_on_augmented_{metric}": round(a, 5), "retention": round(r, 4)})
    observed["z_drop"] = round(z, 2)
    expected = (
        f"retention of the above-chance {metric} >= {cfg.augment_warn_retention:g} "
        f"(fail below {cfg.augment_fail_retention:g}) when the drop is beyond z {cfg.significance_z:g}"
    )
    significant = z >= cfg.significance_z
    if significant and r < cfg.augment_fail_retention and m.augment_trained is not None:
        return Verdict(
            STAGE,
            "augment-preserves-labels",
            Status.FAIL,
            observed=observed,
            expected=expected,
            message=f"even a model trained with the augmentation reaches only {a:.3f} on augmented val "
            f"(clean {c:.3f}, {r:.0%} retained): augmented inputs no longer determine their labels",
            hint="e.g. a flip of images whose label depends on direction (digits, text, left/right): drop it "
            "or transform the label with it (see augment.png)",
        )
    if significant and r < cfg.augment_warn_retention:
        return Verdict(
            STAGE,
            "augment-preserves-labels",
            Status.WARN,
            observed=observed,
            expected=expected,
            message=f"the {who} keeps {r:.0%} of its above-chance {metric} on augmented val "
            f"({a:.3f} vs clean {c:.3f}): a strong augmentation, or one that blurs some labels",
            hint="look at augment.png: can you still tell every label? if so weaken it; if not drop it",
        )
    return Verdict(
        STAGE,
        "augment-preserves-labels",
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"labels survive: the {who} keeps {r:.0%} on augmented val ({a:.3f} vs clean {c:.3f}; "
        f"the reference alone keeps {r_ref:.0%})",
    )


def first_layer_filters(m: RegularizeMeasurements, cfg: RegularizeSpec) -> Verdict:
    """Neighbour correlation of the trained first layer vs its own random-init distribution."""
    f = m.filters
    if skip := not_for_task(STAGE, "first-layer-filters", m.task):
        return skip
    if f is None or f.skip:
        return Verdict(STAGE, "first-layer-filters", Status.SKIP, message=f.skip if f is not None else "not measured")
    z = (f.trained_corr - f.null_mean) / f.null_std if f.null_std > 0 else math.nan
    observed = {
        "layer": f.layer,
        "trained_corr": round(f.trained_corr, 4),
        "init_corr": round(f.init_corr, 4),
        "init_null_mean": round(f.null_mean, 4),
        "init_null_std": round(f.null_std, 4),
        "z": round(z, 2) if math.isfinite(z) else None,
        "filter_size": f.filter_size,
    }
    expected = f"neighbouring weights more correlated than at random init, by z >= {cfg.significance_z:g}"
    if f.filter_size < FILTERS_MIN_SIZE:
        return Verdict(
            STAGE,
            "first-layer-filters",
            Status.SKIP,
            observed=observed,
            message=f"{f.layer}: filters of {f.filter_size} positions are too small to judge by smoothness "
            "(small edge detectors are rough by design); see filters.png",
        )
    if not math.isfinite(z) or z < cfg.significance_z:
        return Verdict(
            STAGE,
            "first-layer-filters",
            Status.WARN,
            observed=observed,
            expected=expected,
            message=f"{f.layer}: trained filters are no smoother than random init "
            f"(neighbour correlation {f.trained_corr:.3f} vs {f.null_mean:.3f} ± {f.null_std:.3f})",
            hint="the inputs may be scrambled on the way in (a view/reshape where a permute was meant, a "
            "wrong channel order) or the layer barely trains; see filters.png",
        )
    return Verdict(
        STAGE,
        "first-layer-filters",
        Status.PASS,
        observed=observed,
        expected=expected,
        message=f"{f.layer}: trained filters are smooth (neighbour correlation {f.trained_corr:.3f} "
        f"vs {f.null_mean:.3f} ± {f.null_std:.3f} at init, z = {z:.0f})",
    )


def combined(m: RegularizeMeasurements, cfg: RegularizeSpec, helped: list[str]) -> Verdict:
    """The knobs that helped, trained together once more: does the combination hold up?"""
    if not helped:
        return Verdict(
            STAGE, "combined", Status.SKIP, message="no knob helped beyond noise: best.yaml is the reference"
        )
    if len(helped) == 1 or m.combined is None:
        return Verdict(
            STAGE,
            "combined",
            Status.PASS,
            observed={"knobs": helped},
            message=f"one knob helped ({helped[0]}); its run is the verification of best.yaml",
        )
    if any(r.diverged for r in m.combined.runs):
        return Verdict(
            STAGE,
            "combined",
            Status.FAIL,
            observed={"knobs": helped},
            expected="finite losses",
            message="the knobs that helped one at a time diverge together",
            hint="best.yaml keeps the best single knob; combine the others one at a time",
        )
    observed, eff, z = _versus(m, m.combined, cfg)
    observed["knobs"] = helped
    if eff == HELPED:
        return Verdict(
            STAGE,
            "combined",
            Status.PASS,
            observed=observed,
            expected=f"better than the reference by z >= {cfg.significance_z:g}",
            message=f"{len(helped)} knobs together beat the reference (z = {z:.1f}): best.yaml combines them",
        )
    return Verdict(
        STAGE,
        "combined",
        Status.WARN,
        observed=observed,
        expected=f"better than the reference by z >= {cfg.significance_z:g}",
        message=f"{', '.join(helped)} together are not better than the reference (z = {z:.1f}); "
        "best.yaml keeps the best single knob",
        hint="regularizers overlap: combine them one at a time, weakening each",
    )
