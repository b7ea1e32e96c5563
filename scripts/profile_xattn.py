"""Where does the time of SSN's cross-attention go? A GPU diagnostic, one call.

1. Host (CPU) cost per call of the fused op and of SDPA at the SSN stage shapes: launches are
   queued without synchronising, so the figure is the Python + launch overhead per call.
2. One SSN-ResNet50 training step (B=32 per modality, bf16 autocast, channels_last) per
   cross-attention impl under torch.profiler: step time, and the CUDA kernels that take the most
   device time, so a slow kernel and a host-bound step can be told apart.

    python scripts/profile_xattn.py [--impls triton,sdpa] [--batch 32] [--out DIR]
Needs CUDA; exits 0 with a note on a CPU box.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def host_cost_us(fn, calls: int = 200) -> float:
    """Mean host time per call with no synchronisation inside the loop (queue-bound calls)."""
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - t0) / calls * 1e6
    torch.cuda.synchronize()
    return host


def op_host_costs(batch: int) -> list[dict]:
    import torch.nn.functional as F
    from ssnbench.kernels import shared_cross_attention

    rows = []
    for L in (49, 196, 784):
        x = [torch.randn(batch, 8, L, 32, device="cuda", dtype=torch.bfloat16, requires_grad=True)
             for _ in range(6)]
        fused = lambda x=x: shared_cross_attention(*x)
        sdpa = lambda x=x: (F.scaled_dot_product_attention(x[0], x[4], x[5]),
                            F.scaled_dot_product_attention(x[3], x[1], x[2]))
        row = {"L": L}
        for name, fn in (("fused", fused), ("sdpa_2calls", sdpa)):
            with torch.no_grad():
                row[f"{name}_fwd_host_us"] = host_cost_us(fn)
            g = [torch.randn_like(o) for o in fn()]
            row[f"{name}_fwdbwd_host_us"] = host_cost_us(lambda fn=fn, g=g: torch.autograd.backward(fn(), g))
        rows.append(row)
    return rows


def profile_step(impl: str, batch: int, python_profile: bool = False) -> dict:
    from ssnbench.losses import MultiHeadLoss, head_weights_for
    from ssnbench.models.registry import build_model

    model = build_model("ssn", backbone="resnet50", xattn="shared" if impl != "none" else "none",
                        xattn_impl=impl if impl != "none" else "reference").cuda()
    model = model.to(memory_format=torch.channels_last)
    loss_fn = MultiHeadLoss(head_weights_for("prior", list(model.output_heads)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    clinic = torch.randn(batch, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
    derm = torch.randn_like(clinic)
    labels = torch.stack([torch.randint(0, n, (batch,), device="cuda") for n in (5, 3, 2, 3, 3, 3, 3, 2)], 1)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            total, _ = loss_fn(model(clinic, derm), labels)
        total.backward()
        opt.step()

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    if python_profile:  # host time by Python function (Triton's launcher is not an aten op)
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        for _ in range(10):
            step()
        torch.cuda.synchronize()
        prof.disable()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(25)
        return {"impl": impl, "step_ms_median": sorted(times)[len(times) // 2], "step_ms": times,
                "table": text.getvalue()}
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(2):
            step()
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=70)
    return {"impl": impl, "step_ms_median": sorted(times)[len(times) // 2], "step_ms": times, "table": table}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impls", default="none,sdpa,triton")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", default=None)
    parser.add_argument("--python-profile", action="store_true",
                        help="cProfile 10 steps (host time per Python function) instead of torch.profiler")
    parser.add_argument("--skip-op-cost", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("profile_xattn: no CUDA device; nothing to profile")
        return 0
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "op_host_cost": [] if args.skip_op_cost else op_host_costs(args.batch), "steps": []}
    for row in result["op_host_cost"]:
        print(json.dumps(row))
    for impl in args.impls.split(","):
        rec = profile_step(impl, args.batch, args.python_profile)
        print(f"=== ssn-r50 xattn={impl}: train step median {rec['step_ms_median']:.2f} ms")
        print(rec["table"])
        result["steps"].append(rec)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "profile_xattn.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
