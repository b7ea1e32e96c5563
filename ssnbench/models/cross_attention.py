"""The SSN shared cross-attention block between the clinic and derm feature maps of one stage.

Tokens of both modalities go through ONE set of weights: a single QKV GEMM over the 2B stacked
token sets, the fused both-directions attention core, the shared output projection and a gated
residual. The gate is zero-initialised (per channel, one per modality output), so a pretrained
backbone starts unchanged; the gate itself gets gradient at once and the attention weights get it
as soon as the gate moves away from zero (the usual zero-init residual / ReZero scheme).

`kv_reduction=r > 1` average-pools each modality's map by r (ceil mode) before the K/V projection,
PVT-style, for stages with many tokens; queries keep full resolution.
`shared=False` keeps one set of weights per direction (the `xattn: separate` ablation): the c->d
direction (clinic queries, derm keys/values) uses weights A, the d->c direction weights B; the core
still computes both directions in one call.

`forward_stacked(x, batch)` is the path SSN's shared encoder takes: both modalities arrive as ONE
[2B, C, H, W] batch (clinic first) and stay one batch through the block (one LayerNorm, one QKV
GEMM, one output projection, one residual add), so nothing is split and re-concatenated around it.
It computes exactly what `forward(x[:B], x[B:])` does, with about half the tensor ops per
forward+backward, which is what a host-bound GPU step pays for.
The gate scales the output projection's weight and bias (a [C, C] product) rather than its
[B·L, C] output: the same update, without a full-size elementwise pass and its reduction in the
backward.

`impl` picks the attention core: `triton` (ssnbench.kernels, fused, one launch on CUDA), `sdpa`
(torch.nn.functional.scaled_dot_product_attention, one call per direction or one batched call when
the token counts agree) or `reference` (plain PyTorch math).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMPLS = ("triton", "sdpa", "reference")

__all__ = ["IMPLS", "SharedCrossAttention", "add_update", "attention_core", "attention_core_stacked"]


def attention_core(
    impl: str, q_c: Tensor, k_c: Tensor, v_c: Tensor, q_d: Tensor, k_d: Tensor, v_d: Tensor
) -> tuple[Tensor, Tensor]:
    """(softmax(q_c k_dᵀ/√D) v_d, softmax(q_d k_cᵀ/√D) v_c) for [B, H, L, D] tensors."""
    if impl == "triton":
        from ssnbench.kernels import shared_cross_attention

        return shared_cross_attention(q_c, k_c, v_c, q_d, k_d, v_d)
    if impl == "sdpa":
        if q_c.shape == q_d.shape and k_c.shape == k_d.shape:
            out = F.scaled_dot_product_attention(
                torch.cat([q_c, q_d]), torch.cat([k_d, k_c]), torch.cat([v_d, v_c])
            )
            return out[: q_c.shape[0]], out[q_c.shape[0] :]
        return (
            F.scaled_dot_product_attention(q_c, k_d, v_d),
            F.scaled_dot_product_attention(q_d, k_c, v_c),
        )
    if impl == "reference":
        from ssnbench.kernels.reference import shared_cross_attention_reference

        return shared_cross_attention_reference(q_c, k_c, v_c, q_d, k_d, v_d)
    raise ValueError(f"unknown cross-attention impl {impl!r}; expected one of {', '.join(IMPLS)}")


def attention_core_stacked(impl: str, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Both directions for [2, B, H, L, D] q, k, v (index 0 clinic, 1 derm; usually views of one
    QKV GEMM) -> the outputs merged to rows [2·B·L, H·D] (clinic rows first), ready for the output
    projection. One copy merges the heads whatever the core."""
    if impl == "sdpa":
        # Queries stay a view; the key/value swap (derm keys for clinic queries) is one copy each.
        swap = (k.flip(0).flatten(0, 1), v.flip(0).flatten(0, 1))
        out = F.scaled_dot_product_attention(q.flatten(0, 1), *swap)
        return out.transpose(1, 2).reshape(-1, q.shape[2] * q.shape[4])
    (q_c, q_d), (k_c, k_d), (v_c, v_d) = q.unbind(0), k.unbind(0), v.unbind(0)
    o_c, o_d = attention_core(impl, q_c, k_c, v_c, q_d, k_d, v_d)
    return torch.cat([o_c.transpose(1, 2), o_d.transpose(1, 2)]).flatten(0, 1).flatten(1)


