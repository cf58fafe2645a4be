"""Graph building and shape inference: reference specs, counts, shapes, and every graph error.

Error tests assert the code, a fragment of the message, the line (and column
where it means something) and the spec path. The YAML comments number the
lines of the inline specs.
"""

from __future__ import annotations

import tracemalloc

import pytest

from helpers import FILE, MLP, REFERENCE_SPECS, SPECS, build, check, codes, diagnostics, one_error, text_of
from netc.errors import SpecErrors
from netc.graph import build_graph
from netc.ops.base import numel
from netc.spec import load_spec, load_spec_text


IMG = text_of("""
    netc: 1                                                 # 1
    name: img                                               # 2
    inputs:                                                 # 3
      image: {shape: [1, 8, 8]}                             # 4
      label: {shape: [], dtype: int64, classes: 3}          # 5
    layers:                                                 # 6
      - {name: conv, op: conv2d, filters: 2, kernel: 3}     # 7
      - {name: flat, op: flatten}                           # 8
      - {name: fc, op: linear, out: 3}                      # 9
    loss: {op: cross_entropy, input: fc, target: label}     # 10
""")

PAIR = text_of("""
    netc: 1                                                 # 1
    name: pair                                              # 2
    inputs:                                                 # 3
      a: {shape: [4]}                                       # 4
      b: {shape: [4]}                                       # 5
      label: {shape: [], dtype: int64, classes: 3}          # 6
    layers:                                                 # 7
      - {name: enc_a, op: linear, in: a, out: 8}            # 8
      - {name: enc_b, op: linear, in: b, out: 8, share: enc_a}
      - {name: sum, op: add, in: [enc_a, enc_b]}            # 10
      - {name: head, op: linear, out: 3}                    # 11
    loss: {op: cross_entropy, input: head, target: label}   # 12
""")


def edit(old: str, new: str, text: str = MLP) -> str:
    """A spec with one fragment replaced (the line numbers stay the same)."""
    assert text.count(old) == 1, old
    return text.replace(old, new)


def reference(name: str):
    return build_graph(load_spec(SPECS / f"{name}.yaml"))


# --------------------------------------------------------------------------- reference specs


def test_there_are_reference_specs():
    assert {p.stem for p in REFERENCE_SPECS} >= {"lenet", "seed-mlp", "seed-cnn", "siamese", "finetune"}


@pytest.mark.parametrize("path", REFERENCE_SPECS, ids=lambda p: p.stem)
def test_every_reference_spec_builds(path):
    graph = build_graph(load_spec(path))
    graph.verify()
    assert graph.nodes and all(node.shape is not None for node in graph.nodes)
    assert graph.loss_input == graph.spec.losses[0].input
    assert graph.param_count() > 0 and graph.macs > 0


@pytest.mark.parametrize("name, params, macs", [
    ("lenet", 431_080, 2_293_000),
    ("seed-mlp", 39, 30),
    ("seed-cnn", 620_810, None),
    ("siamese", 2_210, None),
])
def test_param_counts(name, params, macs):
    graph = reference(name)
    assert graph.param_count() == params
    if macs is not None:
        assert graph.macs == macs


def test_lenet_shapes_of_every_layer():
    graph = reference("lenet")
    assert graph.inputs == {"image": (1, 28, 28), "label": ()}
    assert [(n.name, n.shape) for n in graph.nodes] == [
        ("conv1", (20, 24, 24)),
        ("pool1", (20, 12, 12)),
        ("conv2", (50, 8, 8)),
        ("pool2", (50, 4, 4)),
        ("flat", (800,)),
        ("fc1", (500,)),
        ("relu1", (500,)),
        ("fc2", (10,)),
    ]
    params = {n.name: n.param_shapes for n in graph.nodes if n.param_shapes}
    assert params == {
        "conv1": {"weight": (20, 1, 5, 5), "bias": (20,)},
        "conv2": {"weight": (50, 20, 5, 5), "bias": (50,)},
        "fc1": {"weight": (500, 800), "bias": (500,)},
        "fc2": {"weight": (10, 500), "bias": (10,)},
    }
    assert graph.shape_of("pool2") == (50, 4, 4) and graph.shape_of("image") == (1, 28, 28)
    assert [n.name for n in graph.consumers("fc1")] == ["relu1"]


