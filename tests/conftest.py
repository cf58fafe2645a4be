"""Test-session settings: no background compiles of fused plans (netc.compiler.background), which would
compete for the two cores with the tests; tests/test_tiers.py turns them on where it checks them."""

import os

os.environ["NETC_BACKGROUND_COMPILE"] = "0"