class _Projections(nn.Module):
    """Norm + Q, K/V and output projections: one instance serves both modalities (shared=True)."""

    def __init__(self, dim: int, qkv_bias: bool, fused_qkv: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fused_qkv = fused_qkv
        if fused_qkv:
            self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        else:
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
            self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def gated_proj(self, x: Tensor, gate: Tensor) -> Tensor:
        """gate * proj(x), with the gate folded into the [C, C] weight and the bias."""
        return F.linear(x, self.proj.weight * gate[:, None], self.proj.bias * gate)

    def q_weight(self) -> tuple[Tensor, Tensor | None]:
        if self.fused_qkv:
            d = self.qkv.out_features // 3
            return self.qkv.weight[:d], None if self.qkv.bias is None else self.qkv.bias[:d]
        return self.q.weight, self.q.bias

    def kv_weight(self) -> tuple[Tensor, Tensor | None]:
        if self.fused_qkv:
            d = self.qkv.out_features // 3
            return self.qkv.weight[d:], None if self.qkv.bias is None else self.qkv.bias[d:]
        return self.kv.weight, self.kv.bias


def _tokens(x: Tensor) -> Tensor:
    """[B, C, H, W] -> [B, H*W, C] (a view when x is channels_last)."""
    return x.flatten(2).transpose(1, 2)


def _as_map(y: Tensor, like: Tensor) -> Tensor:
    """Token rows [B*H*W, C] (or [B, H*W, C]) -> a [B, C, H, W] map shaped like `like`
    (a channels_last view, no copy)."""
    return y.view(like.shape[0], -1, like.shape[1]).transpose(1, 2).reshape(like.shape)


def add_update(f: Tensor, u: Tensor) -> Tensor:
    """f + u in f's dtype (under autocast the update may come out in bf16 while f is fp32)."""
    return f + (u if u.dtype == f.dtype else u.to(f.dtype))


class SharedCrossAttention(nn.Module):
    """Cross-attention between two modalities' feature maps with shared (or per-direction) weights.

    Args:
        dim: channels C of both maps.
        num_heads: attention heads; C must be divisible by it (ValueError otherwise).
        impl: `triton`, `sdpa` or `reference` (see module docstring); changeable later via `.impl`.
        kv_reduction: average-pool factor applied to the K/V tokens (1 = none).
        shared: one set of weights for both directions (True) or one per direction (False).
        qkv_bias: bias on the Q/K/V projections.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        impl: str = "reference",
        kv_reduction: int = 1,
        shared: bool = True,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        if dim <= 0 or num_heads <= 0 or dim % num_heads:
            raise ValueError(
                f"SharedCrossAttention: dim={dim} must be a positive multiple of num_heads={num_heads}"
            )
        if impl not in IMPLS:
            raise ValueError(f"unknown cross-attention impl {impl!r}; expected one of {', '.join(IMPLS)}")
        if int(kv_reduction) < 1:
            raise ValueError(f"kv_reduction must be >= 1, got {kv_reduction}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.impl = impl
        self.kv_reduction = int(kv_reduction)
        self.shared = shared
        fused = self.kv_reduction == 1
        if shared:
            self.proj_shared = _Projections(dim, qkv_bias, fused)
            self.gate = nn.Parameter(torch.zeros(dim))
        else:
            self.proj_a = _Projections(dim, qkv_bias, fused)  # c->d: clinic queries, derm keys/values
            self.proj_b = _Projections(dim, qkv_bias, fused)  # d->c: derm queries, clinic keys/values
            self.gate_c = nn.Parameter(torch.zeros(dim))
            self.gate_d = nn.Parameter(torch.zeros(dim))

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, impl={self.impl}, "
            f"kv_reduction={self.kv_reduction}, shared={self.shared}"
        )

    def _pool(self, x: Tensor) -> Tensor:
        r = self.kv_reduction
        return x if r == 1 else F.avg_pool2d(x, r, r, ceil_mode=True, count_include_pad=False)

    def _heads(self, x: Tensor, batch: int, n: int) -> Tensor:
        """[B*L, n*C] rows of one modality -> n tensors [B, H, L, Dh] (strided views, no copy)."""
        x = x.reshape(batch, -1, n, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return x.unbind(0)

    def _merge(self, o: Tensor) -> Tensor:
        """[B, H, L, Dh] -> [B, L, C]."""
        return o.transpose(1, 2).reshape(o.shape[0], o.shape[2], self.dim)

    def forward(self, f_c: Tensor, f_d: Tensor) -> tuple[Tensor, Tensor]:
        u_c, u_d = self.updates(f_c, f_d)
        return add_update(f_c, u_c), add_update(f_d, u_d)

    def forward_stacked(self, x: Tensor, batch: int) -> Tensor:
        """Both modalities as one batch, x = cat([f_c, f_d]) of shape [2B, C, H, W] -> the updated
        batch: `cat(forward(x[:B], x[B:]))` with about half the tensor ops (module docstring)."""
        return add_update(x, self.update_stacked(x, batch))

    def updates(self, f_c: Tensor, f_d: Tensor) -> tuple[Tensor, Tensor]:
        """The gated attention terms (u_c, u_d) that `forward` adds to f_c and f_d, as maps."""
        if f_c.dim() != 4 or f_d.dim() != 4 or f_c.shape[:2] != f_d.shape[:2] or f_c.shape[1] != self.dim:
            raise ValueError(
                f"SharedCrossAttention(dim={self.dim}) expects f_c, f_d of shape [B, {self.dim}, H, W] "
                f"with the same B; got {tuple(f_c.shape)} and {tuple(f_d.shape)}"
            )
        B = f_c.shape[0]
        t_c, t_d = _tokens(f_c), _tokens(f_d)
        Lc, Ld = t_c.shape[1], t_d.shape[1]
        if self.shared:
            o_c, o_d = self._core_shared(f_c, f_d, t_c, t_d, B, Lc, Ld)
            merged = torch.cat([self._merge(o_c).reshape(B * Lc, -1), self._merge(o_d).reshape(B * Ld, -1)])
            y = self.proj_shared.gated_proj(merged, self.gate)  # shared output projection: one GEMM
            return _as_map(y[: B * Lc], f_c), _as_map(y[B * Lc :], f_d)
        o_c, o_d = self._core_separate(f_c, f_d, t_c, t_d, B)
        y_c = self.proj_a.gated_proj(self._merge(o_c), self.gate_c)
        y_d = self.proj_b.gated_proj(self._merge(o_d), self.gate_d)
        return _as_map(y_c, f_c), _as_map(y_d, f_d)

    def update_stacked(self, x: Tensor, batch: int) -> Tensor:
        """The gated attention term of `forward_stacked` for x = cat([f_c, f_d]), as a [2B, C, H, W] map."""
        if x.dim() != 4 or x.shape[0] != 2 * batch or x.shape[1] != self.dim:
            raise ValueError(
                f"SharedCrossAttention(dim={self.dim}).forward_stacked expects x of shape "
                f"[2*{batch}, {self.dim}, H, W] (clinic then derm); got {tuple(x.shape)}"
            )
        if not self.shared:  # two weight sets: the directions cannot share GEMMs anyway
            return torch.cat(self.updates(x[:batch], x[batch:]))
        p, (n, C, H, W) = self.proj_shared, x.shape
        L, heads, hd = H * W, self.num_heads, self.head_dim
        t = p.norm(_tokens(x).reshape(n * L, C))
        if self.kv_reduction == 1:  # ONE GEMM for Q, K and V of both modalities
            q, k, v = p.qkv(t).view(2, batch, L, 3, heads, hd).permute(3, 0, 1, 4, 2, 5).unbind(0)
        else:
            q = F.linear(t, *p.q_weight()).view(2, batch, L, heads, hd).transpose(2, 3)
            s = _tokens(self._pool(x))
            kv = F.linear(p.norm(s.reshape(n * s.shape[1], C)), *p.kv_weight())
            k, v = kv.view(2, batch, s.shape[1], 2, heads, hd).permute(3, 0, 1, 4, 2, 5).unbind(0)
        y = p.gated_proj(attention_core_stacked(self.impl, q, k, v), self.gate)
        return _as_map(y, x)

    def _core_shared(
        self, f_c: Tensor, f_d: Tensor, t_c: Tensor, t_d: Tensor, B: int, Lc: int, Ld: int
    ) -> tuple[Tensor, Tensor]:
        p = self.proj_shared
        x = p.norm(torch.cat([t_c.reshape(B * Lc, -1), t_d.reshape(B * Ld, -1)]))
        if self.kv_reduction == 1:
            qkv = p.qkv(x)  # ONE GEMM over both modalities' tokens
            q_c, k_c, v_c = self._heads(qkv[: B * Lc], B, 3)
            q_d, k_d, v_d = self._heads(qkv[B * Lc :], B, 3)
        else:
            wq, bq = p.q_weight()
            wkv, bkv = p.kv_weight()
            q = F.linear(x, wq, bq)
            (q_c,) = self._heads(q[: B * Lc], B, 1)
            (q_d,) = self._heads(q[B * Lc :], B, 1)
            s_c, s_d = _tokens(self._pool(f_c)), _tokens(self._pool(f_d))
            Sc, Sd = s_c.shape[1], s_d.shape[1]
            kv = F.linear(p.norm(torch.cat([s_c.reshape(B * Sc, -1), s_d.reshape(B * Sd, -1)])), wkv, bkv)
            k_c, v_c = self._heads(kv[: B * Sc], B, 2)
            k_d, v_d = self._heads(kv[B * Sc :], B, 2)
        return attention_core(self.impl, q_c, k_c, v_c, q_d, k_d, v_d)

    def _core_separate(
        self, f_c: Tensor, f_d: Tensor, t_c: Tensor, t_d: Tensor, B: int
    ) -> tuple[Tensor, Tensor]:
        a, b = self.proj_a, self.proj_b
        s_c = t_c if self.kv_reduction == 1 else _tokens(self._pool(f_c))
        s_d = t_d if self.kv_reduction == 1 else _tokens(self._pool(f_d))
        (q_c,) = self._heads(F.linear(a.norm(t_c), *a.q_weight()), B, 1)
        k_d, v_d = self._heads(F.linear(a.norm(s_d), *a.kv_weight()), B, 2)
        (q_d,) = self._heads(F.linear(b.norm(t_d), *b.q_weight()), B, 1)
        k_c, v_c = self._heads(F.linear(b.norm(s_c), *b.kv_weight()), B, 2)
        return attention_core(self.impl, q_c, k_c, v_c, q_d, k_d, v_d)
