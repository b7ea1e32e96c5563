"""pyproject.toml gives every dependency a lower bound, and constraints.txt (the tested versions,
used by `make setup`) pins every dependency and extra within those bounds."""

from __future__ import annotations

from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip vendors the same parser
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> list[tuple[str, Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [("dependencies", Requirement(r)) for r in project["dependencies"]]
    for extra, items in project.get("optional-dependencies", {}).items():
        reqs += [(f"extra {extra}", Requirement(r)) for r in items if not r.startswith("ssnbench")]
    return reqs


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not NAME==VERSION"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_every_dependency_has_a_lower_bound() -> None:
    for where, req in _requirements():
        bounded = any(s.operator in (">=", "==", "~=") for s in req.specifier)
        assert bounded, f"{where}: {req} has no lower bound"


def test_constraints_pin_every_dependency_within_its_bounds() -> None:
    pins = _pins()
    for where, req in _requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"constraints.txt lacks {req.name} ({where}); run `make constraints`"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {req.name}=={pins[name]}, outside {where}'s {req.specifier}"
        )


def test_makefile_installs_with_the_constraints() -> None:
    assert "pip install -q -c constraints.txt -e '.[dev]'" in (ROOT / "Makefile").read_text()
