"""Modality attribution of a two-image model: which image, and which head, a decision came from.

Computed once per job right after training (three extra test passes: both images, clinical photo
withheld, dermoscopy withheld; every head's output is kept on each pass) and stored in the result
record under `attribution`:

* `variants`: per-case predictions (packed like `predictions.pred`) and accuracies of
  `combined` (the model as deployed), `no_clinic` / `no_derm` (that modality replaced by
  `NEUTRAL_INPUT`, heads combined as usual) and `head_<h>` (one head alone, both images shown);
* `disagreement`: per label, the fraction of test cases whose heads do not all predict the same
  class, and for those cases how often each head (and the combination) was right.

`summarize(records)` turns the records of a suite into the report's numbers: per model and variant,
accuracy (mean over seeds) and the paired difference to `combined` on the same cases (seed-averaged
per-case scores, a CI and a test; Holm-adjusted within the section).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ssnbench.explain import NEUTRAL_INPUT

if TYPE_CHECKING:  # torch only where the passes run: the report imports this module torch-free
    import torch
    from torch import nn

    from ssnbench.explain.inference import HeadOutputs

__all__ = ["VARIANTS", "compute", "is_two_image", "summarize"]

#: Variant keys in display order, with the report's wording.
VARIANTS: dict[str, str] = {
    "combined": "both images, heads combined (as deployed)",
    "no_clinic": "clinical photo withheld",
    "no_derm": "dermoscopy withheld",
    "head_clinic": "clinic head alone",
    "head_derm": "derm head alone",
    "head_fused": "fused head alone",
}
HEADS: tuple[str, ...] = ("clinic", "derm", "fused")


def is_two_image(model: nn.Module) -> bool:
    """Attribution applies to models that read both images (SSN, dual), not single-modality ones."""
    return tuple(getattr(model, "modalities", ())) == ("clinic", "derm")


def _pack(pred: np.ndarray) -> list[str]:
    return ["".join(str(int(c)) for c in row) for row in pred]


def _unpack(packed: list[str]) -> np.ndarray:
    return np.asarray([[int(c) for c in row] for row in packed], dtype=np.int64)


def _accs(pred: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    correct = pred == labels
    return {"acc_avg": float(correct.mean()), "acc_DIAG": float(correct[:, 0].mean())}


def _disagreement(full: HeadOutputs) -> dict[str, Any]:
    """Per label: fraction of cases whose heads disagree; among those, how often each was right."""
    from ssnbench.data.labels import LABELS

    heads = [h for h in HEADS if h in full.heads]
    preds = {h: full.pred(h) for h in heads}
    combined = full.pred()
    stack = np.stack([preds[h] for h in heads])  # [H, N, 8]
    disagree = (stack != stack[:1]).any(axis=0)  # [N, 8]
    out: dict[str, Any] = {"heads": heads, "per_label": {}}
    for j, label in enumerate(LABELS):
        rows = disagree[:, j]
        n = int(rows.sum())
        right = {
            h: (float((preds[h][rows, j] == full.labels[rows, j]).mean()) if n else math.nan) for h in heads
        }
        right["combined"] = float((combined[rows, j] == full.labels[rows, j]).mean()) if n else math.nan
        out["per_label"][label] = {"rate": float(rows.mean()), "n": n, "right": right}
    out["rate_avg"] = float(disagree.mean())
    out["cases_any_label"] = float(disagree.any(axis=1).mean())
    return out


def compute(
    model: nn.Module,
    dataset,
    inference_weights: dict[str, float],
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    amp: bool = False,
) -> dict[str, Any]:
    """The `attribution` entry of a result record (see the module docstring)."""
    from ssnbench.explain.inference import run_heads

    t0 = time.perf_counter()
    kw = dict(device=device, batch_size=batch_size, amp=amp)
    full = run_heads(model, dataset, inference_weights, **kw)
    passes = {m: run_heads(model, dataset, inference_weights, withhold=m, **kw) for m in ("clinic", "derm")}
    preds = {
        "combined": full.pred(),
        "no_clinic": passes["clinic"].pred(),
        "no_derm": passes["derm"].pred(),
        **{f"head_{h}": full.pred(h) for h in HEADS if h in full.heads},
    }
    variants = {k: {**_accs(p, full.labels), "pred": _pack(p)} for k, p in preds.items()}
    return {
        "neutral_input": NEUTRAL_INPUT,
        "case_ids": full.case_ids,
        "labels": _pack(full.labels),
        "inference_weights": dict(inference_weights),
        "variants": variants,
        "disagreement": _disagreement(full),
        "seconds": time.perf_counter() - t0,
    }


# ---------------------------------------------------------------------------------------------
# Across seeds: the report's numbers


def _nanmean(values: list[float | None]) -> float:
    """Mean over the seeds that have a value: an undefined rate (no case where the heads disagree)
    is NaN in memory and null in the result file, and neither counts."""
    kept = [float(v) for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def _scores(att: dict, variant: str, order: list[int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-case (average over the 8 labels, DIAG) correctness of one variant."""
    correct = _unpack(att["variants"][variant]["pred"]) == _unpack(att["labels"])
    if order is not None:
        correct = correct[order]
    return correct.mean(axis=1), correct[:, 0].astype(float)


