"""`ssnbench bench kernels`: the fused shared cross-attention against PyTorch baselines.

For the SSN stage shapes (B=32, 8 heads, 3136/784/196/49 tokens, head dims 32 and 64, bf16) it
times forward and forward+backward of both directions for:
- fused       our Triton op (one launch forward, one or two backward), autotuned
- fused_jit   the same, every launch through Triton's JIT (knob direct_launch=False): shows
              what the direct launch of compiled kernels saves in host time
- fused_fixed the same kernels with the fixed config table (knob autotune=False)
- fused_op    the autotuned kernels called through the torch.library custom op (knob custom_op=True)
- fused_notails the same configs with full tiles for the ragged last blocks (knob tails=False)
(each A/B row runs under `ssnbench.kernels.knobs.override(...)` with its values, METHOD_KNOBS)
- sdpa_2calls torch SDPA once per direction
- sdpa_batched one SDPA call over both directions stacked on the batch (inputs pre-stacked)
- naive       softmax(q kᵀ s) v in plain PyTorch, per direction
- compiled    torch.compile(dynamic=True) of the naive two-direction core
and reports TFLOP/s (FLOPs = 4·B·H·Lq·Lk·D per direction forward, x2 directions; backward ≈ 2.5x
forward), % of the bf16 matmul peak measured in the same run, and the issue's speed floors.

Two timings per method on a GPU, both medians in ms per call:
- eager (host-inclusive): triton.testing.do_bench(..., return_mode="median") of the plain Python
  call, i.e. what a caller sees from eager PyTorch, host launch/dispatch cost included (`fwd_ms`,
  `fwdbwd_ms`);
- graph (device time): the same call captured unrolled (up to 20 times; fewer once the eager call
  takes over 0.25 ms) in one CUDA graph, replayed alone 15 times between CUDA events
  (`fwd_graph_ms`, `fwdbwd_graph_ms`). This is the device time of the kernels with the host launch
  cost removed; there is no L2 flush between the unrolled calls and every method is treated the same
  way. Forward runs under no_grad, forward+backward as torch.autograd.grad(outputs, leaves,
  grad_outputs) (no accumulation into .grad). A method that fails to capture (the torch.compile
  baseline may) gets `fwd_graph_error` / `fwdbwd_graph_error` instead and the rest goes on.
Both are reported because at 49 and 196 tokens an eager call is host-bound (its launches cost more
than its kernels), while inside a CUDA-graphed model block only the device time counts; the speedups
and floors are given under both (`*_graph_*` keys for the graph ones).
On CPU it runs the PyTorch paths at a reduced size with torch.utils.benchmark (eager only) and says
the Triton figures need a GPU.
Knobs (ssnbench.kernels.knobs): SSNBENCH_BENCH_COMPILE=0 skips the torch.compile baseline,
SSNBENCH_PRECOMPILE=0 the parallel precompile of the Triton autotune candidates,
SSNBENCH_BENCH_GRAPH=0 the CUDA-graph timing (as does `run(graph=False)` or the --no-graph flag).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ssnbench.env import environment, pick_device
from ssnbench.errors import UserError
from ssnbench.kernels import knobs

FWD_FLOORS = {49: 2.5, 196: 1.6, 784: 1.4, 3136: 1.25}  # fused fwd vs SDPA per direction
FWDBWD_FLOORS = {49: 1.5, 196: 1.5, 784: 1.5, 3136: 1.2}  # fused fwd+bwd vs best PyTorch baseline
BASELINES = ("sdpa_2calls", "sdpa_batched", "naive", "compiled")
#: The A/B rows: the fused op under these knob values (`knobs.override`).
METHOD_KNOBS: dict[str, dict[str, Any]] = {
    "fused_jit": {"direct_launch": False},  # Triton's JIT launch path on every call
    "fused_fixed": {"autotune": False},  # fixed config table instead of autotuned
    "fused_op": {"custom_op": True},  # through torch.library dispatch (what compile sees)
    "fused_notails": {"tails": False},  # full tiles for the ragged last blocks (A/B)
}

GRAPH_CALLS = 20  # calls unrolled in one CUDA graph (at most)
GRAPH_TARGET_MS = 5.0  # ...fewer when the eager call is long: about this much eager time per replay
GRAPH_REPLAYS = 15  # replays timed, each alone between CUDA events
GRAPH_WARMUP = 3  # calls on a side stream before capture

Inputs = list[Tensor]


def _naive(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    s = torch.matmul(q, k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    return torch.matmul(torch.softmax(s, dim=-1), v)


def _naive_core(q_c: Tensor, k_c: Tensor, v_c: Tensor, q_d: Tensor, k_d: Tensor, v_d: Tensor):
    return _naive(q_c, k_d, v_d), _naive(q_d, k_c, v_c)


def available_methods(gpu: bool) -> dict[str, Callable[[Inputs], Any] | None]:
    """name -> fn(inputs) returning the outputs (a tuple of tensors)."""
    methods: dict[str, Callable[[Inputs], Any] | None] = {}
    if gpu:
        from ssnbench.kernels import shared_cross_attention

        methods["fused"] = lambda x: shared_cross_attention(*x)
        methods["fused_jit"] = lambda x: shared_cross_attention(*x)
        # the same op with knobs changed around it (see METHOD_KNOBS)
        methods["fused_fixed"] = lambda x: shared_cross_attention(*x)
        methods["fused_op"] = lambda x: shared_cross_attention(*x)
        methods["fused_notails"] = lambda x: shared_cross_attention(*x)
    methods["sdpa_2calls"] = lambda x: (
        F.scaled_dot_product_attention(x[0], x[4], x[5]),
        F.scaled_dot_product_attention(x[3], x[1], x[2]),
    )
    methods["sdpa_batched"] = None  # built per shape (pre-stacked inputs, equal token counts only)
    methods["naive"] = lambda x: _naive_core(*x)
    if gpu and knobs.current().bench_compile:
        compiled = torch.compile(_naive_core, dynamic=True)
        methods["compiled"] = lambda x: compiled(*x)
    return methods


def make_timer(gpu: bool, quick: bool) -> Callable[..., float]:
    """Median milliseconds of fn()."""
    if gpu:
        import triton.testing

        def time_gpu(fn: Callable[[], Any], grad_to_none: Inputs | None = None) -> float:
            rep = 40 if quick else 100
            return float(
                triton.testing.do_bench(fn, warmup=10 if quick else 25, rep=rep, grad_to_none=grad_to_none,
                                        return_mode="median")
            )

        return time_gpu
    from torch.utils import benchmark

    def time_cpu(fn: Callable[[], Any], grad_to_none: Inputs | None = None) -> float:
        def run() -> None:
            if grad_to_none:
                for t in grad_to_none:
                    t.grad = None
            fn()

        timer = benchmark.Timer(stmt="run()", globals={"run": run})
        return timer.blocked_autorange(min_run_time=0.05 if quick else 0.3).median * 1e3

    return time_cpu


def graph_ms(fn: Callable[[], Any], calls_per_graph: int = GRAPH_CALLS,
              replays: int = GRAPH_REPLAYS) -> float:
    """Median device milliseconds per fn() call: `calls_per_graph` unrolled calls captured in one CUDA
    graph, `replays` replays each timed alone with CUDA events. The caller sets the grad mode."""
    from ssnbench.models.block_graphs import warmup_stream

    s = warmup_stream(torch.device("cuda", torch.cuda.current_device()))
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up on a side stream, as the CUDA-graph docs require
        for _ in range(GRAPH_WARMUP):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(g):
            for _ in range(calls_per_graph):
                fn()
        g.replay()
        torch.cuda.synchronize()
        times = []
        for _ in range(replays):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            g.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    finally:
        del g
    return statistics.median(times) / calls_per_graph


def graph_calls(eager_ms: float) -> int:
    """Calls per graph: GRAPH_CALLS, fewer for long calls (no host cost left to hide there)."""
    return max(1, min(GRAPH_CALLS, int(GRAPH_TARGET_MS / max(eager_ms, 1e-6))))


def _one_line(err: BaseException) -> str:
    lines = str(err).splitlines()
    return f"{type(err).__name__}: {(lines[0] if lines else '')[:160]}"


def time_graphs(row: dict[str, Any], call: Callable[[], Any], leaves: Inputs, grads: Inputs) -> None:
    """Adds fwd_graph_ms / fwdbwd_graph_ms (or *_graph_error) to `row`, which has the eager times."""

    def fwd_bwd() -> None:
        torch.autograd.grad(call(), leaves, grads)

    for key, fn, grad in (("fwd", call, False), ("fwdbwd", fwd_bwd, True)):
        calls = graph_calls(row[f"{key}_ms"])
        try:
            torch.cuda.empty_cache()  # the graph's private pool cannot use blocks cached outside it
            with torch.set_grad_enabled(grad):
                row[f"{key}_graph_ms"] = graph_ms(fn, calls, GRAPH_REPLAYS)
            row[f"{key}_graph_calls"] = calls
        except Exception as err:  # e.g. a baseline that cannot be captured; the others go on
            row[f"{key}_graph_error"] = _one_line(err)


def _inputs(B: int, H: int, L: int, D: int, dtype: torch.dtype, device: str, grad: bool) -> Inputs:
    """Six random [B, H, L, D] tensors, drawn on the CPU: a CUDA graph capture that fails leaves the
    CUDA generators unusable ("Offset increment outside graph capture") for the rest of the process."""
    g = torch.Generator().manual_seed(0)
    shape = (B, H, L, D)
    return [torch.randn(shape, dtype=dtype, generator=g).to(device).requires_grad_(grad) for _ in range(6)]


def _randn_like(t: Tensor) -> Tensor:
    return torch.randn(t.shape, dtype=t.dtype).to(t.device)


def _flops_fwd(B: int, H: int, L: int, D: int) -> float:
    return 2 * 4.0 * B * H * L * L * D  # both directions


def _measure_peaks(gpu: bool) -> dict[str, float]:
    """The card's bf16 matmul TFLOP/s and copy bandwidth, measured now (the % column's ceiling)."""
    if not gpu:
        return {}
    import triton.testing

    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    ms = triton.testing.do_bench(lambda a=a, b=b: a @ b, warmup=25, rep=200, return_mode="median")
    x = torch.empty(2**28, device="cuda", dtype=torch.float32).uniform_()  # 1 GiB
    y = torch.empty_like(x)
    ms_copy = triton.testing.do_bench(lambda x=x, y=y: y.copy_(x), warmup=10, rep=100, return_mode="median")
    peaks = {"bf16_matmul_tflops": 2 * n**3 / ms / 1e9, "copy_tbps": 2 * x.numel() * 4 / ms_copy / 1e9}
    torch.cuda.empty_cache()
    return peaks


def bench_shape(
    B: int, H: int, L: int, D: int, *, dtype: torch.dtype, device: str,
    methods: dict, timer: Callable, peaks: dict, graph: bool = False,
) -> list[dict[str, Any]]:
    """Eager timings of every method at one shape; with `graph` (GPU only) also CUDA-graph timings."""
    gpu = device == "cuda"
    graph = graph and gpu
    x = _inputs(B, H, L, D, dtype, device, grad=True)
    grads = None
    rows = []
    flops = _flops_fwd(B, H, L, D)
    for name, fn in methods.items():
        row: dict[str, Any] = {"method": name, "B": B, "H": H, "L": L, "D": D}
        row["dtype"] = str(dtype).split(".")[-1]
        if name == "sdpa_batched":
            leaves = [torch.cat([x[i], x[j]]).detach().requires_grad_() for i, j in ((0, 3), (4, 1), (5, 2))]
            make_call = lambda lv: lambda: (F.scaled_dot_product_attention(*lv),)
        else:
            leaves = x
            make_call = lambda lv, fn=fn: lambda: fn(lv)
        call = make_call(leaves)
        try:
            with knobs.override(**METHOD_KNOBS.get(name, {})):  # the A/B rows' knob values
                outs = call()
                grads = [_randn_like(o) for o in outs]
                del outs  # its autograd graph would keep the leaves' AccumulateGrad nodes (default stream)

                def fwd_bwd(call=call, grads=grads) -> None:
                    torch.autograd.backward(call(), grads)

                with torch.no_grad():
                    row["fwd_ms"] = timer(call)
                fwd_bwd()  # compile/tune the backward outside the timing
                row["fwdbwd_ms"] = timer(fwd_bwd, grad_to_none=leaves)
                row["fwd_tflops"] = flops / row["fwd_ms"] / 1e9
                row["fwdbwd_tflops"] = 3.5 * flops / row["fwdbwd_ms"] / 1e9
                if peaks.get("bf16_matmul_tflops"):
                    row["fwd_pct_peak"] = 100 * row["fwd_tflops"] / peaks["bf16_matmul_tflops"]
                    row["fwdbwd_pct_peak"] = 100 * row["fwdbwd_tflops"] / peaks["bf16_matmul_tflops"]
                if name.startswith("fused"):
                    elem = torch.finfo(dtype).bits // 8
                    row["fwd_gbps"] = (8 * B * H * L * D * elem + 2 * B * H * L * 4) / row["fwd_ms"] / 1e6
                if graph:
                    # fresh leaves: their AccumulateGrad nodes are made in the side-stream warm-up; nodes
                    # made on the default stream by the eager timing above break the capture of the
                    # backward (torch warns "AccumulateGrad node's stream does not match")
                    fresh = [t.detach().requires_grad_() for t in leaves]
                    time_graphs(row, make_call(fresh), fresh, grads)
                    if "fwd_graph_ms" in row:
                        row["fwd_graph_tflops"] = flops / row["fwd_graph_ms"] / 1e9
                    if "fwdbwd_graph_ms" in row:
                        row["fwdbwd_graph_tflops"] = 3.5 * flops / row["fwdbwd_graph_ms"] / 1e9
        except torch.OutOfMemoryError:
            row["error"] = "out of memory"
        except Exception as err:  # a baseline failing must not hide the others
            row["error"] = _one_line(err)
        finally:
            for t in leaves:
                t.grad = None
            if gpu:
                torch.cuda.empty_cache()
        rows.append(row)
    return rows


def speedups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per shape: fused vs SDPA-per-direction (fwd) and vs the best PyTorch baseline (fwd+bwd), from the
    eager times and, where the rows have them, from the CUDA-graph times (`*_graph_*` keys)."""
    out = []
    shapes = sorted({(r["L"], r["D"]) for r in rows})
    for L, D in shapes:
        by = {r["method"]: r for r in rows if r["L"] == L and r["D"] == D and "error" not in r}
        fused = by.get("fused")
        if not fused:
            continue
        rec: dict[str, Any] = {"L": L, "D": D}
        if "sdpa_2calls" in by:
            rec["fwd_speedup_vs_sdpa_2calls"] = by["sdpa_2calls"]["fwd_ms"] / fused["fwd_ms"]
        base = [(by[m]["fwdbwd_ms"], m) for m in BASELINES if m in by]
        if base:
            best_ms, best = min(base)
            rec["fwdbwd_best_baseline"] = best
            rec["fwdbwd_speedup_vs_best"] = best_ms / fused["fwdbwd_ms"]
        if L in FWD_FLOORS and "fwd_speedup_vs_sdpa_2calls" in rec:
            rec["fwd_floor"] = FWD_FLOORS[L]
            rec["fwd_floor_met"] = rec["fwd_speedup_vs_sdpa_2calls"] >= FWD_FLOORS[L]
        if L in FWDBWD_FLOORS and "fwdbwd_speedup_vs_best" in rec:
            rec["fwdbwd_floor"] = FWDBWD_FLOORS[L]
            rec["fwdbwd_floor_met"] = rec["fwdbwd_speedup_vs_best"] >= FWDBWD_FLOORS[L]
        if "fwd_graph_ms" in fused and "fwd_graph_ms" in by.get("sdpa_2calls", {}):
            sdpa_ms = by["sdpa_2calls"]["fwd_graph_ms"]
            rec["fwd_graph_speedup_vs_sdpa_2calls"] = sdpa_ms / fused["fwd_graph_ms"]
            if L in FWD_FLOORS:
                rec["fwd_graph_floor_met"] = rec["fwd_graph_speedup_vs_sdpa_2calls"] >= FWD_FLOORS[L]
        base = [(by[m]["fwdbwd_graph_ms"], m) for m in BASELINES if "fwdbwd_graph_ms" in by.get(m, {})]
        if base and "fwdbwd_graph_ms" in fused:
            best_ms, best = min(base)
            rec["fwdbwd_graph_best_baseline"] = best
            rec["fwdbwd_graph_speedup_vs_best"] = best_ms / fused["fwdbwd_graph_ms"]
            if L in FWDBWD_FLOORS:
                rec["fwdbwd_graph_floor_met"] = rec["fwdbwd_graph_speedup_vs_best"] >= FWDBWD_FLOORS[L]
        out.append(rec)
    return out


