"""Safe YAML loading that remembers where every key and value came from.

The file is composed into PyYAML nodes (no object construction), then walked
into plain dicts/lists/scalars while recording the line and column of each
spec path. libyaml's parser reads the file where PyYAML has it (7x faster);
a file it fails on, or where the two could differ, is read by the pure-Python
parser, whose errors are the ones reported. Hostile input is refused early: size, nesting
depth and the number of nodes after alias expansion are bounded, duplicate
keys are errors, and only the standard scalar tags are accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from netc.errors import Diagnostic, Location, SpecErrors, path_text

MAX_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 500_000  # after alias expansion: stops "billion laughs"; a 100,000-layer chain is ~400,000

_SAFE_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
}

_STR = "tag:yaml.org,2002:str"

# plain scalars that SafeLoader would turn into dates or special markers: kept as the text written
_TEXT_TAGS = {
    "tag:yaml.org,2002:timestamp",  # description: 2024-01-01
    "tag:yaml.org,2002:value",  # name: =
    "tag:yaml.org,2002:merge",  # name: << (a merge *key* is refused in _mapping)
}

Path = tuple  # of str | int


@dataclass
class SourceMap:
    """Where each spec path sits in the file."""

    file: str
    value_at: dict[Path, tuple[int, int]] = field(default_factory=dict)
    key_at: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: Path, key: bool = False) -> Location:
        """The closest known position of `path` (walks up to a parent if needed)."""
        path = tuple(path)
        while True:
            table = self.key_at if key else self.value_at
            if path in table:
                line, col = table[path]
                return Location(self.file, line, col)
            if key and path in self.value_at:
                line, col = self.value_at[path]
                return Location(self.file, line, col)
            if not path:
                return Location(self.file, 1, 1)
            path = path[:-1]


def _error(code: str, message: str, file: str, mark=None, path: Path = (), hint: str = "") -> SpecErrors:
    loc = Location(file, mark.line + 1, mark.column + 1) if mark is not None else Location(file, 1, 1)
    where = path_text(path[:12]) + ("..." if len(path) > 12 else "")
    return SpecErrors(Diagnostic(code, message, loc, where, hint))


class _TooDeep(Exception):
    def __init__(self, mark):
        self.mark = mark


class _DepthLimit:
    """Stops composing past MAX_DEPTH, before PyYAML's scanner (quadratic in the flow nesting depth) or
    Python's recursion limit are reached."""

    depth = 0

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH + 1:  # the root is depth 1 here, 0 in _Walker
                raise _TooDeep(self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _Loader(_DepthLimit, yaml.SafeLoader):
    """The pure-Python loader: every error netc reports, with its message and mark, comes from it."""


# Text that libyaml and PyYAML may read differently, left to PyYAML alone: a BOM, Unicode line
# breaks, tabs, a block scalar header followed by anything but a space or a line break (libyaml
# allows `>#`). _FastLoader refuses the rest it meets: see compose_scalar_node.
_UNLIKE = re.compile(r"[\ufeff\x85\u2028\u2029\t]|[|>][-+0-9]*[^-+0-9 \r\n]")


class _Unlike(Exception):
    """The fast path met something the two parsers read or mark differently."""


if getattr(yaml, "__with_libyaml__", False):
    from yaml._yaml import CParser

    class _FastLoader(_DepthLimit, Composer, CParser, SafeConstructor, Resolver):
        """libyaml's scanner and parser (about 7x faster) under PyYAML's own composer, resolver and
        constructor, so that a document both read gives the same nodes, values and marks."""

        def __init__(self, text: str):
            CParser.__init__(self, text)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

        def get_single_node(self):
            node = super().get_single_node()
            if node is not None and _expanded_size(node, {}) > MAX_NODES:
                raise _Unlike  # the pure-Python path walks it and says where: one walk, not two
            return node

        def compose_scalar_node(self, anchor):
            # plain scalars the two differ on: an omitted value (libyaml marks it at the next token), a `?`
            # inside (libyaml reads `{a: b?}`, PyYAML refuses a `?` in a plain scalar within [] and {})
            event = self.peek_event()
            if not event.style and (not event.value or "?" in event.value):
                raise _Unlike
            return super().compose_scalar_node(anchor)
else:  # PyYAML built without libyaml
    _FastLoader = None


def _expanded_size(node: yaml.Node, sizes: dict) -> int:
    """The nodes _Walker would visit (keys included, aliases expanded), each collection sized once."""
    if isinstance(node, yaml.ScalarNode):
        return 1
    if id(node) not in sizes:
        children = node.value  # a sequence's items, or a mapping's (key, value) pairs
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in children for child in pair]
        sizes[id(node)] = 1 + sum(1 if isinstance(child, yaml.ScalarNode) else _expanded_size(child, sizes)
                                  for child in children)
    return sizes[id(node)]


