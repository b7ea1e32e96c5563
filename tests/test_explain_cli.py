"""`ssnbench explain` and `ssnbench robustness` on a real (tiny, untrained) checkpoint written the way a
job writes it, and their one-line errors for a missing or incompatible checkpoint."""

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
models: [{name: ssn, arch: ssn, options: {backbone: test_resnet}}]
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SSN checkpoint written by the runner's own `write_checkpoint` (random weights: these tests
    are about the commands, not about what a trained model shows), next to a synthetic release."""
    from ssnbench.config import load
    from ssnbench.data.synthetic import generate
    from ssnbench.models.registry import build_model
    from ssnbench.runner import heads_of, model_data_config, plan, resolve_weights, write_checkpoint

    tmp = tmp_path_factory.mktemp("x")
    release = generate(tmp / "data", cases=40, seed=0, image_size=32)
    (tmp / "s.yaml").write_text(SUITE)
    suite = load(tmp / "s.yaml", check_models=False)
    job = plan(suite)[0]
    torch.manual_seed(0)
    model = build_model(job.model.arch, **job.model.options)
    heads = heads_of(model, 32)
    _, infer_w, scheme = resolve_weights(job.model, heads)
    record = {
        "heads": heads,
        "inference_weights": infer_w,
        "inference_scheme": scheme,
        "dataset": {"kind": "synthetic", "root": str(release), "splits": {}},
        "data_config": {  # what runner.apply_data_config records
            "image_size": 32,
            "border_crop": 2,
            "drop_no_clinic": False,
            "mean": list(model_data_config(job.model)["mean"]),
            "std": list(model_data_config(job.model)["std"]),
            "interpolation": "bicubic",
            "eval_batch_size": 16,
            "amp": False,
            "channels_last": False,
            "tta": None,
        },
        "metrics": {},
        "valid_metrics": {},
        "best_epoch": 0,
        "environment": {},
    }
    write_checkpoint(model, suite=suite, job=job, record=record, out=tmp / "res")
    return tmp / "res" / f"{job.id}.safetensors"


def test_explain_writes_figures_and_index(checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "ex"
    # --data left out: the release recorded in the checkpoint
    assert cli.main(["explain", str(checkpoint), "--cases", "2", "--out", str(out), "--device", "cpu"]) == 0
    assert "2 cases ->" in capsys.readouterr().out
    text = (out / "index.md").read_text()
    assert text.count(".png)") == 2 and "log-sum-exp" in text and "true DIAG" in text
    assert len(list(out.glob("case_*.png"))) == 2


def test_robustness_writes_table_json_and_figures(checkpoint, tmp_path) -> None:
    out = tmp_path / "rob"
    release = json.loads(checkpoint.with_name("ssn__seed0.checkpoint.json").read_text())["dataset"]["root"]
    args = ["robustness", str(checkpoint), "--data", release, "--severities", "3", "--shifts", "blur,zoom",
            "--out", str(out), "--device", "cpu"]
    assert cli.main(args) == 0
    assert "| ssn | clinic | 1 |" in (out / "robustness.md").read_text()
    data = json.loads((out / "robustness.json").read_text())
    assert set(data["records"][0]["robustness"]["modalities"]["derm"]["shifts"]) == {"blur", "zoom"}
    assert (out / "figures" / "robustness_clinic.png").is_file()


def _one_line_exit_2(capsys, code: int, *needles: str) -> None:
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("ssnbench: error:") and "\n" not in err, err
    assert all(n in err for n in needles), err


@pytest.mark.parametrize("command", ["explain", "robustness"])
def test_missing_or_incompatible_checkpoint_is_one_line_exit_2(checkpoint, tmp_path, capsys, command) -> None:
    tail = ["--out", str(tmp_path / "o"), "--device", "cpu"]
    _one_line_exit_2(capsys, cli.main([command, str(tmp_path / "nope.safetensors"), *tail]), "nope")

    meta = json.loads(checkpoint.with_name("ssn__seed0.checkpoint.json").read_text())
    meta["model"]["options"]["backbone"] = "resnet18"  # the weights no longer fit the model
    bad = tmp_path / "bad.checkpoint.json"
    bad.write_text(json.dumps(meta))
    bad.with_name(meta["weights_file"]).write_bytes(checkpoint.read_bytes())
    _one_line_exit_2(capsys, cli.main([command, str(bad), *tail]), "does not fit")

    meta["model"]["options"]["backbone"] = "test_resnet"
    meta["dataset"]["root"] = str(tmp_path / "moved")  # the release it was trained on is gone
    bad.write_text(json.dumps(meta))
    _one_line_exit_2(capsys, cli.main([command, str(bad), *tail]), "give --data RELEASE")
    assert not (tmp_path / "o").exists()  # nothing written
