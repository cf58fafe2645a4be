"""`python -m netc` is the `netc` command (through a netc server when one is up: netc.client)."""

from netc.client import main

main()
