"""The one Numba policy: every compiled function in netc gets its flags here.

fastmath is only `nsz` (the sign of a zero may be ignored). Re-association and contraction
(FMA) let LLVM reorder a sum or fuse a multiply-add differently in each function it inlines a
kernel into, so the compiled tier's numbers differed from the Python tier's in the last bit
(tests/test_tiers.py) and depended on the CPU's vector width; without them the numbers are the
same in every tier and on every x86-64 CPU with AVX2, BLAS and libm aside. NaN/inf semantics are
kept, so a diverging run is still detected.

Division follows Python's error model (a zero divisor raises ZeroDivisionError), except in kernels
marked `vector_division`, which follow numpy's (x / 0.0 is inf or nan, as in numpy and PyTorch).
Python's checks every divisor, a branch per element that keeps LLVM from vectorizing a loop that
divides: Adam's update ran at 3.3 ns per element, 0.5 with numpy's model, to the same bits (IEEE
division and square root are exact at every vector width). Not everywhere: in a loop over
`act_value` with the activation known only at run time, numpy's model let LLVM vectorize by
computing every activation's branch for every element (a ReLU 0.05 -> 1.6 ns per element).
"""

import functools
import os

from numba import njit, types
from numba.core import cgutils
from numba.core.compiler_lock import global_compiler_lock
from numba.extending import intrinsic, overload
from numba.np.ufunc import parallel as numba_parallel

import netc.interrupts  # noqa: F401  (Ctrl-C held while Numba compiles)
import netc.libm  # noqa: F401  (glibc's exp, log and pow without their errno wrappers)
from netc.codecache import use_netc_cache
from netc.errors import Diagnostic, Location, NetcError
from netc.pool import available_cores

FASTMATH = {"nsz"}
# no C wrapper: nothing calls netc's compiled code by address (a plan links its kernels, the Python tier
# calls them through their Python entry points), and each wrapper costs ~15 ms of a cold compile
_FLAGS = dict(fastmath=FASTMATH, nogil=True, no_cfunc_wrapper=True)


def kernel(fn=None, *, vector_division: bool = False):
    """A private compiled kernel, cached on disk. A tiny plan's fused functions have LLVM inline it
    (`tiny_plan_function`). `vector_division`: numpy's error model, for kernels whose loops divide
    (see the module's docstring)."""
    if fn is None:
        return functools.partial(kernel, vector_division=vector_division)
    division = dict(error_model="numpy") if vector_division else {}
    return _cached(njit(cache=True, **_FLAGS, **division)(fn))


def helper(fn):
    """A compiled function that only kernels call (an activation, im2col). Numba links its code into
    each caller, whose cache entry holds it, so it needs no Python entry point, C wrapper or cache
    entry of its own: those were half of its compile (act_value 0.68 -> 0.35 s, im2col 0.60 -> 0.31).
    Python cannot call it; a test calls it through a kernel."""
    return njit(no_cpython_wrapper=True, **_FLAGS)(fn)


def parallel_kernel(fn):
    """A kernel whose `prange` loop runs its iterations on all cores (one Numba parallel region,
    with BLAS single-threaded inside: see steps.blas_threads).

    `.serial` is its twin compiled without `parallel`: the same iterations, one after another, so
    the same numbers to the bit (each iteration owns its chunk of the batch and its scratch; sums
    across them run in a fixed order after the loop). It compiles in about half the time (Numba
    compiles a parallel region twice), which is what a first run on an empty cache waits for; the
    parallel kernel follows in the background (Model.warm_up)."""
    dispatcher = _cached(njit(cache=True, parallel=True, **_FLAGS)(fn))
    dispatcher.serial = _cached(njit(cache=True, **_FLAGS)(fn), variant="serial")
    return dispatcher


def plan_function(fn):
    """A function of a generated plan module (cached next to its source)."""
    return _cached(njit(cache=True, **_FLAGS)(fn))


# the mark of a tiny plan's function in the name of its LLVM library (Numba names it by the qualname)
_INLINING = "__kernels_inlined"
_KERNEL_SYMBOLS = "_ZN4netc7kernels"  # netc.kernels.* as Numba mangles it


def tiny_plan_function(fn):
    """A function of a tiny plan's fused tier (steps.should_inline_kernels): LLVM inlines every netc
    kernel it calls, so a step pays no calls and each kernel's loops see the plan's constant shapes
    and flags. The kernels are the cached ones: Numba links their code into the plan's module in any
    case (what it already compiled), and marking them `alwaysinline` there costs nothing more. Numba's
    own inlining (`inline="always"`) did the same at the level of its IR, re-typing a copy of each
    kernel at every call: seed-mlp's loop compiled in 5.3 s instead of 1.2, a three-loss plan in 10 s
    instead of 2.6, for the same machine code speed (benchmarks/RESULTS.md)."""
    _mark_kernels_inlined_once()
    fn.__qualname__ += _INLINING
    return plan_function(fn)