class _Walker:
    def __init__(self, file: str, loader: yaml.SafeLoader):
        self.file = file
        self.loader = loader
        self.nodes = 0
        self.smap = SourceMap(file)

    def walk(self, node: yaml.Node, path: Path, depth: int):
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _error("E-YAML-LIMIT", f"the document expands to more than {MAX_NODES} nodes",
                         self.file, node.start_mark, path,
                         "aliases (*name) that expand recursively are refused")
        if depth > MAX_DEPTH:
            raise _error("E-YAML-LIMIT", f"nesting deeper than {MAX_DEPTH} levels", self.file,
                         node.start_mark, path)
        self.smap.value_at.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.ScalarNode) and node.tag in _TEXT_TAGS:
            return node.value
        if node.tag not in _SAFE_TAGS:
            raise _error("E-YAML-TAG", f"tag '{node.tag}' is not allowed", self.file, node.start_mark,
                         path, "netc specs use plain YAML: maps, lists, strings and numbers")
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            return [self.walk(item, path + (i,), depth + 1) for i, item in enumerate(node.value)]
        if node.tag == _STR:
            return node.value  # what SafeConstructor.construct_yaml_str returns, without its overhead
        try:
            return self.loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError, KeyError) as exc:  # KeyError: `!!bool maybe`
            raise _error("E-YAML", f"cannot read value: {exc}", self.file, node.start_mark, path) from None

    def _mapping(self, node: yaml.MappingNode, path: Path, depth: int) -> dict:
        out: dict = {}
        seen: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _error("E-YAML-TAG", "merge keys (<<) are not supported", self.file,
                             key_node.start_mark, path, "write the keys out, or use an alias for a whole value")
            if not isinstance(key_node, yaml.ScalarNode):
                raise _error("E-YAML", "mapping keys must be plain strings", self.file,
                             key_node.start_mark, path)
            key = self.walk(key_node, path + ("<key>",), depth + 1)
            if not isinstance(key, str):  # `1:`, `null:`, `true:` are keys as written, not ints or list indices
                key = key_node.value
            if key in seen:
                first = seen[key]
                raise _error("E-YAML-DUP", f"duplicate key '{key}' (first defined at line {first.line + 1})",
                             self.file, key_node.start_mark, path + (key,),
                             "remove one of the two; YAML would silently keep the last")
            seen[key] = key_node.start_mark
            child = path + (key,)
            self.smap.key_at[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = self.walk(value_node, child, depth + 1)
        return out


def _mark_at(text: str | bytes, index: int) -> yaml.Mark:
    """The line and column of an offset, for errors found before YAML parsing starts."""
    newline = b"\n" if isinstance(text, bytes) else "\n"
    line = text.count(newline, 0, index)
    return yaml.Mark("", index, line, index - (text.rfind(newline, 0, index) + 1), None, None)


def load_yaml(text: str | bytes, file: str = "<string>") -> tuple[object, SourceMap]:
    """Parse YAML text into plain data and a SourceMap. Raises SpecErrors."""
    if isinstance(text, bytes):
        if len(text) > MAX_BYTES:
            raise _error("E-YAML-LIMIT", f"file is larger than {MAX_BYTES // (1024 * 1024)} MiB", file)
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _error("E-YAML", f"file is not UTF-8 text (byte {exc.start})", file, _mark_at(text, exc.start),
                         hint="save the spec as UTF-8") from None
    if len(text) > MAX_BYTES:
        raise _error("E-YAML-LIMIT", f"file is larger than {MAX_BYTES // (1024 * 1024)} MiB", file)
    try:
        loader = _Loader(text)  # checks every character up front
    except yaml.reader.ReaderError as exc:
        raise _error("E-YAML", f"invalid YAML: unacceptable character #x{exc.character:04x}", file,
                     _mark_at(text, exc.position), hint="remove control characters from the file") from None
    if _FastLoader is not None and not _UNLIKE.search(text):
        fast = _FastLoader(text)
        try:
            return _compose(fast, file)
        except Exception:  # deliberately broad: on any failure the pure-Python path decides and reports
            pass
        finally:
            fast.dispose()
    try:
        return _compose(loader, file)
    finally:
        loader.dispose()


def _compose(loader, file: str) -> tuple[object, SourceMap]:
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or str(exc)
        if exc.context:
            problem = f"{problem} ({exc.context})"
        raise _error("E-YAML", f"invalid YAML: {problem}", file, mark) from None
    except yaml.YAMLError as exc:
        raise _error("E-YAML", f"invalid YAML: {exc}", file) from None
    except _TooDeep as exc:
        raise _error("E-YAML-LIMIT", f"nesting deeper than {MAX_DEPTH} levels", file, exc.mark) from None
    except RecursionError:
        raise _error("E-YAML-LIMIT", f"nesting deeper than {MAX_DEPTH} levels", file) from None
    if node is None:
        raise _error("E-YAML", "the file is empty", file, hint="a spec starts with 'netc: 1'")
    walker = _Walker(file, loader)
    try:
        data = walker.walk(node, (), 0)
    except RecursionError:
        raise _error("E-YAML-LIMIT", f"nesting deeper than {MAX_DEPTH} levels", file) from None
    return data, walker.smap
