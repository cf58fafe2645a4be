"""The JSON Schema of a spec file, for editors that complete and check YAML."""

from __future__ import annotations


def spec_schema() -> dict:
    """The JSON Schema of a spec, generated from `netc.spec.models.Spec` (for editors)."""
    from netc.spec.models import FORMAT_VERSION, Spec

    schema = Spec.model_json_schema()
    return {
        # pydantic emits only draft-07 keywords ($defs is reached by plain JSON pointers), and
        # yaml-language-server / VS Code YAML fully support draft-07, not yet 2020-12
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": f"netc spec (format version {FORMAT_VERSION})",
        **{key: value for key, value in schema.items() if key != "title"},
    }
