"""``python -m graphite_istat.cli``: the same as the ``graphite-istat`` command."""

import sys

from .main import main

sys.exit(main())
