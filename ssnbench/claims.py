"""The paper's claims, tested on whatever models a suite ran: one row per claim it can test.

Why a module of its own: the report should not decide which models are "SSN" or "the dual
baseline" by their free-text names. A model is identified by what it is (arch, loss, the options
that define it, with the registry's defaults filled in), two models are compared only when they
differ in exactly the property a claim is about, and every verdict comes from `ssnbench.stats`
(two-level bootstrap CI of the difference in average accuracy, sign-flip p, Holm across the
report). On synthetic data each row also shows the planted truth (meta/planted.json), so a reader
can see whether the harness recovers a known answer.

Verdicts: superiority claims are `supported` when the 95% CI of A − B excludes 0 on the positive
side and the Holm-adjusted p < 0.05, `contradicted` when the CI excludes 0 on the negative side, else
`not resolved`. The non-inferiority claim uses the CI's lower bound against the margin
(`stats.non_inferiority`) and also requires SSN to use at most 60% of the dual model's parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ssnbench import stats

__all__ = [
    "ALPHA",
    "CLAIMS",
    "PARAM_RATIO",
    "Claim",
    "evaluate_claims",
    "finish_verdicts",
    "model_key",
    "paired_case_scores",
]

ALPHA = 0.05
PARAM_RATIO = 0.6  # "SSN at half the parameters": at most 60% of the dual model's
#: Options that define a model for the claims (with these defaults when a suite leaves them out);
#: everything else (implementation, image size, CUDA graphs) does not change what a model is.
DEFINING = {
    "ssn": {"backbone": "resnet50", "xattn": "shared", "share_heads": False},
    "dual": {"backbone": "resnet50", "xattn": "none"},
    "single": {"backbone": "resnet50", "modality": "derm"},
}


def model_key(entry: dict) -> dict[str, Any]:
    """What a summary model entry IS: arch, loss and its defining options (defaults filled in)."""
    arch = entry.get("arch")
    opts = dict(DEFINING.get(arch, {}))
    opts.update({k: v for k, v in (entry.get("options") or {}).items() if k in opts})
    return {"arch": arch, "loss": entry.get("loss"), **opts}


def _differs_only(a: dict, b: dict, key: str) -> bool:
    return a[key] != b[key] and all(a[k] == b[k] for k in a if k != key)


@dataclass(frozen=True)
class Claim:
    """One claim: how to pick model A and model B from the suite, and what kind of test."""

    id: str
    text: str
    kind: str  # "superiority" | "non-inferiority"
    pick: Callable[[list[dict]], tuple[dict, dict] | None]
    planted: str  # "fusion" | "derm" (the planted design decides it) | "none" (the models only)


def _ok(models: list[dict]) -> list[dict]:
    return [m for m in models if m.get("metrics")]


def _acc(m: dict) -> float:
    return float(m["metrics"]["acc_avg"]["mean"])


def _ssn_canonical(models: list[dict]) -> list[dict]:
    return [m for m in models if (k := model_key(m))["arch"] == "ssn" and k["xattn"] == "shared"
            and not k["share_heads"]]


def _best(models: list[dict]) -> dict | None:
    return max(models, key=_acc) if models else None


def _pair_by(key: str, a_value: Any, b_value: Any) -> Callable[[list[dict]], tuple[dict, dict] | None]:
    """SSN models that differ only in `key` (a_value vs b_value); the best-scoring such pair's A."""

    def pick(models: list[dict]) -> tuple[dict, dict] | None:
        ssn = [m for m in models if m["arch"] == "ssn"]
        pairs = [(a, b) for a in ssn for b in ssn
                 if model_key(a)[key] == a_value and model_key(b)[key] == b_value
                 and _differs_only(model_key(a), model_key(b), key)]
        return max(pairs, key=lambda p: _acc(p[0])) if pairs else None

    return pick


def _ssn_vs_dual(models: list[dict]) -> tuple[dict, dict] | None:
    canonical = _ssn_canonical(models)
    ssn = _best([m for m in canonical if model_key(m)["loss"] == "prior"] or canonical)
    if ssn is None:
        return None
    backbone = model_key(ssn)["backbone"]
    dual = _best([m for m in models if m["arch"] == "dual" and model_key(m)["backbone"] == backbone])
    return (ssn, dual) if dual else None


def _ssn_vs_single(models: list[dict]) -> tuple[dict, dict] | None:
    ssn = _best(_ssn_canonical(models))
    single = _best([m for m in models if m["arch"] == "single"])
    return (ssn, single) if ssn and single else None


def _fusion_vs_derm(models: list[dict]) -> tuple[dict, dict] | None:
    fusion = _best([m for m in models if m["arch"] in ("ssn", "dual")])
    derm = _best([m for m in models if m["arch"] == "single" and model_key(m)["modality"] == "derm"])
    return (fusion, derm) if fusion and derm else None


def _derm_vs_clinic(models: list[dict]) -> tuple[dict, dict] | None:
    singles = [m for m in models if m["arch"] == "single"]
    derm = _best([m for m in singles if model_key(m)["modality"] == "derm"])
    clinic = _best([m for m in singles if model_key(m)["modality"] == "clinic"])
    return (derm, clinic) if derm and clinic else None


