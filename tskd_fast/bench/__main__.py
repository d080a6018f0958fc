"""``python -m tskd_fast.bench`` is ``tskd-fast bench``."""

import sys

from tskd_fast.bench.cli import main

sys.exit(main(prog="python -m tskd_fast.bench"))
