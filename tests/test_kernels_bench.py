"""`ssnbench bench kernels` on CPU: PyTorch baselines at reduced size, JSON written, GPU note."""

from __future__ import annotations

import json

import torch

from ssnbench import cli


def test_bench_kernels_cpu_quick(tmp_path, capsys):
    if torch.cuda.is_available():  # the GPU run is scripts/gpu_check.sh's job (minutes)
        import pytest

        pytest.skip("CPU smoke test")
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "kernels", "--quick", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    methods = {r["method"] for r in result["rows"]}
    assert {"sdpa_2calls", "sdpa_batched", "naive"} <= methods
    assert all(r["fwd_ms"] > 0 and r["fwdbwd_ms"] > 0 for r in result["rows"])
    assert "need a GPU" in result["note"]
    assert result["environment"]["torch"] == torch.__version__
    assert "Triton figures need a GPU" in capsys.readouterr().out
