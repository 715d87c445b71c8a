"""causal-dependency and padding-invariance, judged on synthetic measurements."""

import numpy as np

from nnrecipe.checks.sequence_checks import causal_dependency, padding_invariance
from nnrecipe.probes.measurements import BaselineMeasurements
from nnrecipe.probes.sequence_probes import CausalMeasure, PaddingMeasure, PerturbMeasure, TargetLeak
from nnrecipe.spec_stages import BaselineSpec
from nnrecipe.tasks import CLASSIFICATION, LANGUAGE_MODEL, REGRESSION
from nnrecipe.verdict import Status

CFG = BaselineSpec()
N = [400_000] * 3
NATURAL = TargetLeak(lags=[0, 1, 2], rates=[0.10, 0.09, 0.10], natural=[0.10, 0.09, 0.10], n=N, chance=0.064)


def causal(future, reach, positions=(0, 20, 40, 62), length=64) -> CausalMeasure:
    return CausalMeasure(
        positions=list(positions),
        past=[1.0] * len(positions),
        future=list(future),
        first_future=[t + 1 if r else None for t, r in zip(positions, reach)],
        reach=list(reach),
        matrix=np.ones((len(positions), length)),
        length=length,
        windows=4,
    )


def lm(**kw) -> BaselineMeasurements:
    return BaselineMeasurements(task=LANGUAGE_MODEL, **kw)


def test_causal_model_on_shifted_text_passes():
    v = causal_dependency(lm(causal=causal([0] * 4, [0] * 4), leak=NATURAL), CFG)
    assert v.status is Status.PASS and v.observed["future_over_past_gradient"] == [0, 0, 0, 0]


def test_a_model_that_sees_the_future_fails():
    v = causal_dependency(lm(causal=causal([0.3, 0.2, 0.1, 0.05], [63, 43, 23, 1]), leak=NATURAL), CFG)
    assert v.status is Status.FAIL and "output 0 depends on input 1" in v.message and "shifted by one" not in v.message


def test_a_mask_shifted_by_one_is_named():
    v = causal_dependency(lm(causal=causal([0.5] * 4, [1] * 4), leak=NATURAL), CFG)
    assert v.status is Status.FAIL and "shifted by one" in v.message


def test_gradients_below_the_tolerance_pass():
    v = causal_dependency(lm(causal=causal([1e-8] * 4, [1] * 4), leak=NATURAL), CFG)
    assert v.status is Status.PASS


def test_targets_copied_from_the_inputs_fail_before_any_gradient():
    copy = TargetLeak(lags=[0, 1, 2], rates=[1.0, 0.09, 0.1], natural=[0.10, 0.09, 0.10], n=[10_000] * 3, chance=0.064)
    v = causal_dependency(lm(causal=causal([0] * 4, [0] * 4), leak=copy), CFG)
    assert v.status is Status.FAIL and "not shifted" in v.message
    wrong_way = TargetLeak(
        lags=[0, 1, 2], rates=[0.1, 0.97, 0.1], natural=[0.10, 0.09, 0.10], n=[10_000] * 3, chance=0.064
    )
    v = causal_dependency(lm(causal=causal([0] * 4, [0] * 4), leak=wrong_way), CFG)
    assert v.status is Status.FAIL and "wrong way" in v.message


def test_repetitive_but_correctly_shifted_data_passes():
    # Runs of repeated tokens: targets equal earlier inputs often, exactly as often as the inputs repeat.
    runs = TargetLeak(lags=[0, 1, 2], rates=[0.83, 0.68, 0.55], natural=[0.83, 0.68, 0.56], n=[5_000] * 3, chance=0.02)
    assert causal_dependency(lm(causal=causal([0] * 4, [0] * 4), leak=runs), CFG).status is Status.PASS


def test_an_excess_within_noise_of_the_margin_does_not_fail():
    # 0.40 vs a natural 0.10 on 200 positions: the intervals (0.34-0.47, 0.07-0.15) leave 0.19 < 0.2.
    near = TargetLeak(lags=[0], rates=[0.40], natural=[0.10], n=[200], chance=0.06)
    assert causal_dependency(lm(causal=causal([0] * 4, [0] * 4), leak=near), CFG).status is Status.PASS


def perturb(first_moved=(None,) * 4, receptive=64, positions=(0, 20, 40, 62)) -> PerturbMeasure:
    return PerturbMeasure(
        positions=list(positions),
        moved=[0.0 if f is None else 0.3 for f in first_moved],
        first_moved=list(first_moved),
        receptive=receptive,
        positional=True,
        matrix=np.ones((len(positions), 64)),
        length=64,
        windows=4,
    )


def test_without_an_embedding_changing_tokens_judges_the_model():
    v = causal_dependency(lm(perturb=perturb(receptive=3), causal_skip="no nn.Embedding", leak=NATURAL), CFG)
    assert v.status is Status.PASS and "tested by changing tokens" in v.message and "at most 3 tokens" in v.message
    assert v.observed["receptive_field"] == 3 and v.expected["perturbation_rtol"] == CFG.perturb_rtol
    v = causal_dependency(lm(perturb=perturb(first_moved=(0, 0, 0, None)), leak=NATURAL), CFG)
    assert v.status is Status.FAIL and "output 0 changes" in v.message and "after position 0" in v.message
    assert "3 of 4 positions" in v.message
    nothing = causal_dependency(lm(perturb=perturb(receptive=0), leak=NATURAL), CFG)
    assert nothing.status is Status.PASS and "no output reads any token" in nothing.message


def test_changing_tokens_catches_what_the_embedding_gradient_does_not_see():
    # e.g. a second path that reads the ids as floats: no gradient through the embedding, yet it looks ahead
    v = causal_dependency(
        lm(causal=causal([0] * 4, [0] * 4), perturb=perturb(first_moved=(0, 5, None, None)), leak=NATURAL), CFG
    )
    assert v.status is Status.FAIL and "when the tokens after position 0 change" in v.message


def test_unprobed_the_model_part_skips_but_the_data_part_still_judges():
    v = causal_dependency(lm(leak=NATURAL), CFG)
    assert v.status is Status.SKIP and "not probed" in v.message
    copy = TargetLeak(lags=[0], rates=[1.0], natural=[0.1], n=[10_000], chance=0.064)
    assert causal_dependency(lm(leak=copy), CFG).status is Status.FAIL


def test_padding_invariance_both_ways_and_skips():
    same = PaddingMeasure(loss_plain=2.5, loss_padded=2.5 + 1e-7, length=56, pad=8)
    assert padding_invariance(lm(padding=same), CFG).status is Status.PASS
    counted = PaddingMeasure(loss_plain=2.5, loss_padded=2.51, length=56, pad=8)
    v = padding_invariance(lm(padding=counted), CFG)
    assert v.status is Status.FAIL and "ignore_index" in v.hint
    assert padding_invariance(lm(padding=None, padding_skip="too short"), CFG).status is Status.SKIP
    assert padding_invariance(BaselineMeasurements(task=CLASSIFICATION), CFG).status is Status.SKIP
    assert causal_dependency(BaselineMeasurements(task=REGRESSION), CFG).status is Status.SKIP