def paired_test(a: np.ndarray, b: np.ndarray, seed: int = 0, mcnemar: bool = False) -> dict[str, Any]:
    """A − B on the same cases from per-case scores [seeds, cases] (seed s of A paired with seed s of
    B), with the statistics of the report's paired differences (ssnbench.stats): a two-level bootstrap
    CI (seeds, then cases) and the two-sided sign-flip permutation p on seed-averaged differences, or,
    with `mcnemar` (0/1 correctness such as DIAG), the exact McNemar p."""
    from ssnbench import stats

    res = stats.paired_difference(a, b, seed=seed)
    p = stats.mcnemar_exact(a, b)["p_value"] if mcnemar else res.p_value
    return {
        "diff": float(res.diff.estimate),
        "ci_low": float(res.diff.low),
        "ci_high": float(res.diff.high),
        "levels": res.diff.levels,
        "p": float(p),
        "test": "exact McNemar" if mcnemar else "sign-flip permutation",
    }


def summarize(records: list[dict]) -> dict[str, Any]:
    """Per two-image model: each variant's accuracies (mean over seeds) and its paired difference to
    `combined` (average and DIAG accuracy), plus the heads' disagreement. Plain data for results.json."""
    by_model: dict[str, list[dict]] = {}
    for r in records:
        if (
            r.get("status") == "ok"
            and isinstance(r.get("attribution"), dict)
            and "variants" in r["attribution"]
        ):
            by_model.setdefault(r["model"]["name"], []).append(r)
    models = []
    suite_order = sorted(by_model, key=lambda n: min(int(r.get("model_index", 10**6)) for r in by_model[n]))
    for name in suite_order:
        runs = by_model[name]
        runs = sorted(runs, key=lambda r: r["seed"])
        ids = runs[0]["attribution"]["case_ids"]
        usable = [r for r in runs if set(r["attribution"]["case_ids"]) == set(ids)]
        orders = []
        for r in usable:
            pos = {c: i for i, c in enumerate(r["attribution"]["case_ids"])}
            orders.append([pos[c] for c in ids])
        variants = [v for v in VARIANTS if all(v in r["attribution"]["variants"] for r in usable)]
        base = [_scores(r["attribution"], "combined", o) for r, o in zip(usable, orders, strict=True)]
        base_avg, base_diag = np.stack([s[0] for s in base]), np.stack([s[1] for s in base])  # [S, N]
        rows = []
        for v in variants:
            acc = [r["attribution"]["variants"][v] for r in usable]
            row: dict[str, Any] = {
                "variant": v,
                "acc_avg": float(np.mean([a["acc_avg"] for a in acc])),
                "acc_DIAG": float(np.mean([a["acc_DIAG"] for a in acc])),
            }
            if v != "combined":
                sc = [_scores(r["attribution"], v, o) for r, o in zip(usable, orders, strict=True)]
                row["vs_combined_avg"] = paired_test(np.stack([s[0] for s in sc]), base_avg)
                row["vs_combined_DIAG"] = paired_test(np.stack([s[1] for s in sc]), base_diag, mcnemar=True)
            rows.append(row)
        dis = [r["attribution"]["disagreement"] for r in usable]
        diag = [d["per_label"]["DIAG"] for d in dis]
        heads = dis[0]["heads"] + ["combined"]
        disagreement = {
            "DIAG_rate": float(np.mean([d["rate"] for d in diag])),
            "rate_avg": float(np.mean([d["rate_avg"] for d in dis])),
            "cases_any_label": float(np.mean([d["cases_any_label"] for d in dis])),
            "DIAG_right": {h: _nanmean([d["right"][h] for d in diag]) for h in heads},
        }
        models.append(
            {
                "name": name,
                "seeds": [r["seed"] for r in usable],
                "n_cases": len(ids),
                "variants": rows,
                "disagreement": disagreement,
                "seconds": float(np.mean([r["attribution"].get("seconds", math.nan) for r in usable])),
            }
        )
    # Holm over every test of the section (2 per non-combined row and model): a family of its own,
    # apart from the report's model comparisons (these are diagnostics of each model, not claims
    # between models, and must not widen the Claims section's adjusted p-values).
    from ssnbench import stats

    tests = [
        (row, key)
        for m in models
        for row in m["variants"]
        for key in ("vs_combined_avg", "vs_combined_DIAG")
        if key in row
    ]
    for (row, key), adj in zip(tests, stats.holm([row[key]["p"] for row, key in tests]), strict=True):
        row[key]["p_holm"] = adj
    return {"neutral_input": NEUTRAL_INPUT, "models": models, "n_tests": len(tests)}
