"""Backbone weights the way timm users expect them, and a pre-flight check that they can be had.

* `pretrained: true` -> `timm.create_model(name, pretrained=True)`: the weights come through the
  Hugging Face cache (HF_HOME / HF_HUB_CACHE), so a cached model works offline and
  `HF_HUB_OFFLINE=1` is respected. A tagged name (`resnet50.a1_in1k`) picks the weights tag.
* `backbone: hf-hub:timm/<repo>`: timm reads the model config and weights from that Hub repo (cache).
* `pretrained: /path/weights.safetensors|.pth`: timm's own local-file mechanism,
  `pretrained_cfg_overlay=dict(file=...)` (its checkpoint filters, classifier removal, wrapped
  state dicts all apply). timm loads non-strictly once the classifier is dropped, so we watch its
  `load_state_dict` call and refuse a file that leaves backbone tensors missing or unexpected:
  a foreign file must never pass silently as "pretrained".

`check_weights` runs before any job trains: when weights are neither cached nor downloadable it
raises one line naming the model, the weights tag, the cache folder and the local-file alternative.
`weights_record` says what was loaded (tag, source, file, sha256) for the result file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from ssnbench.errors import ConfigError, UserError

__all__ = [
    "WeightsUnavailable",
    "check_weights",
    "create_timm_model",
    "hf_cache_dir",
    "is_hub_name",
    "weights_record",
]

HUB_PREFIXES = ("hf-hub:", "hf_hub:")


class WeightsUnavailable(UserError):
    """Pretrained weights are neither in the cache nor downloadable (offline, no file)."""


def is_hub_name(name: str) -> bool:
    return name.startswith(HUB_PREFIXES)


def hf_cache_dir() -> str:
    """The Hugging Face hub cache folder timm downloads into (HF_HUB_CACHE, else HF_HOME/hub)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _on_meta_device() -> bool:
    """Inside `with torch.device("meta")` (suite validation): build shapes, load nothing."""
    return torch.empty(()).device.type == "meta"


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    """sha256 of a weights file, memoised per (path, size, mtime): a suite builds a model several times."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


# ------------------------------------------------------------------------------- where from
def _hub_files(cfg: dict[str, Any]) -> list[str]:
    """Files timm tries in a Hub repo, in its order (safetensors first, see timm.models._hub)."""
    if cfg.get("hf_hub_filename"):
        return [cfg["hf_hub_filename"]]
    return ["model.safetensors", "pytorch_model.bin"]


def _pretrained_cfg(name: str) -> dict[str, Any]:
    """timm's pretrained config of a model name (`resnet50`, `resnet50.a1_in1k` or `hf-hub:...`)."""
    if is_hub_name(name):
        from timm.models._hub import load_model_config_from_hf

        repo = name.split(":", 1)[1]
        cfg = dict(load_model_config_from_hf(repo)[0])  # (cfg, name[, model_args]) across timm 1.x
        cfg.setdefault("hf_hub_id", repo)
        cfg["source"] = "hf-hub"
        return cfg
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return {}
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(vars(cfg))


def _tag(cfg: dict[str, Any], name: str) -> str:
    arch, tag = cfg.get("architecture"), cfg.get("tag")
    if arch and tag:
        return f"{arch}.{tag}"
    return cfg.get("hf_hub_id") or name


def _cached_hub_file(repo: str, files: list[str]) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    for f in files:
        hit = try_to_load_from_cache(repo, f)
        if isinstance(hit, str) and Path(hit).is_file():
            return Path(hit)
    return None


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Can this machine open a connection to the Hub at all? Checked once before downloading, because
    huggingface_hub retries an unreachable host for ~25 s per file, logging each retry: a machine
    without network should get the one-line answer at once. Behind a proxy we cannot tell; say yes."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    proxies = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")
    if any(os.environ.get(v) for v in proxies):
        return True
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def _why_not_downloadable() -> str:
    if _offline():
        return " (HF_HUB_OFFLINE=1)"
    from huggingface_hub import constants

    return f" (no connection to {constants.ENDPOINT})"


def _hint(model: str, backbone: str, tag: str, why: str | None = None) -> str:
    why = _why_not_downloadable() if why is None else why
    return (
        f"{model}: pretrained weights {tag} for backbone {backbone!r} are not in the Hugging Face cache "
        f"{hf_cache_dir()} and cannot be downloaded{why}; "
        f"fetch them where there is network (python -c \"import timm; timm.create_model('{tag}', "
        f"pretrained=True)\") and copy that cache folder here (or point HF_HOME at it), or give a local "
        f"file: options.pretrained: /path/to/weights.safetensors"
    )


