"""Pinned: the paired statistics against cases computed by hand (or exactly, without resampling).

Pairing matters when two models are right and wrong on mostly the same cases: the difference of
their per-case scores then varies far less than either score, and a comparison that resamples the
two models independently gives an interval several times too wide. The expected values below come
from the binomial distribution of the ideal bootstrap or of the exact sign-flip test, not from the
code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from ssnbench.metrics import bootstrap_ci, mean_std
from ssnbench.stats import paired_difference


def _correlated(n: int = 400, right: int = 280, flipped: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Model A right on the first `right` cases; B the same except wrong on `flipped` of them."""
    a = np.zeros(n)
    a[:right] = 1.0
    b = a.copy()
    b[:flipped] = 0.0
    return a, b


def test_paired_interval_of_correlated_models_is_narrow() -> None:
    a, b = _correlated()
    out = paired_difference(a, b, n_resamples=4000, seed=1)
    assert out.diff.estimate == pytest.approx(0.05)  # 20 of 400 cases
    assert out.diff.levels == "cases"  # one seed: the two-level bootstrap falls back to cases
    # ideal bootstrap: 400 * mean ~ Binomial(400, 0.05); its 2.5% and 97.5% quantiles
    lo, hi = sps.binom.ppf([0.025, 0.975], 400, 0.05) / 400
    assert out.diff.low == pytest.approx(lo, abs=0.0051) and out.diff.high == pytest.approx(hi, abs=0.0051)
    # unpaired, the interval would be ~0.065 wide on each side and include 0
    assert out.diff.high - out.diff.low < 0.05 and out.diff.low > 0
    assert out.p_value < 0.005
    assert out.diff.n_cases == 400


def test_paired_p_value_is_two_sided_and_matches_the_exact_sign_flip_test() -> None:
    # With per-case differences of +1 (`plus` cases), -1 (`minus`) and 0, flipping signs makes the
    # sum 2·Binomial(plus + minus, 1/2) - (plus + minus): the exact two-sided p is the binomial
    # (McNemar) test of plus successes in plus + minus trials.
    n, plus, minus = 100, 12, 6
    a = np.zeros(n)
    b = np.zeros(n)
    a[:plus] = 1.0  # A right, B wrong
    b[plus : plus + minus] = 1.0  # B right, A wrong
    expected = sps.binomtest(plus, plus + minus, 0.5).pvalue
    assert 0.2 < expected < 0.3
    out = paired_difference(a, b, n_permutations=9999, seed=0)
    assert out.diff.estimate == pytest.approx(0.06)
    assert out.p_value == pytest.approx(expected, abs=0.015)
    back = paired_difference(b, a, n_permutations=9999, seed=0)
    assert back.diff.estimate == pytest.approx(-0.06)
    assert back.p_value == pytest.approx(expected, abs=0.015)


def test_paired_degenerate_cases() -> None:
    same = np.array([1.0, 0.0, 1.0, 1.0])
    out = paired_difference(same, same)
    assert (out.diff.estimate, out.diff.low, out.diff.high, out.p_value) == (0.0, 0.0, 0.0, 1.0)
    shifted = paired_difference(same, same - 0.25)  # every case differs by the same amount
    assert (shifted.diff.estimate, shifted.diff.low, shifted.diff.high) == (0.25, 0.25, 0.25)
    # 4 cases: all 16 sign patterns enumerated, the two extreme ones reach |mean| = 0.25
    assert shifted.p_value == pytest.approx(2 / 16) and shifted.n_permutations == 0
    with pytest.raises(ValueError):
        paired_difference(same, same[:3])
    one = paired_difference(np.array([1.0]), np.array([0.0]))  # one case: no spread; both signs as extreme
    assert one.diff.estimate == 1.0 and np.isnan(one.diff.low) and one.diff.levels == "none"
    assert one.p_value == 1.0 and one.diff.n_cases == 1
    none = paired_difference(np.array([]), np.array([]))
    assert none.diff.n_cases == 0 and np.isnan(none.diff.estimate) and np.isnan(none.p_value)


def test_paired_defaults_are_95_percent_2000_resamples_9999_permutations_seed_0() -> None:
    a, b = _correlated(n=60, right=40, flipped=6)
    b[50] = 1.0  # one case for B
    out = paired_difference(a, b)
    assert out == paired_difference(a, b, confidence=0.95, n_resamples=2000, n_permutations=9999, seed=0)
    assert out.diff.confidence == 0.95 and out.n_permutations == 9999
    assert out != paired_difference(a, b, seed=1) and out != paired_difference(a, b, n_permutations=999)


def test_bootstrap_ci_of_a_proportion() -> None:
    x = np.zeros(200)
    x[:80] = 1.0  # 40%
    lo, hi = bootstrap_ci(x, n_resamples=4000, seed=2)
    elo, ehi = sps.binom.ppf([0.025, 0.975], 200, 0.4) / 200
    assert lo == pytest.approx(elo, abs=0.0101) and hi == pytest.approx(ehi, abs=0.0101)
    assert bootstrap_ci(np.ones(5)) == (1.0, 1.0)
    assert all(np.isnan(v) for v in bootstrap_ci(np.array([0.3])))


def test_mean_std_over_seeds() -> None:
    m, s = mean_std([0.7, 0.8, float("nan"), 0.9])
    assert m == pytest.approx(0.8) and s == pytest.approx(0.1)  # sample std (ddof=1), NaN ignored
    m1, s1 = mean_std([0.75])
    assert m1 == 0.75 and np.isnan(s1)
    assert all(np.isnan(v) for v in mean_std([]))


