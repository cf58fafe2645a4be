"""The generated plan module reads like hand-written code: each function binds the views it uses
to named locals with what they hold and their shape
(`fc1_weight = fixed_view(V[5], (500, 800))  # P: fc1.weight [500, 800]`: compiled, a view whose
shape the compiler knows), and the kernel calls name their arguments. The source tests compile
nothing; the run tests check that a plan written this way trains to the numbers recorded from the
positional `V[k]` code."""

from __future__ import annotations

import ast
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REFERENCE_CPU
from rich.console import Console

from netc.compiler import compile_graph
from netc.compiler.codegen import MAX_KEYWORDS, ViewTable, kernel_parameters
from netc.compiler.describe import plan_renderable
from netc.compiler.module import generate_timing_source
from netc.graph import build_graph
from netc.spec import load_spec

SPECS = Path(__file__).resolve().parent.parent / "specs"
BINDING = re.compile(r"^    (\w+) = (?:fixed_view\(V\[(\d+)\], \(([\d, ]+?),?\)\)|V\[(\d+)\]) +"
                     r"# ([PGSADIWLTH]): (.+) \[([\d, ]*)\]$")


def plan_of(name: str, batch: int | None = None):
    return compile_graph(build_graph(load_spec(SPECS / f"{name}.yaml")), batch)


def functions(source: str) -> dict[str, tuple[ast.FunctionDef, list[str]]]:
    """Every function of a generated module: its tree and its source lines."""
    lines = source.splitlines()
    return {node.name: (node, lines[node.lineno - 1:node.end_lineno])
            for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)}


def check_function(name: str, node: ast.FunctionDef, lines: list[str], views: ViewTable) -> dict[str, int]:
    """The function opens with its bindings, each `name = fixed_view(V[k], shape)  # arena: what
    [shape]` (a 0-d view: `name = V[k]`) matching the view table; binds each name once and only names
    it uses; reads V nowhere else."""
    bound: dict[str, int] = {}
    for statement in node.body:
        value = statement.value if isinstance(statement, ast.Assign) else None
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "fixed_view":
            value = value.args[0]
        if not (isinstance(value, ast.Subscript) and isinstance(value.value, ast.Name) and value.value.id == "V"):
            break
        line = lines[statement.lineno - node.lineno]
        match = BINDING.match(line)
        assert match, f"{name}: binding without a comment of what it holds and its shape: {line!r}"
        local, k = match.group(1), int(match.group(2) or match.group(4))
        assert local not in bound, f"{name}: {local} bound twice"
        assert local.isidentifier() and local in views.names, local
        arena, _, shape = views.entries[k]
        dims = ", ".join(str(s) for s in shape)
        assert views.names[local] == (k, match.group(6)), line
        assert (match.group(5), match.group(7)) == (arena, dims), line
        assert (match.group(3) or "") == dims, f"{name}: the view's fixed shape is not its table shape: {line!r}"
        bound[local] = k
    rest = node.body[len(bound):]
    subscripts = [n for s in rest for n in ast.walk(s)
                  if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name) and n.value.id == "V"]
    assert not subscripts, f"{name}: V[...] read outside the bindings: {[ast.unparse(s) for s in subscripts]}"
    used = {n.id for s in rest for n in ast.walk(s) if isinstance(n, ast.Name)}
    assert set(bound) <= used, f"{name}: binds views it never uses: {set(bound) - used}"
    assert not (used & set(views.names)) - set(bound), f"{name}: uses unbound views"
    return bound


def kernel_calls(node: ast.FunctionDef) -> list[ast.Call]:
    return [n for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
            and n.func.id.endswith(("_forward", "_backward", "_update", "_into", "_pass", "forward2"))]


