"""Models on tiny inputs: every arch runs forward/backward, stages match timm, parameter sharing,
ablation switches, local pretrained weights and option errors."""

import pytest
import timm
import torch

from ssnbench.data.labels import NUM_CLASSES
from ssnbench.errors import ConfigError
from ssnbench.models import arch_options, build_model, list_archs
from ssnbench.models.backbone import auto_kv_reduction, create_backbone

S = 32  # tiny images: every model here runs in well under a second on 2 cores
TINY = dict(backbone="resnet18", image_size=S)


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _images(b=2, s=S, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, s, s, generator=g), torch.randn(b, 3, s, s, generator=g)


def _check_outputs(out, heads, b=2):
    assert list(out) == list(heads)
    for logits in out.values():
        assert [tuple(t.shape) for t in logits] == [(b, k) for k in NUM_CLASSES]
        assert all(torch.isfinite(t).all() for t in logits)


@pytest.fixture(scope="module")
def resnet_models():
    torch.manual_seed(0)
    return {
        "ssn": build_model("ssn", **TINY),
        "ssn_none": build_model("ssn", xattn="none", **TINY),
        "ssn_separate": build_model("ssn", xattn="separate", **TINY),
        "ssn_share_heads": build_model("ssn", share_heads=True, **TINY),
        "dual": build_model("dual", **TINY),
        "dual_xattn": build_model("dual", xattn="separate", **TINY),
        "single_derm": build_model("single", modality="derm", **TINY),
    }


def test_registry():
    assert list_archs() == ["dual", "single", "ssn"]
    opts = arch_options("ssn")
    assert opts["xattn"] == "shared" and opts["share_heads"] is False and opts["xattn_stages"] is None


@pytest.mark.parametrize("name", ["ssn", "ssn_separate", "ssn_share_heads", "dual_xattn", "single_derm"])
def test_forward_backward(resnet_models, name):
    model = resnet_models[name]
    model.train()
    clinic, derm = _images()
    out = model(clinic, derm)
    _check_outputs(out, model.output_heads)
    assert model.modalities == (("derm",) if name.startswith("single") else ("clinic", "derm"))
    sum(t.float().pow(2).mean() for v in out.values() for t in v).backward()
    grads = [p.grad for p in model.parts()["encoder"].parameters()]
    assert all(g is not None for g in grads)
    model.zero_grad(set_to_none=True)


def test_single_ignores_other_image(resnet_models):
    model = resnet_models["single_derm"].eval()
    _, derm = _images()
    with torch.no_grad():
        a, b = model(None, derm), model(torch.zeros_like(derm), derm)
    torch.testing.assert_close(a["derm"][0], b["derm"][0])
    clinic_only = build_model("single", modality="clinic", **TINY)
    assert list(clinic_only(derm, None)) == ["clinic"]


def test_ssn_starts_as_its_backbone(resnet_models):
    """Zero-initialised gates: at init the cross-attention leaves the (e.g. pretrained) backbone's
    features unchanged, and the joint 2B batch gives the same features as one image at a time."""
    model = resnet_models["ssn"].eval()
    clinic, derm = _images()
    with torch.no_grad():
        out = model(clinic, derm)
        f_c, f_d = model.encoder(clinic), model.encoder(derm)
    torch.testing.assert_close(out["clinic"][0], model.heads["clinic"](f_c)[0])
    torch.testing.assert_close(out["derm"][3], model.heads["derm"](f_d)[3])
    torch.testing.assert_close(out["fused"][1], model.heads["fused"](torch.cat([f_c, f_d], 1))[1])


def test_different_image_sizes(resnet_models):
    model = resnet_models["ssn"]
    clinic, _ = _images(s=S)
    _, derm = _images(s=48)
    _check_outputs(model(clinic, derm), model.output_heads)


def test_parameter_sharing(resnet_models):
    n = {k: _params(m) for k, m in resnet_models.items()}
    parts = {k: {p: _params(v) for p, v in m.parts().items()} for k, m in resnet_models.items()}
    assert n["ssn"] < n["dual"]
    assert 0.45 < n["ssn_none"] / n["dual"] < 0.55  # one encoder instead of two
    assert parts["dual"]["encoder"] == 2 * parts["ssn"]["encoder"]
    # ablations: xattn none has no attention weights, separate has twice the shared ones
    assert parts["ssn_none"]["cross_attention"] == 0
    assert parts["ssn_separate"]["cross_attention"] == 2 * parts["ssn"]["cross_attention"] > 0
    assert parts["dual_xattn"]["cross_attention"] == parts["ssn_separate"]["cross_attention"]
    # share_heads drops exactly one modality head (512 features -> 24 logits)
    head = 512 * sum(NUM_CLASSES) + sum(NUM_CLASSES)
    assert n["ssn"] - n["ssn_share_heads"] == head
    for k in n:  # parts cover the whole model, shared modules counted once
        assert sum(parts[k].values()) == n[k]


def test_ssn_resnet50_about_half_of_dual():
    with torch.device("meta"):
        ssn50 = _params(build_model("ssn", backbone="resnet50"))
        dual50 = _params(build_model("dual", backbone="resnet50"))
        full = build_model("ssn", backbone="resnet50", xattn_dim="full")
    assert 0.5 < ssn50 / dual50 < 0.6  # ~26.3M vs ~47.2M
    assert full.config["attn_dim"] == [512, 1024, 2048] and _params(full) > ssn50


