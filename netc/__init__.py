"""netc: a declarative neural-network compiler.

    import netc
    net = netc.load("specs/lenet.yaml")
"""

__version__ = "0.1.0"

from netc.api import Network, load, loads  # noqa: E402

__all__ = ["Network", "load", "loads", "__version__"]
