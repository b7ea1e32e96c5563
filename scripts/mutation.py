"""`make mutation`: mutation testing of ssnbench's core modules with mutmut 3 (docs/testing.md).

Each mutant runs only the tests that exercise its function (mutmut maps every mutated function
to the tests, among `[tool.mutmut]`'s selection in pyproject.toml, that called it), fastest first,
stopping at the first failure; `--only SCOPE` runs one module. The scopes below are the functions
that hold the behaviours issue 18 names (grouping, split index check, paired statistics, head
weights, job hash, the report's seed and case alignment).

    python scripts/mutation.py                 # every scope, then the table
    python scripts/mutation.py --only losses   # one scope
    python scripts/mutation.py --table         # the table of the last runs only
    python scripts/mutation.py --examples      # the issue's example bugs (EXAMPLES) only
"""

from __future__ import annotations

import argparse
import ast
import difflib
import fnmatch
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _functions(module: str, *names: str) -> list[str]:
    return [f"ssnbench.{module}.x{name}__mutmut_*" for name in names]


# scope -> mutant-name globs: mutmut names a mutant <module>.x_<function>__mutmut_<n>, and a method
# <module>.xǁ<Class>ǁ<method>__mutmut_<n>. The functions that hold the behaviours of issue 18. Left
# out (docs/testing.md says why): the rest of `fit`, `run_suite`, `report.summarize` and the
# Markdown rendering, the launchers.
SCOPES: dict[str, list[str]] = {
    "derm7pt": _functions("data.derm7pt", "_group_label", "ǁReleaseǁclass_counts", "__read_index"),
    "metrics": _functions("metrics", "_mean_std"),
    "stats": _functions("stats", "_paired_difference", "_sign_flip_test"),
    "losses": _functions("losses", "_head_weights_for", "__normalise", "_combine_probabilities"),
    "runner": _functions("runner", "_plan", "_job_hash", "_previous_result", "_resolve_weights"),
    "train": [],  # the checkpoint-selection lines of `fit` only: LINE_SCOPES
    "report": [*_functions("report", "_case_scores"), *_functions("claims", "_paired_case_scores")],
}

# scope -> (file, function, fragments): of a long function, only the mutants that change a line
# holding one of the fragments. `fit` has ~330 mutants (AMP, channels-last, loaders, messages:
# mostly equivalent on a CPU); these lines are its checkpoint selection and the restore.
LINE_SCOPES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "train": ("ssnbench/train.py", "x_fit", ("best_", "load_state_dict(", "test_metrics", "FitResult(")),
}


def line_scope_mutants(path: str, function: str, fragments: tuple[str, ...]) -> list[str]:
    """Names of `function`'s mutants whose changed lines hold a fragment: the mutants are made
    again with mutmut's own generator (same numbering as `mutmut run`) and diffed with the original."""
    from mutmut.mutation.file_mutation import mutate_file_contents  # mutmut 3.8 internals

    code = mutate_file_contents(path, (ROOT / path).read_text(), None, None).code
    lines = code.splitlines()
    bodies = {
        n.name: lines[n.body[0].lineno - 1 : n.end_lineno]  # without the `def` line(s)
        for n in ast.parse(code).body
        if isinstance(n, ast.FunctionDef) and n.name.startswith(f"{function}__mutmut_")
    }
    orig = bodies.pop(f"{function}__mutmut_orig")
    module = path.removesuffix(".py").replace("/", ".")
    names = []
    for name, body in bodies.items():
        ops = difflib.SequenceMatcher(None, orig, body, autojunk=False).get_opcodes()
        changed = [orig[i] for tag, i1, i2, _, _ in ops if tag != "equal" for i in range(i1, max(i2, i1 + 1))]
        if any(f in line for line in changed for f in fragments):
            names.append(f"{module}.{name}")
    return sorted(names, key=lambda n: int(n.rsplit("_", 1)[1]))


def globs_of(scope: str) -> list[str]:
    """The mutant-name globs (or names) of one scope."""
    if scope in LINE_SCOPES:
        return SCOPES[scope] + line_scope_mutants(*LINE_SCOPES[scope])
    return SCOPES[scope]


