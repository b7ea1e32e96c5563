"""Pretrained backbones the timm way, without network: a pre-populated Hugging Face cache folder
(the hub layout: refs/main -> snapshots/<commit>/model.safetensors), HF_HUB_OFFLINE, `hf-hub:` names,
local files through timm's overlay, the pre-flight's one-line error and what results record."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from ssnbench import cli
from ssnbench.errors import ConfigError
from ssnbench.models.backbone import backbone_data_config, backbone_weights
from ssnbench.models.registry import build_model
from ssnbench.models.weights import WeightsUnavailable, check_weights

REPO = "timm/resnet18.a1_in1k"  # resnet18's default weights tag in timm
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TINY = {"backbone": "resnet18", "image_size": 32, "xattn": "none"}


def populate_hf_cache(cache: Path, repo: str, state: dict, config: dict | None = None) -> Path:
    """Write `state` (and a timm config.json) where huggingface_hub looks for `repo`'s files."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    snap = folder / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(COMMIT)
    save_file({k: v.contiguous() for k, v in state.items()}, snap / "model.safetensors")
    if config is not None:
        (snap / "config.json").write_text(json.dumps(config))
    return snap / "model.safetensors"


@pytest.fixture()
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An empty offline Hugging Face cache (HF_HUB_CACHE and HF_HUB_OFFLINE as huggingface_hub read them)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture(scope="module")
def source() -> torch.nn.Module:
    torch.manual_seed(3)
    return timm.create_model("resnet18", num_classes=1000)


