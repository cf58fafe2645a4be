"""netc against PyTorch: the same network, the same weights, the same batch.

Each spec is translated into a torch nn.Module by a small generic translator that walks
netc's Graph (one torch module per parameter owner, registered under the layer's name, so
the state_dict keys are exactly netc's `fc1.weight`; a `share:` layer calls its owner's
module, so the tensor is one torch parameter and its gradient is summed by autograd).
LeNet, the siamese net and new-ops (with nn.ELU, nn.LeakyReLU, nn.GELU, nn.AdaptiveAvgPool2d) are
also written out by hand, as a check on the translator.

Compared: the loss and every gradient of one random float32 batch, a few optimizer steps
(train_epoch with a fixed order vs a torch.optim loop), and a netc checkpoint loaded with
`safetensors.torch.load_file` + `load_state_dict(strict=True)`.

Compiled plans are cached on disk by netc and the Models in this module through
functools.cache; every test starts by resetting the weights (and optimizer state) it uses.
"""

from __future__ import annotations

import functools
from pathlib import Path
from textwrap import dedent

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from netc.graph import build_graph  # noqa: E402
from netc.runtime.checkpoint import save_checkpoint  # noqa: E402
from netc.runtime.model import Model  # noqa: E402
from netc.spec import load_spec, load_spec_text  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.compiled]

SPECS = Path(__file__).resolve().parent.parent / "specs"
N = 8  # batch of the gradient tests
RTOL, ATOL = 1e-4, 1e-5  # float32

torch.set_num_threads(2)

# digits-mlp without dropout (a dropout mask cannot be matched across libraries),
# Adam with L2 weight decay.
ADAM_MLP = """
netc: 1
name: adam_mlp
inputs:
  pixels: {shape: [64]}
  label: {shape: [], dtype: int64, classes: 10}
layers:
  - {name: fc1, op: linear, out: 32, weight_init: he, bias_init: {type: uniform, low: -0.1, high: 0.1}}
  - {name: relu1, op: relu}
  - {name: fc2, op: linear, out: 16, weight_init: he}
  - {name: relu2, op: relu}
  - {name: fc3, op: linear, out: 10}
loss: {op: cross_entropy, input: fc3, target: label}
optimizer: {type: adam, lr: 0.001, weight_decay: 0.01}
train: {batch: 8, seed: 0}
"""

# every other op and option the reference specs leave out: strided / rectangular / padded
# conv, a frozen layer, lr_mult, concat on channels and on width, padded max and average
# pooling, an add reading one tensor twice, reshape, softmax, mse on class labels, RMSprop
KITCHEN = """
netc: 1
name: kitchen
inputs:
  image: {shape: [2, 9, 7]}
  label: {shape: [], dtype: int64, classes: 5}
layers:
  - {name: c1, op: conv2d, in: image, filters: 4, kernel: 3, padding: 1, weight_init: he,
     bias_init: {type: normal, std: 0.1}}
  - {name: t1, op: tanh}
  - {name: c2, op: conv2d, in: image, filters: 2, kernel: [3, 1], padding: [1, 0], trainable: false,
     bias_init: {type: constant, value: 0.05}}
  - {name: cat, op: concat, in: [t1, c2]}
  - {name: mp, op: maxpool2d, in: cat, kernel: 3, stride: 2, padding: 1}
  - {name: ap, op: avgpool2d, in: cat, kernel: 3, stride: 2, padding: 1}
  - {name: sum, op: add, in: [mp, ap, mp]}
  - {name: wide, op: concat, in: [sum, ap], axis: 2}
  - {name: c3, op: conv2d, filters: 3, kernel: 2, stride: [2, 2], lr_mult: 0.5}
  - {name: s3, op: sigmoid}
  - {name: flat, op: reshape, shape: [-1]}
  - {name: fc, op: linear, out: 5, bias: false}
  - {name: sm, op: softmax}
loss: {op: mse, input: sm, target: label}
optimizer: {type: rmsprop, lr: 0.01, alpha: 0.9, momentum: 0.5, weight_decay: 0.01}
train: {batch: 8, seed: 0}
"""