def check_weights(model: str, backbone: str, pretrained: Any) -> dict[str, Any]:
    """Make sure `pretrained` weights for `backbone` can be had before training starts.

    Returns what will be loaded ({"tag", "source", "file"}); downloads into the cache when online and
    not cached (what timm would do at build time anyway). Raises WeightsUnavailable (one line).
    """
    if pretrained is None or pretrained is False:
        return {"tag": None, "source": "random init"}
    if not isinstance(pretrained, bool):
        path = Path(str(pretrained)).expanduser()
        if not path.is_file():
            raise WeightsUnavailable(f"{model}: pretrained: weights file {str(path)!r} does not exist")
        return {"tag": f"file:{path.name}", "source": "file", "file": str(path)}
    try:
        cfg = _pretrained_cfg(backbone)
    except Exception as err:  # a hub config that cannot be fetched
        tag = backbone.split(":", 1)[-1]
        raise WeightsUnavailable(_hint(model, backbone, tag) + f" ({type(err).__name__})") from None
    tag = _tag(cfg, backbone)
    repo = cfg.get("hf_hub_id")
    if repo:
        files = _hub_files(cfg)
        hit = _cached_hub_file(repo, files)
        if hit is None and not _offline() and _hub_reachable():
            hit = _download(repo, files)
        if hit is None:
            raise WeightsUnavailable(_hint(model, backbone, tag))
        return {"tag": tag, "source": "hf-hub", "hf_hub_id": repo, "file": str(hit)}
    url = cfg.get("url")
    if url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])
        if cached.is_file():
            return {"tag": tag, "source": "url", "url": url, "file": str(cached)}
        raise WeightsUnavailable(
            _hint(model, backbone, tag).replace("the Hugging Face cache", "the torch hub cache", 1)
        )
    raise WeightsUnavailable(
        f"{model}: timm has no pretrained weights for backbone {backbone!r}; set pretrained: false or "
        "give a local file: options.pretrained: /path/to/weights.safetensors"
    )


def _download(repo: str, files: list[str]) -> Path | None:
    """The first of `files` the Hub repo has, downloaded into the cache (as timm would); None on any
    failure. huggingface_hub's retry warnings are silenced: the caller reports in one line."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError
    from huggingface_hub.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        for f in files:
            try:
                return Path(hf_hub_download(repo, f))
            except EntryNotFoundError:
                continue  # this repo has the other format
            except Exception:  # network, auth, disk: the one-line message says what to do
                return None
    finally:
        hf_logging.set_verbosity(level)
    return None


# ------------------------------------------------------------------------------- loading
@contextlib.contextmanager
def _watch_loads() -> Iterator[list[tuple[nn.Module, Any]]]:
    """Record every nn.Module.load_state_dict call's (module, incompatible keys) while timm loads."""
    calls: list[tuple[nn.Module, Any]] = []
    real = nn.Module.load_state_dict

    def spy(self: nn.Module, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        result = real(self, state_dict, strict=strict, assign=assign)
        calls.append((self, result))
        return result

    nn.Module.load_state_dict = spy  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        nn.Module.load_state_dict = real  # type: ignore[method-assign]


def create_timm_model(name: str, pretrained: Any = False, **kwargs: Any) -> nn.Module:
    """`timm.create_model(name, pretrained=..., **kwargs)` with ssnbench's weights rules (module
    docstring). Sets `model.ssnbench_weights` to what was loaded. Errors are ConfigErrors naming the
    option; TypeErrors (an option timm does not take) propagate for the caller to name."""
    meta = _on_meta_device()
    file: Path | None = None
    if pretrained not in (None, False, True):
        if not isinstance(pretrained, (str, Path)) or not str(pretrained):
            raise ConfigError(f"pretrained: expected true, false or a weights file path, got {pretrained!r}")
        file = Path(pretrained).expanduser()
        if not file.is_file():
            raise ConfigError(f"pretrained: weights file {str(file)!r} does not exist")
    load = bool(pretrained) and not meta
    if file is not None and load:
        kwargs["pretrained_cfg_overlay"] = {"file": str(file), "source": "file"}
    try:
        with _watch_loads() as calls:
            model = timm.create_model(name, pretrained=load, **kwargs)
    except (TypeError, AssertionError, ValueError, ConfigError):
        raise
    except RuntimeError as err:
        if not load:
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        what = f"{str(file)!r}" if file else f"the pretrained weights of {name!r}"
        raise ConfigError(f"pretrained: {what} does not fit backbone {name!r}: {first[:300]}") from None
    except Exception as err:  # hub/network errors: the pre-flight's message
        if is_hub_name(name) or load:
            raise WeightsUnavailable(
                _hint("backbone", name, name.split(":", 1)[-1]) + f" ({type(err).__name__})"
            ) from None
        raise
    record: dict[str, Any] = {"tag": None, "source": "random init"}
    if load:
        results = [r for m, r in calls if m is model]
        if results and (results[-1].missing_keys or results[-1].unexpected_keys):
            missing, unexpected = results[-1].missing_keys, results[-1].unexpected_keys
            what = f"{str(file)!r}" if file else f"the pretrained weights of {name!r}"
            raise ConfigError(
                f"pretrained: {what} does not fit backbone {name!r}: {len(missing)} missing keys "
                f"(e.g. {missing[:2]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:2]})"
            )
        record = weights_record(name, model, file)
    model.ssnbench_weights = record
    return model


def weights_record(name: str, model: nn.Module, file: Path | None) -> dict[str, Any]:
    """What a result file says about loaded weights: tag, source, file and its sha256."""
    if file is not None:
        return {"tag": f"file:{file.name}", "source": "file", "file": str(file), "sha256": _sha256(file)}
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    out: dict[str, Any] = {"tag": _tag(cfg, name), "source": None, "file": None, "sha256": None}
    repo = cfg.get("hf_hub_id")
    hit = _cached_hub_file(repo, _hub_files(cfg)) if repo else None
    if hit is not None:
        out.update(source="hf-hub", hf_hub_id=repo, file=str(hit), sha256=_sha256(hit))
    elif cfg.get("url"):
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg["url"].split("?")[0])
        out.update(source="url", url=cfg["url"])
        if cached.is_file():
            out.update(file=str(cached), sha256=_sha256(cached))
    return out
