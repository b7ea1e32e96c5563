"""Pinned: the report's numbers (not just its headings) on hand-made result records.

Ten test cases whose 8 targets are all class 0; a case is either right on every label or wrong on
every label, so each per-case score is 0 or 1 and every aggregate below is worked out by hand.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from ssnbench.report import summarize, write_report
from ssnbench.stats import two_level_bootstrap

LABELS = ("DIAG", "PN", "BWV", "VS", "PIG", "STR", "DaG", "RS")
N = 10


def _record(name: str, index: int, seed: int, wrong: set[int], *, reverse: bool = False, **metrics) -> dict:
    """A finished run that is wrong (on all 8 labels) on the cases in `wrong`; `reverse` lists its
    cases in the opposite order (predictions still belong to the same case ids)."""
    cases = list(range(N))[::-1] if reverse else list(range(N))
    acc = 1 - len(wrong) / N
    return {
        "schema": 1,
        "suite": "pinned",
        "suite_file": "suites/pinned.yaml",
        "reference": "ref",
        "job": f"{name}__seed{seed}",
        "model_index": index,
        "model": {"name": name, "arch": "ssn", "loss": "prior", "options": {"backbone": "resnet18"}},
        "seed": seed,
        "status": "ok",
        "error": None,
        "train": {"epochs": 3, "batch_size": 8, "lr": 1e-3, "amp": False},
        "dataset": {
            "kind": "SYNTHETIC",
            "splits": {"train": 20, "valid": 5, "test": N},
            "image_size": 32,
            "border_crop": 2,
            "no_clinic_rows": [],
            "majority": {"metrics": {"acc_avg": 0.6, **{f"acc_{lab}": 0.6 for lab in LABELS}}},
        },
        "environment": {"git_commit": "abc", "device_name": "CPU"},
        "heads": ["clinic", "derm", "fused"],
        "loss_weights": {"clinic": 0.2, "derm": 0.5, "fused": 0.3},
        "inference_weights": {"clinic": 0.2, "derm": 0.5, "fused": 0.3},
        "inference_scheme": "prior",
        "metrics": {
            **{f"acc_{lab}": acc for lab in LABELS},
            "acc_avg": acc,
            "diag_balanced_acc": 0.5,
            "diag_auc_macro": 0.75,
            "mel_sensitivity": 0.25,
            "mel_specificity": 0.875,
            **metrics,
        },
        "best_epoch": 2,
        "history": [{"epoch": e, "train_loss": 1.0, "valid_acc_avg": 0.5} for e in (1, 2, 3)],
        "predictions": {
            "labels_order": list(LABELS),
            "case_ids": [f"c{c}" for c in cases],
            "labels": ["00000000"] * N,
            "pred": ["11111111" if c in wrong else "00000000" for c in cases],
            "diag_probs": [
                "0.1000 0.9000 0.0000 0.0000 0.0000" if c in wrong else "0.9000 0.1000 0.0000 0.0000 0.0000"
                for c in cases
            ],
        },
        "timings": {"train_seconds": 60.0, "total_seconds": 90.0},
        "profile": {"params": {"total": 11_000_000}, "gmacs": 0.5, "device": "cpu"},
        "finished_at": f"2026-01-01T00:00:0{seed}",
    }


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return [
        _record("ref", 0, 0, {8, 9}, diag_balanced_acc=0.5),  # 0.8
        _record("ref", 0, 1, {9}, diag_balanced_acc=0.7),  # 0.9
        _record("other", 1, 0, {0, 8, 9}),  # 0.7
        _record("other", 1, 1, {0, 5, 9}),  # 0.7
        _record("twin", 2, 0, {8, 9}, reverse=True),  # ref's very predictions, cases listed backwards
        _record("twin", 2, 1, {9}, reverse=True),
    ]


def test_summary_numbers(records: list[dict]) -> None:
    summary = summarize(records)
    ref, other, twin = summary["models"]
    assert ref["metrics"]["acc_avg"] == pytest.approx({"mean": 0.85, "std": 0.1 / np.sqrt(2)})
    assert (
        other["metrics"]["acc_avg"]["mean"] == pytest.approx(0.7) and other["metrics"]["acc_avg"]["std"] == 0
    )
    assert ref["metrics"]["diag_balanced_acc"] == pytest.approx({"mean": 0.6, "std": 0.2 / np.sqrt(2)})
    # the CI is a two-level bootstrap (seeds, then cases) of the per-case scores of each seed:
    # seed 0 is wrong on cases 8 and 9, seed 1 on case 9
    per_case = np.array([[1, 1, 1, 1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1, 1, 0]], dtype=float)
    iv = two_level_bootstrap(per_case, seed=0)
    assert ref["acc_avg_ci95"] == pytest.approx([iv.low, iv.high]) and ref["ci_levels"] == "seeds+cases"
    iv = two_level_bootstrap(per_case[:, ::-1], seed=0)  # its own case order
    assert twin["acc_avg_ci95"] == pytest.approx([iv.low, iv.high])
    pairs = {p["model"]: p for p in summary["paired"]}
    assert set(pairs) == {"other", "twin"}
    # ref - other per case (seed-averaged): case 0 +1, case 5 +0.5, the rest 0
    assert pairs["other"]["acc_avg"]["diff"] == pytest.approx(0.15) and pairs["other"]["seeds"] == [0, 1]
    assert pairs["other"]["acc_avg"]["ci_low"] == 0.0  # no case favours other: no resample goes below 0
    # DIAG alone: the same cases are right and wrong as for all labels
    assert pairs["other"]["acc_DIAG"]["diff"] == pytest.approx(0.15)
    # the twin is ref case for case once its cases are put back in ref's order: no difference at all
    twin_pair = pairs["twin"]["acc_avg"]
    assert (twin_pair["diff"], twin_pair["ci_low"], twin_pair["ci_high"], twin_pair["p_value"]) == (
        0,
        0,
        0,
        1,
    )


def test_pairs_need_common_seeds_and_the_same_cases(records: list[dict]) -> None:
    late = _record("late", 3, 5, {0})  # seed 5: the reference has no seed 5
    other_cases = _record("elsewhere", 4, 0, {0})
    other_cases["predictions"]["case_ids"] = [f"d{c}" for c in range(N)]  # another test split
    pairs = {p["model"]: p for p in summarize([*records, late, other_cases])["paired"]}
    for name in ("late", "elsewhere"):
        assert (
            "acc_avg" not in pairs[name] and pairs[name]["note"] == "no common seeds or different test cases"
        )
    assert "acc_avg" in pairs["other"]


def _row(text: str, first_cell: str, section: str) -> list[str]:
    part = text.split(section, 1)[1].split("\n## ", 1)[0]
    for line in part.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} under {section!r}")


def test_report_tables_show_the_numbers(records: list[dict], tmp_path: Path) -> None:
    text = write_report(records, tmp_path / "report").read_text()
    acc = "## 1. Test accuracy"
    assert _row(text, "ref", acc) == [
        "ref",
        *["85.0 ± 7.1"] * 8,
        "**85.0 ± 7.1**",
        _row(text, "ref", acc)[10],
        "2",
    ]
    lo, hi = summarize(records)["models"][0]["acc_avg_ci95"]
    assert _row(text, "ref", acc)[10] == f"[{100 * lo:.1f}, {100 * hi:.1f}]"
    assert _row(text, "other", acc)[1:10] == [*["70.0 ± 0.0"] * 8, "**70.0 ± 0.0**"]
    assert _row(text, "*majority class*", acc)[1:10] == [*["60.0"] * 8, "*60.0*"]
    diag = _row(text, "ref", "## 3. Diagnosis")[1:]
    # each followed by its two-level bootstrap CI in brackets (from the stored predictions)
    assert [c.split(" [")[0] for c in diag] == ["60.0 ± 14.1", "75.0 ± 0.0", "25.0 ± 0.0", "87.5 ± 0.0"]
    assert _row(text, "ref", "## 2. Cost")[2] == "11.00" and _row(text, "ref", "## 2. Cost")[4] == "0.500"
    paired = "## 4. Paired differences"
    row = _row(text, "ref − other", paired)
    assert row[1] == "2" and row[2] == "+15.0" and row[3].startswith("[+0.0, +") and row[5] == "+15.0"
    # identical per-case scores: p = 1 raw and Holm-adjusted, for the sign-flip and McNemar tests
    assert _row(text, "ref − twin", paired)[1:] == [
        "2",
        "+0.0",
        "[+0.0, +0.0]",
        "1 [1]",
        "+0.0",
        "[+0.0, +0.0]",
        "1 [1]",
    ]
    # results.json carries the same numbers
    saved = json.loads((tmp_path / "report" / "results.json").read_text())
    assert saved["models"][0]["metrics"]["acc_avg"]["mean"] == pytest.approx(0.85)
    assert re.search(r"seeds \| 0, 1 \|", text)