@pytest.mark.parametrize("name", ["xor", "digits-cnn", "digits-cnn-bn", "siamese", "residual"])
def test_every_function_binds_named_views_with_shape_comments(name):
    plan = plan_of(name)
    found = functions(plan.source)
    assert {"forward", "loss", "backward", "epoch"} <= set(found)
    for fname, (node, lines) in found.items():
        check_function(fname, node, lines, plan.views)
    # names are unique in the plan: one name per (view, what it holds)
    assert len(set(plan.views.names.values())) == len(plan.views.names)


@pytest.mark.parametrize("name", ["xor", "digits-cnn"])
def test_timing_module_binds_the_plans_own_views(name):
    plan = plan_of(name)
    known = dict(plan.views.names)
    found = functions(generate_timing_source(plan))
    assert list(found) == ["run"]  # one function: compiled once (see generate_timing_source)
    branches = [line.split("index == ")[1] for line in found["run"][1] if "if index == " in line]
    assert branches == [f"{i}:" for i in range(len(plan.steps))] + [f"{i}:" for i in reversed(range(len(plan.steps)))]
    for fname, (node, lines) in found.items():
        check_function(fname, node, lines, plan.views)
    assert plan.views.names == known, "the timing module names no new views"


def test_kernel_calls_name_their_arguments():
    plan = plan_of("digits-cnn")
    found = functions(plan.source)
    calls = [call for node, _ in found.values() for call in kernel_calls(node)]
    assert calls
    for call in calls:
        params = kernel_parameters(call.func.id)
        if len(params) <= MAX_KEYWORDS:
            assert not call.args and [k.arg for k in call.keywords] == list(params), ast.unparse(call)
        else:  # conv_backward: positional, under a comment naming the parameters
            assert not call.keywords and len(call.args) == len(params)
    text = plan.source
    assert "linear_forward(x=flat_out[:n], w=fc1_weight, b=fc1_bias, has_bias=B(True)," in text
    assert "    conv1_weight = fixed_view(V[" in text and "], (16, 9))" in text and "# P: conv1.weight [16, 9]" in text
    assert "# conv_backward(x, w, y, dy, arg," in text
    assert "adam_update(p=fc2_weight_flat, g=fc2_weight_flat_grad, m=fc2_weight_m, v=fc2_weight_v," in text


def test_view_names_are_unique_and_never_shadow_the_modules_names():
    views = ViewTable(4, reserved=("scores",))
    a = views.ref("A", 0, (4, 3), "fc1_out", "fc1 output")
    assert a == "fc1_out" and views.ref("A", 0, (4, 3), "fc1_out", "fc1 output") == a
    # the same tensor in another shape, then something else at the same place
    assert views.ref("A", 0, (4, 1, 3), "fc1_out", "fc1 output") == "fc1_out_1x3"
    assert views.ref("A", 0, (4, 3), "drop_out", "drop output") == "drop_out"
    # kernels, module names, the epoch's locals and keywords are never view names
    assert views.ref("P", 0, (2,), "linear_forward", "x") == "linear_forward_2"
    assert views.ref("A", 8, (4, 2), "scores", "y") == "scores_2"
    assert views.ref("A", 16, (4, 2), "n", "z") == "n_2"
    assert views.ref("W", 0, (5,), "lambda", "w") == "lambda_5"
    assert [k for k, _ in views.names.values()] == [0, 1, 0, 2, 3, 4, 5]


def test_tiny_plan_inlines_its_kernels_and_names_its_views():
    source = plan_of("xor").source
    assert "from netc.jit import fixed_view, tiny_plan_function as plan_function" in source
    assert "    hidden_weight = fixed_view(V[" in source and "linear_forward(x=x_in[:n], w=hidden_weight," in source


def _epoch_calls(source: str) -> list[str]:
    """The kernels the epoch loop's training branch calls, in order."""
    tree, _ = functions(source)["epoch"]
    return [node.func.id for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.endswith(("_backward",
                                                                                                        "_update"))]


