"""``python -m tskd_fast.train`` / ``tskd-fast train``: run a distillation job from a config.

With no arguments it runs the default job on the embedded ``shapes`` dataset: train (or reuse) a
teacher, distil a student with KD, train the same student alone, print the three accuracies.
Under ``torchrun --nproc_per_node=N -m tskd_fast.train ...`` it trains with DDP.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from tskd_fast.errors import UserError


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``train`` (shared by ``tskd-fast train`` and ``python -m tskd_fast.train``)."""
    parser.add_argument(
        "--config",
        "-c",
        metavar="YAML",
        help="experiment config (default: the embedded default run); packaged configs are found by "
        "their path under configs/, e.g. configs/cifar100/kd/resnet32x4_resnet8x4.yaml",
    )
    parser.add_argument(
        "--output-dir", "-o", metavar="DIR", help="run folder (overrides experiment.output_dir)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the unfinished run in the output folder"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing run of a different (or the same) config in the output folder",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument(
        "--help-config", action="store_true", help="list every config key with its default and exit"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides with dotted keys, e.g. solver.lr=0.05 distiller.kd.temperature=2",
    )


def run_train(args: argparse.Namespace) -> int:
    """Execute ``train`` with parsed arguments; raises UserError on bad input."""
    from tskd_fast.engine.config import dump, full_schema, load_config
    from tskd_fast.schema import describe

    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"experiment.output_dir={args.output_dir}")
    if args.help_config:
        cfg = load_config(args.config, overrides) if (args.config or overrides) else None
        ds = cfg["dataset"]["name"] if cfg else "shapes"
        method = cfg["distiller"]["name"] if cfg else "kd"
        print("\n".join(describe(full_schema(ds, method))))
        return 0
    cfg = load_config(args.config, overrides)
    if args.print_config:
        print(dump(cfg), end="")
        return 0

    from tskd_fast.engine.distributed import init_distributed, shutdown_distributed
    from tskd_fast.engine.pipeline import run_job

    ctx = init_distributed(cfg["trainer"]["device"])
    try:
        results = run_job(cfg, ctx, resume=args.resume, overwrite=args.overwrite)
    finally:
        shutdown_distributed()
    return 0 if results else 1


def report_error(message: str) -> None:
    """Print one error line (on rank 0 only under torchrun, where every rank hits the same error)."""
    if os.environ.get("RANK", "0") == "0":
        print(f"tskd-fast: error: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tskd_fast.train``; returns the exit code (2 for bad input)."""
    parser = argparse.ArgumentParser(prog="python -m tskd_fast.train", description=__doc__.splitlines()[0])
    add_train_arguments(parser)
    args = parser.parse_intermixed_args(argv)
    return guarded(run_train, args)


def guarded(fn, args: argparse.Namespace) -> int:  # noqa: ANN001
    """Run ``fn(args)``, turning input errors into one line + exit 2 and Ctrl-C into exit 130."""
    try:
        return fn(args)
    except UserError as exc:
        report_error(str(exc))
        return 2
    except FloatingPointError as exc:
        report_error(str(exc))
        return 1
    except KeyboardInterrupt:
        report_error("interrupted; finished epochs are saved in the run folder: continue with --resume")
        return 130


if __name__ == "__main__":
    sys.exit(main())
