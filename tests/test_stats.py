"""The seed-aware comparison: separately trained models differ by seed, and a paired test over
val examples alone mistakes that for an effect (measured on the CPython-docs GPT: z = 12
between two seeds of one configuration)."""

import math

import numpy as np

from nnrecipe.stats import SeedNoise, paired_z, seed_noise, seeded_z, t_as_z

WINDOWS = 700  # text-gpt.yaml's val windows (64 characters each)
SEED_SD = 0.016  # nats per token: measured between 4 seeds of text-gpt.yaml at 500 steps


def _runs(rng, base, seeds, effect=0.0):
    """Per-window cross-entropy of `seeds` runs: the window's difficulty, a shift of the whole
    run by its seed, and a little per-window jitter (which the paired test sees)."""
    return np.stack([base + effect + rng.normal(0, SEED_SD) + rng.normal(0, 0.02, len(base)) for _ in range(seeds)])


def test_seed_noise_pools_configurations_with_two_seeds_or_more():
    noise = seed_noise([[1.0, 2.0, 3.0], [5.0], [2.0, 4.0]])
    assert noise.df == 3 and noise.configurations == 2 and math.isclose(noise.var, (2.0 + 2.0) / 3)
    assert seed_noise([[1.0], [2.0]]) is None


def test_t_becomes_z_with_the_same_tail():
    assert math.isclose(t_as_z(3.0, 1e9), 3.0)
    assert 2.95 < t_as_z(19.2, 2) < 3.05  # two degrees of freedom ask for a much larger t
    assert t_as_z(-4.0, 10) < -2.5 and t_as_z(-4.0, 10) > -4.0


def test_same_configuration_different_seeds_is_no_effect_beyond_noise():
    rng = np.random.default_rng(0)
    false_plain = false_seeded = 0
    for _ in range(200):
        base = rng.gamma(4.0, 0.4, WINDOWS)
        a, b = _runs(rng, base, 3), _runs(rng, base, 3)
        noise = seed_noise([a.mean(axis=1), b.mean(axis=1)])
        false_plain += abs(paired_z(b.mean(axis=0), a.mean(axis=0))) >= 3
        false_seeded += abs(seeded_z(a, b, noise)) >= 3
    assert false_plain > 100  # the per-window test alone calls most seed differences real
    assert false_seeded <= 4  # ~0.3% expected at |z| >= 3


def test_a_real_effect_stands_out_against_the_seed_spread():
    rng = np.random.default_rng(1)
    base = rng.gamma(4.0, 0.4, WINDOWS)
    ref, worse = _runs(rng, base, 3), _runs(rng, base, 3, effect=0.2)  # dropout 0.2 on text-gpt: +0.19 nats
    noise = seed_noise([ref.mean(axis=1), worse.mean(axis=1)])
    assert seeded_z(ref, worse, noise) >= 3  # "ref has the lower error"
    assert seeded_z(worse, ref, noise) <= -3


def test_a_seed_spread_of_zero_leaves_the_paired_test_as_it_was():
    rng = np.random.default_rng(2)
    a, b = rng.random(500), rng.random(500) + 0.05
    # the same statistic, read as Student's t with 499 degrees of freedom: 3.56 vs 3.58
    assert math.isclose(seeded_z(a, b, SeedNoise(0.0, 10, 2)), paired_z(a, b), rel_tol=0.01)
