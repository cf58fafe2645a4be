"""Diagnostics as GitHub Actions workflow commands, so that CI marks the spec lines."""

from __future__ import annotations

from netc.errors import Diagnostic


def _gh_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_property(text: str) -> str:
    return _gh_data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotation(diag: Diagnostic) -> str:
    """A GitHub Actions workflow command: `::error file=F,line=L,col=C,title=CODE::message`."""
    props = [f"file={_gh_property(diag.location.file)}"]
    if diag.location.line:
        props.append(f"line={diag.location.line}")
        if diag.location.col:
            props.append(f"col={diag.location.col}")
    props.append(f"title={_gh_property(diag.code)}")
    message = diag.message + (f" (at {diag.path})" if diag.path else "")
    if diag.hint:
        message += f"\nhint: {diag.hint}"
    return f"::error {','.join(props)}::{_gh_data(message)}"
