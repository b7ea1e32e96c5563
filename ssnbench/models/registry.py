"""Model registry (timm-style): architectures are built by name from plain options.

`register_model(ModelClass, "name")` (or `@register_model` on a builder function, under its own
name) registers a builder; `build_model(arch, **options)` checks the arch and the option names
against the builder's signature, so a typo in a suite file is a
one-line ConfigError naming the option (option *values* are checked by the builders, with the
`check_*` helpers of ssnbench.validation, whose messages start with the option name).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from ssnbench.errors import ConfigError

__all__ = [
    "arch_options",
    "build_model",
    "list_archs",
    "register_model",
]

# Complete by the time anything calls this module: Python runs the package's __init__ (which imports
# every family, registering it) before it runs this file, so no lazy import of the package is needed.
_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module], name: str | None = None) -> Callable[..., nn.Module]:
    """Make `fn` (a model class or a factory function) buildable as `build_model(name, **options)`;
    `name` defaults to `fn.__name__`, and the options are the parameters of its signature."""
    name = name or fn.__name__
    if name in _MODELS and _MODELS[name] is not fn:
        raise ValueError(f"model arch {name!r} registered twice")
    _MODELS[name] = fn
    return fn


def list_archs() -> list[str]:
    """Registered architecture names, sorted."""
    return sorted(_MODELS)


def arch_options(arch: str) -> dict[str, Any]:
    """Option names of `arch` with their defaults (for docs, reports and config validation)."""
    if arch not in _MODELS:
        raise ConfigError(_unknown_arch(arch))
    sig = inspect.signature(_MODELS[arch])
    return {
        k: p.default
        for k, p in sig.parameters.items()
        if p.kind is p.KEYWORD_ONLY or p.default is not p.empty
    }


def _unknown_arch(arch: object) -> str:
    close = difflib.get_close_matches(str(arch), list(_MODELS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"arch: unknown model arch {arch!r}{hint}; expected one of {', '.join(sorted(_MODELS))}"


def build_model(arch: str, **options: Any) -> nn.Module:
    """Build registered model `arch` with `options`; unknown arch/option or a bad value -> ConfigError."""
    if arch not in _MODELS:
        raise ConfigError(_unknown_arch(arch))
    valid = arch_options(arch)
    for key in options:
        if key not in valid:
            close = difflib.get_close_matches(key, list(valid), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{key}: unknown option for arch {arch!r}{hint}; valid options: {', '.join(valid)}"
            )
    return _MODELS[arch](**options)
