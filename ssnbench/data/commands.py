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

from ssnbench.data.derm7pt import LABELS, Release, check_image_files, load_release, summarize
from ssnbench.errors import DatasetError


def unreadable_images(release: Release, skip: set[str] = frozenset()) -> list[str]:
    """Paths (relative to images/) that exist but cannot be fully decoded."""
    paths = sorted({p for c in release.cases for p in (c.clinic, c.derm)} - {release.root / "images" / s
                                                                           for s in skip})

    def bad(path: Path) -> str | None:
        try:
            with Image.open(path) as img:
                img.draft("RGB", (64, 64))
                img.load()
        except Exception:  # any decoder failure means the file is unusable
            return release.rel(path)
        return None

    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        return [p for p in pool.map(bad, paths) if p is not None]


def make(args: argparse.Namespace) -> int:
    """Write a synthetic release and say where and how big."""
    from ssnbench.data.synthetic import generate

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
    unreadable = unreadable_images(release, skip=set(missing))
    summary = dict(summarize(release), missing_images=missing, unreadable_images=unreadable)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_table(summary, release)
    if missing or unreadable:
        first = missing[0] if missing else unreadable[0]
        what = "not found" if missing else "unreadable"
        raise DatasetError(f"{release.root / 'images' / first}: image {what} ({len(missing)} missing, "
                           f"{len(unreadable)} unreadable image(s) in {release.root})")
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
