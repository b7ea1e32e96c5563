"""The report is rebuilt from result files alone: hand-made records, no training."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ssnbench import cli
from ssnbench.report import load_results, summarize, write_report
from ssnbench.results import (
    SCHEMA_VERSION,
    pack_classes,
    pack_probs,
    write_json_atomic,
)

NUM_CLASSES = (5, 3, 2, 3, 3, 3, 3, 2)


def _record(name: str, arch: str, seed: int, index: int, skill: float, n: int = 60) -> dict:
    rng = np.random.default_rng(seed * 100 + index)
    labels = np.stack([np.random.default_rng(7 + i).integers(0, k, n) for i, k in enumerate(NUM_CLASSES)], 1)
    pred = np.where(rng.random(labels.shape) < skill, labels, 0)
    correct = pred == labels
    metrics = {
        f"acc_{lab}": float(correct[:, i].mean())
        for i, lab in enumerate(("DIAG", "PN", "BWV", "VS", "PIG", "STR", "DaG", "RS"))
    }
    metrics["acc_avg"] = float(correct.mean())
    metrics.update(diag_balanced_acc=0.5, diag_auc_macro=0.7, mel_sensitivity=0.4, mel_specificity=0.9)
    if name == "dual":
        metrics["mel_sensitivity"] = float("nan")  # undefined (no melanoma in a test split): null in JSON
    diag = np.full((n, 5), 0.1)
    diag[np.arange(n), pred[:, 0]] = 0.6
    heads = ["derm"] if arch == "single" else ["clinic", "derm", "fused"]
    return {
        "schema": SCHEMA_VERSION,
        "suite": "tiny",
        "suite_file": "suites/tiny.yaml",
        "reference": "ssn",
        "job": f"{name}__seed{seed}",
        "model_index": index,
        "model": {
            "name": name,
            "arch": arch,
            "loss": "prior",
            "loss_weights": None,
            "inference": "same",
            "inference_weights": None,
            "options": {"backbone": "resnet18"},
        },
        "seed": seed,
        "status": "ok",
        "error": None,
        "train": {
            "epochs": 3,
            "batch_size": 8,
            "lr": 1e-3,
            "weight_decay": 0.05,
            "warmup_epochs": 1,
            "grad_clip": 1.0,
            "amp": True,
        },
        "dataset": {
            "kind": "SYNTHETIC",
            "splits": {"train": 100, "valid": 40, "test": n},
            "image_size": 32,
            "border_crop": 2,
            "no_clinic_rows": [],
            "synthetic": {"cases": 200, "seed": 0, "source_size": 48},
            "majority": {
                "class": {},
                "metrics": {
                    "acc_avg": 0.5,
                    **{f"acc_{lab}": 0.5 for lab in ("DIAG", "PN", "BWV", "VS", "PIG", "STR", "DaG", "RS")},
                },
            },
        },
        "environment": {
            "git_commit": "abc123",
            "python": "3.12",
            "torch": "2",
            "timm": "1",
            "triton": None,
            "device_name": "CPU",
        },
        "heads": heads,
        "loss_weights": {h: 1 / len(heads) for h in heads},
        "inference_weights": {h: 1 / len(heads) for h in heads},
        "inference_scheme": "prior",
        "inference_description": "weighted mean of softmax probabilities",
        "metrics": metrics,
        "best_epoch": 2,
        "history": [{"epoch": e, "train_loss": 2.0 / e, "valid_acc_avg": 0.5 + 0.05 * e} for e in (1, 2, 3)],
        "predictions": {
            "case_ids": [f"c{i}" for i in range(n)],
            "labels": pack_classes(labels),
            "pred": pack_classes(pred),
            "diag_probs": pack_probs(diag),
        },
        "timings": {"train_seconds": 12.0},
        "profile": {
            "params": {
                "total": 11_000_000 * (2 if arch == "dual" else 1),
                "encoder": 10_000_000,
                "cross_attention": 500_000,
                "heads": 500_000,
            },
            "gmacs": 0.5,
            "train": {"status": "ok", "samples_per_sec": 100.0, "peak_memory_mb": 300.0, "batch_size": 4},
            "infer": {"status": "ok", "samples_per_sec": 300.0},
        },
        "finished_at": f"2026-01-01T00:00:0{seed}",
    }


@pytest.fixture()
def results_dir(tmp_path: Path) -> Path:
    out = tmp_path / "results"
    for seed in (0, 1):
        write_json_atomic(out / f"ssn__seed{seed}.json", _record("ssn", "ssn", seed, 0, 0.8))
        write_json_atomic(out / f"dual__seed{seed}.json", _record("dual", "dual", seed, 1, 0.6))
        write_json_atomic(
            out / f"single-derm__seed{seed}.json", _record("single-derm", "single", seed, 2, 0.5)
        )
    failed = _record("broken", "ssn", 0, 3, 0.5)
    failed.update(
        status="failed",
        error={
            "type": "NonFiniteLossError",
            "message": "training loss became nan",
            "traceback": "Traceback ...",
        },
    )
    for key in ("metrics", "predictions", "history", "profile"):
        failed.pop(key)
    write_json_atomic(out / "broken__seed0.json", failed)
    return out


def test_report_rebuilt_from_result_files(results_dir: Path, tmp_path: Path, capsys) -> None:
    report_dir = tmp_path / "report"
    assert cli.main(["report", str(results_dir), "--report-dir", str(report_dir)]) == 0
    text = (report_dir / "report.md").read_text()
    assert "SYNTHETIC DATA" in text and "**SYNTHETIC**" in text
    for heading in (
        "## 1. Test accuracy",
        "## 2. Cost",
        "## 3. Diagnosis",
        "## 4. Paired differences",
        "## 5. Claims",
        "## 6. How each model combines",
        "## 7. Failed runs",
    ):
        assert heading in text
    assert "| ssn |" in text and "| dual |" in text and "*majority class*" in text
    assert "GMACs" in text
    assert "ssn − dual" in text and "ssn − single-derm" in text
    assert "training loss became nan" in text
    assert (report_dir / "figures" / "accuracy_vs_params.png").stat().st_size > 1000
    assert (report_dir / "figures" / "validation_curves.png").stat().st_size > 1000
    rows = list(csv.DictReader((report_dir / "results.csv").open()))
    assert len(rows) == 7 and {r["status"] for r in rows} == {"ok", "failed"}
    summary = json.loads((report_dir / "results.json").read_text())
    assert [m["name"] for m in summary["models"]] == ["ssn", "dual", "single-derm", "broken"]
    assert not list(report_dir.glob(".*.tmp"))


def test_summary_statistics(results_dir: Path) -> None:
    summary = summarize(load_results(results_dir))
    ssn = summary["models"][0]
    accs = [
        json.loads((results_dir / f"ssn__seed{s}.json").read_text())["metrics"]["acc_avg"] for s in (0, 1)
    ]
    assert ssn["metrics"]["acc_avg"]["mean"] == pytest.approx(np.mean(accs))
    assert ssn["metrics"]["acc_avg"]["std"] == pytest.approx(np.std(accs, ddof=1))
    lo, hi = ssn["acc_avg_ci95"]
    assert lo < np.mean(accs) < hi
    pair = next(p for p in summary["paired"] if p["model"] == "dual")
    assert pair["seeds"] == [0, 1]
    assert pair["acc_avg"]["diff"] > 0 and pair["acc_avg"]["ci_low"] <= pair["acc_avg"]["diff"]


def test_report_needs_results(tmp_path: Path, capsys) -> None:
    assert cli.main(["report", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no such results folder" in err


def test_real_dataset_has_no_synthetic_banner(results_dir: Path, tmp_path: Path) -> None:
    records = load_results(results_dir)
    for r in records:
        r["dataset"]["kind"] = "REAL"
    text = write_report(records, tmp_path / "real").read_text()
    assert "SYNTHETIC" not in text and "**REAL**" in text


def test_report_does_not_import_torch(results_dir: Path, tmp_path: Path) -> None:
    """`ssnbench report` reads JSON and draws figures: loading torch (seconds, GBs) is a regression."""
    code = (
        "import sys\n"
        "from ssnbench import cli\n"
        f"assert cli.main(['report', {str(results_dir)!r}, '--report-dir', {str(tmp_path / 'r')!r}]) == 0\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'timm'))\n"
        "assert not loaded, loaded[:5]\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "r" / "report.md").is_file()


def test_a_new_section_is_one_function_in_sections(
    results_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ssnbench import report

    def claims(summary: dict, figures: dict) -> str:
        return f"## Claims\n\n{len(summary['models'])} models.\n\n"

    at = report.SECTIONS.index((True, report._accuracy)) + 1
    monkeypatch.setattr(report, "SECTIONS", [*report.SECTIONS[:at], (True, claims), *report.SECTIONS[at:]])
    text = write_report(load_results(results_dir), tmp_path / "r").read_text()
    assert "## 1. Test accuracy" in text and "## 2. Claims\n\n4 models." in text
    assert "## 3. Cost" in text and "## 8. Failed runs" in text and "## Setup" in text
