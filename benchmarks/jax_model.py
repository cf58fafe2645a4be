"""A JAX peer of a netc graph, for benchmarks and comparisons (the JAX counterpart of torch_model.py).

`forward` is a pure function of a parameter dict named like netc's weights (`fc1.weight` [out, in],
`conv1.weight` [O, C, kh, kw], `lstm.weight_ih_l0`, ...: PyTorch's layouts and gate orders), so
`JaxRunner(graph, data, netc_model.get_weights(), variant)` trains from the same start as netc and
PyTorch. Two ways to drive an epoch are offered, since JAX's speed depends on it:

- "jit":  one compiled training step (forward, gradient, SGD update), called per batch from Python;
- "scan": the whole epoch compiled as one function, a `lax.scan` over the batches.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from netc.ops.conv import conv_geometry

_RECURRENT = ("rnn", "lstm", "gru")


# ------------------------------------------------------------------ forward


def _names(node) -> dict[str, str]:
    """The parameter dict's key for each of a node's tensors; a shared layer uses its owner's tensors."""
    return {p: f"{node.param_owner}.{p}" for p in node.param_shapes}


def _linear(x, w, b):
    y = x @ w.T
    return y if b is None else y + b


# XLA:CPU runs a convolution inside a loop body (the "scan" variant's epoch) as a naive loop nest unless it
# is in the canonical NHWC x HWIO -> NHWC form (jax-ml/jax#12868); outside loops it rewrites any layout
# itself. Autodiff's gradient convolutions are not in that form (~12x slower epochs for seed-cnn), so the
# convolution runs in NHWC with its two gradients written as canonical convolutions too.
_NHWC = ("NHWC", "HWIO", "NHWC")


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_nhwc(x, w, strides, pads):
    """x [N, H, W, C], w [kh, kw, C, O], symmetric zero padding (ph, pw)."""
    (ph, pw) = pads
    return lax.conv_general_dilated(x, w, strides, ((ph, ph), (pw, pw)), dimension_numbers=_NHWC)


def _conv_nhwc_fwd(x, w, strides, pads):
    return _conv_nhwc(x, w, strides, pads), (x, w)


def _conv_nhwc_bwd(strides, pads, saved, dy):
    x, w = saved
    (sh, sw), (ph, pw) = strides, pads
    kh, kw = w.shape[:2]
    h, wd = x.shape[1:3]
    oh, ow = dy.shape[1:3]
    # d/dx: dy spread out by the stride, against the kernel flipped in space with its in/out swapped;
    # the far side also gets the rows/columns the forward's stride left unread (they get zero gradient)
    pad_x = ((kh - 1 - ph, kh - 1 - ph + (h + 2 * ph - kh) % sh), (kw - 1 - pw, kw - 1 - pw + (wd + 2 * pw - kw) % sw))
    dx = lax.conv_general_dilated(dy, jnp.flip(w, (0, 1)).swapaxes(2, 3), (1, 1), pad_x, lhs_dilation=(sh, sw),
                                  dimension_numbers=_NHWC)
    # d/dw: x with channels as the batch and samples as the features, against dy as a kernel dilated by
    # the stride (samples in, filters out): [C, kh, kw, O]; the far padding is ph less the unread rows (negative
    # when they are more: a crop), so that the result is kh x kw
    pad_w = ((ph, kh + (oh - 1) * sh - h - ph), (pw, kw + (ow - 1) * sw - wd - pw))
    dw = lax.conv_general_dilated(x.transpose(3, 1, 2, 0), dy.transpose(1, 2, 0, 3), (1, 1), pad_w,
                                  rhs_dilation=(sh, sw), dimension_numbers=_NHWC)
    return dx, dw.transpose(1, 2, 0, 3)


_conv_nhwc.defvjp(_conv_nhwc_fwd, _conv_nhwc_bwd)


def _conv2d(x, w, b, layer):
    """x [N, C, H, W], w [O, C, kh, kw] (netc's and PyTorch's layouts), through the NHWC convolution."""
    kh, kw, sh, sw, ph, pw = conv_geometry(layer, None)
    y = _conv_nhwc(x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0), (sh, sw), (ph, pw)).transpose(0, 3, 1, 2)
    return y if b is None else y + b[None, :, None, None]


def _pool(x, op, layer):
    kh, kw, sh, sw, ph, pw = conv_geometry(layer, x.shape[1:])
    window, strides = (1, 1, kh, kw), (1, 1, sh, sw)
    padding = ((0, 0), (0, 0), (ph, ph), (pw, pw))
    if op == "maxpool2d":  # padding cells hold -inf, so they never win
        return lax.reduce_window(x, -jnp.inf, lax.max, window, strides, padding)
    # average over the real cells only (PyTorch's count_include_pad=False): divide by a count of ones
    total = lax.reduce_window(x, 0.0, lax.add, window, strides, padding)
    count = lax.reduce_window(jnp.ones((1, 1, *x.shape[2:]), x.dtype), 0.0, lax.add, window, strides, padding)
    return total / count