def test_siamese_counts_the_shared_tensor_once():
    graph = reference("siamese")
    enc_a, enc_b = graph.by_name["enc_a"], graph.by_name["enc_b"]
    assert enc_b.owner == "enc_a" and enc_b.param_owner == "enc_a" and enc_a.owner is None
    assert enc_b.param_shapes == enc_a.param_shapes == {"weight": (32, 64), "bias": (32,)}
    assert [n.name for n in graph.owners] == ["enc_a", "head"]
    every_user = sum(numel(s) for n in graph.nodes for s in n.param_shapes.values())
    assert graph.param_count() == 2_210 == every_user - (32 * 64 + 32)


def test_finetune_trainable_and_frozen_counts():
    graph = reference("finetune")  # the digits-mlp body (fc1 64->256, fc2 256->128) frozen, a new head trained
    assert [n.name for n in graph.nodes if n.param_shapes and not n.trainable] == ["fc1", "fc2"]
    assert graph.by_name["head"].trainable is True
    assert graph.param_count(trainable=True) == 128 * 10 + 10 == 1_290
    assert graph.param_count(trainable=False) == (64 * 256 + 256) + (256 * 128 + 128) == 49_536
    assert graph.param_count() == 50_826


# --------------------------------------------------------------------------- wiring: inputs, order, sharing


def test_default_input_chaining():
    graph = build(MLP)
    assert [(n.name, n.inputs) for n in graph.nodes] == [("fc1", ["x"]), ("act", ["fc1"]), ("fc2", ["act"])]


def test_the_first_layer_reads_the_first_float_input():
    text = edit("  x: {shape: [4]}                                       # 4\n"
                "  label: {shape: [], dtype: int64, classes: 3}          # 5\n",
                "  label: {shape: [], dtype: int64, classes: 3}\n  x: {shape: [4]}\n")
    assert build(text).by_name["fc1"].inputs == ["x"]


def test_forward_references_give_a_topological_order():
    text = """
        netc: 1
        name: net
        inputs:
          x: {shape: [4]}
          label: {shape: [], dtype: int64, classes: 3}
        layers:
          - {name: head, op: linear, in: body, out: 3}
          - {name: body, op: relu, in: fc}
          - {name: fc, op: linear, in: x, out: 8}
          - {name: side, op: tanh}
          - {name: sum, op: add, in: [side, fc]}
          - {name: out, op: linear, in: [sum], out: 3}
          - {name: both, op: add, in: [head, out]}
        loss: {op: cross_entropy, input: both, target: label}
    """
    graph = build(text)
    graph.verify()
    order = [n.name for n in graph.nodes]
    assert order == ["fc", "body", "head", "side", "sum", "out", "both"]
    assert graph.by_name["side"].inputs == ["fc"]  # the previous layer in the spec, not in the order
    assert graph.by_name["head"].index == 0 and graph.by_name["head"].spec_path == ("layers", 0)
    assert graph.by_name["both"].shape == (3,)


def test_share_chains_collapse_to_the_first_owner():
    text = edit("  - {name: sum, op: add, in: [enc_a, enc_b]}            # 10\n",
                "  - {name: enc_c, op: linear, in: a, out: 8, share: enc_b}\n"
                "  - {name: sum, op: add, in: [enc_a, enc_b, enc_c]}\n", PAIR)
    graph = build(text)
    assert {n.name: n.owner for n in graph.nodes} == {
        "enc_a": None, "enc_b": "enc_a", "enc_c": "enc_a", "sum": None, "head": None}
    assert [n.name for n in graph.owners] == ["enc_a", "head"]
    assert graph.param_count() == (8 * 4 + 8) + (3 * 8 + 3)


def test_a_sharer_takes_the_owners_trainable_settings():
    text = edit("{name: enc_a, op: linear, in: a, out: 8}",
                "{name: enc_a, op: linear, in: a, out: 8, trainable: false}", PAIR)
    text = edit("share: enc_a}", "share: enc_a, trainable: false}", text)
    graph = build(text)
    assert graph.by_name["enc_b"].trainable is False
    assert graph.param_count(trainable=False) == 8 * 4 + 8


# --------------------------------------------------------------------------- names and references


