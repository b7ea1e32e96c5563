"""Pinned: the paired statistics against cases computed by hand (or exactly, without resampling).

Pairing matters when two models are right and wrong on mostly the same cases: the difference of
their per-case scores then varies far less than either score, and a comparison that resamples the
two models independently gives an interval several times too wide. The expected values below come
from the binomial/multinomial distribution of the ideal bootstrap, not from the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from ssnbench.metrics import bootstrap_ci, mean_std, paired_bootstrap


def _correlated(n: int = 400, right: int = 280, flipped: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Model A right on the first `right` cases; B the same except wrong on `flipped` of them."""
    a = np.zeros(n)
    a[:right] = 1.0
    b = a.copy()
    b[:flipped] = 0.0
    return a, b


def test_paired_interval_of_correlated_models_is_narrow() -> None:
    a, b = _correlated()
    out = paired_bootstrap(a, b, n_resamples=4000, seed=1)
    assert out["diff"] == pytest.approx(0.05)  # 20 of 400 cases
    # ideal bootstrap: 400 * mean ~ Binomial(400, 0.05); its 2.5% and 97.5% quantiles
    lo, hi = sps.binom.ppf([0.025, 0.975], 400, 0.05) / 400
    assert out["ci_low"] == pytest.approx(lo, abs=0.0051) and out["ci_high"] == pytest.approx(hi, abs=0.0051)
    # unpaired, the interval would be ~0.065 wide on each side and include 0
    assert out["ci_high"] - out["ci_low"] < 0.05 and out["ci_low"] > 0
    assert out["p_value"] < 0.005 and out["frac_a_better"] > 0.99
    assert out["n_cases"] == 400


def _exact_bootstrap(n: int, plus: int, minus: int) -> tuple[float, float]:
    """(P(D* <= 0), P(D* >= 0)) of the ideal bootstrap of a difference with `plus` cases at +1,
    `minus` at -1 and the rest 0: D* = X+ - X-, with (X+, X-, X0) multinomial."""
    p_plus, p_minus = plus / n, minus / n
    i = np.arange(n + 1)
    pmf_plus = sps.binom.pmf(i, n, p_plus)
    le = ge = 0.0
    for xp, w in zip(i, pmf_plus, strict=True):
        rest = n - xp
        q = sps.binom.pmf(np.arange(rest + 1), rest, p_minus / (1 - p_plus))  # X- given X+ = xp
        le += w * q[xp:].sum()  # X- >= X+
        ge += w * q[: xp + 1].sum()  # X- <= X+
    return le, ge


def test_paired_p_value_is_two_sided_and_matches_the_exact_bootstrap() -> None:
    n, plus, minus = 100, 12, 6
    a = np.zeros(n)
    b = np.zeros(n)
    a[:plus] = 1.0  # A right, B wrong
    b[plus : plus + minus] = 1.0  # B right, A wrong
    le, ge = _exact_bootstrap(n, plus, minus)
    expected = 2 * min(le, ge)  # two-sided: 2·min(P*(D <= 0), P*(D >= 0))
    assert 0.12 < expected < 0.20  # about 1.4 standard errors: clearly not one-sided's ~0.08
    assert le + ge - 1 > 0.03  # P*(D = 0): what separates "<= 0" from "< 0" below
    out = paired_bootstrap(a, b, n_resamples=4000, seed=0)
    assert out["diff"] == pytest.approx(0.06)
    assert out["p_value"] == pytest.approx(expected, abs=0.025)
    assert out["frac_a_better"] == pytest.approx(1 - le, abs=0.02)  # P*(D > 0), ties not counted
    back = paired_bootstrap(b, a, n_resamples=4000, seed=0)
    assert back["diff"] == pytest.approx(-0.06)
    assert back["p_value"] == pytest.approx(expected, abs=0.025)
    assert back["frac_a_better"] == pytest.approx(1 - out["frac_a_better"], abs=0.05)


def test_paired_degenerate_cases() -> None:
    same = np.array([1.0, 0.0, 1.0, 1.0])
    out = paired_bootstrap(same, same)
    assert (out["diff"], out["ci_low"], out["ci_high"], out["p_value"]) == (0.0, 0.0, 0.0, 1.0)
    shifted = paired_bootstrap(same, same - 0.25)  # every case differs by the same amount
    assert (shifted["diff"], shifted["ci_low"], shifted["ci_high"], shifted["p_value"]) == (
        0.25,
        0.25,
        0.25,
        0.0,
    )
    assert shifted["frac_a_better"] == 1.0
    with pytest.raises(ValueError):
        paired_bootstrap(same, same[:3])
    one = paired_bootstrap(np.array([1.0]), np.array([0.0]))  # one case: no spread, no p
    assert (one["diff"], one["ci_low"], one["ci_high"], one["frac_a_better"]) == (1.0, 1.0, 1.0, 1.0)
    assert np.isnan(one["p_value"]) and one["n_cases"] == 1
    none = paired_bootstrap(np.array([]), np.array([]))
    assert none["n_cases"] == 0 and all(np.isnan(none[k]) for k in ("diff", "p_value", "frac_a_better"))


def test_paired_defaults_are_95_percent_2000_resamples_seed_0() -> None:
    a, b = _correlated(n=60, right=40, flipped=6)
    b[50] = 1.0  # one case for B
    out = paired_bootstrap(a, b)
    assert out == paired_bootstrap(a, b, confidence=0.95, n_resamples=2000, seed=0)
    assert out["confidence"] == 0.95
    assert out != paired_bootstrap(a, b, seed=1) and out != paired_bootstrap(a, b, n_resamples=1999)


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
    assert mean_std([0.7, None, 0.9]) == pytest.approx((0.8, np.sqrt(0.02)))  # a missing seed, two left
    m1, s1 = mean_std([0.75])
    assert m1 == 0.75 and np.isnan(s1)
    assert all(np.isnan(v) for v in mean_std([]))
