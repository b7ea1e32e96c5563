"""Fused shared cross-attention on CPU: Triton kernels in the interpreter (TRITON_INTERPRET=1, set by
conftest.py before the kernel module is imported) against a float64 reference, both directions.
Without a GPU these tests fail, never skip, when the interpreter is off (conftest `interpreter`).

Tiny shapes only: the interpreter is slow. GPU shapes/dtypes live in test_kernels_gpu.py.
"""

from __future__ import annotations

import pytest
import torch
from ssnbench.kernels import configs, knobs, launch, ops, precompile, reference, shared_cross_attention
from ssnbench.kernels import shared_xattn as sx

pytestmark = pytest.mark.usefixtures("interpreter")

TOL = {torch.float32: (2e-5, 2e-5), torch.float16: (3e-3, 3e-3)}  # (atol, rtol) vs float64


def _inputs(B, H, Lc, Ld, D, dtype, Lkc=None, Lkd=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    Lkc, Lkd = Lkc or Lc, Lkd or Ld
    mk = lambda L: torch.randn(B, H, L, D, generator=g).to(dtype)
    return [mk(Lc), mk(Lkc), mk(Lkc), mk(Ld), mk(Lkd), mk(Lkd)]


def _ref64(xs, scale=None, grads=None):
    x64 = [t.detach().double().requires_grad_() for t in xs]
    o_c, o_d, lse_c, lse_d = reference.shared_cross_attention_reference_with_lse(*x64, scale)
    out = [o_c, o_d, lse_c, lse_d]
    if grads is not None:
        torch.autograd.backward((o_c, o_d), (grads[0].double(), grads[1].double()))
        out += [t.grad for t in x64]
    return [t.detach() for t in out]


def _close(actual, expected, dtype, what):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(actual.double(), expected, atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


# (B, H, Lc, Ld, D, Lkc, Lkd, backward path): odd counts, Lc != Ld, K/V reduction, D not a power of 2
SHAPES = [
    (2, 2, 37, 21, 16, None, None, "small"),
    (1, 2, 50, 33, 32, None, None, "small"),
    (1, 2, 37, 21, 16, None, None, "general"),
    (1, 1, 70, 49, 16, None, None, "general"),
    (2, 1, 17, 40, 24, 9, 13, "general"),
    (1, 1, 1, 3, 16, None, None, "small"),
    (1, 2, 37, 21, 16, None, None, "atomic"),
    (2, 1, 17, 40, 24, 9, 13, "atomic"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(str(v) for v in s))
def test_forward_backward_vs_float64(shape, dtype, poison):
    B, H, Lc, Ld, D, Lkc, Lkd, path = shape
    xs = _inputs(B, H, Lc, Ld, D, dtype, Lkc, Lkd)
    do = [torch.randn(B, H, Lc, D).to(dtype), torch.randn(B, H, Ld, D).to(dtype)]
    scale = D**-0.5
    ref = _ref64(xs, scale, do)
    undo = poison()
    o_c, o_d, lse_c, lse_d = sx.forward(*xs, scale)
    grads = sx.backward(*do, *xs, o_c, o_d, lse_c, lse_d, scale, path=path)
    undo()
    names = ["o_c", "o_d", "lse_c", "lse_d", "dq_c", "dk_c", "dv_c", "dq_d", "dk_d", "dv_d"]
    for name, got, want in zip(names, [o_c, o_d, lse_c, lse_d, *grads], ref, strict=True):
        assert got.shape == want.shape, name
        assert torch.isfinite(got).all(), f"{name} has unwritten (NaN) elements"
        _close(got, want, dtype, name)


@pytest.mark.parametrize("shape", [(1, 2, 37, 21, 16), (1, 1, 70, 96, 32)], ids=["37x21", "70x96"])
def test_forward_poly_exp_fp16(shape, poison):
    """Half the exps by the FMA-pipe polynomial (`_exp2_fma`): fp16 still meets its tolerance."""
    B, H, Lc, Ld, D = shape
    xs = _inputs(B, H, Lc, Ld, D, torch.float16, seed=5)
    ref = _ref64(xs, D**-0.5)
    undo = poison()
    with knobs.override(poly_exp=True):
        out = sx.forward(*xs, D**-0.5)
    undo()
    for name, got, want in zip(["o_c", "o_d", "lse_c", "lse_d"], out, ref, strict=True):
        assert torch.isfinite(got).all(), name
        _close(got, want, torch.float16, name)


def test_public_op_autograd_noncontiguous_and_expanded_grads():
    """Strided q/k/v views (as the block passes them), a custom scale and an expanded dO (from .sum())."""
    B, H, Lc, Ld, D = 1, 2, 19, 26, 16
    base_c = torch.randn(B, Lc, 3, H, D, dtype=torch.float64)
    base_d = torch.randn(B, Ld, 3, H, D, dtype=torch.float64)
    xs = [base[:, :, i].transpose(1, 2) for base in (base_c, base_d) for i in range(3)]
    assert not xs[0].is_contiguous()
    leaves = [t.float().requires_grad_() for t in xs]  # float() keeps the strided layout
    assert not leaves[0].is_contiguous()
    before = dict(sx.LAUNCHES)
    o_c, o_d = shared_cross_attention(*leaves, scale=0.3)
    (o_c.sum() + (o_d * 2).sum()).backward()
    assert sx.LAUNCHES["fwd"] == before.get("fwd", 0) + 1
    x64 = [t.detach().double().requires_grad_() for t in xs]
    r_c, r_d = reference.shared_cross_attention_reference(*x64, scale=0.3)
    (r_c.sum() + (r_d * 2).sum()).backward()
    _close(o_c, r_c.detach(), torch.float32, "o_c")
    _close(o_d, r_d.detach(), torch.float32, "o_d")
    for leaf, ref in zip(leaves, x64, strict=True):
        _close(leaf.grad, ref.grad, torch.float32, "grad")


def test_no_silent_fallback_to_reference(monkeypatch):
    """Under TRITON_INTERPRET=1 the CPU op must run the Triton kernels, never the reference."""
    assert ops.backend_for(torch.empty(1)) == "interpret"

    def boom(*a, **k):
        raise AssertionError("reference called: the Triton path fell back silently")

    for name in ("shared_cross_attention_reference_with_lse", "shared_cross_attention_reference_backward"):
        monkeypatch.setattr(reference, name, boom)
    before = dict(sx.LAUNCHES)
    xs = [t.requires_grad_() for t in _inputs(1, 1, 20, 9, 16, torch.float32)]
    o_c, o_d = shared_cross_attention(*xs)
    (o_c.square().sum() + o_d.sum()).backward()
    assert sx.LAUNCHES["fwd"] == before.get("fwd", 0) + 1
    assert sx.LAUNCHES["bwd_small"] == before.get("bwd_small", 0) + 1
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in xs)


def test_cpu_without_interpreter_uses_reference():
    xs = _inputs(1, 2, 5, 7, 16, torch.float32)
    with knobs.override(interpret=False):
        assert ops.backend_for(torch.empty(1)) == "reference"
        o_c, o_d = shared_cross_attention(*xs)
    r_c, r_d = reference.shared_cross_attention_reference(*xs)
    torch.testing.assert_close(o_c, r_c)
    torch.testing.assert_close(o_d, r_d)


def test_opcheck():
    xs = [t.requires_grad_() for t in _inputs(1, 2, 17, 9, 16, torch.float32)]
    torch.library.opcheck(torch.ops.ssnbench.shared_cross_attention.default, (*xs, 0.25))
    o = torch.ops.ssnbench.shared_cross_attention(*[t.detach() for t in xs], 0.25)
    do = [torch.randn_like(o[0]), torch.randn_like(o[1])]
    torch.library.opcheck(
        torch.ops.ssnbench.shared_cross_attention_backward.default,
        (*do, *[t.detach() for t in xs], *o, 0.25),
        test_utils=("test_schema", "test_faketensor"),
    )


def test_flop_accounting():
    from ssnbench.kernels.flops import fvcore_handles

    B, H, Lc, Ld, D, Lkc, Lkd = 2, 4, 10, 7, 16, 5, 3
    xs = _inputs(B, H, Lc, Ld, D, torch.float32, Lkc, Lkd)
    macs = 2 * B * H * D * (Lc * Lkd + Ld * Lkc)  # 2·B·H·Lq·Lk·D per direction
    handles = fvcore_handles()
    assert set(handles) >= {"ssnbench::shared_cross_attention", "aten::scaled_dot_product_attention"}
    from fvcore.nn import FlopCountAnalysis  # a base dependency: its absence must fail, not skip

    class Core(torch.nn.Module):
        def forward(self, *a):
            return shared_cross_attention(*a)

    class Sdpa(torch.nn.Module):
        def forward(self, q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    for module, args, want in [
        (Core(), tuple(xs), macs),
        (Sdpa(), (xs[0], xs[4], xs[5]), 2 * B * H * Lc * Lkd * D),
    ]:
        analysis = FlopCountAnalysis(module, args)
        for name, handle in handles.items():
            analysis.set_op_handle(name, handle)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        assert analysis.total() == want

    from torch.utils.flop_counter import FlopCounterMode

    leaves = [t.requires_grad_() for t in xs]
    with FlopCounterMode(display=False) as counter:
        o_c, o_d = shared_cross_attention(*leaves)
        (o_c.sum() + o_d.sum()).backward()
    assert counter.get_total_flops() == 2 * macs * 3.5  # forward + 2.5x backward, 2 FLOPs per MAC


def test_tiny_model_training_triton_matches_reference():
    """A few SGD steps of a tiny two-modality model: impl=triton (interpreter) == impl=reference."""
    from ssnbench.models.cross_attention import SharedCrossAttention

    class Tiny(torch.nn.Module):
        def __init__(self, impl: str):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 32, 3, stride=2, padding=1)
            self.xattn = SharedCrossAttention(32, num_heads=2, impl=impl)
            self.head = torch.nn.Linear(64, 3)

        def forward(self, a, b):
            f_c, f_d = self.xattn(self.stem(a), self.stem(b))
            return self.head(torch.cat([f_c.mean((2, 3)), f_d.mean((2, 3))], 1))

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 3, 10, 10, generator=g), torch.randn(2, 3, 8, 12, generator=g)  # 25 vs 24 tokens
    y = torch.tensor([0, 2])
    losses = {}
    for impl in ("reference", "triton"):
        torch.manual_seed(0)
        model = Tiny(impl)
        with torch.no_grad():
            model.xattn.gate.fill_(0.5)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        losses[impl] = []
        for _ in range(3):
            loss = torch.nn.functional.cross_entropy(model(a, b), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[impl].append(loss.item())
    assert losses["reference"][-1] != losses["reference"][0]
    torch.testing.assert_close(losses["triton"], losses["reference"], atol=1e-5, rtol=1e-5)


def test_eager_fast_path_matches_registered_op():
    """Eager calls skip the custom-op dispatch (same kernels); forcing the registered op agrees."""
    xs = _inputs(1, 2, 21, 12, 16, torch.float32, seed=3)
    do = [torch.randn(1, 2, 21, 16), torch.randn(1, 2, 12, 16)]
    results = []
    for force in (False, True):
        leaves = [t.clone().requires_grad_() for t in xs]
        with knobs.override(custom_op=force):
            outs = shared_cross_attention(*leaves)
            torch.autograd.backward(outs, do)
        results.append([*outs, *[t.grad for t in leaves]])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # inf/NaN in padded rows that are never stored
@pytest.mark.parametrize("path", ["small", "general", "atomic"])
def test_very_negative_scores_stay_finite(path):
    """Every score far below 0 (lse ~ -140): padded keys must not turn into inf/NaN gradients."""
    g = torch.Generator().manual_seed(7)
    B, H, Lc, Ld, D = 1, 1, 20, 23, 16
    q = lambda L: 3.0 + 0.1 * torch.randn(B, H, L, D, generator=g)
    k = lambda L: -3.0 + 0.1 * torch.randn(B, H, L, D, generator=g)
    v = lambda L: torch.randn(B, H, L, D, generator=g)
    xs = [q(Lc), k(Lc), v(Lc), q(Ld), k(Ld), v(Ld)]
    do = [torch.randn(B, H, Lc, D, generator=g), torch.randn(B, H, Ld, D, generator=g)]
    ref = _ref64(xs, 1.0, do)
    assert ref[2].max() < -100  # lse_c
    o_c, o_d, lse_c, lse_d = sx.forward(*xs, 1.0)
    grads = sx.backward(*do, *xs, o_c, o_d, lse_c, lse_d, 1.0, path=path)
    for got, want in zip([o_c, o_d, *grads], ref[:2] + ref[4:], strict=True):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), want, atol=1e-3, rtol=1e-3)