def stale_config() -> list[str]:
    """What in SCOPES, LINE_SCOPES and EXAMPLES no longer matches the code (a function renamed or
    moved, an example's text changed): a stale glob would silently test no mutant. Text only, no
    mutmut; tests/test_mutation_config.py runs it in `make test`."""
    problems = []
    for scope, globs in SCOPES.items():
        for glob in globs:
            module, _, mangled = glob.removesuffix("__mutmut_*").rpartition(".")
            path = ROOT / (module.replace(".", "/") + ".py")
            name = mangled.rpartition("ǁ")[2] if "ǁ" in mangled else mangled[2:]  # x_<f>, xǁ<Class>ǁ<m>
            if not path.exists() or not re.search(rf"^\s*def {re.escape(name)}\(", path.read_text(), re.M):
                problems.append(f"scope {scope}: no function {name} in {path.relative_to(ROOT)}")
    for scope, (rel, function, fragments) in LINE_SCOPES.items():
        text = (ROOT / rel).read_text()
        node = next((n for n in ast.parse(text).body if getattr(n, "name", None) == function[2:]), None)
        body = "" if node is None else "\n".join(text.splitlines()[node.lineno - 1 : node.end_lineno])
        for fragment in fragments:
            if fragment not in body:
                problems.append(f"scope {scope}: {fragment!r} not in {function[2:]} of {rel}")
    for what, rel, edits, _test in EXAMPLES:
        text = (ROOT / rel).read_text()
        for old, _new in edits:
            if text.count(old) != 1:
                problems.append(f"example {what!r}: {old!r} is not in {rel} exactly once")
    return problems


def results() -> dict[str, int | None]:
    """mutant name -> exit code, from mutmut's per-file .meta records under mutants/."""
    out: dict[str, int | None] = {}
    for meta in (ROOT / "mutants").rglob("*.py.meta"):
        try:
            out.update(json.loads(meta.read_text())["exit_code_by_key"])
        except ValueError:  # being rewritten by a running mutmut
            continue
    return out


