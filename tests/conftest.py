"""Test-wide settings. Without a GPU the Triton kernels run in the interpreter, which must be switched
on before any kernel module is imported."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


class _StubCompiled:
    """A 'compiled kernel' whose launcher does nothing (see `kernel_stubs`)."""

    function, packed_metadata = "stub-function", "stub-metadata"

    @staticmethod
    def run(*args) -> None:
        return None


class _StubKernel:
    """Stands in for a @triton.jit kernel: same parameter list, launches nothing."""

    def __init__(self, real) -> None:
        import inspect
        import types

        fn = getattr(real, "fn", real)
        self.__name__ = fn.__name__
        self.params = [
            types.SimpleNamespace(name=n, default=None if p.default is inspect.Parameter.empty else p.default)
            for n, p in inspect.signature(fn).parameters.items()
        ]
        self.jit_launches = 0

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.jit_launches += 1
            return _StubCompiled()

        return launch


@pytest.fixture
def kernel_stubs(monkeypatch: pytest.MonkeyPatch):
    """The op's whole production host path (checks, allocations, launch plumbing, direct launch,
    autograd) on CPU tensors, with every Triton kernel replaced by a no-op stub: what the op costs
    the host per call, without a GPU. Outputs and gradients are uninitialised memory."""
    from ssnbench.kernels import shared_xattn as sx

    monkeypatch.setenv("TRITON_INTERPRET", "1")  # CPU tensors take the kernel path...
    monkeypatch.setenv("SSNBENCH_XATTN_AUTOTUNE", "0")
    monkeypatch.delenv("SSNBENCH_XATTN_DIRECT_LAUNCH", raising=False)
    monkeypatch.delenv("SSNBENCH_XATTN_CUSTOM_OP", raising=False)
    monkeypatch.setattr(sx, "INTERPRET", False)  # ...with the GPU's configs and direct launch
    monkeypatch.setattr(sx, "_current_device", lambda: 0)
    monkeypatch.setattr(sx, "_current_stream", lambda device: 0)
    monkeypatch.setattr(sx, "_DIRECT", {})
    for name in ("_fwd_kernel", "_bwd_kernel", "_bwd_atomic_kernel", "_bwd_small_kernel",
                 "_bwd_preprocess_kernel", "_cast_pair_kernel"):
        monkeypatch.setattr(sx, name, _StubKernel(getattr(sx, name)))
    return sx


@pytest.fixture
def poison(monkeypatch: pytest.MonkeyPatch):
    """poison() makes every torch.empty / empty_like / Tensor.new_empty NaN-filled until the returned
    undo() runs: an output element a kernel leaves unwritten then fails the comparison."""

    def install():
        real_empty, real_like, real_new = torch.empty, torch.empty_like, torch.Tensor.new_empty

        def nan(t):
            return t.fill_(float("nan")) if t.is_floating_point() else t

        monkeypatch.setattr(torch, "empty", lambda *a, **k: nan(real_empty(*a, **k)))
        monkeypatch.setattr(torch, "empty_like", lambda *a, **k: nan(real_like(*a, **k)))
        monkeypatch.setattr(torch.Tensor, "new_empty", lambda self, *a, **k: nan(real_new(self, *a, **k)))
        return monkeypatch.undo

    return install
