"""The ``tskd-fast`` command: ``tskd-fast train [--config YAML] [key=value ...]``, ``tskd-fast list``
and ``tskd-fast bench [options]``."""

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


def _train_parser(prog: str = "tskd-fast train") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train a teacher, a distilled student or a baseline from a YAML config. Without "
        "--config: the default run on the embedded shapes dataset (teacher, KD student, baseline).",
    )
    add_train_arguments(parser)
    return parser


def _list_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tskd-fast list", description="List what the configs can name.")
    parser.add_argument(
        "what", nargs="?", default="all", choices=("all", "methods", "datasets", "models", "configs")
    )
    return parser


def _bench_parser() -> argparse.ArgumentParser:
    # Imported on use: the bench module holds inductor's compile workers back as it loads.
    from tskd_fast.bench.cli import build_parser

    return build_parser()


def _bench(args: argparse.Namespace) -> int:
    from tskd_fast.bench.cli import run_bench

    return run_bench(args)


COMMANDS = {
    "train": (
        _train_parser,
        run_train,
        "train / distil (no arguments: the embedded default teacher -> student run)",
    ),
    "list": (_list_parser, _list, "list methods, datasets, models and packaged configs"),
    "bench": (_bench_parser, _bench, "time the fused ops and training steps against eager and torch.compile"),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser (for --help); each command parses its own arguments."""
    parser = argparse.ArgumentParser(
        prog="tskd-fast", description="Knowledge distillation with fused kernels: training front-end."
    )
    parser.add_argument(
        "command", choices=list(COMMANDS), help="; ".join(f"{k}: {v[2]}" for k, v in COMMANDS.items())
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``tskd-fast``); returns the exit code: 0 ok, 2 bad input, 1 failure."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        # Prints usage (and exits 0 for --help, 2 for anything else).
        build_parser().parse_args(argv[:1] if argv else ["--help"])
        return 2
    make_parser, run, _ = COMMANDS[argv[0]]
    # Intermixed: options may come after key=value overrides (``... solver.lr=0.1 --resume``).
    args = make_parser().parse_intermixed_args(argv[1:])
    return guarded(run, args)


if __name__ == "__main__":
    sys.exit(main())
