"""The regularize rules on synthetic measurements, both ways."""

import dataclasses

import numpy as np
import pytest

from nnrecipe.checks import regularize_checks as rc
from nnrecipe.experiments import Result, SeedRuns
from nnrecipe.probes.filters import FilterMeasure
from nnrecipe.spec_stages import RegularizeSpec
from nnrecipe.tasks import CLASSIFICATION, LANGUAGE_MODEL
from nnrecipe.tasks.base import binomial_se
from nnrecipe.verdict import Status

CFG = RegularizeSpec()
N = 1000


def _scores(p, seed, n=N):
    return (np.random.default_rng(seed).random(n) < p).astype(float)


def _run(scores, *, seed=0, train=1.0, diverged=False, stopped_at=None, evals=()):
    return Result(
        seed=seed,
        val_scores=scores,
        val_loss=1 - scores.mean(),
        val_metric=float(scores.mean()),
        train_loss=0.01,
        train_metric=train,
        steps=1000,
        diverged=diverged,
        evals=list(evals),
        stopped_at=stopped_at,
    )


def _result(name, *ps, base_seed=0, **kw):
    return SeedRuns(name, name, runs=[_run(_scores(p, base_seed + i), seed=i, **kw) for i, p in enumerate(ps)])


def _m(reference, **kw):
    return rc.RegularizeMeasurements(CLASSIFICATION, n_val=N, chance=0.1, reference=reference, **kw)


def test_a_clear_gain_helps_and_a_clear_loss_hurts():
    ref = _result("reference", 0.80)
    m = _m(ref)
    better = SeedRuns("dropout", "dropout 0.2", runs=[_run(np.maximum(ref.runs[0].val_scores, _scores(0.5, 9)))])
    v = rc.knob(m, better, CFG)
    assert v.status is Status.PASS and v.observed["effect"] == "helped" and v.observed["z"] >= 3
    worse = SeedRuns("weight-decay", "weight decay 0.1", runs=[_run(ref.runs[0].val_scores * _scores(0.8, 9))])
    v = rc.knob(m, worse, CFG)
    assert v.status is Status.WARN and v.observed["effect"] == "hurt" and "hurt" in v.message


def test_noise_level_differences_are_no_effect():
    """Two independently trained models of the same quality: their difference is noise, never a gain."""
    gains = 0
    for seed in range(40):
        ref = _result("reference", 0.8, base_seed=100 + seed)
        same = _result("dropout", 0.8, base_seed=500 + seed)
        v = rc.knob(_m(ref), same, CFG)
        assert v.status is Status.PASS
        gains += v.observed["effect"] != "no effect"
    assert gains <= 1  # at z >= 3 a false gain has probability ~0.001 per comparison


def test_seed_averaged_comparison_uses_the_seeds_both_have():
    ref = _result("reference", 0.8, 0.8, 0.8)
    knob = _result("dropout", 0.8, base_seed=50)
    z, seeds = rc.compare(CLASSIFICATION, ref, knob)
    assert seeds == 1
    knob3 = _result("dropout", 0.8, 0.8, 0.8, base_seed=50)
    assert rc.compare(CLASSIFICATION, ref, knob3)[1] == 3


def test_diverged_knob_fails_and_skipped_knob_skips():
    ref = _result("reference", 0.8)
    bad = _result("weight-decay", 0.1, diverged=True)
    assert rc.knob(_m(ref), bad, CFG).status is Status.FAIL
    assert rc.knob(_m(ref), SeedRuns("dropout", "dropout 0.2", skip="no dropout"), CFG).status is Status.SKIP


def test_early_stopping_reports_what_training_past_the_best_cost():
    ref = _result("reference", 0.7)
    kept = SeedRuns(
        "early-stopping",
        "early stopping",
        runs=[_run(np.maximum(ref.runs[0].val_scores, _scores(0.4, 3)), stopped_at=400)],
    )
    v = rc.early_stopping(_m(ref, early=kept), CFG)
    assert v.status is Status.PASS and v.observed["effect"] == "helped" and v.observed["kept_step"] == 400
    same = SeedRuns("early-stopping", "early stopping", runs=[_run(ref.runs[0].val_scores.copy(), stopped_at=1000)])
    v = rc.early_stopping(_m(ref, early=same), CFG)
    assert v.status is Status.PASS and v.observed["effect"] == "no effect"
    assert rc.early_stopping(_m(ref), CFG).status is Status.SKIP


