"""netc's thread pool for Numba's parallel regions: a region ends when its work is done.

Numba runs a `prange` loop by handing its rows (chunks of iterations) to a threading layer's
`parallel_for`. OpenMP's gives each thread its rows up front and ends the region when every thread
has checked in. Beside busy processes the scheduler keeps a thread off its core for whole time
slices (milliseconds), and every region that thread was part of waits for it: an ideal parallel
program with 0.1-1 ms regions ran 2.4-3.5x slower on four threads beside one busy process per core
than alone, where equal shares of the cores allow 1.5x (benchmarks/contention_bound.py).

Here the threads claim rows one at a time (a compare-and-swap on the region's generation and the
rows left), the calling thread among them, so a thread that is not running when a region starts takes no
part in it, and the region ends when its last row is done. A waiting worker spins a while (the
spin), then sleeps on a futex; beside busy processes it sleeps almost at once, which leaves its
time slices to the threads with work and keeps the scheduler's credit for when work comes. The
caller, its own rows done, spins for the rows others still run, beside busy processes ~3 ms: asleep,
it would leave its core to a busy process and wait its turn to come back. The same program then ran
1.9-2.0x slower on four threads (1.6-2.4x before the caller spun; the VM's share of its host moves it),
LeNet-5's epochs 1.9-2.0x (benchmarks/RESULTS.md, twentieth and twenty-first sessions). Rows own
disjoint outputs and netc's kernels add across chunks in a fixed order after their loops (no parfor
reduction: tests/test_region_pool.py), so the thread that runs a row changes no number.

`install` points the `numba_parallel_for` symbol, which every parallel region calls, at this pool
(netc.jit.start_threads, on Linux x86-64 unless NETC_REGION_POOL=0; elsewhere, or so, Numba's own
threading layer runs them). Each row runs under its region caller's floating-point modes (netc.fpmode:
subnormals flushed or kept). A region started while the pool runs another (a second Python thread, a
region inside a row) runs its rows on the calling thread, in order."""

from __future__ import annotations

import os
import platform
import sys
import threading

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from netc.errors import Diagnostic, Location, NetcError
from netc.fpmode import read_mxcsr, write_mxcsr
from netc.jit import helper, kernel

# The control block: int64 words, those that threads write often each on a cache line of its own.
GENERATION = 0  # the region being run (its low 32 bits: the futex the workers sleep on)
NEXT = 8  # generation << 32 | the rows left to claim (claimed from the last down)
DONE = 16  # rows of the region finished
SLEEPERS = 24  # workers asleep on GENERATION
ACTIVE = 32  # threads taking part in regions, the caller included (a futex: the others sleep on it)
OWNER = 40  # 1 while a region runs
SPIN = 48  # pause instructions before a waiting thread sleeps
STOP = 56
JOB = 64  # the region: its gufunc, args, dims, steps, data, inner_ndim, array_count, rows
SIZE = 72  # threads in the pool, the caller included
CALLER_ASLEEP = 80  # 1 while the region's caller sleeps on DONE until the last row is done
CALLER_SPIN = 88  # pause instructions before the caller, its rows done, sleeps until the others' are
FP_MODE = 96  # the region caller's MXCSR, under which every row runs (netc.fpmode)
EXCEPTION_FLAGS = 0x3F  # MXCSR's sticky flags, each thread's own; the rest are its modes
SCRATCH = 128  # then per thread SCRATCH_WORDS: a row's argument pointers, then (at DIMENSIONS) its dimensions
SCRATCH_WORDS = 256
DIMENSIONS = 192
MAX_THREADS = 64

SYMBOL = "netc_region_control"  # the control block's address, as compiled code finds it
SYS_FUTEX = 202  # x86-64 Linux
FUTEX_WAIT_PRIVATE = 128
FUTEX_WAKE_PRIVATE = 129
QUIET_SPIN = 5_000  # ~0.3 ms: alone, longer than a step's gaps between regions (as netc's OpenMP spin was)
BUSY_SPIN = 50  # beside busy processes: sleep almost at once (0.1 ms regions on 4 threads: 1.9x; 2.5-2.8x at 5,000)
# Beside busy processes the caller, its rows done, spins ~3 ms for the rows others still run: asleep, it
# left its core to a busy process and waited its turn to come back (LeNet-5 on 4 threads 2.0x, 3.0x at 50).
BUSY_CALLER_SPIN = 50_000


