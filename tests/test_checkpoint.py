"""Checkpoints and `ssnbench predict`: a run's checkpoint re-evaluated on its own test split gives the
result file's accuracies exactly; pairs CSVs; one-line errors for missing or foreign checkpoints."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from ssnbench import cli
from ssnbench.checkpoint import CheckpointError, load_checkpoint
from ssnbench.config import load
from ssnbench.data.cache import synthetic_root
from ssnbench.data.labels import LABELS
from ssnbench.driver import run_suite
from ssnbench.predict import predict_checkpoint
from ssnbench.progress import Progress
from ssnbench.results import read_result

SUITE = """\
name: tiny-ckpt
dataset: {kind: synthetic, cases: 40, seed: 0, source_size: 32, image_size: 32, border_crop: 2}
train: {epochs: 1, batch_size: 8, eval_batch_size: 7, lr: 1.0e-3, warmup_epochs: 0.5, num_workers: 0,
        threads: 1}
seeds: [0]
profile: false
eval: {tta: TTA}
models:
  - {name: ssn, arch: ssn, options: {backbone: resnet18}}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """One tiny run (no TTA) whose checkpoint the tests below read."""
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("ckpt")
    mp.setenv("SSNBENCH_CACHE", str(tmp / "cache"))
    suite_file = tmp / "tiny.yaml"
    suite_file.write_text(SUITE.replace("TTA", "none"))
    suite = load(suite_file)
    out = tmp / "results"
    assert run_suite(suite, out, None, torch.device("cpu"), progress=Progress()) == 0
    root = synthetic_root(suite.dataset)
    record = read_result(out / "ssn__seed0.json")
    yield out, root, record
    mp.undo()


def test_run_writes_a_checkpoint_that_reproduces_the_test_accuracies(run) -> None:
    out, root, record = run
    assert record["checkpoint"]["weights"] == "ssn__seed0.safetensors"
    # timm's conventions, recorded: data config of the backbone, weights, parameter groups
    assert record["data_config"]["interpolation"] == "bicubic" and len(record["data_config"]["mean"]) == 3
    assert record["weights"]["tag"] is None and record["weights"]["source"] == "random init"
    assert {g["weight_decay"] for g in record["optimizer"]["groups"]} == {0.0, 0.05}
    model, meta = load_checkpoint(out / "ssn__seed0.safetensors")
    assert not model.training and meta["labels"] == list(LABELS) and meta["model"]["arch"] == "ssn"
    assert meta["data"]["image_size"] == 32 and meta["data"]["eval_batch_size"] == 7
    assert meta["weights_sha256"] == record["checkpoint"]["sha256"]
    preds, _, _ = predict_checkpoint(out / "ssn__seed0.checkpoint.json", data_root=root, split="test")
    from ssnbench.metrics import evaluate

    metrics = evaluate(preds.probs, preds.labels)
    for key in [f"acc_{k}" for k in LABELS] + ["acc_avg"]:
        assert metrics[key] == record["metrics"][key], key  # exactly, not approximately
    assert preds.case_ids == record["predictions"]["case_ids"]


def test_predict_cli_split_and_pairs(run, tmp_path: Path, capsys) -> None:
    out, root, record = run
    csv_out = tmp_path / "pred.csv"
    assert cli.main(["predict", str(out / "ssn__seed0.safetensors"), "--data", str(root),
                     "--out", str(csv_out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "matches the run's test accuracies exactly" in printed
    rows = list(csv.DictReader(csv_out.open()))
    assert len(rows) == record["dataset"]["splits"]["test"]
    assert {"DIAG_pred", "DIAG_true", "DIAG_p_MEL", "RS_p_PRS", "PN_p_ATP"} <= set(rows[0])
    assert abs(sum(float(rows[0][f"DIAG_p_{c}"]) for c in ("BCC", "NEV", "MEL", "MISC", "SK")) - 1) < 1e-4

    # unlabelled pairs: the first three test cases, by path, give the same probabilities
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("case_id,clinic,derm\n" + "".join(f"{r['case_id']},{r['clinic']},{r['derm']}\n"
                                                       for r in rows[:3]))
    pairs_out = tmp_path / "pairs_pred.csv"
    assert cli.main(["predict", str(out / "ssn__seed0.safetensors"), "--pairs", str(pairs),
                     "--out", str(pairs_out), "--device", "cpu"]) == 0
    got = list(csv.DictReader(pairs_out.open()))
    assert [g["case_id"] for g in got] == [r["case_id"] for r in rows[:3]] and "DIAG_true" not in got[0]
    for g, r in zip(got, rows, strict=False):
        assert abs(float(g["DIAG_p_NEV"]) - float(r["DIAG_p_NEV"])) < 1e-5 and g["PN_pred"] == r["PN_pred"]


def test_missing_and_incompatible_checkpoints_are_one_line_errors(run, tmp_path: Path, capsys) -> None:
    out, root, _ = run
    assert cli.main(["predict", str(tmp_path / "nope.safetensors"), "--data", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no checkpoint here" in err

    # a checkpoint JSON whose model spec no longer matches the weights
    meta = json.loads((out / "ssn__seed0.checkpoint.json").read_text())
    meta["model"]["options"]["backbone"] = "resnet34"
    bad = tmp_path / "bad.checkpoint.json"
    bad.write_text(json.dumps(meta))
    (tmp_path / meta["weights_file"]).write_bytes((out / meta["weights_file"]).read_bytes())
    with pytest.raises(CheckpointError, match="does not fit model 'ssn'"):
        load_checkpoint(bad)
    assert cli.main(["predict", str(bad), "--data", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing tensors" in err

    # a newer schema and a truncated weights file
    meta["schema"] = 99
    bad.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="schema 99"):
        load_checkpoint(bad)
    meta["schema"] = 1
    meta["model"]["options"]["backbone"] = "resnet18"
    bad.write_text(json.dumps(meta))
    (tmp_path / meta["weights_file"]).write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(bad)
    assert cli.main(["predict", str(out / "ssn__seed0.safetensors")]) == 2  # neither --data nor --pairs


def test_checkpoint_off_and_tta_recorded(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SSNBENCH_CACHE", str(tmp_path / "cache"))
    suite_file = tmp_path / "tiny.yaml"
    suite_file.write_text(SUITE.replace("TTA", "flips") + "checkpoint: false\n")
    suite = load(suite_file)
    assert suite.eval.tta == "flips" and suite.checkpoint is False
    out = tmp_path / "results"
    assert run_suite(suite, out, tmp_path / "rep", torch.device("cpu"), progress=Progress()) == 0
    record = read_result(out / "ssn__seed0.json")
    assert record["eval"] == {"tta": "flips"} and "checkpoint" not in record
    assert not list(out.glob("*.safetensors")) and not list(out.glob("*.checkpoint.json"))
    assert "tta" in (tmp_path / "rep" / "report.md").read_text().lower()