def test_torch_compile_fullgraph_sees_the_registered_op():
    """Dynamo + AOTAutograd trace the custom op (fake impl, autograd formula) without graph breaks;
    backend aot_eager needs no C++ compiler, so this runs on CPU (kernels in the interpreter)."""
    xs = _inputs(1, 2, 19, 12, 16, torch.float32, seed=11)

    def loss_fn(*a):
        o_c, o_d = shared_cross_attention(*a)
        return o_c.square().sum() + o_d.sum()

    results = []
    for fn in (loss_fn, torch.compile(loss_fn, fullgraph=True, backend="aot_eager")):
        leaves = [t.clone().requires_grad_() for t in xs]
        loss = fn(*leaves)
        loss.backward()
        results.append([loss.detach(), *[t.grad for t in leaves]])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_torch_compile_fullgraph_block():
    from ssnbench.models.cross_attention import SharedCrossAttention

    torch.manual_seed(0)
    block = SharedCrossAttention(32, 2, impl="triton", kv_reduction=2)
    with torch.no_grad():
        block.gate.fill_(0.5)
    f_c, f_d = torch.randn(1, 32, 5, 5), torch.randn(1, 32, 4, 6)
    want = block(f_c, f_d)
    got = torch.compile(block, fullgraph=True, backend="aot_eager")(f_c, f_d)
    for w, g in zip(want, got, strict=True):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