def wanted() -> bool:
    """Whether parallel regions run on this pool: on Linux x86-64 (its futex call and pause hint),
    unless NETC_REGION_POOL=0 asks for Numba's threading layer."""
    text = os.environ.get("NETC_REGION_POOL", "").strip()
    if text not in ("", "0", "1"):
        raise NetcError(Diagnostic("E-ENV", f"NETC_REGION_POOL={text!r} is neither 0 nor 1",
                                   Location("NETC_REGION_POOL"), hint="NETC_REGION_POOL=0 runs parallel regions on "
                                   "Numba's threading layer; unset it for netc's pool"))
    return text != "0" and sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")


# ---------------------------------------------------------------------------- compiled primitives


def _word(builder, address, index):
    return builder.gep(builder.inttoptr(address, ir.PointerType(ir.IntType(64))), [index])


@intrinsic
def load(typingctx, address, index):
    """Word `index` of the block at `address`, read atomically (sequentially consistent, as all here)."""
    def codegen(context, builder, signature, args):
        return builder.load_atomic(_word(builder, *args), "seq_cst", 8)
    return types.int64(types.int64, types.int64), codegen


@intrinsic
def store(typingctx, address, index, value):
    def codegen(context, builder, signature, args):
        builder.store_atomic(args[2], _word(builder, args[0], args[1]), "seq_cst", 8)
        return context.get_dummy_value()
    return types.void(types.int64, types.int64, types.int64), codegen


@intrinsic
def fetch_add(typingctx, address, index, value):
    def codegen(context, builder, signature, args):
        return builder.atomic_rmw("add", _word(builder, args[0], args[1]), args[2], "seq_cst")
    return types.int64(types.int64, types.int64, types.int64), codegen


@intrinsic
def compare_swap(typingctx, address, index, expected, new):
    """Set the word to `new` where it holds `expected`; whether it did."""
    def codegen(context, builder, signature, args):
        pair = builder.cmpxchg(_word(builder, args[0], args[1]), args[2], args[3], "seq_cst", "seq_cst")
        return builder.extract_value(pair, 1)
    return types.boolean(types.int64, types.int64, types.int64, types.int64), codegen


@intrinsic
def pause(typingctx):
    """x86's spin-wait hint."""
    def codegen(context, builder, signature, args):
        hint = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
        builder.call(hint, [])
        return context.get_dummy_value()
    return types.void(), codegen


def _libc(builder, name, fnty):
    # by name, resolved as the code loads: a ctypes pointer would be an address that caching cannot keep
    return cgutils.get_or_insert_function(builder.module, fnty, name)


@intrinsic
def futex(typingctx, address, operation, value):
    """syscall(SYS_futex, address, operation, value, NULL): wait while the 32-bit word holds `value`,
    or wake up to `value` waiters."""
    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        call = _libc(builder, "syscall", ir.FunctionType(i64, [i64], var_arg=True))
        builder.call(call, [i64(SYS_FUTEX), args[0], args[1], args[2], i64(0)])
        return context.get_dummy_value()
    return types.void(types.int64, types.int64, types.int64), codegen


@intrinsic
def control_block(typingctx):
    """The address of the control block: the symbol SYMBOL, which `install` binds as the code loads."""
    def codegen(context, builder, signature, args):
        try:
            block = builder.module.get_global(SYMBOL)
        except KeyError:
            block = cgutils.add_global_variable(builder.module, ir.IntType(8), SYMBOL)
        return builder.ptrtoint(block, ir.IntType(64))
    return types.int64(), codegen


@intrinsic
def call_row(typingctx, fn, args, dims, steps, data):
    """Call a Numba gufunc, void fn(char **args, intp *dims, intp *steps, void *data), by its address."""
    def codegen(context, builder, signature, values):
        byte_pointer, i64_pointer = ir.PointerType(ir.IntType(8)), ir.PointerType(ir.IntType(64))
        fnty = ir.FunctionType(ir.VoidType(), [ir.PointerType(byte_pointer), i64_pointer, i64_pointer, byte_pointer])
        callee = builder.inttoptr(values[0], fnty.as_pointer())
        builder.call(callee, [builder.inttoptr(values[1], ir.PointerType(byte_pointer)),
                              builder.inttoptr(values[2], i64_pointer), builder.inttoptr(values[3], i64_pointer),
                              builder.inttoptr(values[4], byte_pointer)])
        return context.get_dummy_value()
    return types.void(types.int64, types.int64, types.int64, types.int64, types.int64), codegen


# ---------------------------------------------------------------------------- the pool's code


