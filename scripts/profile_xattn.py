"""Where does the time of SSN's cross-attention go? A GPU diagnostic, one call.

1. Host (CPU) cost per call of the fused op (direct kernel launch on and off) and of SDPA at the
   SSN stage shapes: launches are queued without synchronising, so the figure is the Python +
   launch overhead per call; then a cProfile of the op's forward+backward by Python function.
2. The cross-attention block per impl and path (stacked / pair) at SSN-R50's three stage shapes:
   host µs and synced ms per forward+backward.
3. One SSN-ResNet50 training step (B=32 per modality, bf16 autocast, channels_last) per
   cross-attention impl under torch.profiler: step time, and the CUDA kernels that take the most
   device time (and a table by host time), so a slow kernel and a host-bound step can be told apart.

    python scripts/profile_xattn.py [--impls none,sdpa,triton] [--batch 32] [--out DIR]
Needs CUDA; exits 0 with a note on a CPU box (`--device cpu` runs parts 1-2 on CPU as a smoke test).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from ssnbench.kernels import knobs

DEVICE = "cuda"
STEPS = 10  # timed training steps per impl (--steps)
TORCH_PROFILE = True


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def host_cost_us(fn, calls: int = 200) -> float:
    """Mean host time per call with no synchronisation inside the loop (queue-bound calls)."""
    for _ in range(10):
        fn()
    _sync()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - t0) / calls * 1e6
    _sync()
    return host


def op_host_costs(batch: int) -> list[dict]:
    """Host µs per call of the fused op (direct launch on and off) and of SDPA, per SSN stage shape."""
    import torch.nn.functional as F
    from ssnbench.kernels import shared_cross_attention

    rows = []
    for L in (49, 196, 784):
        x = [torch.randn(batch, 8, L, 32, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
             for _ in range(6)]
        fused = lambda x=x: shared_cross_attention(*x)
        sdpa = lambda x=x: (F.scaled_dot_product_attention(x[0], x[4], x[5]),
                            F.scaled_dot_product_attention(x[3], x[1], x[2]))
        row = {"L": L}
        variants = (("fused", fused, True), ("fused_jit", fused, False), ("sdpa_2calls", sdpa, True))
        for name, fn, direct in variants:
            with knobs.override(direct_launch=direct):
                with torch.no_grad():
                    row[f"{name}_fwd_host_us"] = host_cost_us(fn)
                g = [torch.randn_like(o) for o in fn()]
                row[f"{name}_fwdbwd_host_us"] = host_cost_us(
                    lambda fn=fn, g=g: torch.autograd.backward(fn(), g))
        rows.append(row)
    return rows


def block_costs(batch: int) -> list[dict]:
    """The cross-attention block exactly as SSN-R50 runs it at 224 px: ProjectedCrossAttention from
    the stage's C channels (512/1024/2048) down to 256, 8 heads, on the 2B-image map of the shared
    encoder, bf16 autocast, channels_last. Forward+backward per impl and per path (`stacked`: the
    one-batch path SSN takes; `pair`: split into two maps and re-concatenated, the path before
    forward_stacked; `graph`: stacked, replayed as CUDA graphs, CUDA only): host µs per call
    (queued) and device-synced ms per call."""
    from ssnbench.models.backbone import auto_kv_reduction
    from ssnbench.models.block_graphs import BlockGraphs
    from ssnbench.models.two_image import ProjectedCrossAttention

    paths = {
        "stacked": lambda block, x: block.forward_stacked(x, batch),
        "pair": lambda block, x: torch.cat(block(x[:batch], x[batch:])),
        "graph": None,  # the stacked path replayed as CUDA graphs (xattn_cuda_graph)
    }
    rows = []
    for side, channels in ((28, 512), (14, 1024), (7, 2048)):
        r = auto_kv_reduction((side, side))
        row = {"tokens": side * side, "channels": channels, "kv_reduction": r}
        x = torch.randn(2 * batch, channels, side, side, device=DEVICE, dtype=torch.bfloat16)
        x = x.to(memory_format=torch.channels_last).requires_grad_()
        for impl in ("triton", "sdpa"):
            block = ProjectedCrossAttention(channels, 256, num_heads=8, impl=impl, kv_reduction=r).to(DEVICE)
            block = block.to(memory_format=torch.channels_last)
            graphs = BlockGraphs(block)
            paths["graph"] = lambda block, x, graphs=graphs: graphs.stacked(x, batch)
            for path, run in paths.items():
                if path == "graph" and DEVICE != "cuda":
                    continue

                def step(block=block, run=run, x=x) -> None:
                    with torch.autocast(DEVICE, dtype=torch.bfloat16):
                        y = run(block, x)
                    y.float().sum().backward()

                row[f"{impl}_{path}_host_us"] = host_cost_us(step, calls=100)
                for _ in range(5):
                    step()
                _sync()
                t0 = time.perf_counter()
                for _ in range(50):
                    step()
                _sync()
                row[f"{impl}_{path}_ms"] = (time.perf_counter() - t0) / 50 * 1e3
        rows.append(row)
    return rows


def op_cprofile(batch: int, L: int = 49) -> str:
    """cProfile of 300 fused forward+backward calls: host time by Python function."""
    import cProfile
    import io
    import pstats

    from ssnbench.kernels import shared_cross_attention

    x = [torch.randn(batch, 8, L, 32, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
         for _ in range(6)]
    g = [torch.randn_like(o) for o in shared_cross_attention(*x)]
    for _ in range(20):
        torch.autograd.backward(shared_cross_attention(*x), g)
    _sync()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(300):
        torch.autograd.backward(shared_cross_attention(*x), g)
    _sync()
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(22)
    return text.getvalue()


class _IdentityPyNode(torch.autograd.Function):
    """A Python autograd node that does nothing: isolates what any Python backward costs in a step."""

    @staticmethod
    def forward(ctx, *xs):
        return tuple(x.view_as(x) for x in xs)

    @staticmethod
    def backward(ctx, *grads):
        return grads


def _with_pynode(core):
    def wrapped(impl, *qkv):
        return core(impl, *_IdentityPyNode.apply(*qkv))

    return wrapped


#: Step variants beyond the block impls: what a no-op Python autograd node around the sdpa core
#: costs, and the triton core through Triton's JIT launch or the registered custom op (knob values).
VARIANTS = {
    "sdpa_pynode": ("sdpa", {}),
    "triton_jit": ("triton", {"direct_launch": False}),
    "triton_op": ("triton", {"custom_op": True}),
}


def profile_step(impl: str, batch: int, python_profile: bool = False) -> dict:
    """Time SSN-R50 training steps with cross-attention `impl` (or a VARIANTS entry)."""
    import ssnbench.models.cross_attention as xattn_module

    if impl not in VARIANTS:
        return _profile_step(impl, batch, python_profile)
    base, env = VARIANTS[impl]
    core = xattn_module.attention_core
    if impl == "sdpa_pynode":
        xattn_module.attention_core = _with_pynode(core)
    try:
        with knobs.override(**env):
            return {**_profile_step(base, batch, python_profile), "impl": impl}
    finally:
        xattn_module.attention_core = core


def _profile_step(impl: str, batch: int, python_profile: bool) -> dict:
    from ssnbench.losses import MultiHeadLoss, head_weights_for
    from ssnbench.models.registry import build_model

    model = build_model("ssn", backbone="resnet50", xattn="shared" if impl != "none" else "none",
                        xattn_impl=impl if impl != "none" else "reference").to(DEVICE)
    model = model.to(memory_format=torch.channels_last)
    loss_fn = MultiHeadLoss(head_weights_for("prior", list(model.output_heads)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    clinic = torch.randn(batch, 3, 224, 224, device=DEVICE).to(memory_format=torch.channels_last)
    derm = torch.randn_like(clinic)
    labels = torch.stack([torch.randint(0, n, (batch,), device=DEVICE) for n in (5, 3, 2, 3, 3, 3, 3, 2)], 1)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            total, _ = loss_fn(model(clinic, derm), labels)
        total.backward()
        opt.step()

    for _ in range(5):
        step()
    _sync()
    times = []
    for _ in range(STEPS):
        t0 = time.perf_counter()
        step()
        _sync()
        times.append((time.perf_counter() - t0) * 1e3)
    if python_profile:  # host time by Python function (Triton's launcher is not an aten op)
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        for _ in range(10):
            step()
        _sync()
        prof.disable()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(25)
        return {"impl": impl, "step_ms_median": sorted(times)[len(times) // 2], "step_ms": times,
                "table": text.getvalue()}
    if not TORCH_PROFILE:
        return {"impl": impl, "step_ms_median": sorted(times)[len(times) // 2], "step_ms": times, "table": ""}
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(2):
            step()
        _sync()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=70)
    # host side: where the CPU time goes (a cudaMalloc or a synchronising call shows up here)
    table += prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=70)
    return {"impl": impl, "step_ms_median": sorted(times)[len(times) // 2], "step_ms": times, "table": table}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impls", default="none,sdpa,triton",
                        help="SSN-R50 steps to profile ('' for none); also " + ", ".join(VARIANTS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", default=None)
    parser.add_argument("--python-profile", action="store_true",
                        help="cProfile 10 steps (host time per Python function) instead of torch.profiler")
    parser.add_argument("--skip-op-cost", action="store_true")
    parser.add_argument("--skip-blocks", action="store_true")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per impl")
    parser.add_argument("--no-torch-profile", action="store_true", help="time the steps only")
    args = parser.parse_args()
    global DEVICE, STEPS, TORCH_PROFILE
    DEVICE, STEPS, TORCH_PROFILE = args.device, args.steps, not args.no_torch_profile
    if DEVICE == "cpu":
        args.impls = ""
    elif not torch.cuda.is_available():
        print("profile_xattn: no CUDA device; nothing to profile")
        return 0
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"
    result = {"device": name, "torch": torch.__version__,
              "op_host_cost": [] if args.skip_op_cost else op_host_costs(args.batch), "steps": []}
    for row in result["op_host_cost"]:
        print(json.dumps({k: round(v, 1) for k, v in row.items()}))
    if not args.skip_op_cost:
        result["op_cprofile"] = op_cprofile(args.batch)
        print(result["op_cprofile"])
    result["blocks"] = [] if args.skip_blocks else block_costs(args.batch)
    for row in result["blocks"]:
        print(json.dumps({k: round(v, 3) for k, v in row.items()}))
    for impl in filter(None, args.impls.split(",")):
        rec = profile_step(impl, args.batch, args.python_profile)
        med, low = rec["step_ms_median"], min(rec["step_ms"])
        print(f"=== ssn-r50 xattn={impl}: train step median {med:.2f} ms, min {low:.2f} ms")
        print(rec["table"])
        result["steps"].append(rec)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "profile_xattn.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