def test_precompile_worker_warms_each_candidate_once(monkeypatch):
    """The GPU benchmark precompiles every autotune candidate in worker processes; check the job
    plumbing on CPU with recording stand-ins for the jit kernels (no launches, no compiles)."""
    calls = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def warmup(self, *args, grid, **kwargs):
            calls.append((self.name, kwargs.get("HEAD_DIM"), {k: kwargs[k] for k in kwargs if k.isupper()}))

        def __getitem__(self, grid):
            return lambda *a, **k: None  # preprocess / cast kernels: not part of the candidates

    for name in list(launch.KERNELS):
        monkeypatch.setitem(launch.KERNELS, name, Recorder(name))
    jobs = precompile.jobs((32,))
    assert precompile.compile_jobs(jobs, "float16", 2) == len(jobs)
    assert not launch.compiling()
    expected = sorted((name, 32) for _, name, _, _ in jobs)
    assert sorted((c[0], c[1]) for c in calls) == expected
    for (_, name, i, tokens), call in zip(jobs, calls, strict=True):
        cfg = configs.CANDIDATES[name][i]
        assert all(call[2][k] == v for k, v in cfg.kwargs.items())
        if name == "fwd":  # compiled with the tails of its token count
            assert {k: call[2][k] for k in ("TAIL_M", "TAIL_N")} == configs.tails(cfg.kwargs, *[tokens] * 4)
    # every (forward candidate, tails) that a stage token count needs is among the jobs
    fwd = configs.CANDIDATES["fwd"]
    fwd_jobs = {(i, tuple(configs.tails(fwd[i].kwargs, *[t] * 4).values()))
                for _, name, i, t in jobs if name == "fwd"}
    for i, cfg in enumerate(fwd):
        for n in configs.STAGE_TOKENS:
            assert (i, tuple(configs.tails(cfg.kwargs, n, n, n, n).values())) in fwd_jobs


