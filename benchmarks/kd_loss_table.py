"""The KD-loss and DTD + KA tables: a thin wrapper over `tskd-fast bench --ops kd_loss,dtd_ka`.

python benchmarks/kd_loss_table.py [--device cpu|cuda] [--repeat N] [--no-compile] [--no-dtd]
"""

from __future__ import annotations

import argparse
import sys

import torch

from tskd_fast.bench.cli import machine_info
from tskd_fast.bench.cli import main as bench_main


def machine() -> str:
    """The CPU, thread count, torch version and CPU capability in one line (other scripts print it)."""
    info = machine_info([torch.device("cpu")])
    return f"{info['cpu']}, {info['threads']} threads, torch {info['torch']}, CPU capability {info['cpu_capability']}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    parser.add_argument("--no-dtd", action="store_true", help="skip the DTD + KA table")
    args = parser.parse_args()
    argv = ["--ops", "kd_loss" if args.no_dtd else "kd_loss,dtd_ka", "--device", args.device]
    argv += ["--repeat", str(args.repeat)] + (["--no-compile"] if args.no_compile else [])
    return bench_main(argv, prog="benchmarks/kd_loss_table.py")


if __name__ == "__main__":
    sys.exit(main())
