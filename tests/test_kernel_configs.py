"""Every autotune candidate of the kernels, run in the interpreter against float64.

On a GPU the autotuner may pick any config of `configs.CANDIDATES` ("fwd", "bwd", "bwd_atomic"),
while the CPU tests otherwise run the interpreter's small fixed tiles only. The tile sizes decide
the masking (token counts that are not multiples of a tile), so each distinct tile shape is checked
here once, at odd token counts with L_c != L_d, by handing it to the launcher as the fixed config
(the interpreter ignores num_warps/num_stages).
"""

from __future__ import annotations

import pytest
import torch
from ssnbench.kernels import configs, knobs, launch, reference, shared_cross_attention
from ssnbench.kernels import shared_xattn as sx

pytestmark = pytest.mark.usefixtures("interpreter")


def _tiles(candidates) -> list[dict]:
    """Distinct tile kwargs of a config list (num_warps/num_stages do not matter in the interpreter)."""
    seen: dict[tuple, dict] = {}
    for c in candidates:
        seen.setdefault(tuple(sorted(c.kwargs.items())), dict(c.kwargs))
    return list(seen.values())


def _case(Lc: int, Ld: int, D: int, dtype: torch.dtype, grad: bool):
    g = torch.Generator().manual_seed(Lc * 1000 + Ld)
    sizes = (Lc, Lc, Lc, Ld, Ld, Ld)  # q_c, k_c, v_c, q_d, k_d, v_d
    xs = [torch.randn(1, 2, n, D, generator=g).to(dtype).requires_grad_(grad) for n in sizes]
    x64 = [t.detach().double().requires_grad_(grad) for t in xs]
    want = reference.shared_cross_attention_reference(*x64)
    return xs, x64, want


class _Fixed:
    """Stands in for a `configs.fixed_*` config function: always `tiles`, and counts its calls."""

    def __init__(self, tiles: dict) -> None:
        self.tiles, self.calls = tiles, 0

    def __call__(self, *args) -> dict:
        self.calls += 1
        return dict(self.tiles)


FWD_TILES = _tiles(configs.CANDIDATES["fwd"])
BWD_TILES = _tiles(configs.CANDIDATES["bwd"])
ATOMIC_TILES = _tiles(configs.CANDIDATES["bwd_atomic"])


def _ids(tiles: list[dict]) -> list[str]:
    return ["-".join(f"{k.replace('BLOCK_', '')}{int(v)}" for k, v in t.items()) for t in tiles]


@pytest.mark.parametrize("tiles", FWD_TILES, ids=_ids(FWD_TILES))
def test_every_forward_candidate(tiles: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    fixed = _Fixed(tiles)
    monkeypatch.setattr(configs, "fixed_fwd", fixed)
    dtype = torch.float16 if tiles.get("POLY_EXP") else torch.float32  # POLY_EXP is fp16/bf16 only
    xs, _, want = _case(70, 45, 32, dtype, grad=False)
    got = shared_cross_attention(*xs)
    tol = 3e-3 if dtype == torch.float16 else 2e-5
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g.double(), w, atol=tol, rtol=tol)
    assert fixed.calls == 1


BWD_CASES = [("general", t) for t in BWD_TILES] + [("atomic", t) for t in ATOMIC_TILES]
BWD_IDS = [f"general-{i}" for i in _ids(BWD_TILES)] + [f"atomic-{i}" for i in _ids(ATOMIC_TILES)]


