"""The spec language: pydantic models and YAML loading with positions."""

from netc.spec.load import LoadedSpec, load_spec, load_spec_text
from netc.spec.models import Spec

__all__ = ["LoadedSpec", "Spec", "load_spec", "load_spec_text"]
