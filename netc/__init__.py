"""netc: a declarative neural-network compiler.

    import netc
    net = netc.load("specs/lenet.yaml")
"""

from netc.pool import size_numba_pool

size_numba_pool()  # before anything imports Numba (netc.pool)

__version__ = "0.1.0"
__all__ = ["Network", "load", "loads", "__version__"]


def __getattr__(name: str):
    """`netc.load` and friends come from netc.api, imported on first use: a process that needs only a
    part of netc (the curves painter, `netc --version`) does not pay for the compiler's imports."""
    if name in ("Network", "load", "loads"):
        from netc import api

        return getattr(api, name)
    raise AttributeError(f"module 'netc' has no attribute {name!r}")
