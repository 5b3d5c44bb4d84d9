"""The ``graphite-istat`` command line: argument parsing and printing only."""
