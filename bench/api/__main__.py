"""``python -m bench.api``: see :mod:`bench.api.run`."""

import sys

from bench.api.run import main

sys.exit(main())
