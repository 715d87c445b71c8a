"""The squeeze rules on synthetic measurements, both ways."""

import numpy as np

from nnrecipe.checks import squeeze_checks as sc
from nnrecipe.experiments import Result
from nnrecipe.spec_stages import SqueezeSpec
from nnrecipe.stats import seed_noise
from nnrecipe.tasks import CLASSIFICATION
from nnrecipe.verdict import Status

CFG = SqueezeSpec()
N = 1000


def _scores(p, seed):
    return (np.random.default_rng(seed).random(N) < p).astype(float)


def _run(scores, *, diverged=False, steps=1000, val_loss=0.5):
    return Result(
        seed=0,
        val_scores=scores,
        val_loss=val_loss,
        val_metric=float(scores.mean()),
        train_loss=0.1,
        train_metric=1.0,
        steps=steps,
        diverged=diverged,
        evals=[],
    )


def _members(k=5):
    return [_run(_scores(0.8, i)) for i in range(k)]


def test_ensemble_gain_both_ways():
    members = _members()
    better = np.maximum(members[0].val_scores, _scores(0.6, 99))
    v = sc.ensemble_gain(
        sc.SqueezeMeasurements(CLASSIFICATION, members=members, ensemble_scores=better, disagreement=0.2), CFG
    )
    assert v.status is Status.PASS and "gains beyond noise" in v.message and v.observed["z_vs_average_member"] >= 3
    same = members[0].val_scores.copy()
    same = members[0].val_scores.copy()  # as good as one member, no better
    v = sc.ensemble_gain(
        sc.SqueezeMeasurements(CLASSIFICATION, members=members, ensemble_scores=same, disagreement=0.2), CFG
    )
    assert v.status is Status.PASS and "no gain" in v.message, v.message
    copies = [_run(members[0].val_scores.copy()) for _ in range(5)]
    v = sc.ensemble_gain(
        sc.SqueezeMeasurements(
            CLASSIFICATION, members=copies, ensemble_scores=same, disagreement=0.0, output_spread=1e-7
        ),
        CFG,
    )
    assert v.status is Status.WARN and "identical" in v.message
    all_right = [
        _run(np.ones(N)) for _ in range(5)
    ]  # an easy task: every member right everywhere, yet different networks
    v = sc.ensemble_gain(
        sc.SqueezeMeasurements(
            CLASSIFICATION, members=all_right, ensemble_scores=np.ones(N), disagreement=0.0, output_spread=0.3
        ),
        CFG,
    )
    assert v.status is Status.PASS
    worse = members[0].val_scores * _scores(0.7, 5)
    v = sc.ensemble_gain(
        sc.SqueezeMeasurements(CLASSIFICATION, members=members, ensemble_scores=worse, disagreement=0.2), CFG
    )
    assert v.status is Status.WARN and "worse than its average member" in v.message
    members[2] = _run(_scores(0.1, 3), diverged=True)
    assert (
        sc.ensemble_gain(sc.SqueezeMeasurements(CLASSIFICATION, members=members, ensemble_scores=better), CFG).status
        is Status.FAIL
    )


def test_distillation_both_ways():
    hard = _run(_scores(0.7, 1))
    ens = np.maximum(hard.val_scores, _scores(0.7, 2))
    soft = _run(np.maximum(hard.val_scores, _scores(0.4, 3)))
    m = sc.SqueezeMeasurements(CLASSIFICATION, members=_members(), ensemble_scores=ens, student=soft, hard=hard)
    v = sc.distillation(m, CFG)
    assert v.status is Status.PASS and "beats" in v.message and 0 < v.observed["fraction_of_ensemble_gain_kept"] <= 1.5
    m.student = _run(hard.val_scores * _scores(0.7, 4))
    assert sc.distillation(m, CFG).status is Status.WARN
    m.student = _run(hard.val_scores, diverged=True)
    assert sc.distillation(m, CFG).status is Status.FAIL
    assert sc.distillation(sc.SqueezeMeasurements(CLASSIFICATION, distill_skip="off"), CFG).status is Status.SKIP


