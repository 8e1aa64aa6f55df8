"""The look of every plot the project writes (training loss curves, CALVIN evaluation
reports, bag-evaluation reports), defined once.

Figures are drawn on matplotlib's Agg canvas directly -- no pyplot, no global backend
switch -- so they render without a display and never change the backend of another
matplotlib user in the same process (a ROS node, a notebook). matplotlib is imported only
when a figure is made.
"""
from __future__ import annotations

import os
from typing import IO, Any

import numpy as np

#: Resolution of every saved plot, dots per inch.
DPI = 100
#: Opacity of the grid drawn behind every axes.
GRID_ALPHA = 0.3
#: The main series (the replay, the chained success rates).
PRIMARY_COLOR = "tab:blue"
#: A second series beside the main one (per-task success rates).
SECONDARY_COLOR = "tab:orange"
#: What the main series is compared against (the recorded run of a bag).
REFERENCE_COLOR = "tab:gray"


def new_figure(width: float, height: float, rows: int = 1, columns: int = 1, **subplots: Any):
    """A figure of ``width`` x ``height`` inches in the house style and its axes.

    ``rows``, ``columns`` and ``subplots`` go to :meth:`matplotlib.figure.Figure.subplots`,
    so the axes come back as it returns them (one axes, or an array). Every axes gets the
    grid, drawn behind the data.

    Raises:
        ImportError naming the package to install when matplotlib is missing.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from error
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, **subplots)
    for axis in np.ravel(axes):
        axis.set_axisbelow(True)
        axis.grid(alpha=GRID_ALPHA)
    return figure, axes


def save_png(figure, target: str | os.PathLike | IO[bytes]) -> None:
    """Lay ``figure`` out and write it as a PNG at :data:`DPI` to a path or binary file."""
    figure.tight_layout()
    figure.savefig(target, format="png", dpi=DPI)


__all__ = ["DPI", "GRID_ALPHA", "PRIMARY_COLOR", "REFERENCE_COLOR", "SECONDARY_COLOR", "new_figure", "save_png"]