# ---------------------------------------------------------------------------------------------
# ssnbench.stats (what the report uses): the same cases, and exact small cases by hand


def test_paired_difference_pairs_the_cases() -> None:
    from ssnbench.stats import paired_difference

    a, b = _correlated()
    paired = paired_difference(a[None], b[None], n_resamples=4000, seed=1)
    lo, hi = sps.binom.ppf([0.025, 0.975], 400, 0.05) / 400
    assert paired.diff.estimate == pytest.approx(0.05)
    assert paired.diff.low == pytest.approx(lo, abs=0.0051) and paired.diff.high == pytest.approx(
        hi, abs=0.0051
    )
    unpaired = paired_difference(a[None], b[None], n_resamples=4000, seed=1, paired=False)
    assert unpaired.diff.high - unpaired.diff.low > 2.5 * (paired.diff.high - paired.diff.low)
    assert paired.p_value < 0.001  # 20 discordant cases, all for A


def test_sign_flip_mcnemar_and_holm_by_hand() -> None:
    from ssnbench.stats import holm, mcnemar_exact, sign_flip_test

    assert sign_flip_test(np.ones(5)) == (pytest.approx(2 / 32), 0)  # exact: only all-+ and all-- as extreme
    assert sign_flip_test(np.array([1.0, 1, 1, 1, -1]))[0] == pytest.approx(12 / 32)  # |sum| >= 3
    correct_a = np.array([1] * 10 + [0] * 2 + [1] * 5)
    correct_b = np.array([0] * 10 + [1] * 2 + [1] * 5)
    out = mcnemar_exact(correct_a, correct_b)
    assert (out["a_only"], out["b_only"]) == (10, 2)
    assert out["p_value"] == pytest.approx(2 * (1 + 12 + 66) / 4096)  # 2·P(X <= 2), X ~ Bin(12, 1/2)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_paired_seed_picks_the_bootstrap_resamples() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(60)
    b = a - 0.1 * rng.random(60)  # continuous scores: every resample set gives other quantiles
    one, other = paired_difference(a, b, seed=0).diff, paired_difference(a, b, seed=1).diff
    assert one.estimate == other.estimate and (one.low, one.high) != (other.low, other.high)
    assert paired_difference(a, b, seed=1).diff == other  # and the same seed, the same interval


def test_unpaired_comparison_has_the_same_degenerate_cases() -> None:
    one = paired_difference(np.array([1.0]), np.array([0.0]), paired=False).diff
    assert (one.estimate, one.confidence, one.levels, one.n_seeds, one.n_cases) == (1.0, 0.95, "none", 1, 1)
    assert np.isnan(one.low) and np.isnan(one.high)
    two = paired_difference(np.array([1.0, 0.0]), np.array([0.0, 0.0]), paired=False).diff
    assert two.levels == "cases" and two.low <= 0.5 <= two.high  # two cases: an interval


def test_unpaired_interval_fields_centre_and_seed() -> None:
    # The unpaired comparison (the reference the paired CI is measured against) is a difference of
    # independent two-level bootstraps: centred on A - B, labelled by its levels, seeded.
    rng = np.random.default_rng(1)
    a = rng.random((2, 80))
    b = rng.random((2, 80))
    out = paired_difference(a, b, confidence=0.9, paired=False, seed=3).diff
    assert out.estimate == pytest.approx(a.mean() - b.mean())
    assert out.low < out.estimate < out.high and out.high - out.low < 0.2
    assert (out.confidence, out.levels, out.n_seeds, out.n_cases) == (0.9, "seeds+cases", 2, 80)
    assert paired_difference(a[:1], b[:1], paired=False).diff.levels == "cases"  # one seed
    same = paired_difference(a, a, paired=False).diff  # identical models: the CI straddles 0
    assert same.low < 0 < same.high and abs(same.low + same.high) < 0.05
    assert paired_difference(a, b, confidence=0.9, paired=False, seed=3).diff == out  # same seed, same CI
    other = paired_difference(a, b, confidence=0.9, paired=False, seed=4).diff
    assert (other.low, other.high) != (out.low, out.high)


def test_sign_flip_monte_carlo_counts_every_pattern_once() -> None:
    from ssnbench.stats import sign_flip_test

    # Mean 0: every random pattern is as extreme, so p is exactly (1 + R) / (1 + R) = 1. R = 2500
    # spans three chunks of 1000 (the last one partial), so every pattern is drawn exactly once.
    zero_mean = np.tile([1.0, -1.0], 10)
    assert sign_flip_test(zero_mean, n_permutations=2500) == (1.0, 2500)
    # All of one sign: (practically) no random pattern is as extreme, so p is exactly 1 / (1 + R).
    assert sign_flip_test(np.ones(20), n_permutations=2500) == (pytest.approx(1 / 2501), 2500)


def test_sign_flip_exact_path_and_degenerate_inputs_report_no_random_patterns() -> None:
    from ssnbench.stats import sign_flip_test

    assert sign_flip_test(np.ones(13)) == (pytest.approx(2 / 2**13), 0)  # 2^13 <= 9999: exact
    assert sign_flip_test(np.ones(3), n_permutations=8) == (pytest.approx(2 / 8), 0)  # 2^N == R: exact
    assert sign_flip_test(np.ones(14))[1] == 9999  # 2^14 > 9999: Monte Carlo
    assert sign_flip_test(np.zeros(20)) == (1.0, 0)
    p, n = sign_flip_test(np.array([]))
    assert np.isnan(p) and n == 0
