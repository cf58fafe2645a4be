"""Spec paths: `optimizer.lr`, `train.batch`, `layers[fc1].out`, `loss[0].weight`.

A path is keys joined by dots; `[...]` after a key picks an element of a list: `[2]` by index,
`[fc1]` the element whose `name` is fc1 (a layer without a name goes by its default name,
`<op><index>`, as in the spec). Paths address the spec as written (its YAML data), so a sweep may
set a field the file leaves at its default (`optimizer.weight_decay`); what the result means is
for the spec's own validation to say.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

from netc.errors import did_you_mean

_SEGMENT = re.compile(r"(?P<key>[A-Za-z_][A-Za-z0-9_]*)(?P<selectors>(?:\[[^\[\]]+\])*)")
_SELECTOR = re.compile(r"\[([^\[\]]+)\]")


class PathSyntaxError(ValueError):
    """A path that does not parse."""


class PathError(ValueError):
    """A path that does not lead anywhere in the spec's data."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message, self.hint = message, hint


@dataclass(frozen=True)
class ByName:
    """`[fc1]`: the list element whose name is fc1."""

    name: str

    def __str__(self) -> str:
        return f"[{self.name}]"


Part = str | int | ByName


def parse_path(text: str) -> tuple[Part, ...]:
    """'layers[fc1].out' -> ('layers', ByName('fc1'), 'out')."""
    if not text:
        raise PathSyntaxError("the path is empty")
    parts: list[Part] = []
    for segment in text.split("."):
        match = _SEGMENT.fullmatch(segment)
        if match is None:
            raise PathSyntaxError(f"'{segment}' is not a key (letters, digits, _) followed by optional [index] "
                                  "or [name]")
        parts.append(match["key"])
        for selector in _SELECTOR.findall(match["selectors"]):
            selector = selector.strip()
            parts.append(int(selector) if selector.isdigit() else ByName(selector))
    return tuple(parts)


def _element_name(element, index: int):
    """A list element's name: its `name`, or, for a layer without one, `<op><index>`."""
    if isinstance(element, dict):
        if isinstance(element.get("name"), str):
            return element["name"]
        if isinstance(element.get("op"), str):
            return f"{element['op']}{index}"
    return None


def _step(node, part: Part, walked: str) -> int | str:
    """The key or index of `node` that `part` picks (raises PathError)."""
    if isinstance(part, str):
        if not isinstance(node, dict):
            raise PathError(f"'{walked}' is not a mapping, so it has no key '{part}'")
        return part
    if not isinstance(node, list):
        raise PathError(f"'{walked}' is not a list, so {part if isinstance(part, ByName) else f'[{part}]'} "
                        "picks nothing")
    if isinstance(part, int):
        if part >= len(node):
            raise PathError(f"'{walked}' has {len(node)} elements; [{part}] is past its end")
        return part
    names = [_element_name(element, i) for i, element in enumerate(node)]
    if part.name not in names:
        known = [name for name in names if name is not None]
        raise PathError(f"'{walked}' has no element named '{part.name}'",
                        did_you_mean(part.name, known, "names") if known else "")
    return names.index(part.name)


def resolve(data, parts: tuple[Part, ...]) -> tuple:
    """The concrete path (keys and indices, e.g. ('layers', 0, 'out')) that `parts` addresses in `data`.
    Keys missing from the data are fine (a field left at its default, or a mapping to create)."""
    concrete: list = []
    node = data
    walked = ""
    for i, part in enumerate(parts):
        step = _step(node, part, walked or "the spec")
        concrete.append(step)
        walked += (f"[{step}]" if isinstance(step, int) else ("." if walked else "") + step)
        node = node.get(step) if isinstance(node, dict) else node[step]
        if node is None and i + 1 < len(parts):
            if not isinstance(parts[i + 1], str):
                raise PathError(f"'{walked}' is not in the spec, so {parts[i + 1]} picks nothing")
            node = {}
    return tuple(concrete)


def with_values(data: dict, values: dict[str, object]) -> dict:
    """A copy of the spec's data with each path of `values` set (missing mappings created)."""
    out = copy.deepcopy(data)
    for text, value in values.items():
        concrete = resolve(out, parse_path(text))
        node = out
        for step in concrete[:-1]:
            if isinstance(node, dict) and node.get(step) is None:
                node[step] = {}
            node = node[step]
        node[concrete[-1]] = copy.deepcopy(value)
    return out


def get_value(data, text: str):
    """The value at a path, or None when the spec leaves it out."""
    node = data
    for step in resolve(data, parse_path(text)):
        if isinstance(node, dict):
            node = node.get(step)
        else:
            node = node[step]
        if node is None:
            return None
    return node