# regression: mse on a float target input, identity, lr_mult 2, SGD with Nesterov momentum
REGRESS = """
netc: 1
name: regress
inputs:
  x: {shape: [5]}
  t: {shape: [3]}
layers:
  - {name: fc1, op: linear, out: 6, bias_init: {type: uniform, low: -0.5, high: 0.5}}
  - {name: act, op: tanh}
  - {name: same, op: identity}
  - {name: fc2, op: linear, out: 3, lr_mult: 2.0, weight_init: {type: xavier_normal, gain: 1.5}}
loss: {op: mse, input: fc2, target: t}
optimizer: {type: sgd, lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 0.001}
train: {batch: 8, seed: 0}
"""

# the parametrised activations and global average pooling: elu fused with its conv and the 2x2 max
# pool after it, leaky_relu fused into fc1, gelu (tanh, then exact) as their own steps; Adam.
# fc2 and fc3 start large so that the gelus read |x| ~ 1-3, where the exact and the tanh forms differ
# by up to 5e-4 (a swapped form fails the tests; near 0 they agree to 1e-6)
NEW_OPS = """
netc: 1
name: new_ops
inputs:
  image: {shape: [2, 8, 8]}
  label: {shape: [], dtype: int64, classes: 5}
layers:
  - {name: conv1, op: conv2d, filters: 4, kernel: 3, padding: 1, bias_init: {type: normal, std: 0.1}}
  - {name: elu1, op: elu, alpha: 0.7}
  - {name: pool1, op: maxpool2d, kernel: 2}
  - {name: conv2, op: conv2d, filters: 6, kernel: 3, padding: 1, bias_init: {type: normal, std: 0.1}}
  - {name: gap, op: global_avgpool2d}
  - {name: flat, op: flatten}
  - {name: fc1, op: linear, out: 16, bias_init: {type: uniform, low: -0.2, high: 0.2}}
  - {name: leaky1, op: leaky_relu, negative_slope: 0.2}
  - {name: fc2, op: linear, out: 12, weight_init: {type: normal, std: 4.0},
     bias_init: {type: uniform, low: -0.2, high: 0.2}}
  - {name: gelu2, op: gelu, approximate: tanh}
  - {name: fc3, op: linear, out: 10, weight_init: {type: normal, std: 1.0},
     bias_init: {type: uniform, low: -0.2, high: 0.2}}
  - {name: gelu3, op: gelu}
  - {name: fc4, op: linear, out: 5}
loss: {op: cross_entropy, input: fc4, target: label}
optimizer: {type: adam, lr: 0.01, weight_decay: 0.001}
train: {batch: 8, seed: 0}
"""

INLINE = {"adam-mlp": ADAM_MLP, "kitchen": KITCHEN, "regress": REGRESS, "new-ops": NEW_OPS}


# ============================================================================ netc side


@functools.cache
def graph_of(name: str):
    if name in INLINE:
        return build_graph(load_spec_text(dedent(INLINE[name]).lstrip("\n"), f"{name}.yaml"))
    return build_graph(load_spec(SPECS / f"{name}.yaml"))


@functools.cache
def model_of(name: str, batch: int = N) -> Model:
    return Model(graph_of(name), dtype="float32", batch=batch, seed=0)


@functools.cache
def initial_weights(name: str, batch: int = N) -> dict[str, np.ndarray]:
    """The weights netc initialised from the spec's seed (before any test touched the model)."""
    return model_of(name, batch).get_weights()


def reset(name: str, batch: int = N) -> Model:
    """The cached model with its initial weights, zeroed optimizer state and step 0."""
    model = model_of(name, batch)
    model.set_weights(initial_weights(name, batch), strict=True)
    model.set_optimizer_state({k: np.zeros_like(v) for k, v in model.optimizer_state().items()}, 0)
    return model


