"""ssnbench.stats against known cases: planted shifts, hand-worked Holm, seed variance, pairing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from ssnbench.stats import (
    Interval,
    binary_rates,
    bootstrap_metric,
    holm,
    mcnemar_exact,
    multiclass_balanced_accuracy,
    non_inferiority,
    ovr_macro_auc,
    paired_difference,
    sign_flip_test,
    two_level_bootstrap,
)


def test_sign_flip_rejects_a_planted_shift_and_not_identical_models():
    rng = np.random.default_rng(0)
    base = rng.binomial(1, 0.7, size=(3, 300)).astype(float)
    better = np.clip(base + (rng.random((3, 300)) < 0.12), 0, 1)  # ~+4 points on the same cases
    shifted = paired_difference(better, base, n_permutations=2000)
    assert shifted.p_value < 0.01
    assert shifted.diff.low > 0
    same = paired_difference(base, base.copy(), n_permutations=2000)
    assert same.p_value == 1.0 and same.diff.estimate == 0.0
    noise = paired_difference(base, rng.permutation(base, axis=0), n_permutations=2000)
    assert noise.p_value > 0.05  # the same model under another seed order: no difference


def test_sign_flip_exact_for_few_cases():
    # 4 positive differences: the two most extreme of the 16 sign patterns -> p = 2/16
    p, n_perm = sign_flip_test(np.array([1.0, 2.0, 3.0, 4.0]))
    assert n_perm == 0 and p == pytest.approx(2 / 16)


def test_holm_hand_worked():
    # m = 4, sorted 0.01 0.02 0.03 0.04 -> 4*0.01=0.04, 3*0.02=0.06, 2*0.03=0.06, 1*0.04=0.04 -> monotone 0.06
    p = [0.03, 0.01, 0.04, 0.02]
    assert holm(p) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm([0.5, math.nan, 0.01]) == pytest.approx([0.5, math.nan, 0.02], nan_ok=True)
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # 2*0.8 capped at 1; monotone
    assert holm([]) == []


def test_two_level_width_grows_with_seed_variance():
    rng = np.random.default_rng(1)
    cases = rng.binomial(1, 0.7, size=400).astype(float)
    calm = cases[None] + rng.normal(0, 0.005, (5, 1))
    noisy = cases[None] + rng.normal(0, 0.06, (5, 1))
    w_calm = two_level_bootstrap(calm)
    w_noisy = two_level_bootstrap(noisy)
    assert w_calm.levels == w_noisy.levels == "seeds+cases"
    assert (w_noisy.high - w_noisy.low) > 1.5 * (w_calm.high - w_calm.low)
    one = two_level_bootstrap(cases)
    assert one.levels == "cases" and one.n_seeds == 1
    assert one.low < cases.mean() < one.high


def test_pairing_narrows_the_ci_of_correlated_models():
    rng = np.random.default_rng(2)
    a = rng.binomial(1, 0.7, size=(2, 400)).astype(float)
    b = a.copy()
    flip = rng.random(a.shape) < 0.05
    b[flip] = 1 - b[flip]  # B agrees with A on ~95% of cases
    paired = paired_difference(a, b).diff
    unpaired = paired_difference(a, b, paired=False).diff
    assert (paired.high - paired.low) < 0.5 * (unpaired.high - unpaired.low)


def test_mcnemar_exact():
    a = np.array([1] * 10 + [0] * 2 + [1] * 20)
    b = np.array([0] * 10 + [1] * 2 + [1] * 20)
    out = mcnemar_exact(a, b)
    assert (out["a_only"], out["b_only"]) == (10, 2)
    assert out["p_value"] == pytest.approx(0.03857, abs=1e-4)  # 2 * P(Bin(12, .5) <= 2)
    assert mcnemar_exact(a, a)["p_value"] == 1.0


def test_non_inferiority_verdicts():
    def iv(lo, hi):
        return Interval((lo + hi) / 2, lo, hi, 0.95, "cases", 1, 100)

    assert non_inferiority(iv(-0.005, 0.02)) == "supported"
    assert non_inferiority(iv(-0.03, 0.02)) == "not resolved"
    assert non_inferiority(iv(-0.05, -0.02)) == "contradicted"
    assert non_inferiority(iv(-0.03, 0.02), margin=0.04) == "supported"


def test_vectorised_metrics_match_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 5, 200)
    prob = rng.dirichlet(np.ones(5), 200)
    prob[np.arange(200), y] += 0.3
    pred = prob.argmax(1)
    assert multiclass_balanced_accuracy(y, pred, 5) == pytest.approx(balanced_accuracy_score(y, pred))
    ref = np.mean([roc_auc_score(y == k, prob[:, k]) for k in range(5)])
    assert ovr_macro_auc(y, prob) == pytest.approx(ref)
    sens, spec = binary_rates(y, pred, 2)
    assert sens == pytest.approx(np.mean(pred[y == 2] == 2))
    assert spec == pytest.approx(np.mean(pred[y != 2] != 2))


def test_bootstrap_metric_interval():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 300)
    pred = np.where(rng.random((2, 300)) < 0.6, y[None], rng.integers(0, 3, (2, 300)))
    iv = bootstrap_metric(lambda t, p: multiclass_balanced_accuracy(t, p, 3), y, pred, n_resamples=500)
    assert iv.levels == "seeds+cases"
    assert iv.low < iv.estimate < iv.high
    assert iv.estimate == pytest.approx(np.mean([balanced_accuracy_score(y, p) for p in pred]))
