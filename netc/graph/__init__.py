"""Graph IR, its construction from a spec, and shape inference."""

from netc.graph.build import build_graph
from netc.graph.ir import Graph, Node

__all__ = ["Graph", "Node", "build_graph"]
