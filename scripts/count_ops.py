"""Count the aten ops one training step dispatches, per model: the host work of an eager GPU step.

On a host-bound GPU box (issue 5: SSN-ResNet50 at B=32 on the H200 spends ~30 ms of host time
per step against ~17 ms of GPU time) a step's speed follows how many ops it dispatches, and that
count does not depend on the device. So it can be measured, and compared between two versions of
the code, on a CPU without a GPU:

    python scripts/count_ops.py                       # this checkout
    PYTHONPATH=/path/to/other/checkout python scripts/count_ops.py   # another version, same script

Models: the issue-5 set of suites/bench_gpu.yaml (ResNet-50 unless --backbone; cross-attention at
the last three stages). Tiny inputs (B=2, 64 px), CPU bf16 autocast (its casts are what CUDA
autocast adds), and `sdpa` standing in for the attention core (one op forward, one backward, like
the fused Triton op). The loss is the training loss (MultiHeadLoss, prior weights) on fixed
labels; the optimizer step is not counted.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ssnbench.data.labels import NUM_CLASSES
from ssnbench.losses import MultiHeadLoss, head_weights_for
from ssnbench.models.registry import build_model

MODELS = {
    "ssn": ("ssn", {"xattn": "none"}),
    "ssn-xattn": ("ssn", {"xattn": "shared", "xattn_impl": "sdpa"}),
    "dual": ("dual", {"xattn": "none"}),
    "dual-xattn": ("dual", {"xattn": "separate", "xattn_impl": "sdpa"}),
}


class _Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def count_step(
    arch: str, options: dict, batch: int, size: int, amp: bool, backbone: str = "resnet50", timed: int = 0
) -> dict:
    """aten ops of one training step's forward+loss and backward (after one warm-up step), and with
    `timed` > 0 the median wall time of that many forward+loss+backward steps (on a CPU at tiny
    shapes this is dispatcher-bound, like the host side of a GPU step)."""
    torch.manual_seed(0)
    model = build_model(arch, backbone=backbone, image_size=size, **options)
    model = model.to(memory_format=torch.channels_last).train()
    x = torch.randn(2 * batch, 3, size, size).to(memory_format=torch.channels_last)
    clinic, derm = x[:batch], x[batch:]
    labels = torch.stack([torch.randint(0, k, (batch,)) for k in NUM_CLASSES], 1)
    loss_fn = MultiHeadLoss(head_weights_for("prior", list(model.output_heads)))

    def loss_of(out: dict) -> torch.Tensor:
        return loss_fn(out, labels)[0]

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        loss_of(model(clinic, derm)).backward()  # warm-up: targets, lazy inits
    model.zero_grad(set_to_none=True)
    with _Count() as fwd, torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        loss = loss_of(model(clinic, derm))
    with _Count() as bwd:
        loss.backward()
    times = []
    for _ in range(timed):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = loss_of(model(clinic, derm))
        loss.backward()
        times.append(time.perf_counter() - t0)
    return {
        "forward+loss": sum(fwd.ops.values()),
        "backward": sum(bwd.ops.values()),
        "total": sum(fwd.ops.values()) + sum(bwd.ops.values()),
        "step_ms": statistics.median(times) * 1e3 if times else None,
        "top_forward": dict(fwd.ops.most_common(8)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--no-amp", action="store_true", help="fp32, no autocast casts")
    parser.add_argument("--time", type=int, default=0, metavar="N", help="also time N steps (median)")
    parser.add_argument("--json", help="also write the counts here")
    args = parser.parse_args(argv)
    rows = {}
    print(f"aten ops per training step, {args.backbone} at {args.image_size} px, B={args.batch}")
    header = f"{'model':<16} {'forward+loss':>12} {'backward':>9} {'total':>7}"
    print(header + (" step_ms" if args.time else ""))
    for name, (arch, options) in MODELS.items():
        r = count_step(arch, options, args.batch, args.image_size, not args.no_amp, args.backbone, args.time)
        rows[name] = r
        ms = f" {r['step_ms']:7.1f}" if args.time else ""
        print(f"{name:<16} {r['forward+loss']:>12} {r['backward']:>9} {r['total']:>7}{ms}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