def table(scopes: list[str]) -> str:
    from mutmut.stats import status_by_exit_code  # exit code of a mutant's test run -> verdict

    codes = results()
    lines = [
        "| module (scope) | mutants | killed | survived | timeout | no tests | not run | killed or timeout |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    survivors: list[str] = []
    for scope in scopes:
        globs = globs_of(scope)
        names = [n for n in codes if any(fnmatch.fnmatchcase(n, g) for g in globs)]
        count = dict.fromkeys(("killed", "survived", "timeout", "no tests", "not run", "other"), 0)
        for n in names:
            verdict = "not run" if codes[n] is None else status_by_exit_code[codes[n]]
            verdict = verdict if verdict in count else "other"
            count[verdict] += 1
            if verdict in ("survived", "no tests", "other"):
                survivors.append(f"{n} ({verdict}, exit {codes[n]})")
        tested = count["killed"] + count["survived"] + count["timeout"]
        score = f"{100 * (count['killed'] + count['timeout']) / tested:.1f}%" if tested else "–"
        lines.append(
            f"| {scope} | {len(names)} | {count['killed']} | {count['survived']} | {count['timeout']} "
            f"| {count['no tests']} | {count['not run']} | {score} |"
        )
    return "\n".join(lines) + "\n\nNot killed:\n" + "\n".join(f"- {s}" for s in survivors)


# The example bugs of issue 18, written as a maintainer might write them (some are not mutmut
# operators: a changed table entry, a dropped dict key), each with the test that must fail.
# (what, file, [(original text, mutated text)], test node id)
EXAMPLES: list[tuple[str, str, list[tuple[str, str]], str]] = [
    ('"dotted" vessels grouped as REG', "ssnbench/data/derm7pt.py",
     [('"dotted": "IR",', '"dotted": "REG",')],
     "tests/test_pinned_derm7pt.py::test_every_raw_string_maps_to_its_documented_class"),
    ('"melanoma (in situ)" grouped as MISC', "ssnbench/data/derm7pt.py",
     [('"melanoma (in situ)": "MEL",', '"melanoma (in situ)": "MISC",')],
     "tests/test_pinned_derm7pt.py::test_every_raw_string_maps_to_its_documented_class"),
    ("split index check off by one (`0 <= i <= n`)", "ssnbench/data/derm7pt.py",
     [("if not 0 <= value < n_rows:", "if not 0 <= value <= n_rows:")],
     "tests/test_pinned_derm7pt.py::test_split_index_range_rejects_one_past_either_end"),
    ("split index check off by one (`0 < i < n`)", "ssnbench/data/derm7pt.py",
     [("if not 0 <= value < n_rows:", "if not 0 < value < n_rows:")],
     "tests/test_pinned_derm7pt.py::test_split_index_range_accepts_both_ends"),
    ("paired bootstrap resamples the two models independently", "ssnbench/stats.py",
     [("    paired: bool = True,", "    paired: bool = False,")],
     "tests/test_pinned_stats.py::test_paired_interval_of_correlated_models_is_narrow"),
    ("one-sided p (A > B only)", "ssnbench/stats.py",
     [("observed = abs(d.mean())", "observed = d.mean()"),
      ("null = np.abs(patterns @ d) / d.size", "null = (patterns @ d) / d.size"),
      ("hits += int(np.sum(np.abs(signs @ d) / d.size", "hits += int(np.sum((signs @ d) / d.size")],
     "tests/test_pinned_stats.py::test_paired_p_value_is_two_sided_and_matches_the_exact_sign_flip_test"),
    ("inference falls back to equal weights (combine_probabilities default)", "ssnbench/losses.py",
     [("    w = dict(PRIOR_WEIGHTS if weights is None else weights)\n    present =",
       "    w = dict(EQUAL_WEIGHTS if weights is None else weights)\n    present =")],
     "tests/test_pinned_runner.py::test_combined_probabilities_by_hand"),
    ("inference falls back to equal weights (resolve_weights)", "ssnbench/runner.py",
     [("infer_w = dict(head_weights_for(scheme, heads, _only(overrides)))",
       'infer_w = dict(head_weights_for("equal", heads, _only(overrides)))')],
     "tests/test_pinned_runner.py::test_inference_weights_per_scheme"),
    ("the last epoch is evaluated instead of the restored best one", "ssnbench/train.py",
     [("        model.load_state_dict(best_state)\n", "")],
     "tests/test_pinned_train.py::test_test_metrics_come_from_the_restored_best_epoch"),
    ("ties take the later epoch (`>=`)", "ssnbench/train.py",
     [('if vm["acc_avg"] > best_acc:', 'if vm["acc_avg"] >= best_acc:')],
     "tests/test_pinned_train.py::test_ties_keep_the_earlier_epoch"),
    ("the dataset left out of the job hash", "ssnbench/runner.py",
     [('        "dataset": asdict(suite.dataset),\n', "")],
     "tests/test_pinned_runner.py::test_job_hash_covers_every_dataset_train_and_model_field"),
    ("resume keeps a result whose job hash changed", "ssnbench/runner.py",
     [('if prev.get("job_hash") != job_hash(suite, job):', "if False:")],
     "tests/test_pinned_runner.py::test_resume_runs_only_what_is_missing_failed_or_changed"),
    ("the report's case re-ordering removed", "ssnbench/claims.py",
     [("dtype=float)[[index[c] for c in ids_a]])", "dtype=float))")],
     "tests/test_pinned_report.py::test_summary_numbers"),
]


def run_examples() -> int:
    """Apply each example bug in place, run its test, put the file back; 0 when every one fails
    its test. The files are restored in a `finally`, also on Ctrl-C."""
    survived = 0
    for what, rel, edits, test in EXAMPLES:
        path = ROOT / rel
        original = path.read_text()
        mutated = original
        for old, new in edits:
            if mutated.count(old) != 1:
                print(f"example {what!r}: {old!r} is not in {rel} exactly once (moved?)", file=sys.stderr)
                return 2
            mutated = mutated.replace(old, new)
        try:
            path.write_text(mutated)
            code = subprocess.call(
                [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:xdist", "-p", "no:cacheprovider",
                 "--benchmark-disable", test],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        finally:
            path.write_text(original)
        verdict = {1: "killed", 0: "SURVIVED"}.get(code, f"error (pytest exit {code})")
        survived += code != 1
        print(f"{verdict:8} {what}  <- {test}", flush=True)
    return 1 if survived else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted(SCOPES), help="run these scopes only")
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested in parallel (default 2)")
    parser.add_argument("--table", action="store_true", help="print the table of earlier runs, run nothing")
    parser.add_argument("--examples", action="store_true", help="the issue's example bugs only")
    args = parser.parse_args()
    if args.examples:
        return run_examples()
    problems = stale_config()
    if problems:
        print(f"mutation: the configuration does not match the code: {'; '.join(problems)}", file=sys.stderr)
        return 2
    scopes = args.only or list(SCOPES)
    mutmut = Path(sys.executable).with_name("mutmut")
    if not args.table:
        if not mutmut.exists():
            print("mutation: mutmut is not installed; run: pip install -e '.[mutation]'", file=sys.stderr)
            return 2
        # one mutmut run for all chosen scopes: mutants are generated and the clean tests run once,
        # and each mutant still runs only the tests that call its function
        globs = [g for scope in scopes for g in globs_of(scope)]
        t0 = time.perf_counter()
        print(f"== mutmut run: {len(globs)} globs/names over {', '.join(scopes)}", flush=True)
        log = ROOT / "mutants" / "run.log"  # mutmut's own output (a spinner per step; its errors)
        log.parent.mkdir(exist_ok=True)
        with log.open("w") as out:
            argv = [str(mutmut), "run", "--max-children", str(args.jobs), *globs]
            code = subprocess.call(argv, cwd=ROOT, stdout=out, stderr=out)
        print(f"== exit {code}, {time.perf_counter() - t0:.0f}s (output: mutants/run.log)", flush=True)
        if code != 0:
            tail = log.read_text(errors="replace").replace("\r", "\n").splitlines()[-5:]
            print("\n".join(line for line in tail if line.strip()), file=sys.stderr)
            return code
    print(table(scopes))
    if args.table or args.only:
        return 0
    print("\n== the example bugs of issue 18, applied one at a time", flush=True)
    return run_examples()


if __name__ == "__main__":
    sys.exit(main())
