"""Blocks and repeat in the spec language (`blocks:`, `{op: block, block: ..., repeat: N, share: true}`).

- unrolling: layer, tensor and parameter names (`b1.conv1`, `res.0.fc1.weight`), the instance's
  output tensor `<instance>`, the place of each node in the spec, sharing with `share: true`;
- errors: of the instance layer (unknown block, inputs, repeat, recursion, size) and inside an
  instance (located in the block's definition, naming the instance, once per repeat);
- `netc inspect`: folded by default, `--expand`, JSON with every layer;
- compiled (float64): `repeat: 3, share: true` gives the loss and gradients of the same spec
  unrolled by hand with `share:`; own weights give those of the hand-unrolled spec without it;
  gradcheck; a few epochs of training on the Python tier; the checkpoint loads into a PyTorch
  module tree (where torch is installed).

The YAML comments number the lines of the inline specs.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from helpers import SPECS, build, check, codes, diagnostics, one_error, text_of
from netc.cli.app import app
from netc.graph import build_graph
from netc.report import spec_schema, summarize, summary_dict, table_rows
from netc.runtime.init import initial_values
from netc.spec import load_spec, load_spec_text
from netc.spec.blocks import MAX_DEPTH, MAX_LAYERS

runner = CliRunner(env={"FORCE_COLOR": None, "TTY_COMPATIBLE": None, "TTY_INTERACTIVE": None, "COLUMNS": None})

RES = text_of("""
    netc: 1                                                    # 1
    name: res                                                  # 2
    inputs:                                                    # 3
      x: {shape: [4]}                                          # 4
      label: {shape: [], dtype: int64, classes: 3}             # 5
    blocks:                                                    # 6
      resblock:                                                # 7
        inputs: [h]                                            # 8
        layers:                                                # 9
          - {name: fc1, op: linear, out: 4}                    # 10
          - {name: act, op: relu}                              # 11
          - {name: sum, op: add, in: [h, act]}                 # 12
    layers:                                                    # 13
      - {name: b1, op: block, block: resblock, repeat: 3}      # 14
      - {name: head, op: linear, out: 3}                       # 15
    loss: {op: cross_entropy, input: head, target: label}      # 16
