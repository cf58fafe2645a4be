"""Ctrl-C at the moments where Python's KeyboardInterrupt goes astray: inside Numba's compiler (llvmlite's
ctypes callbacks print it and carry on, or a half-built llvmlite object's __del__ prints a traceback) and
while pydantic builds netc's spec models (it turns the interrupt into a SchemaError). Each test runs a
process that sends itself SIGINT at that moment (deterministically, from a hook) and reads how it ended."""

import os
import subprocess
import sys
import textwrap

from netc.interrupts import HELD

_SIGINT_DURING_COMPILE = """
import os, signal
from numba import njit
from numba.core import event
import netc.interrupts

class SendCtrlC(event.Listener):  # SIGINT to this process as the compile starts, {times} time(s)
    def on_start(self, ev):
        for _ in range({times}):
            os.kill(os.getpid(), signal.SIGINT)
    def on_end(self, ev):
        pass

event.register("numba:compile", SendCtrlC())

@njit(cache=False)
def work(n):
    total = 0.0
    for i in range(n):
        total += i * 0.5
    return total

try:
    work(10)
    print("not interrupted")
except KeyboardInterrupt:
    print("interrupted after the compile:", work.signatures)
"""


def _run(source: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(source)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "NETC_SERVER": "0"})


def test_ctrl_c_while_numba_compiles_is_raised_once_the_compile_is_done():
    done = _run(_SIGINT_DURING_COMPILE.format(times=1))
    assert done.returncode == 0, done.stderr
    assert "interrupted after the compile: [(int64,)]" in done.stdout  # compiled, then interrupted
    assert done.stderr == HELD  # said at once; no "Exception ignored", no traceback


def test_a_second_ctrl_c_while_numba_compiles_ends_the_process_at_once():
    done = _run(_SIGINT_DURING_COMPILE.format(times=2))
    assert done.returncode == 130
    assert done.stdout == ""
    assert done.stderr == HELD + "interrupted\n"


def test_ctrl_c_outside_a_compile_is_left_alone():
    done = _run("""
        import os, signal
        import netc.interrupts
        try:
            os.kill(os.getpid(), signal.SIGINT)
            print("not interrupted")
        except KeyboardInterrupt:
            print("interrupted at once")
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    """)
    assert done.returncode == 0 and done.stdout == "interrupted at once\n" and done.stderr == ""


def test_a_run_that_handles_ctrl_c_itself_keeps_its_handler_while_numba_compiles():
    done = _run(_SIGINT_DURING_COMPILE.format(times=1).replace(
        "import netc.interrupts", "import netc.interrupts\nsignal.signal(signal.SIGINT, lambda *a: print('own handler'))"))
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout == "own handler\nnot interrupted\n"


def test_ctrl_c_while_pydantic_builds_the_spec_models_ends_netc_without_a_traceback():
    """No KeyboardInterrupt reaches code that pydantic runs while it builds a model class (where it would
    become a SchemaError): the process ends at once, with exit code 130 and nothing said."""
    done = _run("""
        import os, signal, sys
        from pydantic._internal import _model_construction

        build = _model_construction.complete_model_class
        def interrupted(*args, **kwargs):  # Ctrl-C while pydantic builds a model class of netc's
            try:
                os.kill(os.getpid(), signal.SIGINT)
                sum(range(1000))  # Python code after the signal: its handler has run by the end of this line
            except KeyboardInterrupt:
                print("KeyboardInterrupt inside pydantic's model construction", file=sys.stderr)
                raise
            return build(*args, **kwargs)
        _model_construction.complete_model_class = interrupted
        sys.argv = ["netc", "--help"]
        from netc.client import main
        main()
    """)
    assert done.returncode == 130, done.stderr
    assert done.stdout == "" and done.stderr == ""