def test_tiny_ssn_training_triton_matches_reference():
    """A few SGD steps of a tiny SSN (resnet18 at 16 px, its cross-attention stages): the Triton
    kernels in the interpreter give the reference's losses."""
    from ssnbench.models.registry import build_model

    g = torch.Generator().manual_seed(1)
    clinic, derm = torch.randn(2, 3, 16, 16, generator=g), torch.randn(2, 3, 16, 16, generator=g)
    labels = [torch.tensor([0, 1]) for _ in range(8)]
    losses = {}
    for impl in ("reference", "triton"):
        torch.manual_seed(0)
        model = build_model("ssn", backbone="resnet18", image_size=16, xattn_impl=impl, xattn_heads=2)
        with torch.no_grad():  # open the zero-initialised gates so attention shapes the loss
            for name, p in model.named_parameters():
                if "gate" in name:
                    p.fill_(0.5)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        losses[impl] = []
        for _ in range(2):
            out = model(clinic, derm)
            loss = sum(torch.nn.functional.cross_entropy(logits, y) for k in out for logits, y in zip(
                out[k], labels, strict=True))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[impl].append(loss.item())
    torch.testing.assert_close(losses["triton"], losses["reference"], atol=1e-4, rtol=1e-4)


def test_no_grad_call_skips_autograd_but_not_the_kernel():
    """Inference calls take the kernels directly (no autograd.Function): same outputs, one launch."""
    xs = _inputs(1, 2, 19, 23, 16, torch.float32, seed=3)
    want = [o.detach() for o in shared_cross_attention(*[t.clone().requires_grad_() for t in xs])]
    before = sx.LAUNCHES["fwd"]
    with torch.no_grad():
        got = shared_cross_attention(*xs)
    assert sx.LAUNCHES["fwd"] == before + 1
    assert all(g.grad_fn is None and not g.requires_grad for g in got)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=0, rtol=0)