""")


def edit(old: str, new: str, text: str = RES) -> str:
    """A spec with one fragment replaced (the line numbers stay the same unless `new` adds lines)."""
    assert text.count(old) == 1, old
    return text.replace(old, new)


def names(graph) -> list[str]:
    return [node.name for node in graph.nodes]


# --------------------------------------------------------------------------- the language


def test_schema_has_blocks_and_the_block_layer():
    schema = spec_schema()
    assert "blocks" in schema["properties"]
    block_layer = schema["$defs"]["BlockLayer"]
    assert block_layer["properties"]["op"]["const"] == "block"
    assert set(block_layer["properties"]) == {"name", "in", "op", "block", "repeat", "share"}
    assert block_layer["additionalProperties"] is False
    block = schema["$defs"]["BlockSpec"]
    assert set(block["properties"]) == {"description", "inputs", "layers", "output", "state"}
    assert block["additionalProperties"] is False
    # a block's layers are the same union as the spec's: ops and block instances
    assert block["properties"]["layers"]["items"] == schema["properties"]["layers"]["items"]


def test_unknown_key_in_a_block():
    d = one_error(edit("inputs: [h]",
                       "inputs: [h]\n    outputs: sum"))
    check(d, "E-UNKNOWN-KEY", "unknown key 'outputs'", line=9, col=5, path="blocks.resblock.outputs",
          hint="did you mean 'output'?")


def test_unknown_key_of_a_block_instance():
    # the op's tag `block` is also a field of the layer: the error still points at the key
    d = one_error(edit("repeat: 3}", "repeat: 3, repeats: 2}"))
    check(d, "E-UNKNOWN-KEY", "unknown key 'repeats'", line=14, col=55, path="layers[0].repeats",
          hint="did you mean 'repeat'?")


def test_wrong_type_of_the_block_field():
    d = one_error(edit("block: resblock,", "block: 5,"))
    check(d, "E-VALUE", "Input should be a valid string", line=14, col=34, path="layers[0].block")


# --------------------------------------------------------------------------- unrolling


def test_repeat_names_layers_tensors_and_parameters_like_a_module_tree():
    graph = build(RES)
    copies = [f"b1.{k}.{layer}" for k in range(3) for layer in ("fc1", "act", "sum")]
    assert names(graph) == copies + ["b1", "head"]
    by = graph.by_name
    assert by["b1.0.fc1"].inputs == ["x"]  # the first layer reads the block's first input
    assert by["b1.0.sum"].inputs == ["x", "b1.0.act"]  # `h` is the instance's input
    assert by["b1.1.fc1"].inputs == ["b1.0.sum"]  # a copy reads the previous copy's output
    assert by["b1.2.sum"].inputs == ["b1.1.sum", "b1.2.act"]
    assert (by["b1"].op, by["b1"].inputs, by["b1"].shape) == ("identity", ["b1.2.sum"], (4,))  # the output
    assert by["head"].inputs == ["b1"]
    params = {f"{node.name}.{p}" for node in graph.owners for p in node.param_shapes}
    assert params == {f"b1.{k}.fc1.{p}" for k in range(3) for p in ("weight", "bias")} | {"head.weight", "head.bias"}
    assert graph.param_count() == 3 * (16 + 4) + 15
    instance = graph.instances["b1"]
    assert (instance.block, instance.repeat, instance.share, instance.inputs) == ("resblock", 3, False, ("x",))


def test_one_instance_has_no_copy_number():
    graph = build(edit(", repeat: 3}", "}"))
    assert names(graph) == ["b1.fc1", "b1.act", "b1.sum", "b1", "head"]


def test_nodes_know_where_they_are_written():
    graph = build(RES)
    by = graph.by_name
    assert by["b1.2.fc1"].spec_path == ("blocks", "resblock", "layers", 0)
    assert by["b1.2.fc1"].spec_path_text == "blocks.resblock.layers[0]"
    assert by["b1"].spec_path == ("layers", 0) and by["head"].spec_path == ("layers", 1)
    assert (by["b1"].index, by["head"].index) == (0, 1)  # top-level layers keep their place
    inner = [node.index for node in graph.nodes if node.instance is not None]
    assert sorted(inner) == list(range(2, 2 + 9))  # instance layers are numbered after them
    assert by["b1.1.act"].instance is graph.instances["b1"]


def test_copies_start_from_different_values():
    values = initial_values(build(RES), seed=0)
    assert not np.array_equal(values["b1.0.fc1.weight"], values["b1.1.fc1.weight"])


def test_share_true_makes_the_copies_use_the_first_copys_parameters():
    graph = build(edit("repeat: 3}", "repeat: 3, share: true}"))
    by = graph.by_name
    assert [by[f"b1.{k}.fc1"].owner for k in range(3)] == [None, "b1.0.fc1", "b1.0.fc1"]
    assert {node.name for node in graph.owners} == {"b1.0.fc1", "head"}
    assert graph.param_count() == 20 + 15
    assert by["b1.1.act"].owner is None  # only layers with parameters share


def test_several_inputs_and_a_chosen_output():
    text = text_of("""
        netc: 1
        name: two
        inputs:
          a: {shape: [4]}
          b: {shape: [4]}
          label: {shape: [], dtype: int64, classes: 3}
        blocks:
          mix:
            inputs: [p, q]
            output: both
            layers:
              - {name: both, op: add, in: [p, fp]}
              - {name: fp, op: linear, in: q, out: 4}
        layers:
          - {name: m, op: block, block: mix, in: [a, b]}
          - {name: head, op: linear, out: 3}
        loss: {op: cross_entropy, input: head, target: label}
    """)
    graph = build(text)
    by = graph.by_name
    assert by["m.fp"].inputs == ["b"] and by["m.both"].inputs == ["a", "m.fp"]
    assert names(graph) == ["m.fp", "m.both", "m", "head"]  # `both` reads `fp`, written after it
    assert by["m"].inputs == ["m.both"]


NESTED = text_of("""
    netc: 1                                                    # 1
    name: nested                                               # 2
    inputs:                                                    # 3
      x: {shape: [4]}                                          # 4
      label: {shape: [], dtype: int64, classes: 3}             # 5
    blocks:                                                    # 6
      inner:                                                   # 7
        inputs: [h]                                            # 8
        layers:                                                # 9
          - {name: fc, op: linear, out: 4}                     # 10
          - {name: act, op: tanh}                              # 11
      outer:                                                   # 12
        inputs: [h]                                            # 13
        layers:                                                # 14
          - {name: a, op: block, block: inner}                 # 15
          - {name: b, op: block, block: inner, repeat: 2}      # 16
    layers:                                                    # 17
      - {name: o, op: block, block: outer, repeat: 2, share: true}
      - {name: head, op: linear, out: 3}                       # 19
    loss: {op: cross_entropy, input: head, target: label}      # 20
