"""Loss weighting (hand-computed), class weights and the inference combination of heads."""

import math

import pytest
import torch
import torch.nn.functional as F

from ssnbench.data.labels import NUM_CLASSES
from ssnbench.errors import ConfigError
from ssnbench.losses import (
    PRIOR_WEIGHTS,
    MultiHeadLoss,
    class_weights_from_labels,
    combine_probabilities,
    describe_combination,
    head_weights_for,
)

HEADS = ("clinic", "derm", "fused")


def test_head_weight_schemes():
    assert head_weights_for("equal", HEADS) == pytest.approx({h: 1 / 3 for h in HEADS})
    prior = head_weights_for("prior", HEADS)
    assert prior == pytest.approx(PRIOR_WEIGHTS)
    assert prior["derm"] > prior["fused"] > prior["clinic"] > 0
    assert sum(prior.values()) == pytest.approx(1.0)
    for scheme in ("prior", "equal"):  # a single model's only head gets weight 1
        assert head_weights_for(scheme, ["derm"]) == {"derm": 1.0}
    # overrides replace the defaults, then everything is renormalised over the heads present
    assert head_weights_for("prior", HEADS, {"fused": 0.0}) == pytest.approx(
        {"clinic": 0.2 / 0.7, "derm": 0.5 / 0.7, "fused": 0.0}
    )
    assert head_weights_for("equal", ["clinic", "derm"]) == pytest.approx({"clinic": 0.5, "derm": 0.5})


@pytest.mark.parametrize(
    "scheme, heads, overrides",
    [
        ("biased", HEADS, None),
        ("prior", ["both"], None),
        ("prior", HEADS, {"derm": -1}),
        ("prior", HEADS, {"derm": float("nan")}),
        ("prior", ["derm"], {"derm": 0}),
        ("prior", HEADS, {"x": 1}),
    ],
)
def test_head_weight_errors(scheme, heads, overrides):
    with pytest.raises(ConfigError):
        head_weights_for(scheme, heads, overrides)


def _zeros(b=2):
    return [torch.zeros(b, k) for k in NUM_CLASSES]


def test_multi_head_loss_hand_computed():
    b = 2
    labels = torch.zeros(b, 8, dtype=torch.long)
    # clinic: uniform logits -> CE of label i is log(K_i)
    # derm: logit m on the target class -> CE = log(1 + (K_i - 1) e^-m)
    # fused: logit m on a wrong class (index 1) -> CE = log(e^m + K_i - 1) - 0 = log(e^m + K_i - 1)
    m = 2.0
    derm, fused = _zeros(b), _zeros(b)
    for t in derm:
        t[:, 0] = m
    for t in fused:
        t[:, 1] = m
    outputs = {"clinic": _zeros(b), "derm": derm, "fused": fused}
    exp_c = sum(math.log(k) for k in NUM_CLASSES) / 8
    exp_d = sum(math.log(1 + (k - 1) * math.exp(-m)) for k in NUM_CLASSES) / 8
    exp_f = sum(math.log(math.exp(m) + k - 1) for k in NUM_CLASSES) / 8
    w = {"clinic": 0.2, "derm": 0.5, "fused": 0.3}
    total, per_head = MultiHeadLoss(w)(outputs, labels)
    assert per_head["clinic"].item() == pytest.approx(exp_c, rel=1e-5)
    assert per_head["derm"].item() == pytest.approx(exp_d, rel=1e-5)
    assert per_head["fused"].item() == pytest.approx(exp_f, rel=1e-5)
    assert total.item() == pytest.approx(0.2 * exp_c + 0.5 * exp_d + 0.3 * exp_f, rel=1e-5)
    total_eq, _ = MultiHeadLoss(head_weights_for("equal", HEADS))(outputs, labels)
    assert total_eq.item() == pytest.approx((exp_c + exp_d + exp_f) / 3, rel=1e-5)
    # single model: one head, weight 1
    single, _ = MultiHeadLoss({"derm": 1.0})({"derm": derm}, labels)
    assert single.item() == pytest.approx(exp_d, rel=1e-5)
    with pytest.raises(ValueError):  # heads must match the model's outputs
        MultiHeadLoss({"derm": 1.0})(outputs, labels)