def test_duplicate_layer_name():
    d = one_error(edit("{name: act, op: relu}", "{name: fc1, op: relu}"))
    check(d, "E-DUP-NAME", "duplicate layer name 'fc1' (first used by layers[0])", line=8, col=12,
          path="layers[1].name", hint="unique")


def test_layer_named_like_an_input():
    d = one_error(edit("{name: act, op: relu}", "{name: x, op: relu}"))
    check(d, "E-DUP-NAME", "layer name 'x' is already an input name", line=8, col=12, path="layers[1].name",
          hint="rename")


def test_unknown_input_with_did_you_mean():
    d = one_error(edit("{name: act, op: relu}", "{name: act, op: relu, in: fc1_}"))
    check(d, "E-REF", "unknown tensor 'fc1_'", line=8, col=31, path="layers[1].in",
          hint="did you mean 'fc1'? (inputs and layers: act, fc1, fc2, label, x)")


def test_unknown_input_in_a_list_points_at_the_item():
    d = one_error(edit("{name: act, op: relu}", "{name: act, op: add, in: [fc1, xx]}"))
    check(d, "E-REF", "unknown tensor 'xx'", line=8, col=36, path="layers[1].in[1]", hint="did you mean 'x'?")


def test_two_layer_cycle():
    d = one_error(edit("{name: fc1, op: linear, out: 8}", "{name: fc1, op: linear, out: 8, in: act}"))
    check(d, "E-CYCLE", "cycle: fc1 -> act -> fc1", line=7, col=41, path="layers[0].in",
          hint="cannot depend on its own output")


def test_three_layer_cycle():
    d = one_error(edit("{name: fc1, op: linear, out: 8}", "{name: fc1, op: linear, out: 8, in: fc2}"))
    check(d, "E-CYCLE", "cycle: fc1 -> fc2 -> act -> fc1", line=7, col=41, path="layers[0].in")


def test_self_reference():
    d = one_error(edit("{name: act, op: relu}", "{name: act, op: relu, in: act}"))
    check(d, "E-CYCLE", "layer 'act' reads its own output", line=8, col=31, path="layers[1].in")


def test_add_with_one_input():
    d = one_error(edit("{name: act, op: relu}", "{name: act, op: add, in: fc1}"))
    check(d, "E-ARITY", "add takes at least 2 input(s), got 1", line=8, col=30, path="layers[1].in",
          hint="in: [a, b]")


def test_add_with_the_default_input_points_at_the_layer():
    d = one_error(edit("{name: act, op: relu}", "{name: act, op: add}"))
    check(d, "E-ARITY", "add takes at least 2 input(s), got 1", line=8, col=5, path="layers[1]")


def test_linear_with_two_inputs():
    d = one_error(edit("{name: fc2, op: linear, out: 3}", "{name: fc2, op: linear, out: 3, in: [fc1, act]}"))
    check(d, "E-ARITY", "linear takes exactly 1 input(s), got 2", line=9, col=41, path="layers[2].in")


# --------------------------------------------------------------------------- sharing errors


def test_share_with_an_unknown_layer():
    d = one_error(edit("share: enc_a", "share: enc_x", PAIR))
    check(d, "E-SHARE", "layer 'enc_b' shares with unknown layer 'enc_x'", line=9, col=53, path="layers[1].share",
          hint="did you mean 'enc_a'? (linear layers: enc_a, head)")


def test_share_with_a_different_op():
    d = one_error(edit("share: enc_a", "share: sum", PAIR))
    check(d, "E-SHARE", "layer 'enc_b' (linear) cannot share with 'sum' (add)", line=9, col=53,
          path="layers[1].share", hint="same op")


def test_share_with_different_shapes_names_both_layers_and_shapes():
    d = one_error(edit("b: {shape: [4]}", "b: {shape: [5]}", PAIR))
    check(d, "E-SHARE", "layer 'enc_b' shares with 'enc_a' but their parameters differ: "
          "weight [8, 5], bias [8] vs weight [8, 4], bias [8]", line=9, col=53, path="layers[1].share",
          hint="same input size")


