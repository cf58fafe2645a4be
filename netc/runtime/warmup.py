"""`netc warmup`: compile netc's kernel library for this machine, float32 and float64. The specs below
together call every kernel a plan may call (a test checks it), each with the argument types plans
use; their plans are recorded on the Python tier (netc.compiler.kernel_library), never run."""

from __future__ import annotations

from typing import Callable

from netc.compiler import PYTHON
from netc.compiler import kernel_library

_HEAD = "netc: 1\nname: warmup_{name}\ninputs:\n"


def _one_conv(image: str, conv: str, hidden: int = 0) -> str:
    """A spec's body: a conv with a fused relu and 2x2 max pool on images of shape `image`, then a linear
    layer (two with `hidden`: the first that many outputs)."""
    layer = f"\n  - {{name: h, op: linear, out: {hidden}}}" if hidden else ""
    return f"""
  img: {{shape: {image}}}
  y: {{shape: [], dtype: int64, classes: 3}}
layers:
  - {{name: c, op: conv2d, {conv}}}
  - {{name: r, op: relu}}
  - {{name: p, op: maxpool2d, kernel: 2}}
  - {{name: flat, op: flatten}}{layer}
  - {{name: fc, op: linear, out: 3}}
loss: {{op: cross_entropy, input: fc, target: y}}
optimizer: {{type: sgd, lr: 0.1}}
train: {{batch: 8}}
"""


SPECS = {
    # conv with a fused 2x2 max pool, batch norm, average pools, dropout, cross entropy, Adam
    "conv": """
  img: {shape: [2, 8, 8]}
  y: {shape: [], dtype: int64, classes: 3}
layers:
  - {name: c1, op: conv2d, filters: 3, kernel: 3, padding: 1}
  - {name: r1, op: relu}
  - {name: p1, op: maxpool2d, kernel: 2}
  - {name: bn, op: batchnorm2d}
  - {name: c2, op: conv2d, filters: 4, kernel: 3, padding: 1}
  - {name: ap, op: avgpool2d, kernel: 2}
  - {name: mp, op: maxpool2d, kernel: 2, stride: 1}
  - {name: gap, op: global_avgpool2d}
  - {name: flat, op: flatten}
  - {name: drop, op: dropout, p: 0.1}
  - {name: fc, op: linear, out: 3}
loss: {op: cross_entropy, input: fc, target: y}
optimizer: {type: adam, lr: 0.001}
train: {batch: 4}
""",
    # a conv with many filters and a long k whose columns are too many to keep: netc's micro-kernel
    # (netc.ops.conv.tiled_conv), and a linear layer large enough for a block of columns per core under
    # OpenBLAS's SkylakeX kernels (netc.ops.dense._parts); recorded, never run, so its size costs nothing
    "tiled": _one_conv("[32, 32, 32]", "filters: 64, kernel: 3, padding: 1", hidden=64),
    # a first conv with many filters and a short k, stride 1: its columns read in place from the image
    # (netc.ops.conv.direct_conv)
    "direct": _one_conv("[3, 16, 16]", "filters: 64, kernel: 5"),
    # the activations as their own steps, batch norm and layer norm of features, nll, SGD
    "mlp": """
  x: {shape: [6]}
  y: {shape: [], dtype: int64, classes: 3}
layers:
  - {name: bn, op: batchnorm1d}
  - {name: ln, op: layernorm}
  - {name: a1, op: sigmoid}
  - {name: a2, op: gelu}
  - {name: a3, op: silu}
  - {name: fc, op: linear, out: 3}
  - {name: logp, op: log_softmax}
loss: {op: nll, input: logp, target: y}
optimizer: {type: sgd, lr: 0.1, momentum: 0.9, clip: {norm: 1.0}}
train: {batch: 4}
""",
    # locally connected, merges (add, concat, mul, stack), slice, select, softmax, mse on labels, RMSprop
    "local": """
  img: {shape: [2, 6, 6]}
  y: {shape: [], dtype: int64, classes: 3}
layers:
  - {name: l1, op: local2d, filters: 2, kernel: 3}
  - {name: l2, op: local2d, in: img, filters: 2, kernel: 3}
  - {name: sum, op: add, in: [l1, l2, l1]}
  - {name: cat, op: concat, in: [l1, sum]}
  - {name: flat, op: flatten}
  - {name: fc, op: linear, out: 3}
  - {name: prod, op: mul, in: [l1, l2, sum]}
  - {name: part, op: slice, axis: 1, start: 1}
  - {name: one, op: select, index: -1}
  - {name: first, op: select, in: part, index: 0}
  - {name: st, op: stack, in: [one, first, one]}
  - {name: flat2, op: flatten}
  - {name: fc2, op: linear, out: 3}
  - {name: heads, op: add, in: [fc, fc2]}
  - {name: sm, op: softmax}
loss: {op: mse, input: sm, target: y}
optimizer: {type: rmsprop, lr: 0.01, clip: {value: 0.5}}
train: {batch: 4}
""",
    # an embedding, mse on a float target weighted with a second head's cross entropy (two losses:
    # their weighted sum's kernel is typed by the count, and two is the usual one)
    "embedding": """
  tokens: {shape: [4], dtype: int64, indices: 5}
  t: {shape: [2]}
  y: {shape: [], dtype: int64, classes: 3}
layers:
  - {name: emb, op: embedding, in: tokens, num: 5, dim: 3}
  - {name: flat, op: flatten}
  - {name: fc, op: linear, out: 2}
  - {name: head, op: linear, in: flat, out: 3}
loss:
  - {op: mse, input: fc, target: t}
  - {op: cross_entropy, input: head, target: y, weight: 0.5}
train: {batch: 4}
""",
    # the recurrent cells (one kernel pair serves all three): every step of an lstm into a gru
    "recurrent": """
  seq: {shape: [3, 2]}
  y: {shape: [], dtype: int64, classes: 3}
layers:
  - {name: l, op: lstm, hidden: 3, sequences: true}
  - {name: g, op: gru, hidden: 2}
  - {name: fc, op: linear, out: 3}
loss: {op: cross_entropy, input: fc, target: y}
optimizer: {type: sgd, lr: 0.1}
train: {batch: 4}
""",
    # a recurrent layer with work enough to share: its batch in chunks on parallel cores (the cells above
    # run as one chunk, netc.ops.recurrent.chunks_for)
    "recurrent_chunks": """
  seq: {shape: [8, 2]}
  y: {shape: [], dtype: int64, classes: 3}
layers:
  - {name: l, op: lstm, hidden: 64}
  - {name: fc, op: linear, out: 3}
loss: {op: cross_entropy, input: fc, target: y}
optimizer: {type: sgd, lr: 0.1}
train: {batch: 16}
""",
    # a scan's loop (its data movement kernels) over a block with sub, reading a sequence that needs a gradient
    "scan": """
  seq: {shape: [3, 2]}
  y: {shape: [], dtype: int64, classes: 3}
blocks:
  cell:
    inputs: [x]
    state:
      h: {shape: [2], next: h_new}
    layers:
      - {name: ih, op: linear, in: x, out: 2}
      - {name: d, op: sub, in: [ih, h]}
      - {name: h_new, op: tanh}
layers:
  - {name: proj, op: linear, in: seq, out: 2}
  - {name: rec, op: scan, block: cell, in: proj, sequences: true}
  - {name: flat, op: flatten}
  - {name: fc, op: linear, out: 3}
loss: {op: cross_entropy, input: fc, target: y}
optimizer: {type: sgd, lr: 0.1}
train: {batch: 4}
""",
}


