"""Test-split metrics for Derm7pt models, with the uncertainty that ~395 test cases imply.

Everything is computed with scikit-learn / scipy (no hand-written metric code) on plain numpy:
`probs` is a list of 8 arrays [N, K_i] (one per label, in LABELS order; e.g. the output of
`losses.combine_probabilities`), `labels` is an int array [N, 8]. Predictions are the argmax.

* `evaluate`: per-label accuracy (`acc_<LABEL>`), their unweighted mean (`acc_avg`, the literature's
  "average accuracy"), DIAG balanced accuracy, DIAG macro one-vs-rest AUC (and per class), melanoma
  sensitivity/specificity. A DIAG class absent from the test labels has no AUC: the macro AUC is
  taken over the classes present and `diag_auc_n_classes` says how many that was (NaN if < 1).
* `bootstrap_ci`: percentile/BCa CI of the mean of per-case scores (scipy.stats.bootstrap).
Paired comparisons, seed-aware intervals and tests live in `ssnbench.stats`.
* `mean_std`: mean ± sample std over seeds.
All randomness comes from an explicit seed, so the same inputs give the same numbers.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, roc_auc_score

from ssnbench.data.labels import CLASSES, LABELS, MEL_INDEX, NUM_CLASSES

__all__ = [
    "bootstrap_ci",
    "evaluate",
    "mean_std",
    "per_case_accuracy",
    "predictions",
]

DIAG_CLASSES: tuple[str, ...] = CLASSES["DIAG"]


def _check(probs: Sequence[np.ndarray], labels: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    probs = [np.asarray(p, dtype=np.float64) for p in probs]
    labels = np.asarray(labels)
    if len(probs) != len(LABELS):
        raise ValueError(f"expected {len(LABELS)} probability arrays, got {len(probs)}")
    if labels.ndim != 2 or labels.shape[1] != len(LABELS):
        raise ValueError(f"labels must be [N, {len(LABELS)}], got {labels.shape}")
    for i, (p, k) in enumerate(zip(probs, NUM_CLASSES, strict=True)):
        if p.shape != (labels.shape[0], k):
            raise ValueError(f"probs[{i}] ({LABELS[i]}) must be [{labels.shape[0]}, {k}], got {p.shape}")
    return probs, labels.astype(np.int64)


def predictions(probs: Sequence[np.ndarray]) -> np.ndarray:
    """Argmax class per label: int array [N, 8]."""
    return np.stack([np.asarray(p).argmax(axis=1) for p in probs], axis=1)


def per_case_accuracy(probs: Sequence[np.ndarray], labels: np.ndarray) -> np.ndarray:
    """Fraction of the 8 labels predicted correctly, per case: [N]. Its mean equals `acc_avg`."""
    probs, labels = _check(probs, labels)
    return (predictions(probs) == labels).mean(axis=1)


def _diag_auc(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """One-vs-rest AUC per DIAG class (NaN where the class is absent or is every case) and their mean."""
    out: dict[str, float] = {}
    aucs = []
    for k, name in enumerate(DIAG_CLASSES):
        pos = y == k
        if pos.all() or not pos.any():
            out[f"diag_auc_{name}"] = math.nan
            continue
        auc = float(roc_auc_score(pos, p[:, k]))
        out[f"diag_auc_{name}"] = auc
        aucs.append(auc)
    out["diag_auc_macro"] = float(np.mean(aucs)) if aucs else math.nan
    out["diag_auc_n_classes"] = float(len(aucs))
    return out


def evaluate(probs: Sequence[np.ndarray], labels: np.ndarray) -> dict[str, float]:
    """All scalar test metrics (see module docstring); NaN where a metric is undefined."""
    probs, labels = _check(probs, labels)
    pred = predictions(probs)
    out: dict[str, float] = {}
    for i, name in enumerate(LABELS):
        out[f"acc_{name}"] = float(accuracy_score(labels[:, i], pred[:, i]))
    out["acc_avg"] = float(np.mean([out[f"acc_{name}"] for name in LABELS]))

    y, yhat = labels[:, 0], pred[:, 0]
    # balanced accuracy = mean recall over the DIAG classes present in y (sklearn's definition)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "y_pred contains classes not in y_true"
        out["diag_balanced_acc"] = float(balanced_accuracy_score(y, yhat))
    out.update(_diag_auc(y, probs[0]))

    tn, fp, fn, tp = confusion_matrix(y == MEL_INDEX, yhat == MEL_INDEX, labels=[False, True]).ravel()
    out["mel_sensitivity"] = float(tp / (tp + fn)) if tp + fn else math.nan
    out["mel_specificity"] = float(tn / (tn + fp)) if tn + fp else math.nan
    out["n_cases"] = float(labels.shape[0])
    return out


def _bootstrap(
    data: tuple[np.ndarray, ...],
    statistic,
    confidence: float,
    n_resamples: int,
    seed: int,
    method: str,
    paired: bool,
):
    kwargs = dict(
        confidence_level=confidence, n_resamples=n_resamples, method=method, vectorized=True, paired=paired
    )
    rng = np.random.default_rng(seed)
    try:
        return stats.bootstrap(data, statistic, rng=rng, **kwargs)
    except TypeError:  # scipy < 1.15 names it random_state
        return stats.bootstrap(data, statistic, random_state=rng, **kwargs)


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def bootstrap_ci(
    values: np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    method: str = "percentile",
) -> tuple[float, float]:
    """CI of the mean of per-case scores (e.g. `per_case_accuracy`), resampling test cases.

    Percentile by default (robust for a bounded, discrete mean); `method="BCa"` is also accepted.
    Returns (nan, nan) for fewer than 2 cases or constant scores.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size < 2:
        return math.nan, math.nan
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    res = _bootstrap((x,), _mean, confidence, n_resamples, seed, method, paired=False)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) over seeds, ignoring NaNs; std is NaN for n < 2."""
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return math.nan, math.nan
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else math.nan
