"""Statistics that can adjudicate a claim: two-level bootstrap, paired tests, Holm, non-inferiority.

Why: a benchmark run has two sources of noise, the training run (seed) and the finite test set
(cases). A CI over cases alone ignores the first; a bootstrap "fraction" is not a test; a report
that compares many pairs needs a multiplicity correction. Everything here takes plain arrays
(paired the way the docstring says) and returns an estimate, an interval and/or a p-value, so the
report, the Claims section and other tools (modality attribution) share one implementation.

Conventions
* Per-case scores are arrays `[S, N]` (S seeds, N test cases, the same cases in the same order for
  every seed; a 1-d array is one seed). Two models are paired by seed index and case index.
* `two_level_bootstrap`: each resample draws S seeds with replacement, then N cases with
  replacement, and recomputes the statistic; the CI therefore carries training (seed) variance
  and test-set variance. With one seed it resamples cases only and says so (`levels="cases"`).
* `sign_flip_test`: a permutation test of "mean paired difference = 0" on the seed-averaged per-case
  differences (scipy.stats.permutation_test, exact when 2^N is small).
* `mcnemar_exact`: McNemar's exact test (scipy.stats.binomtest) of paired correctness.
* `holm`: Holm's step-down adjustment of a family of p-values.
* `non_inferiority`: verdict from a CI's lower bound against a margin.
All randomness comes from an explicit seed: the same inputs give the same numbers.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as _st

__all__ = [
    "DEFAULT_MARGIN",
    "Interval",
    "PairedResult",
    "binary_rates",
    "bootstrap_metric",
    "holm",
    "mcnemar_exact",
    "multiclass_balanced_accuracy",
    "non_inferiority",
    "ovr_macro_auc",
    "paired_difference",
    "resample_indices",
    "sign_flip_test",
    "two_level_bootstrap",
]

#: Default non-inferiority margin (fraction, i.e. 1 percentage point); suites set `stats.margin`.
DEFAULT_MARGIN = 0.01
N_RESAMPLES = 2000
N_PERMUTATIONS = 9999


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap CI; `levels` says what was resampled."""

    estimate: float
    low: float
    high: float
    confidence: float
    levels: str  # "seeds+cases" | "cases" | "none" (fewer than 2 cases)
    n_seeds: int
    n_cases: int

    def to_dict(self) -> dict[str, float | str | int]:
        return asdict(self)


@dataclass(frozen=True)
class PairedResult:
    """A minus B on the same cases: difference, two-level bootstrap CI and the sign-flip p."""

    diff: Interval
    p_value: float  # two-sided sign-flip permutation test on seed-averaged per-case differences
    n_permutations: int  # 0: exact enumeration or no test possible

    def to_dict(self) -> dict[str, object]:
        return {"diff": self.diff.to_dict(), "p_value": self.p_value, "n_permutations": self.n_permutations}


def _as_2d(values: np.ndarray, name: str = "values") -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"{name} must be [cases] or [seeds, cases], got shape {x.shape}")
    return x


