"""Test-wide settings. Without a GPU the Triton kernels run in the interpreter, which must be switched
on before any kernel module is imported (Triton reads TRITON_INTERPRET when a kernel is decorated).
At run time a test changes the interpreter, or any other knob, only through
`ssnbench.kernels.knobs.override(...)`."""

import os
from collections.abc import Iterator

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def interpreter() -> None:
    """For the CPU kernel tests: Triton's interpreter must be on. On a GPU box (kernels compiled)
    they skip, tests/test_kernels_gpu.py covers the kernels there; without a GPU an exported
    TRITON_INTERPRET=0 fails them loudly: a skip would hide that no kernel test ran."""
    from ssnbench.kernels import knobs

    if knobs.current().interpret:
        return
    if torch.cuda.is_available():
        pytest.skip("GPU box: the kernels are compiled here; tests/test_kernels_gpu.py covers them")
    pytest.fail("TRITON_INTERPRET=0 is exported on a machine without a GPU, so the CPU kernel tests "
                "cannot run the Triton kernels: unset it (tests/conftest.py then turns the interpreter on)",
                pytrace=False)


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
def kernel_stubs(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """The op's whole production host path (checks, allocations, launch plumbing, direct launch,
    autograd) on CPU tensors, with every Triton kernel replaced by a no-op stub: what the op costs
    the host per call, without a GPU. Outputs and gradients are uninitialised memory. Yields
    ssnbench.kernels.launch (its KERNELS hold the stubs, DIRECT_LAUNCHES counts direct launches)."""
    from ssnbench.kernels import knobs, launch, ops

    # the stubs stand in for compiled kernels: CPU tensors go to them as CUDA tensors would
    monkeypatch.setattr(ops, "backend_for", lambda t: "triton")
    monkeypatch.setattr(launch, "current_device", lambda: 0)
    monkeypatch.setattr(launch, "current_stream", lambda device: 0)
    for name, kernel in list(launch.KERNELS.items()):
        monkeypatch.setitem(launch.KERNELS, name, _StubKernel(kernel))
    launch.clear_direct_cache()
    # the GPU's configs and direct launch, not the interpreter's
    with knobs.override(interpret=False, autotune=False, direct_launch=True, custom_op=False):
        yield launch
    launch.clear_direct_cache()


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