CLAIMS: tuple[Claim, ...] = (
    Claim("ssn_noninferior_dual",
          f"SSN is non-inferior to the dual encoder at ≤{PARAM_RATIO:.0%} of its parameters",
          "non-inferiority", _ssn_vs_dual, "none"),
    Claim("prior_beats_equal", "the prior-inspired loss beats equal head weights (SSN)", "superiority",
          _pair_by("loss", "prior", "equal"), "none"),
    Claim("shared_beats_none", "shared cross-attention beats no cross-attention (SSN)", "superiority",
          _pair_by("xattn", "shared", "none"), "none"),
    Claim("shared_beats_separate", "shared cross-attention beats separate per-direction weights (SSN)",
          "superiority", _pair_by("xattn", "shared", "separate"), "none"),
    Claim("ssn_beats_best_single", "SSN beats the best single-modality model", "superiority",
          _ssn_vs_single, "fusion"),
    Claim("specific_heads_beat_shared", "modality-specific heads beat one shared head (SSN)", "superiority",
          _pair_by("share_heads", False, True), "none"),
    Claim("fusion_beats_derm", "the best two-image model beats single-derm (harness check)", "superiority",
          _fusion_vs_derm, "fusion"),
    Claim("derm_beats_clinic", "single-derm beats single-clinic (harness check)", "superiority",
          _derm_vs_clinic, "derm"),
)


def paired_case_scores(
    runs_a: list[dict], runs_b: list[dict], score: Callable[[dict], np.ndarray]
) -> tuple[np.ndarray, np.ndarray, list[int]] | None:
    """Per-case scores [S, N] of two models over their COMMON seeds (seed s paired with seed s),
    B's cases reordered to A's case order; None without common seeds or with different cases."""
    a_by = {r["seed"]: r for r in runs_a}
    b_by = {r["seed"]: r for r in runs_b}
    seeds = sorted(set(a_by) & set(b_by))
    if not seeds:
        return None
    sa, sb = [], []
    for s in seeds:
        ids_a = list(a_by[s]["predictions"]["case_ids"])
        ids_b = list(b_by[s]["predictions"]["case_ids"])
        index = {c: i for i, c in enumerate(ids_b)}
        if set(index) != set(ids_a) or len(ids_a) != len(ids_b):
            return None
        sa.append(np.asarray(score(a_by[s]), dtype=float))
        sb.append(np.asarray(score(b_by[s]), dtype=float)[[index[c] for c in ids_a]])
    if len({x.shape for x in sa}) != 1:
        return None
    return np.stack(sa), np.stack(sb), seeds


def _params(m: dict) -> float | None:
    total = ((m.get("profile") or {}).get("params") or {}).get("total")
    return float(total) if total else None


def _planted_truth(claim: Claim, planted: dict | None) -> str | None:
    if planted is None:
        return None
    if claim.planted == "none":
        return "not planted (a property of the models)"
    expected = planted.get("expected") or {}
    if claim.planted == "derm":
        if expected.get("derm_more_informative_than_clinic"):
            return "dermoscopy is the more informative modality (expect supported)"
        return "dermoscopy is not the more informative modality"
    labels = ", ".join(expected.get("clinic_extra_labels") or [])
    if expected.get("clinic_adds_information"):
        return f"fusion CAN beat derm: the clinical photo adds information on {labels}"
    return "fusion CANNOT beat derm: the clinical photo adds nothing (expect not supported)"


def evaluate_claims(
    models: list[dict],
    runs_by_name: dict[str, list[dict]],
    score: Callable[[dict], np.ndarray],
    planted: dict | None = None,
    margin: float = stats.DEFAULT_MARGIN,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per claim whose models the suite has (raw p only; the report applies Holm across all
    its comparisons, then `finish_verdicts`). `models`: the report summary's model entries;
    `runs_by_name`: finished result records per model name; `score(record) -> [N]` per-case score."""
    ok = _ok(models)
    rows = []
    for claim in CLAIMS:
        picked = claim.pick(ok)
        if picked is None or picked[0]["name"] == picked[1]["name"]:
            continue
        a, b = picked
        aligned = paired_case_scores(runs_by_name.get(a["name"], []), runs_by_name.get(b["name"], []), score)
        row: dict[str, Any] = {"id": claim.id, "claim": claim.text, "kind": claim.kind, "a": a["name"],
                               "b": b["name"], "planted": _planted_truth(claim, planted)}
        if aligned is None:
            row.update(verdict="not resolved", note="no common seeds or different test cases")
            rows.append(row)
            continue
        res = stats.paired_difference(aligned[0], aligned[1], seed=seed)
        row.update(seeds=aligned[2], diff=res.diff.to_dict(), p_value=res.p_value)
        if claim.kind == "non-inferiority":
            row["margin"] = margin
            pa, pb = _params(a), _params(b)
            row["param_ratio"] = pa / pb if pa and pb else None
        rows.append(row)
    return rows


def finish_verdicts(rows: list[dict[str, Any]]) -> None:
    """Verdict of each row from its CI and Holm-adjusted p (`p_holm`, set by the report)."""
    for row in rows:
        if "diff" not in row:
            continue
        d = row["diff"]
        if row["kind"] == "non-inferiority":
            verdict = stats.non_inferiority(d, row["margin"])
            ratio = row.get("param_ratio")
            if ratio is None:
                verdict = "not resolved" if verdict == "supported" else verdict
                row["note"] = "parameter counts missing (profiling off)"
            elif ratio > PARAM_RATIO:
                verdict = "contradicted"
                row["note"] = f"SSN uses {ratio:.0%} of the dual model's parameters"
            row["verdict"] = verdict
            continue
        p = row.get("p_holm", row.get("p_value"))
        if d["low"] > 0 and p is not None and p < ALPHA:
            row["verdict"] = "supported"
        elif d["high"] < 0 and p is not None and p < ALPHA:
            row["verdict"] = "contradicted"
        else:
            row["verdict"] = "not resolved"
