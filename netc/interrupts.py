"""Ctrl-C while Numba compiles: held until the compiler is done.

A KeyboardInterrupt raised while Numba compiles lands in llvmlite's ctypes callbacks, which print it as
"Exception ignored" and carry on (the run went on training and exited 0), or half-way through the
construction of an llvmlite object, whose __del__ then prints an AttributeError traceback. So while
the main thread is inside Numba's compiler lock (or in `compiling()`) with Python's default SIGINT
handling, a Ctrl-C is noted and raised as soon as the compiler is done; a second one ends the process
at once (exit code 130). Elsewhere Ctrl-C is left alone: a training run takes it over itself
(netc.runtime.train), and a process that ignores it (a sweep's worker) keeps ignoring it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

from numba.core import event

HELD = "netc: Ctrl-C: stopping once Numba has finished compiling (press Ctrl-C again to stop now)\n"


class _Hold:
    """Depth of the main thread's compiles; SIGINT's handler while the outermost one runs."""

    def __init__(self):
        self.depth = 0
        self.previous = None  # the handler to put back (set only while holding)
        self.pending = False

    def enter(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self.depth += 1
        if self.depth == 1 and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self.previous = signal.signal(signal.SIGINT, self._note)

    def leave(self) -> None:
        if threading.current_thread() is not threading.main_thread() or self.depth == 0:
            return
        self.depth -= 1
        if self.depth or self.previous is None:
            return
        signal.signal(signal.SIGINT, self.previous)
        self.previous = None
        if self.pending:
            self.pending = False
            signal.raise_signal(signal.SIGINT)  # the default handler: KeyboardInterrupt, now the compiler is out

    def _note(self, signum, frame) -> None:
        if self.pending:  # the second Ctrl-C: nothing is half-written that a killed process would not leave
            sys.stderr.write("interrupted\n")
            sys.stderr.flush()
            os._exit(130)
        self.pending = True
        sys.stderr.write(HELD)
        sys.stderr.flush()


class _CompilerLockListener(event.Listener):
    def __init__(self, hold: _Hold):
        self.hold = hold

    def on_start(self, event_) -> None:
        self.hold.enter()

    def on_end(self, event_) -> None:
        self.hold.leave()


_HOLD = _Hold()
event.register("numba:compiler_lock", _CompilerLockListener(_HOLD))  # every acquire and release, nested too


@contextlib.contextmanager
def compiling():
    """Hold Ctrl-C around LLVM work outside Numba's compiler lock (setting up its code generator)."""
    _HOLD.enter()
    try:
        yield
    finally:
        _HOLD.leave()
