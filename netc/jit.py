"""The one Numba policy: every compiled function in netc gets its flags here.

fastmath allows re-association and contraction (faster reductions) but keeps
NaN/inf semantics, so a diverging run is still detected.
"""

import os

from numba import njit

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
DISABLED = os.environ.get("NUMBA_DISABLE_JIT") == "1"


def kernel(fn):
    """A private compiled kernel, cached on disk."""
    return njit(cache=True, fastmath=FASTMATH, nogil=True)(fn)


def plan_function(fn):
    """A function of a generated plan module (cached next to its source)."""
    return njit(cache=True, fastmath=FASTMATH, nogil=True)(fn)
