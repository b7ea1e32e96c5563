"""`ssnbench bench kernels` on CPU: PyTorch baselines at reduced size, JSON written, GPU note."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
from ssnbench.kernels import knobs

from ssnbench import cli
from ssnbench.bench import kernels as bk


def test_bench_kernels_cpu_quick(tmp_path, capsys):
    if torch.cuda.is_available():  # the GPU run is scripts/gpu_check.sh's job (minutes)
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


# --- CUDA-graph (device time) timing: speedups, tables and the knob, on synthetic rows ----------------

def _row(method, L, fwd, fwdbwd, fwd_graph=None, fwdbwd_graph=None, **extra):
    r = {"method": method, "B": 32, "H": 8, "L": L, "D": 32, "dtype": "bfloat16", "fwd_ms": fwd,
         "fwdbwd_ms": fwdbwd, "fwd_tflops": 1.0, "fwdbwd_tflops": 1.0, **extra}
    if fwd_graph is not None:
        r["fwd_graph_ms"], r["fwd_graph_tflops"] = fwd_graph, 2.0
    if fwdbwd_graph is not None:
        r["fwdbwd_graph_ms"], r["fwdbwd_graph_tflops"] = fwdbwd_graph, 2.0
    return r


def _graph_rows():
    # L=49: eager fused is 3x SDPA (floor 2.5 met) but on device only 2x (not met);
    # fwd+bwd eager best is compiled (1.25x, floor 1.5 not met), on device sdpa_batched (1.125x).
    # L=196: device speedups 2.0 (fwd floor 1.6 met) and 1.6 (fwd+bwd floor 1.5 met).
    return [
        _row("fused", 49, 0.1, 0.2, fwd_graph=0.01, fwdbwd_graph=0.04),
        _row("sdpa_2calls", 49, 0.3, 0.5, fwd_graph=0.02, fwdbwd_graph=0.05),
        _row("sdpa_batched", 49, 0.4, 0.6, fwd_graph=0.03, fwdbwd_graph=0.045),
        _row("naive", 49, 0.5, 0.4, fwd_graph=0.04, fwdbwd_graph=0.09),
        _row("compiled", 49, 0.5, 0.25, fwdbwd_graph_error="RuntimeError: capture failed"),
        _row("fused", 196, 0.2, 0.5, fwd_graph=0.1, fwdbwd_graph=0.25),
        _row("sdpa_2calls", 196, 0.3, 0.6, fwd_graph=0.2, fwdbwd_graph=0.4),
        {"method": "naive", "B": 32, "H": 8, "L": 196, "D": 32, "dtype": "bfloat16",
         "error": "out of memory"},
    ]


def _eager_rows():
    """_graph_rows() as a run without graph timing (CPU, or --no-graph) would give them."""
    return [{k: v for k, v in r.items() if "graph" not in k} for r in _graph_rows()]


def _record_run(monkeypatch) -> dict:
    """Replaces ssnbench.bench.kernels.run; returns the dict its keyword arguments are recorded into."""
    seen: dict = {}

    def fake_run(**kw):
        seen.update(kw)
        return _result(_eager_rows())

    monkeypatch.setattr(bk, "run", fake_run)
    return seen


def test_speedups_graph_keys_and_floors():
    sp = {s["L"]: s for s in bk.speedups(_graph_rows())}
    s49, s196 = sp[49], sp[196]
    # eager keys unchanged
    assert s49["fwd_speedup_vs_sdpa_2calls"] == pytest.approx(3.0) and s49["fwd_floor_met"] is True
    assert s49["fwdbwd_best_baseline"] == "compiled"
    assert s49["fwdbwd_speedup_vs_best"] == pytest.approx(1.25) and s49["fwdbwd_floor_met"] is False
    # graph keys from the graph numbers only
    assert s49["fwd_graph_speedup_vs_sdpa_2calls"] == pytest.approx(2.0)
    assert s49["fwd_graph_floor_met"] is False
    assert s49["fwdbwd_graph_best_baseline"] == "sdpa_batched"  # compiled has no graph number
    assert s49["fwdbwd_graph_speedup_vs_best"] == pytest.approx(0.045 / 0.04)
    assert s49["fwdbwd_graph_floor_met"] is False
    assert s196["fwd_graph_speedup_vs_sdpa_2calls"] == pytest.approx(2.0) and s196["fwd_graph_floor_met"]
    assert s196["fwdbwd_graph_best_baseline"] == "sdpa_2calls"
    assert s196["fwdbwd_graph_speedup_vs_best"] == pytest.approx(1.6) and s196["fwdbwd_graph_floor_met"]


def test_speedups_without_graph_numbers_have_no_graph_keys():
    rows = _eager_rows()
    sp = bk.speedups(rows)
    assert sp and all("fwd_speedup_vs_sdpa_2calls" in s for s in sp)
    assert not any("graph" in k for s in sp for k in s)
    # fused without a graph number: no graph speedup even if the baselines have one
    rows = [r if r["method"] != "fused" else _row("fused", r["L"], 0.1, 0.2) for r in _graph_rows()]
    assert not any("graph" in k for s in bk.speedups(rows) for k in s)


def _result(rows):
    env = {"device_name": "test-device", "torch": torch.__version__, "triton": None}
    return {"environment": env, "rows": rows, "peaks": {}, "flop_convention": "", "note": None,
            "speedups": bk.speedups(rows)}


def test_print_tables_with_graph_numbers(capsys):
    bk.print_tables(_result(_graph_rows()))
    out = capsys.readouterr().out
    assert "eager, host-inclusive" in out and "CUDA-graph replay" in out
    assert "graph capture failed" in out and "sdpa_batched" in out


def test_print_tables_without_graph_numbers(capsys):
    rows = _eager_rows()
    bk.print_tables(_result(rows))
    out = capsys.readouterr().out
    assert "eager, host-inclusive" in out and "CUDA-graph" not in out and "graph ms" not in out


def test_graph_knob():
    with knobs.override(bench_graph=True):
        assert bk.graph_enabled(None, gpu=True) is True
        assert bk.graph_enabled(None, gpu=False) is False  # never on CPU
        assert bk.graph_enabled(False, gpu=True) is False
    with knobs.override(bench_graph=False):
        assert bk.graph_enabled(None, gpu=True) is False
    assert bk.graph_calls(0.01) == bk.GRAPH_CALLS and bk.graph_calls(1e3) == 1


def test_cli_no_graph_reaches_run(monkeypatch):
    seen = _record_run(monkeypatch)
    assert bk.cli(argparse.Namespace(json=None, quick=True, methods=None, no_graph=True)) == 0
    assert seen["graph"] is False
    assert bk.cli(argparse.Namespace(json=None, quick=True, methods=None)) == 0
    assert seen["graph"] is None  # default: knob bench_graph (SSNBENCH_BENCH_GRAPH) decides


def test_run_graph_false_accepted_on_cpu():
    result = bk.run(quick=True, device="cpu", lengths=[8], dims=[8], methods=["sdpa_2calls"], graph=False)
    assert result["graph_timing"] is None
    assert not any("graph" in k for r in result["rows"] for k in r)


def test_time_graphs_records_capture_failure(monkeypatch):
    """A method whose capture fails keeps its eager numbers and gets one-line *_graph_error keys."""
    calls = []

    def fake_graph_ms(fn, calls_per_graph, replays):
        calls.append((calls_per_graph, torch.is_grad_enabled()))
        if torch.is_grad_enabled():
            raise RuntimeError("capture failed\nsecond line")
        return 0.5

    monkeypatch.setattr(bk, "graph_ms", fake_graph_ms)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    row = {"fwd_ms": 0.1, "fwdbwd_ms": 2.0}
    bk.time_graphs(row, lambda: None, [], [])
    assert row["fwd_graph_ms"] == 0.5 and row["fwd_graph_calls"] == bk.GRAPH_CALLS
    assert row["fwdbwd_graph_error"] == "RuntimeError: capture failed"
    assert "fwdbwd_graph_ms" not in row
    assert calls == [(bk.GRAPH_CALLS, False), (2, True)]  # fwd under no_grad, fwd+bwd with grad


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_graph_ms_on_cuda():
    x = torch.randn(256, 256, device="cuda", requires_grad=True)
    g = torch.randn(256, 256, device="cuda")
    with torch.no_grad():
        ms = bk.graph_ms(lambda: x @ x, calls_per_graph=4, replays=3)
    assert math.isfinite(ms) and ms > 0
    ms = bk.graph_ms(lambda: torch.autograd.grad((x @ x,), [x], [g]), calls_per_graph=4, replays=3)
    assert math.isfinite(ms) and ms > 0
    assert x.grad is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bench_shape_graph_timings_on_cuda():
    """The real per-shape path: eager timings first (which leave autograd state on the default
    stream), then graph timings of forward and forward+backward, for the fused op and SDPA."""
    keep = ("fused", "sdpa_2calls", "sdpa_batched")
    methods = {k: v for k, v in bk.available_methods(gpu=True).items() if k in keep}
    timer = bk.make_timer(gpu=True, quick=True)
    rows = bk.bench_shape(
        2, 2, 49, 32, dtype=torch.bfloat16, device="cuda", methods=methods, timer=timer, peaks={}, graph=True
    )
    assert [r["method"] for r in rows] == ["fused", "sdpa_2calls", "sdpa_batched"]
    for r in rows:
        assert "error" not in r, r
        for k in ("fwd", "fwdbwd"):
            assert f"{k}_graph_error" not in r, r
            assert math.isfinite(r[f"{k}_graph_ms"]) and r[f"{k}_graph_ms"] > 0, r
    torch.randn(4, device="cuda")  # the CUDA generator still works afterwards


def test_no_graph_flag_is_parsed(monkeypatch):
    seen = _record_run(monkeypatch)
    assert cli.main(["bench", "kernels", "--quick", "--no-graph"]) == 0
    assert seen["graph"] is False
