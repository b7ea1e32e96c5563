"""`make mutation`: mutation testing of ssnbench's core modules with mutmut 3 (docs/testing.md).

Each mutant runs only the tests that exercise its function (mutmut maps every mutated function
to the tests, among `[tool.mutmut]`'s selection in pyproject.toml, that called it), fastest first,
stopping at the first failure; `--only SCOPE` runs one module. The scopes below are the functions
that hold the behaviours issue 18 names (grouping, split index check, paired statistics, head
weights, job hash, the report's seed and case alignment).

    python scripts/mutation.py                 # every scope, then the table
    python scripts/mutation.py --only losses   # one scope
    python scripts/mutation.py --table         # the table of the last runs only
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _functions(module: str, *names: str) -> list[str]:
    return [f"ssnbench.{module}.x{name}__mutmut_*" for name in names]


# scope -> mutant-name globs: mutmut names a mutant <module>.x_<function>__mutmut_<n>, and a method
# <module>.xǁ<Class>ǁ<method>__mutmut_<n>. The functions that hold the behaviours of issue 18; a
# wider scope (all of fit, run_suite, summarize: ~800 more mutants) did not fit in a session on the
# shared 2-core machine (docs/testing.md gives the measured rate).
SCOPES: dict[str, list[str]] = {
    "derm7pt": _functions("data.derm7pt", "_group_label", "ǁReleaseǁclass_counts", "__read_index"),
    "metrics": _functions("metrics", "_paired_bootstrap", "_mean_std"),
    "losses": _functions("losses", "_head_weights_for", "__normalise", "_combine_probabilities"),
    "runner": _functions("runner", "_plan", "_job_hash", "_resolve_weights"),
    "report": _functions("report", "_case_scores", "__aligned"),
}

# mutmut's exit code of a mutant's test run -> verdict (mutmut.stats.status_by_exit_code, grouped)
VERDICT = {
    1: "killed",
    3: "killed",
    0: "survived",
    36: "timeout",
    24: "timeout",
    -24: "timeout",
    152: "timeout",
    255: "timeout",
    5: "no tests",
    33: "no tests",
}


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
    codes = results()
    lines = [
        "| module (scope) | mutants | killed | survived | timeout | no tests | not run | killed or timeout |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    survivors: list[str] = []
    for scope in scopes:
        names = [n for n in codes if any(fnmatch.fnmatchcase(n, g) for g in SCOPES[scope])]
        count = dict.fromkeys(("killed", "survived", "timeout", "no tests", "not run", "other"), 0)
        for n in names:
            verdict = "not run" if codes[n] is None else VERDICT.get(codes[n], "other")  # type: ignore[arg-type]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted(SCOPES), help="run these scopes only")
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested in parallel (default 2)")
    parser.add_argument("--table", action="store_true", help="print the table of earlier runs, run nothing")
    args = parser.parse_args()
    scopes = args.only or list(SCOPES)
    mutmut = Path(sys.executable).with_name("mutmut")
    if not args.table:
        if not mutmut.exists():
            print("mutation: mutmut is not installed; run: pip install -e '.[mutation]'", file=sys.stderr)
            return 2
        # one mutmut run for all chosen scopes: mutants are generated and the clean tests run once,
        # and each mutant still runs only the tests that call its function
        globs = [g for scope in scopes for g in SCOPES[scope]]
        t0 = time.perf_counter()
        print(f"== mutmut run {' '.join(globs)}", flush=True)
        code = subprocess.call(
            [str(mutmut), "run", "--max-children", str(args.jobs), *globs],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        print(f"== exit {code}, {time.perf_counter() - t0:.0f}s", flush=True)
        if code != 0:
            return code
    print(table(scopes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