def test_generalization_gap():
    small = _result("reference", 0.97, train=1.0)
    assert rc.generalization_gap(_m(small), CFG).status is Status.PASS
    big = _result("reference", 0.70, train=1.0)
    v = rc.generalization_gap(_m(big), CFG)
    assert v.status is Status.WARN and v.observed["gap_before"] == pytest.approx(0.3, abs=0.03)
    closed = _result("combined", 0.85, train=0.9)
    v = rc.generalization_gap(_m(big, best=closed), CFG)
    assert v.status is Status.PASS and v.observed["gap_after"] < 0.1


def test_a_gap_nothing_measured_can_narrow_is_said_not_warned():
    # A hard task (an MLP on MNIST-1D): train 1.0, val 0.70, no knob narrows it. Before issue 25
    # this warned whatever the data said (mnist1d-mlp.yaml raised max_gap to 0.35 to pass).
    big = _result("reference", 0.70, train=1.0)
    v = rc.generalization_gap(_m(big, more_data="plateau"), CFG)
    assert v.status is Status.PASS and "nothing measured narrows it" in v.message and v.hint
    v = rc.generalization_gap(_m(big, more_data="rising"), CFG)
    assert v.status is Status.WARN and "more data still raises val" in v.message
    v = rc.generalization_gap(_m(big, more_data=None), CFG)
    assert v.status is Status.WARN and "data-scaling did not run" in v.message


def _correlated_pair(rng, gain: float, n: int = N):
    """The reference and best.yaml's run on the same val examples (per-example difficulty
    shared, as two trainings of similar models have): best.yaml's val higher by `gain`, train
    the same (1.0), so its gap is narrower by `gain`."""
    difficulty = rng.beta(0.3, 0.15, n)  # mean ~0.67, most examples always right or always wrong, as real models have
    ref = SeedRuns("reference", "reference", runs=[_run((rng.random(n) < difficulty).astype(float), train=1.0)])
    best = SeedRuns(
        "dropout", "dropout", runs=[_run((rng.random(n) < np.clip(difficulty + gain, 0, 1)).astype(float), train=1.0)]
    )
    return ref, best


def test_the_narrowed_gap_is_paired_over_val_examples():
    # Under no real narrowing, "narrowed" (pass instead of warn) stays at the nominal one-sided
    # 0.135 % (+ 3 SEs over 600); a real narrowing of ~5 points on 1,000 examples is found far
    # more often than with the unpaired hypot(se_before, se_after) of before.
    rng = np.random.default_rng(0)
    sims, false_narrowed = 600, 0
    for _ in range(sims):
        ref, best = _correlated_pair(rng, 0.0)
        false_narrowed += rc.generalization_gap(_m(ref, best=best, more_data="rising"), CFG).status is Status.PASS
    assert false_narrowed / sims <= 0.00135 + 3 * (0.00135 / sims) ** 0.5
    paired = unpaired = 0
    for _ in range(200):
        ref, best = _correlated_pair(rng, 0.06)
        v = rc.generalization_gap(_m(ref, best=best, more_data="rising"), CFG)
        paired += v.status is Status.PASS
        se_b, se_a = (binomial_se(r.runs[0].val_metric, N) for r in (ref, best))
        unpaired += v.observed["gap_before"] - v.observed["gap_after"] > 3 * (se_a**2 + se_b**2) ** 0.5
    assert paired > 5 * unpaired and paired / 200 > 0.4  # measured: 52 % paired, 1.5 % unpaired


