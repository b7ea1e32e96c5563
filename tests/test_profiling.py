"""Parameter counting, GMACs (our attention handles against the formula) and throughput records."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ssnbench import kernels, profiling
from ssnbench.models import cross_attention as xattn
from ssnbench.models import registry


class _TwoImageToy(nn.Module):
    """A minimal two-image model honouring the model contract: a shared encoder, one shared and one
    per-modality head, dict-of-lists output."""

    modalities = ("clinic", "derm")

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                     nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.xattn = nn.Linear(8, 8)
        self.head_c = nn.Linear(8, 5)
        self.head_d = nn.Linear(8, 5)
        self.head_f = self.head_c  # the same module reached twice: must count once

    def parts(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "cross_attention": self.xattn,
                "heads": nn.ModuleList([self.head_c, self.head_d, self.head_f])}

    def forward(self, clinic: torch.Tensor, derm: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        f_c, f_d = self.xattn(self.encoder(clinic)), self.xattn(self.encoder(derm))
        return {"clinic": [self.head_c(f_c)], "derm": [self.head_d(f_d)], "fused": [self.head_f(f_c + f_d)]}


class _SingleToy(_TwoImageToy):
    modalities = ("derm",)


def test_params_per_part_sum_to_total_and_shared_counted_once() -> None:
    model = _TwoImageToy()
    counts = profiling.count_parameters(model)
    conv = 3 * 8 * 9 + 8
    lin8, lin5 = 8 * 8 + 8, 8 * 5 + 5
    assert counts["encoder"] == conv
    assert counts["cross_attention"] == lin8
    assert counts["heads"] == 2 * lin5  # head_f is head_c
    assert counts["total"] == conv + lin8 + 2 * lin5
    assert sum(counts[k] for k in ("encoder", "cross_attention", "heads", "other")) == counts["total"]
    assert counts["other"] == 0


def test_param_shared_between_parts_goes_to_first_part() -> None:
    model = _TwoImageToy()
    model.parts = lambda: {"encoder": model.encoder, "cross_attention": model.encoder, "heads": model.head_d}
    counts = profiling.count_parameters(model)
    assert counts["cross_attention"] == 0
    assert sum(counts[k] for k in ("encoder", "cross_attention", "heads", "other")) == counts["total"]
    assert counts["other"] == counts["total"] - counts["encoder"] - counts["heads"] > 0


def test_params_without_parts() -> None:
    counts = profiling.count_parameters(nn.Linear(4, 3))
    assert counts["total"] == 15 == counts["other"]


class _Sdpa(nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v)


def test_sdpa_handle_counts_formula() -> None:
    b, h, lq, lk, d = 2, 4, 10, 7, 16
    q, k, v = torch.randn(b, h, lq, d), torch.randn(b, h, lk, d), torch.randn(b, h, lk, d)
    report = profiling.gmacs_report(_Sdpa(), inputs=(q, k, v))
    assert report["gmacs"] * 1e9 == pytest.approx(2 * b * h * lq * lk * d)
    assert "aten::scaled_dot_product_attention" not in report["unsupported_ops"]


def test_fused_op_handle_counts_both_directions() -> None:
    class _Fused(nn.Module):
        def forward(self, *qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return kernels.shared_cross_attention(*qkv)

    b, h, l_c, l_d, d = 2, 2, 9, 5, 16
    c = [torch.randn(b, h, l_c, d) for _ in range(3)]
    dd = [torch.randn(b, h, l_d, d) for _ in range(3)]
    report = profiling.gmacs_report(_Fused(), inputs=(*c, *dd))
    assert report["gmacs"] * 1e9 == pytest.approx(2 * (2 * b * h * l_c * l_d * d))
    assert not any("shared_cross_attention" in op for op in report["unsupported_ops"])


@pytest.mark.parametrize("impl", ["sdpa", "triton", "reference"])
def test_block_gmacs_match_formula_plus_linears(impl: str) -> None:
    """The whole block: shared QKV over both modalities' tokens, the attention core (both
    directions) and the shared output projection. The reference impl is plain matmuls (counted
    by fvcore itself), so all three must agree."""
    b, c, heads = 1, 32, 4
    hc, hd = 4, 3  # L_c = 16, L_d = 9: unequal token counts
    block = xattn.SharedCrossAttention(c, num_heads=heads, impl=impl)
    f_c, f_d = torch.randn(b, c, hc, hc), torch.randn(b, c, hd, hd)
    report = profiling.gmacs_report(block, inputs=(f_c, f_d))
    l_c, l_d = hc * hc, hd * hd
    d = c // heads
    attention = 2 * b * heads * l_c * l_d * d * 2  # 2·B·H·Lq·Lk·D per direction, two directions
    linears = (l_c + l_d) * b * (3 * c * c + c * c)  # QKV and output projection on every token
    counted = report["gmacs"] * 1e9
    # norms or gates are tiny next to these; allow 5% for whatever the block adds (e.g. a LayerNorm)
    assert counted == pytest.approx(attention + linears, rel=0.05), report


def test_gmacs_of_two_image_model_and_unsupported_ops_field() -> None:
    report = profiling.gmacs_report(_TwoImageToy(), 8)
    assert report["gmacs"] > 0
    assert isinstance(report["unsupported_ops"], dict)
    assert profiling.count_gmacs(_TwoImageToy(), (8, 6)) > 0


def test_gmacs_none_without_fvcore(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def fake_import(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("fvcore"):
            raise ImportError("no fvcore here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    report = profiling.gmacs_report(_TwoImageToy(), 8)
    assert report["gmacs"] is None and "fvcore" in report["note"]


@pytest.mark.parametrize("train", [False, True])
def test_throughput_record_counts_modalities_and_restores_model(train: bool) -> None:
    model = _TwoImageToy()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rec = profiling.measure_throughput(model, 4, 16, "cpu", train=train, amp=True,
                                       channels_last=True, warmup=1, iters=3)
    assert rec["status"] == "ok" and rec["mode"] == ("train" if train else "infer")
    assert rec["images_per_step"] == 8
    assert rec["samples_per_sec"] == pytest.approx(8 / (rec["step_time_ms"] / 1e3))
    assert rec["step_time_spread_ms"] >= 0 and rec["amp"] is None  # autocast is CUDA-only
    assert rec["memory_kind"].startswith("cpu")
    assert model.training  # restored
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())


def test_single_modality_counts_one_image_per_case() -> None:
    rec = profiling.measure_throughput(_SingleToy(), 4, 16, "cpu", train=False, amp=False,
                                       channels_last=False, warmup=0, iters=2)
    assert rec["images_per_step"] == 4 and rec["modalities"] == 1


def test_oom_is_recorded_and_the_sweep_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _TwoImageToy()
    calls = {"n": 0}
    real_forward = model.forward

    def exploding(clinic: torch.Tensor, derm: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        if clinic.shape[0] >= 8:
            calls["n"] += 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(clinic, derm)

    monkeypatch.setattr(model, "forward", exploding)
    records = [profiling.measure_throughput(model, b, 8, "cpu", train=t, amp=False, channels_last=False,
                                            warmup=1, iters=2) for b in (2, 8, 4) for t in (False, True)]
    assert [r["status"] for r in records] == ["ok", "ok", "oom", "oom", "ok", "ok"]
    assert records[2]["samples_per_sec"] is None and "out of memory" in records[2]["error"]
    assert calls["n"] == 2
    assert all(p.grad is None for p in model.parameters())


def test_real_ssn_and_dual_parts_and_sharing() -> None:
    ssn = profiling.count_parameters(registry.build_model("ssn", backbone="resnet18", image_size=32))
    dual = profiling.count_parameters(registry.build_model("dual", backbone="resnet18", image_size=32))
    for counts in (ssn, dual):
        assert sum(counts[k] for k in ("encoder", "cross_attention", "heads", "other")) == counts["total"]
    assert ssn["encoder"] * 2 == dual["encoder"]  # one shared encoder, counted once


def test_bench_loss_draws_targets_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in loss of a training step draws its targets on the first call and reuses them:
    a timed step must not pay a host->device copy (a stream sync on CUDA) per logit tensor."""
    loss_fn = profiling.BenchLoss()
    out = {"clinic": [torch.randn(4, 3, requires_grad=True), torch.randn(4, 5)], "fused": [torch.randn(4, 2)]}
    first = loss_fn(out)
    draws = []
    real_randint = torch.randint
    monkeypatch.setattr(torch, "randint", lambda *a, **k: draws.append(a) or real_randint(*a, **k))
    second = loss_fn(out)
    assert draws == [] and torch.equal(first, second)
    logits = [*out["clinic"], *out["fused"]]
    gens = [torch.Generator().manual_seed(i) for i in range(len(logits))]
    targets = [real_randint(0, t.shape[1], (4,), generator=g) for t, g in zip(logits, gens, strict=True)]
    expected = sum(torch.nn.functional.cross_entropy(t, y) for t, y in zip(logits, targets, strict=True))
    torch.testing.assert_close(first, expected)
    first.backward()
    assert out["clinic"][0].grad is not None


def test_bench_loss_is_the_training_loss_for_head_outputs() -> None:
    """SSN/dual/single outputs get the real MultiHeadLoss (prior weights) on fixed in-range labels."""
    from ssnbench.data.labels import NUM_CLASSES
    from ssnbench.losses import MultiHeadLoss, head_weights_for

    out = {h: [torch.randn(3, k) for k in NUM_CLASSES] for h in ("clinic", "derm", "fused")}
    loss_fn = profiling.BenchLoss()
    got = loss_fn(out)
    (labels,) = loss_fn._targets.values()
    assert labels.shape == (3, 8) and all((labels[:, i] < k).all() for i, k in enumerate(NUM_CLASSES))
    want, _ = MultiHeadLoss(head_weights_for("prior", list(out)))(out, labels)
    torch.testing.assert_close(got, want)
    assert torch.equal(loss_fn(out), got)