def _recurrent(x, params, node):
    """An RNN/LSTM/GRU over x [N, T, F] from zero state: [N, T, H] (sequences) or the last state [N, H]."""
    layer, names = node.layer, _names(node)
    if layer.bptt is not None and layer.bptt < x.shape[1]:
        raise NotImplementedError(f"{node.name}: truncated backpropagation (bptt)")
    w_ih, w_hh = params[names["weight_ih_l0"]], params[names["weight_hh_l0"]]
    b_ih = params[names["bias_ih_l0"]] if layer.bias else 0.0
    b_hh = params[names["bias_hh_l0"]] if layer.bias else 0.0
    n, hidden = x.shape[0], layer.hidden
    # the input's share of every gate, for all steps at once (one large matmul), time-major for the scan
    xs = jnp.swapaxes(x @ w_ih.T + b_ih, 0, 1)  # [T, N, gates * H]
    h0 = jnp.zeros((n, hidden), x.dtype)

    if node.op == "rnn":
        def step(h, gx):
            h = jnp.tanh(gx + h @ w_hh.T + b_hh)
            return h, h
        carry = h0
    elif node.op == "lstm":
        def step(hc, gx):  # gates i, f, g, o
            h, c = hc
            i, f, g, o = jnp.split(gx + h @ w_hh.T + b_hh, 4, axis=1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h
        carry = (h0, h0)
    else:  # gru, gates r, z, n; the recurrent bias of n sits inside r * (...) as in PyTorch
        def step(h, gx):
            xr, xz, xn = jnp.split(gx, 3, axis=1)
            hr, hz, hn = jnp.split(h @ w_hh.T + b_hh, 3, axis=1)
            r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
            cand = jnp.tanh(xn + r * hn)
            h = (1 - z) * cand + z * h
            return h, h
        carry = h0

    _, hs = lax.scan(step, carry, xs)  # [T, N, H]
    return jnp.swapaxes(hs, 0, 1) if layer.sequences else hs[-1]


def _values(params: dict, inputs: dict, graph) -> dict:
    """Every tensor of the graph, by name: the inputs and each node's output, in topological order."""
    values = dict(inputs)
    for node in graph.nodes:
        xs = [values[name] for name in node.inputs]
        x, op, layer, names = xs[0], node.op, node.layer, _names(node)
        if op == "linear":
            y = _linear(x, params[names["weight"]], params.get(names.get("bias")))
        elif op == "conv2d":
            y = _conv2d(x, params[names["weight"]], params.get(names.get("bias")), layer)
        elif op in _RECURRENT:
            y = _recurrent(x, params, node)
        elif op in ("maxpool2d", "avgpool2d"):
            y = _pool(x, op, layer)
        elif op == "global_avgpool2d":
            y = x.mean(axis=(2, 3), keepdims=True)
        elif op == "flatten":
            y = x.reshape(x.shape[0], -1)
        elif op == "reshape":
            y = x.reshape(x.shape[0], *node.shape)  # node.shape: the target with -1 resolved
        elif op == "relu":
            y = jax.nn.relu(x)
        elif op == "sigmoid":
            y = jax.nn.sigmoid(x)
        elif op == "tanh":
            y = jnp.tanh(x)
        elif op == "softmax":
            y = jax.nn.softmax(x, axis=1)
        elif op == "log_softmax":
            y = jax.nn.log_softmax(x, axis=1)
        elif op == "add":
            y = sum(xs[1:], xs[0])
        elif op == "concat":
            y = jnp.concatenate(xs, axis=layer.axis + 1)  # the spec's axis excludes the batch
        elif op == "identity" or (op == "dropout" and layer.p == 0):
            y = x
        else:  # dropout with p > 0 would need netc's random masks to compare; other ops are not written
            raise NotImplementedError(f"op '{op}' ({node.name}) in the JAX model")
        values[node.name] = y
    return values


def forward(params: dict, inputs: dict, graph):
    """The graph's output that the (first) loss reads, for a batch of `inputs` (arrays by input name)."""
    return _values(params, inputs, graph)[graph.loss_input]


# ------------------------------------------------------------------ loss and optimizer


def _loss_term(op: str, y, target):
    """One loss, averaged over the batch as netc's kernels (and PyTorch's defaults) do."""
    if op == "cross_entropy":
        return -jnp.take_along_axis(jax.nn.log_softmax(y, axis=1), target[:, None], axis=1).mean()
    if op == "nll":
        return -jnp.take_along_axis(y, target[:, None], axis=1).mean()
    if op == "mse":
        if jnp.issubdtype(target.dtype, jnp.integer):
            target = jax.nn.one_hot(target, y.shape[1], dtype=y.dtype)
        return 0.5 * ((y - target) ** 2).sum(axis=1).mean()
    raise NotImplementedError(f"loss '{op}' in the JAX model")


def loss_fn(params: dict, inputs: dict, graph):
    """The training loss: the spec's loss, or the weighted sum of its losses."""
    values = _values(params, inputs, graph)
    total = 0.0
    for loss in graph.spec.losses:
        term = _loss_term(loss.op, values[loss.input], inputs[loss.target])
        total = total + (term if len(graph.spec.losses) == 1 else loss.weight * term)
    return total


def _sgd(graph):
    """An SGD update as torch.optim.SGD's: returns (init(params) -> state, update(params, grads, state))."""
    o = graph.spec.optimizer
    if o.type != "sgd":
        raise NotImplementedError(f"optimizer '{o.type}' in the JAX model (only sgd)")
    if o.clip is not None:
        raise NotImplementedError("gradient clipping in the JAX model")
    # per tensor: its learning rate (the owner's lr_mult) and whether it trains at all
    rates, frozen = {}, set()
    for node in graph.owners:
        for name in _names(node).values():
            rates[name] = o.lr * node.lr_mult
            if not node.trainable:
                frozen.add(name)

    def init(params):
        # zeros: the first update then sets v = momentum * 0 + d = d, PyTorch's buffer on its first step
        return {k: jnp.zeros_like(v) for k, v in params.items() if k not in frozen} if o.momentum else {}

    def update(params, grads, velocity):
        new_params, new_velocity = dict(params), {}
        for name, p in params.items():
            if name in frozen:
                continue
            d = grads[name] + o.weight_decay * p if o.weight_decay else grads[name]
            if o.momentum:
                v = o.momentum * velocity[name] + d
                new_velocity[name] = v
                d = d + o.momentum * v if o.nesterov else v
            new_params[name] = p - rates[name] * d
        return new_params, new_velocity

    return init, update


# ------------------------------------------------------------------ runner


class JaxRunner:
    """Trains `graph` on `data` (numpy arrays by input name) with JAX; `epoch()` is one pass in order,
    batch by batch, as benchmarks/run.py's TorchRunner does. `weights`: netc's, for the same start
    (required: the JAX model has no initializer of its own)."""

    def __init__(self, graph, data: dict, weights: dict, variant: str = "jit"):
        if variant not in ("jit", "scan"):
            raise ValueError(f"variant must be 'jit' or 'scan', got {variant!r}")
        self.graph, self.variant = graph, variant
        self.batch = graph.spec.train.batch
        init, update = _sgd(graph)
        self.params = {k: jnp.asarray(np.asarray(v, np.float32)) for k, v in weights.items()}
        self.velocity = init(self.params)

        needed = set(graph.inputs) | {loss.target for loss in graph.spec.losses}
        # float32 features; int32 labels (JAX's default integer, without x64)
        arrays = {k: np.asarray(v, np.float32 if v.dtype.kind == "f" else np.int32)
                  for k, v in data.items() if k in needed}
        self.count = len(next(iter(arrays.values())))

        def step(params, velocity, batch):
            loss, grads = jax.value_and_grad(loss_fn)(params, batch, graph)
            params, velocity = update(params, grads, velocity)
            return params, velocity, loss

        # donated: each step's new parameters and velocities reuse the old buffers
        self._step = jax.jit(step, donate_argnums=(0, 1))
        full = self.count // self.batch * self.batch
        # the data is split (or stacked) once here, so an epoch times training, not slicing
        if variant == "jit":
            self._batches = [{k: jnp.asarray(v[s:s + self.batch]) for k, v in arrays.items()}
                             for s in range(0, self.count, self.batch)]
        else:
            def run(params, velocity, stacked):
                def body(carry, batch):
                    params, velocity, loss = step(*carry, batch)
                    return (params, velocity), loss
                (params, velocity), losses = lax.scan(body, (params, velocity), stacked)
                return params, velocity, losses

            self._epoch = jax.jit(run, donate_argnums=(0, 1))
            self._stacked = {k: jnp.asarray(v[:full].reshape(full // self.batch, self.batch, *v.shape[1:]))
                             for k, v in arrays.items()}
            # the last partial batch, if any, goes through the step function
            self._rest = {k: jnp.asarray(v[full:]) for k, v in arrays.items()} if full < self.count else None
        self.epoch()  # warm up (and compile)

    def epoch(self) -> None:
        params, velocity = self.params, self.velocity
        if self.variant == "jit":
            for batch in self._batches:
                params, velocity, _ = self._step(params, velocity, batch)
        else:
            if len(next(iter(self._stacked.values()))):
                params, velocity, _ = self._epoch(params, velocity, self._stacked)
            if self._rest is not None:
                params, velocity, _ = self._step(params, velocity, self._rest)
        self.params, self.velocity = jax.block_until_ready((params, velocity))