@pytest.mark.parametrize(("path", "tiles"), BWD_CASES, ids=BWD_IDS)
def test_every_backward_candidate(path: str, tiles: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Token counts above SMALL_MAX_TOKENS, so the general (two-loop) or the atomic path runs."""
    fixed = _Fixed(tiles)
    monkeypatch.setattr(configs, "fixed_bwd" if path == "general" else "fixed_atomic", fixed)
    xs, x64, want = _case(70, 97, 16, torch.float32, grad=True)
    gen = torch.Generator().manual_seed(1)
    do = [torch.randn(w.shape, generator=gen) for w in want]
    with knobs.override(bwd_path=path):
        got_grads = torch.autograd.grad(shared_cross_attention(*xs), xs, do)
    want_grads = torch.autograd.grad(want, x64, [d.double() for d in do])
    names = ("dq_c", "dk_c", "dv_c", "dq_d", "dk_d", "dv_d")
    for name, g, w in zip(names, got_grads, want_grads, strict=True):
        torch.testing.assert_close(g.double(), w, atol=5e-5, rtol=5e-5, msg=lambda m, n=name: f"{n}: {m}")
    assert fixed.calls >= 1


@pytest.mark.parametrize(
    ("tokens", "bn256", "bm16"), [(49, False, True), (196, True, True), (784, False, False)]
)
def test_forward_pruning_by_stage_size(tokens: int, bn256: bool, bm16: bool) -> None:
    """256-key tiles are candidates only when they cover all keys in one pass, 16-query tiles only for
    the small stages; fp32 never gets the polynomial exp."""
    q = torch.empty(1, 1, 1, 32, dtype=torch.bfloat16)
    args = {"Lc": tokens, "Ld": tokens, "Lkc": tokens, "Lkd": tokens, "Qc": q}
    prune, candidates = configs.PRUNE["fwd"], configs.CANDIDATES["fwd"]
    kept = prune(candidates, args, HEAD_DIM=32)
    assert any(c.kwargs["BLOCK_N"] == 256 for c in kept) == bn256
    assert any(c.kwargs["BLOCK_M"] == 16 for c in kept) == bm16
    assert all(c.kwargs["BLOCK_N"] <= max(32, 1 << (tokens - 1).bit_length()) for c in kept)
    fp32 = prune(candidates, {**args, "Qc": q.float()}, HEAD_DIM=32)
    assert not any(c.kwargs["POLY_EXP"] for c in fp32)


@pytest.mark.parametrize(
    ("block", "lengths", "tail"),
    [(64, (196, 196), 16), (64, (784,), 16), (64, (3136,), 64), (32, (70, 45), 16), (64, (70, 45), 64),
     (128, (784, 784), 16), (32, (13, 9), 16), (32, (21,), 32), (16, (5,), 16), (64, (0, 64), 64)],
)
def test_tail_tile(block: int, lengths: tuple[int, ...], tail: int) -> None:
    """The ragged last block gets the smallest power-of-two tile (>= 16) that covers every
    direction's remainder; no remainder, or one that needs the whole tile, keeps the block."""
    assert configs.tail(block, *lengths) == tail


def _record_tails(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Wraps `configs.tails`; returns the list every derived tail dict is appended to."""
    seen: list[dict] = []
    real_tails = configs.tails

    def spy(cfg, **kw):
        out = real_tails(cfg, **kw)
        seen.append(out)
        return out

    monkeypatch.setattr(configs, "tails", spy)
    return seen


TAIL_CASES = [  # (Lc, Ld, Lkc, Lkd): M and N tails, N tail only with no full key block, L_c != L_d
    (70, 40, 70, 40), (33, 33, 13, 9), (96, 64, 64, 96), (50, 21, 21, 50),
]


@pytest.mark.parametrize("lengths", TAIL_CASES, ids=["x".join(map(str, c)) for c in TAIL_CASES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_forward_tails_match_float64(lengths, dtype, poison, monkeypatch: pytest.MonkeyPatch) -> None:
    """32x32 tiles with narrower tails: every row written (NaN-poisoned outputs), values and LSE
    right, and the launch really got the tails `configs.tails` derives."""
    Lc, Ld, Lkc, Lkd = lengths
    seen = _record_tails(monkeypatch)
    monkeypatch.setattr(configs, "fixed_fwd", _Fixed({"BLOCK_M": 32, "BLOCK_N": 32}))
    launch.clear_direct_cache()
    g = torch.Generator().manual_seed(sum(lengths))
    sizes = [(Lc, 16), (Lkc, 16), (Lkc, 16), (Ld, 16), (Lkd, 16), (Lkd, 16)]
    xs = [torch.randn(2, 2, n, d, generator=g).to(dtype) for n, d in sizes]
    x64 = [t.double() for t in xs]
    undo = poison()
    o_c, o_d, lse_c, lse_d = sx.forward(*xs, 0.25)
    undo()
    want = reference.shared_cross_attention_reference_with_lse(*x64, 0.25)
    tol = 3e-3 if dtype == torch.float16 else 2e-5
    for got, w in zip((o_c, o_d, lse_c, lse_d), want, strict=True):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), w.double(), atol=tol, rtol=tol)
    assert seen == [{"TAIL_M": configs.tail(32, Lc, Ld), "TAIL_N": configs.tail(32, Lkc, Lkd)}]


BWD_TAIL_CASES = [(70, 40, 70, 40), (33, 50, 13, 97), (80, 64, 64, 100)]


@pytest.mark.parametrize("lengths", BWD_TAIL_CASES, ids=["x".join(map(str, c)) for c in BWD_TAIL_CASES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_backward_tails_match_float64(lengths, dtype, poison, monkeypatch: pytest.MonkeyPatch) -> None:
    """The general backward with 32-row tiles and narrower tails on all four loops/blocks: every
    gradient element written (NaN-poisoned) and right, and the launch got `configs.tails`' tiles."""
    Lc, Ld, Lkc, Lkd = lengths
    seen = _record_tails(monkeypatch)
    tiles = {"BLOCK_M1": 32, "BLOCK_N1": 32, "BLOCK_M2": 32, "BLOCK_N2": 32}
    monkeypatch.setattr(configs, "fixed_bwd", _Fixed(tiles))
    launch.clear_direct_cache()
    g = torch.Generator().manual_seed(sum(lengths))
    sizes = [Lc, Lkc, Lkc, Ld, Lkd, Lkd]
    xs = [torch.randn(2, 2, n, 16, generator=g).to(dtype) for n in sizes]
    do = [torch.randn(2, 2, n, 16, generator=g).to(dtype) for n in (Lc, Ld)]
    x64 = [t.double().requires_grad_() for t in xs]
    o_c, o_d, lse_c, lse_d = sx.forward(*xs, 0.25)
    undo = poison()
    grads = sx.backward(*do, *xs, o_c, o_d, lse_c, lse_d, 0.25, path="general")
    undo()
    want = reference.shared_cross_attention_reference_with_lse(*x64, 0.25)
    want_grads = torch.autograd.grad(want[:2], x64, [d.double() for d in do])
    tol = 1e-2 if dtype == torch.float16 else 5e-5
    for name, got, w in zip(("dq_c", "dk_c", "dv_c", "dq_d", "dk_d", "dv_d"), grads, want_grads, strict=True):
        assert torch.isfinite(got).all(), f"{name} has unwritten (NaN) elements"
        torch.testing.assert_close(got.double(), w, atol=tol, rtol=tol, msg=lambda m, n=name: f"{n}: {m}")
    tails = {"TAIL_M1": configs.tail(32, Lc, Ld), "TAIL_N1": configs.tail(32, Lkc, Lkd),
             "TAIL_M2": configs.tail(32, Lc, Ld), "TAIL_N2": configs.tail(32, Lkc, Lkd)}
    assert [t for t in seen if "TAIL_M1" in t] == [tails]
    assert any(v < 32 for v in tails.values())