def test_set_xattn_impl(resnet_models):
    model = resnet_models["ssn"]
    model.set_xattn_impl("sdpa")
    assert {b.impl for b in model.cross_attention.values()} == {"sdpa"}
    clinic, derm = _images()
    _check_outputs(model(clinic, derm), model.output_heads)
    model.set_xattn_impl("reference")


def test_xattn_stages_and_kv_reduction():
    with torch.device("meta"):  # shapes only: no memory, no init cost
        default = build_model("ssn", backbone="resnet18", image_size=224)
        custom = build_model(
            "ssn", backbone="resnet18", image_size=224, xattn_stages=[1, -1], kv_reduction=[2, 1]
        )
        auto = build_model("ssn", backbone="resnet18", image_size=224, xattn_stages=[0, 1, 2, 3, 4])
    # resnet18 stages: strides 2, 4, 8, 16, 32; default = the last three (28², 14², 7² at 224 px)
    assert default.config["stages"] == [2, 3, 4] and default.config["kv_reduction"] == [1, 1, 1]
    assert default.config["attn_dim"] == [128, 256, 256]  # auto: min(C, 256)
    assert custom.config["stages"] == [1, 4] and custom.config["kv_reduction"] == [2, 1]
    # auto: K/V of the 112² and 56² stages pooled to at most 784 tokens
    assert auto.config["kv_reduction"] == [4, 2, 1, 1, 1]
    assert auto_kv_reduction((56, 56)) == 2 and auto_kv_reduction((7, 7)) == 1


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("resnet18", {}),
        ("efficientnet_b0", {}),
        ("swin_tiny_patch4_window7_224", {"img_size": S}),  # NHWC stages
        ("vit_tiny_patch16_224", {"img_size": S}),  # tokens, blocks grouped into stages
    ],
)
def test_stages_match_timm(name, kwargs):
    torch.manual_seed(0)
    staged = create_backbone(name, image_size=S).eval()
    torch.manual_seed(0)
    full = timm.create_model(name, num_classes=0, **kwargs).eval()
    x = torch.randn(1, 3, S, S)
    with torch.no_grad():
        maps = staged.forward_maps(x)
        if name.startswith("vit"):
            ref = full.forward_intermediates(x, indices=[2, 5, 8, 11], intermediates_only=True, norm=False)
        else:
            ref = full.forward_intermediates(x, intermediates_only=True)
    assert len(maps) == len(ref) == staged.num_stages
    for m, r in zip(maps, ref, strict=True):
        torch.testing.assert_close(m, r)


def test_transformer_backbone_forward_backward():
    model = build_model("ssn", backbone="vit_tiny_patch16_224", image_size=S, xattn_heads=3)
    clinic, derm = _images()
    out = model(clinic, derm)
    _check_outputs(out, model.output_heads)
    sum(t.pow(2).mean() for v in out.values() for t in v).backward()
    assert model.config["stages"] == [1, 2, 3] and model.config["heads"] == [3, 3, 3]


def test_local_pretrained_weights(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    src = timm.create_model("resnet18", num_classes=10)  # a classifier of another size: dropped
    save_file(src.state_dict(), tmp_path / "r18.safetensors")
    torch.save({"state_dict": src.state_dict()}, tmp_path / "r18.pth")
    for f in ("r18.safetensors", "r18.pth"):
        model = build_model("ssn", pretrained=str(tmp_path / f), xattn="none", **TINY)
        torch.testing.assert_close(model.encoder.stages[4].layer4[1].conv2.weight, src.layer4[1].conv2.weight)
        torch.testing.assert_close(model.encoder.stages[0].conv1.weight, src.conv1.weight)
    with pytest.raises(ConfigError, match="does not fit backbone 'resnet34'"):
        build_model("single", backbone="resnet34", image_size=S, pretrained=str(tmp_path / "r18.pth"))
    with pytest.raises(ConfigError, match="does not exist"):
        build_model("dual", pretrained=str(tmp_path / "missing.safetensors"), **TINY)


@pytest.mark.parametrize(
    "arch, options, match",
    [
        ("ssm", {}, "arch: unknown model arch 'ssm'"),
        ("ssn", {"xatn": "none"}, "xatn: unknown option.*did you mean 'xattn'"),
        ("ssn", {"backbone": "resnet19"}, "close matches: .*resnet18"),
        ("ssn", {"xattn": "both"}, "xattn: expected one of"),
        ("dual", {"xattn": "shared"}, "xattn: expected one of none, separate"),
        ("ssn", {"xattn_impl": "cuda"}, "xattn_impl"),
        ("ssn", {"share_heads": "yes"}, "share_heads"),
        ("ssn", {"drop_rate": 1.5}, "drop_rate"),
        ("ssn", {"kv_reduction": 0}, "kv_reduction"),
        ("ssn", {"kv_reduction": [1, 2]}, "one value per cross-attention stage"),
        ("ssn", {"xattn_stages": [9]}, "xattn_stages"),
        ("ssn", {"xattn_dim": "half"}, "xattn_dim"),
        ("ssn", {"xattn_dim": 0}, "xattn_dim"),
        ("ssn", {"xattn_stages": [2, -3]}, "listed twice"),
        ("ssn", {"pretrained": 3}, "pretrained: expected true, false or a weights file path"),
        ("single", {"modality": "both"}, "modality"),
        ("single", {"xattn": "shared"}, "xattn: unknown option"),
    ],
)
def test_bad_options(arch, options, match):
    opts = {**TINY, **options} if arch != "ssm" else options
    with torch.device("meta"), pytest.raises(ConfigError, match=match):
        build_model(arch, **opts)
