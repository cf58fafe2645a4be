"""The float64 NumPy oracle of test_ops.py, test_optim.py and test_sharing.py (STYLE.md section 12:
stumpy's `tests/naive.py`, ONNX's `reference/ops`): losses, optimizers, and a whole network run
layer by layer.

Each op's own reference lives with the op (netc/ops/<family>.py, `OpDef.reference`): plain
numpy, written to be read, sharing nothing with the compiler or its kernels, so a bug in the
generated code cannot hide behind its oracle. Those references are themselves checked against
finite differences (test_op_contract.py) and, where it is installed, PyTorch.

Conventions:
- n is the batch size; images are (n, C, H, W), feature vectors (n, F).
- Parameters use PyTorch's layout: linear weight (O, I), conv weight (F, C, KH, KW).
- Losses return (mean loss over the batch, gradient of that mean wrt their input).
- Optimizers follow torch.optim: one step on one tensor, with a per-tensor `state` dict.

`network_forward` / `network_backward` run a whole spec's layers (from the parsed YAML) by
calling the op references one by one.
"""

from __future__ import annotations

import numpy as np

from netc.ops import REGISTRY

# ============================================================================ helpers


def numeric_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f() wrt every entry of x (changed in place, then restored)."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        saved = x[i]
        x[i] = saved + eps
        up = f()
        x[i] = saved - eps
        down = f()
        x[i] = saved
        g[i] = (up - down) / (2 * eps)
    return g


def one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    # labels (n,) int -> (n, classes) float64
    out = np.zeros((len(labels), classes))
    out[np.arange(len(labels)), labels] = 1.0
    return out


# ============================================================================ losses (mean over the batch)


def mse_loss(y, t):
    # y (n, ...)  t: like y, or (n,) integer labels (one-hot encoded)  ->  0.5 * ||y - t||^2 per sample, mean
    n = len(y)
    if t.dtype.kind in "iu":
        t = one_hot(t, y.shape[1])
    diff = y - t
    return 0.5 * np.sum(diff * diff) / n, diff / n


def _per_step(loss):
    """A loss on scores (n, T, K) with a label at every step (n, T): the same loss over the n * T rows
    (PyTorch's F.cross_entropy(z.reshape(-1, K), labels.reshape(-1)))."""
    def on_rows(z, labels):
        if z.ndim == 2:
            return loss(z, labels)
        value, dz = loss(z.reshape(-1, z.shape[-1]), labels.reshape(-1))
        return value, dz.reshape(z.shape)
    return on_rows


@_per_step
def cross_entropy_loss(z, labels):
    # z (n, K) logits, labels (n,)  ->  -mean log softmax(z)[label], dz = (softmax(z) - onehot) / n
    n, k = z.shape
    m = z.max(axis=1, keepdims=True)
    logp = z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))
    loss = -logp[np.arange(n), labels].mean()
    return loss, (np.exp(logp) - one_hot(labels, k)) / n


@_per_step
def nll_loss(logp, labels):
    # logp (n, K) log-probabilities  ->  -mean logp[label], dlogp = -onehot / n
    n, k = logp.shape
    return -logp[np.arange(n), labels].mean(), -one_hot(labels, k) / n


LOSSES = {"mse": mse_loss, "cross_entropy": cross_entropy_loss, "nll": nll_loss}


# ============================================================================ optimizers (torch.optim semantics)
# One step on one tensor: (p, g, state) -> new p; `state` starts as {} and is updated in place.