def test_longer_training_both_ways():
    before = _run(_scores(0.8, 1), steps=1000)
    after = _run(np.maximum(before.val_scores, _scores(0.5, 2)), steps=1000)
    m = sc.SqueezeMeasurements(
        CLASSIFICATION, longer_before=before, longer_after=after, recorded_val_loss=0.5, reloaded_val_loss=0.5
    )
    v = sc.longer_training(m, CFG)
    assert v.status is Status.PASS and "leave it training" in v.message
    m.reloaded_val_loss = 0.7  # the checkpoint did not bring the model back
    v = sc.longer_training(m, CFG)
    assert v.status is Status.FAIL and "does not restore" in v.message
    m.reloaded_val_loss, m.longer_after = 0.5, _run(before.val_scores, diverged=True)
    assert sc.longer_training(m, CFG).status is Status.FAIL
    assert sc.longer_training(sc.SqueezeMeasurements(CLASSIFICATION, longer_skip="off"), CFG).status is Status.SKIP


def test_distillation_counts_the_seed_spread_of_the_members():
    # No real difference between soft and hard targets, but a seed moves a whole run by 2 points
    # (n = 1000, ~80 %): McNemar on the two single runs calls the student "worse" (a warn) in
    # ~6 % of cases; against the members' seed spread (5 seeds), at most the nominal one-sided
    # 0.135 % + 3 SEs over 600.
    rng = np.random.default_rng(0)

    def run(difficulty):
        p = np.clip(difficulty + rng.normal(0.0, 0.02), 0, 1)
        return _run((rng.random(N) < p).astype(float))

    sims, before, after = 600, 0, 0
    for _ in range(sims):
        difficulty = rng.beta(2.0, 0.5, N)
        members = [run(difficulty) for _ in range(5)]
        m = sc.SqueezeMeasurements(
            CLASSIFICATION,
            members=members,
            ensemble_scores=members[0].val_scores,
            student=run(difficulty),
            hard=run(difficulty),
        )
        before += sc.distillation(m, CFG).status is Status.WARN
        m.seed_noise = seed_noise([np.stack([1 - r.val_scores for r in members])])
        v = sc.distillation(m, CFG)
        assert v.observed["seed_df"] == 4
        after += v.status is Status.WARN
    assert before / sims >= 0.03
    assert after / sims <= 0.00135 + 3 * (0.00135 / sims) ** 0.5


def _collapsed(step=400):
    from nnrecipe.probes.diagnosis import Collapse

    return Collapse(final_loss=2.3026, constant_loss=2.3026, settled_at=step, lowest=(100, 0.4), alike=(64, 64))


def test_a_collapsed_member_or_longer_run_is_named():
    members = _members()
    ens = np.maximum(members[0].val_scores, _scores(0.6, 99))
    m = sc.SqueezeMeasurements(CLASSIFICATION, members=members, ensemble_scores=ens)
    assert sc.ensemble_gain(m, CFG).status is Status.PASS
    m.collapsed = {3: _collapsed()}
    v = sc.ensemble_gain(m, CFG)
    assert v.status is Status.WARN and "member(s) [3] collapsed" in v.message and "lower the LR" in v.hint
    before = _run(_scores(0.8, 1))
    m = sc.SqueezeMeasurements(
        CLASSIFICATION,
        longer_before=before,
        longer_after=_run(_scores(0.1, 2)),
        recorded_val_loss=0.5,
        reloaded_val_loss=0.5,
    )
    assert "collapsed" not in sc.longer_training(m, CFG).message
    m.longer_collapse = _collapsed(1200)
    v = sc.longer_training(m, CFG)
    assert (
        v.status is Status.WARN and "training on collapsed the model" in v.message and "after reaching 0.4" in v.message
    )
