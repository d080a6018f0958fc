"""The ``tskd-fast`` command: ``tskd-fast train [--config YAML] [key=value ...]`` and ``tskd-fast list``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import resources

from tskd_fast.train import add_train_arguments, guarded, run_train


def _list(args: argparse.Namespace) -> int:
    from tskd_fast.data import datasets
    from tskd_fast.distillers import methods
    from tskd_fast.models import list_models

    what = args.what
    if what in ("methods", "all"):
        print("methods (distiller.name):")
        for name, entry in methods().items():
            print(f"  {name:10s} {entry.doc}")
    if what in ("datasets", "all"):
        print("datasets (dataset.name):")
        for name, entry in datasets().items():
            print(f"  {name:14s} {entry.doc}")
    if what in ("models", "all"):
        print("models (student.name / teacher.name):")
        print("  " + ", ".join(list_models()))
    if what in ("configs", "all"):
        root = resources.files("tskd_fast") / "configs"
        print(f"packaged configs (--config configs/...; in {root}):")
        stack = [(root, "")]
        found = []
        while stack:
            node, rel = stack.pop()
            for child in node.iterdir():
                if child.is_dir():
                    stack.append((child, f"{rel}{child.name}/"))
                elif child.name.endswith(".yaml"):
                    found.append(f"configs/{rel}{child.name}")
        print("\n".join(f"  {p}" for p in sorted(found)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tskd-fast", description="Knowledge distillation with fused kernels: training front-end."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    train = sub.add_parser(
        "train",
        help="train / distil (no arguments: the embedded default teacher -> student run)",
        description="Train a teacher, a distilled student or a baseline from a YAML config. Without "
        "--config: the default run on the embedded shapes dataset (teacher, KD student, baseline).",
    )
    add_train_arguments(train)
    train.set_defaults(func=run_train)
    lister = sub.add_parser("list", help="list methods, datasets, models and packaged configs")
    lister.add_argument(
        "what", nargs="?", default="all", choices=("all", "methods", "datasets", "models", "configs")
    )
    lister.set_defaults(func=_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``tskd-fast``); returns the exit code: 0 ok, 2 bad input, 1 failure."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return guarded(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
