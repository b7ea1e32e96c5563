"""Tile configurations of the kernels: candidate tables, tail tiles and the fixed configs.

- `CANDIDATES`: each autotuned kernel's candidate table (defined directly above its kernel in
  forward.py / backward.py, collected here) and `PRUNE`, their early_config_prune filters.
- Tail tiles (`tail`, `tails`, `tail_heuristics`): the ragged last block of each loop gets the
  smallest power-of-two tile >= 16 that covers it instead of a full masked tile (knob `tails`).
- Fixed configs (`fixed_fwd`, `fixed_bwd`, `fixed_atomic`, `fixed_small`): what a launch uses when
  it does not autotune: small tiles in the interpreter (tiny test shapes still cover several blocks,
  the masks and the tails), on CUDA a table of spill-free configs (knob `autotune=False`).
- `kernel_meta`: the constexprs every attention kernel takes (head dim, its padded block, dot precision).
"""

from __future__ import annotations

from typing import Any

import torch

from . import knobs
from .backward import ATOMIC_CONFIGS, BWD_CONFIGS, SMALL_CONFIGS, prune_atomic, prune_bwd
from .forward import FWD_CONFIGS, prune_fwd

__all__ = [
    "CANDIDATES", "PRUNE", "STAGE_TOKENS", "config_kwargs", "fixed_atomic", "fixed_bwd", "fixed_fwd",
    "fixed_small", "kernel_meta", "np2", "small_tiles", "tail", "tail_heuristics", "tails",
]

#: Autotune candidates per tuned kernel (launch names: see launch.KERNELS).
CANDIDATES: dict[str, list[Any]] = {
    "fwd": FWD_CONFIGS, "bwd": BWD_CONFIGS, "bwd_atomic": ATOMIC_CONFIGS, "bwd_small": SMALL_CONFIGS,
}
#: early_config_prune per tuned kernel (None: every candidate is tried).
PRUNE: dict[str, Any] = {"fwd": prune_fwd, "bwd": prune_bwd, "bwd_atomic": prune_atomic, "bwd_small": None}

#: SSN stage token counts (224x224 input, strides 4/8/16/32): the forward's tails are compiled for these
STAGE_TOKENS = (3136, 784, 196, 49)


def config_kwargs(cfg: Any) -> dict[str, Any]:
    """A triton.Config as launch kwargs (tiles, num_warps, num_stages)."""
    return {**cfg.kwargs, "num_warps": cfg.num_warps, "num_stages": cfg.num_stages}


# ----------------------------------------------------------------------------------------------
# Tail tiles
# ----------------------------------------------------------------------------------------------


def np2(n: int, lo: int = 16) -> int:
    """Next power of two >= max(n, lo). Plain int arithmetic: triton.next_power_of_2 is a
    constexpr_function in Triton 3.6, several microseconds per call on the hot path."""
    n = max(int(n), lo)
    return 1 << (n - 1).bit_length()


def tail(block: int, *lengths: int) -> int:
    """The tile of the ragged last block: the next power of two (>= 16) above the largest remainder
    `length % block` of the directions, or `block` when no remainder needs less (or there is none)."""
    rest = max(n % block for n in lengths)
    return min(block, np2(rest)) if rest else block


def tails(cfg: dict[str, Any], lc: int, ld: int, lkc: int, lkd: int) -> dict[str, int]:
    """TAIL_* for every BLOCK_M* / BLOCK_N* tile of a config (forward or backward): M tiles run over
    the queries (lc, ld), N tiles over the keys (lkc, lkd)."""
    on = knobs.current().tails
    out = {}
    for name, block in cfg.items():
        if name.startswith(("BLOCK_M", "BLOCK_N")):
            lengths = (lc, ld) if name[6] == "M" else (lkc, lkd)
            out[name.replace("BLOCK_", "TAIL_")] = tail(block, *lengths) if on else block
    return out


