"""The environment record and the device picker."""

from __future__ import annotations

import dataclasses
import os
import platform
from pathlib import Path

import pytest
import torch

from ssnbench import cli
from ssnbench.env import Environment, environment, pick_device
from ssnbench.errors import UserError

DEMO = Path(__file__).resolve().parents[1] / "suites" / "demo.yaml"


def test_cpu_environment_record() -> None:
    env = environment("cpu")
    data = env.to_dict()
    assert set(data) == {f.name for f in dataclasses.fields(Environment)}
    assert data["device_type"] == "cpu" and data["device_name"].startswith("CPU: ")
    assert data["torch"] == torch.__version__ and data["python"] == platform.python_version()
    assert data["cuda"] is None and data["cpu_count"] == os.cpu_count() and data["cpu_model"]
    assert data["threads"] == torch.get_num_threads() and data["date"].endswith("+00:00")
    assert data["git_commit"] is None or len(data["git_commit"]) == 40


def test_pick_device_defaults_and_cpu() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device(None).type == expected
    assert pick_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(
    ("name", "message"),
    [("tpu", "not a device"), ("cuda:x", "not a device"), ("meta", "unsupported device type")],
)
def test_pick_device_rejects_other_names(name: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        pick_device(name)


def test_missing_cuda_is_a_one_line_user_error(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="no CUDA device is available"):
        pick_device("cuda:0")
    assert cli.main(["run", str(DEMO), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--device cuda: no CUDA device is available" in err


def test_cuda_index_out_of_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(UserError, match=r"has 2 CUDA device\(s\) \(cuda:0..cuda:1\)"):
        pick_device("cuda:2")
