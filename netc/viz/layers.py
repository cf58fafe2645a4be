"""The layer a picture is of: found by name and checked for its kind, with errors that point at the
spec and name the layers that would do (shared by the filters and patches pictures)."""

from __future__ import annotations

from netc.errors import did_you_mean
from netc.viz.errors import viz_error


def layer_node(loaded, graph, layer: str, ops: tuple[str, ...], what: str, maps: bool = False):
    """The graph node of `layer`, which must be one of `ops` (and give feature maps [C, H, W] when
    `maps`); errors point at the spec and name the layers that would do."""
    names = [node.name for node in graph.nodes]

    def fits(node) -> bool:
        return node.op in ops and (not maps or len(node.shape or ()) == 3)

    if layer not in graph.by_name:
        fitting = [n.name for n in graph.nodes if fits(n)] or names
        raise viz_error(f"no layer named '{layer}' in {graph.spec.name}", loaded.smap.locate(("layers",)),
                        did_you_mean(layer, fitting, what), "layers")
    node = graph.by_name[layer]
    if not fits(node):
        fitting = [n.name for n in graph.nodes if fits(n)]
        hint = f"{what}: {', '.join(fitting)}" if fitting else f"{graph.spec.name} has no {what}"
        if node.op not in ops:
            message = f"layer '{layer}' is a {node.op} layer, not {' or '.join(ops[:3])}"
        else:
            message = f"layer '{layer}' gives {list(node.shape)}, not feature maps [channels, height, width]"
        raise viz_error(message, loaded.smap.locate(node.spec_path), hint, node.spec_path_text)
    return node