def test_augment_preserves_labels():
    clean = _scores(0.95, 1)
    m = _m(_result("reference", 0.95), augment_clean=clean, augment_reference=clean * _scores(0.97, 2))
    assert rc.augment_preserves_labels(m, CFG).status is Status.PASS
    m.augment_reference = clean * _scores(0.75, 2)  # keeps ~70% of the above-chance accuracy
    assert rc.augment_preserves_labels(m, CFG).status is Status.WARN
    m.augment_reference = _scores(0.5, 2)  # about half survive; without a model trained with it, only a warn
    assert rc.augment_preserves_labels(m, CFG).status is Status.WARN
    m.augment_trained = clean * _scores(
        0.98, 3
    )  # a model trained with it recovers: a 1-pixel shift, not a label change
    v = rc.augment_preserves_labels(m, CFG)
    assert v.status is Status.PASS and v.observed["reference_retention"] < 0.5 and v.observed["retention"] > 0.9
    m.augment_trained = _scores(0.5, 4)  # even trained with it: the labels are gone (a flip of left/right)
    v = rc.augment_preserves_labels(m, CFG)
    assert v.status is Status.FAIL and v.observed["retention"] < 0.5
    assert (
        rc.augment_preserves_labels(_m(_result("reference", 0.9), augment_skip="data.augment is empty"), CFG).status
        is Status.SKIP
    )


def _filters(trained, null_mean=-0.02, null_std=0.01, size=64):
    return FilterMeasure("1.weight", trained, -0.02, null_mean, null_std, 1000, size)


def test_first_layer_filters():
    assert rc.first_layer_filters(_m(None, filters=_filters(0.2)), CFG).status is Status.PASS
    v = rc.first_layer_filters(_m(None, filters=_filters(-0.015)), CFG)
    assert v.status is Status.WARN and "no smoother than random init" in v.message
    assert rc.first_layer_filters(_m(None, filters=_filters(0.2, size=5)), CFG).status is Status.SKIP
    skip = FilterMeasure("", np.nan, np.nan, np.nan, np.nan, 0, 0, skip="feature vectors")
    assert rc.first_layer_filters(_m(None, filters=skip), CFG).status is Status.SKIP


def test_combined():
    ref = _result("reference", 0.8)
    assert rc.combined(_m(ref), CFG, []).status is Status.SKIP
    assert rc.combined(_m(ref), CFG, ["dropout"]).status is Status.PASS
    good = SeedRuns(
        "combined", "dropout + weight-decay", runs=[_run(np.maximum(ref.runs[0].val_scores, _scores(0.5, 4)))]
    )
    assert rc.combined(_m(ref, combined=good), CFG, ["dropout", "weight-decay"]).status is Status.PASS
    flat = SeedRuns("combined", "dropout + weight-decay", runs=[_run(ref.runs[0].val_scores.copy())])
    assert rc.combined(_m(ref, combined=flat), CFG, ["dropout", "weight-decay"]).status is Status.WARN


def _lm_result(name, rng, base, seeds, effect=0.0):
    """Per-window val cross-entropy of a language model's runs: each seed shifts the whole run
    (text-gpt.yaml measured 0.016 nats between seeds), windows jitter a little."""
    runs = []
    for i in range(seeds):
        ce = base + effect + rng.normal(0, 0.016) + rng.normal(0, 0.02, len(base))
        runs.append(
            Result(
                seed=i,
                val_scores=ce,
                val_loss=float(ce.mean()),
                val_metric=0.5,
                train_loss=1.8,
                train_metric=0.5,
                steps=500,
                diverged=False,
                evals=[],
            )
        )
    return SeedRuns(name, name, runs=runs)


def _lm_m(ref, *knobs):
    m = rc.RegularizeMeasurements(LANGUAGE_MODEL, n_val=700, reference=ref, knobs=list(knobs))
    m.seed_noise = m.measure_noise()
    return m