def tail_heuristics(blocks: tuple[str, ...]) -> dict[str, Any]:
    """triton.heuristics values: each TAIL_* from the candidate's tiles and the launch's token counts."""
    def one(name: str) -> Any:
        return lambda a: tails({b: a[b] for b in blocks}, a["Lc"], a["Ld"], a["Lkc"], a["Lkd"])[name]

    return {b.replace("BLOCK_", "TAIL_"): one(b.replace("BLOCK_", "TAIL_")) for b in blocks}


# ----------------------------------------------------------------------------------------------
# Fixed configs (no autotuning: the interpreter, or knob autotune=False)
# ----------------------------------------------------------------------------------------------


def fixed_fwd(lq: int, lk: int, d: int, dtype: torch.dtype) -> dict[str, Any]:
    """Fixed forward config; knob `poly_exp` turns on `_exp2_fma` for fp16/bf16 (tests)."""
    k = knobs.current()
    poly = k.poly_exp and dtype != torch.float32
    if k.interpret:  # small blocks: tiny test shapes still cover several blocks, the masks and the tails
        return {"BLOCK_M": 32, "BLOCK_N": 32, "POLY_EXP": poly}
    if poly:
        return {"BLOCK_M": 128, "BLOCK_N": 128, "POLY_EXP": True, "num_warps": 8, "num_stages": 3}
    if lq <= 64 and lk <= 64:
        return {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2}
    if d > 64:
        return {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3}
    return {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 3}


def fixed_atomic(lq: int, lk: int, d: int) -> dict[str, Any]:
    """Fixed atomic-backward config (spill-free per head dim, ptxas sm_90)."""
    if knobs.current().interpret:
        return {"BLOCK_M": 16, "BLOCK_N": 16}
    if d > 64:  # spill-free at D=128 (ptxas, sm_90)
        return {"BLOCK_M": 32, "BLOCK_N": 128, "num_warps": 8, "num_stages": 2}
    if d > 32:  # spill-free at D=64
        return {"BLOCK_M": 64, "BLOCK_N": 128, "num_warps": 8, "num_stages": 3}
    return {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3}


def fixed_bwd(lq: int, lk: int, d: int) -> dict[str, Any]:
    """Fixed general-backward config."""
    if knobs.current().interpret:
        return {"BLOCK_M1": 16, "BLOCK_N1": 16, "BLOCK_M2": 16, "BLOCK_N2": 16}
    if d > 64 or (d > 32 and max(lq, lk) > 256):  # no register spills at D=128 / D=64 (ptxas, sm_90)
        blocks = {"BLOCK_M1": 64, "BLOCK_N1": 64, "BLOCK_M2": 64, "BLOCK_N2": 64}
        return {**blocks, "num_warps": 8, "num_stages": 2}
    if max(lq, lk) <= 256:
        blocks = {"BLOCK_M1": 32, "BLOCK_N1": 64, "BLOCK_M2": 64, "BLOCK_N2": 32}
        return {**blocks, "num_warps": 4, "num_stages": 2}
    blocks = {"BLOCK_M1": 32, "BLOCK_N1": 128, "BLOCK_M2": 128, "BLOCK_N2": 32}
    return {**blocks, "num_warps": 4, "num_stages": 3}


def fixed_small(lq: int, lk: int, d: int) -> dict[str, Any]:
    """Fixed config of the one-tile backward (its tiles are the token counts, see `small_tiles`)."""
    return {"num_warps": 8 if d > 64 else 4 if lq * lk > 1024 else 2, "num_stages": 1}


def small_tiles(lq: int, lk: int) -> dict[str, int]:
    """The one-tile backward's tiles: all queries and all keys."""
    return {"BLOCK_M": np2(lq), "BLOCK_N": np2(lk)}


def _dot_prec(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


_META: dict[tuple[int, torch.dtype], dict[str, Any]] = {}


def kernel_meta(d: int, dtype: torch.dtype) -> dict[str, Any]:
    """Constexpr kwargs shared by the attention kernels (cached: built once per head dim/dtype).
    The caller must not mutate the returned dict."""
    meta = _META.get((d, dtype))
    if meta is None:
        meta = _META[(d, dtype)] = {"HEAD_DIM": d, "BLOCK_D": np2(d), "DOT_PREC": _dot_prec(dtype)}
    return meta