def resample_indices(
    n_seeds: int, n_cases: int, n_resamples: int = N_RESAMPLES, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays for a two-level bootstrap: seeds [R, S] (all zeros for one seed) and cases [R, N].

    Each resample draws S seeds with replacement, then N cases with replacement; every drawn seed
    uses the same drawn cases (the test set is fixed across training runs, so case noise is shared).
    """
    rng = np.random.default_rng(seed)
    if n_seeds > 1:
        seeds = rng.integers(0, n_seeds, size=(n_resamples, n_seeds))
    else:
        seeds = np.zeros((n_resamples, max(n_seeds, 1)), dtype=np.int64)
    cases = rng.integers(0, n_cases, size=(n_resamples, n_cases))
    return seeds, cases


def _percentile(dist: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(dist, [alpha, 1 - alpha])
    return float(lo), float(hi)


def two_level_bootstrap(
    values: np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> Interval:
    """Mean of per-case scores `[S, N]` with a two-level (seeds, then cases) percentile CI.

    The estimate is the plain mean over seeds and cases. With S = 1 only cases are resampled
    (`levels="cases"`). Fewer than 2 cases: the CI is (nan, nan).
    """
    x = _as_2d(values)
    s, n = x.shape
    est = float(x.mean()) if x.size else math.nan
    if n < 2:
        return Interval(est, math.nan, math.nan, confidence, "none", s, n)
    si, ci = resample_indices(s, n, n_resamples, seed)
    dist = _two_level_means(x, si, ci)
    lo, hi = _percentile(dist, confidence)
    return Interval(est, lo, hi, confidence, "seeds+cases" if s > 1 else "cases", s, n)


def _two_level_means(x: np.ndarray, si: np.ndarray, ci: np.ndarray, chunk: int = 256) -> np.ndarray:
    """mean(x[si[r]][:, ci[r]]) for every resample r, in chunks to bound memory."""
    out = np.empty(si.shape[0])
    for start in range(0, si.shape[0], chunk):
        s_idx, c_idx = si[start : start + chunk], ci[start : start + chunk]
        out[start : start + chunk] = x[s_idx[:, :, None], c_idx[:, None, :]].mean(axis=(1, 2))
    return out


def paired_difference(
    values_a: np.ndarray,
    values_b: np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = N_RESAMPLES,
    n_permutations: int = N_PERMUTATIONS,
    seed: int = 0,
    paired: bool = True,
) -> PairedResult:
    """Model A minus model B on the same cases: two-level bootstrap CI and a sign-flip p-value.

    `values_*` are per-case scores `[S, N]`, seed s of A paired with seed s of B (both must have the
    same S). `paired=False` resamples the cases of A and B independently (what one would get by
    ignoring that both models saw the same cases; only for comparison: it is wider whenever the
    two models' per-case scores are positively correlated).
    """
    a, b = _as_2d(values_a, "values_a"), _as_2d(values_b, "values_b")
    if a.shape != b.shape:
        raise ValueError(f"paired_difference needs the same seeds and cases, got {a.shape} and {b.shape}")
    d = a - b
    if paired:
        diff = two_level_bootstrap(d, confidence, n_resamples, seed)
    else:
        s, n = a.shape
        est = float(d.mean())
        if n < 2:
            diff = Interval(est, math.nan, math.nan, confidence, "none", s, n)
        else:
            si_a, ci_a = resample_indices(s, n, n_resamples, seed)
            si_b, ci_b = resample_indices(s, n, n_resamples, seed + 1)
            dist = _two_level_means(a, si_a, ci_a) - _two_level_means(b, si_b, ci_b)
            lo, hi = _percentile(dist, confidence)
            diff = Interval(est, lo, hi, confidence, "seeds+cases" if s > 1 else "cases", s, n)
    p, n_perm = sign_flip_test(d.mean(axis=0), n_permutations, seed)
    return PairedResult(diff, p, n_perm)


def sign_flip_test(
    differences: np.ndarray, n_permutations: int = N_PERMUTATIONS, seed: int = 0
) -> tuple[float, int]:
    """Two-sided p-value of "the mean paired difference is 0" by flipping the signs of per-case
    differences (pass seed-averaged differences: cases are the exchangeable units under the null).

    Exact (all 2^N sign patterns) when 2^N <= n_permutations, else Monte Carlo with the (1 + k) /
    (1 + R) estimate, which is never 0 (Phipson & Smyth 2010). Returns (p, number of random sign
    patterns used; 0 when exact). All-zero differences give p = 1; no cases gives nan.
    """
    d = np.asarray(differences, dtype=np.float64).ravel()
    if d.size == 0:
        return math.nan, 0
    if np.all(d == 0):
        return 1.0, 0
    observed = abs(d.mean())
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))  # equal means up to rounding count as "as extreme"
    if 2 ** d.size <= n_permutations:
        patterns = ((np.arange(2 ** d.size)[:, None] >> np.arange(d.size)) & 1) * 2 - 1
        null = np.abs(patterns @ d) / d.size
        return float(np.mean(null >= observed - tol)), 0
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_permutations, 1000):
        r = min(1000, n_permutations - start)
        signs = rng.integers(0, 2, size=(r, d.size), dtype=np.int8) * 2 - 1
        hits += int(np.sum(np.abs(signs @ d) / d.size >= observed - tol))
    return float((1 + hits) / (1 + n_permutations)), n_permutations


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """Exact McNemar test of paired correctness (two-sided binomial test on the discordant cases).

    `correct_*`: per-case correctness `[N]` (0/1) or `[S, N]`; with several seeds a case counts
    for the model that is correct in more of the paired seeds (a tie is concordant). Returns the
    discordant counts `a_only`/`b_only` and `p_value` (1.0 when there is no discordant case).
    """
    a = _as_2d(correct_a, "correct_a").mean(axis=0)
    b = _as_2d(correct_b, "correct_b").mean(axis=0)
    if a.shape != b.shape:
        raise ValueError(f"mcnemar_exact needs the same cases for A and B, got {a.shape} and {b.shape}")
    a_only, b_only = int(np.sum(a > b)), int(np.sum(b > a))
    n = a_only + b_only
    p = 1.0 if n == 0 else float(_st.binomtest(a_only, n, 0.5, alternative="two-sided").pvalue)
    return {"a_only": float(a_only), "b_only": float(b_only), "p_value": p}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order (NaNs are kept and not counted).

    Sorted ascending p_(1) <= ... <= p_(m): adjusted p_(i) = max_{j<=i} min(1, (m - j + 1) p_(j)).
    Controls the family-wise error rate; reject where adjusted p < alpha.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m == 0:
        return out.tolist()
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def non_inferiority(interval: Interval | dict, margin: float = DEFAULT_MARGIN) -> str:
    """Verdict on "A is not worse than B by more than `margin`" from the CI of A − B.

    `supported` when the CI's lower bound is above −margin (a two-sided 95% CI, i.e. a one-sided
    test at 2.5%), `contradicted` when its upper bound is below −margin (A is worse by more than
    the margin), otherwise `not resolved`.
    """
    low = interval["low"] if isinstance(interval, dict) else interval.low
    high = interval["high"] if isinstance(interval, dict) else interval.high
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return "not resolved"
    if low > -margin:
        return "supported"
    if high < -margin:
        return "contradicted"
    return "not resolved"


# ---------------------------------------------------------------------------------------------
# Bootstrap CIs of whole-test-set metrics (DIAG balanced accuracy, macro AUC, MEL sens./spec.)


def multiclass_balanced_accuracy(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Balanced accuracy (mean recall over the classes present in y) along the last axis.

    `y`, `pred`: int arrays [..., N]; the leading axes are independent resamples. Equals sklearn's
    `balanced_accuracy_score` for one row.
    """
    y, pred = np.asarray(y), np.asarray(pred)
    recalls, present = [], []
    for k in range(n_classes):
        pos = y == k
        n_pos = pos.sum(axis=-1)
        hit = (pos & (pred == k)).sum(axis=-1)
        recalls.append(np.where(n_pos > 0, hit / np.maximum(n_pos, 1), 0.0))
        present.append(n_pos > 0)
    r, p = np.stack(recalls), np.stack(present)
    return r.sum(axis=0) / np.maximum(p.sum(axis=0), 1)


def ovr_macro_auc(y: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Macro one-vs-rest AUC over the classes present (and absent somewhere) along the case axis.

    `y` [..., N] ints, `prob` [..., N, K]. Rank-based (Mann-Whitney, ties averaged), so it equals
    sklearn's `roc_auc_score` per class; NaN where no class qualifies.
    """
    y, prob = np.asarray(y), np.asarray(prob, dtype=np.float64)
    aucs, ok = [], []
    for k in range(prob.shape[-1]):
        pos = y == k
        n_pos = pos.sum(axis=-1)
        n_neg = pos.shape[-1] - n_pos
        ranks = _average_ranks(prob[..., k])
        u = (ranks * pos).sum(axis=-1) - n_pos * (n_pos + 1) / 2
        valid = (n_pos > 0) & (n_neg > 0)
        aucs.append(np.where(valid, u / np.maximum(n_pos * n_neg, 1), 0.0))
        ok.append(valid)
    a, v = np.stack(aucs), np.stack(ok)
    count = v.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (a * v).sum(axis=0) / np.maximum(count, 1), np.nan)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks along the last axis, ties averaged (scipy.stats.rankdata's "average"),
    vectorised over leading axes (rankdata loops over them and is ~10x slower here)."""
    order = np.argsort(x, axis=-1, kind="stable")
    xs = np.take_along_axis(x, order, axis=-1)
    n = x.shape[-1]
    pos = np.broadcast_to(np.arange(n), x.shape)
    new = np.ones(x.shape, dtype=bool)
    new[..., 1:] = xs[..., 1:] != xs[..., :-1]
    first = np.maximum.accumulate(np.where(new, pos, 0), axis=-1)  # start of each tie group
    last_flag = np.ones(x.shape, dtype=bool)
    last_flag[..., :-1] = new[..., 1:]
    last = np.flip(np.minimum.accumulate(np.flip(np.where(last_flag, pos, n), axis=-1), axis=-1), axis=-1)
    ranks = np.empty(x.shape)
    np.put_along_axis(ranks, order, (first + last) / 2 + 1, axis=-1)
    return ranks


def binary_rates(y: np.ndarray, pred: np.ndarray, positive: int) -> tuple[np.ndarray, np.ndarray]:
    """(sensitivity, specificity) of class `positive` against the rest along the last axis (NaN
    where undefined)."""
    y, pred = np.asarray(y), np.asarray(pred)
    pos, hit = y == positive, pred == positive
    n_pos, n_neg = pos.sum(axis=-1), (~pos).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = np.where(n_pos > 0, (pos & hit).sum(axis=-1) / n_pos, np.nan)
        spec = np.where(n_neg > 0, (~pos & ~hit).sum(axis=-1) / n_neg, np.nan)
    return sens, spec


def bootstrap_metric(
    metric: Callable[[np.ndarray, np.ndarray], np.ndarray],
    y: np.ndarray,
    outputs: np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> Interval:
    """Two-level bootstrap CI of a whole-test-set metric averaged over seeds.

    `y` [N] true labels (the same for every seed); `outputs` [S, N, ...] per seed (predictions or
    probabilities). `metric(y[..., N], outputs[..., N, ...]) -> [...]` must be vectorised over
    leading axes (see `multiclass_balanced_accuracy`, `ovr_macro_auc`, `binary_rates`). The
    estimate is the mean over seeds of the metric on all cases; each resample draws seeds, then
    cases, and averages the metric over the drawn seeds.
    """
    y = np.asarray(y)
    out = np.asarray(outputs)
    if out.shape[1:2] != y.shape:
        raise ValueError(f"outputs must be [seeds, {y.shape[0]}, ...], got {out.shape}")
    s, n = out.shape[:2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # undefined for every seed: nan
        est = float(np.nanmean(metric(y[None], out)))
    if n < 2:
        return Interval(est, math.nan, math.nan, confidence, "none", s, n)
    si, ci = resample_indices(s, n, n_resamples, seed)
    dist = np.empty(n_resamples)
    chunk = 200
    for start in range(0, n_resamples, chunk):
        s_idx, c_idx = si[start : start + chunk], ci[start : start + chunk]
        yy = y[c_idx][:, None, :]  # [r, 1, N]
        oo = out[s_idx[:, :, None], c_idx[:, None, :]]  # [r, S, N, ...]
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a resample where the metric is undefined
            vals = metric(np.broadcast_to(yy, oo.shape[:3]), oo)
            dist[start : start + chunk] = np.nanmean(vals, axis=1)
    dist = dist[~np.isnan(dist)]
    if dist.size == 0:
        return Interval(est, math.nan, math.nan, confidence, "none", s, n)
    lo, hi = _percentile(dist, confidence)
    return Interval(est, lo, hi, confidence, "seeds+cases" if s > 1 else "cases", s, n)
