"""conv2d, maxpool2d, avgpool2d over [C, H, W] inputs."""

from netc.ops.base import OpDef, OpShapeError, conv_out, need_rank, pair, register


def conv_geometry(layer, shape):
    """(kh, kw, sh, sw, ph, pw) of a conv or pool layer."""
    kh, kw = pair(layer.kernel)
    stride = layer.stride if layer.stride is not None else layer.kernel
    sh, sw = pair(stride)
    ph, pw = pair(layer.padding)
    return kh, kw, sh, sw, ph, pw


def _window_out(layer, shape, what):
    need_rank(shape, 3, what, "conv and pool layers read [channels, height, width]")
    _, h, w = shape
    kh, kw, sh, sw, ph, pw = conv_geometry(layer, shape)
    if kh > h + 2 * ph or kw > w + 2 * pw:
        raise OpShapeError(
            f"kernel {kh}x{kw} is larger than its input {h}x{w} (padding {ph}x{pw})",
            field="kernel",
            hint="use a smaller kernel, add padding, or remove a pooling layer before this one",
        )
    if what != "conv2d" and (ph * 2 > kh or pw * 2 > kw):
        raise OpShapeError(f"padding {ph}x{pw} is more than half the window {kh}x{kw}", field="padding")
    return conv_out(h, kh, sh, ph), conv_out(w, kw, sw, pw)


def _conv_infer(layer, shapes):
    (shape,) = shapes
    oh, ow = _window_out(layer, shape, "conv2d")
    return (layer.filters, oh, ow)


def _conv_params(layer, shapes):
    kh, kw = pair(layer.kernel)
    params = {"weight": (layer.filters, shapes[0][0], kh, kw)}
    if layer.bias:
        params["bias"] = (layer.filters,)
    return params


def _conv_macs(layer, shapes, out):
    kh, kw = pair(layer.kernel)
    return out[0] * out[1] * out[2] * shapes[0][0] * kh * kw


def _pool_infer(layer, shapes):
    (shape,) = shapes
    oh, ow = _window_out(layer, shape, layer.op)
    return (shape[0], oh, ow)


CONV2D = register(OpDef("conv2d", 1, 1, _conv_infer, _conv_params, _conv_macs))
MAXPOOL2D = register(OpDef("maxpool2d", 1, 1, _pool_infer))
AVGPOOL2D = register(OpDef("avgpool2d", 1, 1, _pool_infer))


def conv_dims(node, in_shape) -> dict:
    """Every size a conv/pool kernel needs, by the names the kernels use."""
    c, h, w = in_shape
    kh, kw, sh, sw, ph, pw = conv_geometry(node.layer, in_shape)
    oh, ow = node.shape[1], node.shape[2]
    dims = dict(C=c, H=h, W=w, KH=kh, KW=kw, SH=sh, SW=sw, PH=ph, PW=pw, OH=oh, OW=ow)
    if node.op == "conv2d":
        dims["F"] = node.layer.filters
    return dims
