"""`ssnbench explain` and `ssnbench robustness` on a real (tiny) checkpoint, and their one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ssnbench import cli

SUITE = """\
name: tinyx
dataset: {kind: synthetic, cases: 40, seed: 0, source_size: 32, image_size: 32, border_crop: 2}
train: {epochs: 1, batch_size: 8, warmup_epochs: 0, num_workers: 0, threads: 1}
profile: false
models: [{name: ssn, arch: ssn, options: {backbone: resnet18}}]
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, release) of a one-epoch SSN."""
    from ssnbench.config import load
    from ssnbench.runner import run_suite, synthetic_root

    tmp = tmp_path_factory.mktemp("x")
    mp = pytest.MonkeyPatch()
    mp.setenv("SSNBENCH_CACHE", str(tmp / "cache"))
    try:
        (tmp / "s.yaml").write_text(SUITE)
        suite = load(tmp / "s.yaml")
        assert run_suite(suite, tmp / "res", None, torch.device("cpu")) == 0
        release = synthetic_root(suite.dataset)
    finally:
        mp.undo()
    return tmp / "res" / "ssn__seed0.safetensors", release


def test_explain_writes_figures_and_index(run, tmp_path, capsys) -> None:
    checkpoint, release = run
    out = tmp_path / "ex"
    args = [
        "explain",
        str(checkpoint),
        "--data",
        str(release),
        "--cases",
        "2",
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    assert cli.main(args) == 0
    assert "2 cases ->" in capsys.readouterr().out
    text = (out / "index.md").read_text()
    assert text.count(".png)") == 2 and "log-sum-exp" in text and "true DIAG" in text
    assert len(list(out.glob("case_*.png"))) == 2


def test_robustness_writes_table_json_and_figures(run, tmp_path) -> None:
    checkpoint, release = run
    out = tmp_path / "rob"
    args = [
        "robustness",
        str(checkpoint),
        "--data",
        str(release),
        "--severities",
        "3",
        "--shifts",
        "blur,zoom",
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    assert cli.main(args) == 0
    assert "| ssn | clinic | 1 |" in (out / "robustness.md").read_text()
    data = json.loads((out / "robustness.json").read_text())
    assert set(data["records"][0]["robustness"]["modalities"]["derm"]["shifts"]) == {"blur", "zoom"}
    assert (out / "figures" / "robustness_clinic.png").is_file()


@pytest.mark.parametrize("command", ["explain", "robustness"])
def test_missing_or_incompatible_checkpoint_is_one_line_exit_2(run, tmp_path, capsys, command) -> None:
    checkpoint, release = run
    tail = ["--data", str(release), "--out", str(tmp_path / "o"), "--device", "cpu"]
    assert cli.main([command, str(tmp_path / "nope.safetensors"), *tail]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ssnbench: error:") and "\n" not in err and "nope" in err

    meta = json.loads(checkpoint.with_name("ssn__seed0.checkpoint.json").read_text())
    meta["model"]["options"]["backbone"] = "resnet34"  # the weights no longer fit the model
    bad = tmp_path / "bad.checkpoint.json"
    bad.write_text(json.dumps(meta))
    bad.with_name(meta["weights_file"]).write_bytes(checkpoint.read_bytes())
    assert cli.main([command, str(bad), *tail]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ssnbench: error:") and "\n" not in err and "does not fit" in err
