"""End-of-job analyses land through the one job entry point (ssnbench.job) that the local, Ray and
SLURM launchers all call, and a failing analysis leaves the job's accuracy result standing."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssnbench import job as job_mod
from ssnbench.results import read_result

SUITE = """\
name: tinyjob
dataset: {kind: synthetic, cases: 40, seed: 0, source_size: 32, image_size: 32, border_crop: 2}
train: {epochs: 1, batch_size: 8, warmup_epochs: 0, num_workers: 0, threads: 1}
profile: false
robustness: {severities: 3, shifts: [blur]}
models: [{name: ssn, arch: ssn, options: {backbone: test_resnet}}]
"""


def test_worker_entry_records_attribution_and_isolates_a_failing_analysis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ssnbench.explain import robustness

    def broken(*args, **kwargs):
        raise RuntimeError("shift exploded")

    monkeypatch.setenv("SSNBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(robustness, "evaluate", broken)
    (tmp_path / "s.yaml").write_text(SUITE)
    out = tmp_path / "res"
    # `python -m ssnbench.job SUITE JOB OUT`: what a SLURM array task or a Ray task runs
    assert job_mod.main([str(tmp_path / "s.yaml"), "ssn__seed0", str(out), "--device", "cpu"]) == 0
    record = read_result(out / "ssn__seed0.json")
    assert record["status"] == "ok" and record["placement"]["launcher"] == "job"
    att = record["attribution"]
    assert att["variants"]["combined"]["pred"] == record["predictions"]["pred"]
    variants = {"combined", "no_clinic", "no_derm", "head_clinic", "head_derm", "head_fused"}
    assert set(att["variants"]) == variants
    assert att["case_ids"] == record["predictions"]["case_ids"] and att["seconds"] > 0
    assert record["robustness"] == {"error": "RuntimeError: shift exploded"}
