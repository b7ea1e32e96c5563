"""Speed of the metrics on a test-set-sized prediction set (395 cases, the Derm7pt test split)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from ssnbench import metrics

NUM_CLASSES = (5, 3, 2, 3, 3, 3, 3, 2)


@pytest.mark.benchmark(group="metrics")
@pytest.mark.benchmark_threshold(25)
def test_metrics_evaluate_395_cases(timed: Callable[..., Any]) -> None:
    rng = np.random.default_rng(0)
    n = 395
    labels = np.stack([np.arange(n) % k for k in NUM_CLASSES], axis=1)  # every class present
    rng.shuffle(labels, axis=0)
    probs = []
    for k in NUM_CLASSES:
        logits = rng.normal(size=(n, k))
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs.append(e / e.sum(axis=1, keepdims=True))
    result = timed(lambda: metrics.evaluate(probs, labels))
    assert 0.0 <= result["acc_avg"] <= 1.0 and "diag_auc_macro" in result