def test_language_model_knobs_are_judged_against_the_seed_spread():
    """A knob that changes nothing: its one seed differs from the reference's by a seed shift,
    which the per-window test alone calls a large effect; with the reference's three seeds the
    spread is measured and the knob is no effect. A real harm (dropout 0.2 on text-gpt.yaml:
    +0.19 nats) still hurts."""
    false_plain = false_seeded = 0
    for trial in range(30):
        rng = np.random.default_rng(trial)
        base = rng.gamma(4.0, 0.4, 700)
        ref = _lm_result("reference", rng, base, 3)
        same = _lm_result("weight-decay", rng, base, 1)
        m = _lm_m(ref, same)
        assert m.seed_noise is not None and m.seed_noise.df == 2
        false_plain += rc.effect(rc.compare(LANGUAGE_MODEL, ref, same)[0], CFG) != rc.NO_EFFECT
        v = rc.knob(m, same, CFG)
        false_seeded += v.observed["effect"] != rc.NO_EFFECT
        assert v.observed["reference_seeds"] == 3 and v.observed["seeds"] == 1 and v.observed["seed_df"] == 2
        assert "nats" in v.message and "vs the reference's 3" in v.message
    assert false_plain >= 20 and false_seeded <= 1
    rng = np.random.default_rng(99)
    base = rng.gamma(4.0, 0.4, 700)
    ref, harm = _lm_result("reference", rng, base, 3), _lm_result("dropout", rng, base, 3, effect=0.19)
    v = rc.knob(_lm_m(ref, harm), harm, CFG)
    assert v.status is Status.WARN and v.observed["effect"] == "hurt", v.observed


def test_a_diverged_reference_seed_fails_the_gap_and_the_knobs_use_the_finite_seeds():
    rng = np.random.default_rng(5)
    base = rng.gamma(4.0, 0.4, 700)
    ref, harm = _lm_result("reference", rng, base, 3), _lm_result("dropout", rng, base, 3, effect=0.5)
    ref.runs[2] = dataclasses.replace(ref.runs[2], val_scores=np.full(700, np.nan), diverged=True, seed=2)
    m = _lm_m(ref, harm)
    v = rc.knob(m, harm, CFG)
    assert v.observed["effect"] == "hurt" and v.observed["reference_seeds"] == 2, v.observed  # not "no effect" from NaN
    gap = rc.generalization_gap(m, CFG)
    assert gap.status is Status.FAIL and gap.observed["diverged_seeds"] == [2]


def _shifted(name, rng, difficulty, seeds, shift_sd):
    """A configuration at `seeds` seeds with no real effect: each run's per-example correctness
    around the examples' own difficulty, the whole run moved by a seed shift (SD in accuracy)."""
    runs = []
    for i in range(seeds):
        p = np.clip(difficulty + rng.normal(0.0, shift_sd), 0.0, 1.0)
        runs.append(_run((rng.random(len(p)) < p).astype(float), seed=i))
    return SeedRuns(name, name, runs=runs)


@pytest.mark.parametrize("shift_sd", [0.013, 0.02])
def test_knobs_with_no_effect_are_rarely_helped_or_hurt_once_the_seed_spread_is_counted(shift_sd):
    """The issue-25 simulation: n = 1000, ~80 % accuracy, a seed moves a whole run by 1.3 or 2
    points, three knobs with no effect. Judged on its first seed by McNemar, a knob "helped" or
    "hurt" in 3 % / 12 % of cases here; under the stage's policy now (every knob and the
    reference get a second seed, the ones within noise a third, the spread pooled and counted)
    at most the nominal two-sided 0.27 % plus 3 simulation SEs (600 runs: 0.9 %)."""
    sims, before, after = 600, 0, 0
    for k in range(sims):
        rng = np.random.default_rng(k)
        difficulty = np.clip(rng.beta(2.0, 0.5, N), 0, 1)  # mean accuracy ~0.8, easy and hard examples
        ref = _shifted("reference", rng, difficulty, 3, shift_sd)
        knobs = [_shifted(name, rng, difficulty, 3, shift_sd) for name in ("dropout", "weight-decay", "augmentation")]
        m = _m(ref, knobs=[SeedRuns(r.name, r.name, runs=r.runs[:1]) for r in knobs])
        before += rc.knob(m, m.knobs[0], CFG).observed["effect"] != "no effect"  # no spread yet: McNemar on one seed
        # round 1: every knob and the reference at two seeds; round 2: a third for those within noise
        m = _m(
            SeedRuns("reference", "reference", runs=ref.runs[:2]),
            knobs=[SeedRuns(r.name, r.name, runs=r.runs[:2]) for r in knobs],
        )
        m.seed_noise = m.measure_noise()
        for mine, full in zip(m.knobs, knobs):
            if rc.effect(rc.versus_reference(m, mine)[0], CFG) == rc.NO_EFFECT:
                mine.runs = full.runs
        m.reference.runs, m.seed_noise = ref.runs, None
        m.seed_noise = m.measure_noise()
        v = rc.knob(m, m.knobs[0], CFG)
        assert "seed_sd" in v.observed and v.observed["seeds"] >= 2
        after += v.observed["effect"] != "no effect"
    assert before / sims >= (0.01 if shift_sd < 0.015 else 0.05)  # the old rule's false alarms, reproduced
    assert after / sims <= 0.0027 + 3 * (0.0027 / sims) ** 0.5


