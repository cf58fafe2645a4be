"""Test-session settings: no netc servers (netc.server: tests/test_server.py starts its own) and no
background compiles of fused plans (netc.compiler.background), which would
compete for the two cores with the tests; tests/test_tiers.py turns them on where it checks them.

With `-n 2 --dist loadfile` (the README's command) each file runs on one worker, files handed out in
collection order as workers free up. The files that take longest go first, so that the short ones
fill in at the end and both workers finish together (xdist's own order, by number of tests, put the
pre-commit test, 1 test and ~40 s, last)."""

import compileall
import os
from pathlib import Path

os.environ["NETC_BACKGROUND_COMPILE"] = "0"
os.environ["NETC_SERVER"] = "0"  # every `netc` in its own process; tests/test_server.py turns servers on

# the longest files, longest first (seconds of one worker from empty caches, AMD EPYC, 2026-12-04): the docs
# pages ~125, tiers ~65, sweeps ~55, server ~45, CLI ~45, training and resume ~35, the pre-commit hook ~28,
# reliability ~23, pictures ~13. Handed out in this order, each to the worker that is free first, the short
# rest fills in at the end (alphabetical, tiers came last and ran alone for ~40 s while the other idled).
SLOW_FIRST = ("test_docs.py", "test_tiers.py", "test_sweep.py", "test_server.py", "test_cli_run.py", "test_train.py",
              "test_precommit.py", "test_reliability.py", "test_viz.py")


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep the order set below
        config.option.loadscopereorder = False
    if "PYTEST_XDIST_WORKER" not in os.environ:
        # Byte-compile netc once, before the workers start: where PYTHONDONTWRITEBYTECODE is set (this
        # machine's environment does), an editable install's sources were never compiled, and each `netc`
        # process the tests start would compile them again (~0.1 s of a `netc train`).
        compileall.compile_dir(Path(__file__).resolve().parents[1] / "netc", quiet=2)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))  # stable: the rest as collected