def test_share_with_a_different_out_reports_only_the_share():
    # enc_b's [9] output would also break the add: that is a consequence, not a second mistake
    d = one_error(edit("out: 8, share: enc_a", "out: 9, share: enc_a", PAIR))
    check(d, "E-SHARE", "weight [9, 4], bias [9] vs weight [8, 4], bias [8]", line=9, path="layers[1].share")


def test_share_with_a_different_trainable():
    d = one_error(edit("share: enc_a", "share: enc_a, trainable: false", PAIR))
    check(d, "E-SHARE", "layer 'enc_b' shares with 'enc_a' but sets a different trainable/lr_mult", line=9,
          col=53, path="layers[1].share", hint="set trainable/lr_mult on the owner")


def test_share_with_itself():
    d = one_error(edit("share: enc_a", "share: enc_b", PAIR))
    check(d, "E-SHARE", "layer 'enc_b' shares with itself", line=9, col=53, path="layers[1].share")


def test_share_with_a_later_layer():
    d = one_error(edit("share: enc_a", "share: head", PAIR))
    check(d, "E-SHARE", "layer 'enc_b' shares with 'head', which runs after it", line=9, col=53,
          path="layers[1].share", hint="put `share: enc_b` on 'head'")


# --------------------------------------------------------------------------- shapes and types


@pytest.mark.parametrize("op", ["add", "mul", "stack"])
def test_merges_of_different_shapes(op):
    text = """
        netc: 1
        name: net
        inputs:
          a: {shape: [4]}
          b: {shape: [3]}
          label: {shape: [], dtype: int64, classes: 3}
        layers:
          - {name: sum, op: OP, in: [a, b]}
          - {name: flat, op: flatten}
          - {name: head, op: linear, out: 3}
        loss: {op: cross_entropy, input: head, target: label}
    """.replace("OP", op)
    col = text.splitlines()[8].index("[a, b]") + 1 - 8  # the spec's lines are indented by 8 here
    check(one_error(text), "E-SHAPE", f"{op} 'sum': got [4] and [3]", line=8, col=col, path="layers[0].in",
          hint=f"every input of {op} must have the same shape (no broadcasting)")


def test_stack_axis_beyond_the_new_rank():
    text = """
        netc: 1
        name: net
        inputs:
          a: {shape: [4]}
          label: {shape: [], dtype: int64, classes: 3}
        layers:
          - {name: st, op: stack, in: [a, a], axis: 2}
          - {name: flat, op: flatten}
          - {name: head, op: linear, out: 3}
        loss: {op: cross_entropy, input: head, target: label}
    """
    check(one_error(text), "E-SHAPE", "stack 'st': axis 2 is out of range for inputs of rank 1 (the new axis goes "
          "at 0..1)", line=7, col=45, path="layers[0].axis")


@pytest.mark.parametrize("kernel, shown", [("9", "9x9"), ("[3, 9]", "3x9")])
def test_kernel_larger_than_its_input(kernel, shown):
    d = one_error(edit("kernel: 3}", f"kernel: {kernel}}}", IMG))
    check(d, "E-SHAPE", f"conv2d 'conv': kernel {shown} is larger than its input 8x8", line=7, col=50,
          path="layers[0].kernel", hint="smaller kernel")


def test_linear_on_an_unflattened_image_hints_flatten():
    d = one_error(edit("{name: flat, op: flatten}", "{name: flat, op: relu}", IMG))
    check(d, "E-SHAPE", "linear 'fc': needs a flat input [features] or a sequence [T, features], got [2, 6, 6]", line=9, col=5,
          path="layers[2]", hint="flatten")


def test_reshape_mismatch():
    d = one_error(edit("{name: flat, op: flatten}", "{name: flat, op: reshape, shape: [7, 10]}", IMG))
    check(d, "E-SHAPE", "cannot reshape [2, 6, 6] (72 values) into [7, 10] (70 values)", line=8, col=38,
          path="layers[1].shape")


def test_reshape_with_two_unknowns():
    d = one_error(edit("{name: flat, op: flatten}", "{name: flat, op: reshape, shape: [-1, -1]}", IMG))
    check(d, "E-SHAPE", "at most one -1", line=8, col=38, path="layers[1].shape")


def test_reshape_infers_its_unknown_size():
    graph = build(edit("{name: flat, op: flatten}", "{name: flat, op: reshape, shape: [-1]}", IMG))
    assert graph.by_name["flat"].shape == (72,)