def sgd_step(p, g, state, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    d = g + weight_decay * p
    if momentum != 0:
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = d.copy()  # torch: the first buffer is the gradient itself
        else:
            state["momentum_buffer"] = momentum * state["momentum_buffer"] + d  # dampening 0
        buf = state["momentum_buffer"]
        d = d + momentum * buf if nesterov else buf
    return p - lr * d


def rmsprop_step(p, g, state, lr, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0):
    d = g + weight_decay * p
    state["square_avg"] = alpha * state.get("square_avg", np.zeros_like(p)) + (1 - alpha) * d * d
    avg = np.sqrt(state["square_avg"]) + eps
    if momentum > 0:
        state["momentum_buffer"] = momentum * state.get("momentum_buffer", np.zeros_like(p)) + d / avg
        return p - lr * state["momentum_buffer"]
    return p - lr * d / avg


def adam_step(p, g, state, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    beta1, beta2 = betas
    d = g + weight_decay * p  # L2 penalty in the gradient (Adam, not AdamW)
    state["step"] = state.get("step", 0) + 1
    state["exp_avg"] = beta1 * state.get("exp_avg", np.zeros_like(p)) + (1 - beta1) * d
    state["exp_avg_sq"] = beta2 * state.get("exp_avg_sq", np.zeros_like(p)) + (1 - beta2) * d * d
    correction1 = 1 - beta1 ** state["step"]
    correction2 = 1 - beta2 ** state["step"]
    denom = np.sqrt(state["exp_avg_sq"]) / np.sqrt(correction2) + eps
    return p - (lr / correction1) * state["exp_avg"] / denom


class Optimizer:
    """A spec's `optimizer:` dict applied to named tensors, with `lr_mult` per tensor."""

    def __init__(self, config: dict):
        self.config = dict(config)
        self.kind = self.config.pop("type")
        self.lr = self.config.pop("lr")
        self.state: dict[str, dict] = {}

    def step(self, params: dict, grads: dict, lr_mult: dict | None = None) -> dict:
        """New values of the tensors in `grads` (others are returned unchanged)."""
        out = dict(params)
        for name, g in grads.items():
            lr = self.lr * (lr_mult or {}).get(name, 1.0)
            state = self.state.setdefault(name, {})
            if self.kind == "sgd":
                out[name] = sgd_step(params[name], g, state, lr, **self.config)
            elif self.kind == "rmsprop":
                out[name] = rmsprop_step(params[name], g, state, lr, **self.config)
            else:
                out[name] = adam_step(params[name], g, state, lr, **self.config)
        return out


# ============================================================================ a whole network


def _names(layers: list[dict]) -> list[str]:
    return [layer.get("name", f"{layer['op']}{i}") for i, layer in enumerate(layers)]


def _inputs_of(spec: dict) -> list[list[str]]:
    """Each layer's input tensors (default: the previous layer, or the first float input)."""
    previous = next((name for name, inp in spec["inputs"].items() if inp.get("dtype", "float32") == "float32"), None)
    result = []
    for name, layer in zip(_names(spec["layers"]), spec["layers"]):
        refs = layer.get("in", previous)
        result.append([refs] if isinstance(refs, str) else list(refs))
        previous = name
    return result


def param_owner(spec: dict, name: str) -> str:
    """The layer whose tensors `name` uses (following `share:`)."""
    by_name = dict(zip(_names(spec["layers"]), spec["layers"]))
    while "share" in by_name[name]:
        name = by_name[name]["share"]
    return name


def op_forward(layer: dict, xs: list, params: dict | None = None):
    """One op's reference forward, from its layer mapping (e.g. {"op": "tanh"})."""
    return REGISTRY[layer["op"]].reference.forward(_layer(layer), xs, params or {})


def op_backward(layer: dict, xs: list, dy, params: dict | None = None):
    """(input gradients, parameter gradients) of one op's reference."""
    y = op_forward(layer, xs, params)
    return REGISTRY[layer["op"]].reference.backward(_layer(layer), xs, y, dy, params or {})


def linear_forward(x, w, b=None):
    return op_forward({"op": "linear", "out": w.shape[0], "bias": b is not None}, [x],
                      {"weight": w} if b is None else {"weight": w, "bias": b})


def linear_backward(dy, x, w, has_bias=True):
    """(dx, dw, db or None)"""
    params = {"weight": w, "bias": np.zeros(w.shape[0])} if has_bias else {"weight": w}
    (dx,), grads = op_backward({"op": "linear", "out": w.shape[0], "bias": has_bias}, [x], dy, params)
    return dx, grads["weight"], grads.get("bias")


def tanh_forward(x):
    return op_forward({"op": "tanh"}, [x])


def tanh_backward(dy, y):
    return dy * (1.0 - y * y)


def _layer(layer: dict):
    """The layer as its op's spec class validates it (defaults filled in), which op references read."""
    return REGISTRY[layer["op"]].spec.model_validate(layer)


# the parameter tensors ops have: most a weight and a bias; the recurrent ones PyTorch's four
PARAM_NAMES = ("weight", "bias", "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


def _params(spec, weights, name, layer) -> tuple[str, dict]:
    """(owner, {"weight": array, ...}): the tensors of the layer's parameter owner that exist."""
    owner = param_owner(spec, name) if name in _names(spec["layers"]) else name
    found = {p: weights[f"{owner}.{p}"] for p in PARAM_NAMES if f"{owner}.{p}" in weights}
    if not layer.get("bias", True):
        found.pop("bias", None)
    return owner, found


def network_forward(spec: dict, weights: dict, arrays: dict, training: bool = False,
                    states: dict | None = None) -> dict:
    """Every tensor's value, evaluated layer by layer in spec order by each op's numpy reference
    (netc/ops/: `OpDef.reference`; dropout at eval: the identity).

    spec: the parsed YAML; weights: {"fc1.weight": array, ...}; arrays: the inputs, (n, *shape)."""
    values = {name: np.asarray(arrays[name], dtype=np.float64) for name, inp in spec["inputs"].items()
              if inp.get("dtype", "float32") == "float32"}
    values.update({name: np.asarray(arrays[name], dtype=np.int64) for name, inp in spec["inputs"].items()
                   if "indices" in inp})  # what an embedding looks up
    for name, layer, refs in zip(_names(spec["layers"]), spec["layers"], _inputs_of(spec)):
        _, params = _params(spec, weights, name, layer)
        xs = [values[r] for r in refs]
        values[name] = REGISTRY[layer["op"]].reference.forward(_layer(layer), xs, params,
                                                                **_mode(layer, xs, weights, name, training, states))
    return values


def _mode(layer: dict, xs: list, weights: dict, name: str, training: bool = False, states: dict | None = None) -> dict:
    """The mode of ops that have one (evaluation by default) and their state tensors: from `states`
    (name -> {tensor: array}, kept across calls so a training forward's updates can be read), else
    from `weights` (a state_dict), else as a new model starts them (batch norm: mean 0, variance 1)."""
    op = REGISTRY[layer["op"]]
    if not op.reference.modes:
        return {}
    states = {} if states is None else states
    if name not in states:
        tensors = op.state(_layer(layer), [x.shape[1:] for x in xs])
        states[name] = {key: np.asarray(weights.get(f"{name}.{key}", np.full(t.shape, t.initial)), np.float64)
                        for key, t in tensors.items()}
    return {"training": training, "state": states[name]}


def network_backward(spec: dict, weights: dict, arrays: dict, values: dict, training: bool = False,
                     states: dict | None = None) -> tuple[float, dict]:
    """(mean loss, gradient of every parameter tensor by owner name): the loss's gradient
    pushed back layer by layer in reverse spec order; a tensor read by several layers
    (or shared parameters used by several layers) sums the contributions."""
    loss_spec = spec["loss"]
    loss, dy_loss = LOSSES[loss_spec["op"]](values[loss_spec["input"]], np.asarray(arrays[loss_spec["target"]]))
    dvalues = {loss_spec["input"]: dy_loss}
    grads: dict[str, np.ndarray] = {}

    def add_grad(table, key, g):
        table[key] = table[key] + g if key in table else g

    for name, layer, refs in reversed(list(zip(_names(spec["layers"]), spec["layers"], _inputs_of(spec)))):
        if name not in dvalues:
            continue
        owner, params = _params(spec, weights, name, layer)
        xs = [values[r] for r in refs]
        dxs, dparams = REGISTRY[layer["op"]].reference.backward(
            _layer(layer), xs, values[name], dvalues[name], params, **_mode(layer, xs, weights, name, training, states))
        for pname, g in dparams.items():
            add_grad(grads, f"{owner}.{pname}", g)
        for ref, dx in zip(refs, dxs):
            add_grad(dvalues, ref, dx)
    return float(loss), grads


def network_loss_and_gradients(spec: dict, weights: dict, arrays: dict, training: bool = False,
                               states: dict | None = None) -> tuple[float, np.ndarray, dict]:
    """(mean loss, the loss input's value (what Model.predict returns, flattened per sample), parameter gradients).
    `training`: ops with a mode in training mode (batch statistics); their updated state lands in `states`."""
    states = {} if states is None else states
    values = network_forward(spec, weights, arrays, training, states)
    loss, grads = network_backward(spec, weights, arrays, values, training, states)
    scores = values[spec["loss"]["input"]]
    return loss, scores.reshape(len(scores), -1), grads
