"""Speed of SSN and dual: inference forward and one training step (forward + loss + backward + AdamW).

CUDA: ResNet-50 at 224 px, B=32 per modality, bf16 autocast, channels_last, cross-attention at the
last three stages with impl triton. CPU: ResNet-18 at 64 px, B=2, fp32, impl reference (tiny).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from ssnbench import profiling
from ssnbench.models import registry

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
if CUDA:
    BACKBONE, SIZE, B, IMPL = "resnet50", 224, 32, "triton"
else:
    BACKBONE, SIZE, B, IMPL = "resnet18", 64, 2, "reference"
MODELS = {
    "ssn": dict(backbone=BACKBONE, image_size=SIZE, xattn="shared", xattn_impl=IMPL),
    "dual": dict(backbone=BACKBONE, image_size=SIZE),
}


def _setup(arch: str) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, Any]:
    torch.manual_seed(0)
    model = registry.build_model(arch, **MODELS[arch]).to(DEVICE)
    fmt = torch.channels_last if CUDA else torch.contiguous_format
    model = model.to(memory_format=fmt)
    clinic = torch.randn(B, 3, SIZE, SIZE, device=DEVICE).to(memory_format=fmt)
    derm = torch.randn(B, 3, SIZE, SIZE, device=DEVICE).to(memory_format=fmt)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if CUDA else torch.autocast("cpu", enabled=False)
    return model, clinic, derm, autocast


@pytest.mark.benchmark(group="model-forward")
@pytest.mark.benchmark_threshold(10 if CUDA else 20)
@pytest.mark.parametrize("arch", ["ssn", "dual"])
def test_model_forward(arch: str, timed: Callable[..., Any]) -> None:
    model, clinic, derm, autocast = _setup(arch)
    model.eval()

    def forward() -> dict[str, list[torch.Tensor]]:
        with torch.inference_mode(), autocast:
            return model(clinic, derm)

    out = timed(forward, images=2 * B)
    assert all(t.shape[0] == B for v in out.values() for t in v)


@pytest.mark.benchmark(group="model-train-step")
@pytest.mark.benchmark_threshold(10 if CUDA else 20)
@pytest.mark.parametrize("arch", ["ssn", "dual"])
def test_model_train_step(arch: str, timed: Callable[..., Any]) -> None:
    model, clinic, derm, autocast = _setup(arch)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    loss_fn = profiling.BenchLoss()

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_fn(model(clinic, derm))
        loss.backward()
        optimizer.step()
        return loss.detach()

    loss = timed(step, images=2 * B)
    assert torch.isfinite(loss)
