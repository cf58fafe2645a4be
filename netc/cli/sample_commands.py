"""`netc sample`: text from a character-level language model (netc.runtime.sample draws it)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from netc.cli.app import command, stderr_console
from netc.spec import load_spec


@command("sample")
def sample(
    spec: Annotated[Path, typer.Argument(help="A spec trained on `source: text` (a window of characters in, the "
                                              "next character out).")],
    weights: Annotated[Path, typer.Option(help="A checkpoint in its run folder (classes.json beside it holds the "
                                               "vocabulary).")],
    prompt: Annotated[str, typer.Option(help="The text to continue (left-padded with newlines to the window).")]
    = "\n",
    length: Annotated[int, typer.Option(min=1, max=100_000, help="Characters to generate.")] = 200,
    temperature: Annotated[float, typer.Option(min=0.0, help="Below 1: likelier characters; above 1: more varied; "
                                                              "0: always the most likely.")] = 0.8,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the draws (the same seed, the same text).")] = 0,
) -> None:
    """Generate text a character at a time from a character-level language model, after a prompt."""
    from netc.runtime.sample import sample as draw

    result = draw(load_spec(spec), weights, prompt.replace("\\n", "\n"), length, temperature, seed)
    sys.stdout.write(result.prompt + result.text + "\n")  # as it is: no markup, no wrapping
    sys.stdout.flush()
    bits = -result.log2_probability / length
    stderr_console().print(f"{length} characters, {bits:.2f} bits per character as drawn "
                           f"(temperature {temperature:g}, seed {seed})", markup=False, highlight=False)