@functools.cache
def _mark_kernels_inlined_once() -> None:
    """Numba optimises a library's module once everything it calls is linked in; for a tiny plan's
    function, the kernels' functions there are marked `alwaysinline` first."""
    from numba.core.codegen import CPUCodeLibrary

    optimize = CPUCodeLibrary._optimize_final_module  # a step of every Numba the project allows (0.59 on)

    def optimize_inlining_kernels(library):
        if library.name.endswith(_INLINING):
            for function in library._final_module.functions:
                if function.name.startswith(_KERNEL_SYMBOLS) and not function.is_declaration:
                    function.add_function_attribute("alwaysinline")
        optimize(library)

    CPUCodeLibrary._optimize_final_module = optimize_inlining_kernels


def python_glue(fn):
    """A function of a plan's Python tier: the generated glue runs as Python, calling the compiled
    kernels (which are cached on disk), so a new plan starts without compiling anything but the
    kernels it is the first to use."""
    return fn


def fixed_view(array, shape):
    """`array` (a C-contiguous view of an arena, V[k]) as the generated functions bind it. Run as
    Python (the Python tier), the array itself; compiled, a view of the same memory whose shape is
    the constant `shape` and which holds no reference count. The compiler then knows every loop
    bound but the batch's and drops the reference counting of each array passed to a kernel: a step
    of the lecture's 3-4-3-2 MLP went from ~1.1-1.9 us to ~0.4 us (benchmarks/RESULTS.md). The
    arena outlives every call (V is an argument), so the view never outlives its memory."""
    return array


@overload(fixed_view)
def _fixed_view_compiled(array, shape):
    return lambda array, shape: _constant_shape_view(array, shape)


@intrinsic
def _constant_shape_view(typingctx, array, shape):
    """A C-contiguous array over `array`'s data with the shape `shape` and no meminfo (so no
    reference count). Built directly: going through numba.carray inlined Numba IR at every
    binding and made a LeNet-5 fused plan compile ~2 s (~20%) longer."""
    if not (isinstance(array, types.Array) and isinstance(shape, types.BaseTuple)
            and all(isinstance(size, types.Integer) for size in shape)):
        return None
    view_type = types.Array(array.dtype, len(shape), "C")

    def codegen(context, builder, signature, args):
        from numba.np.arrayobj import populate_array  # loaded with Numba's CPU target anyway; not at import

        source = context.make_array(array)(context, builder, args[0])
        view = context.make_array(view_type)(context, builder)
        sizes = [context.cast(builder, size, size_type, types.intp)
                 for size, size_type in zip(cgutils.unpack_tuple(builder, args[1]), shape)]
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(context.get_data_type(array.dtype)))
        strides, step = [], itemsize
        for size in reversed(sizes):
            strides.insert(0, step)
            step = builder.mul(step, size)
        populate_array(view, data=source.data, shape=sizes, strides=strides, itemsize=itemsize, meminfo=None)
        return view._getvalue()

    return view_type(array, shape), codegen


def _cached(dispatcher, variant: str = ""):
    """Numba's disk cache, moved to netc's cache folder and checked on load (netc.codecache)."""
    use_netc_cache(dispatcher, variant)
    return dispatcher


def load_cython_blas() -> None:
    """Load SciPy's BLAS bindings (scipy.linalg.cython_blas), through which Numba's helper finds
    sgemm/dgemm, without the rest of scipy.linalg: importing that package costs ~0.4 s of every
    start. The extension module is loaded from its file under its own name; should SciPy's
    layout differ, it is imported the usual way."""
    import importlib.machinery
    import importlib.util
    import sys

    name = "scipy.linalg.cython_blas"
    if name in sys.modules:
        return
    import scipy

    folder = os.path.join(os.path.dirname(scipy.__file__), "linalg")
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(folder, "cython_blas" + suffix)
        if os.path.exists(path):
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
                return
            except Exception:  # leave no half-loaded module behind; import it the usual way
                del sys.modules[name]
                break
    import scipy.linalg.cython_blas  # noqa: F401


@functools.lru_cache(maxsize=1)
def blas_small_kernels() -> bool:
    """Whether the OpenBLAS netc's kernels call runs small products with its unpacked small-matrix
    kernels (its SkylakeX family of CPU kernels; not Haswell's, which OPENBLAS_CORETYPE=Haswell
    selects on the same CPU), whose speed depends on how the operands are stored
    (netc.kernels.gemm_sizes)."""
    load_cython_blas()
    from threadpoolctl import ThreadpoolController

    found = [lib for lib in ThreadpoolController().lib_controllers if lib.internal_api == "openblas"]
    ours = [lib for lib in found if "scipy" in os.path.basename(lib.filepath or "")] or found  # SciPy's: see blas.py
    return bool(ours) and (ours[0].architecture or "") in ("SkylakeX", "Cooperlake", "SapphireRapids")


_blas_threads: int | None = None  # what prepare_threads last set
_threads_started = False


def thread_count() -> int | None:
    """NETC_THREADS: the threads (and the chunks of a conv pass) netc uses; None when unset,
    then every core this process may run on (see steps.cores)."""
    return _env_thread_count("NETC_THREADS", 2, "to use every core")


