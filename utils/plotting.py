"""Small plotly helpers so that notebooks stay about the lesson, not the plotting.

Each helper takes tensors or arrays, labels its axes, and returns the figure (a notebook cell that
ends with the call shows it). Diverging data is centred on zero with a red-blue scale.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
import torch

TEMPLATE = "simple_white"


def to_numpy(values: Any) -> np.ndarray:
    """A tensor (on any device, with or without grad), list or array, as a numpy array."""
    if isinstance(values, torch.Tensor):
        return values.detach().float().cpu().numpy()
    return np.asarray(values)


def imshow(
    values: Any,
    *,
    title: str,
    x_title: str,
    y_title: str,
    color_title: str = "",
    x: Sequence | None = None,
    y: Sequence | None = None,
    facet_labels: Sequence[str] | None = None,
    facet_col_wrap: int | None = None,
    diverging: bool = True,
    height: int | None = None,
    **kwargs: Any,
) -> go.Figure:
    """Heatmap of a 2D array, or of a stack of 2D arrays (first axis) drawn as labelled facets."""
    array = to_numpy(values)
    if array.ndim not in (2, 3):
        raise ValueError(f"imshow draws 2D arrays or stacks of them, got shape {array.shape}")
    color_kwargs: dict[str, Any] = {}
    if diverging:
        limit = float(np.abs(array).max()) or 1.0
        color_kwargs = {"color_continuous_scale": "RdBu", "zmin": -limit, "zmax": limit}
    facet_kwargs: dict[str, Any] = {}
    if array.ndim == 3:
        facet_kwargs = {"facet_col": 0}
        if facet_col_wrap:
            facet_kwargs["facet_col_wrap"] = facet_col_wrap
    figure = px.imshow(
        array, x=x, y=y, title=title, template=TEMPLATE, aspect="auto",
        labels={"x": x_title, "y": y_title, "color": color_title}, height=height,
        **color_kwargs, **facet_kwargs, **kwargs,
    )
    if array.ndim == 3 and facet_labels is not None:
        labels = list(facet_labels)
        figure.for_each_annotation(lambda note: note.update(text=labels[int(note.text.split("=")[-1])]))
    return figure


def line(
    y: Any,
    *,
    title: str,
    x_title: str,
    y_title: str,
    x: Any = None,
    names: Sequence[str] | None = None,
    log_y: bool = False,
    **kwargs: Any,
) -> go.Figure:
    """One line, or one line per row of a 2D array (named by ``names``)."""
    values = to_numpy(y)
    rows = values[None] if values.ndim == 1 else values
    x_values = to_numpy(x) if x is not None else np.arange(rows.shape[1])
    figure = go.Figure()
    for index, row in enumerate(rows):
        name = names[index] if names is not None else None
        figure.add_trace(go.Scatter(x=x_values, y=row, mode="lines", name=name))
    figure.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, template=TEMPLATE,
                         showlegend=names is not None, **kwargs)
    if log_y:
        figure.update_yaxes(type="log")
    return figure


def scatter(
    x: Any,
    y: Any,
    *,
    title: str,
    x_title: str,
    y_title: str,
    color: Any = None,
    color_title: str = "",
    hover_name: Sequence[str] | None = None,
    **kwargs: Any,
) -> go.Figure:
    """Scatter plot of ``y`` against ``x``, optionally coloured and with hover labels."""
    figure = px.scatter(
        x=to_numpy(x), y=to_numpy(y), color=None if color is None else to_numpy(color),
        hover_name=hover_name, title=title, template=TEMPLATE,
        labels={"x": x_title, "y": y_title, "color": color_title}, **kwargs,
    )
    return figure
