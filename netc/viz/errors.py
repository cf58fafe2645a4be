"""The one error of the picture code: a picture that cannot be drawn from what the user gave (E-VIZ).

Apart from the drawing, so that the data side (netc.viz.fields) raises the same error without matplotlib.
"""

from __future__ import annotations

from netc.errors import Diagnostic, Location, NetcError

CODE = "E-VIZ"


class VizError(NetcError):
    """A picture that cannot be drawn from what the user gave."""


def viz_error(message: str, where: Location | str = "", hint: str = "", path: str = "") -> VizError:
    location = where if isinstance(where, Location) else Location(str(where))
    return VizError(Diagnostic(CODE, message, location, path, hint))
