"""Summaries of a typed graph and results of spec validation, as data and as text.

The CLI (`netc inspect`, `netc validate`) only picks a renderer, and the Python API calls the
same functions. One concern per module:

    summary      Summary rows and totals of a graph, their text cells, and JSON
    table        the layer table for a terminal (rich) and as Markdown
    diagrams     the graph as Graphviz DOT and Mermaid text
    discovery    spec files found from paths, folders and globs
    validation   `netc validate` results per file and their totals
    github       diagnostics as GitHub Actions annotations
    schema       the JSON Schema of a spec file

Every public name is also here, so `from netc import report; report.summarize(graph)` works.
"""

from netc.report.diagrams import to_dot, to_mermaid
from netc.report.discovery import SPEC_SUFFIXES, find_spec_files, is_spec_file
from netc.report.github import github_annotation
from netc.report.schema import spec_schema
from netc.report.summary import (
    COLUMNS,
    MULT_ADDS_CONVENTION,
    STATE_COLUMN,
    InputRow,
    LayerRow,
    Summary,
    count_text,
    footnotes,
    input_kind,
    input_shape_text,
    layer_columns,
    loss_text,
    mult_adds_text,
    params_text,
    shape_text,
    shared_text,
    si_text,
    summarize,
    summary_dict,
    table_rows,
    to_json,
    totals_lines,
    trainable_text,
)
from netc.report.table import summary_renderable, to_markdown
from netc.report.validation import FileResult, gc_paused, validate_file, validation_dict, validation_summary

__all__ = [
    "COLUMNS", "MULT_ADDS_CONVENTION", "SPEC_SUFFIXES", "STATE_COLUMN",
    "FileResult", "InputRow", "LayerRow", "Summary",
    "count_text", "find_spec_files", "footnotes", "gc_paused", "github_annotation", "input_kind", "input_shape_text",
    "is_spec_file", "layer_columns", "loss_text", "mult_adds_text", "params_text", "shape_text", "shared_text",
    "si_text", "spec_schema", "summarize", "summary_dict", "summary_renderable", "table_rows", "to_dot", "to_json",
    "to_markdown", "to_mermaid", "totals_lines", "trainable_text", "validate_file", "validation_dict",
    "validation_summary",
]
