"""Command-line entry point. Each subcommand lives in its own module, imported lazily so that
`--help` stays fast and torch is only imported by the commands that need it."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from ssnbench import launch
from ssnbench.errors import UserError


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


class _Parser(argparse.ArgumentParser):
    """argparse with ONE line on a usage mistake (like every other user error), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _seed_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 0 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected distinct comma-separated integers >= 0, got {text!r}")
    return values


def _name_list(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated model names, got {text!r}")
    return names


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ssnbench")
    except PackageNotFoundError:  # run from a source tree without an install
        from ssnbench import __version__

        return __version__


def _example(text: str) -> str:
    return f"example:\n  {text}"


def _command(parser: argparse.ArgumentParser, target: str) -> None:
    """Bind a parser to `module:function`, imported only when the command runs."""
    parser.set_defaults(_target=target)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ssnbench",
        description="Train, evaluate, profile and report SSN and baselines on Derm7pt.",
        epilog=_example("ssnbench run suites/demo.yaml"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ssnbench {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="train and evaluate every (model, seed) of a suite, then report",
        description="Train and evaluate every (model, seed) of a suite, skipping finished jobs, then "
        "write the report. Each job writes <out>/<job>.json, its checkpoint and <job>.history.csv.",
        epilog=_example(
            "ssnbench run suites/spc.yaml --models ssn-r50-prior,dual-r50-equal --seeds 0 "
            "--set train.epochs=1 --set model_defaults.options.pretrained=false --device cuda:1 --dry-run"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("suite", help="suite YAML file, e.g. suites/demo.yaml")
    run.add_argument("--out", default=None, help="results folder (default: results/<suite name>)")
    run.add_argument("--report-dir", default=None, help="report folder (default: reports/<suite name>)")
    run.add_argument("--device", default=None,
                     help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    run.add_argument("--force", action="store_true", help="re-run jobs whose result file exists")
    run.add_argument("--models", type=_name_list, default=None, metavar="A,B",
                     help="run only these models of the suite (default: all)")
    run.add_argument("--seeds", type=_seed_list, default=None, metavar="0,2",
                     help="run these seeds instead of the suite's (default: the suite's seeds)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                     help="override a suite key, value read as YAML and validated like the file; "
                          "repeatable; models.<name>.KEY or models.*.KEY address models "
                          "(e.g. --set train.epochs=1 --set models.*.options.pretrained=false)")
    run.add_argument("--dry-run", action="store_true",
                     help="print the plan (jobs to run and skip, weights, params and GMACs per model, "
                          "estimated time from earlier runs on this machine) and exit")
    run.add_argument("--tensorboard", default=None, metavar="DIR",
                     help="also log every epoch to TensorBoard under DIR/<suite>/<job> "
                          "(needs the extra: pip install 'ssnbench[track]')")
    launch.add_options(run)
    _command(run, "ssnbench.driver:cli_run")

    report = sub.add_parser("report", help="rebuild a report from result files without training",
                            epilog=_example("ssnbench report results/demo --report-dir /tmp/report"),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    report.add_argument("results_dir", metavar="DIR", help="folder of per-job result files")
    report.add_argument(
        "--report-dir", default=None, help="where to write report.md (default: reports/<suite>)",
    )
    report.add_argument(
        "--allow-mixed", action="store_true",
        help="report results trained under different settings together (the runs that differ are listed)",
    )
    _command(report, "ssnbench.report:cli_report")

    predict = sub.add_parser(
        "predict",
        help="apply a run's checkpoint to a Derm7pt split or to image pairs; writes a CSV",
        description="Per-case probabilities and predicted classes of all 8 labels, as CSV.",
        epilog=_example(
            "ssnbench predict results/spc/ssn-r50-prior__seed0.safetensors --data $DERM7PT_ROOT --split test"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    predict.add_argument("checkpoint", metavar="CHECKPOINT",
                         help="<job>.safetensors (or its .checkpoint.json) written by `ssnbench run`")
    predict.add_argument("--data", default=None, metavar="RELEASE",
                         help="a release_v0 folder (or the folder holding it)")
    predict.add_argument("--split", choices=["train", "valid", "test", "all"], default="test",
                         help="split of --data to predict (default: test)")
    predict.add_argument("--pairs", default=None, metavar="CSV",
                         help="CSV with columns clinic,derm[,case_id] (paths relative to the CSV)")
    predict.add_argument("--out", default=None, metavar="CSV",
                         help="output CSV (default: <job>.predictions.<split or pairs name>.csv "
                              "beside the checkpoint)")
    predict.add_argument("--tta", choices=["none", "flips"], default=None,
                         help="test-time augmentation (default: as the run's `eval.tta`)")
    predict.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    _command(predict, "ssnbench.predict:cli")

    data = sub.add_parser("data", help="make or check a Derm7pt release_v0 folder")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    make = data_sub.add_parser("make", help="write a synthetic dataset in the exact release_v0 layout",
                               epilog=_example("ssnbench data make --out /tmp/syn --image-size 224"),
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    make.add_argument("--out", required=True, help="folder to write (release_v0/ is created inside)")
    make.add_argument("--cases", type=_positive_int, default=1011, help="number of cases (default 1011)")
    make.add_argument("--seed", type=int, default=0, help="random seed (same arguments => same bytes)")
    make.add_argument("--image-size", type=_positive_int, default=128, help="image side in pixels")
    _command(make, "ssnbench.data.commands:make")
    check = data_sub.add_parser("check", help="validate a release and print a summary",
                                epilog=_example("ssnbench data check /data/derm7pt/release_v0 --json"),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("root", metavar="DIR", help="release_v0 folder (or a folder holding one)")
    check.add_argument("--json", action="store_true", help="print the summary as JSON")
    _command(check, "ssnbench.data.commands:check")

    explain = sub.add_parser(
        "explain",
        help="per-case figures of a checkpoint: cross-attention maps and Grad-CAM per head",
        description="One figure per case (both images, where each modality's queries attend in the other "
        "at every cross-attention stage, Grad-CAM of each head) and an index.md with true and predicted "
        "labels. Needs the `explain` extra (captum). Example: ssnbench explain "
        "results/demo/ssn-prior__seed0.safetensors --cases 4 --out explain/",
    )
    explain.add_argument("checkpoint", help="a run's <job>.safetensors (or its .checkpoint.json)")
    explain.add_argument("--data", default=None, metavar="RELEASE",
                         help="Derm7pt release_v0 folder (default: the one the checkpoint was trained on)")
    explain.add_argument("--split", default="test", choices=["train", "valid", "test"], help="default: test")
    pick = explain.add_mutually_exclusive_group()
    pick.add_argument("--cases", type=_positive_int, default=4,
                      help="number of cases, taking each DIAG class in turn (default 4)")
    pick.add_argument("--ids", nargs="+", default=None, metavar="ID", help="case ids (meta.csv case_id)")
    explain.add_argument("--out", required=True, help="folder for the figures and index.md")
    explain.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    _command(explain, "ssnbench.explain.commands:cli_explain")

    robust = sub.add_parser(
        "robustness",
        help="accuracy of checkpoints under imaging shifts of each modality",
        description="Blur, JPEG, brightness, contrast, colour cast, zoom and noise at 3-5 severities on the "
        "clinical photo and, separately, the dermoscopy image, plus the missing image; writes "
        "robustness.md, robustness.json and figures/. Example: ssnbench robustness "
        "results/demo/ssn-prior__seed0.safetensors results/demo/dual-prior__seed0.safetensors "
        "--severities 3 --out reports/robustness",
    )
    robust.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="one or more <job>.safetensors")
    robust.add_argument("--data", default=None, metavar="RELEASE",
                        help="Derm7pt release_v0 folder (default: the one each checkpoint was trained on)")
    robust.add_argument("--split", default="test", choices=["train", "valid", "test"], help="default: test")
    robust.add_argument("--severities", type=int, default=5, choices=[3, 4, 5], help="default: 5")
    robust.add_argument("--shifts", nargs="+", default=None,
                        help="subset of blur jpeg brightness contrast colour_cast zoom noise (default: all)")
    robust.add_argument("--seed", type=int, default=0, help="seed of the stochastic shifts (default 0)")
    robust.add_argument("--out", default="reports/robustness", help="default: reports/robustness")
    robust.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    _command(robust, "ssnbench.explain.commands:cli_robustness")

    bench = sub.add_parser("bench", help="speed benchmarks")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="TARGET")
    kern = bench_sub.add_parser("kernels", help="fused shared cross-attention vs PyTorch baselines",
                                epilog=_example("ssnbench bench kernels --quick --json /tmp/k.json"),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    kern.add_argument("--json", default=None, metavar="PATH", help="also write results as JSON (default: no)")
    kern.add_argument("--quick", action="store_true", help="fewer shapes and repetitions (smoke test)")
    kern.add_argument("--lengths", type=_int_list, default=None,
                      help="token counts, e.g. 49,196 (default: 49,196,784,3136 on CUDA, 196,49 on CPU)")
    kern.add_argument("--head-dims", type=_int_list, default=None,
                      help="head dims, e.g. 32,64 (default: 32,64)")
    kern.add_argument("--methods", default=None,
                      help="comma list of rows to time, e.g. fused,sdpa_2calls (default: all)")
    kern.add_argument("--no-graph", action="store_true",
                      help="skip the CUDA-graph (device time) timing next to the eager timing")
    _command(kern, "ssnbench.bench.kernels:cli")
    models = bench_sub.add_parser("models", help="inference/training throughput of a suite's models",
                                  epilog=_example("ssnbench bench models --suite suites/demo.yaml "
                                                  "--batch-sizes 1,32 --device cpu"),
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    models.add_argument("--suite", required=True, help="suite YAML whose models are benchmarked")
    models.add_argument("--batch-sizes", type=_int_list, default=[1, 32, 64], help="e.g. 1,32,64")
    models.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="cpu or cuda (default: cuda if available)")
    models.add_argument("--json", default=None, metavar="PATH",
                        help="also write results as JSON (default: no)")
    models.add_argument("--out", default=None, help="folder for the CSV/JSON/Markdown tables (default: none)")
    models.add_argument("--rounds", type=_positive_int, default=1,
                        help="measure every model this many times, round-robin; report medians")
    _command(models, "ssnbench.bench.models:cli")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module_name, func_name = args._target.split(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(args) or 0)
    except UserError as err:
        print(f"ssnbench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ssnbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
