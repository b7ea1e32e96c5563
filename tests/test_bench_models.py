"""`ssnbench bench models`: outputs carry the environment, OOM rows, bad suite path."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from ssnbench.bench import models as bench_models
from ssnbench.cli import main


class _Toy(nn.Module):
    modalities = ("clinic", "derm")

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, width, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(width, 5)

    def parts(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "cross_attention": nn.Identity(), "heads": self.head}

    def forward(self, clinic: torch.Tensor, derm: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        return {"clinic": [self.head(self.encoder(clinic))], "derm": [self.head(self.encoder(derm))]}


def _fake_suite(name: str = "tiny") -> SimpleNamespace:
    models = (SimpleNamespace(name="toy-a", arch="ssn", options={"width": 4}),
              SimpleNamespace(name="toy-b", arch="dual", options={"width": 8}))
    return SimpleNamespace(name=name, models=models, reference="toy-a",
                           dataset=SimpleNamespace(image_size=16),
                           profile=SimpleNamespace(warmup=0, iters=2))


@pytest.fixture
def fake_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_models, "load_suite", lambda path: _fake_suite())
    monkeypatch.setattr(bench_models, "build", lambda arch, options: _Toy(**options))


def test_cli_writes_csv_json_md_with_environment(fake_suite: None, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    json_copy = tmp_path / "copy.json"
    code = main(["bench", "models", "--suite", "x.yaml", "--batch-sizes", "1,2", "--device", "cpu",
                 "--out", str(tmp_path), "--json", str(json_copy)])
    assert code == 0
    tag = f"torch{torch.__version__.split('+')[0]}"
    files = sorted(p.name for p in tmp_path.glob("bench_models_tiny_*"))
    assert len(files) == 3 and all(tag in f and "cpu" in f for f in files), files
    stem = files[0].rsplit(".", 1)[0]
    md = (tmp_path / f"{stem}.md").read_text()
    header = md.splitlines()[0]
    data = json.loads(json_copy.read_text())
    env = data["environment"]  # ssnbench.env's record
    assert env["torch"] == torch.__version__ and env["device_type"] == "cpu"
    assert "torch " + torch.__version__ in header and "triton" in header and env["device_name"] in header
    assert "GMACs" in md and "| toy-b | 2 |" in md
    rows = data["rows"]
    assert [(r["model"], r["infer_batch_size"]) for r in rows] == [("toy-a", 1), ("toy-a", 2),
                                                                   ("toy-b", 1), ("toy-b", 2)]
    for r in rows:
        for col in ("infer_samples_per_sec", "infer_step_time", "infer_step_time_spread", "infer_img_size",
                    "infer_gmacs", "param_count", "train_samples_per_sec", "train_step_time",
                    "train_peak_memory_mb"):
            assert col in r
        assert r["infer_status"] == r["train_status"] == "ok"
        assert r["infer_img_size"] == 16
    assert rows[0]["train_speedup_vs_reference"] == 1.0
    with (tmp_path / f"{stem}.csv").open() as fh:
        first = fh.readline()
        assert first.startswith(f"# device {env['device_name']}") and "torch" in first
        table = list(csv.DictReader(fh))
    assert len(table) == 4 and table[0]["model"] == "toy-a"
    out = capsys.readouterr().out
    assert "toy-b" in out and "wrote md" in out


def test_oom_batch_size_recorded_and_sweep_goes_on(fake_suite: None, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # simulate inside the profiled model so the real OOM path of measure_throughput is exercised
    original_forward = _Toy.forward

    def forward(self: _Toy, clinic: torch.Tensor, derm: torch.Tensor) -> dict:
        if clinic.shape[0] == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
        return original_forward(self, clinic, derm)

    monkeypatch.setattr(_Toy, "forward", forward)
    code = main(["bench", "models", "--suite", "x.yaml", "--batch-sizes", "1,2,3", "--device", "cpu",
                 "--out", str(tmp_path)])
    assert code == 0  # OOM is a result, not a failure
    data = json.loads(next(tmp_path.glob("*.json")).read_text())
    status = [(r["model"], r["infer_batch_size"], r["infer_status"], r["train_status"]) for r in data["rows"]]
    assert ("toy-a", 2, "oom", "oom") in status and ("toy-a", 3, "ok", "ok") in status
    md = next(tmp_path.glob("*.md")).read_text()
    assert "OOM" in md and "out of memory" in md


def test_bad_suite_path_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "models", "--suite", str(tmp_path / "missing.yaml"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("ssnbench: error:") and "missing.yaml" in err


def test_cuda_requested_without_cuda_is_a_user_error(fake_suite: None,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert main(["bench", "models", "--suite", "x.yaml", "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_env_tag_is_file_name_safe() -> None:
    env = {"device_name": "NVIDIA H200 (SXM)", "device_type": "cuda", "torch": "2.11.0+cu130",
           "triton": "3.6.0"}
    assert bench_models.env_tag(env) == "NVIDIA-H200-SXM_torch2.11.0_triton3.6.0"


def test_cli_on_a_real_tiny_suite(tmp_path: Path) -> None:
    """The real path: suite parsed by ssnbench.config, model built by the registry."""
    suite = tmp_path / "tiny.yaml"
    suite.write_text(
        "name: tiny-real\n"
        "dataset: {kind: synthetic, image_size: 32}\n"
        "profile: {warmup: 0, iters: 1}\n"
        "models:\n"
        "  - {name: ssn-r18, arch: ssn, options: {backbone: resnet18, xattn: shared, xattn_impl: sdpa}}\n"
    )
    out = tmp_path / "out"
    assert main(["bench", "models", "--suite", str(suite), "--batch-sizes", "1", "--device", "cpu",
                 "--out", str(out)]) == 0
    row = json.loads(next(out.glob("bench_models_tiny-real_cpu_*.json")).read_text())["rows"][0]
    assert row["infer_status"] == row["train_status"] == "ok"
    assert row["infer_gmacs"] > 0 and row["params_cross_attention"] > 0
    assert row["params"] == row["params_encoder"] + row["params_cross_attention"] + row["params_heads"]


def test_rounds_interleave_models_and_take_medians(fake_suite: None, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """--rounds N measures every model N times, the order rotated each round, and reports medians."""
    order: list[str] = []
    speeds = iter([10.0, 20.0, 30.0, 40.0, 11.0, 21.0, 31.0, 41.0, 12.0, 22.0, 32.0, 42.0])

    def fake_measure(model, batch, image_size, device, train, **kw):
        order.append(f"{model.head.in_features}-{'train' if train else 'infer'}")
        return {"status": "ok", "samples_per_sec": next(speeds), "step_time_ms": 1.0,
                "step_time_spread_ms": 0.0, "peak_memory_mb": 5.0 + len(order), "modalities": 2}

    monkeypatch.setattr(bench_models.profiling, "measure_throughput", fake_measure)
    code = main(["bench", "models", "--suite", "x.yaml", "--batch-sizes", "1", "--device", "cpu",
                 "--out", str(tmp_path), "--json", str(tmp_path / "r.json"), "--rounds", "3"])
    assert code == 0
    # width 4 is toy-a, 8 is toy-b: a,b then b,a then a,b
    assert [o.split("-")[0] for o in order[::2]] == ["4", "8", "8", "4", "4", "8"]
    rows = {r["model"]: r for r in json.loads((tmp_path / "r.json").read_text())["rows"]}
    a, b = rows["toy-a"], rows["toy-b"]
    assert a["rounds"] == 3
    assert a["infer_round_samples_per_sec"] == [10.0, 31.0, 12.0] and a["infer_samples_per_sec"] == 12.0
    assert b["train_round_samples_per_sec"] == [40.0, 21.0, 42.0] and b["train_samples_per_sec"] == 40.0
    assert b["train_rounds_spread"] == 21.0
    assert a["train_peak_memory_mb"] == 5.0 + 10  # the largest of its rounds (10th measurement)
    md = next(tmp_path.glob("bench_models_tiny_*.md")).read_text()
    assert "round-robin" in md
