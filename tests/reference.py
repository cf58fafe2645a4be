"""Plain NumPy reference implementations of every netc op, loss and optimizer, in float64.

The oracle of test_ops.py, test_optim.py and test_sharing.py (STYLE.md section 12:
stumpy's `tests/naive.py`, ONNX's `reference/ops`). Written to be read, not to be
fast, and independent of netc: nothing here imports it, so a bug shared by the
compiler and its oracle cannot hide.

Conventions:
- n is the batch size; images are (n, C, H, W), feature vectors (n, F).
- Parameters use PyTorch's layout: linear weight (O, I), conv weight (F, C, KH, KW).
- Each op has a `<op>_forward` and a `<op>_backward`; a backward takes the gradient of
  the op's output (`dy`) and returns the gradients of its inputs (and parameters).
- Losses return (mean loss over the batch, gradient of that mean wrt their input).
- Optimizers follow torch.optim: one step on one tensor, with a per-tensor `state` dict.

At the end, `network_forward` / `network_backward` run a whole spec's layers (as a
parsed YAML dict, not netc's pydantic model) by calling these functions one by one.
"""

from __future__ import annotations

import numpy as np

# ============================================================================ helpers


def pair(value) -> tuple[int, int]:
    """k or [kh, kw] -> (kh, kw)."""
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def window_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a sliding window (floor mode, as PyTorch)."""
    return (size + 2 * padding - kernel) // stride + 1


def one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    # labels (n,) int -> (n, classes) float64
    out = np.zeros((len(labels), classes))
    out[np.arange(len(labels)), labels] = 1.0
    return out


# ============================================================================ linear


def linear_forward(x, w, b=None):
    # x (n, I)  w (O, I)  b (O,) or None  ->  y (n, O)
    y = x @ w.T
    if b is not None:
        y = y + b
    return y


def linear_backward(dy, x, w, has_bias=True):
    # dy (n, O)  x (n, I)  w (O, I)  ->  dx (n, I), dw (O, I), db (O,) or None
    dx = dy @ w
    dw = dy.T @ x
    db = dy.sum(axis=0) if has_bias else None
    return dx, dw, db


# ============================================================================ conv2d (cross-correlation)


def conv2d_forward(x, w, b=None, stride=1, padding=0):
    # x (n, C, H, W)  w (F, C, KH, KW)  b (F,) or None  ->  y (n, F, OH, OW)
    sh, sw = pair(stride)
    ph, pw = pair(padding)
    n, _, h, width = x.shape
    f, _, kh, kw = w.shape
    oh, ow = window_out(h, kh, sh, ph), window_out(width, kw, sw, pw)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))  # (n, C, H+2ph, W+2pw), zeros around
    y = np.zeros((n, f, oh, ow))
    for i in range(oh):
        for j in range(ow):
            window = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]  # (n, C, KH, KW)
            y[:, :, i, j] = np.einsum("nckl,fckl->nf", window, w)
    if b is not None:
        y += b[None, :, None, None]
    return y


def conv2d_backward(dy, x, w, stride=1, padding=0, has_bias=True):
    # dy (n, F, OH, OW)  x (n, C, H, W)  w (F, C, KH, KW)  ->  dx (n, C, H, W), dw (F, C, KH, KW), db (F,) or None
    sh, sw = pair(stride)
    ph, pw = pair(padding)
    _, _, h, width = x.shape
    _, _, kh, kw = w.shape
    _, _, oh, ow = dy.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dxp = np.zeros_like(xp)  # (n, C, H+2ph, W+2pw)
    dw = np.zeros_like(w)
    for i in range(oh):
        for j in range(ow):
            rows, cols = slice(i * sh, i * sh + kh), slice(j * sw, j * sw + kw)
            g = dy[:, :, i, j]  # (n, F)
            dw += np.einsum("nf,nckl->fckl", g, xp[:, :, rows, cols])
            dxp[:, :, rows, cols] += np.einsum("nf,fckl->nckl", g, w)
    dx = dxp[:, :, ph:ph + h, pw:pw + width]  # padding cells have no input to pass their gradient to
    db = dy.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dw, db


# ============================================================================ pooling


def _pool_geometry(x_shape, kernel, stride, padding):
    kh, kw = pair(kernel)
    sh, sw = pair(kernel if stride is None else stride)
    ph, pw = pair(padding)
    _, _, h, width = x_shape
    return kh, kw, sh, sw, ph, pw, window_out(h, kh, sh, ph), window_out(width, kw, sw, pw)


def maxpool2d_forward(x, kernel, stride=None, padding=0):
    # x (n, C, H, W)  ->  y (n, C, OH, OW); padding cells are -inf (they never win)
    kh, kw, sh, sw, ph, pw, oh, ow = _pool_geometry(x.shape, kernel, stride, padding)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    y = np.zeros(x.shape[:2] + (oh, ow))
    for i in range(oh):
        for j in range(ow):
            y[:, :, i, j] = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw].max(axis=(2, 3))
    return y


def maxpool2d_backward(dy, x, kernel, stride=None, padding=0):
    # dy (n, C, OH, OW)  x (n, C, H, W)  ->  dx (n, C, H, W): each output's gradient goes to its
    # window's maximum (the first one in row-major order on a tie)
    kh, kw, sh, sw, ph, pw, oh, ow = _pool_geometry(x.shape, kernel, stride, padding)
    n, c, h, width = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    dxp = np.zeros_like(xp)
    for s in range(n):
        for ch in range(c):
            for i in range(oh):
                for j in range(ow):
                    window = xp[s, ch, i * sh:i * sh + kh, j * sw:j * sw + kw]  # (KH, KW)
                    wi, wj = np.unravel_index(np.argmax(window), window.shape)
                    dxp[s, ch, i * sh + wi, j * sw + wj] += dy[s, ch, i, j]
    return dxp[:, :, ph:ph + h, pw:pw + width]


def _avgpool_counts(x_shape, kernel, stride, padding):
    # (OH, OW): the number of real (non-padding) cells under each window
    kh, kw, sh, sw, ph, pw, oh, ow = _pool_geometry(x_shape, kernel, stride, padding)
    real = np.pad(np.ones(x_shape[2:]), ((ph, ph), (pw, pw)))  # 1 on input cells, 0 on padding
    counts = np.zeros((oh, ow))
    for i in range(oh):
        for j in range(ow):
            counts[i, j] = real[i * sh:i * sh + kh, j * sw:j * sw + kw].sum()
    return counts


def avgpool2d_forward(x, kernel, stride=None, padding=0):
    # x (n, C, H, W)  ->  y (n, C, OH, OW); padding cells are not counted (PyTorch count_include_pad=False)
    kh, kw, sh, sw, ph, pw, oh, ow = _pool_geometry(x.shape, kernel, stride, padding)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    counts = _avgpool_counts(x.shape, kernel, stride, padding)  # (OH, OW)
    y = np.zeros(x.shape[:2] + (oh, ow))
    for i in range(oh):
        for j in range(ow):
            y[:, :, i, j] = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw].sum(axis=(2, 3)) / counts[i, j]
    return y


def avgpool2d_backward(dy, x, kernel, stride=None, padding=0):
    # dy (n, C, OH, OW)  x (n, C, H, W)  ->  dx (n, C, H, W): each output's gradient shared by its real cells
    kh, kw, sh, sw, ph, pw, oh, ow = _pool_geometry(x.shape, kernel, stride, padding)
    _, _, h, width = x.shape
    counts = _avgpool_counts(x.shape, kernel, stride, padding)
    dxp = np.zeros(x.shape[:2] + (h + 2 * ph, width + 2 * pw))
    for i in range(oh):
        for j in range(ow):
            share = dy[:, :, i, j] / counts[i, j]  # (n, C)
            dxp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw] += share[:, :, None, None]
    return dxp[:, :, ph:ph + h, pw:pw + width]  # what landed on padding is dropped


# ============================================================================ shape ops


def flatten_forward(x):
    # x (n, ...)  ->  y (n, prod(...))
    return x.reshape(len(x), -1)


def flatten_backward(dy, x_shape):
    # dy (n, prod(...))  ->  dx (n, ...)
    return dy.reshape(x_shape)


def reshape_forward(x, shape):
    # x (n, ...)  ->  y (n, *shape); one entry of shape may be -1
    return x.reshape((len(x), *shape))


def reshape_backward(dy, x_shape):
    return dy.reshape(x_shape)


def identity_forward(x):
    return x.copy()


def identity_backward(dy):
    return dy.copy()


def dropout_forward(x, p, training=False, rng=None):
    # x (n, ...)  ->  y, mask (both like x); at eval (or p = 0) the identity
    if not training or p == 0:
        mask = np.ones_like(x)
    else:
        mask = (rng.random(x.shape) >= p) / (1 - p)  # inverted dropout: kept units scaled by 1/(1-p)
    return x * mask, mask


def dropout_backward(dy, mask):
    return dy * mask


# ============================================================================ activations


def relu_forward(x):
    return np.maximum(x, 0.0)


def relu_backward(dy, x):
    # dy, x (n, ...) -> dx; the derivative at exactly 0 is taken as 0 (as PyTorch)
    return dy * (x > 0)


def sigmoid_forward(x):
    return 1.0 / (1.0 + np.exp(-x))


def sigmoid_backward(dy, y):
    # y = sigmoid(x)
    return dy * y * (1.0 - y)


def tanh_forward(x):
    return np.tanh(x)


def tanh_backward(dy, y):
    # y = tanh(x)
    return dy * (1.0 - y * y)


def softmax_forward(x):
    # x (n, F) -> y (n, F), rows summing to 1
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_backward(dy, y):
    # dy, y (n, F): dx_j = y_j * (dy_j - sum_k dy_k y_k)
    return y * (dy - (dy * y).sum(axis=1, keepdims=True))


def log_softmax_forward(x):
    # x (n, F) -> y (n, F) = x - logsumexp(x)
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def log_softmax_backward(dy, y):
    # dy, y (n, F): dx_j = dy_j - softmax_j * sum_k dy_k
    return dy - np.exp(y) * dy.sum(axis=1, keepdims=True)


# ============================================================================ merging


def add_forward(*xs):
    # each x (n, ...) of one shape -> their sum
    total = np.zeros_like(xs[0])
    for x in xs:
        total = total + x
    return total


def add_backward(dy, count):
    # every input gets the whole gradient
    return [dy.copy() for _ in range(count)]


def concat_forward(xs, axis):
    # xs: (n, ...) agreeing on every axis but `axis` (counted without the batch dimension)
    return np.concatenate(xs, axis=axis + 1)


def concat_backward(dy, sizes, axis):
    # dy (n, ...) -> one slice per input; sizes: each input's length along `axis`
    return np.split(dy, np.cumsum(sizes)[:-1], axis=axis + 1)


# ============================================================================ losses (mean over the batch)


def mse_loss(y, t):
    # y (n, ...)  t: like y, or (n,) integer labels (one-hot encoded)  ->  0.5 * ||y - t||^2 per sample, mean
    n = len(y)
    if t.dtype.kind in "iu":
        t = one_hot(t, y.shape[1])
    diff = y - t
    return 0.5 * np.sum(diff * diff) / n, diff / n


def cross_entropy_loss(z, labels):
    # z (n, K) logits, labels (n,)  ->  -mean log softmax(z)[label], dz = (softmax(z) - onehot) / n
    n, k = z.shape
    logp = log_softmax_forward(z)
    loss = -logp[np.arange(n), labels].mean()
    return loss, (np.exp(logp) - one_hot(labels, k)) / n


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
    previous = next(name for name, inp in spec["inputs"].items() if inp.get("dtype", "float32") == "float32")
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


def _params(spec, weights, name, layer):
    owner = param_owner(spec, name)
    bias = weights.get(f"{owner}.bias") if layer.get("bias", True) else None
    return owner, weights[f"{owner}.weight"], bias


def network_forward(spec: dict, weights: dict, arrays: dict) -> dict:
    """Every tensor's value, evaluated layer by layer in spec order (dropout at eval: the identity).

    spec: the parsed YAML; weights: {"fc1.weight": array, ...}; arrays: the inputs, (n, *shape)."""
    values = {name: np.asarray(arrays[name], dtype=np.float64) for name, inp in spec["inputs"].items()
              if inp.get("dtype", "float32") == "float32"}
    for name, layer, refs in zip(_names(spec["layers"]), spec["layers"], _inputs_of(spec)):
        xs = [values[r] for r in refs]
        x = xs[0]
        op = layer["op"]
        if op == "linear":
            _, w, b = _params(spec, weights, name, layer)
            y = linear_forward(x, w, b)
        elif op == "conv2d":
            _, w, b = _params(spec, weights, name, layer)
            y = conv2d_forward(x, w, b, layer.get("stride", 1), layer.get("padding", 0))
        elif op == "maxpool2d":
            y = maxpool2d_forward(x, layer["kernel"], layer.get("stride"), layer.get("padding", 0))
        elif op == "avgpool2d":
            y = avgpool2d_forward(x, layer["kernel"], layer.get("stride"), layer.get("padding", 0))
        elif op == "flatten":
            y = flatten_forward(x)
        elif op == "reshape":
            y = reshape_forward(x, layer["shape"])
        elif op == "identity":
            y = identity_forward(x)
        elif op == "dropout":
            y, _ = dropout_forward(x, layer.get("p", 0.5), training=False)
        elif op in ("relu", "sigmoid", "tanh", "softmax", "log_softmax"):
            y = FORWARD[op](x)
        elif op == "add":
            y = add_forward(*xs)
        elif op == "concat":
            y = concat_forward(xs, layer.get("axis", 0))
        else:
            raise NotImplementedError(op)
        values[name] = y
    return values


FORWARD = {"relu": relu_forward, "sigmoid": sigmoid_forward, "tanh": tanh_forward, "softmax": softmax_forward,
           "log_softmax": log_softmax_forward}


def network_backward(spec: dict, weights: dict, arrays: dict, values: dict) -> tuple[float, dict]:
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
        dy = dvalues[name]
        xs = [values[r] for r in refs]
        x = xs[0]
        op = layer["op"]
        dxs = None
        if op == "linear":
            owner, w, b = _params(spec, weights, name, layer)
            dx, dw, db = linear_backward(dy, x, w, b is not None)
            dxs = [dx]
        elif op == "conv2d":
            owner, w, b = _params(spec, weights, name, layer)
            dx, dw, db = conv2d_backward(dy, x, w, layer.get("stride", 1), layer.get("padding", 0), b is not None)
            dxs = [dx]
        if op in ("linear", "conv2d"):
            add_grad(grads, f"{owner}.weight", dw)
            if db is not None:
                add_grad(grads, f"{owner}.bias", db)
        elif op == "maxpool2d":
            dxs = [maxpool2d_backward(dy, x, layer["kernel"], layer.get("stride"), layer.get("padding", 0))]
        elif op == "avgpool2d":
            dxs = [avgpool2d_backward(dy, x, layer["kernel"], layer.get("stride"), layer.get("padding", 0))]
        elif op in ("flatten", "reshape"):
            dxs = [flatten_backward(dy, x.shape)]
        elif op == "identity":
            dxs = [identity_backward(dy)]
        elif op == "dropout":
            dxs = [dropout_backward(dy, np.ones_like(x))]
        elif op == "relu":
            dxs = [relu_backward(dy, x)]
        elif op == "sigmoid":
            dxs = [sigmoid_backward(dy, values[name])]
        elif op == "tanh":
            dxs = [tanh_backward(dy, values[name])]
        elif op == "softmax":
            dxs = [softmax_backward(dy, values[name])]
        elif op == "log_softmax":
            dxs = [log_softmax_backward(dy, values[name])]
        elif op == "add":
            dxs = add_backward(dy, len(refs))
        elif op == "concat":
            axis = layer.get("axis", 0)
            dxs = concat_backward(dy, [v.shape[axis + 1] for v in xs], axis)
        for ref, dx in zip(refs, dxs):
            add_grad(dvalues, ref, dx)
    return float(loss), grads


def network_loss_and_gradients(spec: dict, weights: dict, arrays: dict) -> tuple[float, np.ndarray, dict]:
    """(mean loss, the loss input's value (what Model.predict returns, flattened per sample), parameter gradients)."""
    values = network_forward(spec, weights, arrays)
    loss, grads = network_backward(spec, weights, arrays, values)
    scores = values[spec["loss"]["input"]]
    return loss, scores.reshape(len(scores), -1), grads
