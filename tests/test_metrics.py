"""Metrics against small hand-checked cases; bootstrap determinism."""

import math

import numpy as np
import pytest

from ssnbench.data.labels import NUM_CLASSES
from ssnbench.metrics import bootstrap_ci, evaluate, mean_std, per_case_accuracy


def _onehot(pred, k, conf=0.9):
    p = np.full((len(pred), k), (1 - conf) / (k - 1))
    p[np.arange(len(pred)), pred] = conf
    return p


def _case():
    # 5 cases. DIAG truth: BCC, NEV, MEL, MEL, NEV (MISC and SK absent); predicted NEV, NEV, MEL, NEV, MEL
    y_diag, p_diag = [0, 1, 2, 2, 1], [1, 1, 2, 1, 2]
    labels = np.zeros((5, 8), dtype=int)
    labels[:, 0] = y_diag
    labels[:, 1] = [0, 1, 2, 0, 1]
    preds = np.zeros((5, 8), dtype=int)
    preds[:, 0] = p_diag
    preds[:, 1] = [0, 1, 2, 0, 0]  # PN: 4/5 correct; labels 2..7 all 0 and predicted 0 -> 5/5
    probs = [_onehot(preds[:, i], k) for i, k in enumerate(NUM_CLASSES)]
    return probs, labels


def test_evaluate_hand_checked():
    probs, labels = _case()
    m = evaluate(probs, labels)
    assert m["acc_DIAG"] == pytest.approx(2 / 5)
    assert m["acc_PN"] == pytest.approx(4 / 5)
    assert m["acc_RS"] == 1.0
    assert m["acc_avg"] == pytest.approx((0.4 + 0.8 + 6 * 1.0) / 8)
    # balanced accuracy over the classes present: recall BCC 0/1, NEV 1/2, MEL 1/2 -> 1/3
    assert m["diag_balanced_acc"] == pytest.approx(1 / 3)
    # MEL: TP 1 (case 2), FN 1 (case 3), FP 1 (case 4), TN 2 (cases 0, 1)
    assert m["mel_sensitivity"] == pytest.approx(0.5)
    assert m["mel_specificity"] == pytest.approx(2 / 3)
    # AUC only over the 3 present classes; absent ones are NaN
    assert m["diag_auc_n_classes"] == 3
    assert math.isnan(m["diag_auc_MISC"]) and math.isnan(m["diag_auc_SK"])
    # BCC: the single positive scored 0.025, negatives all 0.025 -> ties -> 0.5
    assert m["diag_auc_BCC"] == pytest.approx(0.5)
    # MEL: positives (cases 2, 3) score 0.9, 0.025; negatives 0.025, 0.025, 0.9 -> (3 + 0.5*2 + 0.5*1... )/6
    pos, neg = [0.9, 0.025], [0.025, 0.025, 0.9]
    mel = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg])
    assert m["diag_auc_MEL"] == pytest.approx(mel)
    assert m["diag_auc_macro"] == pytest.approx(np.mean([m["diag_auc_BCC"], m["diag_auc_NEV"], mel]))
    assert per_case_accuracy(probs, labels).mean() == pytest.approx(m["acc_avg"])


def test_evaluate_undefined_metrics_are_nan():
    labels = np.zeros((3, 8), dtype=int)  # only BCC: no MEL positives, one DIAG class
    probs = [_onehot(np.zeros(3, dtype=int), k) for k in NUM_CLASSES]
    m = evaluate(probs, labels)
    assert m["acc_avg"] == 1.0
    assert math.isnan(m["mel_sensitivity"]) and m["mel_specificity"] == 1.0
    assert math.isnan(m["diag_auc_macro"]) and m["diag_auc_n_classes"] == 0
    with pytest.raises(ValueError):
        evaluate(probs[:7], labels)


def test_bootstrap_ci_deterministic():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 9, size=60) / 8
    lo, hi = bootstrap_ci(x, seed=3, n_resamples=500)
    assert (lo, hi) == bootstrap_ci(x, seed=3, n_resamples=500)
    assert lo < x.mean() < hi
    assert bootstrap_ci(np.full(10, 0.5)) == (0.5, 0.5)
    assert all(math.isnan(v) for v in bootstrap_ci([0.5]))


def test_mean_std():
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    m, s = mean_std([0.7])
    assert m == 0.7 and math.isnan(s)
    assert mean_std([1.0, float("nan"), 3.0]) == pytest.approx((2.0, math.sqrt(2)))