def test_class_weights_inverse_frequency():
    labels = torch.zeros(6, 8, dtype=torch.long)
    labels[:, 0] = torch.tensor([1, 1, 1, 1, 0, 2])  # DIAG: BCC 1, NEV 4, MEL 1, MISC 0, SK 0
    labels[:, 2] = torch.tensor([0, 0, 0, 1, 1, 1])  # BWV balanced
    w = class_weights_from_labels(labels)
    assert [len(x) for x in w] == list(NUM_CLASSES)
    assert w[0].tolist() == pytest.approx([6 / 5, 6 / 20, 6 / 5, 1.0, 1.0])  # N / (K n_k); absent -> 1
    assert w[2].tolist() == pytest.approx([1.0, 1.0])
    # the weighted loss is torch's weighted CE mean: sum_i w_yi CE_i / sum_i w_yi
    logits = [torch.randn(6, k, generator=torch.Generator().manual_seed(k)) for k in NUM_CLASSES]
    loss = MultiHeadLoss({"derm": 1.0}, class_weights=w)({"derm": logits}, labels)[0]
    ce0 = F.cross_entropy(logits[0], labels[:, 0], reduction="none")
    wy = w[0][labels[:, 0]]
    manual0 = (wy * ce0).sum() / wy.sum()
    others = [F.cross_entropy(logits[i], labels[:, i], weight=w[i]) for i in range(1, 8)]
    assert loss.item() == pytest.approx(((manual0 + sum(others)) / 8).item(), rel=1e-5)


def test_combine_probabilities():
    a = [torch.tensor([[0.0, math.log(3.0)]])]  # softmax [0.25, 0.75]
    b = [torch.tensor([[math.log(3.0), 0.0]])]  # softmax [0.75, 0.25]
    out = combine_probabilities({"clinic": a, "derm": b}, {"clinic": 1.0, "derm": 3.0, "fused": 5.0})
    # fused absent -> renormalised over clinic/derm: 0.25 a + 0.75 b
    assert out[0][0].tolist() == pytest.approx([0.25 * 0.25 + 0.75 * 0.75, 0.25 * 0.75 + 0.75 * 0.25])
    assert combine_probabilities({"derm": b}, {"clinic": 1.0})[0][0].tolist() == pytest.approx([0.75, 0.25])
    # default = the prior
    outputs = {h: [torch.randn(4, k) for k in NUM_CLASSES] for h in HEADS}
    default = combine_probabilities(outputs)
    explicit = combine_probabilities(outputs, PRIOR_WEIGHTS)
    for d, e, k in zip(default, explicit, NUM_CLASSES, strict=True):
        assert d.shape == (4, k)
        torch.testing.assert_close(d, e)
        torch.testing.assert_close(d.sum(1), torch.ones(4))


def test_describe_combination():
    assert describe_combination(["derm"]) == "derm head only"
    text = describe_combination(HEADS, PRIOR_WEIGHTS)
    assert "derm 0.50" in text and "fused 0.30" in text and "clinic 0.20" in text
    assert describe_combination(HEADS, {"fused": 1.0}) == "fused head only"


@pytest.mark.parametrize("weighted", [False, True])
def test_head_loss_is_eight_cross_entropies(weighted: bool) -> None:
    """The one-call head loss equals the mean of 8 per-label F.cross_entropy calls (class weights
    included), in value and in the gradient of every logit, for bf16 logits as AMP gives them."""
    torch.manual_seed(0)
    b = 6
    labels = torch.stack([torch.randint(0, k, (b,)) for k in NUM_CLASSES], 1)
    class_w = [torch.rand(k) + 0.1 for k in NUM_CLASSES] if weighted else None
    loss_fn = MultiHeadLoss({"derm": 1.0}, class_weights=class_w)
    for dtype in (torch.float32, torch.bfloat16):
        logits = [(3 * torch.randn(b, k)).to(dtype).requires_grad_() for k in NUM_CLASSES]
        got = loss_fn.head_loss(logits, labels)
        got_grads = torch.autograd.grad(got, logits)
        want = torch.stack([
            F.cross_entropy(lg.float(), labels[:, i], weight=None if class_w is None else class_w[i])
            for i, lg in enumerate(logits)
        ]).mean()
        want_grads = torch.autograd.grad(want, logits)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want)
        for g, w in zip(got_grads, want_grads, strict=True):
            torch.testing.assert_close(g, w)
