"""The kernel launcher's direct path (kernels/launch.py `launch`), on CPU with a fake kernel.

The direct path skips Triton's per-call specialisation, so its cache key must separate every launch
that Triton would compile differently, and it must hand the launcher the exact argument list the JIT
would. The GPU side (real kernels, repeated calls) is in test_kernels_gpu.py.
"""

from __future__ import annotations

import types

import pytest
import torch
from ssnbench.kernels import knobs, launch


class _FakeCompiled:
    def __init__(self, log: list) -> None:
        self.function, self.packed_metadata, self.log = "fn-handle", "packed", log

    @property
    def run(self):
        return lambda *a: self.log.append(("direct", a))


class _FakeKernel:
    """Records JIT launches; its signature is (X, Y, s0, s1, H, BLOCK: constexpr, FLAG: constexpr = 7)."""

    __name__ = "fake"

    def __init__(self) -> None:
        names = ["X", "Y", "s0", "s1", "H", "BLOCK", "FLAG"]
        self.params = [types.SimpleNamespace(name=n, default=7 if n == "FLAG" else None) for n in names]
        self.log: list = []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.log.append(("jit", grid, args, kwargs))
            return _FakeCompiled(self.log)

        return launch


@pytest.fixture
def direct(monkeypatch):
    """launch.py as on a GPU (no interpreter, direct launch on), with a fake device and stream."""
    monkeypatch.setattr(launch, "current_device", lambda: 0)
    monkeypatch.setattr(launch, "current_stream", lambda device: 1234)
    launch.clear_direct_cache()
    with knobs.override(interpret=False, direct_launch=True):
        yield launch
    launch.clear_direct_cache()


def _go(lm, kernel, tensors, strides=(64, 32), H=8, cfg=None, name="bwd_pre"):
    """One launch with an untuned kernel name: `cfg` is its fixed config (a block size and warps)."""
    cfg = cfg or {"BLOCK": 16, "num_warps": 4}
    lm.launch(name, kernel, lambda m: (3, 2, 1), tuple(tensors), (*strides, H), meta={}, key=("key",),
              fixed=lambda: cfg, spec=lm.int_spec(list(strides), H))


def test_second_launch_is_direct_with_the_jit_argument_list(direct):
    kernel = _FakeKernel()
    x, y = torch.zeros(64), torch.zeros(64)
    _go(direct, kernel, [x, y])
    before = direct.DIRECT_LAUNCHES["bwd_pre"]
    _go(direct, kernel, [x, y])
    assert [e[0] for e in kernel.log] == ["jit", "direct"]
    assert kernel.log[0][2] == (x, y, 64, 32, 8)
    assert kernel.log[0][3] == {"BLOCK": 16, "num_warps": 4}
    _, args = kernel.log[1]
    # grid, stream, function, packed metadata, no launch metadata / hooks, args, trailing constexprs
    assert args == (3, 2, 1, 1234, "fn-handle", "packed", None, None, None, x, y, 64, 32, 8, 16, 7)
    assert direct.DIRECT_LAUNCHES["bwd_pre"] == before + 1


def test_anything_triton_specialises_on_goes_back_to_the_jit(direct):
    kernel = _FakeKernel()
    buf = torch.zeros(64, dtype=torch.float16)
    x, y = buf[:32], torch.zeros(64, dtype=torch.float16)
    _go(direct, kernel, [x, y])
    _go(direct, kernel, [buf[1:33], y])  # misaligned pointer: not cached, JIT every time
    _go(direct, kernel, [buf[1:33], y])
    _go(direct, kernel, [x, y], H=1)  # H == 1 is a constant to Triton
    _go(direct, kernel, [x, y], cfg={"BLOCK": 32, "num_warps": 4})  # another config
    _go(direct, kernel, [x, y], strides=(40, 8))  # strides not all % 16: never direct
    _go(direct, kernel, [x, y], strides=(40, 8))
    assert [e[0] for e in kernel.log] == ["jit"] * 7
    _go(direct, kernel, [x, y])
    assert kernel.log[-1][0] == "direct"


def test_direct_launch_can_be_switched_off_and_stays_off_under_hooks(direct, monkeypatch):
    kernel = _FakeKernel()
    x = torch.zeros(64)
    _go(direct, kernel, [x, x])
    with knobs.override(direct_launch=False):
        _go(direct, kernel, [x, x])
    monkeypatch.setattr(direct, "hooks_idle", lambda: False)  # e.g. a profiler's launch hook
    _go(direct, kernel, [x, x])
    assert [e[0] for e in kernel.log] == ["jit", "jit", "jit"]


def test_int_spec():
    int_spec = launch.int_spec
    assert int_spec([1568, 32, 32, 0], 8) == (False, False)
    assert int_spec([1568, 32, 32], 16) == (False, True)
    assert int_spec([1568, 32, 32], 1) == (True, False)
    assert int_spec([1568, 32, 1], 8) is None  # a unit stride is a constant to Triton
    assert int_spec([1568, 24, 32], 8) is None
    assert int_spec([2**31, 32], 8) is None  # a 64-bit integer
    assert int_spec([0, 0, 0], 8) == (False, False)


def _storages(ts) -> int:
    return len({t.untyped_storage().data_ptr() for t in ts})


@pytest.mark.parametrize(("lc", "ld", "storages"), [(16, 16, 1), (16, 24, 2), (100, 100, 1)])
def test_eager_backward_takes_gradients_from_one_allocation(kernel_stubs, lc, ld, storages) -> None:
    """Plain eager calls (the autograd.Function) carve the six gradients out of as few allocations
    as the shapes allow: each CUDA allocation costs host time that the small stages' kernels do not
    (both backward paths: <= 64 tokens and larger). The registered op must return six separate
    tensors (no aliasing between a custom op's outputs)."""
    from ssnbench.kernels import shared_cross_attention

    # q_c, k_c, v_c (clinic tokens), q_d, k_d, v_d (derm tokens)
    xs = [torch.zeros(2, 2, n, 16, requires_grad=True) for n in (lc, lc, lc, ld, ld, ld)]
    outs = shared_cross_attention(*xs)
    grads = torch.autograd.grad(outs, xs, [torch.ones_like(o) for o in outs])
    assert _storages(grads) == storages
    assert kernel_stubs.KERNELS["fwd"].jit_launches == 1  # the kernel path ran, not the reference
    with knobs.override(custom_op=True):
        outs = shared_cross_attention(*xs)
        grads = torch.autograd.grad(outs, xs, [torch.ones_like(o) for o in outs])
    assert _storages(grads) == 6
