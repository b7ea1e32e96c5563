"""The runner: one result file per job, resume, --force, failure isolation, Ctrl-C, atomic writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ssnbench import cli
from ssnbench.config import load
from ssnbench.data.cache import synthetic_root
from ssnbench.driver import run_suite
from ssnbench.results import read_result, write_json_atomic
from ssnbench.runner import plan

SUITE = """\
name: tiny
dataset: {kind: synthetic, cases: 40, seed: 0, source_size: 32, image_size: 32, border_crop: 2}
train: {epochs: 1, batch_size: 8, lr: 1.0e-3, warmup_epochs: 0.5, num_workers: 0, threads: 1}
seeds: [0]
profile: {batch_size: 2, warmup: 0, iters: 1}
model_defaults: {options: {backbone: resnet18}}
models:
  - {name: ssn, arch: ssn}
  - {name: single-derm, arch: single, options: {modality: derm}}
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture()
def suite_file(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SSNBENCH_CACHE", str(cache))
    path = tmp_path / "tiny.yaml"
    path.write_text(SUITE)
    return path


def _mtimes(out: Path) -> dict[str, int]:
    """Result files only (a run also writes <job>.checkpoint.json beside them)."""
    return {
        p.name: p.stat().st_mtime_ns
        for p in sorted(out.glob("*.json"))
        if not p.name.endswith(".checkpoint.json")
    }


def test_run_resume_force_and_report(suite_file: Path, tmp_path: Path, capsys) -> None:
    out, rep = tmp_path / "results", tmp_path / "report"
    args = ["run", str(suite_file), "--out", str(out), "--report-dir", str(rep), "--device", "cpu"]
    assert cli.main(args) == 0
    first = _mtimes(out)
    assert set(first) == {"ssn__seed0.json", "single-derm__seed0.json"}
    record = read_result(out / "ssn__seed0.json")
    assert record is not None and record["status"] == "ok"
    assert set(record["metrics"]) >= {"acc_avg", "acc_DIAG", "acc_RS", "diag_auc_macro", "mel_specificity"}
    assert record["dataset"]["kind"] == "SYNTHETIC" and record["dataset"]["splits"]["test"] > 0
    assert record["profile"]["params"]["total"] > 0 and record["profile"]["train"]["samples_per_sec"] > 0
    assert record["environment"]["torch"] and record["history"][0]["epoch"] == 1
    n_test = record["dataset"]["splits"]["test"]
    predictions = record["predictions"]
    assert len(predictions["pred"]) == n_test and len(predictions["diag_probs"][0].split()) == 5
    assert record["heads"] == ["clinic", "derm", "fused"] and record["loss_weights"]["derm"] == pytest.approx(
        0.5
    )
    text = (rep / "report.md").read_text()
    assert "SYNTHETIC" in text and "| ssn |" in text and "ssn − single-derm" in text
    # modality attribution: computed in the job for two-image models only, shown in the report
    assert record["attribution"]["variants"]["combined"]["pred"] == predictions["pred"]
    assert read_result(out / "single-derm__seed0.json").get("attribution") is None
    assert "| ssn | clinical photo withheld |" in text and (rep / "figures" / "attribution.png").is_file()
    capsys.readouterr()

    # resume: nothing re-runs
    assert cli.main(args) == 0
    assert _mtimes(out) == first
    assert "2 jobs, 0 to run, 2 already done" in capsys.readouterr().out

    # --force re-runs everything, with the same numbers (deterministic on CPU)
    assert cli.main([*args, "--force"]) == 0
    again = _mtimes(out)
    assert all(again[k] != first[k] for k in first)
    assert read_result(out / "ssn__seed0.json")["metrics"] == record["metrics"]

    # a changed suite entry re-runs only what it affects
    suite_file.write_text(
        SUITE.replace("options: {modality: derm}", "options: {modality: derm, drop_rate: 0.1}")
    )
    assert cli.main(args) == 0
    changed = _mtimes(out)
    assert changed["ssn__seed0.json"] == again["ssn__seed0.json"]
    assert changed["single-derm__seed0.json"] != again["single-derm__seed0.json"]


def test_failing_job_does_not_stop_the_suite(suite_file: Path, tmp_path: Path, monkeypatch) -> None:
    import ssnbench.models.registry as registry

    suite = load(suite_file)
    real = registry.build_model

    def flaky(arch: str, **options):
        # fails at the job's real build, not at the pre-flight's shape check on the meta device
        if arch == "ssn" and __import__("torch").empty(()).device.type != "meta":
            raise RuntimeError("boom: simulated failure at build")
        return real(arch, **options)

    monkeypatch.setattr(registry, "build_model", flaky)
    from ssnbench.progress import Progress

    out, rep = tmp_path / "results", tmp_path / "report"
    code = run_suite(suite, out, rep, __import__("torch").device("cpu"), progress=Progress())
    assert code == 1
    failed = read_result(out / "ssn__seed0.json")
    assert failed["status"] == "failed" and failed["error"]["type"] == "RuntimeError"
    assert "boom" in failed["error"]["message"] and "Traceback" in failed["error"]["traceback"]
    assert read_result(out / "single-derm__seed0.json")["status"] == "ok"
    text = (rep / "report.md").read_text()
    assert "## 7. Failed runs" in text and "boom: simulated failure at build" in text

    # the failed job is retried on the next invocation; the finished one is not
    monkeypatch.setattr(registry, "build_model", real)
    done = (out / "single-derm__seed0.json").stat().st_mtime_ns
    assert run_suite(suite, out, rep, __import__("torch").device("cpu"), progress=Progress()) == 0
    assert read_result(out / "ssn__seed0.json")["status"] == "ok"
    assert (out / "single-derm__seed0.json").stat().st_mtime_ns == done


def test_ctrl_c_leaves_no_partial_file_and_exits_130(
    suite_file: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    import ssnbench.train as train

    real, calls = train.fit, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "fit", interrupted)
    out = tmp_path / "results"
    code = cli.main(["run", str(suite_file), "--out", str(out), "--report-dir", str(tmp_path / "r")])
    assert code == 130
    # the finished job's files kept (result, checkpoint, history), nothing of the interrupted one
    # (stopped before its first epoch), no temp files
    assert sorted(p.name for p in out.iterdir()) == [
        "ssn__seed0.checkpoint.json",
        "ssn__seed0.history.csv",
        "ssn__seed0.json",
        "ssn__seed0.safetensors",
    ]
    assert read_result(out / "ssn__seed0.json")["status"] == "ok"


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    write_json_atomic(path, {"schema": 1, "ok": True})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"schema": 1, "bad": object()})
    assert json.loads(path.read_text()) == {"schema": 1, "ok": True}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_interrupted_generation_is_not_reused(tmp_path: Path, monkeypatch) -> None:
    from ssnbench.config import DatasetSpec
    from ssnbench.data import synthetic

    spec = DatasetSpec(kind="synthetic", cases=30, seed=1, source_size=24, image_size=24, border_crop=1)
    real = synthetic.generate

    def dies(out, **kwargs):
        real(out, **kwargs)
        raise KeyboardInterrupt  # after writing everything, before the rename

    monkeypatch.setattr(synthetic, "generate", dies)
    with pytest.raises(KeyboardInterrupt):
        synthetic_root(spec, tmp_path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(synthetic, "generate", real)
    root = synthetic_root(spec, tmp_path)
    assert (root / "meta" / "meta.csv").is_file()


def test_plan_is_one_job_per_model_and_seed(suite_file: Path) -> None:
    suite = load(suite_file)
    jobs = plan(suite)
    assert [j.id for j in jobs] == ["ssn__seed0", "single-derm__seed0"]


def test_result_files_are_standard_json(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    write_json_atomic(path, {"schema": 1, "metrics": {"diag_auc_macro": float("nan"), "acc_avg": 0.5}})
    assert "NaN" not in path.read_text()
    assert json.loads(path.read_text())["metrics"] == {"diag_auc_macro": None, "acc_avg": 0.5}


def test_nan_inducing_lr_is_a_recorded_failure(suite_file: Path, tmp_path: Path, capsys) -> None:
    suite_file.write_text(
        SUITE.replace("lr: 1.0e-3", "lr: 1.0e+30").replace("  - {name: ssn, arch: ssn}\n", "")
    )
    out, rep = tmp_path / "results", tmp_path / "report"
    assert cli.main(["run", str(suite_file), "--out", str(out), "--report-dir", str(rep)]) == 1
    record = read_result(out / "single-derm__seed0.json")
    assert record["status"] == "failed" and record["error"]["type"] == "NonFiniteLossError"
    # which step first goes non-finite depends on the optimiser's parameter groups; the line names it
    assert re.search(r"loss diverged at epoch 1, step [12] \(loss (nan|inf)", record["error"]["message"])
    text = (rep / "report.md").read_text()
    assert "NonFiniteLossError" in text and "SYNTHETIC" in text