""")


def test_blocks_inside_blocks():
    graph = build(NESTED)
    one = ["a.fc", "a.act", "a", "b.0.fc", "b.0.act", "b.1.fc", "b.1.act", "b"]
    assert names(graph) == [f"o.{k}.{name}" for k in range(2) for name in one] + ["o", "head"]
    by = graph.by_name
    assert by["o.1.a.fc"].inputs == ["o.0.b"]
    assert by["o.0.b.1.fc"].spec_path == ("blocks", "inner", "layers", 0)
    assert by["o.0.b.0.fc"].instance.name == "o.0.b" and by["o.0.b.0.fc"].instance.root.name == "o"
    # share: true reaches into the instances of copy 1: each layer uses its twin in copy 0
    assert by["o.1.a.fc"].owner == "o.0.a.fc"
    assert by["o.1.b.1.fc"].owner == "o.0.b.1.fc"
    assert {node.name for node in graph.owners} == {"o.0.a.fc", "o.0.b.0.fc", "o.0.b.1.fc", "head"}


def test_every_reference_spec_with_blocks_builds():
    graph = build_graph(load_spec(SPECS / "residual-blocks.yaml"))
    assert graph.instances["res"].repeat == 3
    assert "res.2.fc2" in graph.by_name and graph.by_name["head"].inputs == ["res"]
    tied = build_graph(load_spec(SPECS / "tied-steps.yaml"))
    assert [node.name for node in tied.owners] == ["embed", "steps.0.fc", "head"]


# --------------------------------------------------------------------------- errors of the instance layer


def test_unknown_block():
    d = one_error(edit("block: resblock,", "block: resblok,"))
    check(d, "E-BLOCK", "unknown block 'resblok'", line=14, col=34, path="layers[0].block",
          hint="did you mean 'resblock'? (blocks: resblock)")


def test_unknown_block_without_blocks():
    text = text_of("""
        netc: 1
        name: none
        inputs:
          x: {shape: [4]}
          label: {shape: [], dtype: int64, classes: 3}
        layers:
          - {name: b1, op: block, block: resblock}
          - {name: head, op: linear, out: 3}
        loss: {op: cross_entropy, input: head, target: label}
    """)
    d = one_error(text)
    check(d, "E-BLOCK", "unknown block 'resblock'", line=7, col=34, path="layers[0].block",
          hint="define it under `blocks:`")


def test_wrong_number_of_inputs():
    d = one_error(edit("repeat: 3}", "in: [x, x]}"))
    check(d, "E-ARITY", "block 'resblock' takes 1 input(s) (h), got 2", line=14, col=48, path="layers[0].in")


def test_an_instance_of_a_block_with_two_inputs_lists_both():
    text = edit("inputs: [h]",
                "inputs: [h, g]")
    text = edit("in: [h, act]}", "in: [g, act]}", text)
    found = diagnostics(edit("repeat: 3}", "in: x}", text))
    check(found[0], "E-ARITY", "block 'resblock' takes 2 input(s) (h, g), got 1", line=14, col=48,
          path="layers[0].in", hint="list them in the block's order: `in: [h, g]`")


def test_repeat_needs_one_input():
    text = edit("inputs: [h]",
                "inputs: [h, g]")
    text = edit("in: [h, act]}", "in: [g, act]}", text)
    d = one_error(edit("repeat: 3}", "in: [x, x], repeat: 3}", text))
    check(d, "E-BLOCK", "block 'resblock' has 2 inputs and cannot repeat", line=14, col=64,
          path="layers[0].repeat", hint="give it one input")


def test_repeat_needs_an_output_shaped_like_the_input():
    d = one_error(edit("{name: sum, op: add, in: [h, act]}", "{name: sum, op: linear, out: 6}  "))
    check(d, "E-SHAPE", "block instance 'b1' repeats 'resblock' 3 times, but its output [6] differs from its "
          "input [4]", line=14, col=52, path="layers[0].repeat", hint="the block must keep its input's shape")


def test_share_true_needs_repeat():
    d = one_error(edit("repeat: 3}", "share: true}"))
    check(d, "E-BLOCK", "`share: true` shares parameters between repeats", line=14, col=51, path="layers[0].share",
          hint="add `repeat: N`")


def test_share_true_needs_layers_that_can_share():
    d = one_error(edit("{name: act, op: relu}", "{name: act, op: layernorm}"
                       , edit("repeat: 3}", "repeat: 3, share: true}")))
    check(d, "E-SHARE", "in block instance 'b1' (resblock, repeat 3, shared): layernorm 'b1.1.act' cannot use the "
          "parameters of 'b1.0.act'", line=11, col=9, path="blocks.resblock.layers[1]",
          hint="drop `share: true` to give each copy its own")


def test_a_block_that_instantiates_itself():
    d = one_error(edit("{name: act, op: relu}", "{name: act, op: block, block: resblock}"))
    check(d, "E-CYCLE", "block 'resblock' instantiates itself: resblock -> resblock", line=11, col=39,
          path="blocks.resblock.layers[1].block", hint="use `repeat: N` to stack copies")


def test_blocks_that_instantiate_each_other():
    text = edit("{name: act, op: relu}", "{name: act, op: block, block: other}")
    text = edit("\nlayers:", "\n  other:\n    inputs: [q]\n    layers:\n      - {name: deep, op: block, block: resblock}\n"
                "layers:", text)
    d = one_error(text)
    check(d, "E-CYCLE", "block 'resblock' instantiates itself: resblock -> other -> resblock", line=16, col=40,
          path="blocks.other.layers[0].block")


def test_blocks_nested_too_deep_are_refused_without_recursion_error():
    depth = MAX_DEPTH + 5
    blocks = "".join(f"  n{i}:\n    inputs: [h]\n    layers: [{{op: block, block: n{i + 1}}}]\n" for i in range(depth))
    text = (f"netc: 1\nname: deep\ninputs:\n  x: {{shape: [4]}}\n  label: {{shape: [], dtype: int64, classes: 3}}\n"
            f"blocks:\n{blocks}  n{depth}:\n    inputs: [h]\n    layers: [{{op: linear, out: 3}}]\n"
            "layers:\n  - {name: b, op: block, block: n0}\n"
            "loss: {op: cross_entropy, input: b, target: label}\n")
    found = diagnostics(text)
    assert {d.code for d in found} == {"E-BLOCK"}
    check(found[0], "E-BLOCK", f"block 'n0' nests instances {depth + 1} deep, more than {MAX_DEPTH}", line=7, col=3,
          path="blocks.n0")


def test_a_spec_that_unrolls_into_too_many_layers():
    d = one_error(edit("repeat: 3}", f"repeat: {MAX_LAYERS // 2}}}"))
    check(d, "E-BLOCK", f"the spec unrolls into {3 * (MAX_LAYERS // 2) + 2:,} layers, more than {MAX_LAYERS:,}",
          line=14, col=52, path="layers[0].repeat", hint="lower `repeat`")


# --------------------------------------------------------------------------- errors inside a block


def test_an_error_inside_an_instance_is_located_in_the_block_and_names_the_instance():
    d = one_error(edit("{name: fc1, op: linear, out: 4}", "{name: fc1, op: linear, out: 5}"))
    # reported once, not once per copy
    check(d, "E-SHAPE", "in block instance 'b1' (resblock, repeat 3): add 'b1.0.sum': got [4] and [5]",
          line=12, col=34, path="blocks.resblock.layers[2].in")


def test_two_instances_each_report_their_error():
    text = edit("  - {name: head, op: linear, out: 3}",
                "  - {name: b2, op: block, block: resblock, in: x}\n  - {name: both, op: add, in: [b1, b2]}\n"
                "  - {name: head, op: linear, out: 3}")
    found = diagnostics(edit("out: 4}", "out: 5}", text))
    assert [d.message.split(":")[0] for d in found] == ["in block instance 'b1' (resblock, repeat 3)",
                                                        "in block instance 'b2' (resblock)"]
    assert codes(found) == [("E-SHAPE", 12), ("E-SHAPE", 12)]


def test_an_error_of_an_instance_inside_a_block():
    d = one_error(edit("{name: act, op: tanh}", "{name: act, op: reshape, shape: [3]}", NESTED))
    check(d, "E-SHAPE", "in block instance 'o.0.a' (inner): reshape 'o.0.a.act': cannot reshape [4]", line=11,
          col=41, path="blocks.inner.layers[1].shape")


def test_unknown_tensor_in_a_block():
    d = one_error(edit("in: [h, act]}", "in: [h, actt]}"))
    check(d, "E-REF", "in block 'resblock': unknown tensor 'actt'", line=12, col=38, path="blocks.resblock.layers[2].in[1]",
          hint="did you mean 'act'? (block inputs and layers: act, fc1, h, sum)")


def test_a_block_reads_only_its_own_inputs_and_layers():
    d = one_error(edit("in: [h, act]}", "in: [x, act]}"))
    check(d, "E-REF", "in block 'resblock': unknown tensor 'x'", line=12, col=35, path="blocks.resblock.layers[2].in[0]")


def test_duplicate_names_in_a_block():
    d = one_error(edit("{name: act, op: relu}", "{name: h, op: relu}  ", edit("in: [h, act]}", "in: [h, fc1]}")))
    check(d, "E-DUP-NAME", "in block 'resblock': layer name 'h' is already a block input name", line=11, col=16,
          path="blocks.resblock.layers[1].name", hint="rename the layer or the input")
    d = diagnostics(edit("repeat: 3}", "in: [x, x]}", edit("inputs: [h]", "inputs: [h, h]")))[0]
    check(d, "E-DUP-NAME", "in block 'resblock': input 'h' is listed twice", line=8, col=17,
          path="blocks.resblock.inputs[1]")


def test_block_output_must_be_a_layer():
    d = one_error(edit("inputs: [h]",
                       "inputs: [h]\n    output: summ"))
    check(d, "E-REF", "in block 'resblock': output 'summ' is not a layer of the block", line=9, col=13,
          path="blocks.resblock.output", hint="did you mean 'sum'?")


def test_arity_inside_a_block():
    d = one_error(edit("in: [h, act]}", "in: [act]}   "))
    check(d, "E-ARITY", "in block 'resblock': add takes at least 2 input(s), got 1", line=12, col=34,
          path="blocks.resblock.layers[2].in")


def test_unknown_share_inside_a_block():
    d = one_error(edit("out: 4}", "out: 4, share: fc2}"))
    check(d, "E-SHARE", "in block instance 'b1' (resblock, repeat 3): layer 'b1.0.fc1' shares with unknown layer "
          "'fc2'", line=10, col=48, path="blocks.resblock.layers[0].share")


def test_dead_parts_of_blocks():
    text = edit("{name: sum, op: add, in: [h, act]}",
                "{name: sum, op: add, in: [h, act]}\n      - {name: extra, op: relu, in: fc1}\n"
                "  unused:\n    inputs: [q]\n    layers: [{op: relu}]", edit("    layers:", "    output: sum\n    layers:"))
    found = diagnostics(text)
    check(found[0], "E-DEAD", "in block 'resblock': layer 'extra' does not lead to the block's output 'sum'",
          line=14, col=9, path="blocks.resblock.layers[3]")
    check(found[1], "E-DEAD", "block 'unused' is never used", line=15, col=3, path="blocks.unused",
          hint="instantiate it with a layer `{op: block, block: unused}`")
    assert len(found) == 2


def test_a_block_input_never_read():
    text = edit("inputs: [h]",
                "inputs: [h, g]")
    d = one_error(edit("repeat: 3}", "in: [x, x]}", text))
    check(d, "E-DEAD", "in block 'resblock': input 'g' is never read", line=8, col=17, path="blocks.resblock.inputs[1]")


def test_a_dead_instance_is_one_error_at_its_layer():
    text = edit("  - {name: head, op: linear, out: 3}",
                "  - {name: b2, op: block, block: resblock, in: x}\n  - {name: head, op: linear, in: b1, out: 3}")
    d = one_error(text)
    check(d, "E-DEAD", "layer 'b2' does not lead to the loss", line=15, col=5, path="layers[1]")


def test_loss_reads_an_instance():
    text = edit("  - {name: head, op: linear, out: 3}", "  - {name: head, op: block, block: logp, in: b1}", RES)
    text = edit("\nlayers:", "\n  logp:\n    inputs: [h]\n    layers:\n      - {name: fc, op: linear, out: 3}\n"
                "      - {name: lsm, op: log_softmax}\nlayers:", text)
    assert build(edit("op: cross_entropy", "op: nll", text)).by_name["head"].shape == (3,)
    d = one_error(text)  # cross_entropy on log-probabilities: told through the instance
    check(d, "E-LOSS", "cross_entropy applies softmax itself but 'head' is a log_softmax (layer 'head.lsm')",
          line=21, col=34, path="loss.input")


def test_a_cycle_through_an_instance_is_told_from_the_top_level():
    d = one_error(edit("repeat: 3}", "repeat: 3, in: head}"))
    check(d, "E-CYCLE", "cycle: head -> b1 -> ", line=15, col=5, path="layers[1].in")


# --------------------------------------------------------------------------- netc inspect


def test_inspect_folds_instances_into_one_row():
    summary = summarize(build(edit("repeat: 3}", "repeat: 3, share: true}")))
    rows = {row[0]: row for row in table_rows(summary)}
    assert list(rows) == ["x", "label", "b1", "head"]
    assert rows["b1"][1:5] == ("block resblock x3 shared", "x", "[4]", "20")
    assert rows["b1"][-1] == "48"  # mult-adds of the three copies
    assert len(summary.layers) == 11  # the summary still holds every layer


def test_inspect_expanded_shows_every_layer():
    rows = table_rows(summarize(build(RES), expand=True))
    assert [row[0] for row in rows][2:] == [f"b1.{k}.{n}" for k in range(3) for n in ("fc1", "act", "sum")] + ["b1", "head"]


def test_inspect_json_lists_every_layer_and_the_instances():
    data = summary_dict(summarize(build(RES)))
    assert len(data["layers"]) == 11
    assert data["layers"][0]["part_of"] == "b1" and "part_of" not in data["layers"][-1]
    (instance,) = data["blocks"]
    assert instance["name"] == "b1" and instance["block"] == "resblock" and instance["repeat"] == 3
    assert instance["params"] == 60 and instance["output_shape"] == [4] and instance["inputs"] == ["x"]
    assert instance["layers"][-1] == "b1" and len(instance["layers"]) == 10
    assert sum(row["params"] for row in data["layers"] if row["counted"]) == data["totals"]["params"]


def test_inspect_cli_folded_and_expanded():
    path = str(SPECS / "residual-blocks.yaml")
    folded = runner.invoke(app, ["inspect", path])
    assert folded.exit_code == 0, folded.output
    assert "block resblock x3" in folded.output and "res.0.fc1" not in folded.output
    assert "--expand" in folded.output  # the footnote says how to see the layers
    expanded = runner.invoke(app, ["inspect", path, "--expand"])
    assert expanded.exit_code == 0 and "res.2.fc2" in expanded.output and "block resblock" not in expanded.output
    as_json = runner.invoke(app, ["inspect", path, "--format", "json"])
    assert "res.1.fc1" in {layer["name"] for layer in json.loads(as_json.output)["layers"]}


def test_validate_reports_an_error_inside_a_block(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(edit("out: 4}", "out: 5}"))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert f"{path}:12:34: error[E-SHAPE]: in block instance 'b1' (resblock, repeat 3)" in " ".join(result.output.split())


# --------------------------------------------------------------------------- compiled: gradients, training

BIAS = "bias_init: {type: uniform, low: -0.5, high: 0.5}"
N = 4
RTOL, ATOL = 1e-10, 1e-12


def tied(share: bool) -> str:
    """A step (linear, tanh, skip) repeated three times, as a block."""
    return text_of(f"""
        netc: 1
        name: tied
        inputs:
          x: {{shape: [6]}}
          label: {{shape: [], dtype: int64, classes: 3}}
        blocks:
          step:
            inputs: [h]
            layers:
              - {{name: fc, op: linear, out: 6, {BIAS}}}
              - {{name: act, op: tanh}}
              - {{name: next, op: add, in: [h, act]}}
        layers:
          - {{name: rnn, op: block, block: step, repeat: 3, share: {str(share).lower()}}}
          - {{name: head, op: linear, out: 3, {BIAS}}}
        loss: {{op: cross_entropy, input: head, target: label}}
        train: {{batch: {N}}}
    """)


def by_hand(share: bool) -> str:
    """The same network unrolled by hand: `share: fc0` on the copies when `share`."""
    steps = []
    for k in range(3):
        sharing = f", share: fc0" if share and k else f", {BIAS}"
        before = "x" if k == 0 else f"next{k - 1}"
        steps += [f"  - {{name: fc{k}, op: linear, in: {before}, out: 6{sharing}}}",
                  f"  - {{name: act{k}, op: tanh}}",
                  f"  - {{name: next{k}, op: add, in: [{before}, act{k}]}}"]
    return "\n".join([
        "netc: 1", "name: by_hand", "inputs:", "  x: {shape: [6]}", "  label: {shape: [], dtype: int64, classes: 3}",
        "layers:", *steps, f"  - {{name: head, op: linear, out: 3, {BIAS}}}",
        "loss: {op: cross_entropy, input: head, target: label}", f"train: {{batch: {N}}}", ""])


@functools.cache
def models(share: bool):
    """(block model, hand-unrolled model holding the same values, hand name -> block name)."""
    from netc.runtime.model import Model

    block = Model(build(tied(share)), dtype="float64", batch=N, seed=0, tier="python")
    hand = Model(build(by_hand(share)), dtype="float64", batch=N, seed=0, tier="python")
    names = {f"{layer}{k}.{p}": f"rnn.{0 if share else k}.{layer}.{p}" for k in range(3) for layer in ("fc",)
             for p in ("weight", "bias")}
    names.update({f"head.{p}": f"head.{p}" for p in ("weight", "bias")})
    values = block.get_weights()
    hand.set_weights({name: values[names[name]] for name in hand.get_weights()}, strict=True)
    return block, hand, names


@functools.cache
def arrays() -> dict:
    rng = np.random.default_rng(7)
    return {"x": rng.normal(size=(N, 6)), "label": rng.integers(0, 3, N)}


@pytest.mark.compiled
def test_shared_repeat_gives_the_gradients_of_the_hand_unrolled_spec_with_share():
    block, hand, names = models(True)
    assert set(block.get_weights()) == {"rnn.0.fc.weight", "rnn.0.fc.bias", "head.weight", "head.bias"}
    assert set(hand.get_weights()) == {"fc0.weight", "fc0.bias", "head.weight", "head.bias"}
    block_loss, block_grads = block.loss_and_gradients(arrays())
    hand_loss, hand_grads = hand.loss_and_gradients(arrays())
    assert block_loss == pytest.approx(hand_loss, rel=RTOL)
    assert set(block_grads) == {names[name] for name in hand_grads}
    for name, grad in hand_grads.items():
        np.testing.assert_allclose(block_grads[names[name]], grad, rtol=RTOL, atol=ATOL, err_msg=name)
    # the shared tensor's gradient is the sum over the three copies: not the first copy's alone
    _, own = models(False)[1].loss_and_gradients(arrays())
    assert np.abs(block_grads["rnn.0.fc.weight"] - own["fc0.weight"]).max() > 1e-6


@pytest.mark.compiled
def test_repeat_with_own_weights_gives_the_gradients_of_the_hand_unrolled_spec():
    block, hand, names = models(False)
    block_loss, block_grads = block.loss_and_gradients(arrays())
    hand_loss, hand_grads = hand.loss_and_gradients(arrays())
    assert block_loss == pytest.approx(hand_loss, rel=RTOL)
    assert len(block_grads) == len(hand_grads) == 8
    for name, grad in hand_grads.items():
        np.testing.assert_allclose(block_grads[names[name]], grad, rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.mark.compiled
def test_gradcheck_of_blocks():
    from netc.runtime.gradcheck import gradcheck

    for share in (True, False):
        results = gradcheck(build(tied(share)), arrays=arrays(), max_entries=12)
        worst = {r.name: r.max_rel_error for r in results}
        assert len(worst) == (4 if share else 8)
        assert max(worst.values()) < 1e-6, worst
    nested = gradcheck(build(NESTED), count=3, max_entries=8)
    assert {r.name for r in nested} == {f"{layer}.{p}" for layer in ("o.0.a.fc", "o.0.b.0.fc", "o.0.b.1.fc", "head")
                                        for p in ("weight", "bias")}
    assert max(r.max_rel_error for r in nested) < 1e-6


@pytest.mark.compiled
def test_training_a_block_spec(tmp_path):
    from netc.runtime.checkpoint import load_weights
    from netc.runtime.train import Overrides, Trainer

    loaded = load_spec_text((SPECS / "residual-blocks.yaml").read_text(), str(tmp_path / "residual-blocks.yaml"),
                            tmp_path)
    result = Trainer(loaded, Overrides(epochs=3), run_dir=tmp_path / "run", tier="python").run()
    losses = [epoch.train_loss for epoch in result.epochs]
    assert len(losses) == 3 and losses[-1] < losses[0] / 2, losses
    assert result.epochs[-1].eval_accuracy > 0.8
    weights = load_weights(tmp_path / "run" / "last.safetensors")
    assert {"res.0.fc1.weight", "res.2.fc2.bias", "stem.weight", "head.bias"} <= set(weights)


@pytest.mark.compiled
def test_the_checkpoint_loads_into_a_pytorch_module_tree(tmp_path):
    torch = pytest.importorskip("torch")
    from netc.runtime.model import Model

    nn = torch.nn

    class ResBlock(nn.Module):  # resblock of specs/residual-blocks.yaml
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(64, 64), nn.Linear(64, 64)

        def forward(self, x):
            return torch.relu(x + self.fc2(torch.relu(self.fc1(x))))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Linear(64, 64)
            self.res = nn.Sequential(ResBlock(), ResBlock(), ResBlock())  # res.0.fc1.weight, ...
            self.head = nn.Linear(64, 10)

        def forward(self, x):
            return self.head(self.res(torch.relu(self.stem(x))))

    model = Model(build_graph(load_spec(SPECS / "residual-blocks.yaml")), dtype="float64", batch=5, tier="python")
    net = Net().double()
    net.load_state_dict({name: torch.from_numpy(value) for name, value in model.state_dict().items()}, strict=True)
    x = np.random.default_rng(3).normal(size=(5, 64))
    expected = net(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(model.predict({"pixels": x}), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.compiled
@pytest.mark.parametrize("name", ["residual-blocks", "tied-steps"])
def test_onnx_export_keeps_the_names_and_the_numbers(name, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from netc.export_onnx import export_onnx
    from netc.runtime.checkpoint import save_checkpoint
    from netc.runtime.model import Model

    loaded = load_spec(SPECS / f"{name}.yaml")
    model = Model(build_graph(loaded), tier="python")
    save_checkpoint(tmp_path / "w.safetensors", model.get_weights())
    result = export_onnx(loaded, tmp_path / "w.safetensors", tmp_path / "model.onnx")
    assert set(result.initializers) == set(model.get_weights())  # `res.0.fc1.weight`; a shared tensor once
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(0, 1, (6, 64)).astype(np.float32)
    (got,) = session.run(None, {"pixels": x})
    np.testing.assert_allclose(got, model.predict({"pixels": x}), rtol=2e-4, atol=2e-5)


def test_init_layers_names_a_block_instance_for_all_its_tensors(tmp_path):
    """`init: {layers: [res]}` loads every tensor of the instance (res.0.fc1.weight, ...), nothing else."""
    from netc.runtime.checkpoint import save_checkpoint
    from netc.runtime.model import Model
    from netc.runtime.train import Trainer

    text = (SPECS / "residual-blocks.yaml").read_text()
    donor = Model(build_graph(load_spec_text(text)), seed=7, tier="python").get_weights()
    save_checkpoint(tmp_path / "donor.safetensors", donor)
    spec = load_spec_text(text + "init: {checkpoint: donor.safetensors, layers: [res]}\n",
                          str(tmp_path / "res.yaml"), tmp_path)
    report = Trainer(spec, run_dir=tmp_path / "run", tier="python")._load_init()
    assert sorted(report.matched) == sorted(k for k in donor if k.startswith("res."))
    assert len(report.matched) == 12 and not any(k.startswith(("stem", "head")) for k in report.matched)
