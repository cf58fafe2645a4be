"""A PyTorch module equivalent to a netc graph, for benchmarks and comparisons.

Parameters are named like netc's checkpoints (`fc1.weight`), so
`module.load_state_dict(netc_model.get_weights())` gives both the same start.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from netc.ops.conv import conv_geometry


_RECURRENT = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class GraphModule(nn.Module):
    def __init__(self, graph):
        super().__init__()
        self.graph = graph
        self.layers = nn.ModuleDict()
        for node in graph.owners:
            layer = node.layer
            if node.op == "linear":
                self.layers[node.name] = nn.Linear(node.param_shapes["weight"][1], layer.out, bias=layer.bias)
            elif node.op in _RECURRENT:  # parameters weight_ih_l0, ... as netc names them
                self.layers[node.name] = _RECURRENT[node.op](node.param_shapes["weight_ih_l0"][1], layer.hidden,
                                                             bias=layer.bias, batch_first=True)
            else:  # conv2d
                kh, kw, sh, sw, ph, pw = conv_geometry(layer, None)
                self.layers[node.name] = nn.Conv2d(node.param_shapes["weight"][1], layer.filters, (kh, kw),
                                                   stride=(sh, sw), padding=(ph, pw), bias=layer.bias)

    def state_dict_names(self) -> dict[str, str]:
        return {f"layers.{k}": k for k in self.layers}

    def load_netc_weights(self, weights: dict) -> None:
        self.load_state_dict({f"layers.{name}": torch.from_numpy(value.copy()) for name, value in weights.items()})

    def forward(self, **inputs):
        values = dict(inputs)
        for node in self.graph.nodes:
            xs = [values[name] for name in node.inputs]
            x = xs[0]
            op, layer = node.op, node.layer
            if op in ("linear", "conv2d"):
                y = self.layers[node.param_owner](x)
            elif op in _RECURRENT:
                y = self.layers[node.param_owner](x)[0]  # every step's state [N, T, H]
                y = y if layer.sequences else y[:, -1]
            elif op in ("maxpool2d", "avgpool2d"):
                kh, kw, sh, sw, ph, pw = conv_geometry(layer, None)
                if op == "maxpool2d":
                    y = F.max_pool2d(x, (kh, kw), (sh, sw), (ph, pw))
                else:
                    y = F.avg_pool2d(x, (kh, kw), (sh, sw), (ph, pw), count_include_pad=False)
            elif op == "flatten":
                y = x.flatten(1)
            elif op == "reshape":
                y = x.reshape(x.shape[0], *node.shape)
            elif op in ("relu", "sigmoid", "tanh"):
                y = getattr(torch, op)(x)
            elif op == "softmax":
                y = F.softmax(x, 1)
            elif op == "log_softmax":
                y = F.log_softmax(x, 1)
            elif op == "add":
                y = xs[0]
                for other in xs[1:]:
                    y = y + other
            elif op == "concat":
                y = torch.cat(xs, layer.axis + 1)
            elif op == "dropout":
                y = F.dropout(x, layer.p, self.training)
            else:  # identity
                y = x
            values[node.name] = y
        return values[self.graph.loss_input]


def loss_function(graph):
    """The spec's loss as a function of (output, target)."""
    op = graph.spec.loss.op
    if op == "cross_entropy":
        return F.cross_entropy
    if op == "nll":
        return F.nll_loss

    def mse(y, target):
        if target.dtype == torch.int64:
            target = F.one_hot(target, y.shape[1]).to(y.dtype)
        return 0.5 * ((y - target) ** 2).sum(1).mean()

    return mse


def optimizer_for(graph, params):
    o = graph.spec.optimizer
    if o.type == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                               weight_decay=o.weight_decay)
    if o.type == "rmsprop":
        return torch.optim.RMSprop(params, lr=o.lr, alpha=o.alpha, eps=o.eps, momentum=o.momentum,
                                   weight_decay=o.weight_decay)
    return torch.optim.Adam(params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