def test_a_knob_with_one_seed_is_judged_against_the_measured_spread():
    """Knob A has one seed, B and C three: once the spread is measured, every knob counts it."""
    ref = _result("reference", 0.80, 0.80, 0.80)
    a = SeedRuns("dropout", "dropout", runs=[_run(np.ones(N))])
    b = _result("weight-decay", 0.80, 0.80, 0.80, base_seed=40)
    c = _result("augmentation", 0.80, 0.80, 0.80, base_seed=80)
    m = _m(ref, knobs=[a, b, c])
    assert rc.unseeded(m, a) and "the seed spread is not counted" in rc.knob(m, a, CFG).message
    m.seed_noise = m.measure_noise()
    va, vb = rc.knob(m, a, CFG), rc.knob(m, b, CFG)
    assert va.observed["effect"] == "helped" and va.observed["seed_df"] == 6 and not rc.unseeded(m, a)
    assert vb.observed["effect"] == "no effect" and vb.observed["seed_df"] == 6


def test_one_seed_everywhere_keeps_the_paired_test():
    ref = _result("reference", 0.8)
    knob = _result("dropout", 0.8, base_seed=50)
    m = _m(ref, knobs=[knob])
    m.seed_noise = m.measure_noise()
    assert m.seed_noise is None and "seed_sd" not in rc.knob(m, knob, CFG).observed


def _collapsed():
    from nnrecipe.probes.diagnosis import Collapse

    return Collapse(
        final_loss=2.3026,
        constant_loss=2.3026,
        settled_at=300,
        layer="head.1",
        layer_kind="ReLU, every output 0",
        alike=(64, 64),
    )


def test_a_knob_that_hurts_by_collapsing_the_model_says_so():
    ref = _result("reference", 0.80)
    worse = SeedRuns("dropout", "dropout 0.5", runs=[_run(ref.runs[0].val_scores * _scores(0.2, 9))])
    plain = rc.knob(_m(ref), worse, CFG)
    assert plain.status is Status.WARN and "same output" not in plain.message and "weaken it" in plain.hint
    collapsed = dataclasses.replace(worse, collapse=_collapsed())
    v = rc.knob(_m(ref), collapsed, CFG)
    assert v.status is Status.WARN and "every example gets the same output" in v.message and "head.1" in v.message
    assert "outputs 0 for every example" in v.hint and v.observed["alike_at"] == "head.1"


def test_a_collapsed_reference_fails_the_gap_with_its_cause():
    ref = _result("reference", 0.10)
    assert rc.generalization_gap(_m(ref), CFG).status is not Status.FAIL
    v = rc.generalization_gap(_m(dataclasses.replace(ref, collapse=_collapsed())), CFG)
    assert (
        v.status is Status.FAIL and "the reference collapsed" in v.message and v.observed["collapsed_from_step"] == 300
    )
