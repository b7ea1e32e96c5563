"""Placeholder: Triton kernels land in the next commit; routes to the reference meanwhile."""

from . import reference


def forward(q_c, k_c, v_c, q_d, k_d, v_d, scale):
    o_c, o_d, lse_c, lse_d = reference.shared_cross_attention_reference_with_lse(
        q_c, k_c, v_c, q_d, k_d, v_d, scale
    )
    return o_c.contiguous(), o_d.contiguous(), lse_c.float().contiguous(), lse_d.float().contiguous()


def backward(do_c, do_d, q_c, k_c, v_c, q_d, k_d, v_d, o_c, o_d, lse_c, lse_d, scale):
    grads = reference.shared_cross_attention_reference_backward(
        do_c, do_d, q_c, k_c, v_c, q_d, k_d, v_d, o_c, o_d, lse_c, lse_d, scale
    )
    return tuple(g.contiguous() for g in grads)