@helper
def _row_arguments(args, dims, steps, array_count, inner_ndim, row, pointers, dimensions):
    # as Numba's layers call a gufunc for row `row`: each argument's pointer moved on by its step (a
    # null one stays null), the dimensions with the outer one 1
    for j in range(array_count):
        base = load(args, j)
        store(pointers, j, base + row * load(steps, j) if base != 0 else 0)
    for j in range(inner_ndim + 1):
        store(dimensions, j, load(dims, j))
    store(dimensions, 0, 1)


@helper
def _claim_rows(control, thread, generation):
    # run rows of region `generation` until none is left to claim; the word NEXT counts the rows left, so
    # a claim needs nothing else of the region (its job may already be the next region's until it holds)
    job = control + 8 * JOB
    scratch = control + 8 * (SCRATCH + thread * SCRATCH_WORDS)
    while True:
        word = load(control, NEXT)
        left = word & 0xFFFFFFFF
        if (word >> 32) & 0xFFFFFFFF != generation & 0xFFFFFFFF or left == 0:  # (generations wrap at 2^32)
            return
        if compare_swap(control, NEXT, word, word - 1):  # row left - 1 is ours: the job stays until it is done
            mode = load(control, FP_MODE)
            if (read_mxcsr() ^ mode) & ~EXCEPTION_FLAGS:  # its caller's modes (flushing subnormals or not), so
                write_mxcsr(mode)  # a row's numbers do not depend on the thread that runs it
            steps, dimensions = load(job, 3), scratch + 8 * DIMENSIONS
            _row_arguments(load(job, 1), load(job, 2), steps, load(job, 6), load(job, 5), left - 1, scratch, dimensions)
            call_row(load(job, 0), scratch, dimensions, steps, load(job, 4))
            if fetch_add(control, DONE, 1) + 1 == load(job, 7) and load(control, CALLER_ASLEEP) != 0:
                futex(control + 8 * DONE, FUTEX_WAKE_PRIVATE, 1)  # the last row: wake the caller


@kernel
def _worker(control, thread):
    """Worker `thread` (1, 2, ...): wait for a region it takes part in, claim its rows; until STOP."""
    seen = load(control, GENERATION)
    while load(control, STOP) == 0:
        active = load(control, ACTIVE)
        if thread >= active:  # not among the region's threads: sleep until their count changes
            futex(control + 8 * ACTIVE, FUTEX_WAIT_PRIVATE, active)
            continue
        spins = 0
        while load(control, GENERATION) == seen and load(control, STOP) == 0:
            spins += 1
            if spins < load(control, SPIN):
                pause()
                continue
            fetch_add(control, SLEEPERS, 1)  # then GENERATION read again: the caller reads SLEEPERS after
            if load(control, GENERATION) == seen:  # storing it, so one of the two sees the other
                futex(control + 8 * GENERATION, FUTEX_WAIT_PRIVATE, seen & 0xFFFFFFFF)
            fetch_add(control, SLEEPERS, -1)
            if thread >= load(control, ACTIVE):
                break
            spins = 0
        seen = load(control, GENERATION)
        if thread < load(control, ACTIVE):
            _claim_rows(control, thread, seen)


@helper
def _run_here(fn, args, dims, steps, data, inner_ndim, array_count):
    # every row on the calling thread, in order, with a scratch of its own (any size)
    scratch = np.empty(array_count + inner_ndim + 1, np.int64)
    pointers = scratch.ctypes.data
    dimensions = pointers + 8 * array_count
    for row in range(load(dims, 0)):
        _row_arguments(args, dims, steps, array_count, inner_ndim, row, pointers, dimensions)
        call_row(fn, pointers, dimensions, steps, data)


@helper
def _run_region(control, fn, args, dims, steps, data, inner_ndim, array_count, threads):
    # Numba's parallel_for: every row of the region run, on up to `threads` threads
    rows = load(dims, 0)
    threads = min(threads, load(control, SIZE))
    too_many = array_count > DIMENSIONS or inner_ndim >= SCRATCH_WORDS - DIMENSIONS  # for a thread's scratch
    if rows <= 1 or threads <= 1 or too_many or not compare_swap(control, OWNER, 0, 1):
        _run_here(fn, args, dims, steps, data, inner_ndim, array_count)
        return
    if threads != load(control, ACTIVE):
        store(control, ACTIVE, threads)
        futex(control + 8 * ACTIVE, FUTEX_WAKE_PRIVATE, MAX_THREADS)
    job = control + 8 * JOB
    store(job, 0, fn)
    store(job, 1, args)
    store(job, 2, dims)
    store(job, 3, steps)
    store(job, 4, data)
    store(job, 5, inner_ndim)
    store(job, 6, array_count)
    store(job, 7, rows)
    store(control, FP_MODE, read_mxcsr())
    generation = load(control, GENERATION) + 1
    store(control, DONE, 0)
    store(control, NEXT, ((generation & 0xFFFFFFFF) << 32) | rows)
    store(control, GENERATION, generation)
    if load(control, SLEEPERS) > 0:
        futex(control + 8 * GENERATION, FUTEX_WAKE_PRIVATE, MAX_THREADS)
    _claim_rows(control, 0, generation)
    spins = 0
    while load(control, DONE) < rows:  # rows that other threads claimed and still run
        spins += 1
        if spins < load(control, CALLER_SPIN):
            pause()
            continue
        store(control, CALLER_ASLEEP, 1)  # then DONE read again: the last row's thread reads CALLER_ASLEEP
        done = load(control, DONE)  # after adding to DONE, so one of the two sees the other
        if done < rows:
            futex(control + 8 * DONE, FUTEX_WAIT_PRIVATE, done)
        store(control, CALLER_ASLEEP, 0)
    store(control, OWNER, 0)


