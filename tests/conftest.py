"""Test-session settings: no netc servers (netc.server: tests/test_server.py starts its own) and no
background compiles of fused plans (netc.compiler.background), which would
compete for the two cores with the tests; tests/test_tiers.py turns them on where it checks them.

With `-n 2 --dist loadfile` (the README's command) each file runs on one worker, files handed out in
collection order as workers free up. The files that take longest go first, so that the short ones
fill in at the end and both workers finish together (xdist's own order, by number of tests, put the
pre-commit test, 1 test and ~40 s, last)."""

import os
from pathlib import Path

os.environ["NETC_BACKGROUND_COMPILE"] = "0"
os.environ["NETC_SERVER"] = "0"  # every `netc` in its own process; tests/test_server.py turns servers on

# the longest files (seconds of one worker, measured on 2 cores): the docs pages ~110-180, the sweeps ~50,
# the pre-commit hook ~35, training and resume ~25, reliability ~20
SLOW_FIRST = ("test_docs.py", "test_sweep.py", "test_precommit.py", "test_train.py", "test_reliability.py")


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep the order set below
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))  # stable: the rest as collected
