"""``python -m tskd_fast`` is the ``tskd-fast`` command."""

import sys

from tskd_fast.cli import main

sys.exit(main())
