"""From YAML text to a validated `Spec`, with every error located in the file."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ValidationError

from netc.errors import Diagnostic, SpecErrors, did_you_mean, path_text
from netc.spec.models import FORMAT_VERSION, Spec
from netc.spec.yamlload import SourceMap, load_yaml

# the tag field of each discriminated union, and the code for an unknown tag
_TAG_CODES = {"op": "E-UNKNOWN-OP", "type": "E-UNKNOWN-TYPE", "source": "E-UNKNOWN-SOURCE"}


@dataclass(frozen=True)
class LoadedSpec:
    spec: Spec
    smap: SourceMap
    file: str
    base_dir: Path  # relative data and checkpoint paths start here


def load_spec_text(text: str | bytes, file: str = "<string>", base_dir: Path | None = None) -> LoadedSpec:
    data, smap = load_yaml(text, file)
    _check_version(data, smap)
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecErrors(located_diagnostics(exc, data, smap)) from None
    return LoadedSpec(spec, smap, file, base_dir if base_dir is not None else Path("."))


def load_spec(path: str | Path) -> LoadedSpec:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecErrors(Diagnostic("E-FILE", f"cannot read spec: {exc.strerror}", _loc(str(path)))) from None
    return load_spec_text(raw, str(path), path.parent)


def _loc(file: str):
    from netc.errors import Location

    return Location(file, 0, 0)


def _check_version(data, smap: SourceMap) -> None:
    if not isinstance(data, dict):
        raise SpecErrors(Diagnostic("E-SPEC", "a spec is a YAML mapping (key: value lines)", smap.locate(()),
                                    hint="start the file with 'netc: 1'"))
    if "netc" not in data:
        raise SpecErrors(Diagnostic("E-VERSION", "missing the format version 'netc'", smap.locate(()),
                                    "netc", f"add 'netc: {FORMAT_VERSION}' as the first line"))
    version = data["netc"]
    if type(version) is not int or version != FORMAT_VERSION:  # not true, not 1.0
        raise SpecErrors(Diagnostic("E-VERSION", f"format version {version!r} is not supported",
                                    smap.locate(("netc",)), "netc",
                                    f"this netc reads format version {FORMAT_VERSION}"))


def located_diagnostics(exc: ValidationError, data, smap: SourceMap, root: type[BaseModel] | None = None
                        ) -> list[Diagnostic]:
    """pydantic's errors as Diagnostics located in the file, for data validated by `root` (default:
    Spec; a sweep file passes its own model)."""
    root = root or Spec
    out: list[Diagnostic] = []
    seen: set[str] = set()
    for err in exc.errors(include_url=False):
        path = _data_path(err["loc"], data, err["type"])
        key = path_text(path)
        if key in seen:  # a union reports each failed branch: keep the first
            continue
        seen.add(key)
        out.append(_diagnostic(err, path, data, smap, root))
    return out


def _data_path(loc: tuple, data, kind: str) -> tuple:
    """Drop pydantic's union/tag markers so the loc walks the real data."""
    path: list = []
    node = data
    fresh = False  # just stepped into a value: the tag of a discriminated union may come next
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if fresh and isinstance(node, dict) and any(node.get(tag) == part for tag in _TAG_CODES):
            fresh = False  # the tag, also a key where it names a field: `{op: block, block: resblock}`
            continue
        if isinstance(node, dict) and part in node:
            path.append(part)
            node = node[part]
            fresh = True
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
            fresh = True
        elif last and kind == "missing" and isinstance(part, str):
            path.append(part)
    return tuple(path)


def _value_at(data, path: tuple):
    for part in path:
        data = data[part]
    return data