def _parallel_for(fn, args, dims, steps, data, inner_ndim, array_count, threads):
    _run_region(control_block(), fn, args, dims, steps, data, inner_ndim, array_count, threads)


# ---------------------------------------------------------------------------- Python's side


class RegionPool:
    """The control block and the worker threads (daemons, each in a compiled loop without the GIL)."""

    def __init__(self, threads: int):
        self.size = max(1, min(threads, MAX_THREADS))
        self.block = np.zeros(SCRATCH + self.size * SCRATCH_WORDS, np.int64)
        self.address = self.block.ctypes.data
        self.block[SIZE] = self.size
        self.block[ACTIVE] = self.size
        self.block[SPIN] = self.block[CALLER_SPIN] = QUIET_SPIN
        self.workers = [threading.Thread(target=_worker, args=(self.address, thread), daemon=True,
                                         name=f"netc-regions-{thread}") for thread in range(1, self.size)]
        for worker in self.workers:
            worker.start()

    def set_spin(self, spin: int, caller_spin: int | None = None) -> None:
        self.block[SPIN] = spin
        self.block[CALLER_SPIN] = spin if caller_spin is None else caller_spin

    def spin_for(self, busy: bool) -> None:
        """The spins for a machine whose other processes are busy, or not."""
        if busy:
            self.set_spin(BUSY_SPIN, BUSY_CALLER_SPIN)
        else:
            self.set_spin(QUIET_SPIN)

    def worker_ids(self) -> list[int]:
        """The workers' native thread ids (netc.cpuload.Placement holds them to CPUs)."""
        return [worker.native_id for worker in self.workers]

    def regions(self) -> int:
        """Regions run on the pool's threads so far (one that ran on its caller alone does not count)."""
        return int(self.block[GENERATION])

    def close(self) -> None:
        """Stop the workers (tests; a process's pool lives as long as the process)."""
        self.block[STOP] = 1
        self.block[GENERATION] += 1
        for word in (GENERATION, ACTIVE):
            _wake_all(self.address + 8 * word)
        for worker in self.workers:
            worker.join()


@kernel
def _wake_all(address):
    futex(address, FUTEX_WAKE_PRIVATE, MAX_THREADS)


_pool: RegionPool | None = None
_entry = None  # the compiled parallel_for, kept alive: compiled code calls it by address


def install(threads: int) -> RegionPool:
    """Start the pool (once per process) and point Numba's `numba_parallel_for` at it."""
    global _pool, _entry
    if _pool is None:
        import llvmlite.binding as llvm

        pool = RegionPool(threads)
        llvm.add_symbol(SYMBOL, pool.address)  # before the entry's code is linked
        _entry = _compiled_entry()
        llvm.add_symbol("numba_parallel_for", _entry.address)
        _pool = pool
    return _pool


def pool() -> RegionPool | None:
    """The process's pool, once installed."""
    return _pool


def _compiled_entry():
    """_parallel_for as a C function, cached on disk with netc's kernels."""
    from numba.core import sigutils
    from numba.core.ccallback import CFunc

    from netc.codecache import use_netc_cache
    from netc.jit import FASTMATH

    signature = sigutils.normalize_signature(types.void(*[types.int64] * 8))  # Numba passes 5 pointers, 3 intp
    entry = CFunc(_parallel_for, signature, locals={}, options=dict(nopython=True, nogil=True, fastmath=FASTMATH))
    entry.py_func = _parallel_for  # what netc's cache names the entries after
    use_netc_cache(entry)
    entry.compile()
    return entry
