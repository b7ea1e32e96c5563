"""The shape of the code base (issue 12's "Done when"), checked by reading the sources with `ast`.

Why tests: these rules were met once by hand and then quietly broken again by the next change
(function-level imports that closed a cycle, a launcher reading its own environment variable). Each
test reads files only; nothing here imports the modules it checks.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from ssnbench.kernels import knobs

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"ssnbench": ROOT / "ssnbench", "ssnbench.kernels": ROOT / "kernels"}


def package_modules() -> dict[str, Path]:
    """Every module of the installed package by dotted name (kernels/ is ssnbench.kernels)."""
    mods: dict[str, Path] = {}
    for prefix, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("").parts
            if prefix == "ssnbench" and rel[0] == "kernels":
                continue
            parts = [*prefix.split("."), *rel]
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


def type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes under `if TYPE_CHECKING:` (never imported at run time)."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            ids.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return ids


def imported_modules(name: str, path: Path, mods: dict[str, Path]) -> dict[str, int]:
    """Package modules that `name` imports anywhere (module level or inside a function) -> line.

    `from pkg import sub` counts as importing pkg.sub when that is a module, else pkg."""
    tree = ast.parse(path.read_text())
    skip = type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in mods:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.setdefault(target, node.lineno)
    return found


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle of `graph` as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def python_files(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


# ---------------------------------------------------------------------------------------------
# The import graph


def test_find_cycle_finds_one_and_only_one() -> None:
    assert find_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {}}) is None
    assert find_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}}) == ["a", "b", "c", "a"]


def test_import_graph_has_no_cycle() -> None:
    """Imports inside functions count: a lazy import that closes a loop is still a loop (it only
    moves the ImportError to the first call), and `if TYPE_CHECKING:` imports do not run."""
    mods = package_modules()
    graph = {name: imported_modules(name, path, mods) for name, path in mods.items()}
    assert "ssnbench.kernels.knobs" in graph and "ssnbench.launch.slurm" in graph
    cycle = find_cycle(graph)
    if cycle:
        pairs = zip(cycle, cycle[1:], strict=False)
        steps = [f"{a} -> {b} ({mods[a].relative_to(ROOT)}:{graph[a][b]})" for a, b in pairs]
        pytest.fail("import cycle:\n  " + "\n  ".join(steps))


# ---------------------------------------------------------------------------------------------
# Private names of kernels/


def kernel_private_uses(path: Path) -> list[tuple[int, str]]:
    """(line, name) for each underscored name of ssnbench.kernels this file touches: imported,
    read as an attribute of a kernels module, or named in a setattr/monkeypatch string."""
    tree = ast.parse(path.read_text())
    aliases: set[str] = set()
    uses: list[tuple[int, str]] = []

    def private(name: str) -> bool:
        return name.startswith("_") and not name.startswith("__")

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ssnbench.kernels"):
            for a in node.names:
                aliases.add(a.asname or a.name)
                if private(a.name):
                    uses.append((node.lineno, a.name))
        elif isinstance(node, ast.Import):
            kernel_imports = [a for a in node.names if a.name.startswith("ssnbench.kernels")]
            aliases.update(a.asname or a.name.split(".")[0] for a in kernel_imports)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr):
            base = ast.unparse(node.value)
            if base.split(".")[0] in aliases and (base.startswith("ssnbench.kernels") or "." not in base):
                uses.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Call) and len(node.args) >= 2:
            obj, attr = node.args[0], node.args[1]
            if (isinstance(attr, ast.Constant) and isinstance(attr.value, str) and private(attr.value)
                    and ast.unparse(obj) in aliases):
                uses.append((node.lineno, f"{ast.unparse(obj)}.{attr.value}"))
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and re.search(r"\bssnbench\.kernels(\.\w+)*\._(?!_)", node.value)):
            uses.append((node.lineno, node.value))
    return sorted(uses)


def test_private_use_check_sees_each_way_in(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from ssnbench.kernels.launch import _BEST\n"
        "from ssnbench.kernels import configs\n"
        "configs._tails(1)\n"
        "setattr(configs, '_FWD', 1)\n"
        "patch = 'ssnbench.kernels.ops._DIRECT'\n"
        "configs.__name__, configs.public\n"
    )
    assert kernel_private_uses(bad) == [
        (1, "_BEST"), (3, "configs._tails"), (4, "configs._FWD"), (5, "ssnbench.kernels.ops._DIRECT")
    ]


def test_nothing_outside_kernels_touches_a_private_kernel_name() -> None:
    files = python_files("ssnbench", "tests", "scripts")
    uses = [
        f"{f.relative_to(ROOT)}:{line} {what}"
        for f in files if f.name != "test_architecture.py"
        for line, what in kernel_private_uses(f)
    ]
    assert uses == []


# ---------------------------------------------------------------------------------------------
# Environment knobs


READERS = ("os.environ.get", "os.getenv", "os.environ.setdefault")


def test_ssnbench_variables_are_read_only_in_knobs() -> None:
    """Every `SSNBENCH_*` read (os.environ.get / os.getenv / os.environ[...]) is in kernels/knobs.py."""
    reads = []
    for path in python_files("ssnbench", "kernels", "scripts"):
        if path == ROOT / "kernels" / "knobs.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            key = None
            if isinstance(node, ast.Call) and node.args and ast.unparse(node.func) in READERS:
                key = node.args[0]
            elif (isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load)
                  and ast.unparse(node.value) == "os.environ"):
                key = node.slice
            if isinstance(key, ast.Constant) and str(key.value).startswith("SSNBENCH_"):
                reads.append(f"{path.relative_to(ROOT)}:{node.lineno} {key.value}")
    assert reads == []


def knob_variables() -> set[str]:
    """The variables `knobs.from_env` reads (string constants of its source)."""
    source = Path(knobs.__file__).read_text()
    fn = next(n for n in ast.walk(ast.parse(source)) if getattr(n, "name", None) == "from_env")
    strings = [n.value for n in ast.walk(fn) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    return {s for s in strings if re.fullmatch(r"(SSNBENCH|TRITON)_[A-Z_]+", s)}


def test_every_knob_is_in_the_tables_of_interfaces_md_and_knobs_py() -> None:
    variables = knob_variables()
    assert {"TRITON_INTERPRET", "SSNBENCH_CACHE", "SSNBENCH_SUBMITIT_CLUSTER"} <= variables
    docs = (ROOT / "docs" / "interfaces.md").read_text()
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| `(\w+)` \|", docs, flags=re.M))
    assert set(rows) == variables
    fields = {f.name for f in knobs.Knobs.__dataclass_fields__.values()}
    assert set(rows.values()) == fields
    table = (knobs.__doc__ or "")
    assert {v for v in variables if not re.search(rf"^\| {v}\s", table, flags=re.M)} == set()
    other = {"bwd_path": "atomic", "submitit_cluster": "debug"}
    for var, field in rows.items():  # the documented field really holds that variable
        default = getattr(knobs.Knobs(), field)
        value = other.get(field) or ("0" if default is True else "1" if default is False else "7")
        assert getattr(knobs.from_env({var: value}), field) != default, var


# ---------------------------------------------------------------------------------------------
# Keyword-only arguments

# The cross-attention op's tensors (and the scale) are positional by contract, like SDPA's (q, k, v).
OP_TENSORS = {
    "q_c", "k_c", "v_c", "q_d", "k_d", "v_d", "do_c", "do_d", "o_c", "o_d", "lse_c", "lse_d", "scale"
}


def positional_params(fn: ast.FunctionDef) -> list[str]:
    names = [a.arg for a in fn.args.posonlyargs + fn.args.args]
    return names[1:] if names[:1] in (["self"], ["cls"]) else names


def public_signatures(*folders: str) -> dict[str, list[list[str]]]:
    """Positional parameters of each public function and method, and of each public class with an
    `__init__` (dataclass records are built from their fields and are not checked), by name."""
    sigs: dict[str, list[list[str]]] = {}
    for path in python_files(*folders):
        for node in ast.walk(ast.parse(path.read_text())):
            fn = node
            if isinstance(node, ast.ClassDef):
                fn = next((n for n in node.body if getattr(n, "name", None) == "__init__"), None)
            if isinstance(fn, ast.FunctionDef) and not node.name.startswith("_"):
                sigs.setdefault(node.name, []).append(positional_params(fn))
    return sigs


def too_many_positional(path: Path, sigs: dict[str, list[list[str]]], root: Path = ROOT) -> list[str]:
    """Calls in `path` passing more than four positional arguments that every function of that name
    would take by position (the op's tensors excepted)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call) or len(node.args) <= 4:
            continue
        if any(isinstance(a, ast.Starred) for a in node.args):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        candidates = sigs.get(name or "", [])
        if candidates and all(not set(p[4:len(node.args)]) <= OP_TENSORS for p in candidates):
            found.append(f"{path.relative_to(root)}:{node.lineno} {name}() with {len(node.args)} positional")
    return found


def test_positional_check_flags_only_what_it_should(tmp_path: Path) -> None:
    sigs = {
        "fit": [["model", "loader", "epochs", "lr", "device"]],
        "core": [["impl", "q_c", "k_c", "v_c", "q_d"]],
    }
    calls = tmp_path / "calls.py"
    calls.write_text("fit(m, l, 1, 0.1, 'cpu')\nfit(m, l, 1, 0.1, device='cpu')\ncore('x', q, k, v, q2)\n"
                     "other(1, 2, 3, 4, 5)\nfit(*args)\n")
    assert [c.split(" ", 1)[1] for c in too_many_positional(calls, sigs, root=tmp_path)] == [
        "fit() with 5 positional"
    ]


def test_calls_with_more_than_four_positional_arguments_name_them() -> None:
    """Issue 12: keyword-only arguments where a call passes more than four. Checked for what
    ssnbench/ defines, called from ssnbench/, scripts/ and tests/. kernels/ keeps Triton's
    convention (positional tensors, shapes and strides, @triton.jit functions take no keyword-only
    parameters), and the op's tensors stay positional everywhere (OP_TENSORS)."""
    sigs = public_signatures("ssnbench")
    assert {"fit", "predict", "make_loader"} <= set(sigs)
    calls = [c for f in python_files("ssnbench", "scripts", "tests") for c in too_many_positional(f, sigs)]
    assert calls == []
