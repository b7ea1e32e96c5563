"""`ssnbench data make` and `ssnbench data check`: thin CLI wrappers over the data modules."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from ssnbench.data.derm7pt import Release, check_image_files, load_release, summarize
from ssnbench.data.labels import LABELS
from ssnbench.data.transforms import check_image_header
from ssnbench.errors import DatasetError
from ssnbench.preflight import bound_problem, probe_folder


def image_problems(release: Release, skip: set[str] = frozenset()) -> list[tuple[str, str]]:
    """(path relative to images/, one-line reason) of every image `run` would refuse: the same
    header check (size bounds) as `run`'s pre-flight, then a full decode (in threads)."""
    paths = sorted({p for c in release.cases for p in (c.clinic, c.derm)} - {release.root / "images" / s
                                                                           for s in skip})
    problems: dict[Path, str] = {}
    for path in paths:  # headers only, in this thread (check_image_header scopes a warnings filter)
        try:
            check_image_header(path)
        except DatasetError as err:
            problems[path] = str(err)

    def bad(path: Path) -> tuple[Path, str] | None:
        try:
            with Image.open(path) as img:
                img.draft("RGB", (64, 64))
                img.load()
        except Exception as err:  # any decoder failure means the file is unusable
            return path, f"{path}: image unreadable ({type(err).__name__}: {err})"
        return None

    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        for found in pool.map(bad, [p for p in paths if p not in problems]):
            if found is not None:
                problems[found[0]] = found[1]
    return [(release.rel(p), problems[p]) for p in paths if p in problems]


def make(args: argparse.Namespace) -> int:
    """Write a synthetic release and say where and how big."""
    from ssnbench.data.synthetic import generate

    for option, key, value in (("--cases", "dataset.cases", args.cases),
                               ("--image-size", "dataset.source_size", args.image_size)):
        problem = bound_problem(key, value)
        if problem:
            raise DatasetError(f"{option}: {problem}")
    probe_folder(Path(args.out), "--out")
    start = time.perf_counter()
    root = generate(args.out, cases=args.cases, seed=args.seed, image_size=args.image_size)
    release = load_release(root)
    sizes = ", ".join(f"{s} {len(r)}" for s, r in release.splits.items())
    print(f"synthetic Derm7pt: {len(release.cases)} cases ({sizes}), {args.image_size} px, seed {args.seed} "
          f"-> {root} [{time.perf_counter() - start:.1f} s]")
    return 0


def check(args: argparse.Namespace) -> int:
    """Validate a release, print its summary, and fail (exit 2) if any image is missing or unreadable."""
    release = load_release(args.root, check_images=False)
    missing = check_image_files(release)
    problems = image_problems(release, skip=set(missing))
    unreadable = [rel for rel, _ in problems]
    summary = dict(summarize(release), missing_images=missing, unreadable_images=unreadable)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_table(summary, release)
    counts = f"({len(missing)} missing, {len(unreadable)} unreadable image(s) in {release.root})"
    if missing:
        raise DatasetError(f"{release.root / 'images' / missing[0]}: image not found {counts}")
    if problems:
        raise DatasetError(f"{problems[0][1]} {counts}")
    return 0


def _print_table(summary: dict, release: Release) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout)
    splits = summary["splits"]
    console.print(f"[bold]Derm7pt release[/bold] {summary['root']}: {summary['cases']} cases; "
                  + ", ".join(f"{s} {n}" for s, n in splits.items()))
    table = Table(title="grouped class counts (all / train / valid / test)")
    table.add_column("label")
    table.add_column("class")
    for col in ("all", *splits):
        table.add_column(col, justify="right")
    by_split = summary["class_counts_by_split"]
    for name in LABELS:
        for cls, count in summary["class_counts"][name].items():
            table.add_row(name, cls, str(count), *(str(by_split[s][name][cls]) for s in splits))
        table.add_section()
    console.print(table)
    rows = summary["no_clinic_rows"]
    console.print(f"rows whose clinic image equals the derm image (no clinical photo): {len(rows)}"
                  + (f" (rows {', '.join(map(str, rows))})" if rows else ""))
    console.print(f"missing images: {len(summary['missing_images'])}; "
                  f"unreadable images: {len(summary['unreadable_images'])}")
    for rel in summary["missing_images"][:10]:
        console.print(f"  missing: {rel}")
    for rel in summary["unreadable_images"][:10]:
        console.print(f"  unreadable: {rel}")