def random_batch(graph, n: int, seed: int) -> dict[str, np.ndarray]:
    """Standard-normal float inputs and uniform class labels."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, spec in graph.spec.inputs.items():
        if spec.dtype == "int64":
            arrays[name] = rng.integers(0, spec.classes, n).astype(np.int64)
        else:
            arrays[name] = rng.standard_normal((n, *spec.shape)).astype(np.float32)
    return arrays


# ============================================================================ torch side


def _pair(value) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (list, tuple)) else (int(value), int(value))


class Translated(nn.Module):
    """A netc Graph as a torch module; forward returns the tensor the loss reads."""

    def __init__(self, graph):
        super().__init__()
        self.graph = graph
        for node in graph.nodes:
            if node.op not in ("linear", "conv2d") or node.owner is not None:
                continue
            layer = node.layer
            shape = graph.shape_of(node.inputs[0])
            if node.op == "linear":
                module = nn.Linear(shape[0], layer.out, bias=layer.bias)
            else:
                module = nn.Conv2d(shape[0], layer.filters, _pair(layer.kernel), stride=_pair(layer.stride),
                                   padding=_pair(layer.padding), bias=layer.bias)
            self.add_module(node.name, module)
            for p in module.parameters():
                p.requires_grad_(node.trainable)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        env = dict(inputs)
        for node in self.graph.nodes:
            layer, xs = node.layer, [env[t] for t in node.inputs]
            x = xs[0]
            op = node.op
            if op in ("linear", "conv2d"):
                y = getattr(self, node.param_owner)(x)  # a shared layer calls its owner's module
            elif op in ("maxpool2d", "avgpool2d"):
                k = _pair(layer.kernel)
                s = _pair(layer.stride) if layer.stride is not None else k
                p = _pair(layer.padding)
                if op == "maxpool2d":
                    y = F.max_pool2d(x, k, s, p, ceil_mode=False)
                else:
                    y = F.avg_pool2d(x, k, s, p, ceil_mode=False, count_include_pad=False)
            elif op == "flatten":
                y = x.flatten(1)
            elif op == "reshape":
                y = x.reshape(x.shape[0], *node.shape)
            elif op == "relu":
                y = F.relu(x)
            elif op == "sigmoid":
                y = torch.sigmoid(x)
            elif op == "tanh":
                y = torch.tanh(x)
            elif op == "leaky_relu":
                y = F.leaky_relu(x, layer.negative_slope)
            elif op == "elu":
                y = F.elu(x, layer.alpha)
            elif op == "gelu":
                y = F.gelu(x, approximate=layer.approximate)
            elif op == "global_avgpool2d":
                y = F.adaptive_avg_pool2d(x, 1)
            elif op == "softmax":
                y = F.softmax(x, dim=1)
            elif op == "log_softmax":
                y = F.log_softmax(x, dim=1)
            elif op == "identity":
                y = x
            elif op == "dropout":
                y = F.dropout(x, layer.p, self.training)
            elif op == "add":
                y = xs[0]
                for other in xs[1:]:
                    y = y + other
            elif op == "concat":
                y = torch.cat(xs, dim=layer.axis + 1)
            else:  # pragma: no cover
                raise NotImplementedError(op)
            env[node.name] = y
        return env[self.graph.loss_input]


def torch_loss(graph, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    kind = graph.spec.loss.op
    if kind == "cross_entropy":
        return F.cross_entropy(out, target)
    if kind == "nll":
        return F.nll_loss(out, target)
    if target.dtype == torch.int64:  # mse on class labels: one-hot targets
        target = F.one_hot(target, out.shape[1]).to(out.dtype)
    return 0.5 * ((out - target.reshape(out.shape)) ** 2).sum(dim=1).mean()


def to_torch(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}


def torch_twin(name: str, weights: dict[str, np.ndarray], module: nn.Module | None = None) -> nn.Module:
    """The translated module (or a given one) holding netc's weights; names must match exactly."""
    module = module if module is not None else Translated(graph_of(name))
    state = module.state_dict()
    assert set(state) == set(weights), f"torch {sorted(state)} vs netc {sorted(weights)}"
    module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()}, strict=True)
    return module