def entries(dtypes: tuple[str, ...] = ("float32", "float64")) -> list[kernel_library.Entry]:
    """Every (kernel, argument types) the specs above call, in each dtype."""
    from netc.graph import build_graph
    from netc.runtime.model import Model
    from netc.spec import load_spec_text

    found: dict[tuple, kernel_library.Entry] = {}
    for name, body in SPECS.items():
        graph = build_graph(load_spec_text(_HEAD.format(name=name) + body.lstrip("\n"), f"warmup-{name}.yaml"))
        for dtype in dtypes:
            model = Model(graph, dtype=dtype, tier=PYTHON)
            for entry in model.kernels_called():
                found.setdefault((entry[0], entry[1], str(entry[2])), entry)
    return list(found.values())


def warmup(on_progress: Callable[[int, int], None] | None = None) -> tuple[int, int]:
    """Compile what this machine lacks; returns (compiled now, already compiled). Raises RunError
    when some could not be compiled and kept (no process to spare, a full disk)."""
    from netc.codecache import cache_root
    from netc.errors import Diagnostic, Location, RunError

    everything = entries()
    todo = kernel_library.missing(everything)
    left = kernel_library.compile_missing(todo, on_progress) if todo else []
    if left:
        raise RunError(Diagnostic("E-CACHE", f"{len(left)} of {len(todo)} kernel signatures were not compiled "
                                  "into the cache", Location(str(cache_root())),
                                  hint="check free disk space and that the cache folder is writable (netc cache "
                                       "info); they compile on their first use meanwhile"))
    return len(todo), len(everything) - len(todo)