def test_concat_mismatch():
    d = one_error(edit("{name: flat, op: flatten}", "{name: flat, op: concat, in: [conv, image]}", IMG))
    check(d, "E-SHAPE", "on axis 0 got [2, 6, 6] and [1, 8, 8]", line=8, col=34, path="layers[1].in",
          hint="every axis but 0")


def test_softmax_on_an_image():
    d = one_error(edit("{name: flat, op: flatten}", "{name: flat, op: softmax}", IMG))
    check(d, "E-SHAPE", "softmax 'flat': works over a feature vector, got [2, 6, 6]", line=8, col=5,
          path="layers[1]", hint="flatten")


def test_a_layer_reading_the_label():
    d = one_error(edit("{name: act, op: relu}", "{name: act, op: relu, in: label}"))
    check(d, "E-TYPE", "relu 'act' reads the integer label input 'label'", line=8, col=31, path="layers[1].in",
          hint="only read by the loss")


# --------------------------------------------------------------------------- loss


def test_classes_and_logits_disagree():
    d = one_error(edit("{name: fc2, op: linear, out: 3}", "{name: fc2, op: linear, out: 4}"))
    check(d, "E-LOSS", "cross_entropy input 'fc2' has shape [4] but target 'label' has 3 classes", line=10,
          col=34, path="loss.input", hint="[3] values")


def test_cross_entropy_on_a_float_target():
    d = one_error(edit("label: {shape: [], dtype: int64, classes: 3}", "label: {shape: [3]}"))
    check(d, "E-LOSS", "cross_entropy needs an int64 label target, 'label' is float32", line=10, col=47,
          path="loss.target", hint="dtype: int64")


def test_nll_not_after_log_softmax():
    d = one_error(edit("op: cross_entropy", "op: nll"))
    check(d, "E-LOSS", "nll reads log-probabilities but 'fc2' is a linear", line=10, col=24, path="loss.input",
          hint="log_softmax")


def test_nll_after_log_softmax_builds():
    text = edit("{name: fc2, op: linear, out: 3}", "{name: fc2, op: log_softmax}", edit("out: 8}", "out: 3}"))
    assert build(edit("op: cross_entropy", "op: nll", text)).by_name["fc2"].shape == (3,)


def test_cross_entropy_after_softmax():
    text = edit("{name: fc2, op: linear, out: 3}", "{name: fc2, op: softmax}", edit("out: 8}", "out: 3}"))
    check(one_error(text), "E-LOSS", "cross_entropy applies softmax itself but 'fc2' is a softmax", line=10,
          col=34, path="loss.input", hint="feed the logits")


def test_mse_shape_mismatch():
    text = edit("label: {shape: [], dtype: int64, classes: 3}", "label: {shape: [4]}", edit("cross_entropy", "mse"))
    check(one_error(text), "E-LOSS", "mse input 'fc2' has shape [3] but target 'label' has [4]", line=10, col=37,
          path="loss.target")


def test_mse_on_one_hot_labels_builds():
    assert build(edit("op: cross_entropy", "op: mse")).loss_target == "label"


def test_loss_input_unknown():
    d = one_error(edit("input: fc2", "input: fc3"))
    check(d, "E-REF", "loss input 'fc3' is not a layer", line=10, col=34, path="loss.input",
          hint="did you mean 'fc2'?")


def test_loss_input_is_an_input():
    d = one_error(edit("input: fc2", "input: x"))
    check(d, "E-REF", "loss input 'x' is not a layer", line=10, col=34, path="loss.input",
          hint="the loss reads a layer's output")


def test_loss_target_unknown_is_the_only_error():
    # the real label is then unused: a consequence, not reported
    d = one_error(edit("target: label", "target: lable"))
    check(d, "E-REF", "loss target 'lable' is not an input", line=10, col=47, path="loss.target",
          hint="did you mean 'label'?")


# --------------------------------------------------------------------------- dead parts


def test_layer_not_reaching_the_loss():
    text = edit("{name: fc2, op: linear, out: 3}", "{name: fc2, op: linear, out: 3}\n  - {name: extra, op: relu, in: fc1}")
    check(one_error(text), "E-DEAD", "layer 'extra' does not lead to the loss", line=10, col=5, path="layers[3]",
          hint="the loss reads 'fc2'")


