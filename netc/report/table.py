"""The layer table and totals of a summary, for a terminal (rich) and as Markdown.

rich is imported only when drawing, so that `netc validate` never pays for it.
"""

from __future__ import annotations

from netc.report.summary import STATE_COLUMN, Summary, footnotes, layer_columns, table_rows, totals_lines

_RIGHT = ("params", STATE_COLUMN, "mult-adds")
_WRAPS = ("inputs", "output shape", "shared with", "trainable")  # on a narrow terminal


def summary_renderable(summary: Summary):
    """A rich renderable: the layer table, then the totals."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    totals = Table.grid(padding=(0, 2))
    totals.add_column(style="bold", no_wrap=True)
    totals.add_column(justify="right", no_wrap=True)
    totals.add_column(style="dim")
    for label, value, note in totals_lines(summary):
        totals.add_row(Text(label + ":"), Text(value), Text(note))
    notes = [Text(note, style="yellow" if note.startswith("Warning") else "dim") for note in footnotes(summary)]
    return Group(_LayerTable(summary), Text(""), totals, Text(""), *notes)


class _LayerTable:
    """The layer table: rich's Table, or the same lines written directly when nothing wraps.

    rich's Table lays out about a row per millisecond, minutes for a 100k-layer spec. When every
    cell fits on one line (always when piped) its layout is simple and written here: columns as
    wide as their widest cell, one space of padding between cells (none at the edges), a space as
    divider, a rule under the header and a blank line after the inputs. Otherwise (a narrow
    terminal) rich's Table lays it out. tests/test_scale.py compares the two.
    """

    def __init__(self, summary: Summary):
        self.title = f"netc: {summary.name}"
        self.columns = layer_columns(summary)
        self.rows = table_rows(summary)
        self.styles = ["cyan"] * len(summary.inputs) + ["dim" if row.trainable is False else ""
                                                         for row in summary.shown_layers]
        self.inputs = len(summary.inputs)
        self.pads = [1] * (len(self.columns) - 1) + [0]  # right padding; collapsed between cells, none at the edge
        columns = [list(cells) for cells in zip(self.columns, *self.rows)]  # the header first
        self.widths = [max(map(len, cells)) for cells in columns]  # the widest text, without padding
        self.words = [max(map(len, " ".join(cells).split())) for cells in columns]  # the longest word
        # ASCII text: a character is a terminal cell, so len() is the width rich measures
        self.ascii = self.title.isascii() and all("".join(cells).isascii() for cells in columns)
        self.width = sum(self.widths) + sum(self.pads) + len(self.columns) - 1  # dividers

    def rich_table(self):
        """The same table laid out by rich's Table, which wraps cells to fit a narrow terminal."""
        from rich import box
        from rich.table import Table
        from rich.text import Text

        table = Table(title=self.title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD,
                      show_edge=False, pad_edge=False, collapse_padding=True)
        for col in self.columns:
            wraps = col in _WRAPS
            table.add_column(col, justify="right" if col in _RIGHT else "left", overflow="fold", no_wrap=not wraps,
                             min_width=min(len(col), 9) if wraps else None)
        for row, style in zip(self.rows, self.styles):
            table.add_row(*(Text(cell) for cell in row), style=style)
        if self.inputs:
            table.rows[self.inputs - 1].end_section = True
        return table

    def _fits(self, options) -> bool:
        """Whether rich's Table would draw this without wrapping a cell, in its Unicode box."""
        return (self.ascii and self.width <= options.max_width and len(self.title) <= self.width
                and not options.ascii_only and not options.legacy_windows)

    def __rich_measure__(self, console, options):
        from rich.measure import Measurement

        if not self._fits(options):
            return Measurement.get(console, options, self.rich_table())
        minimum = [max(word, min(len(col), 9) if col in _WRAPS else 0) + pad
                   for word, col, pad in zip(self.words, self.columns, self.pads)]
        return Measurement(sum(minimum) + len(self.columns) - 1, self.width)

    def __rich_console__(self, console, options):
        from rich.segment import Segment

        if not self._fits(options):
            yield self.rich_table()
            return
        line = Segment.line()
        yield Segment(self.title.ljust(self.width), console.get_style("table.title"))
        yield line
        yield from self._row(console, self.columns, "bold")
        yield line
        yield Segment("\u2500" * self.width)
        yield line
        for index, (row, style) in enumerate(zip(self.rows, self.styles)):
            yield from self._row(console, row, style)
            yield line
            if index == self.inputs - 1 and index < len(self.rows) - 1:  # the end of the inputs section
                yield Segment(" " * self.width)
                yield line

    def _row(self, console, cells, style: str):
        """A row as rich's Table writes it: each cell and its padding in the row's style, plain dividers."""
        from rich.segment import Segment

        texts = [cell.rjust(width) if col in _RIGHT else cell.ljust(width)
                 for cell, col, width in zip(cells, self.columns, self.widths)]
        if console.color_system is None:  # no styles are written: the row as one segment is the same text
            yield Segment(" ".join(text + " " * pad for text, pad in zip(texts, self.pads)))
            return
        style = console.get_style(style) if style else None
        for i, (text, pad) in enumerate(zip(texts, self.pads)):
            if i:
                yield Segment(" ")  # the divider
            yield Segment(text, style)
            if pad:
                yield Segment(" " * pad, style)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|") if text else " "


def to_markdown(summary: Summary) -> str:
    lines = [f"### {summary.name}", ""]
    if summary.description:
        lines += [summary.description, ""]
    lines.append("| " + " | ".join(layer_columns(summary)) + " |")
    right = set(_RIGHT)
    lines.append("|" + "|".join("---:" if col in right else "---" for col in layer_columns(summary)) + "|")
    for row in table_rows(summary):
        lines.append("| " + " | ".join(_md_cell(cell) for cell in row) + " |")
    lines.append("")
    for label, value, note in totals_lines(summary):
        lines.append(f"- **{label}:** {value}" + (f" ({note})" if note else ""))
    for note in footnotes(summary):
        lines += ["", note]
    return "\n".join(lines) + "\n"
