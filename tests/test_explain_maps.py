"""Cross-attention maps (reference-path probabilities) and Grad-CAM for CNN and ViT backbones, and the
per-case gallery."""

from __future__ import annotations

import sys

import pytest
import torch
from explain_toys import ToyPairs

from ssnbench.errors import UserError
from ssnbench.explain.attention_maps import capture_attention, grad_cam, require_captum
from ssnbench.explain.gallery import pick_cases, write_gallery
from ssnbench.models.registry import build_model


def _opened(model: torch.nn.Module) -> torch.nn.Module:
    """Gates at 0.5 instead of their zero init, so the attention changes the features."""
    for block in model.cross_attention.values():
        for name, p in block.named_parameters():
            if "gate" in name:
                p.data.fill_(0.5)
    return model.eval()


@pytest.fixture(scope="module")
def ssn() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("ssn", backbone="test_resnet", image_size=32, kv_reduction=2, xattn_impl="sdpa")
    return _opened(model)


def test_capture_attention_records_probabilities_per_stage(ssn) -> None:
    c, d = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = ssn(c, d)
        with capture_attention(ssn, 32) as maps:
            captured = ssn(c, d)
    assert maps.stages == [2, 3, 4] and all(b.impl == "sdpa" for b in ssn.cross_attention.values())
    for s in maps.stages:
        for m in (maps.to_clinic[s], maps.to_derm[s]):
            assert m.shape[0] == 2 and torch.allclose(m.flatten(1).sum(1), torch.ones(2), atol=1e-5)
    assert maps.to_clinic[2].shape == (2, 2, 2) and maps.kv_reduction[2] == 2  # 4x4 keys pooled by 2
    for a, b in zip(plain["fused"], captured["fused"], strict=True):
        assert torch.allclose(a, b, atol=1e-4)  # observing does not change the model's output


@pytest.mark.parametrize(
    ("arch", "options", "modalities"),
    [
        ("ssn", {"backbone": "test_resnet"}, {"clinic", "derm"}),
        ("dual", {"backbone": "test_resnet", "xattn": "separate"}, {"clinic", "derm"}),
        ("single", {"backbone": "test_resnet", "modality": "derm"}, {"derm"}),
        ("ssn", {"backbone": "test_vit", "vit_stages": 2}, {"clinic", "derm"}),
    ],
)
def test_grad_cam_per_modality_for_cnn_and_vit(arch, options, modalities) -> None:
    torch.manual_seed(0)
    model = build_model(arch, image_size=32, **options).eval()
    if arch != "single":
        _opened(model)
    c, d = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        head, logits = next(iter(model(c, d).items()))
    cams = grad_cam(model, c, d, head, target=int(logits[0][0].argmax()))  # the predicted DIAG class
    assert set(cams) == modalities
    for cam in cams.values():
        assert cam.shape == (2, 32, 32) and float(cam.min()) >= 0 and float(cam.max()) <= 1 + 1e-6
    assert any(float(cam.max()) > 0 for cam in cams.values())  # some evidence somewhere
    stage = model.encoder["clinic"] if arch == "dual" else model.encoder
    assert type(stage.stages[-1] if stage.stages is not None else stage.vit.blocks[-2]).__name__ != "_Tapped"


def test_missing_captum_is_one_line_naming_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(UserError, match=r"ssnbench\[explain\]"):
        require_captum()


def test_gallery_writes_a_figure_per_case_and_an_index(ssn, tmp_path) -> None:
    data = ToyPairs(n=6, size=32)
    assert pick_cases(data, 3) == [0, 1, 2]  # DIAG classes taken in turn
    assert pick_cases(data, ids=["c4", "c1"]) == [4, 1]
    with pytest.raises(UserError, match="'nope' is not in this split"):
        pick_cases(data, ids=["nope"])
    index = write_gallery(ssn, data, [0, 1], tmp_path / "g", inference_weights=None, title="t")
    text = index.read_text()
    assert "| c0 | BCC |" in text and "| c1 | NEV |" in text and "log-sum-exp" in text
    assert (tmp_path / "g" / "case_c0.png").stat().st_size > 1000