def test_unused_input_points_at_its_key():
    text = edit("x: {shape: [4]}", "x: {shape: [4]}\n  y: {shape: [2]}")
    check(one_error(text), "E-DEAD", "input 'y' is never used", line=5, col=3, path="inputs.y")


# --------------------------------------------------------------------------- memory


HUGE = text_of("""
    netc: 1                                                 # 1
    name: huge                                              # 2
    inputs:                                                 # 3
      x: {shape: [1000000]}                                 # 4
      label: {shape: [], dtype: int64, classes: 3}          # 5
    layers:                                                 # 6
      - {name: fc1, op: linear, out: 1000000000}            # 7
      - {name: fc2, op: linear, out: 3}                     # 8
    loss: {op: cross_entropy, input: fc2, target: label}    # 9
    train: {batch: 8}                                       # 10
""")


def test_enormous_layers_are_refused_before_anything_is_allocated():
    tracemalloc.start()
    try:
        d = one_error(HUGE)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    check(d, "E-MEMORY", "one training step needs about", line=10, col=16, path="train.batch",
          hint="lower train.batch")
    assert "PiB" in d.message and "(batch 8)" in d.message
    assert peak < 50 * 1024 * 1024  # nothing near the 4 PB the spec asks for


def test_the_memory_check_can_be_left_out():
    graph = build_graph(load_spec_text(HUGE, FILE), check_memory_for_batch=False)
    assert graph.param_count() == 1_000_000 * 1_000_000_000 + 1_000_000_000 + 3 * 1_000_000_000 + 3


def test_sizes_beyond_a_float_are_still_reported():
    d = one_error(edit("out: 1000000000}", "out: 1" + "0" * 400 + "}", HUGE))
    check(d, "E-MEMORY", "needs about 2^1", line=10, path="train.batch")


# --------------------------------------------------------------------------- collecting errors


def test_errors_of_several_layers_are_collected():
    text = """
        netc: 1
        name: net
        inputs:
          a: {shape: [4]}
          b: {shape: [3]}
          image: {shape: [1, 8, 8]}
          label: {shape: [], dtype: int64, classes: 3}
        layers:
          - {name: s, op: add, in: [a, b]}
          - {name: c, op: conv2d, in: image, filters: 2, kernel: 9}
          - {name: f, op: flatten}
          - {name: j, op: concat, in: [s, f]}
          - {name: head, op: linear, out: 4}
        loss: {op: cross_entropy, input: head, target: label}
    """
    found = diagnostics(text)
    # f, j, head and the loss depend on the two mistakes and are not reported
    assert codes(found) == [("E-SHAPE", 9), ("E-SHAPE", 10)]
    check(found[0], "E-SHAPE", "add 's'", line=9, path="layers[0].in")
    check(found[1], "E-SHAPE", "conv2d 'c'", line=10, path="layers[1].kernel")


def test_name_and_reference_errors_are_collected():
    text = """
        netc: 1
        name: net
        inputs:
          x: {shape: [4]}
          label: {shape: [], dtype: int64, classes: 3}
        layers:
          - {name: fc1, op: linear, out: 8, in: xx}
          - {name: fc1, op: relu}
          - {name: sum, op: add, in: [fc1, nope]}
          - {name: fc2, op: linear, out: 3, in: [sum, x]}
        loss: {op: cross_entropy, input: fc2, target: label}
    """
    assert codes(diagnostics(text)) == [("E-DUP-NAME", 8), ("E-REF", 7), ("E-REF", 9), ("E-ARITY", 10)]


def test_a_shape_error_is_not_repeated_downstream():
    text = edit("{name: flat, op: flatten}", "{name: flat, op: softmax}", IMG)
    found = diagnostics(text)
    assert codes(found) == [("E-SHAPE", 8)]  # not fc (reads flat), not the loss (reads fc)


def test_build_raises_spec_errors():
    with pytest.raises(SpecErrors) as caught:
        build(edit("op: relu", "op: relu, in: nope"))
    assert "spec.yaml:8:" in str(caught.value) and "error[E-REF]" in str(caught.value)