def graph_enabled(graph: bool | None, gpu: bool) -> bool:
    """CUDA-graph timing: only on a GPU; `graph` None means knob `bench_graph` (SSNBENCH_BENCH_GRAPH)."""
    if graph is None:
        graph = knobs.current().bench_graph
    return bool(graph) and gpu


def run(quick: bool = False, device: str | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        lengths: Sequence[int] | None = None, dims: Sequence[int] | None = None,
        methods: Sequence[str] | None = None, graph: bool | None = None) -> dict[str, Any]:
    """Run the benchmark and return the JSON-able result; `on_progress` gets the partial result
    after every shape (the CLI rewrites --json then, so a run cut short still leaves its rows).
    `methods` picks a subset of the rows (default: all available). `graph` turns the CUDA-graph
    (device time) timing on or off (default: on for a GPU unless SSNBENCH_BENCH_GRAPH=0)."""
    picked = pick_device(device)
    device = picked.type
    gpu = device == "cuda"
    graph = graph_enabled(graph, gpu)
    if gpu:
        B, H, dtype = 32, 8, torch.bfloat16
        default_lengths, default_dims = ((49, 196, 784), (32,)) if quick else ((49, 196, 784, 3136), (32, 64))
    else:
        B, H, dtype = 2, 8, torch.float32
        default_lengths, default_dims = ((49,), (32,)) if quick else ((196, 49), (32, 64))
    lengths = tuple(lengths or default_lengths)
    dims = tuple(dims or default_dims)
    available = available_methods(gpu)
    if methods:
        unknown = sorted(set(methods) - set(available))
        if unknown:
            raise ValueError(f"--methods: unknown or unavailable here: {', '.join(unknown)}; "
                             f"choose from {', '.join(available)}")
        available = {k: v for k, v in available.items() if k in methods}
    methods_run = available
    timer = make_timer(gpu, quick)
    peaks = _measure_peaks(gpu)
    precompiled = None
    if gpu and knobs.current().precompile:
        from ssnbench.kernels.precompile import precompile

        # every autotune candidate compiled in parallel processes first (Triton's disk cache)
        workers = min(8, os.cpu_count() or 1)
        precompiled = precompile(tuple(dims), dtype, H, workers=workers, timeout=90, lengths=tuple(lengths))
        print(f"precompiled Triton candidates: {precompiled}", flush=True)
    rows: list[dict[str, Any]] = []
    env = environment(picked).to_dict()

    def snapshot(complete: bool) -> dict[str, Any]:
        result: dict[str, Any] = {
            "environment": env,
            "device_kind": device,
            "complete": complete,
            "flop_convention": "FLOPs = 2 per multiply-add; forward 4*B*H*Lq*Lk*D per direction x 2 "
            "directions; forward+backward = 3.5x forward",
            "peaks": peaks,
            "precompile": precompiled,
            "graph_timing": {"calls_per_graph_max": GRAPH_CALLS, "target_ms_per_replay": GRAPH_TARGET_MS,
                             "replays": GRAPH_REPLAYS, "warmup": GRAPH_WARMUP} if graph else None,
            "rows": list(rows),
            "speedups": speedups(rows),
            "note": None if gpu else "CPU run at reduced size (B=2, fp32): Triton figures need a GPU.",
        }
        if gpu:
            from ssnbench.kernels import launch

            result["autotune"] = list(launch.TUNING_LOG)
            result["best_configs"] = launch.best_configs()
        return result

    for D in dims:
        for L in lengths:
            rows += bench_shape(B, H, L, D, dtype=dtype, device=device, methods=methods_run, timer=timer,
                                peaks=peaks, graph=graph)
            if on_progress is not None:
                on_progress(snapshot(False))
    return snapshot(True)


