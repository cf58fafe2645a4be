"""The spec language: pydantic models and YAML loading with positions.

The names below load on first use: the op modules build their layer classes on
netc.spec.base, and netc.spec.models assembles the language from the op registry,
so importing this package must not import the models eagerly.
"""

__all__ = ["LoadedSpec", "Spec", "load_spec", "load_spec_text"]


def __getattr__(name: str):
    if name in ("LoadedSpec", "load_spec", "load_spec_text"):
        from netc.spec import load

        return getattr(load, name)
    if name == "Spec":
        from netc.spec.models import Spec

        return Spec
    raise AttributeError(f"module 'netc.spec' has no attribute {name!r}")