def _diagnostic(err: dict, path: tuple, data, smap: SourceMap, root: type[BaseModel]) -> Diagnostic:
    kind = err["type"]
    where = path_text(path)
    if kind == "extra_forbidden":
        known = _known_keys(path[:-1], data, root)
        return Diagnostic("E-UNKNOWN-KEY", f"unknown key '{path[-1]}'", smap.locate(path, key=True), where,
                          did_you_mean(str(path[-1]), known, "known keys") if known else "")
    if kind == "missing":
        return Diagnostic("E-MISSING", f"missing required key '{path[-1]}'", smap.locate(path[:-1]), where,
                          _field_help(path, data, root))
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tag = err["ctx"].get("discriminator", "").strip("'")
        expected = [t.strip().strip("'") for t in err["ctx"].get("expected_tags", "").split(",") if t.strip()]
        if kind == "union_tag_not_found":  # pydantic does not list the tags here: take them from the union
            expected = _union_tags(_type_at(path, data, root), tag)
            return Diagnostic("E-MISSING", f"missing required key '{tag}'", smap.locate(path), where,
                              f"{tag} is one of: {', '.join(expected)}")
        value = err["ctx"].get("tag")
        return Diagnostic(_TAG_CODES.get(tag, "E-VALUE"), f"unknown {tag} '{value}'", smap.locate(path + (tag,)),
                          path_text(path + (tag,)), did_you_mean(str(value), expected, f"known {tag}s"))
    message = err["msg"]
    if kind == "string_pattern_mismatch":  # only names have a pattern
        message = "a name uses letters, digits and _ and does not start with a digit"
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if err["loc"] and err["loc"][-1] == "[key]":  # a mapping's key is wrong, not its value
        return Diagnostic("E-VALUE", f"{message} (got key {path[-1]!r})", smap.locate(path, key=True), where)
    value = _value_at(data, path) if path else data
    if kind not in ("model_type", "dict_type", "model_attributes_type") and not isinstance(value, (dict, list)):
        message = f"{message} (got {value!r})"
    return Diagnostic("E-VALUE", message, smap.locate(path), where, _field_help(path, data, root))


def _field_help(path: tuple, data, root: type[BaseModel]) -> str:
    """The field's docstring, as a hint."""
    if not path or not isinstance(path[-1], str):
        return ""
    model = _model_at(path[:-1], data, root)
    if model is None:
        return ""
    for name, field in model.model_fields.items():
        if (field.alias or name) == path[-1] and field.description:
            return f"{path[-1]}: {field.description}"
    return ""


def _known_keys(path: tuple, data, root: type[BaseModel]) -> list[str]:
    model = _model_at(path, data, root)
    if model is None:
        return []
    return [field.alias or name for name, field in model.model_fields.items()]


def _model_at(path: tuple, data, root: type[BaseModel]) -> type[BaseModel] | None:
    """The model class that validates the mapping at `path` (following the data through unions)."""
    current = _type_at(path, data, root)
    if current is None:
        return None
    node = data
    for part in path:
        node = node[part] if isinstance(node, (dict, list)) else None
    model = _pick(current, node)
    return model if _is_model(model) else None


def _type_at(path: tuple, data, root: type[BaseModel]):
    """The annotation (possibly a union) that validates the value at `path`."""
    current: object = root
    node = data
    for part in path:
        model = _pick(current, node)
        if model is None:
            return None
        if isinstance(part, int):
            current = _element_type(current)
        else:
            fields = {(f.alias or n): f for n, f in model.model_fields.items()} if _is_model(model) else {}
            if part in fields:
                current = fields[part].annotation
            else:
                current = _element_type(current)
        node = node[part] if isinstance(node, (dict, list)) else None
        if current is None:
            return None
    return current


def _union_tags(tp, tag: str) -> list[str]:
    """Every value the tag field `tag` takes among a union's models."""
    if tp is None:
        return []
    tags: list[str] = []
    for model in _members(tp):
        field = model.model_fields.get(tag) if _is_model(model) else None
        if field is not None:
            tags.extend(str(t) for t in typing.get_args(field.annotation))
    return sorted(tags)


def _is_model(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _members(tp) -> list:
    """Flatten Annotated/Union/Optional into candidate types."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _members(typing.get_args(tp)[0])
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        out = []
        for arg in typing.get_args(tp):
            out.extend(_members(arg))
        return out
    return [tp]


def _pick(tp, node):
    """The model among a union's members that matches the data's tag."""
    candidates = [m for m in _members(tp) if _is_model(m)]
    if not candidates:
        containers = [m for m in _members(tp) if typing.get_origin(m) in (list, dict)]
        return containers[0] if containers else None
    if len(candidates) == 1 or not isinstance(node, dict):
        return candidates[0]
    for model in candidates:
        for tag in _TAG_CODES:
            field = model.model_fields.get(tag)
            if field is not None and node.get(tag) in typing.get_args(field.annotation):
                return model
    return None


def _element_type(tp):
    for member in _members(tp):
        origin = typing.get_origin(member)
        if origin is list:
            return typing.get_args(member)[0]
        if origin is dict:
            return typing.get_args(member)[1]
    return None
