"""`python -m netc.cli` runs the command line (as the `netc` script does)."""

from netc.cli import main

main()