def test_pretrained_true_loads_from_the_cache_offline(hf_cache: Path, source) -> None:
    file = populate_hf_cache(hf_cache, REPO, source.state_dict())
    model = build_model("ssn", pretrained=True, **TINY)
    torch.testing.assert_close(model.encoder.stages[4].layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    w = backbone_weights(model)
    assert w["tag"] == "resnet18.a1_in1k" and w["source"] == "hf-hub" and w["hf_hub_id"] == REPO
    assert w["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    assert check_weights("m", "resnet18", True)["file"] == str(file)
    # the dual baseline's two encoders get the same weights
    dual = build_model("dual", pretrained=True, **TINY)
    torch.testing.assert_close(dual.encoder["derm"].stages[0].conv1.weight, source.conv1.weight)


def test_hf_hub_name_uses_the_repo_config(hf_cache: Path, source) -> None:
    cfg = timm.models.get_pretrained_cfg("resnet18").to_dict()
    cfg.update(interpolation="bilinear", mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    repo = "someone/derm-resnet18"
    populate_hf_cache(hf_cache, repo, source.state_dict(),
                      {"architecture": "resnet18", "num_classes": 1000, "pretrained_cfg": cfg})
    model = build_model("single", backbone=f"hf-hub:{repo}", pretrained=True, image_size=32)
    torch.testing.assert_close(model.encoder.stages[0].conv1.weight, source.conv1.weight)
    dc = backbone_data_config(model)
    assert dc["interpolation"] == "bilinear" and tuple(dc["mean"]) == (0.5, 0.5, 0.5)
    assert backbone_weights(model)["hf_hub_id"] == repo


def test_offline_and_not_cached_is_one_line_before_any_training(hf_cache: Path, tmp_path: Path,
                                                                monkeypatch, capsys) -> None:
    with pytest.raises(WeightsUnavailable) as err:
        check_weights("models[0] (ssn)", "resnet18", True)
    msg = str(err.value)
    for part in ("models[0] (ssn)", "resnet18.a1_in1k", str(hf_cache), "HF_HUB_OFFLINE=1",
                 "options.pretrained: /path/to/weights.safetensors"):
        assert part in msg
    import ssnbench.train as train

    fit = train.fit
    monkeypatch.setattr(train, "fit", lambda *a, **k: pytest.fail("trained despite missing weights"))
    monkeypatch.setenv("SSNBENCH_CACHE", str(tmp_path / "cache"))
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: w\ndataset: {kind: synthetic, cases: 20, source_size: 32, image_size: 32, border_crop: 2}\n"
        "models:\n  - {name: ssn, arch: ssn, options: {backbone: resnet18, pretrained: true}}\n"
    )
    out = tmp_path / "out"
    assert cli.main(["run", str(suite), "--out", str(out), "--device", "cpu"]) == 2
    err_text = capsys.readouterr().err.strip()
    assert err_text.count("\n") == 0 and "resnet18.a1_in1k" in err_text and "models[0] (ssn)" in err_text
    assert not out.exists()

    # the same run once the cache holds the weights: it trains offline and records what it loaded
    monkeypatch.setattr(train, "fit", fit)
    torch.manual_seed(3)
    file = populate_hf_cache(hf_cache, REPO, timm.create_model("resnet18", num_classes=1000).state_dict())
    args = ["--set", "train.epochs=1", "--set", "profile=false", "--set", "checkpoint=false"]
    assert cli.main(["run", str(suite), "--out", str(out), "--report-dir", str(tmp_path / "r"),
                     "--device", "cpu", *args]) == 0
    rec = json.loads((out / "ssn__seed0.json").read_text())
    assert rec["status"] == "ok" and rec["weights"]["tag"] == "resnet18.a1_in1k"
    assert rec["weights"]["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    assert rec["data_config"]["source"] == "timm.data.resolve_model_data_config"


def test_local_file_through_timm_overlay(tmp_path: Path, source) -> None:
    save_file(source.state_dict(), tmp_path / "r18.safetensors")
    model = build_model("ssn", pretrained=str(tmp_path / "r18.safetensors"), **TINY)
    torch.testing.assert_close(model.encoder.stages[0].conv1.weight, source.conv1.weight)
    w = backbone_weights(model)
    assert w["source"] == "file" and w["sha256"] == hashlib.sha256(
        (tmp_path / "r18.safetensors").read_bytes()).hexdigest()
    # a file whose keys do not match (here: every key prefixed) must not load silently
    save_file({f"backbone.{k}": v for k, v in source.state_dict().items()}, tmp_path / "foreign.safetensors")
    with pytest.raises(ConfigError, match="does not fit backbone 'resnet18'.*missing keys"):
        build_model("ssn", pretrained=str(tmp_path / "foreign.safetensors"), **TINY)


def test_drop_path_and_backbone_kwargs_pass_through() -> None:
    model = build_model("ssn", drop_path_rate=0.2, backbone_kwargs={"drop_rate": 0.1}, **TINY)
    assert model.config["drop_path_rate"] == 0.2 and model.config["backbone_kwargs"] == {"drop_rate": 0.1}
    paths = [m for m in model.modules() if type(m).__name__ == "DropPath"]
    assert paths and max(m.drop_prob for m in paths) == pytest.approx(0.2)
    with torch.device("meta"), pytest.raises(ConfigError, match="backbone_kwargs: timm model 'resnet18'"):
        build_model("ssn", backbone_kwargs={"no_such_option": 1}, **TINY)


def test_no_weight_decay_follows_timm(tmp_path: Path) -> None:
    """Swin's relative position tables (2-D, so decayed by an ndim rule) are excluded, as timm does."""
    from ssnbench.config import TrainSpec
    from ssnbench.train import make_optimizer, optimizer_summary

    with torch.device("meta"):
        model = build_model("ssn", backbone="swin_tiny_patch4_window7_224", image_size=224, xattn="none")
    names = model.no_weight_decay()
    assert len(names) == 12 and all(n.endswith("relative_position_bias_table") for n in names)
    params = dict(model.named_parameters())
    assert all(params[n].ndim == 2 for n in names)
    optimizer = make_optimizer(model, TrainSpec(weight_decay=0.05))
    no_decay = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    decay = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.05 for p in g["params"]}
    assert all(id(params[n]) in no_decay for n in names)
    assert id(params["encoder.stages.0.layers_0.blocks.0.attn.qkv.weight"]) in decay
    summary = optimizer_summary(model, TrainSpec(weight_decay=0.05))
    assert summary["no_weight_decay_named"] == sorted(names)
    assert sum(g["tensors"] for g in summary["groups"]) == len(params)


def test_no_network_is_answered_at_once(hf_cache: Path, monkeypatch) -> None:
    """Online mode but no route to the Hub: one line at once, no ~25 s of logged retries per file."""
    from huggingface_hub import constants

    import ssnbench.models.weights as weights

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(weights, "_hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(weights, "_download", lambda *a: pytest.fail("tried to download without network"))
    with pytest.raises(WeightsUnavailable, match=r"cannot be downloaded \(no connection to http"):
        check_weights("models[0] (ssn)", "resnet18", True)