def _fmt(v: Any, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


def print_tables(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    env = result["environment"]
    title = (
        f"shared cross-attention, both directions, B={result['rows'][0]['B']} H={result['rows'][0]['H']} "
        f"{result['rows'][0]['dtype']} — {env['device_name']} (torch {env['torch']}, triton {env['triton']})"
    )
    table = Table(title=title)
    graph_keys = ("fwd_graph_ms", "fwdbwd_graph_ms", "fwd_graph_error", "fwdbwd_graph_error")
    graphed = any(k in r for r in result["rows"] for k in graph_keys)
    cols = ("L", "D", "method", "fwd ms", "fwd TFLOP/s", "fwd %peak")
    cols += ("fwd+bwd ms", "f+b TFLOP/s", "f+b %peak")
    if graphed:
        cols += ("fwd graph ms", "fwd graph TFLOP/s", "f+b graph ms", "f+b graph TFLOP/s")
    for col in cols:
        table.add_column(col, justify="left" if col == "method" else "right", no_wrap=col == "method")

    def graph_cells(r: dict[str, Any]) -> list[str]:
        cells = []
        for k in ("fwd", "fwdbwd"):
            ms = "failed" if f"{k}_graph_error" in r else _fmt(r.get(f"{k}_graph_ms"))
            cells += [ms, _fmt(r.get(f"{k}_graph_tflops"), ".2f")]
        return cells if graphed else []

    for r in result["rows"]:
        if "error" in r:
            table.add_row(str(r["L"]), str(r["D"]), r["method"], r["error"], *["-"] * (len(cols) - 4))
            continue
        table.add_row(
            str(r["L"]), str(r["D"]), r["method"], _fmt(r["fwd_ms"]), _fmt(r["fwd_tflops"], ".2f"),
            _fmt(r.get("fwd_pct_peak"), ".1f"), _fmt(r["fwdbwd_ms"]), _fmt(r["fwdbwd_tflops"], ".2f"),
            _fmt(r.get("fwdbwd_pct_peak"), ".1f"), *graph_cells(r),
        )
    console.print(table)
    if graphed:
        console.print("ms columns: eager = host-inclusive (do_bench of the Python call); graph = device time "
                      "per call under CUDA-graph replay (host launch cost removed, no L2 flush).")
    for r in result["rows"]:
        for k in ("fwd", "fwdbwd"):
            if f"{k}_graph_error" in r:
                console.print(f"graph capture failed: L={r['L']} D={r['D']} {r['method']} {k}: "
                              f"{r[f'{k}_graph_error']}", markup=False)
    peaks = result.get("peaks") or {}
    if peaks:
        console.print(
            f"measured ceilings: bf16 matmul {peaks['bf16_matmul_tflops']:.0f} TFLOP/s, "
            f"copy {peaks['copy_tbps']:.2f} TB/s. {result['flop_convention']}"
        )
    cols = ("L", "D", "fwd x SDPA-2calls", "floor", "met", "f+b x best", "best baseline", "floor", "met")
    for title, tag in (("eager, host-inclusive", ""), ("device time, CUDA-graph replay", "_graph")):
        recs = [s for s in result["speedups"]
                if f"fwd{tag}_speedup_vs_sdpa_2calls" in s or f"fwdbwd{tag}_speedup_vs_best" in s]
        if not recs:
            continue
        sp = Table(title=f"fused vs PyTorch, {title} (floors from issue 4)")
        for col in cols:
            sp.add_column(col)
        for s in recs:
            sp.add_row(
                str(s["L"]), str(s["D"]), _fmt(s.get(f"fwd{tag}_speedup_vs_sdpa_2calls"), ".2f"),
                _fmt(FWD_FLOORS.get(s["L"]), ".2f"), str(s.get(f"fwd{tag}_floor_met", "-")),
                _fmt(s.get(f"fwdbwd{tag}_speedup_vs_best"), ".2f"),
                str(s.get(f"fwdbwd{tag}_best_baseline", "-")),
                _fmt(FWDBWD_FLOORS.get(s["L"]), ".2f"), str(s.get(f"fwdbwd{tag}_floor_met", "-")),
            )
        console.print(sp)
    if result.get("note"):
        console.print(f"[yellow]{result['note']}[/yellow]")


def cli(args: argparse.Namespace) -> int:
    path = Path(args.json) if getattr(args, "json", None) else None

    def write(result: dict[str, Any]) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=2, default=str))

    methods = getattr(args, "methods", None)
    graph = False if getattr(args, "no_graph", False) else None  # None: knob bench_graph decides
    try:
        result = run(quick=bool(getattr(args, "quick", False)), on_progress=write,
                     lengths=getattr(args, "lengths", None), dims=getattr(args, "head_dims", None),
                     methods=methods.split(",") if methods else None, graph=graph)
    except ValueError as err:
        raise UserError(str(err)) from None
    write(result)
    print_tables(result)
    return 0
