"""The ``tskd-fast`` command: ``train [--config YAML] [key=value ...]``, ``eval CHECKPOINT
[--config YAML] [key=value ...]``, ``compare [METHOD ...] [key=value ...]``, ``list`` and
``bench [options]``."""

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


def _eval_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tskd-fast eval",
        description="Top-1, top-5 and loss of a checkpoint on a dataset's test split. CHECKPOINT is a run "
        "folder or file of tskd-fast, a RepDistiller / mdistiller model file, or an official ReviewKD / TSKD "
        "distilled checkpoint; a run's config gives the dataset and model, --config and overrides change them.",
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="run folder or weights file")
    parser.add_argument(
        "--config", "-c", metavar="YAML", help="config naming the dataset and model (default: the run's)"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dataset.*, student.* and trainer.* overrides, e.g. student.name=resnet8x4 dataset.name=cifar100",
    )
    return parser


def _eval(args: argparse.Namespace) -> int:
    from tskd_fast.engine.checkpoint_eval import evaluate_checkpoint

    print(evaluate_checkpoint(args.checkpoint, args.config, args.overrides).report())
    return 0


def _compare_parser() -> argparse.ArgumentParser:
    from tskd_fast.engine.compare import add_compare_arguments

    parser = argparse.ArgumentParser(
        prog="tskd-fast compare",
        description="Train one teacher (or take teacher.checkpoint), one student per method and the student "
        "alone on the same data and seed; print a table (top-1, gain over the student alone, time per epoch, "
        "peak memory) and write a bar chart. Runs are reused as train reuses them.",
    )
    add_compare_arguments(parser)
    return parser


def _compare(args: argparse.Namespace) -> int:
    from tskd_fast.engine.compare import run_compare

    return run_compare(args)


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
    "eval": (_eval_parser, _eval, "top-1 / top-5 / loss of a checkpoint on a test split"),
    "compare": (
        _compare_parser,
        _compare,
        "train every method on the same data and compare them with the student alone",
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