def torch_loss_and_gradients(name: str, module: nn.Module, arrays: dict[str, np.ndarray]):
    graph = graph_of(name)
    module.eval()  # dropout off, as in Model.loss_and_gradients
    module.zero_grad(set_to_none=True)
    t = to_torch(arrays)
    target = t.pop(graph.loss_target)
    out = module(t)
    loss = torch_loss(graph, out, target)
    loss.backward()
    grads = {k: p.grad.numpy().copy() for k, p in module.named_parameters() if p.requires_grad}
    return loss.item(), grads, out.detach().numpy()


def assert_close(name: str, actual, expected, what: str) -> None:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    err = np.abs(actual - expected)
    worst = np.unravel_index(np.argmax(err - ATOL - RTOL * np.abs(expected)), err.shape) if err.ndim else ()
    assert np.allclose(actual, expected, rtol=RTOL, atol=ATOL), (
        f"{name}: {what} differs: max |diff| {err.max():.3e} at {worst} "
        f"(netc {actual[worst]:.8g}, torch {expected[worst]:.8g})")


# ------------------------------------------------------------------ hand translations


class HandLeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.fc1 = nn.Linear(800, 500)
        self.fc2 = nn.Linear(500, 10)

    def forward(self, inputs):
        x = F.max_pool2d(self.conv1(inputs["image"]), 2, 2)
        x = F.max_pool2d(self.conv2(x), 2, 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class HandSiamese(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc_a = nn.Linear(64, 32)  # enc_b: `share: enc_a` -> the same module
        self.head = nn.Linear(64, 2)

    def forward(self, inputs):
        a = F.relu(self.enc_a(inputs["left"]))
        b = F.relu(self.enc_a(inputs["right"]))
        return self.head(torch.cat([a, b], dim=1))


class HandNewOps(nn.Module):
    """new-ops written with torch's modules: nn.ELU, nn.LeakyReLU, nn.GELU, nn.AdaptiveAvgPool2d."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.elu1 = nn.ELU(alpha=0.7)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(6, 16)
        self.leaky1 = nn.LeakyReLU(negative_slope=0.2)
        self.fc2 = nn.Linear(16, 12)
        self.gelu2 = nn.GELU(approximate="tanh")
        self.fc3 = nn.Linear(12, 10)
        self.gelu3 = nn.GELU()
        self.fc4 = nn.Linear(10, 5)

    def forward(self, inputs):
        x = self.gap(self.conv2(self.pool1(self.elu1(self.conv1(inputs["image"])))))
        x = self.gelu2(self.fc2(self.leaky1(self.fc1(x.flatten(1)))))
        return self.fc4(self.gelu3(self.fc3(x)))


HAND = {"lenet": HandLeNet, "siamese": HandSiamese, "new-ops": HandNewOps}


# ============================================================================ 1. loss and gradients

GRADIENT_SPECS = ["seed-mlp", "lenet", "siamese", "residual", "digits-cnn", "seed-cnn", "kitchen", "regress",
                  "new-ops"]


@pytest.mark.parametrize("name", GRADIENT_SPECS)
def test_loss_and_gradients_match_torch(name):
    graph = graph_of(name)
    model = reset(name)
    weights = model.get_weights()
    module = torch_twin(name, weights)
    arrays = random_batch(graph, N, seed=1)

    loss, grads = model.loss_and_gradients(arrays)
    t_loss, t_grads, t_out = torch_loss_and_gradients(name, module, arrays)

    assert np.isfinite(loss)
    assert_close(name, loss, t_loss, "loss")
    assert set(grads) == set(t_grads)
    for key in sorted(t_grads):
        assert grads[key].shape == t_grads[key].shape, key
        assert_close(name, grads[key], t_grads[key], f"gradient of {key}")
        assert np.abs(t_grads[key]).max() > 0 or "bias" in key, f"{key}: a zero gradient tests nothing"
    assert_close(name, model.predict(arrays), t_out, "outputs (predict)")


def test_a_layer_in_blocks_of_columns_matches_torch(monkeypatch):
    """At a batch of 32 on two cores seed-cnn's fc1 runs its GEMMs in a block of columns per core
    (netc.kernels.dense `*_parts`, under OpenBLAS's SkylakeX kernels, which the test makes the plan
    assume): the same loss, gradients and outputs as PyTorch's."""
    from netc.compiler import buffers

    monkeypatch.setenv("NETC_THREADS", "2")
    monkeypatch.setattr(buffers, "blas_small_kernels", lambda: True)
    graph = graph_of("seed-cnn")
    model = Model(graph, dtype="float32", batch=32, seed=0)
    assert "linear_forward_parts(" in model.plan.source and "linear_backward_parts(" in model.plan.source
    module = torch_twin("seed-cnn", model.get_weights())
    arrays = random_batch(graph, 32, seed=4)
    loss, grads = model.loss_and_gradients(arrays)
    t_loss, t_grads, t_out = torch_loss_and_gradients("seed-cnn", module, arrays)
    assert_close("seed-cnn", loss, t_loss, "loss")
    assert set(grads) == set(t_grads)
    # conv1's gradient comes through two max pools, whose float32 near-ties PyTorch may break otherwise
    # in a batch of 32: fc1's dx reaches conv2's gradients, which are compared
    for key in sorted(key for key in t_grads if not key.startswith("conv1.")):
        assert_close("seed-cnn", grads[key], t_grads[key], f"gradient of {key}")
    assert_close("seed-cnn", model.predict(arrays), t_out, "outputs (predict)")


@pytest.mark.parametrize("name", ["siamese", "residual", "seed-mlp"])
def test_gradients_with_nonzero_biases(name):
    """netc initialises biases to zero; random biases check the bias paths of forward too."""
    graph = graph_of(name)
    model = model_of(name)
    rng = np.random.default_rng(7)
    weights = {k: (v + 0.1 * rng.standard_normal(v.shape)).astype(np.float32)
               for k, v in initial_weights(name).items()}
    model.set_weights(weights, strict=True)
    module = torch_twin(name, weights)
    arrays = random_batch(graph, N - 3, seed=2)  # a partial batch: the mean is over 5 samples, not 8
    loss, grads = model.loss_and_gradients(arrays)
    t_loss, t_grads, _ = torch_loss_and_gradients(name, module, arrays)
    assert_close(name, loss, t_loss, "loss")
    for key in sorted(t_grads):
        assert_close(name, grads[key], t_grads[key], f"gradient of {key}")


@pytest.mark.parametrize("name", sorted(HAND))
def test_hand_written_module_matches_netc(name):
    """The translator's reading of the spec agrees with a plain hand-written torch module."""
    graph = graph_of(name)
    model = reset(name)
    weights = model.get_weights()
    module = torch_twin(name, weights, HAND[name]())
    arrays = random_batch(graph, N, seed=3)
    loss, grads = model.loss_and_gradients(arrays)
    t_loss, t_grads, _ = torch_loss_and_gradients(name, module, arrays)
    assert_close(name, loss, t_loss, "loss")
    assert set(grads) == set(t_grads)
    for key in sorted(t_grads):
        assert_close(name, grads[key], t_grads[key], f"gradient of {key}")


def test_shared_layer_is_one_parameter_with_summed_gradient():
    """siamese: enc_b uses enc_a's tensors; the gradient is the sum of both uses."""
    name = "siamese"
    graph = graph_of(name)
    model = reset(name)
    weights = model.get_weights()
    assert not any(k.startswith("enc_b.") for k in weights)
    arrays = random_batch(graph, N, seed=4)
    _, grads = model.loss_and_gradients(arrays)
    module = torch_twin(name, weights)
    _, t_grads, _ = torch_loss_and_gradients(name, module, arrays)
    assert_close(name, grads["enc_a.weight"], t_grads["enc_a.weight"], "summed gradient of enc_a.weight")
    # zeroing the right image removes enc_b's contribution to the weight gradient
    one_side = dict(arrays, right=np.zeros_like(arrays["right"]))
    _, g_one = model.loss_and_gradients(one_side)
    assert not np.allclose(g_one["enc_a.weight"], grads["enc_a.weight"]), "enc_b's use adds to the gradient"


# ============================================================================ 2. training


def torch_optimizer(graph, module: nn.Module):
    opt = graph.spec.optimizer
    groups = []
    for node in graph.owners:
        params = [p for p in getattr(module, node.name).parameters() if p.requires_grad]
        if params:
            groups.append({"params": params, "lr": opt.lr * node.lr_mult})
    if opt.type == "sgd":
        return torch.optim.SGD(groups, lr=opt.lr, momentum=opt.momentum, nesterov=opt.nesterov,
                               weight_decay=opt.weight_decay)
    if opt.type == "rmsprop":
        return torch.optim.RMSprop(groups, lr=opt.lr, alpha=opt.alpha, eps=opt.eps, momentum=opt.momentum,
                                   weight_decay=opt.weight_decay)
    return torch.optim.Adam(groups, lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps, weight_decay=opt.weight_decay)


# (spec, samples): 3 batches of N; residual's last batch is partial (8, 8, 5)
TRAINING = [("seed-mlp", 3 * N), ("residual", 3 * N - 3), ("adam-mlp", 3 * N), ("lenet", 3 * N),
            ("kitchen", 3 * N - 1), ("regress", 3 * N)]


@pytest.mark.parametrize("name,count", TRAINING)
def test_three_steps_match_torch_optim(name, count):
    graph = graph_of(name)
    model = reset(name)
    weights = model.get_weights()
    module = torch_twin(name, weights)
    arrays = random_batch(graph, count, seed=5)
    order = np.random.default_rng(6).permutation(count)

    result = model.train_epoch(model.prepare(arrays), order=order, seed=0)
    assert result.batches == 3 and not result.diverged

    optimizer = torch_optimizer(graph, module)
    module.train()
    t = to_torch(arrays)
    losses = []
    for b in range(3):
        idx = torch.from_numpy(order[b * N:(b + 1) * N])
        batch = {k: v[idx] for k, v in t.items()}
        target = batch.pop(graph.loss_target)
        optimizer.zero_grad(set_to_none=True)
        loss = torch_loss(graph, module(batch), target)
        loss.backward()
        optimizer.step()
        losses.append((loss.item(), len(idx)))

    mean = sum(value * n for value, n in losses) / count
    assert_close(name, result.loss, mean, "mean training loss of the epoch")
    trained = model.get_weights()
    state = module.state_dict()
    assert any(np.any(trained[k] != weights[k]) for k in trained), "training changed nothing"
    for node in graph.owners:
        if not node.trainable:
            for pname in node.param_shapes:
                key = f"{node.name}.{pname}"
                np.testing.assert_array_equal(trained[key], weights[key], err_msg=f"frozen {key} moved")
    for key in sorted(state):
        assert_close(name, trained[key], state[key].numpy(), f"{key} after 3 steps")
    assert model.step == 3


# ============================================================================ 3. checkpoints


def test_netc_checkpoint_loads_into_torch(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    name = "siamese"
    graph = graph_of(name)
    model = reset(name)
    # move the weights away from their initial values so the load is visible
    model.train_epoch(model.prepare(random_batch(graph, 2 * N, seed=8)), order=np.arange(2 * N), seed=0)
    weights = model.get_weights()
    path = tmp_path / "siamese.safetensors"
    save_checkpoint(path, weights)

    loaded = safetensors_torch.load_file(str(path))
    module = Translated(graph)
    result = module.load_state_dict(loaded, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for key, value in module.state_dict().items():
        assert value.dtype == torch.float32
        np.testing.assert_array_equal(value.numpy(), weights[key])

    hand = HandSiamese()
    hand.load_state_dict(safetensors_torch.load_file(str(path)), strict=True)
    arrays = random_batch(graph, N, seed=9)
    with torch.no_grad():
        out = hand.eval()(to_torch({k: v for k, v in arrays.items() if k != "same"})).numpy()
    assert_close(name, model.predict(arrays), out, "outputs after loading the checkpoint")


@pytest.mark.parametrize("name", ["lenet", "digits-cnn"])
def test_conv_checkpoint_loads_into_torch(tmp_path, name):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    model = reset(name)
    path = tmp_path / f"{name}.safetensors"
    save_checkpoint(path, model.get_weights())
    module = Translated(graph_of(name))
    module.load_state_dict(safetensors_torch.load_file(str(path)), strict=True)
    for key, value in module.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), model.get_weights()[key])


# ============================================================================ 4. the parametrised activations


def test_new_ops_take_the_fused_paths():
    """What the new-ops tests exercise (no Numba): elu + the 2x2 max pool in conv1's epilogue, leaky_relu
    in fc1's, the gelus as their own steps (their backward reads the input)."""
    from netc.compiler import compile_graph

    steps = {step.node.name: step for step in compile_graph(graph_of("new-ops"), N).steps}
    assert steps["conv1"].act.op == "elu" and steps["conv1"].pool.name == "pool1"
    assert steps["fc1"].act.op == "leaky_relu"
    assert steps["gelu2"].kind == "act" and steps["gelu3"].kind == "act"
    assert all(steps[name].act is None for name in ("conv2", "fc2", "fc3", "fc4"))


def test_new_ops_five_adam_steps_match_torch_modules():
    """new-ops against HandNewOps (nn.ELU, nn.LeakyReLU, nn.GELU, nn.AdaptiveAvgPool2d): five Adam steps,
    the last on a partial batch, then the loss and gradients of the trained weights."""
    name = "new-ops"
    graph = graph_of(name)
    model = reset(name)
    weights = model.get_weights()
    module = torch_twin(name, weights, HandNewOps())
    count = 5 * N - 3
    arrays = random_batch(graph, count, seed=10)
    order = np.random.default_rng(11).permutation(count)

    result = model.train_epoch(model.prepare(arrays), order=order, seed=0)
    assert result.batches == 5 and not result.diverged and model.step == 5

    optimizer = torch_optimizer(graph, module)
    module.train()
    t = to_torch(arrays)
    losses = []
    for b in range(5):
        idx = torch.from_numpy(order[b * N:(b + 1) * N])
        batch = {k: v[idx] for k, v in t.items()}
        target = batch.pop(graph.loss_target)
        optimizer.zero_grad(set_to_none=True)
        loss = torch_loss(graph, module(batch), target)
        loss.backward()
        optimizer.step()
        losses.append((loss.item(), len(idx)))
    assert [n for _, n in losses] == [N, N, N, N, N - 3]

    assert_close(name, result.loss, sum(value * n for value, n in losses) / count, "mean training loss of the epoch")
    trained = model.get_weights()
    state = module.state_dict()
    assert set(state) == set(trained)
    for key in sorted(state):
        assert np.abs(trained[key] - weights[key]).max() > 1e-3, f"{key} barely moved: 5 steps test nothing"
        assert_close(name, trained[key], state[key].numpy(), f"{key} after 5 steps")

    # and from the trained weights: loss, every gradient and the outputs
    check = random_batch(graph, N, seed=12)
    loss, grads = model.loss_and_gradients(check)
    t_loss, t_grads, t_out = torch_loss_and_gradients(name, module, check)
    assert_close(name, loss, t_loss, "loss after 5 steps")
    assert set(grads) == set(t_grads)
    for key in sorted(t_grads):
        assert_close(name, grads[key], t_grads[key], f"gradient of {key} after 5 steps")
    assert_close(name, model.predict(check), t_out, "outputs after 5 steps")


def test_new_ops_checkpoint_loads_into_torch_modules(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    name = "new-ops"
    graph = graph_of(name)
    model = reset(name)
    model.train_epoch(model.prepare(random_batch(graph, 2 * N, seed=13)), order=np.arange(2 * N), seed=0)
    weights = model.get_weights()
    path = tmp_path / "new_ops.safetensors"
    save_checkpoint(path, weights)

    module = HandNewOps()
    result = module.load_state_dict(safetensors_torch.load_file(str(path)), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for key, value in module.state_dict().items():
        assert value.dtype == torch.float32
        np.testing.assert_array_equal(value.numpy(), weights[key])
    arrays = random_batch(graph, N, seed=14)
    with torch.no_grad():
        out = module.eval()(to_torch({k: v for k, v in arrays.items() if k != graph.loss_target})).numpy()
    assert_close(name, model.predict(arrays), out, "outputs after loading the checkpoint")
