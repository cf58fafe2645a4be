"""The two tiers of a plan (netc.compiler.module: FUSED, PYTHON) give the same numbers to the bit, so
a run may start on the Python tier and move to the fused loop at any epoch; `auto` takes the fused
tier once a background process has compiled it (netc.compiler.background)."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import numpy as np
import pytest

from netc.compiler import FUSED, PYTHON
from netc.compiler import background as fused_compile
from netc.graph import build_graph
from netc.runtime.data import load_train_eval
from netc.runtime.model import Model
from netc.spec import load_spec, load_spec_text

SPECS = Path(__file__).resolve().parent.parent / "specs"
pytestmark = pytest.mark.compiled

# a tiny plan (kernels inlined into the fused loop), dropout + conv with a fused pool, batch norm's
# running statistics, sharing, a residual sum: each trained for two epochs in each tier
# and three weighted losses (a loss body of several kernels inlined into the loop)
CASES = ["xor", "digits-cnn", "digits-cnn-bn", "siamese", "residual", "xor-sgd", "heads"]


def _data(name: str, loaded, count: int = 300) -> dict:
    if name in ("siamese", "residual", "heads"):  # their data are files: random arrays of the inputs' shapes
        rng = np.random.default_rng(0)
        return {key: rng.integers(0, inp.classes, count) if inp.classes else rng.normal(size=(count, *inp.shape))
                for key, inp in loaded.spec.inputs.items()}
    train, _ = load_train_eval(loaded if name != "xor-sgd" else load_spec(SPECS / "xor.yaml"))
    return {key: value[:count] for key, value in train.arrays.items()}


# xor (a tiny plan: kernels inlined into the fused loop) with SGD, momentum, nesterov, weight decay and
# an lr_mult other than 1: the glue multiplies the rate, which a fused tiny plan could reorder
XOR_SGD = ((SPECS / "xor.yaml").read_text()
           .replace("out: 8, weight_init", "out: 8, lr_mult: 0.5, weight_init"))


def _load(name: str):
    if name == "heads":
        from tests.test_losses import SPEC

        return load_spec_text(SPEC, "heads.yaml")
    if name == "xor-sgd":
        import re

        text = re.sub(r"optimizer: \{[^}]*\}", "optimizer: {type: sgd, lr: 0.3, momentum: 0.9, nesterov: true, "
                      "weight_decay: 0.01, clip: {norm: 0.5}}", XOR_SGD)
        assert "nesterov" in text and "lr_mult: 0.5" in text
        return load_spec_text(text, "xor-sgd.yaml")
    return load_spec(SPECS / f"{name}.yaml")


def _train(name: str, tiers: list[str]) -> tuple[list, dict, dict]:
    """Per-epoch results, weights and state after one epoch in each of `tiers`, in turn."""
    loaded = _load(name)
    model = Model(build_graph(loaded), seed=0, tier=tiers[0])
    prepared = model.prepare(_data(name, loaded))
    results = []
    for epoch, tier in enumerate(tiers):
        model.plan.tier = tier
        order = np.random.default_rng(epoch).permutation(prepared["__count__"])
        result = model.train_epoch(prepared, order, seed=epoch)
        results.append((result.loss, result.accuracy, result.batches, result.losses))
        assert model.plan.module.__name__.startswith("netc_plan_")
    return results, model.get_weights(), model.get_state()


@pytest.mark.parametrize("name", CASES)
def test_the_tiers_give_the_same_numbers_to_the_bit(name):
    fused = _train(name, [FUSED, FUSED])
    python = _train(name, [PYTHON, PYTHON])
    mixed = _train(name, [PYTHON, FUSED])  # what `auto` does when the fused loop is ready after an epoch
    for other in (python, mixed):
        assert other[0] == fused[0], "losses and accuracies"
        for key in fused[1]:
            np.testing.assert_array_equal(other[1][key], fused[1][key], err_msg=key)
        for key in fused[2]:
            np.testing.assert_array_equal(other[2][key], fused[2][key], err_msg=key)


def test_the_python_tier_compiles_no_glue():
    model = Model(build_graph(load_spec(SPECS / "xor.yaml")), tier=PYTHON)
    assert not hasattr(model.plan.module.epoch, "stats"), "a plain Python function"
    assert "from netc.jit import fixed_view, python_glue as plan_function" in model.plan.sources[PYTHON]
    assert "tiny_plan_function" not in model.plan.sources[PYTHON] and "tiny_plan_function" in model.plan.sources[FUSED]
    model.warm_up()  # compiles the kernels this machine lacks (none, usually), never the glue
    assert model.warm_up() is False, "the kernels are marked compiled"


def test_a_tiny_plans_fused_loop_calls_no_kernel():
    """A tiny plan's fused functions have LLVM inline every kernel (netc.jit.tiny_plan_function): its
    compiled loop calls none. The same function compiled as a larger plan's calls them. Both are
    compiled here, without the cache: a loop loaded from the cache has no LLVM IR to read."""
    import re
    import types

    from numba import njit

    from netc.compiler.steps import should_inline_kernels

    loaded = load_spec(SPECS / "xor.yaml")
    graph = build_graph(loaded)
    model = Model(graph, seed=0, tier=FUSED)
    assert should_inline_kernels(graph, model.batch)
    prepared = model.prepare(_data("xor", loaded))
    model.train_epoch(prepared, np.arange(prepared["__count__"]), seed=0)
    epoch = model.plan.module.epoch
    (signature,) = epoch.signatures
    options = {key: value for key, value in epoch.targetoptions.items() if key != "nopython"}
    calls = {}
    for tiny in (True, False):
        source = epoch.py_func
        function = types.FunctionType(source.__code__, source.__globals__, "epoch", source.__defaults__)
        function.__qualname__ = source.__qualname__ if tiny else "epoch"  # the tiny plan's mark, or none
        again = njit(**options)(function)
        again.compile(signature)
        ir = again.inspect_llvm(signature)
        assert "define" in ir
        calls[tiny] = set(re.findall(r"call [^@\n]*@_ZN4netc7kernels\w*?(\d+[a-z_]+)B", ir))
    assert calls[True] == set(), calls[True]
    assert {"14linear_forward", "15linear_backward"} <= calls[False], calls[False]


@pytest.fixture
def fresh_cache(tmp_path):
    """An empty cache folder for this test (netc's cache root is looked up once per process)."""
    from netc.codecache import cache_root

    saved = os.environ.get("NETC_CACHE_DIR")
    os.environ["NETC_CACHE_DIR"] = str(tmp_path / "cache")
    cache_root.cache_clear()
    yield tmp_path / "cache"
    if saved is None:
        del os.environ["NETC_CACHE_DIR"]
    else:
        os.environ["NETC_CACHE_DIR"] = saved
    cache_root.cache_clear()


def _spec(width: int) -> str:
    """xor with a hidden width no other test uses: a plan this cache has never compiled."""
    return (SPECS / "xor.yaml").read_text().replace("name: xor", f"name: xor_{width}").replace("out: 8", f"out: {width}")


def test_auto_starts_on_python_and_moves_to_the_fused_loop_once_compiled(fresh_cache, monkeypatch):
    monkeypatch.setenv(fused_compile.BACKGROUND_ENV, "1")
    text = _spec(13)
    assert "out: 13" in text
    loaded = load_spec_text(text, "xor13.yaml")
    graph = build_graph(loaded)
    model = Model(graph, seed=0, tier="auto", background=True)
    assert model.tier == PYTHON
    data = _data("xor", load_spec(SPECS / "xor.yaml"))
    prepared = model.prepare(data)
    order = np.arange(prepared["__count__"])
    model.train_epoch(prepared, order, seed=0)
    assert model._compiling is not None, "the fused loop compiles in another process"
    assert model._compiling.wait(timeout=240) == 0
    assert fused_compile.ready(model.plan.module_path(FUSED), "float32")
    assert str(model.plan.module_path(FUSED)).startswith(str(fresh_cache))
    model.train_epoch(prepared, order, seed=1)
    assert model.tier == FUSED
    assert sum(model.plan.module.epoch.stats.cache_misses.values()) == 0, "loaded what the other process compiled"
    # the same numbers as a run on the Python tier alone
    alone = Model(graph, seed=0, tier=PYTHON)
    alone.train_epoch(prepared, order, seed=0)
    alone.train_epoch(prepared, order, seed=1)
    for key, value in alone.get_weights().items():
        np.testing.assert_array_equal(model.get_weights()[key], value, err_msg=key)
    # the next model of this plan starts on the fused tier
    assert Model(graph, seed=0, tier="auto", background=True).tier == FUSED


def test_two_background_compiles_of_one_plan_compile_it_once(fresh_cache, monkeypatch):
    """A second run of a plan whose fused loop another process is compiling waits for that compile and
    takes its result: it neither compiles the loop again nor writes the marker again."""
    import fcntl

    monkeypatch.setenv(fused_compile.BACKGROUND_ENV, "1")
    graph = build_graph(load_spec_text(_spec(19), "xor19.yaml"))
    data = _data("xor", load_spec(SPECS / "xor.yaml"))
    model = Model(graph, seed=0, tier="auto", background=True)
    path = model.plan.module_path(FUSED)
    lock = fused_compile._beside(path, "float32", "lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # another run's background compile of this plan
        model.train_epoch(model.prepare(data), np.arange(len(data["x"])), seed=0)
        assert model._compiling is not None
        time.sleep(1.0)
        assert model._compiling.poll() is None and not fused_compile.ready(path, "float32"), "it waits"
        fused_compile._mark_fused(path, "float32")  # the other compile is done
        marker = fused_compile._beside(path, "float32", "fused").stat().st_ino
    assert model._compiling.wait(timeout=240) == 0
    assert fused_compile._beside(path, "float32", "fused").stat().st_ino == marker, "not compiled again"


def test_no_background_compile_when_it_is_switched_off_or_cannot_start(fresh_cache, monkeypatch):
    graph = build_graph(load_spec_text(_spec(14), "xor14.yaml"))
    data = _data("xor", load_spec(SPECS / "xor.yaml"))
    monkeypatch.setenv(fused_compile.BACKGROUND_ENV, "0")
    model = Model(graph, seed=0, tier="auto", background=True)
    model.train_epoch(model.prepare(data), np.arange(len(data["x"])), seed=0)
    assert model.tier == PYTHON and model._compiling is None
    # no process to spare (fork fails with EAGAIN): the run goes on on the Python tier
    monkeypatch.setenv(fused_compile.BACKGROUND_ENV, "1")

    def no_process(*args, **kwargs):
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(fused_compile.subprocess, "Popen", no_process)
    model = Model(graph, seed=0, tier="auto", background=True)
    result = model.train_epoch(model.prepare(data), np.arange(len(data["x"])), seed=0)
    assert not result.diverged and model.tier == PYTHON and model._compiling is None


def test_a_compile_that_never_finished_leaves_no_marker(fresh_cache, monkeypatch):
    monkeypatch.setenv(fused_compile.BACKGROUND_ENV, "1")
    graph = build_graph(load_spec_text(_spec(15), "xor15.yaml"))
    model = Model(graph, seed=0, tier="auto", background=True)
    data = _data("xor", load_spec(SPECS / "xor.yaml"))
    prepared = model.prepare(data)
    model.train_epoch(prepared, np.arange(prepared["__count__"]), seed=0)
    model._compiling.kill()  # a machine that went down mid-compile
    model._compiling.wait(timeout=60)
    time.sleep(0.1)
    assert not fused_compile.ready(model.plan.module_path(FUSED), "float32")
    model.train_epoch(prepared, np.arange(prepared["__count__"]), seed=1)
    assert model.tier == PYTHON


def test_a_compile_that_fails_is_logged_and_not_tried_again(fresh_cache, monkeypatch):
    """Garbled argument types make the background compile raise: it writes its log and a `.failed`
    marker, and the next model of the plan does not start another one."""
    monkeypatch.setenv(fused_compile.BACKGROUND_ENV, "1")
    graph = build_graph(load_spec_text(_spec(16), "xor16.yaml"))
    data = _data("xor", load_spec(SPECS / "xor.yaml"))
    model = Model(graph, seed=0, tier="auto", background=True)
    real_dumps = fused_compile.pickle.dumps
    monkeypatch.setattr(fused_compile.pickle, "dumps", lambda types: real_dumps(("not", "types")))
    prepared = model.prepare(data)
    model.train_epoch(prepared, np.arange(prepared["__count__"]), seed=0)
    assert model._compiling.wait(timeout=120) != 0
    path = model.plan.module_path(FUSED)
    assert fused_compile.failed(path, "float32") and not fused_compile.ready(path, "float32")
    log = path.with_name(f"{path.stem}.float32.{fused_compile.machine_tag()}.log").read_text()
    assert "Traceback" in log, "the error is kept for whoever looks"
    again = Model(graph, seed=0, tier="auto", background=True)
    again.train_epoch(again.prepare(data), np.arange(prepared["__count__"]), seed=0)
    assert again._compiling is None and again.tier == PYTHON


# convs without a fused pool, strided and padded, and with one; a batch of 7 (chunks of unequal size)
TWINS = """
netc: 1
name: twins
inputs:
  img: {shape: [2, 9, 9]}
  y: {shape: [], dtype: int64, classes: 3}
layers:
  - {name: c1, op: conv2d, filters: 4, kernel: 3, stride: 2, padding: 1}
  - {name: t1, op: tanh}
  - {name: c2, op: conv2d, filters: 5, kernel: 2}
  - {name: r2, op: relu}
  - {name: p2, op: maxpool2d, kernel: 2}
  - {name: flat, op: flatten}
  - {name: fc, op: linear, out: 3}
loss: {op: cross_entropy, input: fc, target: y}
optimizer: {type: adam, lr: 0.01}
train: {batch: 7}
"""


def test_serial_twins_give_the_parallel_kernels_numbers_and_give_way_to_them(monkeypatch):
    """A first run on a machine runs the parallel kernels' serial twins (half the compile) until the
    parallel kernels are compiled, then moves to them: the same numbers as parallel kernels throughout."""
    from netc.compiler import kernel_library
    from netc.kernels.conv import conv_backward, conv_forward

    graph = build_graph(load_spec_text(TWINS, "twins.yaml"))
    rng = np.random.default_rng(0)
    data = {"img": rng.normal(size=(40, 2, 9, 9)), "y": rng.integers(0, 3, 40)}
    monkeypatch.setenv(fused_compile.BACKGROUND_ENV, "1")
    compiled = {"now": False}

    class Elsewhere:  # the background compile of the parallel kernels, running until `compiled`
        def poll(self):
            return 0 if compiled["now"] else None

    monkeypatch.setattr(fused_compile, "start", lambda *args: Elsewhere())
    monkeypatch.setattr(kernel_library, "missing", lambda entries: [] if compiled["now"] else
                        [entry for entry in entries if kernel_library.is_parallel(entry)])
    model = Model(graph, seed=0, tier="auto", background=True)
    assert model.tier == PYTHON
    model.warm_up()
    assert {name for _, name, _ in model._waiting} == {"conv_forward", "conv_backward"}
    prepared = model.prepare(data)
    orders = [np.random.default_rng(e).permutation(40) for e in range(3)]
    model.train_epoch(prepared, orders[0], seed=0)
    namespace = vars(model.plan.module)
    assert namespace["conv_forward"] is conv_forward.serial and namespace["conv_backward"] is conv_backward.serial
    model.train_epoch(prepared, orders[1], seed=1)
    compiled["now"] = True  # the background process marked them ready
    model.train_epoch(prepared, orders[2], seed=2)
    assert model._waiting == [] and namespace["conv_forward"] is conv_forward
    assert model.tier == PYTHON
    # a background compile that ended without compiling them (killed, failed): the run stops waiting,
    # and the parallel kernels compile here on their first call
    compiled["now"] = False
    stuck = Model(graph, seed=0, tier="auto", background=True)
    stuck.warm_up()
    assert stuck._waiting
    stuck.train_epoch(stuck.prepare(data), orders[0], seed=0)
    stuck._compiling = type("Ended", (), {"poll": lambda self: -9})()
    stuck.train_epoch(stuck.prepare(data), orders[1], seed=1)
    assert stuck._waiting == [] and vars(stuck.plan.module)["conv_forward"] is conv_forward

    monkeypatch.undo()
    parallel = Model(graph, seed=0, tier=PYTHON)
    fused = Model(graph, seed=0, tier=FUSED)
    for other in (parallel, fused):
        ready = other.prepare(data)
        for epoch, order in enumerate(orders):
            other.train_epoch(ready, order, seed=epoch)
        for key, value in other.get_weights().items():
            np.testing.assert_array_equal(model.get_weights()[key], value, err_msg=key)


def test_a_gradient_check_runs_the_serial_twins_of_kernels_not_compiled(monkeypatch):
    """`netc gradcheck` runs a few float64 samples, which the cores would not speed up: it runs the
    serial twins of the parallel kernels this machine has not compiled (an LSTM's check compiled
    6.6 s instead of 13.6), and the parallel kernels once they are compiled. The same numbers."""
    from netc.compiler import kernel_library
    from netc.kernels.conv import conv_backward, conv_forward
    from netc.runtime import gradcheck as check

    graph = build_graph(load_spec_text(TWINS, "twins.yaml"))
    bound = []
    real_loss_and_gradients = Model.loss_and_gradients

    def spy(model, *args, **kwargs):
        namespace = vars(model.module)
        bound.append((namespace["conv_forward"], namespace["conv_backward"]))
        return real_loss_and_gradients(model, *args, **kwargs)

    monkeypatch.setattr(Model, "loss_and_gradients", spy)
    compiled = {"now": False}
    monkeypatch.setattr(kernel_library, "missing", lambda entries: [] if compiled["now"] else
                        [entry for entry in entries if kernel_library.is_parallel(entry)])
    twins = check.gradcheck(graph, max_entries=2)
    assert set(bound) == {(conv_forward.serial, conv_backward.serial)}
    bound.clear()
    compiled["now"] = True
    assert check.gradcheck(graph, max_entries=2) == twins
    assert set(bound) == {(conv_forward, conv_backward)}


def test_compile_workers_share_the_work_and_leave(fresh_cache, monkeypatch):
    """Workers started early (a first run) and started on demand take one job after another; a worker
    that dies leaves its entries unmarked (compiled on first call) without stopping the others; none
    is left running."""
    from netc.compiler import kernel_library

    kernel_library.start_early()  # an empty cache: a first run on this machine
    early = list(kernel_library._early)
    assert len(early) == kernel_library.PROCESSES
    entries = [entry for name in ("seed_rng", "stage_labels", "copy_rows") for entry in _entries_of("xor", name)]
    assert kernel_library.compile_missing(entries) == [] and kernel_library.missing(entries) == []
    # nobody waits for their exit, but they leave by themselves once their stdin closes
    assert all(worker.wait(timeout=60) == 0 for worker in early) and kernel_library._early == []
    # a worker that dies at its first job
    real = kernel_library._start_workers

    def one_broken(count):
        workers = real(count)
        workers[0].kill()
        return workers

    monkeypatch.setattr(kernel_library, "_start_workers", one_broken)
    more = _entries_of("xor", "adam_update") + _entries_of("xor", "confusion_add")
    assert len(more) == 2
    left = kernel_library.compile_missing(more)
    assert len(left) <= 1 and set(left) <= set(more)  # the living worker compiled the rest
    kernel_library.start_early()  # the cache has kernels now: no early start
    assert kernel_library._early == []


def test_the_largest_compiles_are_handed_out_first():
    """A kernel's compile cost counts the activations it calls (linear_forward's are larger than its own
    code) and a prange region twice, so the two workers end together instead of one waiting on a
    linear kernel handed out last."""
    from netc.compiler import kernel_library

    entries = {entry[1]: entry for entry in Model(build_graph(load_spec(SPECS / "digits-cnn.yaml")),
                                                  tier=PYTHON).kernels_called()}
    cost = {name: kernel_library._cost(entry) for name, entry in entries.items()}
    own = len(kernel_library.dispatcher(entries["linear_forward"]).py_func.__code__.co_code)
    assert cost["linear_forward"] > 2 * own  # bias_act, act_value and the parametrised activations
    assert cost["conv_backward"] > cost["linear_backward"] > cost["cross_entropy"] > cost["stage_rows"]
    serial = entries["conv_backward"][:1] + ("conv_backward.serial",) + entries["conv_backward"][2:]
    assert cost["conv_backward"] == 2 * kernel_library._cost(serial)


def test_a_kernel_another_process_is_compiling_is_waited_for_not_compiled_again(fresh_cache):
    """Two processes compiling the same kernel (two runs, two test workers on an empty cache): the second
    takes the kernels nobody holds first, then waits for the one held, and compiles it only if the holder
    did not (here it did: the waiting process compiles nothing)."""
    import fcntl
    import pickle
    import subprocess
    import sys

    from netc import compiled
    from netc.codecache import numba_cache_dir

    held, free = _entries_of("xor", "adam_update"), _entries_of("xor", "confusion_add")
    folder = numba_cache_dir() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    child = """
import pickle, sys
from netc import compiled
entries = pickle.loads(sys.stdin.buffer.read())
print(compiled.compile_entries(entries), compiled.missing(entries) == [], flush=True)
"""
    with open(folder / f"{held[0][0]}.{held[0][1]}.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # this process is "compiling" adam_update
        process = subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   text=False, env={**os.environ, "NETC_CACHE_DIR": str(fresh_cache)})
        process.stdin.write(pickle.dumps(held + free))
        process.stdin.close()
        deadline = time.time() + 120
        while compiled.missing(free) and time.time() < deadline:  # the free kernel first
            time.sleep(0.1)
        assert compiled.missing(free) == [] and compiled.missing(held) == held
        time.sleep(0.5)
        assert process.poll() is None, "it waits for the held kernel"
        compiled.mark_ready(held)  # the holder's compile done (its machine code saved), then its lock dropped
    out = process.stdout.read()
    assert process.wait(timeout=120) == 0 and out.split() == [b"1", b"True"], out  # it compiled confusion_add only


def test_compile_lock_says_when_another_holds_it_and_gives_way_where_no_lock_can_be_taken(tmp_path):
    from netc.compiled import compile_lock

    path = tmp_path / "locks" / "k.lock"
    with compile_lock(path, wait=False) as first:
        assert first is True and path.exists()
        with compile_lock(path, wait=False) as second:  # another open file: as another process would hold it
            assert second is False
    with compile_lock(path, wait=False) as again:  # released with the first
        assert again is True
    (tmp_path / "a-file").write_text("")
    with compile_lock(tmp_path / "a-file" / "k.lock", wait=True) as unusable:  # no folder for the lock
        assert unusable is True, "compiles without a lock rather than not at all"


def _entries_of(spec: str, kernel: str) -> list:
    model = Model(build_graph(load_spec(SPECS / f"{spec}.yaml")), tier=PYTHON)
    return [entry for entry in model.kernels_called() if entry[1] == kernel]


_CACHED = '''
import numpy as np
from netc.jit import kernel

@kernel
def filled(x):
    return np.full(4, x)  # allocates: the loaded code needs Numba's runtime
'''
# counts Numba's target refreshes, calls the cached kernel, then compiles something new in-process
_LOAD_THEN_COMPILE = ("import sys; sys.path.insert(0, '.'); from numba.core import base; calls = []; "
                      "original = base.BaseContext.refresh; "
                      "base.BaseContext.refresh = lambda self: (calls.append(1), original(self))[1]; "
                      "import cached; print(cached.filled(2.0).tolist(), sum(cached.filled.stats.cache_misses.values()),"
                      " len(calls)); "
                      "from numba import njit; print(njit(lambda x: np.ones(2) * x)(3.0).tolist(), len(calls) > 0)")


def test_a_process_that_loads_cached_code_skips_numbas_refresh(tmp_path):
    """Loading cached machine code needs Numba's runtime, not its lowering registries (a 0.3 s
    refresh of the target context, netc.codecache); a compile later in the process still refreshes."""
    import subprocess
    import sys

    (tmp_path / "cached.py").write_text(_CACHED)
    env = {**os.environ, "NETC_CACHE_DIR": str(tmp_path / "cache")}
    command = [sys.executable, "-c", "import numpy as np; " + _LOAD_THEN_COMPILE]
    first = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0].startswith("[2.0, 2.0, 2.0, 2.0] 1 "), first.stdout  # compiled: a miss
    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == ["[2.0, 2.0, 2.0, 2.0] 0 0", "[3.0, 3.0] True"], second.stdout