def _env_thread_count(variable: str, example: int, unset: str) -> int | None:
    """A thread count from the environment variable `variable`; None when unset or empty."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise NetcError(Diagnostic("E-ENV", f"{variable}={text!r} is not a thread count", Location(variable),
                                   hint=f"a whole number from 1, e.g. {variable}={example}; unset it {unset}"))
    return int(text)


def cores() -> int:
    """Threads a plan is made for (one per core): NETC_THREADS when set, else the cores this process
    may run on; NUMBA_NUM_THREADS, when set, caps both (Numba starts no more threads than that)."""
    available = thread_count() or available_cores()
    return max(1, min(available, int(os.environ.get("NUMBA_NUM_THREADS", available))))


SPIN_COUNT = 5000  # libgomp's busy-wait before a thread sleeps: ~0.3 ms here, longer than a step's gaps between conv passes


def start_threads() -> None:
    """Start the threads of parallel regions once: netc's pool (netc.region_pool, which Numba's
    regions then run on) where it runs, else Numba's threading layer.

    Numba's layer is started in any case, its OpenMP threads spinning SPIN_COUNT times (~0.3 ms) at the
    end of a parallel region before they sleep, unless the user chose OMP_WAIT_POLICY or
    GOMP_SPINCOUNT. Asleep, a thread takes a futex wake (tens of µs in a VM) to start the next
    region: LeNet-5 ran 51-65 k samples/s so and 87-93 k with this spin, the LSTM 13.5-14.6 k and
    18.0-18.6 k (RESULTS.md, twelfth session). libgomp's default spin (300,000, milliseconds) holds the
    cores after every region; beside busy processes that stole the time the working thread needed
    (a LeNet-5 epoch 3-4x its time beside two CPU-bound processes, not ~2x), and the short spin
    matters little there: netc then runs its regions on one thread when that is faster
    (netc.cpuload). libgomp reads the variable once, as it loads, so it is set only while Numba
    loads it and then removed. PyTorch's bundled libgomp has the same soname: in a process where
    netc's pool started first, PyTorch runs on this runtime and its settings (benchmarks/run.py
    therefore times PyTorch in a process of its own)."""
    global _threads_started
    # Numba's compiler lock (re-entrant): a compile that starts the threads holds it already, and the
    # pool's own compile takes it, so no two threads can wait on each other here
    with global_compiler_lock:
        if _threads_started:
            return
        _threads_started = True  # first: the pool's own compile starts Numba's layer again (_launch_with_numba)
        import numba

        from netc import region_pool

        chosen = "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ
        if not chosen:
            os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
        try:
            _numba_launch_threads()
        finally:
            if not chosen:
                del os.environ["GOMP_SPINCOUNT"]
        if region_pool.wanted():
            region_pool.install(numba.config.NUMBA_NUM_THREADS)


def _launch_with_numba() -> None:
    """Numba starts its threading layer before it compiles or loads code with a parallel region, and the
    code is linked to the `numba_parallel_for` of that moment: netc's threads start with it, so that
    every region runs on netc's pool, whatever compiled first."""
    start_threads()


_numba_launch_threads = numba_parallel._launch_threads
numba_parallel._launch_threads = _launch_with_numba


def blas_thread_count(planned: int) -> int:
    """OpenBLAS's threads for a plan that asks for `planned`: NETC_BLAS_THREADS when set."""
    return _env_thread_count("NETC_BLAS_THREADS", 1, "for the plan's own choice") or planned


def prepare_threads(threads: int = 1, parallel: int | None = None, busy: bool = False) -> int:
    """Ready the threads for the plan about to run: the pool started (start_threads), its parallel
    regions on `parallel` threads (a model's choice beside busy processes, see netc.cpuload), else one
    per core (`cores`: NETC_THREADS when set), their waits set for whether other processes keep the
    cores `busy` (netc.region_pool.RegionPool.spin_for); and the BLAS thread count set
    (NETC_BLAS_THREADS overrides it).
    Called before every compiled call.

    The GEMMs of small networks gain nothing from a second OpenBLAS thread and, when the
    cores are busy, its spinning made a digits-mlp epoch 3-8x slower (0.07 s vs 0.24-0.6 s);
    the compiler asks for more threads only for large GEMMs (steps.blas_threads). Set on every
    change, not once: the thread count changes the order of BLAS sums, and a plan must give the
    same numbers whatever ran before it in the process. Kernels call SciPy's OpenBLAS (see
    netc.kernels.blas), which threadpoolctl only reaches once it is loaded. Numba's thread
    count does not change any number: a conv pass has a fixed number of chunks per plan."""
    global _blas_threads
    # A plan loaded from the disk cache calls the parallel regions of its kernels without
    # compiling them, and they need the pool (a null call otherwise).
    start_threads()
    import numba

    from netc import region_pool

    pool = numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(min(parallel or cores(), pool))  # per calling thread
    if region_pool.pool():  # beside busy processes its workers sleep at once, its caller spins long
        region_pool.pool().spin_for(busy)
    threads = blas_thread_count(threads)
    if threads != _blas_threads:
        from threadpoolctl import threadpool_limits

        load_cython_blas()  # loads the OpenBLAS the kernels call

        threadpool_limits(limits=threads, user_api="blas")
        _blas_threads = threads
    return threads