def test_a_tiny_plan_updates_its_parameters_after_every_gradient():
    """A tiny plan's updates follow the last backward kernel (an update read its gradient straight after
    the stores that wrote it: module.Bodies.backward_body); a larger plan's each follow their layer's
    gradient. The numbers are the same either way (xor's recorded loss below, a tiny plan)."""
    tiny = _epoch_calls(plan_of("xor").source)
    assert tiny[:2] == ["linear_backward", "linear_backward"] and set(tiny[2:]) == {"adam_update"}
    larger = _epoch_calls(plan_of("digits-cnn").source)
    first_update = next(i for i, name in enumerate(larger) if name.endswith("_update"))
    assert first_update < max(i for i, name in enumerate(larger) if name.endswith("_backward"))
    assert "adam update fused after every gradient" in _plan_text(plan_of("xor"))  # `netc inspect --plan` says so
    assert "update fused after each tensor's gradient" in _plan_text(plan_of("digits-cnn"))


def _plan_text(plan) -> str:
    console = Console(width=400, record=True, file=io.StringIO())
    console.print(plan_renderable(plan, show_source=False))
    return console.export_text()


# -------------------------------------------------------------------------- compiled

# The first epoch's mean loss (float.hex) of each spec, recorded from the plan written with
# positional `V[k]` arguments before the views had names: the same numbers, bit for bit (the CNN's
# recorded again on 2 cores when a conv pass went from one chunk per core to two, netc.pool). Trained in
# a process with the docs pages' library settings (helpers.REFERENCE_CPU: OpenBLAS's Haswell kernels):
# with the CPU's own, OpenBLAS's sums of the CNN's GEMMs differ in the last bits (an AVX-512 machine read
# 1.78813851199... for 1.78813850699...).
RECORDED = {"xor": "0x1.70f1462071902p-1", "digits-cnn": "0x1.c9c371f8450d3p+0"}

_TRAIN_ONE_EPOCH = """
import sys
import numpy as np
from netc.graph import build_graph
from netc.runtime.data import load_train_eval
from netc.runtime.model import Model
from netc.spec import load_spec
loaded = load_spec(sys.argv[1])
model = Model(build_graph(loaded))
train, _ = load_train_eval(loaded)
prepared = model.prepare(train.arrays)
order = np.random.default_rng(0).permutation(prepared["__count__"])
print(model.train_epoch(prepared, order, seed=1).loss.hex())
"""


@pytest.mark.compiled
@pytest.mark.parametrize("name", sorted(RECORDED))
def test_named_plan_trains_to_the_recorded_loss(name):
    done = subprocess.run([sys.executable, "-c", _TRAIN_ONE_EPOCH, str(SPECS / f"{name}.yaml")], capture_output=True,
                          text=True, timeout=600, env={**os.environ, **REFERENCE_CPU, "NUMBA_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == RECORDED[name]


@pytest.mark.compiled
def test_an_order_the_loop_cannot_read_is_refused_before_it_runs():
    """The compiled loop reads `order[i]` and row `order[i]` unchecked: a short order, or a row past the
    prepared arrays, read outside them (a segmentation fault). train_epoch refuses both, weights untouched."""
    from netc.runtime.data import load_train_eval
    from netc.runtime.model import Model

    loaded = load_spec(SPECS / "xor.yaml")
    model = Model(build_graph(loaded))
    prepared = model.prepare(load_train_eval(loaded)[0].arrays)
    count = prepared["__count__"]
    before = model.V[1].copy()
    with pytest.raises(ValueError, match=f"needs {count} row numbers"):
        model.train_epoch(prepared, np.arange(count // 2))
    with pytest.raises(ValueError, match=f"needs {count} row numbers"):
        model.train_epoch(prepared, np.arange(count).reshape(1, count))
    with pytest.raises(ValueError, match=rf"outside \[0, {count}\)"):
        model.train_epoch(prepared, np.arange(count) + 1)
    with pytest.raises(ValueError, match="outside"):
        model.train_epoch(prepared, np.arange(count) - 1)
    assert np.array_equal(model.V[1], before)
    assert model.train_epoch(prepared, np.arange(count)[::-1]).batches > 0  # any permutation, any stride
