"""``python -m graphite_istat.demo``."""

from graphite_istat.demo.main import main

raise SystemExit(main())
