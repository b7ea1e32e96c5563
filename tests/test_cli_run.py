"""`ssnbench run` options: --models/--seeds/--set (validated like the YAML, recorded), --device cuda:N,
--dry-run, --version, the per-epoch history CSV, TensorBoard and help texts."""

from __future__ import annotations

import builtins
import csv
from pathlib import Path

import pytest

from ssnbench import cli
from ssnbench.config import load
from ssnbench.results import read_result

SUITE = """\
name: opts
dataset: {kind: synthetic, cases: 40, seed: 0, source_size: 32, image_size: 32, border_crop: 2}
train: {epochs: 3, batch_size: 8, lr: 1.0e-3, warmup_epochs: 0.5, num_workers: 0, threads: 1}
seeds: [0, 1, 2]
profile: false
checkpoint: false
model_defaults: {options: {backbone: resnet18}}
models:
  - {name: ssn, arch: ssn}
  - {name: single-derm, arch: single, options: {modality: derm}}
  - {name: dual, arch: dual}
"""


@pytest.fixture()
def suite_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SSNBENCH_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "opts.yaml"
    path.write_text(SUITE)
    return path


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_overrides_are_validated_like_the_file(suite_file: Path) -> None:
    suite = load(suite_file, overrides=["train.epochs=1", "models.*.options.drop_rate=0.1",
                                        "models.ssn.options.xattn=none", "eval.tta=flips"],
                 only_models=["ssn", "dual"])
    assert suite.train.epochs == 1 and [m.name for m in suite.models] == ["ssn", "dual"]
    assert all(m.options["drop_rate"] == 0.1 for m in suite.models)
    assert suite.models[0].options["xattn"] == "none" and suite.eval.tta == "flips"
    assert suite.overrides[0] == "train.epochs=1"


@pytest.mark.parametrize(
    "args, match",
    [
        (["--set", "train.epoch=1"], "train.epoch: unknown key"),
        (["--set", "train.epochs=zero"], "train.epochs: expected an integer"),
        (["--set", "train.epochs"], "expected KEY.PATH=VALUE"),
        (["--set", "models.sn.options.xattn=none"], "no model named 'sn'.*did you mean 'ssn'"),
        (["--models", "ssn,dul"], "--models: no model named 'dul'"),
        (["--device", "cuda:7"], "--device cuda:7"),
        (["--device", "gpu"], "expected cpu, cuda or cuda:N"),
    ],
)
def test_bad_options_are_one_line_errors(suite_file: Path, tmp_path: Path, capsys, args, match) -> None:
    assert cli.main(["run", str(suite_file), "--out", str(tmp_path / "o"), *args]) == 2
    import re

    assert re.search(match, _one_line_error(capsys))
    assert not (tmp_path / "o").exists()


def test_partial_run_history_tensorboard_and_dry_run(suite_file: Path, tmp_path: Path, capsys) -> None:
    out, tb, JOB = tmp_path / "o", tmp_path / "tb", "single-derm__seed2"
    args = ["run", str(suite_file), "--out", str(out), "--report-dir", str(tmp_path / "r"),
            "--models", "single-derm", "--seeds", "2", "--set", "train.epochs=2", "--device", "cpu"]
    assert cli.main([*args, "--tensorboard", str(tb)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"{JOB}.history.csv", f"{JOB}.json"]
    record = read_result(out / "single-derm__seed2.json")
    assert record["overrides"] == ["train.epochs=2", "seeds=[2]"] and record["train"]["epochs"] == 2
    rows = list(csv.DictReader((out / "single-derm__seed2.history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["valid_acc_avg"]) == pytest.approx(record["history"][1]["valid_acc_avg"])
    assert list((tb / "opts" / "single-derm__seed2").glob("events.out.tfevents.*"))
    text = (tmp_path / "r" / "report.md").read_text()
    assert "`--set train.epochs=2`" in text
    printed = capsys.readouterr().out
    assert "ETA" in printed

    # the plan: the finished job is skipped, the others would run; an estimate from the finished one
    assert cli.main(["run", str(suite_file), "--out", str(out), "--set", "train.epochs=2",
                     "--models", "single-derm,ssn", "--seeds", "1,2", "--dry-run", "--device", "cpu"]) == 0
    plan = capsys.readouterr().out
    assert "4 jobs, 3 to run, 1 to skip" in plan
    assert "single-derm__seed2" in plan and "result exists" in plan and "no result yet" in plan
    assert "GMACs" in plan and "random init" in plan and "est. per job" in plan
    assert "estimated training time: n/a for models without an earlier run on this device (ssn)" in plan
    assert sorted(p.name for p in out.iterdir()) == [f"{JOB}.history.csv", f"{JOB}.json"]


def test_tensorboard_missing_names_the_extra(suite_file: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard") or name.startswith("tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    assert cli.main(["run", str(suite_file), "--out", str(tmp_path / "o"), "--tensorboard",
                     str(tmp_path / "tb"), "--device", "cpu"]) == 2
    assert "pip install 'ssnbench[track]'" in _one_line_error(capsys)


def test_version_and_help_texts(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("ssnbench ")
    for cmd in (["run"], ["report"], ["predict"], ["data", "make"], ["data", "check"],
                ["bench", "kernels"], ["bench", "models"]):
        with pytest.raises(SystemExit):
            cli.main([*cmd, "--help"])
        text = capsys.readouterr().out
        assert "example:" in text and "ssnbench " + cmd[0] in text, cmd
